"""The fast inference path (issue 7): bf16 where the hardware has it, a clean fp32 fallback, and --precision."""

from __future__ import annotations

import json
import subprocess
import sys

import numpy as np
import pytest
import torch

from asit_helpers import inference, load_model, predict, runtime
from asit_helpers.inference import bf16_copy, classify_batch
from asit_helpers.runtime import cpu_supports_bf16, resolve_precision
from conftest import tone


@pytest.fixture(scope="module")
def model(tiny_checkpoint):
    return load_model(tiny_checkpoint)


def _clip(seconds: float = 12.0) -> np.ndarray:
    """Tones over noise: long enough for several windows, so window-level agreement is tested too."""
    rng = np.random.default_rng(0)
    x = 0.05 * rng.standard_normal(int(16000 * seconds)).astype(np.float32)
    x[16000:40000] += tone(700, 1.5)
    x[100000:124000] += tone(2500, 1.5)
    return x


def test_bf16_agrees_with_fp32(model):
    """The same clip through both precisions: same labels, probabilities and attention within bf16 rounding."""
    audio = _clip()
    ref = predict(model, audio, precision="fp32")
    fast = predict(model, audio, precision="bf16")
    assert ref.precision == "fp32" and fast.precision == "bf16"
    assert fast.label == ref.label
    assert [w.label for w in fast.windows] == [w.label for w in ref.windows]
    np.testing.assert_allclose(fast.probabilities, ref.probabilities, atol=0.02)
    np.testing.assert_allclose(fast.weights, ref.weights, atol=0.02)
    np.testing.assert_allclose(fast.weights.sum(axis=1), 1.0, rtol=1e-5)  # the fp32 pooling still normalises
    assert not np.array_equal(fast.probabilities, ref.probabilities)  # bf16 really ran: the numbers differ a little


def test_classify_batch_bf16_logits_close(model):
    x = torch.randn(3, 16000 * 5, generator=torch.Generator().manual_seed(1))
    with torch.inference_mode():
        ref = classify_batch(model, x, precision="fp32")
        fast = classify_batch(model, x, precision="bf16")
    assert fast.logits.dtype == torch.float32 and fast.pooling_weights.dtype == torch.float32
    rel = ((fast.logits - ref.logits).norm() / ref.logits.norm()).item()
    assert 0 < rel < 0.05, rel
    assert torch.equal(fast.logits.argmax(-1), ref.logits.argmax(-1))


def test_auto_follows_the_detector(model, monkeypatch):
    """'auto' is bf16 exactly when the CPU reports native bf16; without it, a clean fallback to fp32."""
    monkeypatch.setattr(runtime, "cpu_supports_bf16", lambda: False)
    assert resolve_precision("auto", "cpu").precision == "fp32"
    built = []
    monkeypatch.setattr(inference, "bf16_copy", lambda m: built.append(m) or pytest.fail("bf16 copy made"))
    pred = predict(model, tone(seconds=2.0))
    assert pred.precision == "fp32" and not built and pred.to_dict()["precision"] == "fp32"

    monkeypatch.undo()
    monkeypatch.setattr(runtime, "cpu_supports_bf16", lambda: True)
    assert resolve_precision("auto", "cpu").precision == "bf16"
    assert predict(model, tone(seconds=2.0)).precision == "bf16"
    assert predict(model, tone(seconds=2.0), precision="fp32").precision == "fp32"  # explicit fp32 wins


def test_detector_survives_missing_or_broken_probes(monkeypatch):
    for name in ("_is_avx512_bf16_supported", "_is_amx_tile_supported"):
        monkeypatch.delattr(torch.cpu, name, raising=False)
    assert cpu_supports_bf16() is False

    def broken():
        raise RuntimeError("no cpuinfo here")

    monkeypatch.setattr(torch.cpu, "_is_avx512_bf16_supported", broken, raising=False)
    monkeypatch.setattr(torch.cpu, "_is_amx_tile_supported", lambda: True, raising=False)
    assert cpu_supports_bf16() is True  # one working probe is enough; the broken one is skipped


def test_unknown_precision_is_a_clear_error(model):
    with pytest.raises(ValueError, match="precision must be one of"):
        predict(model, tone(seconds=1.0), precision="int4")


def test_bf16_copy_is_cached_and_follows_weight_changes(tiny_checkpoint):
    model = load_model(tiny_checkpoint)
    first = bf16_copy(model)
    assert bf16_copy(model) is first  # no re-cast per call
    assert not any(p.requires_grad for p in first.parameters())
    # matrix and conv weights in bf16 (nearly all the compute); norm layers stay fp32 for accuracy
    assert first.backbone.encoder.layers[0].w_up.dtype == torch.bfloat16  # the fused layer's feed-forward
    # the front end as matrix products: the wide layers in bf16, the first (one channel, 10 taps) in fp32
    assert first.backbone.feature_extractor.conv_layers[1].weight.dtype == torch.bfloat16
    assert first.backbone.feature_extractor.conv_layers[0].weight.dtype == torch.float32
    assert first.backbone.encoder.layers[0].layer_norm.weight.dtype == torch.float32
    assert all(p.dtype == torch.float32 for p in model.parameters())  # the user's model is untouched
    audio = tone(900, 2.0)
    before = predict(model, audio, precision="bf16").probabilities
    with torch.no_grad():  # e.g. another training epoch in a notebook, then predict again
        model.classifier.bias.add_(torch.linspace(-3, 3, model.config.num_labels))
        model.backbone.encoder.layers[0].feed_forward.output_dense.weight.mul_(1.5)
    second = bf16_copy(model)
    assert second is not first
    after = predict(model, audio, precision="bf16").probabilities
    ref = predict(model, audio, precision="fp32").probabilities
    assert not np.allclose(before, after, atol=1e-3)
    np.testing.assert_allclose(after, ref, atol=0.02)


@pytest.mark.slow  # two CLI subprocesses (torch + transformers imports each)
def test_cli_precision_flag(tiny_checkpoint, wav_file):
    def run(*extra):
        out = subprocess.run(
            [sys.executable, "-m", "asit_helpers.cli", "predict", str(tiny_checkpoint), str(wav_file), "--json",
             "--no-weights", *extra],
            capture_output=True, text=True, timeout=180,
        )
        assert out.returncode == 0, out.stderr
        return json.loads(out.stdout)

    forced = run("--precision", "fp32")
    assert forced["precision"] == "fp32"
    assert run("--fp32")["precision"] == "fp32"  # the deprecated flag still works
    default = run()
    assert default["precision"] == ("bf16" if cpu_supports_bf16() else "fp32")
    assert default["label"] == forced["label"]
