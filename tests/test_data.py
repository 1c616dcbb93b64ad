"""Scanning, rejects, class maps, group-aware splits and the resumable preprocessing cache."""

from __future__ import annotations

import json
import os
import subprocess
import sys
import textwrap
import time
from pathlib import Path

import numpy as np
import pandas as pd
import pytest
import soundfile as sf

from asit_helpers.audio import load_audio
from asit_helpers.data import (
    AudioCache,
    CacheError,
    apply_class_map,
    assign_splits,
    load_class_map,
    preprocess,
    scan_folder,
)

REPO = Path(__file__).resolve().parents[1]


def _noise(seconds: float, sr: int, channels: int = 1, seed: int = 0) -> np.ndarray:
    rng = np.random.default_rng(seed)
    x = (0.1 * rng.standard_normal((int(seconds * sr), channels))).astype(np.float32)
    return x[:, 0] if channels == 1 else x


@pytest.fixture
def mixed_tree(tmp_path) -> tuple[Path, set[str], set[str]]:
    """Category/class folders at two depths with WAV/FLAC/OGG/MP3/AIFF at several rates and channel counts, plus
    exactly three bad files: an empty .wav, a text file named .wav and a truncated WAV."""
    root = tmp_path / "data"
    good = {
        "Animals/dog/bark_01.wav": (1.5, 44100, 2, {}),
        "Animals/dog/bark_02.flac": (2.0, 22050, 1, {}),
        "Animals/cat/meow_a.ogg": (1.0, 48000, 2, {"subtype": "VORBIS"}),
        "Animals/cat/meow_b.aiff": (0.8, 16000, 1, {}),
        "Vehicles/siren/wail.mp3": (1.2, 32000, 1, {"subtype": "MPEG_LAYER_III"}),
        "Vehicles/siren/long_recording.wav": (12.0, 8000, 1, {}),  # longer than the 5 s clip: cropped
        "Sounds/Nature/Birds/crow/caw.WAV": (0.6, 16000, 1, {}),  # deeper tree, upper-case extension
    }
    for i, (rel, (secs, sr, ch, kw)) in enumerate(good.items()):
        path = root / rel
        path.parent.mkdir(parents=True, exist_ok=True)
        fmt = {".ogg": "OGG", ".mp3": "MP3", ".aiff": "AIFF", ".flac": "FLAC"}.get(path.suffix.lower(), "WAV")
        sf.write(path, _noise(secs, sr, ch, seed=i), sr, format=fmt, **kw)
    bad = {
        "Animals/dog/empty.wav": b"",
        "Animals/cat/notes.wav": b"this is a text file with a .wav name\n",
    }
    for rel, data in bad.items():
        (root / rel).write_bytes(data)
    full = root / "Vehicles/siren/full.wav"
    sf.write(full, _noise(2.0, 16000), 16000)
    truncated = root / "Vehicles/siren/truncated.wav"
    truncated.write_bytes(full.read_bytes()[:20000])
    full.unlink()
    # Not clips, not rejects: metadata and OS litter are passed over.
    (root / "README.txt").write_text("dataset notes")
    (root / "Animals" / ".DS_Store").write_bytes(b"\0\1")
    bad_paths = {str(root / p) for p in list(bad) + ["Vehicles/siren/truncated.wav"]}
    good_paths = {str(root / p) for p in good}
    return root, good_paths, bad_paths


def test_scan_folder_labels_any_depth(mixed_tree):
    root, good, _ = mixed_tree
    manifest, rejected = scan_folder(root)
    assert len(rejected) == 0  # scanning only lists; decoding finds the bad files
    by_path = manifest.set_index("path")
    assert by_path.loc[str(root / "Animals/dog/bark_01.wav"), ["label", "category"]].tolist() == ["dog", "Animals"]
    assert by_path.loc[str(root / "Sounds/Nature/Birds/crow/caw.WAV"), ["label", "category"]].tolist() == ["crow", "Birds"]
    assert good <= set(manifest["path"])


def test_mixed_tree_rejects_exactly_the_three_bad_files(mixed_tree, tmp_path):
    root, good, bad = mixed_tree
    report = preprocess(root, tmp_path / "cache", workers=1, progress=False)
    assert set(report.rejected["path"]) == bad
    reasons = dict(zip(report.rejected["path"], report.rejected["reason"]))
    assert "empty" in reasons[str(root / "Animals/dog/empty.wav")]
    assert "not an audio file" in reasons[str(root / "Animals/cat/notes.wav")]
    assert "truncated" in reasons[str(root / "Vehicles/siren/truncated.wav")]
    assert set(report.kept["path"]) == good
    cache = AudioCache.open(tmp_path / "cache")
    assert cache.labels == ["cat", "dog", "crow", "siren"]  # by category (Animals, Birds, Vehicles), then name
    m = cache.manifest.set_index("path")
    assert m.loc[str(root / "Animals/dog/bark_01.wav"), ["orig_sr", "channels"]].tolist() == [44100, 2]
    assert m.loc[str(root / "Animals/cat/meow_a.ogg"), ["orig_sr", "channels"]].tolist() == [48000, 2]
    # Every row equals load_audio's output (the one loader), zero-padded to 5 s; the long file keeps 5 s.
    for i, path in enumerate(cache.manifest["path"]):
        ref = load_audio(path)
        row = cache.audio(i)
        n = int(cache.lengths[i])
        if len(ref) <= 80000:
            assert n == len(ref)
            np.testing.assert_array_equal(row[:n], ref)
            assert not row[n:].any()
        else:
            start = int(round(cache.manifest["crop_start_s"].iloc[i] * 16000))
            assert n == 80000 and cache.manifest["duration_s"].iloc[i] == pytest.approx(12.0, abs=1e-3)
            np.testing.assert_array_equal(row, ref[start : start + 80000])
    summary = report.summary()
    assert "rejected 3 files" in summary and "truncated" in summary


def test_cli_preprocess_json(mixed_tree, tmp_path, capsys):
    from asit_helpers.cli import main

    root, good, bad = mixed_tree
    assert main(["preprocess", str(root), "--out", str(tmp_path / "c"), "--workers", "1", "--json"]) == 0
    out = json.loads(capsys.readouterr().out)
    assert out["kept"] == len(good)
    assert {r["path"] for r in out["rejected"]} == bad and all(r["reason"] for r in out["rejected"])
    assert out["classes"] == ["cat", "dog", "crow", "siren"]


# ---- class maps ----------------------------------------------------------------------------------------------------


def _manifest(counts: dict[str, int], category: str = "Animals") -> pd.DataFrame:
    rows = [
        {"path": f"/d/{lab}/{i}.wav", "label": lab, "category": category, "group": f"{lab}-{i}", "fold": ""}
        for lab, n in counts.items()
        for i in range(n)
    ]
    return pd.DataFrame(rows)


def test_class_map_rename_merge_keep_min_top(tmp_path):
    m = _manifest({"dog_bark": 6, "crow": 5, "rooster": 4, "hen": 2, "cat": 3})
    yaml_file = tmp_path / "classes.yaml"
    yaml_file.write_text("rename: {dog_bark: dog}\nmerge: {bird: [crow, rooster, hen]}\ncategories: {bird: Birds}\n")
    kept, excluded = apply_class_map(m, yaml_file)
    assert kept["label"].value_counts().to_dict() == {"bird": 11, "dog": 6, "cat": 3}
    assert set(kept.loc[kept["label"] == "bird", "category"]) == {"Birds"}
    assert excluded.empty
    kept, excluded = apply_class_map(m, {"merge": {"bird": ["crow", "rooster", "hen"]}}, min_clips=4)
    assert sorted(kept["label"].unique()) == ["bird", "dog_bark"]
    assert set(excluded["label"]) == {"cat"} and "fewer than 4" in excluded["reason"].iloc[0]
    kept, excluded = apply_class_map(m, None, top_n=2)
    assert sorted(kept["label"].unique()) == ["crow", "dog_bark"]
    # Plain form: listed classes are kept under their new names; the rest are left out (not rejected).
    kept, excluded = apply_class_map(m, {"dog_bark": "dog", "cat": "cat"})
    assert sorted(kept["label"].unique()) == ["cat", "dog"] and len(excluded) == 11
    assert load_class_map(["dog", "cat"]) == {"keep": ["dog", "cat"]}
    with pytest.raises(ValueError, match="unknown class-map keys"):
        load_class_map({"keep": ["dog"], "renam": {}})


# ---- splits --------------------------------------------------------------------------------------------------------


def test_splits_are_stratified_seeded_and_group_aware():
    rows = []
    for lab in ("a", "b", "c", "d"):
        for rec in range(10):
            for seg in range(3):  # three clips cut from each recording
                rows.append({"path": f"/{lab}/{rec}_seg{seg}.wav", "label": lab, "group": f"{lab}/{rec}", "fold": ""})
    m = pd.DataFrame(rows)
    s1 = assign_splits(m, seed=3)
    s2 = assign_splits(m, seed=3)
    assert s1.equals(s2)
    assert not s1.equals(assign_splits(m, seed=4))
    # No recording straddles two splits.
    assert (m.assign(split=s1).groupby("group")["split"].nunique() == 1).all()
    # Every class is in every split, and the test share is near 15%.
    table = pd.crosstab(m["label"], s1)
    assert (table[["train", "val", "test"]] > 0).all().all()
    assert 0.08 <= (s1 == "test").mean() <= 0.25


def test_group_pattern_keeps_segments_of_one_recording_together(tmp_path):
    root = tmp_path / "d"
    for name in ("walk_seg1", "walk_seg2", "walk_seg3", "dog_01", "dog_02"):
        (root / "Animals" / "dog").mkdir(parents=True, exist_ok=True)
        sf.write(root / "Animals" / "dog" / f"{name}.wav", _noise(0.2, 16000), 16000)
    manifest, _ = scan_folder(root)
    groups = dict(zip(manifest["path"].map(lambda p: Path(p).stem), manifest["group"]))
    assert groups["walk_seg1"] == groups["walk_seg2"] == groups["walk_seg3"]
    assert groups["dog_01"] != groups["dog_02"]  # bare numbers are separate recordings


def test_official_folds_split_by_whole_folds():
    m = pd.DataFrame({"path": [f"/{i}.wav" for i in range(50)], "label": ["x", "y"] * 25,
                      "group": [str(i) for i in range(50)], "fold": [str(1 + i % 5) for i in range(50)]})
    split = assign_splits(m)
    assert set(m.loc[split == "test", "fold"]) == {"5"}
    assert set(m.loc[split == "val", "fold"]) == {"4"}
    assert set(m.loc[split == "train", "fold"]) == {"1", "2", "3"}


# ---- resumable cache -----------------------------------------------------------------------------------------------


@pytest.fixture(scope="module")
def synth_small(tmp_path_factory) -> Path:
    from asit_helpers.synth import make_soundscapes

    root = tmp_path_factory.mktemp("synth") / "s"
    make_soundscapes(root, clips_per_class=8, seed=2, classes=["dog", "owl", "siren"], progress=False)
    return root


def _assert_same_cache(a: Path, b: Path) -> None:
    ca, cb = AudioCache.open(a), AudioCache.open(b)
    assert ca.labels == cb.labels
    pd.testing.assert_frame_equal(ca.manifest, cb.manifest)
    np.testing.assert_array_equal(np.asarray(ca.waveforms), np.asarray(cb.waveforms))
    assert (a / "waveforms.f32").stat().st_size == (b / "waveforms.f32").stat().st_size


def test_rerun_skips_finished_work(synth_small, tmp_path):
    first = preprocess(synth_small, tmp_path / "c", workers=1, progress=False)
    assert (first.decoded, first.reused) == (24, 0)
    second = preprocess(synth_small, tmp_path / "c", workers=1, progress=False)
    assert (second.decoded, second.reused) == (0, 24)


def test_killed_run_resumes_to_the_same_cache(synth_small, tmp_path):
    """A preprocess process killed mid-way (SIGKILL / TerminateProcess), then re-run, gives the same cache as an
    uninterrupted run, and decodes only what the killed run had not committed."""
    reference = tmp_path / "reference"
    preprocess(synth_small, reference, workers=1, progress=False)

    target = tmp_path / "killed"
    stalled = tmp_path / "stalled"
    script = textwrap.dedent(
        f"""
        import pathlib, time
        from asit_helpers.data import preprocess

        def stall(done, total):
            if done == 20:  # some clips are committed, some pending: hang here until killed
                pathlib.Path({str(stalled)!r}).touch()
                time.sleep(600)

        preprocess({str(synth_small)!r}, {str(target)!r}, workers=1, progress=False, callback=stall, commit_every=8)
        """
    )
    proc = subprocess.Popen([sys.executable, "-c", script], cwd=REPO)
    try:
        deadline = time.monotonic() + 120
        while not stalled.exists():
            assert proc.poll() is None, "the preprocess subprocess exited before it could be killed"
            assert time.monotonic() < deadline, "the preprocess subprocess never reached clip 20"
            time.sleep(0.05)
    finally:
        proc.kill()
        proc.wait(timeout=30)
    assert not (target / "cache.json").exists()
    with pytest.raises(CacheError, match="unfinished run"):
        AudioCache.open(target)
    committed = 0  # complete log lines (the kill may have torn the last one; a torn line does not count)
    for line in (target / "store.jsonl").read_text().splitlines()[1:]:
        try:
            committed += "row" in json.loads(line)
        except json.JSONDecodeError:
            pass
    assert 1 <= committed < 20  # killed mid-way, with the last few clips not yet committed

    resumed = preprocess(synth_small, target, workers=1, progress=False)
    assert (resumed.reused, resumed.decoded) == (committed, 24 - committed)
    _assert_same_cache(reference, target)


def test_interrupt_in_process_keeps_finished_clips(synth_small, tmp_path):
    """Ctrl-C in a notebook: clips finished before the interrupt are kept, the next run does the rest."""

    def interrupt(done, total):
        if done == 5:
            raise KeyboardInterrupt

    with pytest.raises(KeyboardInterrupt):
        preprocess(synth_small, tmp_path / "c", workers=1, progress=False, callback=interrupt)
    resumed = preprocess(synth_small, tmp_path / "c", workers=1, progress=False)
    assert (resumed.reused, resumed.decoded) == (5, 19)
    preprocess(synth_small, tmp_path / "ref", workers=1, progress=False)
    _assert_same_cache(tmp_path / "ref", tmp_path / "c")


def test_changing_a_setting_invalidates_only_what_it_affects(synth_small, tmp_path):
    import shutil

    src = tmp_path / "src"
    shutil.copytree(synth_small, src)
    cache_dir = tmp_path / "c"
    full = preprocess(src, cache_dir, workers=1, progress=False)
    rows = {p: np.asarray(AudioCache.open(cache_dir).waveforms[i]) for i, p in enumerate(full.kept["path"])}

    # A class map and a new split seed touch only the manifest: nothing is decoded again.
    sub = preprocess(src, cache_dir, classes=["dog", "siren"], seed=7, workers=1, progress=False)
    assert sub.decoded == 0 and sub.classes == ["dog", "siren"] and len(sub.excluded) == 8
    cache = AudioCache.open(cache_dir)
    assert len(cache) == 16
    for i, p in enumerate(cache.manifest["path"]):  # rows were re-packed, each still holds its own file
        np.testing.assert_array_equal(cache.waveforms[i], rows[p])

    # Back to all classes: only the 8 owl clips dropped from the store are decoded again.
    back = preprocess(src, cache_dir, workers=1, progress=False)
    assert (back.decoded, back.reused) == (8, 16)

    # A class map that keeps a prefix of the rows (no repacking), then everything again: still the same rows.
    assert preprocess(src, cache_dir, classes=["dog"], workers=1, progress=False).decoded == 0
    assert (cache_dir / "waveforms.f32").stat().st_size == 8 * 80000 * 4
    again = preprocess(src, cache_dir, workers=2, progress=False)
    assert (again.decoded, again.reused) == (16, 8)
    cache = AudioCache.open(cache_dir)
    for i, p in enumerate(cache.manifest["path"]):
        np.testing.assert_array_equal(cache.waveforms[i], rows[p])
    assert preprocess(src, cache_dir, workers=1, progress=False).decoded == 0

    # An edited file is decoded again; nothing else is.
    edited = src / "Animals" / "dog" / "dog_0003.wav"
    sf.write(edited, _noise(5.0, 16000, seed=99), 16000)
    os.utime(edited, ns=(time.time_ns(), time.time_ns() + 10**9))
    after_edit = preprocess(src, cache_dir, workers=1, progress=False)
    assert (after_edit.decoded, after_edit.reused) == (1, 23)

    # A different clip length changes every row.
    short = preprocess(src, cache_dir, clip_seconds=2.0, workers=1, progress=False)
    assert short.decoded == 24 and AudioCache.open(cache_dir).waveforms.shape == (24, 32000)


def test_two_worker_processes_give_the_same_cache(synth_small, tmp_path):
    preprocess(synth_small, tmp_path / "one", workers=1, progress=False)
    preprocess(synth_small, tmp_path / "two", workers=2, progress=False)
    _assert_same_cache(tmp_path / "one", tmp_path / "two")


def test_open_errors_are_clear(tmp_path):
    with pytest.raises(CacheError, match="not a finished ASiT cache"):
        AudioCache.open(tmp_path)
    with pytest.raises(FileNotFoundError, match="no such file or folder"):
        preprocess(tmp_path / "missing", tmp_path / "c", progress=False)


def test_data_plots_draw(synth_small, tmp_path):
    import matplotlib

    matplotlib.use("Agg")
    from asit_helpers import viz

    preprocess(synth_small, tmp_path / "c", workers=1, progress=False)
    cache = AudioCache.open(tmp_path / "c")
    fig = viz.plot_class_counts(cache)
    bars = [p for p in fig.axes[0].patches if p.get_height() > 0]
    assert sum(p.get_height() for p in bars) == len(cache)
    viz.plot_durations(cache)
    fig = viz.plot_examples(cache, n=2)
    assert len([ax for ax in fig.axes if ax.get_label() != "<colorbar>"]) == 4  # 2 clips x (waveform, spectrogram)
    assert any(ax.get_label() == "<colorbar>" for ax in fig.axes)  # the dB scale is shown
    html = viz.audio_players(cache, indices=[0, 1]).data
    assert html.count("<audio") == 2 and "dog" in html
    spec, centres = viz._log_mel(cache.audio(0))
    assert spec.shape[0] == len(centres) == 64 and np.isfinite(spec).all()


def test_csv_manifest_source(tmp_path):
    """A CSV with path + label (paths relative to the CSV) is a source too; a missing file is rejected, not fatal."""
    for name in ("a.wav", "b.wav", "c.wav"):
        sf.write(tmp_path / name, _noise(0.5, 16000), 16000)
    pd.DataFrame({"path": ["a.wav", "b.wav", "c.wav", "gone.wav"], "label": ["x", "x", "y", "y"]}).to_csv(
        tmp_path / "list.csv", index=False
    )
    report = preprocess(tmp_path / "list.csv", tmp_path / "cache", workers=1, progress=False)
    assert sorted(report.kept["label"]) == ["x", "x", "y"]
    assert report.rejected["path"].tolist() == [str(tmp_path / "gone.wav")]
    assert "not found" in report.rejected["reason"].iloc[0] or "cannot be read" in report.rejected["reason"].iloc[0]
    with pytest.raises(ValueError, match="needs columns 'path' and 'label'"):
        preprocess(pd.DataFrame({"file": ["a.wav"]}), tmp_path / "c2", progress=False)


def test_workers_that_cannot_start_fall_back_to_this_process(synth_small, tmp_path):
    """A script fed on stdin cannot be re-imported by spawned workers: the run warns, finishes in-process, and the
    cache is the same as a plain run's."""
    preprocess(synth_small, tmp_path / "reference", workers=1, progress=False)
    script = textwrap.dedent(
        f"""
        import sys
        sys.path.insert(0, {str(REPO)!r})
        from asit_helpers.data import preprocess
        preprocess({str(synth_small)!r}, {str(tmp_path / "stdin")!r}, workers=3, progress=False)
        """
    )
    proc = subprocess.run([sys.executable, "-"], input=script, text=True, capture_output=True, cwd=tmp_path, timeout=300)
    assert proc.returncode == 0, proc.stderr[-2000:]
    assert "continuing in this process" in proc.stderr
    _assert_same_cache(tmp_path / "reference", tmp_path / "stdin")


def test_every_figure_groups_the_categories_in_one_order():
    """01's raw manifest (no label ids: a folder scan), 02's cache and 04's confusion (label ids in any order)
    show ASiT's categories in the same order, so a class sits in the same block in every notebook."""
    from asit_helpers import viz
    from asit_helpers.data import ASIT_CATEGORIES, ESC22

    labels = sorted(ESC22)  # a cache numbers classes alphabetically: airplane (Vehicles) is class 0
    raw = pd.DataFrame({"label": labels, "category": [ESC22[c] for c in labels]})
    cached = raw.assign(label_id=range(len(labels)))
    for table in (raw, cached, cached.iloc[::-1]):
        order = viz._class_order(table)
        seen = list(dict.fromkeys(ESC22[c] for c in order))
        assert seen == list(ASIT_CATEGORIES)
    assert viz._class_order(raw) == viz._class_order(cached)
    extra = pd.DataFrame({"label": ["dog", "beep", "zap"], "category": ["Animals", "Lab", "Lab"]})
    assert viz._class_order(extra) == ["dog", "beep", "zap"]  # categories outside ASiT's come after them
