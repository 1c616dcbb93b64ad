"""The widget's Listen mode without a browser: the view's messages → ListenSession → the replies the view reads."""

from __future__ import annotations

import sys
import types

import numpy as np
import pytest

from conftest import LABELS, tone

from asit_helpers.widgets import COLAB_LISTEN_NOTE, AsitDemo, Listener


@pytest.fixture(scope="module")
def demo(tiny_checkpoint):
    return AsitDemo(tiny_checkpoint)


def _f32(x: np.ndarray) -> bytes:
    return np.asarray(x, dtype="<f4").tobytes()


def test_open_feed_close_round_trip(demo):
    listener = demo.listener
    assert isinstance(listener, Listener) and listener in demo.children
    assert "registerProcessor" in listener.worklet_source  # the AudioWorklet module the view loads
    opened = listener.handle_message({"event": "listen-open", "id": 0})
    assert opened["reply"] == 0 and opened["ok"] and opened["body"]["labels"] == LABELS
    hop = opened["body"]["hop_s"]
    assert opened["body"]["sample_rate"] == 16000 and opened["body"]["format"] == "f32le"

    quiet = (0.01 * np.random.default_rng(0).standard_normal(int(hop * 16000))).astype(np.float32)
    first = listener.handle_message({"event": "listen-audio", "id": 1, "seq": 0}, [_f32(quiet)])
    second = listener.handle_message({"event": "listen-audio", "id": 2, "seq": 1}, [_f32(tone(700, hop, amp=0.4))])
    for reply in (first, second):
        assert reply["ok"], reply
        [update] = reply["body"]["updates"]
        assert update["label"] in LABELS and isinstance(update["no_event"], bool)
        assert len(update["attention"]) == len(update["frame_times_s"]) > 0
        assert abs(sum(update["attention"]) - 1) < 1e-3
    assert second["body"]["updates"][0]["t_end_s"] == pytest.approx(2 * hop, abs=1e-3)
    assert len(listener.updates) == 2

    closed = listener.handle_message({"event": "listen-close", "id": 3})
    assert closed["ok"] and closed["body"]["ended"] and closed["body"]["updates_given"] == 2
    assert listener.session is None
    late = listener.handle_message({"event": "listen-audio", "id": 4, "seq": 2}, [_f32(quiet)])
    assert not late["ok"] and late["ended"] and "Listen again" in late["error"]


def test_bad_chunks_end_the_session_with_a_message(demo):
    listener = demo.listener
    listener.handle_message({"event": "listen-open", "id": 0})
    nan = np.full(800, np.nan, dtype=np.float32)
    reply = listener.handle_message({"event": "listen-audio", "id": 1, "seq": 0}, [_f32(nan)])
    assert not reply["ok"] and reply["ended"] and "NaN" in reply["error"], reply
    assert listener.session is None

    listener.handle_message({"event": "listen-open", "id": 2})
    int16 = (tone(440, 0.2, amp=0.5) * 32767).astype("<i2").tobytes() + b"\0\0"  # int16 PCM sent as float32
    reply = listener.handle_message({"event": "listen-audio", "id": 3, "seq": 0}, [int16])
    assert not reply["ok"] and reply["ended"], reply
    assert listener.session is None
    no_data = listener.handle_message({"event": "listen-audio", "id": 4, "seq": 0}, [])
    assert not no_data["ok"]


def test_microphone_errors_reach_the_demos_message_line(demo):
    demo.listener.handle_message({"event": "error", "message": "Microphone access was refused."})
    assert demo.message_text == "Microphone access was refused."
    assert demo.listener.message == "Microphone access was refused."


def test_colab_says_what_listen_can_and_cannot_do(tiny_checkpoint, monkeypatch):
    monkeypatch.setitem(sys.modules, "google.colab", types.ModuleType("google.colab"))
    header = AsitDemo(tiny_checkpoint).children[0].value
    assert COLAB_LISTEN_NOTE in header and "serve_in_notebook" in header
    monkeypatch.delitem(sys.modules, "google.colab")
    assert COLAB_LISTEN_NOTE not in AsitDemo(tiny_checkpoint).children[0].value
