"""AsitForAudioClassification: shapes, masked pooling, padding invariance, save/load, pipeline, freezing."""

from __future__ import annotations

import numpy as np
import pytest
import soundfile as sf
import torch
from transformers import AutoConfig, AutoModelForAudioClassification, HubertConfig, WavLMConfig, pipeline

import asit_helpers  # noqa: F401  (registers the "asit" model type)
from asit_helpers import AsitConfig, AsitForAudioClassification, load_model
from asit_helpers.model import TINY_BACKBONE
from conftest import LABELS, tone


def _tiny(pooling="attention", **kw) -> AsitForAudioClassification:
    torch.manual_seed(0)
    return AsitForAudioClassification.from_backbone("tiny", labels=LABELS, pooling=pooling, **kw).eval()


def _padded_batch(lengths=(32000, 20000, 9000)):
    torch.manual_seed(1)
    longest = max(lengths)
    x = torch.zeros(len(lengths), longest)
    mask = torch.zeros(len(lengths), longest, dtype=torch.long)
    for i, n in enumerate(lengths):
        x[i, :n] = torch.randn(n) * 0.1
        mask[i, :n] = 1
    return x, mask


@pytest.mark.parametrize("pooling,heads", [("attention", 1), ("multihead", 4), ("mean", 1)])
def test_output_shapes(pooling, heads):
    model = _tiny(pooling)
    x, mask = _padded_batch()
    out = model(x, attention_mask=mask, labels=torch.tensor([0, 1, 2]))
    frames = 99  # 32000 samples → 99 wav2vec2 frames
    assert out.logits.shape == (3, len(LABELS))
    assert out.pooling_weights.shape == (3, heads, frames)
    assert out.frame_mask.shape == (3, frames) and out.frame_times.shape == (frames,)
    assert out.loss.ndim == 0 and torch.isfinite(out.loss)
    # frame t is centred at t·20 ms + 12.5 ms
    torch.testing.assert_close(out.frame_times[:3], torch.tensor([0.0125, 0.0325, 0.0525]))


@pytest.mark.parametrize("pooling", ["attention", "multihead", "mean"])
@pytest.mark.parametrize("stats", [False, True])
def test_weights_sum_to_one_on_real_frames_and_zero_on_padding(pooling, stats):
    model = _tiny(pooling, attentive_stats=stats)
    x, mask = _padded_batch()
    out = model(x, attention_mask=mask)
    w, fm = out.pooling_weights, out.frame_mask
    torch.testing.assert_close(w.sum(-1), torch.ones(w.shape[:2]))
    assert (w * (~fm)[:, None, :]).abs().max() == 0
    # frame counts follow the conv arithmetic, floor((n - 400) / 320) + 1: 20000 → 62, 9000 → 27
    assert fm.sum(-1).tolist() == [99, 62, 27]



@pytest.mark.parametrize("pooling", ["attention", "multihead", "mean"])
def test_pooling_scores_are_computed_once_per_pass(pooling):
    """The scores a training step pools with are the ones the output carries (``pooling_scores``, which inference
    compares across windows): one computation per pass, not a second one for the output (it was: a cost in every
    training step of head and partial mode)."""
    model = _tiny(pooling)
    x, mask = _padded_batch()
    calls = []
    original = model.pooling.scores
    model.pooling.scores = lambda hidden: calls.append(1) or original(hidden)
    out = model(x, attention_mask=mask, labels=torch.tensor([0, 1, 2]))
    assert len(calls) == 1
    hidden, _ = model.encode(x, mask)
    torch.testing.assert_close(out.pooling_scores, original(hidden).float())
    out.loss.backward()  # the scores the output carries are detached; the pooled ones still train the pooling
    assert not out.pooling_scores.requires_grad
    if pooling != "mean":
        assert model.pooling.proj.weight.grad is not None and model.pooling.proj.weight.grad.abs().sum() > 0

def test_fully_masked_row_gives_zeros_not_nan():
    model = _tiny()
    hidden = torch.randn(2, 10, model.config.backbone_config.hidden_size, requires_grad=True)
    frame_mask = torch.tensor([[True] * 10, [False] * 10])
    out = model.classify_hidden(hidden, frame_mask, labels=torch.tensor([0, 1]))
    assert torch.isfinite(out.logits).all() and out.pooling_weights[1].abs().max() == 0
    out.loss.backward()
    assert torch.isfinite(hidden.grad).all()


@pytest.mark.parametrize("pooling", ["attention", "multihead", "mean"])
def test_layer_norm_backbone_gives_same_logits_alone_and_padded(pooling):
    model = _tiny(pooling, layer_weighted_sum=True)
    assert model.config.backbone_masks_input
    x, mask = _padded_batch()
    batched = model(x, attention_mask=mask).logits
    for i, n in enumerate(mask.sum(-1).tolist()):
        alone = model(x[i : i + 1, :n]).logits
        torch.testing.assert_close(alone[0], batched[i], atol=1e-4, rtol=1e-4)


def test_group_norm_backbone_gets_no_encoder_mask_but_pooling_is_masked():
    cfg = dict(TINY_BACKBONE, feat_extract_norm="group", do_stable_layer_norm=False)
    from transformers import Wav2Vec2Config

    model = AsitForAudioClassification.from_backbone(Wav2Vec2Config(**cfg), labels=LABELS).eval()
    assert not model.config.backbone_masks_input
    seen = {}
    original = model.backbone.forward

    def spy(input_values, attention_mask=None, **kw):
        seen["mask"] = attention_mask
        return original(input_values, attention_mask=attention_mask, **kw)

    model.backbone.forward = spy
    x, mask = _padded_batch()
    out = model(x, attention_mask=mask)
    assert seen["mask"] is None
    assert (out.pooling_weights * (~out.frame_mask)[:, None, :]).abs().max() == 0


@pytest.mark.parametrize("config_class", [HubertConfig, WavLMConfig])
def test_other_encoders_work(config_class):
    model = AsitForAudioClassification.from_backbone(config_class(**TINY_BACKBONE), labels=LABELS).eval()
    x, mask = _padded_batch()
    assert model(x, attention_mask=mask).logits.shape == (3, len(LABELS))


def test_save_load_round_trip_is_exact(tmp_path):
    model = _tiny("multihead", attentive_stats=True, layer_weighted_sum=True)
    x, mask = _padded_batch()
    before = model(x, attention_mask=mask).logits
    model.save_pretrained(tmp_path / "ckpt")
    files = {p.name for p in (tmp_path / "ckpt").iterdir()}
    assert {"config.json", "model.safetensors", "preprocessor_config.json"} <= files
    assert not any(name.endswith((".bin", ".pt", ".pkl")) for name in files)
    loaded = load_model(tmp_path / "ckpt")
    torch.testing.assert_close(loaded(x, attention_mask=mask).logits, before, atol=0, rtol=0)
    auto = AutoModelForAudioClassification.from_pretrained(tmp_path / "ckpt").eval()
    assert isinstance(auto, AsitForAudioClassification)
    assert isinstance(AutoConfig.from_pretrained(tmp_path / "ckpt"), AsitConfig)
    assert loaded.config.id2label[2] == "siren" and loaded.config.pooling == "multihead"


def test_pipeline_on_44k1_stereo_ogg(tiny_checkpoint, tmp_path):
    path = tmp_path / "clip.ogg"
    sf.write(path, tone(880, 3.0, sr=44100, channels=2), 44100, subtype="VORBIS")
    classifier = pipeline("audio-classification", model=str(tiny_checkpoint))
    samples = asit_helpers.load_audio(path)  # pipeline needs ffmpeg for paths; arrays at 16 kHz need nothing
    result = classifier(samples, top_k=5)
    assert [r["label"] for r in result] and {r["label"] for r in result} == set(LABELS)
    assert abs(sum(r["score"] for r in result) - 1) < 1e-4
    # the pipeline and predict agree: one preprocessing (the saved feature extractor). The pipeline runs fp32;
    # predict's default may pick bf16 on CPUs with native bf16, so compare against its fp32 reference.
    ours = asit_helpers.predict(tiny_checkpoint, path, precision="fp32")
    assert result[0]["label"] == ours.label and abs(result[0]["score"] - ours.score) < 1e-4


def test_freezing_helpers():
    model = _tiny()
    trainable = lambda: {n for n, p in model.named_parameters() if p.requires_grad}  # noqa: E731
    model.freeze_feature_encoder()
    assert not any(n.startswith("backbone.feature_extractor") for n in trainable())
    model.freeze_backbone()
    assert all(not n.startswith("backbone.") for n in trainable())
    assert {"classifier.weight", "pooling.score.weight"} <= trainable()
    model.unfreeze_top_layers(1)
    layers = {n.split(".")[3] for n in trainable() if n.startswith("backbone.encoder.layers.")}
    assert layers == {"1"}


def test_from_backbone_needs_labels_and_known_pooling():
    with pytest.raises(ValueError, match="labels"):
        AsitForAudioClassification.from_backbone("tiny")
    with pytest.raises(ValueError, match="pooling"):
        AsitForAudioClassification.from_backbone("tiny", labels=LABELS, pooling="max")


def test_tiny_fb_front_end_starts_as_a_mel_spaced_filterbank(tmp_path):
    model = AsitForAudioClassification.from_backbone("tiny-fb", labels=LABELS)
    weight = model.backbone.feature_extractor.conv_layers[0].conv.weight.detach()[:, 0].numpy()  # (64, 400)
    # each kernel's strongest frequency: the cosine half rises with the channel index (mel spacing), and each sine
    # filter shares its cosine partner's centre
    spectrum = np.abs(np.fft.rfft(weight, n=4096, axis=1))
    peak_hz = spectrum.argmax(axis=1) * 16000 / 4096
    half = weight.shape[0] // 2
    assert np.all(np.diff(peak_hz[:half]) > 0) and 40 < peak_hz[0] < 150 and 6500 < peak_hz[half - 1] < 7300
    assert np.allclose(peak_hz[:half], peak_hz[half:], atol=16000 / 4096 * 2)
    assert np.allclose(np.linalg.norm(weight, axis=1), np.sqrt(2.0), rtol=1e-4)
    # a trained checkpoint keeps its own filters: the initialisation is for new models only
    with torch.no_grad():
        model.backbone.feature_extractor.conv_layers[0].conv.weight.mul_(0.5)
    model.save_pretrained(tmp_path)
    reloaded = AsitForAudioClassification.from_pretrained(tmp_path)
    assert torch.equal(reloaded.backbone.feature_extractor.conv_layers[0].conv.weight,
                       model.backbone.feature_extractor.conv_layers[0].conv.weight)
