"""Partial mode on cached activations (issue 13): the backbone split at a transformer layer, the store of that
layer's input (with augmented views), and the dataset that reads it. No timing here (``bench/train.py`` times it).
"""

from __future__ import annotations

import numpy as np
import pytest
import torch
from transformers import Wav2Vec2Config

from asit_helpers import AsitForAudioClassification
from asit_helpers.batches import Augment, EmbeddingDataset, EmbeddingStore
from asit_helpers.model import TINY_BACKBONE

GROUP_NORM_BACKBONE = dict(TINY_BACKBONE, feat_extract_norm="group", do_stable_layer_norm=False)


def _model(backbone: dict, labels=("a", "b", "c"), **kwargs) -> AsitForAudioClassification:
    torch.manual_seed(0)
    return AsitForAudioClassification.from_backbone(Wav2Vec2Config(**backbone), labels=list(labels), **kwargs).eval()


@pytest.mark.parametrize("backbone", [TINY_BACKBONE, GROUP_NORM_BACKBONE], ids=["pre-norm+mask", "post-norm"])
@pytest.mark.parametrize("layer", [0, 1, 2])
def test_lower_then_upper_is_the_whole_backbone(backbone, layer):
    """encode_upper(encode_lower(x, k), k) == encode(x) on the real frames, padded clips included."""
    model = _model(backbone)
    x = torch.randn(3, 32000, generator=torch.Generator().manual_seed(1))
    mask = torch.ones_like(x, dtype=torch.long)
    mask[1, 20000:] = 0
    with torch.no_grad():
        ref, frame_mask = model.encode(x, mask)
        lower, lower_mask = model.encode_lower(x, mask, layer)
        upper = model.encode_upper(lower, lower_mask, layer)
    assert torch.equal(lower_mask, frame_mask)
    torch.testing.assert_close(upper[frame_mask], ref[frame_mask], rtol=1e-5, atol=1e-5)


def test_split_refuses_layer_weighted_sum():
    model = _model(TINY_BACKBONE, layer_weighted_sum=True)
    assert "layer_weighted_sum" in model.split_supported()
    with pytest.raises(ValueError, match="layer_weighted_sum"):
        model.encode_lower(torch.randn(1, 16000), None, 1)


def test_store_of_an_intermediate_layer_with_views(train_cache, tmp_path):
    """The store holds the input of layer 1 for every clip, plus 2 augmented views of the training clips; the
    same settings find the same store, other views make another, and the views are real augmentations."""
    model = _model(TINY_BACKBONE, labels=train_cache.labels)
    train_idx = train_cache.indices("train")
    aug = Augment(noise_prob=1.0)
    kw = dict(layer=1, views=2, view_clips=train_idx, augment=aug, seed=3, progress=False)
    store = EmbeddingStore.build(model, train_cache, tmp_path / "a", **kw)
    assert store.layer == 1 and store.num_views == 2 and len(store) == len(train_cache)
    assert store.views.shape[:2] == (len(train_idx), 2) and store.views.shape[2:] == store.hidden.shape[1:]
    assert sorted(store.view_row) == sorted(int(i) for i in train_idx)
    x = train_cache.audio(int(train_idx[0]))[None, :]
    with torch.no_grad():
        lower, _ = model.encode_lower(torch.as_tensor(model.feature_extractor()(x, sampling_rate=16000,
                                                      return_tensors="pt")["input_values"]), None, 1)
    row = int(train_idx[0])
    np.testing.assert_allclose(store.hidden[row, : lower.shape[1]], lower[0].numpy(), rtol=1e-2, atol=1e-2)
    first_view = np.asarray(store.views[store.view_row[row], 0], dtype=np.float32)
    assert not np.allclose(first_view, store.hidden[row], atol=1e-3)  # an augmented view differs from the clean one
    assert not np.allclose(store.views[store.view_row[row], 0], store.views[store.view_row[row], 1], atol=1e-3)

    again = EmbeddingStore.build(model, train_cache, tmp_path / "a", **kw)
    assert again.meta["fingerprint"] == store.meta["fingerprint"]
    other = EmbeddingStore.build(model, train_cache, tmp_path / "b", **{**kw, "seed": 4})
    assert other.meta["fingerprint"] != store.meta["fingerprint"]
    rebuilt = EmbeddingStore.build(model, train_cache, tmp_path / "c", **kw)  # the same draws in a new folder
    np.testing.assert_array_equal(np.asarray(rebuilt.views), np.asarray(store.views))


def test_dataset_draws_views_per_epoch_and_replays_them(train_cache, tmp_path):
    model = _model(TINY_BACKBONE, labels=train_cache.labels)
    train_idx, val_idx = train_cache.indices("train"), train_cache.indices("val")
    store = EmbeddingStore.build(model, train_cache, tmp_path / "s", layer=1, views=3, view_clips=train_idx,
                                 augment=Augment(), seed=0, progress=False)
    labels = train_cache.label_ids()
    train_set = EmbeddingDataset(store, train_idx, labels, use_views=True, seed=0)
    drawn = []
    for epoch in range(4):
        train_set.set_epoch(epoch)
        drawn.append([train_set.view_of(int(i)) for i in train_idx])
    assert len({v for row in drawn for v in row}) == 4  # clean + 3 views all get used
    assert drawn[0] != drawn[1]
    replay = EmbeddingDataset(store, train_idx, labels, use_views=True, seed=0)
    replay.set_epoch(2)
    assert [replay.view_of(int(i)) for i in train_idx] == drawn[2]  # a resumed epoch reads the same versions
    batch = train_set.__getitems__(list(range(len(train_idx))))
    train_set.set_epoch(2)
    for k, item in enumerate(train_set.__getitems__(list(range(len(train_idx))))):
        i, v = int(train_idx[k]), drawn[2][k]
        expect = store.hidden[i] if v == 0 else store.views[store.view_row[i], v - 1]
        np.testing.assert_array_equal(item["hidden"].numpy(), np.asarray(expect, dtype=np.float32))
    assert len(batch) == len(train_idx)
    val_set = EmbeddingDataset(store, val_idx, labels)  # evaluation reads the clean clips only
    assert all(val_set.view_of(int(i)) == 0 for i in val_idx)


# ---- training on the cache ------------------------------------------------------------------------------------

from asit_helpers.train import TrainArgs, train  # noqa: E402

PARTIAL = dict(mode="partial", top_layers=1, epochs=2, batch_size=8, lr_head=5e-3, lr_backbone=1e-3,
               progress=False)


def _noisy_model(labels) -> AsitForAudioClassification:
    """tiny with every kind of randomness on: dropout in the backbone's layers and front end, LayerDrop,
    SpecAugment's time masks, the head's dropout. Partial mode runs the frozen layers as the cache computed them
    (eval mode, their random draws kept out of the global RNG: transformers <= 5.15 draws a LayerDrop number in
    every encoder layer it runs), so cached and uncached training draw the same masks in the trained layers."""
    torch.manual_seed(0)
    noisy = dict(TINY_BACKBONE, hidden_dropout=0.1, attention_dropout=0.1, activation_dropout=0.1,
                 feat_proj_dropout=0.1, layerdrop=0.1, mask_time_prob=0.05)
    return AsitForAudioClassification.from_backbone(Wav2Vec2Config(**noisy), labels=list(labels),
                                                    classifier_dropout=0.1)


def _weights(path):
    from safetensors.torch import load_file

    return load_file(str(path / "model.safetensors"))


def test_partial_fast_path_defaults_and_choices():
    assert TrainArgs(mode="partial").use_fast_path
    assert not TrainArgs(mode="partial", fast=False).use_fast_path  # --no-fast keeps the old path
    assert not TrainArgs(mode="full").use_fast_path
    lws = {"layer_weighted_sum": True}
    assert not TrainArgs(mode="partial", model_kwargs=lws).use_fast_path  # falls back: every layer is pooled
    with pytest.raises(ValueError, match="layer_weighted_sum"):
        TrainArgs(mode="partial", fast=True, model_kwargs=lws)
    with pytest.raises(ValueError, match="head' or 'partial"):
        TrainArgs(mode="full", fast=True)


def test_partial_cached_trains_what_the_uncached_path_trains(train_cache, tmp_path):
    """Without augmentation, cached activations of the frozen layers train the same top layers and head as
    running them every step, dropout and LayerDrop included (float16 storage is the only difference); the lower
    layers stay untouched."""
    labels = train_cache.labels
    fast = train(train_cache, tmp_path / "fast", model=_noisy_model(labels), fast=True, augment=None,
                 embeddings_dir=tmp_path / "emb", **PARTIAL)
    slow = train(train_cache, tmp_path / "slow", model=_noisy_model(labels), fast=False, augment=None, **PARTIAL)
    assert EmbeddingStore(tmp_path / "emb").layer == 1
    for a, b in zip(fast.history, slow.history):
        assert a["train_loss"] == pytest.approx(b["train_loss"], abs=5e-3)
        assert a["val_loss"] == pytest.approx(b["val_loss"], abs=5e-3)
    wa, wb, w0 = _weights(tmp_path / "fast"), _weights(tmp_path / "slow"), _noisy_model(labels).state_dict()
    for name in ("classifier.weight", "backbone.encoder.layers.1.attention.q_proj.weight"):
        torch.testing.assert_close(wa[name], wb[name], atol=5e-3, rtol=0)
    assert not torch.equal(wa["backbone.encoder.layers.1.attention.q_proj.weight"],
                           w0["backbone.encoder.layers.1.attention.q_proj.weight"])
    torch.testing.assert_close(wa["backbone.encoder.layers.0.attention.q_proj.weight"],
                               w0["backbone.encoder.layers.0.attention.q_proj.weight"], atol=0, rtol=0)


def test_partial_cached_with_views_resumes_to_the_same_result(train_cache, tmp_path):
    """Interrupted mid-epoch (an exception in a callback) and resumed, a cached partial run with augmented views
    ends with the weights and history of an uninterrupted run: the views an epoch reads are replayed."""
    kw = dict(PARTIAL, preset="tiny", fast=True, cached_views=2, save_every=2, embeddings_dir=tmp_path / "emb")
    whole = train(train_cache, tmp_path / "whole", **kw)

    class Interrupt(Exception):
        pass

    def stop(info):
        if info["step"] == 4:  # second epoch (3 steps per epoch), after the state of step 4 was not yet written
            raise Interrupt

    with pytest.raises(Interrupt):
        train(train_cache, tmp_path / "cut", callbacks=[stop], **kw)
    resumed = train(train_cache, tmp_path / "cut", resume=True, **kw)
    assert resumed.resumed_from is not None
    assert [h["train_loss"] for h in resumed.history] == pytest.approx([h["train_loss"] for h in whole.history],
                                                                     abs=1e-6)
    wa, wb = _weights(tmp_path / "whole"), _weights(tmp_path / "cut")
    for name in wa:
        torch.testing.assert_close(wb[name], wa[name], atol=1e-6, rtol=0)
