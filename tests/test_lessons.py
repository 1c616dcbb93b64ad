"""What the lessons say about their own run (notebooks.py lesson helpers) and what every lesson gives a teacher:
its time, exercises with expected outcomes, a summary and troubleshooting."""

from __future__ import annotations

import re
from pathlib import Path

import nbformat
import numpy as np
import pandas as pd
import pytest
import torch

from asit_helpers import AsitForAudioClassification
from asit_helpers import notebooks as nb

NB_DIR = Path(__file__).resolve().parent.parent / "notebooks"


@pytest.mark.parametrize("name", nb.NOTEBOOKS)
def test_every_lesson_has_its_time_exercises_summary_and_troubleshooting(name):
    text = "\n".join(c.source for c in nbformat.read(NB_DIR / name, as_version=4).cells if c.cell_type == "markdown")
    [time] = [line for line in text.splitlines() if line.startswith("**Time.** Offline")]
    assert re.search(r"\*\*[^*]*\d+(\.\d+)? (s|min)[^*]*\*\*", time) and "measured" in time, time
    assert "Colab T4" in time and "estimate" in time
    exercises = text.split("## Exercises")[1].split("\n## ")[0]
    assert len(re.findall(r"^\d\. ", exercises, re.M)) >= 2
    assert exercises.count("<summary>Expected outcome</summary>") == len(re.findall(r"^\d\. ", exercises, re.M))
    summary = text.split("## Summary")[1].split("\n## ")[0]
    assert len(re.findall(r"^- ", summary, re.M)) == 3
    assert "## Troubleshooting" in text


def test_offline_keeps_what_you_set_and_says_what_it_replaced():
    settings, notes = nb.training_settings(offline=True, smoke=False, preset="base", pooling="mean", mode="head",
                                           epochs=None, batch_size=8)
    assert settings["preset"] == nb.OFFLINE_TRAINING["preset"]
    assert (settings["mode"], settings["batch_size"], settings["pooling"]) == ("head", 8, "mean")  # yours, kept
    assert settings["epochs"] == nb.OFFLINE_TRAINING["epochs"]  # None: the recipe
    assert any("PRESET 'base'" in n and "tiny-fb" in n for n in notes)
    assert any(n.startswith("EPOCHS = None") for n in notes)
    assert not any("MODE" in n or "BATCH_SIZE" in n for n in notes)
    # what train() still takes from the preset's recipe is said too (mixup changes how training accuracy reads)
    from asit_helpers.train import PRESETS

    extra = {k: v for k, v in PRESETS["tiny-fb"].recipe.items() if k not in settings}
    assert extra and any(n.startswith("also from the 'tiny-fb' preset's recipe") and
                         all(f"{k}={v!r}" in n for k, v in extra.items()) for n in notes)


def test_the_real_path_changes_nothing_you_set():
    chosen = dict(preset="base", pooling="attention", mode="full", epochs=3, batch_size=4)
    settings, notes = nb.training_settings(offline=False, smoke=False, **chosen)
    assert settings == chosen and notes == []


def test_smoke_says_it_cut_training():
    settings, notes = nb.training_settings(offline=True, smoke=True, preset="tiny-fb", pooling="attention",
                                           mode=None, epochs=None, batch_size=None)
    for key, value in nb.SMOKE_TRAINING.items():
        assert settings[key] == value
    assert any(n.startswith("SMOKE: EPOCHS") for n in notes)


@pytest.mark.parametrize("preset", ["tiny", "tiny-fb"])
def test_frame_facts_are_the_models_own(preset):
    model = AsitForAudioClassification.from_backbone(preset, labels=["a", "b"])
    facts = nb.frame_facts(model, seconds=5.0)
    assert facts == nb.frame_facts(preset, seconds=5.0)
    assert facts["frames"] == int(model.backbone._get_feat_extract_output_lengths(torch.tensor(80000)))
    times = model.frame_times(facts["frames"]).numpy()
    assert times[0] * 1000 == pytest.approx(facts["first_centre_ms"])
    assert (times[1] - times[0]) * 1000 == pytest.approx(facts["hop_ms"])
    assert facts["field_samples"] == model.config.receptive_field
    text = nb.describe_frames(model)
    assert f"{facts['frames']} frames" in text and f"{facts['field_ms']:g} ms" in text


def test_frame_facts_of_wav2vec2_base_config():
    from transformers import Wav2Vec2Config

    class Base:  # what a loaded wav2vec2-base model exposes, without the download
        config = type("C", (), {"backbone_config": Wav2Vec2Config()})()

    f = nb.frame_facts(Base(), seconds=5.0)
    assert (f["convolutions"], f["field_ms"], f["frames"], f["first_centre_ms"]) == (7, 25.0, 249, 12.5)


def _clips():
    return pd.DataFrame({
        "label": ["dog", "dog", "rain", "rain", "crow", "siren"],
        "predicted": ["dog", "crow", "rain", "rain", "crow", "siren"],
        "score": [0.9, 0.8, 0.7, 0.95, 0.6, 0.5],
        "event_onset_s": [1.0, 2.0, 0.5, 1.0, 2.0, 3.0],
        "event_offset_s": [1.5, 2.4, 3.5, 3.0, 2.3, 4.2],
    }, index=[10, 11, 12, 13, 14, 15])


def test_pick_examples_includes_a_mistake_and_a_texture():
    picked = nb.pick_examples(_clips(), 4)
    rows, reasons = zip(*picked)
    assert reasons[0] == "a mistake" and rows[0] == 11
    assert reasons[1].startswith("a texture (rain") and rows[1] == 12
    assert reasons[2] == "the shortest event" and rows[2] == 14
    assert len({_clips().loc[r, "label"] for r in rows}) == 4  # one clip per class


class _Report:
    def __init__(self, clips, labels):
        self.clips, self.labels = clips, labels
        recall = clips.assign(ok=clips["label"] == clips["predicted"]).groupby("label")["ok"].mean()
        self.per_class = pd.DataFrame({"recall": recall})
        self.by_snr = pd.DataFrame({"snr_db": ["3.1 to 8.0", "8.0 to 12.0"], "snr_db_low": [3.1, 8.0],
                                    "snr_db_high": [8.0, 12.0], "n": [20, 20],
                                    "accuracy": [0.95, 0.9]})


def test_imbalanced_subset_parts_accuracy_and_macro_f1():
    labels = ["a", "b", "c", "d"]
    rows = []
    for lab, right in zip(labels, [10, 10, 2, 2]):  # a, b recognised; c, d mostly not
        rows += [(lab, lab)] * right + [(lab, "a" if lab != "a" else "b")] * (10 - right)
    clips = pd.DataFrame(rows, columns=["label", "predicted"])
    table = nb.imbalanced_view(_Report(clips, labels))
    whole, subset = table.loc["whole split (balanced)"], table.loc["imbalanced subset"]
    assert whole["accuracy"] == pytest.approx(0.6)
    assert abs(subset["accuracy"] - subset["macro_f1"]) > abs(whole["accuracy"] - whole["macro_f1"])
    assert subset["clips per class"] == "1-10"


def test_snr_table_reads_as_levels_and_clips():
    table = nb.snr_table(_Report(_clips(), ["dog"]))
    assert list(table.index) == ["3.1 to 8.0 dB", "8.0 to 12.0 dB"]
    assert list(table["right"]) == ["19 of 20", "18 of 20"] and list(table["one clip"]) == [0.05, 0.05]


def test_layout_and_manifest_are_shown(tmp_path):
    for cat, cls in (("Animals", "dog"), ("Animals", "cat"), ("Birds", "crow")):
        (tmp_path / "data" / cat / cls).mkdir(parents=True)
        for k in range(3):
            (tmp_path / "data" / cat / cls / f"{cls}_{k}.wav").write_bytes(b"")
    tree = nb.show_tree(tmp_path / "data")
    assert "Animals/  (6 files)" in tree and "Birds/  (3 files)" in tree and "... and 2 more files" in tree
    manifest = pd.DataFrame({"path": ["/x/dog_0.wav"], "label": ["dog"], "group": ["g"], "extra": [1]})
    described = nb.describe_manifest(manifest)
    assert list(described.index) == list(manifest.columns)
    assert described.loc["group", "records"].startswith("clips cut from one recording")
    assert described.loc["label", "first clip"] == "dog"


def test_about_this_run_names_the_data_and_backbone():
    offline = nb.about_this_run(True).data
    assert "synthetic" in offline and nb.OFFLINE_TRAINING["preset"] in offline
    assert "misname" not in offline and "only heard synthetic" in nb.about_this_run(True, demo=True).data
    real = nb.about_this_run(False).data
    assert "facebook/wav2vec2-base" in real and "not ASiT's measurements" in real


def test_distractor_check_scores_the_same_clips_without_and_with_a_loud_distractor(tmp_path):
    """05's "where they part" section: the same synthetic clips twice, the loudness detectors scored beside
    attention; a distractor louder than the event must pull the loudest frame off the event (a fact of the data,
    whatever the model), and the reading is written from the table's own numbers."""
    from asit_helpers.data import preprocess
    from asit_helpers.synth import SYNTH_CLASSES, make_soundscapes

    # the plain set as the check makes it (it resumes from here), for the cache's label order a trained model has
    plain = tmp_path / "data" / "localisation_plain"
    make_soundscapes(plain / "source", clips_per_class=1, seed=7, classes=[c.name for c in SYNTH_CLASSES],
                     progress=False)
    labels = preprocess(plain / "source", plain / "cache", workers=1, progress=False).classes
    torch.manual_seed(0)
    model = AsitForAudioClassification.from_backbone("tiny-fb", labels=labels).eval()
    check = nb.distractor_check(nb.workspace(tmp_path), model, smoke=True)
    t = check.table
    assert list(t.index) == ["plain: in the event", "distractors: in the event", "distractors: on the distractors"]
    assert list(t.columns) == ["attention", "energy", "loudest_frame", "uniform", "accuracy", "clips"]
    assert (t["clips"] == len(SYNTH_CLASSES)).all()
    assert t.loc["plain: in the event", "loudest_frame"] > 0.8  # plain clips: the event is the loud part
    assert t.loc["distractors: on the distractors", "loudest_frame"] > 0.6  # ... until something louder comes
    assert t.loc["distractors: in the event", "uniform"] == pytest.approx(t.loc["plain: in the event", "uniform"])
    reading = check.reading()
    assert f"{t.loc['distractors: on the distractors', 'loudest_frame']:.0%}" in reading
    assert f"{t.loc['distractors: in the event', 'attention']:.2f}" in reading
    ex = check.example(model)
    assert ex["distractors"] and ex["events"] and ex["samples"].size == ex["pred"].duration_s * 16000
    onset, offset = ex["events"][0]
    assert all(b <= onset or a >= offset for a, b in ex["distractors"])  # outside the event
    assert "its loudest frame is on the distractor" in ex["why"]
