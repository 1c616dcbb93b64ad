"""The demo widget's Python half without a browser: bytes → load_audio → predict → what the widget shows."""

from __future__ import annotations

import io

import numpy as np
import pytest
import soundfile as sf

from conftest import LABELS, tone

from asit_helpers import load_audio, load_model, predict
from asit_helpers.widgets import AsitDemo, Recorder


def _wav(samples: np.ndarray, sr: int = 16000, fmt: str = "WAV") -> bytes:
    buf = io.BytesIO()
    sf.write(buf, samples, sr, format=fmt)
    return buf.getvalue()


@pytest.fixture(scope="module")
def demo(tiny_checkpoint):
    return AsitDemo(tiny_checkpoint)


def _event_clip(seconds: float = 3.0, sr: int = 16000) -> np.ndarray:
    rng = np.random.default_rng(1)
    x = rng.normal(0, 0.02, int(seconds * sr)).astype(np.float32)
    x[sr : 2 * sr] += tone(700, 1.0, sr, amp=0.4)
    return x


def test_recording_gives_the_same_prediction_as_predict(demo, tiny_checkpoint):
    clip = _event_clip()
    data = _wav(clip)
    pred = demo.classify_bytes(data, "clip.wav")
    ref = predict(load_model(tiny_checkpoint), load_audio(data), top_k=5)
    assert pred is not None and demo.prediction is pred
    assert pred.label == ref.label
    np.testing.assert_allclose(pred.probabilities, ref.probabilities, atol=1e-6)
    np.testing.assert_allclose(pred.weights, ref.weights, atol=1e-6)
    assert pred.source == "clip.wav"
    # what the person sees: label + top-k rows, a playable WAV of the clip, the attention plot
    assert f'<b class="asit-label">{pred.label}</b>' in demo.result.value
    assert demo.result.value.count("<tr>") == len(LABELS)
    played = load_audio(bytes(demo.player.value))
    assert played.size == clip.size
    assert bytes(demo.plot.value[:8]) == b"\x89PNG\r\n\x1a\n"
    assert demo.player.layout.display is None and demo.plot.layout.display is None
    assert demo.message_text == ""


def test_other_sample_rates_and_formats_are_resampled(demo):
    clip = tone(500, 2.0, sr=44100, channels=2)
    pred = demo.classify_bytes(_wav(clip, 44100, "FLAC"), "stereo.flac")
    assert pred is not None
    assert pred.duration_s == pytest.approx(2.0, abs=1e-3)


def test_silence_shows_a_message_and_clears_the_last_result(demo):
    assert demo.classify_bytes(_wav(_event_clip()), "first.wav") is not None
    quiet = np.random.default_rng(0).normal(0, 1e-5, 32000).astype(np.float32)
    assert demo.classify_bytes(_wav(quiet), "recording.wav", recorded=True) is None
    assert demo.message_text.startswith("No sound recorded in recording.wav")
    assert "dBFS" in demo.message_text
    assert demo.prediction is None and demo.result.value == ""
    assert demo.player.layout.display == "none" and demo.plot.layout.display == "none"
    assert demo.classify_bytes(_wav(np.zeros(16000, np.float32)), "zeros.wav", recorded=True) is None
    assert "all samples are zero" in demo.message_text


def test_a_silent_file_is_called_a_silent_file(demo):
    """An uploaded all-zero file is not a microphone problem: the message says "silent file"."""
    assert demo.classify_bytes(_wav(np.zeros(16000, np.float32)), "zeros.wav") is None
    assert demo.message_text.startswith("zeros.wav is a silent file (all samples are zero)")
    assert "microphone" not in demo.message_text
    demo._on_recorder_msg(demo.recorder, {"event": "audio", "name": "recording.wav"},
                          [memoryview(_wav(np.zeros(16000, np.float32)))])
    assert "microphone" in demo.message_text


def test_ipywidgets_7_upload_value(demo):
    """Colab ships ipywidgets 7.7.1, whose FileUpload value is a dict by file name."""
    data = _wav(_event_clip())
    demo._on_upload({"new": {"dog.wav": {"metadata": {"name": "dog.wav", "size": len(data)}, "content": data}}})
    assert demo.prediction is not None and demo.prediction.source == "dog.wav"


@pytest.mark.parametrize(
    "data, reason",
    [
        (b"", "empty file"),
        (b"this is not audio at all", "not an audio file"),
        (_wav(tone(seconds=1.0))[:3000], "truncated WAV"),
        (_wav(tone(seconds=0.01)), "too short"),
    ],
)
def test_bad_files_show_a_message_naming_the_file(demo, data, reason):
    assert demo.classify_bytes(data, "upload.wav") is None
    assert "upload.wav" in demo.message_text and reason in demo.message_text, demo.message_text
    assert 'class="asit-message asit-error"' in demo.message.value


def test_too_long_recording_is_refused(tiny_checkpoint):
    small = AsitDemo(tiny_checkpoint, max_seconds=1.0)
    assert small.classify_bytes(_wav(tone(seconds=2.0)), "long.wav") is None
    assert "too long" in small.message_text


def test_browser_messages(demo):
    """The recorder's messages: audio (WAV in a buffer) and errors (refused microphone, empty recording)."""
    data = _wav(_event_clip())
    demo._on_recorder_msg(demo.recorder, {"event": "audio", "name": "recording.wav", "seconds": 3.0},
                          [memoryview(data)])
    assert demo.prediction is not None and demo.prediction.source == "recording.wav"
    assert demo.recorder.status == f"Done: {demo.prediction.label}"

    refused = "Microphone access was refused. Allow the microphone for this page in the browser's site settings."
    demo._on_recorder_msg(demo.recorder, {"event": "error", "message": refused}, [])
    assert demo.message_text == refused and demo.prediction is None

    demo._on_recorder_msg(demo.recorder, {"event": "audio", "name": "recording.wav"}, [])
    assert "no audio data" in demo.message_text


def test_upload_button(demo):
    data = _wav(_event_clip())
    demo._on_upload({"new": ({"name": "dog.wav", "type": "audio/wav", "size": len(data),
                              "content": memoryview(data)},)})
    assert demo.prediction is not None and demo.prediction.source == "dog.wav"
    demo._on_upload({"new": ({"name": "notes.txt", "content": memoryview(b"hello")},)})
    assert demo.prediction is None and "notes.txt" in demo.message_text


def test_unexpected_errors_become_messages(demo, monkeypatch):
    import asit_helpers.widgets as widgets

    def broken(*args, **kwargs):
        raise RuntimeError("CUDA out of memory")

    monkeypatch.setattr(widgets, "predict", broken)
    demo._on_upload({"new": ({"name": "x.wav", "content": memoryview(_wav(_event_clip()))},)})
    assert "CUDA out of memory" in demo.message_text


def test_recorder_bundles_the_shared_recorder_js():
    esm = Recorder._esm
    assert "export async function startRecording" in esm  # asit_helpers/static/recorder.js, not a copy
    assert "export default { render }" in esm
    assert esm.count("export default") == 1


def test_colab_upload_only_in_colab(demo):
    with pytest.raises(RuntimeError, match="Colab"):
        demo.upload_from_colab()


def test_colab_offers_files_upload(tiny_checkpoint, monkeypatch):
    """In Colab, FileUpload drops files ≥ 1 MB: the widget says so and upload_from_colab uses files.upload."""
    import sys
    import types

    data = _wav(_event_clip(seconds=40.0))  # 1.3 MB
    files = types.SimpleNamespace(upload=lambda: {"big.wav": data})
    colab = types.ModuleType("google.colab")
    colab.files = files
    monkeypatch.setitem(sys.modules, "google.colab", colab)
    monkeypatch.setitem(sys.modules, "google.colab.files", files)
    demo = AsitDemo(tiny_checkpoint, max_seconds=60.0)
    assert "upload_from_colab()" in demo.children[0].value
    [pred] = demo.upload_from_colab()
    assert pred is not None and pred.source == "big.wav" and pred.duration_s == pytest.approx(40.0)
