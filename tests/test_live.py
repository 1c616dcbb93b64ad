"""Live listening sessions (asit_helpers.live) and the "no event" answer (asit_helpers.activity), with a tiny
random model: ring buffer, hop scheduling, dropping instead of queueing, caps, expiry, bad chunks, timelines."""

from __future__ import annotations

import threading

import numpy as np
import pytest

from asit_helpers import activity
from asit_helpers.live import (ChunkError, ListenerLimit, Listeners, ListenSession, samples_from_bytes, timeline,
                               timeline_rows, timeline_segments)
from asit_helpers.synth import BACKGROUNDS, SYNTH_CLASSES, clip_seed, render_clip, render_recording

SR = 16000


@pytest.fixture(scope="module")
def model(tiny_checkpoint):
    from asit_helpers.model import load_model

    return load_model(tiny_checkpoint).eval()


class FakeClock:
    def __init__(self):
        self.t = 0.0

    def __call__(self) -> float:
        return self.t


def noise(seconds: float, level: float = 0.05, seed: int = 0) -> np.ndarray:
    return (level * np.random.default_rng(seed).standard_normal(int(seconds * SR))).astype(np.float32)


def feed_all(session: ListenSession, x: np.ndarray, chunk_s: float) -> list[dict]:
    step = int(chunk_s * SR)
    return [u for i in range(0, x.size, step) for u in session.feed(x[i : i + step])]


# -- ring buffer and hops ---------------------------------------------------------------------------------------------


def test_windows_are_whole_hops_whatever_the_chunk_sizes(model):
    """Every session classifies the same few lengths while its first window fills (hop, 2 hops, ..., the window),
    not whatever its chunks summed to: each new length costs the CPU backends kernels and buffers they keep."""
    rng = np.random.default_rng(4)
    lengths = set()
    for _ in range(3):
        session = ListenSession(model, hop_s=0.5, window_s=2.0)
        x = noise(4.0, seed=int(rng.integers(100)))
        i = 0
        while i < x.size:
            step = int(rng.integers(400, 5000))
            for u in session.feed(x[i : i + step]):
                lengths.add(round(u["t_end_s"] - u["window_start_s"], 4))
            i += step
    assert lengths <= {0.5, 1.0, 1.5, 2.0} and 2.0 in lengths, lengths


def test_one_update_per_hop_and_a_bounded_buffer(model):
    session = ListenSession(model, hop_s=0.5, window_s=2.0)
    updates = feed_all(session, noise(6.0), 0.1)
    assert [u["t_end_s"] for u in updates] == pytest.approx(np.arange(1, 13) * 0.5)
    assert session.stats()["dropped_hops"] == 0 and session.stats()["updates_given"] == 12
    assert session._buf.size <= 2 * SR + session.max_chunk  # one window + one chunk, however long it runs
    last = updates[-1]
    assert last["window_start_s"] == pytest.approx(4.0)  # the newest 2 s only
    assert len(last["attention"]) == len(last["frame_times_s"]) and sum(last["attention"]) == pytest.approx(1, abs=1e-4)
    assert last["frame_times_s"][0] > 4.0 and last["frame_times_s"][-1] < 6.0  # session time, not window time
    assert len(last["probabilities"]) == model.config.num_labels and last["label"] == last["top_k"][0]["label"]
    assert last["waveform"]["bins"] == len(last["waveform"]["min"]) == 200
    assert min(last["waveform"]["min"]) < 0 < max(last["waveform"]["max"])


def test_a_late_chunk_gets_one_update_for_the_newest_audio_and_the_rest_are_dropped(model):
    session = ListenSession(model, hop_s=0.5, window_s=2.0)
    session.feed(noise(0.5))
    x = noise(2.0, seed=1)
    updates = session.feed(x)  # four hops became due at once (a client that waited on a slow answer)
    assert len(updates) == 1 and updates[0]["t_end_s"] == pytest.approx(2.5)
    stats = session.stats()
    assert stats["hops"] == 5 and stats["updates_given"] == 2 and stats["dropped_hops"] == 3


def test_a_chunk_during_a_classification_is_buffered_not_queued(model):
    started, release = threading.Event(), threading.Event()

    def slow_predict(audio, **kw):
        from asit_helpers.inference import predict

        started.set()
        release.wait(10)
        return predict(model, audio, **kw)

    session = ListenSession(model, hop_s=0.5, window_s=2.0, predictor=slow_predict)
    first: list = []
    worker = threading.Thread(target=lambda: first.extend(session.feed(noise(0.5))))
    worker.start()
    assert started.wait(10)
    assert session.busy and session.feed(noise(1.0, seed=2)) == []  # two more hops due: answered with no update
    release.set()
    worker.join(10)
    assert len(first) == 1 and first[0]["t_end_s"] == pytest.approx(0.5)
    later = session.feed(noise(0.5, seed=3))  # the next update covers the newest audio; the skipped hops count
    assert len(later) == 1 and later[0]["t_end_s"] == pytest.approx(2.0)
    assert session.stats()["dropped_hops"] == 2


def test_updates_per_s_is_the_rate_really_given(model):
    clock = FakeClock()
    session = ListenSession(model, hop_s=0.5, window_s=1.0, clock=clock)
    for _ in range(10):  # 1 s of wall time per 0.5 s hop: the model (here: the clock) is slower than real time
        clock.t += 1.0
        session.feed(noise(0.5))
    assert session.stats()["updates_per_s"] == pytest.approx(1.0)
    assert session.stats()["hop_rate_per_s"] == pytest.approx(2.0)


# -- bad chunks ---------------------------------------------------------------------------------------------------------


@pytest.mark.parametrize("chunk, status, words", [
    (np.array([0.1, np.nan], dtype=np.float32), 422, "nan"),
    (np.array([0.1, np.inf], dtype=np.float32), 422, "nan or infinite"),
    (np.zeros((2, 800), dtype=np.float32), 400, "1-d"),
    (np.zeros(0, dtype=np.float32), 400, "empty"),
    (np.zeros(3 * SR, dtype=np.float32), 413, "too large"),
    (np.full(100, 300.0, dtype=np.float32), 422, "not float32 audio"),
], ids=["nan", "inf", "stereo", "empty", "too-long", "int-scaled"])
def test_bad_chunks_raise_chunk_errors(model, chunk, status, words):
    session = ListenSession(model)
    with pytest.raises(ChunkError) as err:
        session.feed(chunk)
    assert err.value.status == status and words in err.value.reason.lower()


def test_integer_pcm_and_odd_bytes_are_refused():
    pcm16 = (np.sin(np.arange(1600) / 5) * 3000).astype("<i2").tobytes()  # int16 PCM sent as if float32
    with pytest.raises(ChunkError, match="NaN|not float32"):
        from asit_helpers.live import check_samples

        check_samples(samples_from_bytes(pcm16, SR), SR)
    with pytest.raises(ChunkError, match="whole number of float32"):
        samples_from_bytes(b"\x00" * 7, SR)
    with pytest.raises(ChunkError, match="too large") as err:
        samples_from_bytes(b"\x00" * (4 * SR + 4), SR)
    assert err.value.status == 413


def test_chunks_in_order_and_at_real_time(model):
    clock = FakeClock()
    session = ListenSession(model, realtime=True, clock=clock)
    session.feed(noise(0.1), seq=0)
    with pytest.raises(ChunkError, match="already received") as err:
        session.feed(noise(0.1), seq=0)
    assert err.value.status == 409
    with pytest.raises(ChunkError, match="never did"):
        session.feed(noise(0.1), seq=5)
    session = ListenSession(model, hop_s=5.0, realtime=True, clock=clock)
    with pytest.raises(ChunkError, match="faster than real time"):  # 48 kHz audio declared as 16 kHz: 3x too fast
        for _ in range(60):
            clock.t += 0.1
            session.feed(noise(0.3))


def test_hop_must_fit_the_window(model):
    with pytest.raises(ValueError, match="hop_s"):
        ListenSession(model, hop_s=0.01)
    with pytest.raises(ValueError, match="hop_s"):
        ListenSession(model, hop_s=9.0, window_s=5.0)


# -- the registry ---------------------------------------------------------------------------------------------------


def test_listener_cap_and_idle_expiry(model):
    clock = FakeClock()
    listeners = Listeners(model, max_listeners=2, idle_s=30.0, clock=clock)
    a, b = listeners.open(), listeners.open()
    assert a.id != b.id and len(a.id) >= 20 and len(listeners) == 2
    with pytest.raises(ListenerLimit, match="limit is 2"):
        listeners.open()
    clock.t = 20.0
    a.feed(noise(0.1))  # a is in use; b idles
    clock.t = 35.0
    c = listeners.open()  # b expired (35 s idle), a is kept (15 s)
    assert listeners.get(b.id) is None and listeners.get(a.id) is a and listeners.get(c.id) is c
    assert listeners.close(a.id) is a and listeners.get(a.id) is None and len(listeners) == 1


# -- nothing happening is an answer ---------------------------------------------------------------------------------


def test_silence_is_no_event():
    for x in (np.zeros(3 * SR, np.float32), noise(3.0, level=1e-4)):
        act = activity.judge(x)
        assert act.no_event and act.reason.startswith("silence")


@pytest.mark.parametrize("kind", list(BACKGROUNDS))
def test_background_noise_alone_is_no_event(kind):
    rng = np.random.default_rng(5)
    for _ in range(5):
        x = BACKGROUNDS[kind](rng, 5 * SR)
        act = activity.judge((0.5 * x / np.abs(x).max()).astype(np.float32))
        assert act.no_event, (kind, act)
        assert "nothing stands out" in act.reason


def test_events_stand_out_from_their_background():
    kept = []
    for i, spec in enumerate(SYNTH_CLASSES):
        audio, meta = render_clip(spec.name, clip_seed(41, i, 0))
        kept.append(not activity.judge(audio).no_event)
    assert np.mean(kept) >= 0.9, kept  # the lowest-SNR events (3 dB) are the hard ones


def test_predict_says_when_there_is_no_event(model):
    from asit_helpers.inference import predict

    quiet = predict(model, np.zeros(3 * SR, np.float32), precision="fp32")
    assert quiet.no_event and "silence" in quiet.no_event_reason
    body = quiet.to_dict()
    assert body["no_event"] is True and body["no_event_reason"] == quiet.no_event_reason and "level_db" in body
    audio, _ = render_clip("dog", clip_seed(0, 0, 0), snr_db=(15.0, 15.0))
    loud = predict(model, audio, precision="fp32")
    assert not loud.no_event and loud.no_event_reason is None and loud.level_db > activity.EVENT_MARGIN_DB


def sustained(name: str, seconds: float = 5.0, snr_db: float = 10.0, seed: int = 3) -> np.ndarray:
    """Class ``name``'s sound from start to end over room noise (rain through a whole clip)."""
    spec = next(c for c in SYNTH_CLASSES if c.name == name)
    rng = np.random.default_rng(seed)
    n = int(seconds * SR)
    x = BACKGROUNDS["room"](rng, n)  # unit power
    event = spec.make(rng, n)
    x += event * np.sqrt(10 ** (snr_db / 10) / np.mean(event**2))
    return (0.5 * x / np.abs(x).max()).astype(np.float32)


@pytest.mark.parametrize("name", ["rain", "engine", "car_horn", "stream"])
def test_a_single_clip_of_one_sustained_sound_is_named_not_no_event(model, name):
    from asit_helpers.inference import predict

    clip = sustained(name)
    assert activity.judge(clip).no_event  # against its own floor it stands out from nothing: the old defect
    act = activity.judge_clip(clip)
    assert not act.no_event and act.reason is None and act.steady
    pred = predict(model, clip, precision="fp32")
    assert not pred.no_event and pred.no_event_reason is None and pred.steady
    body = pred.to_dict()
    assert body["no_event"] is False and body["steady"] is True and body["label"] == pred.label


def test_single_clips_silence_room_noise_and_events_with_and_without_a_known_floor(model):
    from asit_helpers.inference import predict

    rng = np.random.default_rng(8)
    room = (0.02 * BACKGROUNDS["room"](rng, 5 * SR)).astype(np.float32)
    floor = activity.noise_floor_db(activity.frame_levels_db(room))
    event, _ = render_clip("dog", clip_seed(0, 0, 0), snr_db=(15.0, 15.0))
    event = (event * 0.02 / np.sqrt(np.mean(event[: SR // 2] ** 2))).astype(np.float32)  # the same room level
    silent = predict(model, np.zeros(5 * SR, np.float32), precision="fp32")
    assert silent.no_event and silent.no_event_reason.startswith("silence") and not silent.steady
    # room noise alone: nothing stands out, but without the room's floor it could as well be one steady sound
    alone = predict(model, room, precision="fp32")
    assert not alone.no_event and alone.steady
    # with the room's floor known (a listening session's, say) the same clip is no event, the event still one
    known = predict(model, room, precision="fp32", noise_floor_db=floor)
    assert known.no_event and "nothing stands out" in known.no_event_reason
    heard = predict(model, event, precision="fp32", noise_floor_db=floor)
    assert not heard.no_event and heard.level_db > activity.EVENT_MARGIN_DB
    assert not predict(model, event, precision="fp32").no_event and not predict(model, event, precision="fp32").steady


def test_a_live_session_hears_a_sustained_sound_start(model):
    """Live keeps the session's floor over time: a sound that then lasts is an event when it starts."""
    rng = np.random.default_rng(9)
    x = BACKGROUNDS["room"](rng, 10 * SR)  # unit power
    rain = next(c for c in SYNTH_CLASSES if c.name == "rain").make(rng, 4 * SR)
    x[6 * SR :] += rain * np.sqrt(10 ** (12 / 10) / np.mean(rain**2))  # from 6 s to the end, 12 dB over the room
    updates = timeline(model, (0.02 * x).astype(np.float32), hop_s=0.5)
    quiet_hops = [u["no_event"] for u in updates if u["t_end_s"] <= 6.0]
    rain_hops = [u["no_event"] for u in updates if 6.0 < u["t_end_s"] <= 8.0]
    assert np.mean(quiet_hops) >= 0.9 and not any(rain_hops), (quiet_hops, rain_hops)


def test_a_live_stream_says_no_event_between_events_and_event_during_them(model):
    events = [("dog", 4.0), ("siren", 11.0), ("cow", 18.0)]
    audio, truth = render_recording(events, 24.0, seed=1)
    updates = timeline(model, audio, hop_s=0.5)
    ends = np.array([u["t_end_s"] for u in updates])
    quiet = np.array([u["no_event"] for u in updates])
    inside = np.zeros(len(updates), bool)
    near = np.zeros(len(updates), bool)
    for e in truth:
        inside |= (ends - 0.5 < e["offset_s"]) & (ends > e["onset_s"])  # the hop overlaps the event
        near |= (ends - 0.5 < e["offset_s"] + 0.5) & (ends > e["onset_s"] - 0.5)
    assert (~quiet[inside]).mean() >= 0.8, list(zip(ends[inside], quiet[inside]))
    assert quiet[~near].mean() >= 0.8, list(zip(ends[~near], quiet[~near]))
    rows = timeline_rows(updates, model.config.label2id and [model.config.id2label[i] for i in range(5)])
    assert rows[0]["t_start_s"] == 0.0 and rows[0]["t_end_s"] == 0.5 and set(rows[0]) >= {"no_event", "dog"}
    assert all(r["label"] == "" for r, q in zip(rows, quiet) if q)
    segments = timeline_segments(updates)
    assert segments[0][:2] == (0.0, 4.0) and segments[0][2] == "no event"
    assert segments[-1][1] == pytest.approx(24.0)


# -- asit timeline ----------------------------------------------------------------------------------------------------


def test_asit_timeline_writes_csv_and_png(tiny_checkpoint, tmp_path, capsys):
    import pandas as pd
    import soundfile as sf

    from asit_helpers.cli import main

    audio, truth = render_recording([("siren", 3.0), ("dog", 8.0)], 12.0, seed=2)
    wav = tmp_path / "rec.wav"
    sf.write(wav, audio, SR)
    code = main(["timeline", str(tiny_checkpoint), str(wav), "--hop", "1.0", "--csv", str(tmp_path / "t.csv"),
                 "--png", str(tmp_path / "t.png"), "--precision", "fp32"])
    printed = capsys.readouterr().out
    assert code == 0, printed
    table = pd.read_csv(tmp_path / "t.csv")
    assert len(table) == 12 and list(table["t_end_s"]) == pytest.approx(np.arange(1, 13))
    assert {"t_start_s", "label", "model_label", "score", "no_event", "level_db", "dog", "cat"} <= set(table.columns)
    assert table.loc[table["t_end_s"] <= 3.0, "no_event"].all()  # before the first event
    assert not table.loc[(table["t_end_s"] > 3.0) & (table["t_end_s"] <= 4.0), "no_event"].any()
    assert np.allclose(table[["dog", "cat", "siren", "rain", "crow"]].sum(axis=1), 1.0, atol=1e-4)
    assert (tmp_path / "t.png").read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
    assert "0.00-   3.00 s  no event" in printed


def test_asit_timeline_reports_a_bad_file(tiny_checkpoint, tmp_path, capsys):
    from asit_helpers.cli import main

    bad = tmp_path / "bad.wav"
    bad.write_bytes(b"RIFF nonsense")
    assert main(["timeline", str(tiny_checkpoint), str(bad)]) == 2
    assert "bad.wav" in capsys.readouterr().err


def test_a_taught_background_answer_is_no_event(model):
    from asit_helpers.inference import no_event_fields

    loud = activity.judge(render_clip("dog", clip_seed(0, 0, 0), snr_db=(15.0, 15.0))[0])
    config = type("Config", (), {"no_event_label": "no event"})()
    assert no_event_fields(loud, "no event", config)["no_event"] is True
    assert "taught background" in no_event_fields(loud, "no event", config)["no_event_reason"]
    assert no_event_fields(loud, "dog", config)["no_event"] is False
    assert no_event_fields(loud, "no event", model.config)["no_event"] is False  # an ordinary checkpoint


def test_long_recordings_stay_in_full_scale():
    audio, truth = render_recording([("crackling_fire", 1.0), ("train", 4.0), ("dog", 7.0)], 10.0, seed=0, snr_db=20)
    assert np.abs(audio).max() <= 0.9 + 1e-6 and [e["label"] for e in truth] == ["crackling_fire", "train", "dog"]
