"""Figures a reviewer can trust (issue 17): localisation with its energy baselines, evaluation that does not depend
on padding for encoders without a mask, and each backbone's minimum clip length."""

from __future__ import annotations

import json

import numpy as np
import pytest
import soundfile as sf
import torch
from transformers import Wav2Vec2Config

from asit_helpers import AudioError
from asit_helpers.batches import LengthGroupedBatchSampler, EpochSampler, equal_length_batches
from asit_helpers.data import AudioCache, preprocess
from asit_helpers.evaluate import LOCALISERS, evaluate, forward_cache
from asit_helpers.inference import predict
from asit_helpers.model import TINY_BACKBONE, TINY_FB_BACKBONE, AsitForAudioClassification
from conftest import tone

#: The tiny backbone with wav2vec2-base's group-norm front end: its encoder takes no attention mask.
TINY_GROUP_NORM = dict(TINY_BACKBONE, feat_extract_norm="group", do_stable_layer_norm=False)
LABELS = ["dog", "siren"]


def _write_tree(root, lengths_by_label: dict[str, list[int]], seed: int = 0):
    rng = np.random.default_rng(seed)
    for label, lengths in lengths_by_label.items():
        folder = root / "Animals" / label
        folder.mkdir(parents=True, exist_ok=True)
        for i, n in enumerate(lengths):
            x = (0.1 * rng.standard_normal(n)).astype(np.float32)
            x[: n // 2] += tone(300 + 400 * (label == "siren"), n / 16000)[: n // 2]
            sf.write(folder / f"{label}_{i}.wav", x, 16000, subtype="FLOAT")
    return root


@pytest.fixture(scope="module")
def mixed_cache(tmp_path_factory):
    """Clips of 0.6 s to 2 s (like UrbanSound8K's short clips beside full-length ones), every split mixed."""
    root = tmp_path_factory.mktemp("mixed")
    lengths = [32000, 9600, 20800, 32000, 14400, 32000, 11200, 25600]
    _write_tree(root / "data", {"dog": lengths, "siren": lengths[::-1]})
    preprocess(root / "data", root / "cache", clip_seconds=2.0, workers=1, progress=False)
    return AudioCache.open(root / "cache")


def _group_norm_model():
    torch.manual_seed(3)
    model = AsitForAudioClassification.from_backbone(Wav2Vec2Config(**TINY_GROUP_NORM), labels=LABELS).eval()
    assert not model.config.backbone_masks_input  # the point of the test: no mask reaches this encoder
    return model


def test_mixed_length_cache_gives_evaluate_the_logits_of_predict(mixed_cache):
    """For a group-norm backbone, evaluate never pads a clip beside a longer one: its per-clip logits equal
    predict's for that clip alone (padded batches, the old behaviour, do not)."""
    model = _group_norm_model()
    indices = np.arange(len(mixed_cache))
    assert len(set(mixed_cache.lengths.tolist())) > 3
    out = forward_cache(model, mixed_cache, indices, batch_size=16)
    ours = torch.softmax(torch.from_numpy(out["logits"]), -1).numpy()
    for i in indices:
        clip = mixed_cache.audio(int(i))[: mixed_cache.lengths[int(i)]]
        ref = predict(model, clip, precision="fp32", top_k=2).probabilities
        np.testing.assert_allclose(ours[i], ref, atol=2e-5)
    # the same batch padded (what training and evaluate did before) changes the short clips' answers
    from asit_helpers.batches import ClipDataset, WaveformCollator

    batch = WaveformCollator(model.feature_extractor())([ClipDataset(mixed_cache, indices)[int(i)] for i in indices])
    with torch.no_grad():
        padded = torch.softmax(model(batch["input_values"], attention_mask=batch["attention_mask"]).logits, -1).numpy()
    short = mixed_cache.lengths < mixed_cache.lengths.max()
    assert np.abs(padded[short] - ours[short]).max() > 1e-3
    report = evaluate(model, mixed_cache, split=None, progress=False, precision="fp32")
    np.testing.assert_allclose(report.clips["score"].to_numpy(), ours.max(axis=1), atol=1e-5)


def test_equal_length_batches_and_the_training_sampler():
    lengths = np.array([5, 3, 5, 5, 3, 2])
    batches = equal_length_batches(lengths, 2)
    assert [b.tolist() for b in batches] == [[0, 2], [3], [1, 4], [5]]
    assert all(len(set(lengths[b])) == 1 for b in batches)
    val = LengthGroupedBatchSampler(lengths, 2, equal_lengths=True)
    assert list(val) == [[0, 2], [3], [1, 4], [5]] and len(val) == 4
    # training: with one length throughout, the batches are exactly the epoch sampler's order
    order = EpochSampler(np.zeros(40, dtype=int), seed=3)
    same = LengthGroupedBatchSampler(np.full(40, 7), 8, order=order)
    same.set_epoch(2)
    flat = [i for b in same for i in b]
    order.set_epoch(2)
    assert flat == list(order) and len(same) == 5
    # with mixed lengths, each batch spans a narrow length range, and every position comes once per epoch
    varied = np.random.default_rng(0).integers(1000, 64000, 200)
    grouped = LengthGroupedBatchSampler(varied, 8, order=EpochSampler(np.zeros(200, dtype=int), seed=1))
    batches = list(grouped)
    assert sorted(i for b in batches for i in b) == list(range(200)) and len(grouped) == len(batches)
    spread = np.mean([np.ptp(varied[b]) for b in batches])
    assert spread < 0.1 * np.ptp(varied)


def _distractor_cache(tmp_path, distractors: int):
    from asit_helpers.synth import make_soundscapes

    make_soundscapes(tmp_path / "synth", clips_per_class=3, classes=LABELS, seconds=4.0, seed=4,
                     distractors=distractors, progress=False)
    preprocess(tmp_path / "synth", tmp_path / "cache", clip_seconds=4.0, workers=1, progress=False)
    return AudioCache.open(tmp_path / "cache")


def test_localisation_reports_attention_beside_energy_baselines(tmp_path):
    cache = _distractor_cache(tmp_path, distractors=1)
    assert all(len(json.loads(v)) == 1 for v in cache.manifest["distractors"])  # times survive preprocessing
    torch.manual_seed(0)
    model = AsitForAudioClassification.from_backbone("tiny", labels=cache.labels).eval()
    report = evaluate(model, cache, split=None, progress=False)
    loc, on_d = report.localisation, report.localisation_on_distractors
    assert set(LOCALISERS) <= set(loc) and loc["n"] == len(cache)
    assert set(loc["per_class"]) == set(LABELS) and set(loc["per_class"]["dog"]) == set(LOCALISERS)
    assert loc["attention"] == pytest.approx(report.attention_in_event)
    assert loc["uniform"] == pytest.approx(report.attention_chance)
    # the distractors are 0-10 dB louder than the event: the loudest frame is mostly on them, never on both
    assert on_d["loudest_frame"] >= 0.5 and loc["loudest_frame"] + on_d["loudest_frame"] <= 1.0 + 1e-9
    assert on_d["energy"] > on_d["uniform"]
    # by hand for one clip: all weight on the loudest frame, scored against the event window
    i = 0
    row = report.clips.iloc[i]
    x = cache.audio(int(row["index"]))[: cache.lengths[int(row["index"])]]
    cfg = model.config
    frames = int(report.clips.shape[0] and (len(x) - cfg.receptive_field) // cfg.frame_stride + 1)
    energy = [np.mean(x[t * cfg.frame_stride : t * cfg.frame_stride + cfg.receptive_field] ** 2) for t in range(frames)]
    centre = (int(np.argmax(energy)) * cfg.frame_stride + cfg.receptive_field / 2) / 16000
    assert row["loc_loudest_frame"] == float(row["event_onset_s"] <= centre <= row["event_offset_s"])
    payload = report.to_dict()
    assert set(payload["localisation"]) == set(LOCALISERS) | {"n", "per_class"}
    assert "localisation_on_distractors" in payload
    table = report.localisation_table()
    assert list(table.columns[:4]) == list(LOCALISERS) and table.index[0] == "all"


def test_plain_data_has_no_distractor_report(train_cache):
    torch.manual_seed(0)
    model = AsitForAudioClassification.from_backbone("tiny", labels=train_cache.labels).eval()
    report = evaluate(model, train_cache, split="test", progress=False)
    assert report.localisation is not None and report.localisation_on_distractors is None


# ---- minimum length from the conv stack ---------------------------------------------------------------------


def test_min_length_comes_from_each_backbones_conv_stack():
    from asit_helpers.model import min_input_samples

    cases = {"base": Wav2Vec2Config(), "tiny": Wav2Vec2Config(**TINY_BACKBONE), "tiny-fb": Wav2Vec2Config(**TINY_FB_BACKBONE),
             "odd": Wav2Vec2Config(**dict(TINY_BACKBONE, conv_dim=(8, 8, 8), conv_kernel=(7, 5, 3), conv_stride=(3, 2, 2)))}
    for name, cfg in cases.items():
        model = AsitForAudioClassification.from_backbone(cfg, labels=LABELS).eval()
        need = min_input_samples(cfg)
        assert model.config.min_samples == need
        out = model.backbone._get_feat_extract_output_lengths(torch.tensor([need - 1, need]))
        assert out.tolist() == [0, 1], name  # one short of the figure: no frame; at it: one frame
    assert min_input_samples(Wav2Vec2Config()) == 400 and min_input_samples(Wav2Vec2Config(**TINY_FB_BACKBONE)) == 720


def test_predict_rejects_clips_below_the_backbones_minimum_with_that_figure():
    model = AsitForAudioClassification.from_backbone("tiny-fb", labels=LABELS).eval()
    with pytest.raises(AudioError, match=r"too short: 719 samples .*needs at least 720 samples \(45 ms\)"):
        predict(model, np.zeros(719, np.float32) + 0.01)
    assert predict(model, tone(500, 720 / 16000)).weights.shape[-1] == 1  # exactly the minimum: one frame
    base_like = AsitForAudioClassification.from_backbone("tiny", labels=LABELS).eval()
    with pytest.raises(AudioError, match=r"needs at least 400 samples \(25 ms\)"):
        predict(base_like, np.zeros(399, np.float32))


def test_cache_and_evaluate_refuse_clips_the_backbone_cannot_read(tmp_path):
    _write_tree(tmp_path / "data", {"dog": [600, 16000, 16000], "siren": [16000, 300, 16000]})
    report = preprocess(tmp_path / "data", tmp_path / "cache", clip_seconds=1.0, workers=1, progress=False)
    reasons = dict(zip(report.rejected["path"].map(lambda p: p.split("/")[-1]), report.rejected["reason"]))
    assert "needs at least 400 samples (25 ms)" in reasons["siren_1.wav"]  # below any wav2vec2 frame
    cache = AudioCache.open(tmp_path / "cache")
    assert cache.lengths.min() == 600
    model = AsitForAudioClassification.from_backbone("tiny-fb", labels=cache.labels).eval()
    with pytest.raises(ValueError, match=r"too short for this model.*dog_0.wav.*720 samples \(45 ms\).*--min-samples 720"):
        evaluate(model, cache, split=None, progress=False)
    report = preprocess(tmp_path / "data", tmp_path / "cache720", clip_seconds=1.0, workers=1, progress=False,
                        min_samples=720)
    reasons = dict(zip(report.rejected["path"].map(lambda p: p.split("/")[-1]), report.rejected["reason"]))
    assert "too short: 600 samples (37.5 ms at 16 kHz); the backbone needs at least 720 samples (45 ms)" in reasons["dog_0.wav"]
    assert evaluate(model, AudioCache.open(tmp_path / "cache720"), split=None, progress=False).clips.shape[0] == 4
