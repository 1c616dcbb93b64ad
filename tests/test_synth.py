"""Synthetic soundscapes: layout, determinism, ground truth that matches the audio, and the end-to-end pipeline."""

from __future__ import annotations

import numpy as np
import pandas as pd
import pytest
import soundfile as sf

from asit_helpers.synth import (
    BACKGROUNDS,
    SYNTH_CLASSES,
    clip_seed,
    make_soundscapes,
    render_clip,
    render_two_event_clip,
)

CATEGORIES = {"Animals", "Birds", "Vehicles", "Environmental"}


def test_class_list_is_22_in_four_categories():
    names = [c.name for c in SYNTH_CLASSES]
    assert len(names) == 22 and len(set(names)) == 22
    assert {c.category for c in SYNTH_CLASSES} == CATEGORIES
    assert len(BACKGROUNDS) >= 3


@pytest.mark.parametrize("spec", SYNTH_CLASSES, ids=lambda c: c.name)
def test_every_class_renders_a_located_event(spec):
    """The event raises the level inside [onset, offset) above the background around it, for every class."""
    audio, meta = render_clip(spec.name, seed=clip_seed(0, 0, 7), snr_db=(12.0, 12.0))
    assert audio.shape == (80000,) and audio.dtype == np.float32 and np.isfinite(audio).all()
    assert 0.29 <= np.abs(audio).max() <= 0.91
    on, off = int(meta["onset_s"] * 16000), int(meta["offset_s"] * 16000)
    assert 0 < on < off <= 80000
    dur = (off - on) / 16000
    assert 0.2 <= dur <= spec.duration_s[1] + 1e-3
    # The window is where the generator put the event, and tight: it sounds within its first and its last 250 ms
    # (the longest fade-in/out of any class; no silent tail claimed).
    bg = np.mean(np.concatenate([audio[:on], audio[off:]]) ** 2)

    def loudest_10ms(x):
        return (x[: len(x) // 160 * 160].reshape(-1, 160) ** 2).mean(axis=1).max()

    assert loudest_10ms(audio[on : on + 4000]) > 2 * bg and loudest_10ms(audio[off - 4000 : off]) > 2 * bg
    inside = np.mean(audio[on:off] ** 2)
    outside = np.mean(np.concatenate([audio[:on], audio[off:]]) ** 2)
    # 12 dB SNR: the event window holds roughly (1 + 10^1.2) ≈ 17x the background's power.
    assert inside > 5 * outside, f"{spec.name}: event window {inside:.3g} vs background {outside:.3g}"


def test_render_is_deterministic_and_seed_sensitive():
    a1, m1 = render_clip("dog", seed=123)
    a2, m2 = render_clip("dog", seed=123)
    a3, m3 = render_clip("dog", seed=124)
    np.testing.assert_array_equal(a1, a2)
    assert m1 == m2
    assert not np.array_equal(a1, a3)


def test_within_class_variation():
    """Pitch/timbre/onset vary within a class: two clips of one class are different signals and windows."""
    metas = [render_clip("siren", seed=clip_seed(0, 12, i))[1] for i in range(6)]
    assert len({m["onset_s"] for m in metas}) == 6
    assert len({m["snr_db"] for m in metas}) == 6
    assert len({m["background"] for m in metas}) >= 2


def test_unknown_class_is_a_clear_error():
    with pytest.raises(ValueError, match="unknown synthetic class 'unicorn'"):
        render_clip("unicorn", seed=0)


def test_make_soundscapes_layout_csv_and_determinism(tmp_path):
    classes = ["dog", "owl", "siren", "rain"]
    events = make_soundscapes(tmp_path / "a", clips_per_class=3, seed=5, classes=classes, progress=False)
    assert len(events) == 12
    csv = pd.read_csv(tmp_path / "a" / "events.csv")
    assert list(csv.columns) == ["path", "label", "category", "onset_s", "offset_s", "snr_db", "background",
                                 "distractors", "seed"]
    for row in csv.itertuples():
        category, label, name = row.path.split("/")
        assert (category, label) == (row.category, row.label) and name.endswith(".wav")
        info = sf.info(tmp_path / "a" / row.path)
        assert (info.samplerate, info.channels, info.frames) == (16000, 1, 80000)
        assert 3.0 <= row.snr_db <= 20.0 and 0 < row.onset_s < row.offset_s <= 5.0
    # Same seed → identical files; a clip regenerates from its stored per-clip seed alone.
    make_soundscapes(tmp_path / "b", clips_per_class=3, seed=5, classes=classes, progress=False)
    first = csv.iloc[0]
    a, _ = sf.read(tmp_path / "a" / first.path, dtype="float32")
    b, _ = sf.read(tmp_path / "b" / first.path, dtype="float32")
    np.testing.assert_array_equal(a, b)
    again, _ = render_clip(first.label, int(first.seed))
    np.testing.assert_allclose(a, again, atol=1 / 32768 + 1e-6)  # 16-bit WAV quantisation
    # More clips per class later: the existing clips are untouched (per-clip seeds), new ones are added.
    more = make_soundscapes(tmp_path / "a", clips_per_class=4, seed=5, classes=classes, progress=False)
    assert len(more) == 16
    pd.testing.assert_frame_equal(more[more["path"].isin(csv["path"])].reset_index(drop=True), csv, check_dtype=False)


def test_synth_then_preprocess_end_to_end(tmp_path):
    """Synthetic data generated and preprocessed end to end: 22 classes, event times carried into the cache."""
    from asit_helpers.data import AudioCache, preprocess

    events = make_soundscapes(tmp_path / "synth", clips_per_class=4, seed=1, progress=False)
    report = preprocess(tmp_path / "synth", tmp_path / "cache", workers=1, progress=False)
    assert len(report.rejected) == 0 and len(report.kept) == 88 and len(report.classes) == 22
    cache = AudioCache.open(tmp_path / "cache")
    assert len(cache) == 88 and cache.waveforms.shape == (88, 80000) and cache.clip_samples == 80000
    assert set(cache.manifest["split"]) == {"train", "val", "test"}
    # Every clip's label and category match its folder and events.csv; the stored event times are the true ones.
    ev = events.set_index("path")
    rel = cache.manifest["path"].map(lambda p: "/".join(p.replace("\\", "/").split("/")[-3:]))
    np.testing.assert_allclose(cache.manifest["event_onset_s"], rel.map(ev["onset_s"]).to_numpy())
    np.testing.assert_allclose(cache.manifest["snr_db"], rel.map(ev["snr_db"]).to_numpy())
    assert (cache.manifest["label"].to_numpy() == rel.map(ev["label"]).to_numpy()).all()
    # The cached rows are the decoded files.
    i = int(cache.indices("test")[0])
    wav, _ = sf.read(cache.manifest["path"].iloc[i], dtype="float32")
    np.testing.assert_array_equal(cache.audio(i), wav)


def test_cli_synth(tmp_path, capsys):
    from asit_helpers.cli import main

    assert main(["synth", str(tmp_path / "s"), "--clips-per-class", "1", "--seed", "3"]) == 0
    assert "22 clips in 22 classes" in capsys.readouterr().out
    wavs = sorted(p.relative_to(tmp_path / "s").as_posix() for p in (tmp_path / "s").rglob("*.wav"))
    assert len(wavs) == 22 and "Birds/owl/owl_0000.wav" in wavs
    assert main(["synth", str(tmp_path / "bad"), "--clips-per-class", "0"]) == 2  # clear error, no traceback
    assert "clips_per_class must be at least 1" in capsys.readouterr().err


# ---- two events per clip (issue 12) ---------------------------------------------------------------------------


def _level(audio: np.ndarray, start_s: float, end_s: float) -> float:
    return float(np.mean(audio[int(start_s * 16000) : int(end_s * 16000)] ** 2))


@pytest.mark.parametrize("pair", [("dog", "siren"), ("rain", "owl"), ("cow", "crackling_fire")])
def test_two_event_clip_has_two_located_non_overlapping_events(pair):
    audio, meta = render_two_event_clip(pair, seed=clip_seed(0, 0, 3, events=2), snr_db=(12.0, 12.0))
    assert audio.shape == (80000,) and audio.dtype == np.float32 and np.isfinite(audio).all()
    first, second = meta["events"]
    assert (first["label"], second["label"]) == pair
    windows = sorted((e["onset_s"], e["offset_s"]) for e in meta["events"])
    assert 0 < windows[0][0] < windows[0][1] < windows[1][0] < windows[1][1] <= 5.0  # apart, inside the clip
    assert windows[1][0] - windows[0][1] >= 0.3 - 1e-3  # the gap between them
    # Each window is louder than the background outside both windows: both events are really there.
    keep = np.ones(80000, bool)
    for on, off in windows:
        keep[int(on * 16000) : int(off * 16000)] = False
    background = float(np.mean(audio[keep] ** 2))
    for on, off in windows:
        assert _level(audio, on, off) > 5 * background, (pair, on, off)


def test_two_event_clips_vary_order_loudness_and_errors():
    metas = [render_two_event_clip(("dog", "owl"), seed=clip_seed(0, 0, i, events=2))[1] for i in range(12)]
    first_is_dog = [m["events"][0]["onset_s"] < m["events"][1]["onset_s"] for m in metas]
    assert 0 < sum(first_is_dog) < 12  # either event may come first
    louder_is_dog = [m["events"][0]["snr_db"] > m["events"][1]["snr_db"] for m in metas]
    assert 0 < sum(louder_is_dog) < 12  # independent SNRs: either may be the louder
    a1, _ = render_two_event_clip(("dog", "owl"), seed=7)
    a2, _ = render_two_event_clip(("dog", "owl"), seed=7)
    np.testing.assert_array_equal(a1, a2)
    with pytest.raises(ValueError, match="two different classes"):
        render_two_event_clip(("dog", "dog"), seed=0)
    with pytest.raises(ValueError, match="unknown synthetic class 'unicorn'"):
        render_two_event_clip(("dog", "unicorn"), seed=0)
    assert clip_seed(0, 1, 2, events=2) != clip_seed(0, 1, 2)


def test_make_soundscapes_two_events_layout_and_preprocess(tmp_path):
    from asit_helpers.data import preprocess

    classes = ["dog", "owl", "siren"]
    events = make_soundscapes(tmp_path / "two", clips_per_class=3, seed=2, classes=classes, events=2, progress=False)
    csv = pd.read_csv(tmp_path / "two" / "events.csv")
    assert list(csv.columns) == ["path", "label", "category", "onset_s", "offset_s", "snr_db", "label_2",
                                 "category_2", "onset_2_s", "offset_2_s", "snr_2_db", "background", "seed"]
    assert len(csv) == 9 and (csv["label"] != csv["label_2"]).all() and set(csv["label_2"]) <= set(classes)
    assert ((csv["offset_s"] <= csv["onset_2_s"]) | (csv["offset_2_s"] <= csv["onset_s"])).all()
    row = csv.iloc[4]
    again, meta = render_two_event_clip((row.label, row.label_2), int(row.seed))
    wav, _ = sf.read(tmp_path / "two" / row.path, dtype="float32")
    np.testing.assert_allclose(wav, again, atol=1 / 32768 + 1e-6)
    assert meta["events"][1]["onset_s"] == row.onset_2_s
    # The tree is the usual Category/class/clip one, filed under the first class: preprocess takes it as it is.
    report = preprocess(tmp_path / "two", tmp_path / "cache", clip_seconds=5.0, workers=1, progress=False)
    assert len(report.kept) == 9 and len(report.rejected) == 0
    with pytest.raises(ValueError, match="at least two classes"):
        make_soundscapes(tmp_path / "one", clips_per_class=1, classes=["dog"], events=2, progress=False)
    assert len(events) == 9


def test_cli_synth_two_events(tmp_path, capsys):
    from asit_helpers.cli import main

    assert main(["synth", str(tmp_path / "s"), "--clips-per-class", "1", "--events", "2"]) == 0
    assert "22 two-event clips in 22 classes" in capsys.readouterr().out
    assert pd.read_csv(tmp_path / "s" / "events.csv")["label_2"].notna().all()


def test_true_window_is_where_the_generator_put_the_event():
    """Not an energy threshold: the window runs from the event's first to its last non-zero sample, so a quiet
    decay still belongs to the event (an energy threshold on the mix would cut it off)."""
    from asit_helpers import synth

    rng = np.random.default_rng(0)
    spec = synth._CLASS_BY_NAME["owl"]
    raw = spec.make(np.random.default_rng(3), 16000)
    nz = np.flatnonzero(raw)
    event, first = synth._audible_at_snr(raw, 10.0)
    assert first == nz[0] and len(event) == nz[-1] + 1 - nz[0]
    del rng


def test_distractors_are_loud_outside_the_event_and_stored(tmp_path):
    import json

    plain, meta0 = render_clip("owl", seed=11)
    audio, meta = render_clip("owl", seed=11, distractors=2)
    assert (meta["onset_s"], meta["offset_s"]) == (meta0["onset_s"], meta0["offset_s"])  # same clip, plus sounds
    assert len(meta["distractors"]) == 2 and meta0["distractors"] == []
    on, off = meta["onset_s"], meta["offset_s"]
    event_rms = np.sqrt(np.mean(audio[int(on * 16000) : int(off * 16000)] ** 2))
    for d_on, d_off, kind, db in meta["distractors"]:
        assert kind in ("noise_burst", "clatter", "thump") and 0.0 <= db <= 10.0
        assert d_off <= on - 0.1 + 1e-4 or d_on >= off + 0.1 - 1e-4  # outside the event, with a gap
        span = audio[int(d_on * 16000) : int(d_off * 16000)]
        assert np.sqrt(np.mean(span**2)) > 0.8 * event_rms  # about as loud as the event or louder (+ background)
    events = make_soundscapes(tmp_path, clips_per_class=2, classes=["owl", "dog"], seed=1, distractors=1,
                              progress=False)
    stored = [json.loads(v) for v in events["distractors"]]
    assert all(len(v) == 1 for v in stored)
    again = pd.read_csv(tmp_path / "events.csv")
    assert [json.loads(v) for v in again["distractors"]] == stored
    with pytest.raises(ValueError, match="distractors"):
        make_soundscapes(tmp_path / "x", clips_per_class=1, classes=["owl", "dog"], events=2, distractors=1,
                         progress=False)
