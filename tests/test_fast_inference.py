"""The CPU fast inference copy (issue 13): rearranged front end and positional conv compute what the originals do.

Exactness is checked in float32 (the rearrangement alone, tight tolerance), then in bf16 (within bf16 rounding).
No timing here: speed is measured by ``bench/latency.py``.
"""

from __future__ import annotations

import pytest
import torch
from transformers import Wav2Vec2Config

from asit_helpers import AsitForAudioClassification
from asit_helpers.fast_inference import FoldedPositionalConv, FusedEncoderLayer, MatmulFeatureEncoder, build_fast_copy
from asit_helpers.inference import bf16_copy, classify_batch
from asit_helpers.model import TINY_BACKBONE, TINY_FB_BACKBONE

#: wav2vec2-base's layout (group norm on the first conv only, post-norm encoder, even positional kernel), narrow
GROUP_NORM_BACKBONE = dict(TINY_BACKBONE, feat_extract_norm="group", do_stable_layer_norm=False)
#: an odd positional kernel (no frame removed after the "same" padding)
ODD_KERNEL_BACKBONE = dict(TINY_BACKBONE, num_conv_pos_embeddings=15)


def _model(backbone: dict, seed: int = 0) -> AsitForAudioClassification:
    torch.manual_seed(seed)
    return AsitForAudioClassification.from_backbone(Wav2Vec2Config(**backbone), labels=["a", "b", "c"]).eval()


def _rel(a: torch.Tensor, b: torch.Tensor) -> float:
    return ((a.float() - b.float()).norm() / b.float().norm()).item()


@pytest.mark.parametrize("backbone", [TINY_BACKBONE, GROUP_NORM_BACKBONE, TINY_FB_BACKBONE, ODD_KERNEL_BACKBONE],
                         ids=["layer-norm", "group-norm", "filterbank", "odd-kernel"])
def test_float32_rearrangement_is_exact(backbone):
    """In float32 the matmul front end, the folded positional conv and the whole copy equal the originals."""
    model = _model(backbone)
    x = torch.randn(3, 16000 * 2, generator=torch.Generator().manual_seed(1))
    copy32 = build_fast_copy(model, dtype=torch.float32)
    assert isinstance(copy32.backbone.feature_extractor, MatmulFeatureEncoder)
    assert isinstance(copy32.backbone.encoder.pos_conv_embed, FoldedPositionalConv)
    assert all(isinstance(layer, FusedEncoderLayer) for layer in copy32.backbone.encoder.layers)
    with torch.inference_mode():
        ref_front = model.backbone.feature_extractor(x)
        front = copy32.backbone.feature_extractor(x)
        assert front.shape == ref_front.shape
        torch.testing.assert_close(front, ref_front, rtol=1e-4, atol=1e-4)
        h = torch.randn(3, 37, model.config.backbone_config.hidden_size)
        torch.testing.assert_close(copy32.backbone.encoder.pos_conv_embed(h),
                                   model.backbone.encoder.pos_conv_embed(h), rtol=1e-4, atol=1e-4)
        mask = torch.ones_like(x, dtype=torch.long)
        mask[1, 20000:] = 0  # a padded clip: the masks and frame counts come from the same arithmetic
        ref = model(x, attention_mask=mask)
        out = copy32(x, attention_mask=mask)
    torch.testing.assert_close(out.logits, ref.logits, rtol=1e-4, atol=1e-4)
    torch.testing.assert_close(out.pooling_weights, ref.pooling_weights, rtol=1e-4, atol=1e-5)
    assert torch.equal(out.frame_mask, ref.frame_mask)


def test_building_the_copy_leaves_the_model_intact():
    """Folding the weight norm must not strip the original's parametrization (torch shares the generated class
    between a module and its deepcopy, so removing it from the copy would break the user's model)."""
    model = _model(GROUP_NORM_BACKBONE)
    x = torch.randn(1, 16000, generator=torch.Generator().manual_seed(2))
    with torch.inference_mode():
        before = model(x).logits.clone()
        build_fast_copy(model)
        after = model(x).logits
    torch.testing.assert_close(after, before, rtol=0, atol=0)
    assert hasattr(model.backbone.encoder.pos_conv_embed.conv, "parametrizations")


@pytest.mark.parametrize("batch", [1, 8])
def test_bf16_copy_logits_close_to_fp32(batch):
    """The default CPU fast path (bf16 copy under autocast) at batch 1 and 8: logits within bf16 rounding of fp32
    and the same decisions; pooling weights still sum to one."""
    model = _model(GROUP_NORM_BACKBONE, seed=3)
    x = torch.randn(batch, 16000 * 5, generator=torch.Generator().manual_seed(4))
    with torch.inference_mode():
        ref = classify_batch(model, x, precision="fp32")
        fast = classify_batch(model, x, precision="bf16")
    assert isinstance(bf16_copy(model).backbone.feature_extractor, MatmulFeatureEncoder)
    assert 0 < _rel(fast.logits, ref.logits) < 0.05
    assert torch.equal(fast.logits.argmax(-1), ref.logits.argmax(-1))
    torch.testing.assert_close(fast.pooling_weights.sum(-1), torch.ones(batch, 1))


def test_unexpected_layers_are_left_alone():
    """A front end that is not wav2vec2's (here: a padded conv) stays the original module; the copy still runs."""
    model = _model(TINY_BACKBONE)
    model.backbone.feature_extractor.conv_layers[1].conv.padding = (1,)
    with pytest.raises(ValueError, match="unpadded"):
        MatmulFeatureEncoder(model.backbone.feature_extractor)
    fast = build_fast_copy(model, dtype=torch.float32)
    assert not isinstance(fast.backbone.feature_extractor, MatmulFeatureEncoder)
    x = torch.randn(1, 16000)
    with torch.inference_mode():
        torch.testing.assert_close(fast(x).logits, model(x).logits, rtol=1e-4, atol=1e-4)


def test_under_compile_the_plain_linear_is_traced(monkeypatch):
    """torch.compile cannot lower oneDNN's fused op (bench/latency.py --compile failed): while compiling, the copy's
    products go through F.linear + GELU instead, computing the same thing within bf16 rounding (the fused op rounds
    once, after its GELU, so the two differ in some elements: which one ran is visible)."""
    from asit_helpers import fast_inference

    x = torch.randn(2, 7, 48, generator=torch.Generator().manual_seed(5))
    weight = torch.randn(32, 48, generator=torch.Generator().manual_seed(6)).bfloat16()
    bias = torch.randn(32, generator=torch.Generator().manual_seed(7)).bfloat16()
    eager = fast_inference._linear(x, weight, bias, gelu=True)
    monkeypatch.setattr(torch.compiler, "is_compiling", lambda: True)
    traced = fast_inference._linear(x, weight, bias, gelu=True)
    plain = torch.nn.functional.gelu(torch.nn.functional.linear(x.bfloat16(), weight, bias))
    torch.testing.assert_close(traced, plain, rtol=0, atol=0)
    assert _rel(traced, eager) < 0.01


def test_packed_weights_compute_what_the_plain_ones_do(monkeypatch):
    """The transformer layers read their weights packed once in oneDNN's layout (a speed change only): the bf16 copy
    gives bit-identical logits with packing switched off, at batch 1 and with a padded batch; a copy of a copy that
    has run (packed weights are opaque tensors, which cannot be deep-copied) works and agrees too."""
    import copy

    from asit_helpers import fast_inference

    model = _model(GROUP_NORM_BACKBONE, seed=8)
    x = torch.randn(3, 16000 * 2, generator=torch.Generator().manual_seed(9))
    mask = torch.ones_like(x, dtype=torch.long)
    mask[2, 12000:] = 0

    def logits(fast, *args):
        with torch.inference_mode(), torch.autocast("cpu", dtype=torch.bfloat16):
            hidden, frames = fast.encode(*args)
            return model.classify_hidden(hidden.float(), frames).logits

    packed = build_fast_copy(model)
    got = [logits(packed, x[:1]), logits(packed, x, mask)]
    layer = packed.backbone.encoder.layers[0]
    if fast_inference._ONEDNN_PACK:
        assert set(layer._packed) == {"qkv", "out", "up", "down"} and layer._packed["up"].is_mkldnn
    again = copy.deepcopy(packed)
    assert again.backbone.encoder.layers[0]._packed == {}
    monkeypatch.setattr(fast_inference, "_pack", lambda weight: None)
    plain = build_fast_copy(model)
    want = [logits(plain, x[:1]), logits(plain, x, mask)]
    assert plain.backbone.encoder.layers[0]._packed == {"qkv": None, "out": None, "up": None, "down": None}
    for g, w in zip(got, want):
        assert torch.equal(g, w)
    monkeypatch.undo()
    assert torch.equal(logits(again, x[:1]), got[0])


def test_the_first_layers_gelu_in_place_equals_the_module():
    """wav2vec2-base's first conv layer (group norm folded into its product) applies its GELU in place: the same
    values as the module's own GELU on a separate output."""
    model = _model(GROUP_NORM_BACKBONE, seed=10)
    fast = build_fast_copy(model, dtype=torch.float32)
    first = fast.backbone.feature_extractor.conv_layers[0]
    x = torch.randn(2, 8000, 1, generator=torch.Generator().manual_seed(11))
    windows = x.as_strided((2, (8000 - first.kernel) // first.stride + 1, first.kernel), (8000, first.stride, 1))
    with torch.inference_mode():
        want = first.activation(first._conv_group_norm_folded(windows))
        assert torch.equal(first(x), want)
