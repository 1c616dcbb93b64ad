"""Training: the cached-embedding fast path, the modes, checkpoints, augmentation, sampling, the CLI.

All on ``train_cache`` (synth → preprocess, 4 classes × 8 clips of 2 s) with the tiny random preset.
"""

from __future__ import annotations

import json

import numpy as np
import pytest
import torch
from safetensors.torch import load_file

from asit_helpers.batches import Augment, ClipDataset, EmbeddingDataset, EmbeddingStore, EpochSampler, augment_clip
from asit_helpers.model import AsitForAudioClassification
from asit_helpers.train import TrainArgs, _class_weights, train

FAST = dict(epochs=2, batch_size=8, save_every=1000)


def _weights(path):
    return load_file(str(path / "model.safetensors"))


def test_head_fast_path_gives_a_full_checkpoint(train_cache, tmp_path):
    out = tmp_path / "ck"
    drive = tmp_path / "drive" / "ck"  # stands in for a mounted Google Drive folder
    result = train(train_cache, out, preset="tiny", mode="head", lr_head=5e-3, embeddings_dir=tmp_path / "emb", copy_to=drive,
                   progress=False, **FAST)
    assert sorted(p.name for p in drive.iterdir()) == sorted(p.name for p in out.iterdir())

    # a complete Hugging Face directory, written by save_pretrained + our two JSON files
    for name in ("config.json", "model.safetensors", "preprocessor_config.json", "training_args.json", "metrics.json"):
        assert (out / name).is_file(), name
    assert not (out / "resume").exists()  # removed once the run finished
    config = json.loads((out / "config.json").read_text())
    assert config["id2label"] == {str(i): name for i, name in enumerate(train_cache.labels)}
    metrics = json.loads((out / "metrics.json").read_text())
    assert metrics["completed"] and len(metrics["history"]) == 2 and metrics["best_epoch"] in (1, 2)
    assert json.loads((out / "training_args.json").read_text())["mode"] == "head"

    # the store holds float16 hidden states for every clip
    store = EmbeddingStore(tmp_path / "emb")
    assert store.hidden.dtype == np.float16 and store.hidden.shape[0] == len(train_cache)
    assert store.hidden.shape[-1] == result.model.config.backbone_config.hidden_size
    # the batched read (what the DataLoader uses) returns exactly the per-item reads, duplicates included
    ds = EmbeddingDataset(store, train_cache.indices("train")[::-1].copy(), train_cache.label_ids())
    for item, pos in zip(ds.__getitems__([3, 0, 5, 0]), [3, 0, 5, 0]):
        one = ds[pos]
        assert all(torch.equal(item[k], one[k]) for k in ("hidden", "frame_mask", "labels", "index"))

    # backbone untouched (frozen), pooling and head trained
    torch.manual_seed(0)
    fresh = AsitForAudioClassification.from_backbone("tiny", labels=train_cache.labels)
    saved = _weights(out)
    for name, value in fresh.state_dict().items():
        if name.startswith("backbone."):
            torch.testing.assert_close(saved[name], value, msg=name)
    assert not torch.equal(saved["classifier.weight"], fresh.state_dict()["classifier.weight"])

    # the returned model is the saved one
    loaded = AsitForAudioClassification.from_pretrained(str(out))
    for name, value in loaded.state_dict().items():
        torch.testing.assert_close(result.model.state_dict()[name], value)
    assert [h["epoch"] for h in result.history] == [1, 2]
    assert {"train_loss", "val_loss", "val_accuracy", "val_macro_f1", "lr_head", "seconds"} <= set(result.history[0])


def test_fast_path_matches_running_the_backbone(train_cache, tmp_path):
    """Cached float16 hidden states train the same model as running the frozen backbone every step."""
    common = dict(preset="tiny", mode="head", augment=None, lr_head=5e-3, progress=False, **FAST)
    fast = train(train_cache, tmp_path / "fast", fast=True, embeddings_dir=tmp_path / "emb", **common)
    slow = train(train_cache, tmp_path / "slow", fast=False, **common)
    for a, b in zip(fast.history, slow.history):
        assert a["train_loss"] == pytest.approx(b["train_loss"], abs=2e-3)
        assert a["val_loss"] == pytest.approx(b["val_loss"], abs=2e-3)
    wa, wb = _weights(tmp_path / "fast"), _weights(tmp_path / "slow")
    torch.testing.assert_close(wa["classifier.weight"], wb["classifier.weight"], atol=2e-3, rtol=0)


def test_partial_mode_trains_only_the_top_layers(train_cache, tmp_path):
    torch.manual_seed(0)
    fresh = AsitForAudioClassification.from_backbone("tiny", labels=train_cache.labels).state_dict()
    train(train_cache, tmp_path / "ck", preset="tiny", mode="partial", top_layers=1, epochs=1, batch_size=8, progress=False)
    saved = _weights(tmp_path / "ck")
    changed = {n for n, v in fresh.items() if not torch.equal(saved[n], v)}
    assert any(n.startswith("backbone.encoder.layers.1.") for n in changed)
    assert not any(n.startswith("backbone.encoder.layers.0.") for n in changed)
    assert not any(n.startswith("backbone.feature_extractor.") for n in changed)  # feature encoder frozen
    assert "classifier.weight" in changed


def test_full_mode_with_accumulation_balance_and_mixup(train_cache, tmp_path):
    result = train(train_cache, tmp_path / "ck", preset="tiny", mode="full", epochs=1, batch_size=4, grad_accum=2,
                   balance="sampler", mixup_alpha=0.4, freeze_feature_encoder=False, progress=False)
    h = result.history[0]
    assert np.isfinite(h["train_loss"]) and np.isfinite(h["val_loss"])
    assert h["step"] == int(np.ceil(np.ceil(22 / 4) / 2))  # 22 training clips, 4 per batch, 2 batches per step
    torch.manual_seed(0)
    fresh = AsitForAudioClassification.from_backbone("tiny", labels=train_cache.labels).state_dict()
    saved = _weights(tmp_path / "ck")
    assert not torch.equal(saved["backbone.feature_extractor.conv_layers.0.conv.weight"],
                           fresh["backbone.feature_extractor.conv_layers.0.conv.weight"])


def test_refuses_to_overwrite_and_bad_arguments(train_cache, tmp_path):
    out = tmp_path / "ck"
    train(train_cache, out, preset="tiny", mode="head", epochs=1, batch_size=8, embeddings_dir=tmp_path / "emb", progress=False)
    with pytest.raises(FileExistsError, match="resume=True"):
        train(train_cache, out, preset="tiny", mode="head", epochs=1, progress=False)
    # resuming a finished run returns it without training again
    again = train(train_cache, out, preset="tiny", mode="head", epochs=1, batch_size=8, resume=True, progress=False)
    assert again.best_epoch == 1 and len(again.history) == 1
    with pytest.raises(ValueError, match="different settings"):
        train(train_cache, out, preset="tiny", mode="head", epochs=3, batch_size=8, resume=True, progress=False)
    with pytest.raises(TypeError, match="unknown training argument"):
        train(train_cache, tmp_path / "x", learning_rate=1.0)
    with pytest.raises(ValueError, match="fast path needs mode='head'"):
        TrainArgs(mode="full", fast=True)
    with pytest.raises(ValueError, match="mode must be one of"):
        TrainArgs(mode="everything")


def test_augmentation_is_seeded_per_epoch_and_clip(train_cache):
    ds = ClipDataset(train_cache, train_cache.indices("train"), augment=Augment(noise_prob=1.0), seed=3)
    first = ds[0]["audio"]
    assert np.array_equal(first, ds[0]["audio"])  # same (seed, epoch, clip) → same audio
    ds.set_epoch(1)
    assert not np.allclose(first, ds[0]["audio"])  # a new epoch draws new augmentations
    plain = ClipDataset(train_cache, train_cache.indices("train"))[0]["audio"]
    assert len(plain) == train_cache.lengths[train_cache.indices("train")[0]]
    assert first.dtype == np.float32 and np.isfinite(first).all()

    x = np.sin(np.linspace(0, 200, 16000)).astype(np.float32)
    cropped = augment_clip(x, Augment(crop_s=0.5, noise_prob=0.0, gain_db=0.0, shift_s=0.0), np.random.default_rng(0))
    assert cropped.shape == (8000,)
    shifted = augment_clip(x, Augment(noise_prob=0.0, gain_db=0.0, shift_s=0.5), np.random.default_rng(1))
    assert sorted(np.round(shifted, 5)) == sorted(np.round(x, 5))  # a circular shift only moves samples


def test_sampler_order_depends_only_on_seed_and_epoch():
    labels = np.array([0] * 18 + [1] * 2)
    a, b = EpochSampler(labels, seed=1), EpochSampler(labels, seed=1)
    assert list(a) == list(b) and sorted(a) == list(range(20))
    a.set_epoch(1)
    assert list(a) != list(b)
    balanced = EpochSampler(labels, seed=0, balanced=True)
    drawn = []
    for epoch in range(20):
        balanced.set_epoch(epoch)
        drawn += list(balanced)
    counts = np.bincount(labels[drawn])
    assert 0.4 < counts[1] / counts.sum() < 0.6  # the rare class drawn about half the time
    w = _class_weights(labels, 3)
    assert w[2] == 0 and w[1] / w[0] == pytest.approx(9.0)


def test_cli_train_then_evaluate_json(train_cache, tmp_path, capsys):
    from asit_helpers.cli import main

    out = tmp_path / "ck"
    rc = main(["train", str(train_cache.folder), "--out", str(out), "--preset", "tiny-fb", "--mode", "head",
               "--epochs", "1", "--pooling", "mean", "--batch-size", "8", "--no-augment"])
    assert rc == 0 and (out / "model.safetensors").exists()
    saved_args = json.loads((out / "training_args.json").read_text())
    assert saved_args["freeze_feature_encoder"] is False and saved_args["augment"] is None
    assert json.loads((out / "config.json").read_text())["pooling"] == "mean"
    capsys.readouterr()
    assert main(["evaluate", str(out), str(train_cache.folder), "--json"]) == 0
    report = json.loads(capsys.readouterr().out)
    assert {"accuracy", "macro_f1", "per_class", "attention_in_event", "attention_chance"} <= set(report)
    assert set(report["per_class"]) == set(train_cache.labels)
    # mean pooling spreads its weight evenly, so its share inside the event is exactly the chance share
    assert report["attention_in_event"] == pytest.approx(report["attention_chance"], abs=1e-5)
    # an existing run is refused with a clear message, not a traceback
    assert main(["train", str(train_cache.folder), "--out", str(out), "--preset", "tiny-fb", "--epochs", "1"]) == 2
    assert "resume" in capsys.readouterr().err


def test_clip_seconds_flow_from_the_cache_into_the_model(train_cache, tmp_path):
    """A model trained on a 2 s cache has a 2 s window: predict cuts 4 s of audio into 3 half-overlapping windows."""
    from asit_helpers import predict

    assert train_cache.clip_samples == 2 * 16000
    result = train(train_cache, tmp_path / "ck", preset="tiny", mode="head", epochs=1, batch_size=8,
                   embeddings_dir=tmp_path / "emb", progress=False)
    assert result.model.config.clip_seconds == 2.0
    saved = json.loads((tmp_path / "ck" / "config.json").read_text())
    assert saved["clip_seconds"] == 2.0
    pred = predict(tmp_path / "ck", np.zeros(4 * 16000, dtype=np.float32) + 0.01)
    assert [(w.start_s, w.end_s) for w in pred.windows] == [(0.0, 2.0), (1.0, 3.0), (2.0, 4.0)]
    args = json.loads((tmp_path / "ck" / "training_args.json").read_text())
    assert args["precision"] == "auto" and args["precision_used"] == "fp32" and "CPU" in args["precision_reason"]


def test_presets_carry_their_recipes():
    from asit_helpers.train import PRESETS, TrainArgs

    assert TrainArgs().preset == "base" and TrainArgs.for_preset().mode == PRESETS["base"].recipe.get("mode", "full")
    fb = TrainArgs.for_preset("tiny-fb")
    assert (fb.freeze_feature_encoder, fb.epochs) == (False, PRESETS["tiny-fb"].recipe["epochs"])
    assert TrainArgs.for_preset("tiny-fb", epochs=2).epochs == 2  # an override changes one field
    assert TrainArgs.for_preset("some/hub-model").lr_backbone == TrainArgs().lr_backbone  # base's recipe
    assert [n for n, p in PRESETS.items() if p.offered] == ["base", "tiny-fb", "base-random"]
    with pytest.raises(TypeError, match="unknown training argument"):
        TrainArgs.for_preset("tiny-fb", learning_rate=1.0)
