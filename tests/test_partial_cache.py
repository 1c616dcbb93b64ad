"""Partial mode on cached activations (issue 13): the backbone split at a transformer layer, the store of that
layer's input (with augmented views), and the dataset that reads it. No timing here (``bench/train.py`` times it).
"""

from __future__ import annotations

import numpy as np
import pytest
import torch
from transformers import Wav2Vec2Config

from asit_helpers import AsitForAudioClassification
from asit_helpers.batches import Augment, EmbeddingDataset, EmbeddingStore, cache_labels
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
    labels = cache_labels(train_cache)
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
