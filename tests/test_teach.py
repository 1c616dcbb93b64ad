"""teach(): a few recordings per class → an ordinary ASiT checkpoint with a no-event answer (tiny random models)."""

from __future__ import annotations

import hashlib
import json
from pathlib import Path

import numpy as np
import pytest
import soundfile as sf
import torch

from asit_helpers import AsitForAudioClassification
from asit_helpers.inference import predict
from asit_helpers.model import load_model
from asit_helpers.teach import NO_EVENT, TeachError, TeachSettings, embed_examples, read_examples, teach

SR = 16000
FAST = dict(steps=40, views=1, cv_folds=2)


def _tone(freq, seconds, rng, amp=0.5):
    t = np.arange(int(seconds * SR)) / SR
    return (amp * np.sin(2 * np.pi * freq * t + rng.uniform(0, 6)) + 0.01 * rng.standard_normal(t.size)).astype(np.float32)


def _clicks(seconds, rng):
    x = 0.01 * rng.standard_normal(int(seconds * SR))
    x[rng.integers(0, x.size, 40)] = 0.9
    return x.astype(np.float32)


@pytest.fixture(scope="module")
def examples():
    rng = np.random.default_rng(0)
    return {
        "whistle": [_tone(rng.uniform(2000, 2400), rng.uniform(1.0, 1.6), rng) for _ in range(4)],
        "clicks": [_clicks(rng.uniform(1.0, 1.6), rng) for _ in range(4)],
    }


@pytest.fixture(scope="module")
def background():
    rng = np.random.default_rng(1)
    return [(0.05 * np.cumsum(rng.standard_normal(8 * SR)) / 300).astype(np.float32)]  # brown-ish room noise


@pytest.fixture(scope="module")
def taught(examples, background, tmp_path_factory):
    """Taught with teach's own number of steps: FAST's 40 fit these 8 clips or not depending on the random tiny
    backbone each transformers version initialises (6 of 8 with 4.45's weights, 7 with 5.24's; 120: 8 of 8)."""
    out = tmp_path_factory.mktemp("taught") / "model"
    return teach("tiny", examples, background, out=out, **{**FAST, "steps": TeachSettings().steps})


def test_result_is_an_ordinary_checkpoint_with_a_no_event_answer(taught, examples):
    out = taught.out
    for name in ("config.json", "model.safetensors", "preprocessor_config.json", "examples.json", "teach_report.json"):
        assert (out / name).is_file(), name
    assert not list(out.glob("*.bin")) and not (out / ".tmp-teach").exists()
    config = json.loads((out / "config.json").read_text())
    assert config["model_type"] == "asit"
    assert list(config["id2label"].values()) == ["whistle", "clicks", NO_EVENT]
    assert config["no_event_label"] == NO_EVENT
    longest = max(len(c) for group in examples.values() for c in group) / SR
    assert config["clip_seconds"] == pytest.approx(np.ceil(longest * 10) / 10)
    model = load_model(out)
    assert model.config.no_event_label == NO_EVENT
    pred = predict(model, examples["whistle"][0])
    assert {name for name, _ in pred.top_k} == {"whistle", "clicks", NO_EVENT}
    listing = json.loads((out / "examples.json").read_text())
    assert sorted(e["class"] for e in listing) == ["clicks"] * 4 + [NO_EVENT] + ["whistle"] * 4
    report = json.loads((out / "teach_report.json").read_text())
    assert report["clips_per_class"] == {"whistle": 4, "clicks": 4}
    assert report["background_clips"] == 1 and report["background_seconds"] == pytest.approx(8.0)
    assert 0.0 <= report["cv_accuracy"] <= 1.0 and report["cv_folds"] == 2
    assert set(report["cv_per_class"]) == {"whistle", "clicks", NO_EVENT}
    assert report["seconds"] >= report["seconds_to_model"] > 0


def test_taught_model_loads_through_pipeline_and_the_server(taught, examples):
    import asit_helpers  # noqa: F401  (registers the ASiT classes with transformers' Auto*)
    from transformers import pipeline

    clf = pipeline("audio-classification", model=str(taught.out))
    answers = clf(examples["clicks"][0], top_k=3)
    assert {a["label"] for a in answers} == {"whistle", "clicks", NO_EVENT}

    from asit_helpers.serve import create_app

    client = create_app(taught.out).test_client()
    assert client.get("/labels").get_json()["labels"] == ["whistle", "clicks", NO_EVENT]


def test_it_learns_the_examples_it_was_taught(taught, examples, background):
    """Pooling + head fit the training clips (distinct sounds: a whistle, clicks, room noise)."""
    right = sum(predict(taught.model, clip).label == name for name, group in examples.items() for clip in group)
    assert right >= 7, right
    assert predict(taught.model, background[0][: 2 * SR]).label == NO_EVENT


def test_clips_are_padded_with_a_mask_never_stretched(examples, background):
    """Each piece keeps its own frame count; a short clip's frames are what the backbone gives for it alone."""
    torch.manual_seed(0)
    model = AsitForAudioClassification.from_backbone("tiny", labels=["whistle", "clicks", NO_EVENT],
                                                     clip_seconds=1.6).eval()
    clips, bg = read_examples(examples, background)
    items = embed_examples(model, clips, bg, ["whistle", "clicks", NO_EVENT],
                           TeachSettings(views=0, precision="fp32"))
    first = clips["whistle"][0].samples
    frames = int(model.backbone._get_feat_extract_output_lengths(torch.tensor([len(first)])).item())
    assert int(items.frame_mask[0].sum()) == frames
    assert not items.frame_mask[0, frames:].any() and (items.hidden[0, frames:] == 0).all()
    batch = model.feature_extractor()([first], sampling_rate=SR, return_tensors="pt")
    alone, _ = model.encode(batch["input_values"], batch["attention_mask"])
    torch.testing.assert_close(items.hidden[0, :frames], alone[0], atol=1e-4, rtol=1e-4)
    # 8 s of background in 1.6 s pieces: 5 pieces labelled as the no-event answer
    assert (items.labels == 2).sum() == 5


def test_views_are_extra_rows_of_the_same_recording(examples, background):
    model = AsitForAudioClassification.from_backbone("tiny", labels=["whistle", "clicks", NO_EVENT],
                                                     clip_seconds=1.6).eval()
    clips, bg = read_examples(examples, background)
    items = embed_examples(model, clips, bg, ["whistle", "clicks", NO_EVENT], TeachSettings(views=2))
    n, events = 8 + 5, 8  # the background pieces get no views (background mixed with background)
    assert len(items.labels) == n + 2 * events and list(np.bincount(items.view)) == [n, events, events]
    assert (items.groups[:events] == items.groups[n : n + events]).all()
    assert (items.labels[n:] != 2).all()
    assert not torch.equal(items.hidden[0], items.hidden[n])  # a view is not the clean clip again


def _write(folder: Path, name: str, audio: np.ndarray) -> Path:
    folder.mkdir(parents=True, exist_ok=True)
    sf.write(folder / name, audio, SR)
    return folder / name


def test_folder_input_with_background_folder(tmp_path, examples, background):
    for name, group in examples.items():
        for i, clip in enumerate(group):
            _write(tmp_path / "ex" / name, f"{name}_{i}.wav", clip)
    _write(tmp_path / "ex" / "background", "room.wav", background[0])
    result = teach("tiny", tmp_path / "ex", **FAST, cross_validation=False)
    assert result.report.classes == ["clicks", "whistle"]  # folders in sorted order
    assert result.report.no_event_label == NO_EVENT and result.report.cv_accuracy is None
    assert {e["source"] for e in result.examples} >= {str(tmp_path / "ex" / "background" / "room.wav")}


@pytest.mark.parametrize("problem, expected", [
    ("one clip", "at least 2 recordings"),
    ("one class", r"only one class \(whistle\) and no background"),
    ("unreadable", "can't be used"),
    ("too short", "too short: 0.30 s"),
    ("reserved", "reserved for the background"),
])
def test_bad_examples_are_refused_with_a_clear_message(problem, expected, examples, tmp_path):
    ex = {k: list(v) for k, v in examples.items()}
    if problem == "one clip":
        ex["clicks"] = ex["clicks"][:1]
    elif problem == "one class":
        ex = {"whistle": ex["whistle"]}
    elif problem == "unreadable":
        bad = tmp_path / "broken.wav"
        bad.write_bytes(b"RIFF0000WAVEnot really")
        ex["clicks"].append(bad)
    elif problem == "too short":
        ex["clicks"].append(np.zeros(int(0.3 * SR), np.float32))
    else:
        ex[NO_EVENT] = ex.pop("clicks")
    with pytest.raises(TeachError, match=expected) as info:
        teach("tiny", ex, **FAST)
    if problem == "unreadable":
        assert "broken.wav" in str(info.value)


def test_single_class_with_background_is_enough(examples, background):
    result = teach("tiny", {"whistle": examples["whistle"]}, background, **FAST, cross_validation=False)
    assert [result.model.config.id2label[i] for i in range(2)] == ["whistle", NO_EVENT]


def test_a_trained_checkpoint_lends_its_backbone_and_pooling(tiny_checkpoint, examples, background):
    base = load_model(tiny_checkpoint)
    result = teach(tiny_checkpoint, examples, background, steps=0, views=0, cross_validation=False)
    for name, tensor in base.backbone.state_dict().items():
        torch.testing.assert_close(result.model.backbone.state_dict()[name], tensor)
    for name, tensor in base.pooling.state_dict().items():  # the start point, unchanged after 0 steps
        torch.testing.assert_close(result.model.pooling.state_dict()[name], tensor)
    fresh = teach(tiny_checkpoint, examples, background, steps=0, views=0, cross_validation=False,
                  start_from_pooling=False)
    assert not torch.equal(fresh.model.pooling.proj.weight, base.pooling.proj.weight)


def _tree_digest(folder: Path) -> str:
    h = hashlib.sha256()
    for p in sorted(folder.rglob("*")):
        if p.is_file():
            h.update(str(p.relative_to(folder)).encode() + p.read_bytes())
    return h.hexdigest()


def test_cli_prints_the_report_and_refuses_bad_input_without_losing_recordings(tmp_path, examples, background, capsys,
                                                                               tiny_checkpoint):
    from asit_helpers.cli import main

    for name, group in examples.items():
        for i, clip in enumerate(group):
            _write(tmp_path / "ex" / name, f"{i}.wav", clip)
    _write(tmp_path / "bg", "room.wav", background[0])
    before = _tree_digest(tmp_path / "ex")
    rc = main(["teach", "tiny", str(tmp_path / "ex"), "--out", str(tmp_path / "model"), "--background",
               str(tmp_path / "bg"), "--steps", "20", "--views", "0"])
    out = capsys.readouterr().out
    assert rc == 0
    assert "taught 2 class(es) on tiny: clicks (4 clips), whistle (4 clips)" in out
    assert "cross-validated accuracy" in out and "asit predict" in out
    assert (tmp_path / "model" / "model.safetensors").is_file()
    assert main(["predict", str(tmp_path / "model"), str(tmp_path / "ex" / "clicks" / "0.wav")]) == 0

    (tmp_path / "ex" / "clicks" / "9.wav").write_bytes(b"not audio at all")
    (tmp_path / "ex" / "whistle" / "0.wav").rename(tmp_path / "ex" / "whistle" / "0.txt")
    for argv, expected in [
        (["teach", "tiny", str(tmp_path / "ex"), "--out", str(tmp_path / "m2")], "9.wav"),
        (["teach", "tiny", str(tmp_path / "nowhere"), "--out", str(tmp_path / "m2")], "no such folder"),
        (["teach", "tiny-fbb", str(tmp_path / "ex"), "--out", str(tmp_path / "m2")], "neither a backbone preset"),
        (["teach", "tiny", str(tmp_path / "ex"), "--out", str(tiny_checkpoint)], "teach did not write"),
        (["teach", "tiny", str(tmp_path / "ex"), "--out", str(tmp_path / "ex")], "examples folder"),
    ]:
        assert main(argv) == 2, argv
        err = capsys.readouterr().err
        assert expected in err and "Traceback" not in err, err
    (tmp_path / "ex" / "clicks" / "9.wav").unlink()
    (tmp_path / "ex" / "whistle" / "0.txt").rename(tmp_path / "ex" / "whistle" / "0.wav")
    assert _tree_digest(tmp_path / "ex") == before  # nothing recorded was touched
    assert not (tmp_path / "m2").exists()


@pytest.mark.parametrize("where, loud_hop, expected", [
    ("early", False, True), ("early", True, False), ("newest", False, False), ("even", False, False)])
def test_live_taught_answer_is_for_the_newest_hop_by_its_attention(where, loud_hop, expected):
    """A taught model names the window; live shows it for the newest hop: "no event" when that hop is quiet and the
    attention puts the sound before it (the answer no longer lingers window - hop after the sound ended)."""
    from types import SimpleNamespace

    from asit_helpers.live import ListenSession

    model = AsitForAudioClassification.from_backbone("tiny", labels=["whistle", NO_EVENT])
    model.config.no_event_label, model.config.clip_seconds = NO_EVENT, 1.5
    frames = np.arange(75) * 0.02  # 1.5 s of 20 ms frames
    weights = {"early": np.where(frames < 0.5, 1.0, 1e-4), "newest": np.where(frames >= 1.0, 1.0, 1e-4),
               "even": np.ones(frames.size)}[where]
    weights = weights / weights.sum()

    def predictor(audio, **_):
        return SimpleNamespace(label="whistle", score=0.9, top_k=[("whistle", 0.9), (NO_EVENT, 0.1)],
                               probabilities=np.array([0.9, 0.1], np.float32), weights=weights[None, :],
                               frame_times_s=frames)

    session = ListenSession(model, hop_s=0.5, predictor=predictor)
    rng = np.random.default_rng(0)
    audio = 0.02 * rng.standard_normal(24000)
    if loud_hop:  # the sound is still on in the newest hop (it stands out from the room)
        audio[16000:] *= 10
    [update] = session.feed(audio.astype(np.float32))
    assert update["no_event"] is expected, update["no_event_reason"]
    if expected:
        assert "heard earlier in the window" in update["no_event_reason"]
