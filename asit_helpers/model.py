"""ASiT as Hugging Face classes: a speech encoder backbone, masked pooling over its frames, a linear head.

    waveform (B, S) ──► backbone (wav2vec2 / HuBERT / WavLM) ──► frames (B, T, D), T ≈ S / 320
                         └ sample mask (B, S) ──► frame mask (B, T) through the conv arithmetic
    frames + frame mask ──► pooling ──► clip embedding (B, H·D) + weights (B, H, T) ──► head ──► logits (B, C)

The pooling weights are the model's own answer to "when in the clip was the evidence": each row sums to 1 over
the clip's real frames and is exactly 0 on padding. Frame ``t`` covers the samples around
``t · 20 ms + 12.5 ms`` (wav2vec2's conv stack: stride 320 samples, receptive field 400 samples at 16 kHz).

Written like ``modeling_wav2vec2.py``: a config, the pooling layers, the model, an output dataclass. After
``import asit_helpers`` a saved ASiT directory loads through ``AutoModelForAudioClassification`` and
``transformers.pipeline("audio-classification", model=DIR)``.
"""

from __future__ import annotations

from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import Sequence

import numpy as np
import torch
from torch import nn
from transformers import (
    AutoConfig,
    AutoFeatureExtractor,
    AutoModel,
    AutoModelForAudioClassification,
    PretrainedConfig,
    PreTrainedModel,
    Wav2Vec2Config,
    Wav2Vec2FeatureExtractor,
)
from transformers.utils import ModelOutput

from .audio import SAMPLE_RATE, WAV2VEC2_CONV_KERNEL, WAV2VEC2_CONV_STRIDE, conv_min_samples

POOLINGS = ("attention", "multihead", "mean")

#: A small random-initialised wav2vec2 for tests, CI and the offline demo: the real architecture (7-layer conv
#: front end with wav2vec2's strides, so frames are still 20 ms; a transformer encoder) at ~1/1000 of the size.
#: Layer norm in the front end ("stable layer norm"), so it takes an attention mask and padding is exact.
TINY_BACKBONE = dict(
    hidden_size=64,
    num_hidden_layers=2,
    num_attention_heads=2,
    intermediate_size=128,
    conv_dim=(32, 32, 32, 32, 32, 32, 32),
    num_conv_pos_embeddings=16,
    num_conv_pos_embedding_groups=4,
    feat_extract_norm="layer",
    do_stable_layer_norm=True,
    hidden_dropout=0.0,
    activation_dropout=0.0,
    attention_dropout=0.0,
    feat_proj_dropout=0.0,
    layerdrop=0.0,
)

#: The tiny backbone with a two-layer front end whose first convolution is a learnable filterbank (400-sample
#: = 25 ms kernels every 160 samples = 10 ms, then a stride-2 layer: frames stay 20 ms). Trained from scratch on a
#: CPU it learns in minutes what the 7-layer front end (10-sample kernels: no frequency selectivity in the first
#: layer, 16,000 steps per 5 s clip at full width) needs far more steps and ~4x the compute per step for.
TINY_FB_BACKBONE = dict(TINY_BACKBONE, conv_dim=(64, 64), conv_kernel=(400, 3), conv_stride=(160, 2))

def init_filterbank(weight: torch.Tensor, sample_rate: int, low_hz: float = 60.0) -> None:
    """Initialise a first conv layer ``(channels, 1, kernel)`` as a mel-spaced Gabor filterbank, in place.

    Half the channels are cosine and half sine filters at the same centre frequencies (quadrature pairs, so the
    next layer can form a band's energy whatever the phase), each Hann-windowed over the whole kernel and scaled
    like PyTorch's default init. Why: a randomly initialised 400-tap kernel starts with no frequency selectivity,
    and on a few hundred clips the model spends most of its steps (and overfits) learning what a filterbank, the
    classic front end (LEAF, SincNet), gives from the first step; the filters stay trainable.
    """
    channels, _, kernel = weight.shape
    pairs = (channels + 1) // 2
    mel = lambda hz: 2595.0 * np.log10(1.0 + hz / 700.0)  # noqa: E731
    centres_mel = np.linspace(mel(low_hz), mel(0.45 * sample_rate), pairs)
    centres_hz = 700.0 * (10.0 ** (centres_mel / 2595.0) - 1.0)
    t = (np.arange(kernel) - (kernel - 1) / 2) / sample_rate
    window = np.hanning(kernel)
    filters = [window * np.cos(2 * np.pi * f * t) for f in centres_hz] + [window * np.sin(2 * np.pi * f * t) for f in centres_hz]
    bank = np.stack(filters[:pairs] + filters[pairs:])[:channels]
    bank /= np.linalg.norm(bank, axis=1, keepdims=True) + 1e-8
    with torch.no_grad():
        weight.copy_(torch.from_numpy(bank * np.sqrt(2.0)).to(weight.dtype).reshape(weight.shape))


#: Names ``from_backbone`` understands besides a Hub id, a local directory or a config object.
PRESETS = {
    "tiny": "random-initialised small wav2vec2 (offline; tests and demo)",
    "tiny-fb": "tiny with a learnable 25 ms / 10 ms filterbank front end (offline; trains from scratch on a CPU)",
    "base": "facebook/wav2vec2-base (95M parameters; needs internet the first time)",
    "base-random": "random-initialised wav2vec2-base-sized model (offline; real compute, for benchmarks)",
}
BASE_CHECKPOINT = "facebook/wav2vec2-base"


class AsitConfig(PretrainedConfig):
    r"""Configuration of :class:`AsitForAudioClassification`.

    Args:
        backbone_config (`dict` or `PretrainedConfig`, *optional*): the encoder's config (wav2vec2 by default;
            any ``model_type`` that ``AutoModel`` builds from raw audio: wav2vec2, hubert, wavlm, ...).
        pooling (`str`): ``"attention"`` (one learnable scoring head), ``"multihead"`` (``num_heads`` heads) or
            ``"mean"`` (masked average; the baseline).
        num_heads (`int`): heads for ``"multihead"``.
        attention_dim (`int`): width of the scoring MLP (``w·tanh(W h)``).
        attentive_stats (`bool`): pool the weighted mean **and** the weighted standard deviation.
        layer_weighted_sum (`bool`): learn a softmax-weighted sum over all hidden layers instead of the last.
        classifier_dropout (`float`): dropout before the linear head.
        label_smoothing (`float`): for the cross-entropy loss.
        clip_seconds (`float`): the window the model is trained on; ``predict`` cuts longer audio into windows of
            this length.
        do_normalize (`bool`): zero-mean unit-variance per clip in the feature extractor (as wav2vec2-base).
    """

    model_type = "asit"
    sub_configs = {"backbone_config": AutoConfig}

    def __init__(
        self,
        backbone_config: dict | PretrainedConfig | None = None,
        pooling: str = "attention",
        num_heads: int = 4,
        attention_dim: int = 128,
        attentive_stats: bool = False,
        layer_weighted_sum: bool = False,
        classifier_dropout: float = 0.1,
        label_smoothing: float = 0.0,
        clip_seconds: float = 5.0,
        sampling_rate: int = SAMPLE_RATE,
        do_normalize: bool = True,
        **kwargs,
    ):
        if pooling not in POOLINGS:
            raise ValueError(f"pooling must be one of {POOLINGS}, got {pooling!r}")
        if backbone_config is None:
            backbone_config = Wav2Vec2Config()
        elif isinstance(backbone_config, dict):
            backbone_config = dict(backbone_config)
            backbone_config = AutoConfig.for_model(backbone_config.pop("model_type", "wav2vec2"), **backbone_config)
        self.backbone_config = backbone_config
        self.pooling = pooling
        self.num_heads = num_heads
        self.attention_dim = attention_dim
        self.attentive_stats = attentive_stats
        self.layer_weighted_sum = layer_weighted_sum
        self.classifier_dropout = classifier_dropout
        self.label_smoothing = label_smoothing
        self.clip_seconds = clip_seconds
        self.sampling_rate = sampling_rate
        self.do_normalize = do_normalize
        super().__init__(**kwargs)

    @property
    def pooling_heads(self) -> int:
        return self.num_heads if self.pooling == "multihead" else 1

    @property
    def backbone_masks_input(self) -> bool:
        """Whether the encoder takes an attention mask.

        Group-norm front ends (wav2vec2-base, HuBERT-base) were trained without one: Hugging Face's guidance is to
        zero-pad and not pass it. Layer-norm front ends (wav2vec2-large-lv60, the tiny preset) take it.
        """
        return getattr(self.backbone_config, "feat_extract_norm", "layer") == "layer"

    @property
    def frame_stride(self) -> int:
        """Samples between consecutive frames (320 for wav2vec2: 20 ms at 16 kHz)."""
        stride = 1
        for s in getattr(self.backbone_config, "conv_stride", (320,)):
            stride *= int(s)
        return stride

    @property
    def receptive_field(self) -> int:
        """Samples one frame sees (400 for wav2vec2: 25 ms at 16 kHz; 720 for the tiny-fb front end)."""
        return min_input_samples(self.backbone_config)

    @property
    def min_samples(self) -> int:
        """The shortest input the backbone's conv stack turns into one frame (its receptive field, in samples)."""
        return min_input_samples(self.backbone_config)


def min_input_samples(backbone_config) -> int:
    """The shortest waveform (samples) this backbone's conv front end maps to one frame, from its own kernels and
    strides (:func:`asit_helpers.audio.conv_min_samples`): 400 (25 ms) for wav2vec2/HuBERT/WavLM, 720 (45 ms) for
    the tiny-fb filterbank front end."""
    return conv_min_samples(
        getattr(backbone_config, "conv_kernel", WAV2VEC2_CONV_KERNEL),
        getattr(backbone_config, "conv_stride", WAV2VEC2_CONV_STRIDE),
    )


@dataclass
class AsitClassifierOutput(ModelOutput):
    """Output of :class:`AsitForAudioClassification`.

    Args:
        loss (`torch.FloatTensor` of shape `()`, *optional*): cross-entropy, when ``labels`` were given.
        logits (`torch.FloatTensor` of shape `(batch, num_labels)`).
        pooling_weights (`torch.FloatTensor` of shape `(batch, heads, frames)`): each row sums to 1 over the real
            frames and is 0 on padding (a clip with no real frame gets all zeros, not NaN).
        pooling_scores (`torch.FloatTensor` of shape `(batch, heads, frames)`): the attention scores before the
            softmax (0 everywhere for mean pooling). Unlike the weights they are not normalised per clip, so they
            compare evidence *between* windows of one recording (``inference.aggregate_windows``).
        frame_mask (`torch.BoolTensor` of shape `(batch, frames)`): True on frames computed from real samples.
        frame_times (`torch.FloatTensor` of shape `(frames,)`): centre of each frame in seconds from the start.
        pooled (`torch.FloatTensor` of shape `(batch, embedding_dim)`): the clip embedding fed to the head.
        hidden_states (`tuple(torch.FloatTensor)`, *optional*): the backbone's, when asked for.
    """

    loss: torch.FloatTensor | None = None
    logits: torch.FloatTensor | None = None
    pooling_weights: torch.FloatTensor | None = None
    pooling_scores: torch.FloatTensor | None = None
    frame_mask: torch.BoolTensor | None = None
    frame_times: torch.FloatTensor | None = None
    pooled: torch.FloatTensor | None = None
    hidden_states: tuple[torch.FloatTensor, ...] | None = None


def _safe_masked_softmax(scores: torch.Tensor, frame_mask: torch.Tensor) -> torch.Tensor:
    """Softmax over frames with padding at -inf; a row with no real frame returns zeros (never NaN).

    Args:
        scores: `(batch, heads, frames)`. frame_mask: `(batch, frames)` bool.
    """
    has_frames = frame_mask.any(dim=-1)  # (B,)
    # Give empty rows one dummy visible frame so softmax stays finite (and so do its gradients), then zero them.
    visible = frame_mask | ~has_frames[:, None]
    scores = scores.float().masked_fill(~visible[:, None, :], float("-inf"))
    weights = torch.softmax(scores, dim=-1)
    return weights * has_frames[:, None, None].to(weights.dtype)


def _weighted_statistics(hidden: torch.Tensor, weights: torch.Tensor, with_std: bool) -> torch.Tensor:
    """Weighted mean (and std) of frames: hidden `(B, T, D)`, weights `(B, H, T)` → `(B, H·D)` or `(B, H·2D)`."""
    weights = weights.to(hidden.dtype)
    mean = torch.einsum("bht,btd->bhd", weights, hidden)
    if not with_std:
        return mean.flatten(1)
    second = torch.einsum("bht,btd->bhd", weights, hidden * hidden)
    # clamp: rounding can make E[x²] - E[x]² slightly negative; sqrt(0) would give infinite gradients
    std = (second - mean * mean).clamp_min(1e-5).sqrt()
    return torch.cat([mean, std], dim=-1).flatten(1)


class AsitAttentionPooling(nn.Module):
    """Learnable attention pooling: ``score_h(t) = v_hᵀ tanh(W x_t + b)``, ``w_h = masked_softmax_t(score_h)``.

    With one head this is the original ASiT scoring head; with several, each head can attend to a different part
    of the clip (e.g. onset and sustain).
    """

    def __init__(self, hidden_size: int, num_heads: int = 1, attention_dim: int = 128, attentive_stats: bool = False):
        super().__init__()
        self.num_heads = num_heads
        self.attentive_stats = attentive_stats
        self.proj = nn.Linear(hidden_size, attention_dim)
        self.score = nn.Linear(attention_dim, num_heads)

    @property
    def output_dim_factor(self) -> int:
        return self.num_heads * (2 if self.attentive_stats else 1)

    def scores(self, hidden: torch.Tensor) -> torch.Tensor:
        """hidden `(B, T, D)` → unnormalised scores `(B, H, T)`."""
        return self.score(torch.tanh(self.proj(hidden))).transpose(1, 2)

    def forward(self, hidden: torch.Tensor, frame_mask: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
        """hidden `(B, T, D)`, frame_mask `(B, T)` → pooled `(B, H·D[·2])`, weights `(B, H, T)` and the
        unnormalised scores `(B, H, T)` they came from (returned so that nobody computes them a second time)."""
        scores = self.scores(hidden)
        weights = _safe_masked_softmax(scores, frame_mask)
        return _weighted_statistics(hidden, weights, self.attentive_stats), weights, scores


class AsitMeanPooling(nn.Module):
    """Masked mean over real frames (the baseline). Its 'weights' are uniform over the real frames, so plots and
    localisation scores treat every pooling alike."""

    num_heads = 1

    def __init__(self, attentive_stats: bool = False):
        super().__init__()
        self.attentive_stats = attentive_stats

    @property
    def output_dim_factor(self) -> int:
        return 2 if self.attentive_stats else 1

    def scores(self, hidden: torch.Tensor) -> torch.Tensor:
        """Equal (zero) scores for every frame: `(B, 1, T)`."""
        return hidden.new_zeros(hidden.shape[0], 1, hidden.shape[1]).float()

    def forward(self, hidden: torch.Tensor, frame_mask: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
        counts = frame_mask.sum(dim=-1, keepdim=True).clamp_min(1)
        weights = (frame_mask.float() / counts)[:, None, :]  # (B, 1, T)
        return _weighted_statistics(hidden, weights, self.attentive_stats), weights, self.scores(hidden)


class AsitPreTrainedModel(PreTrainedModel):
    config_class = AsitConfig
    base_model_prefix = "asit"
    main_input_name = "input_values"
    supports_gradient_checkpointing = True
    _supports_sdpa = True
    _supports_flash_attn = True


class AsitForAudioClassification(AsitPreTrainedModel):
    """Backbone → masked pooling → linear head. See the module docstring for the data flow."""

    def __init__(self, config: AsitConfig):
        super().__init__(config)
        self.backbone = AutoModel.from_config(config.backbone_config)
        hidden = config.backbone_config.hidden_size
        if config.layer_weighted_sum:
            num_layers = config.backbone_config.num_hidden_layers + 1  # + the embedding output
            self.layer_weights = nn.Parameter(torch.zeros(num_layers))
        if config.pooling == "mean":
            self.pooling = AsitMeanPooling(config.attentive_stats)
        else:
            self.pooling = AsitAttentionPooling(
                hidden, config.pooling_heads, config.attention_dim, config.attentive_stats
            )
        self.dropout = nn.Dropout(config.classifier_dropout)
        self.classifier = nn.Linear(hidden * self.pooling.output_dim_factor, config.num_labels)
        self.post_init()

    # -- construction -------------------------------------------------------------------------------------------

    @classmethod
    def from_backbone(
        cls,
        name_or_config: str | Path | PretrainedConfig = "tiny",
        labels: Sequence[str] = (),
        pooling: str = "attention",
        **config_kwargs,
    ) -> "AsitForAudioClassification":
        """A new classifier on a backbone, with a fresh pooling layer and head.

        Args:
            name_or_config: ``"tiny"`` / ``"tiny-fb"`` / ``"base-random"`` (random init, offline), ``"base"`` (=
                ``facebook/wav2vec2-base``), any Hub id or local directory of a speech encoder (pretrained weights
                are loaded), or a backbone config object (random init).
            labels: class names, in label-id order.
            pooling: ``"attention"``, ``"multihead"`` or ``"mean"``.
            **config_kwargs: other :class:`AsitConfig` fields (``num_heads``, ``attentive_stats``, ...).
        """
        if not labels:
            raise ValueError("from_backbone needs the class names: labels=[...]")
        id2label = {i: str(name) for i, name in enumerate(labels)}
        label2id = {name: i for i, name in id2label.items()}
        pretrained = None
        do_normalize = config_kwargs.pop("do_normalize", True)
        if isinstance(name_or_config, PretrainedConfig):
            backbone_config = name_or_config
        elif name_or_config == "tiny":
            backbone_config = Wav2Vec2Config(**TINY_BACKBONE)
        elif name_or_config == "tiny-fb":
            backbone_config = Wav2Vec2Config(**TINY_FB_BACKBONE)
        elif name_or_config == "base-random":
            backbone_config = Wav2Vec2Config()
        else:
            pretrained = BASE_CHECKPOINT if name_or_config == "base" else str(name_or_config)
            backbone_config = AutoConfig.from_pretrained(pretrained)
            try:
                extractor = AutoFeatureExtractor.from_pretrained(pretrained)
                do_normalize = bool(getattr(extractor, "do_normalize", do_normalize))
            except (OSError, ValueError):
                pass  # some encoders ship no preprocessor config; keep the default
        config = AsitConfig(
            backbone_config=backbone_config,
            pooling=pooling,
            id2label=id2label,
            label2id=label2id,
            do_normalize=do_normalize,
            **config_kwargs,
        )
        model = cls(config)
        if pretrained is not None:
            _load_pretrained_backbone(model.backbone, pretrained)
        elif name_or_config == "tiny-fb":
            init_filterbank(model.backbone.feature_extractor.conv_layers[0].conv.weight, config.sampling_rate)
        return model

    def feature_extractor(self) -> Wav2Vec2FeatureExtractor:
        """The preprocessing every caller shares (normalisation, zero padding, sample mask)."""
        return Wav2Vec2FeatureExtractor(
            feature_size=1,
            sampling_rate=self.config.sampling_rate,
            padding_value=0.0,
            do_normalize=self.config.do_normalize,
            return_attention_mask=True,
        )

    def save_pretrained(self, save_directory, *args, **kwargs):
        """``PreTrainedModel.save_pretrained`` plus ``preprocessor_config.json``, so ``pipeline`` needs nothing else."""
        super().save_pretrained(save_directory, *args, **kwargs)
        self.feature_extractor().save_pretrained(save_directory)

    # -- freezing -----------------------------------------------------------------------------------------------

    def freeze_feature_encoder(self) -> None:
        """Freeze the convolutional front end (the usual choice for fine-tuning wav2vec2)."""
        front_end = getattr(self.backbone, "feature_extractor", None)
        if front_end is not None:
            for p in front_end.parameters():
                p.requires_grad = False
            # HF's encoder otherwise marks its input as requiring grad in training mode, so backward would
            # still run through every conv layer (to an input nobody needs): ~30% of a CPU training step
            if hasattr(front_end, "_freeze_parameters"):
                front_end._freeze_parameters()

    def freeze_backbone(self) -> None:
        """Freeze the whole encoder: only the pooling and head (and layer weights) train."""
        for p in self.backbone.parameters():
            p.requires_grad = False

    def unfreeze_top_layers(self, k: int) -> None:
        """Freeze the backbone except its top ``k`` transformer layers (and the final layer norm)."""
        self.freeze_backbone()
        layers = self.backbone.encoder.layers
        for layer in list(layers)[max(0, len(layers) - k) :] if k > 0 else []:
            for p in layer.parameters():
                p.requires_grad = True
        final_norm = getattr(self.backbone.encoder, "layer_norm", None)
        if k > 0 and final_norm is not None and self.config.backbone_config.do_stable_layer_norm:
            for p in final_norm.parameters():
                p.requires_grad = True

    # -- the forward pass, in two halves so cached hidden states can skip the first ---------------------------

    def frame_mask_from_samples(self, attention_mask: torch.Tensor | None, num_frames: int, batch: int) -> torch.Tensor:
        """Sample mask `(B, S)` → frame mask `(B, T)` through the backbone's convolution arithmetic."""
        if attention_mask is None:
            return torch.ones(batch, num_frames, dtype=torch.bool, device=self.device)
        lengths = self.backbone._get_feat_extract_output_lengths(attention_mask.sum(-1).long())
        return torch.arange(num_frames, device=attention_mask.device)[None, :] < lengths[:, None]

    def frame_times(self, num_frames: int, device=None) -> torch.Tensor:
        """Centre of each frame in seconds: `(frames,)`."""
        cfg = self.config
        idx = torch.arange(num_frames, device=device, dtype=torch.float32)
        return (idx * cfg.frame_stride + cfg.receptive_field / 2) / cfg.sampling_rate

    def encode(
        self, input_values: torch.Tensor, attention_mask: torch.Tensor | None = None
    ) -> tuple[torch.Tensor, torch.Tensor]:
        """Run the backbone.

        Returns:
            ``(hidden, frame_mask)``: hidden `(B, T, D)`, or `(B, L+1, T, D)` (every layer) when
            ``layer_weighted_sum``; frame_mask `(B, T)` bool.
        """
        encoder_mask = attention_mask if self.config.backbone_masks_input else None
        # An eval-mode encoder is deterministic, yet wav2vec2/HuBERT/WavLM in transformers <= 5.15 draw one
        # torch.rand per layer for LayerDrop even in eval mode. Left alone, running a frozen backbone shifts the
        # global RNG, so the head's dropout masks differ between the cached-embedding path (backbone run once,
        # before training) and the uncached one (backbone run every step): same seed, different model.
        # Forking the CPU generator (where that draw happens) keeps the frozen backbone out of the RNG stream.
        with torch.random.fork_rng(devices=[], enabled=not self.backbone.training):
            outputs = self.backbone(
                input_values,
                attention_mask=encoder_mask,
                output_hidden_states=self.config.layer_weighted_sum,
                return_dict=True,
            )
        if self.config.layer_weighted_sum:
            hidden = torch.stack(outputs.hidden_states, dim=1)
        else:
            hidden = outputs.last_hidden_state
        frame_mask = self.frame_mask_from_samples(attention_mask, hidden.shape[-2], hidden.shape[0])
        return hidden, frame_mask

    # -- partial mode on cached activations: the backbone split at a transformer layer -------------------------

    def split_supported(self) -> str | None:
        """Why :meth:`encode_lower` / :meth:`encode_upper` cannot split this model (``None``: they can).

        They need a wav2vec2-style encoder (HuBERT's too: positional conv, then a list of layers that take only the
        hidden states and a mask) and a pooling that reads the last layer only."""
        encoder = getattr(self.backbone, "encoder", None)
        if self.config.layer_weighted_sum:
            return "layer_weighted_sum pools every layer, and the frozen layers' outputs are not cached"
        if encoder is None or not hasattr(encoder, "layers") or not hasattr(encoder, "pos_conv_embed"):
            return f"the {self.config.backbone_config.model_type} encoder has no wav2vec2-style layer stack"
        if self.config.backbone_config.model_type not in ("wav2vec2", "hubert"):
            return f"splitting a {self.config.backbone_config.model_type} encoder is not supported"
        return None

    def _encoder_mask(self, hidden: torch.Tensor, frame_mask: torch.Tensor | None):
        """The attention mask the encoder's layers take, built as the encoder builds it (None: no padding mask)."""
        if frame_mask is None:
            return None
        try:
            from transformers.masking_utils import create_bidirectional_mask  # transformers >= 5
        except ImportError:  # transformers 4.x: an additive `(B, 1, T, T)` mask
            additive = (1.0 - frame_mask[:, None, None, :].to(hidden.dtype)) * torch.finfo(hidden.dtype).min
            return additive.expand(-1, 1, hidden.shape[1], -1)
        return create_bidirectional_mask(config=self.backbone.config, inputs_embeds=hidden,
                                         attention_mask=frame_mask.long())

    def _run_layers(self, hidden: torch.Tensor, frame_mask: torch.Tensor | None, layers) -> torch.Tensor:
        mask = self._encoder_mask(hidden, frame_mask)
        encoder = self.backbone.encoder
        for layer in layers:
            # LayerDrop, as the encoder's own loop applies it in training (to trained layers: frozen ones run
            # in eval mode, as the partial-mode cache computed them)
            if layer.training and self.config.backbone_config.layerdrop > 0 and \
                    torch.rand([]) < self.config.backbone_config.layerdrop:
                continue
            out = layer(hidden, attention_mask=mask)
            hidden = out[0] if isinstance(out, tuple) else out
        return hidden

    def encode_lower(
        self, input_values: torch.Tensor, attention_mask: torch.Tensor | None, layer: int
    ) -> tuple[torch.Tensor, torch.Tensor]:
        """The backbone below transformer layer ``layer`` (eval-mode semantics: no SpecAugment masking): the hidden
        states that layer ``layer`` reads, `(B, T, D)`, and the frame mask `(B, T)`. With :meth:`encode_upper` it
        computes what :meth:`encode` does; partial-mode training caches its output once per clip."""
        reason = self.split_supported()
        if reason:
            raise ValueError(f"cannot split the backbone: {reason}")
        backbone, encoder = self.backbone, self.backbone.encoder
        features = backbone.feature_extractor(input_values).transpose(1, 2)
        projected = backbone.feature_projection(features)
        hidden = projected[0] if isinstance(projected, tuple) else projected
        frame_mask = self.frame_mask_from_samples(attention_mask, hidden.shape[1], hidden.shape[0])
        encoder_mask = frame_mask if (attention_mask is not None and self.config.backbone_masks_input) else None
        if encoder_mask is not None:
            hidden = hidden.masked_fill(~encoder_mask[:, :, None], 0.0)  # as the encoder zeroes padded frames
        hidden = hidden + encoder.pos_conv_embed(hidden)
        if not self.config.backbone_config.do_stable_layer_norm:
            hidden = encoder.layer_norm(hidden)  # post-norm encoders normalise before the first layer
        hidden = encoder.dropout(hidden)
        hidden = self._run_layers(hidden, encoder_mask, encoder.layers[:layer])
        return hidden, frame_mask

    def lower_modules(self, layer: int) -> list[nn.Module]:
        """The modules :meth:`encode_lower` runs below transformer layer ``layer`` (partial mode's frozen part)."""
        encoder = self.backbone.encoder
        norm = [] if self.config.backbone_config.do_stable_layer_norm else [encoder.layer_norm]
        return [self.backbone.feature_extractor, self.backbone.feature_projection, encoder.pos_conv_embed, *norm,
                encoder.dropout, *encoder.layers[:layer]]

    def encode_upper(self, hidden: torch.Tensor, frame_mask: torch.Tensor, layer: int) -> torch.Tensor:
        """Transformer layers ``layer`` and up (and a pre-norm encoder's final norm) on :meth:`encode_lower`'s
        output: `(B, T, D)` → the last hidden state `(B, T, D)`."""
        encoder = self.backbone.encoder
        encoder_mask = frame_mask.bool() if self.config.backbone_masks_input and not frame_mask.all() else None
        hidden = self._run_layers(hidden, encoder_mask, encoder.layers[layer:])
        if self.config.backbone_config.do_stable_layer_norm:
            hidden = encoder.layer_norm(hidden)
        return hidden

    def classify_hidden(
        self,
        hidden: torch.Tensor,
        frame_mask: torch.Tensor,
        labels: torch.Tensor | None = None,
    ) -> AsitClassifierOutput:
        """Pooling + head on backbone outputs (from :meth:`encode`, or from a cache of them)."""
        if self.config.layer_weighted_sum:
            layer_weights = torch.softmax(self.layer_weights, dim=0).to(hidden.dtype)
            hidden = torch.einsum("l,bltd->btd", layer_weights, hidden)
        frame_mask = frame_mask.bool()
        pooled, weights, scores = self.pooling(hidden, frame_mask)
        scores = scores.float().detach()  # for comparing windows (inference), not trained
        logits = self.classifier(self.dropout(pooled))
        loss = None
        if labels is not None:
            loss = nn.functional.cross_entropy(
                logits.float(), labels.long(), label_smoothing=self.config.label_smoothing
            )
        return AsitClassifierOutput(
            loss=loss,
            logits=logits,
            pooling_weights=weights,
            pooling_scores=scores,
            frame_mask=frame_mask,
            frame_times=self.frame_times(hidden.shape[1], hidden.device),
            pooled=pooled,
        )

    def forward(
        self,
        input_values: torch.Tensor,
        attention_mask: torch.Tensor | None = None,
        labels: torch.Tensor | None = None,
        **kwargs,
    ) -> AsitClassifierOutput:
        r"""
        Args:
            input_values (`torch.FloatTensor` of shape `(batch, samples)`): 16 kHz waveforms, zero-padded, as the
                feature extractor returns them.
            attention_mask (`torch.LongTensor` of shape `(batch, samples)`, *optional*): 1 on real samples. Used
                for the pooling mask always, and passed to the encoder only when it was trained with one.
            labels (`torch.LongTensor` of shape `(batch,)`, *optional*): class ids, for the loss.
        """
        hidden, frame_mask = self.encode(input_values, attention_mask)
        return self.classify_hidden(hidden, frame_mask, labels)


def _load_pretrained_backbone(backbone: nn.Module, pretrained: str) -> None:
    """Copy a pretrained encoder's weights into ``backbone`` exactly, and say in one line what was left out.

    Hub checkpoints such as ``facebook/wav2vec2-base`` are ``Wav2Vec2ForPreTraining``: they also hold the
    quantizer and the ``project_q`` / ``project_hid`` projections, used only by the pre-training objective.
    transformers reports dropping them as a table of warnings (5.x) or "Some weights were not used" (4.x),
    which students take for an error; here it is one line, and a backbone weight missing from the checkpoint
    (left at random init) is an error instead of a warning.
    """
    with _quiet_transformers():
        encoder, info = AutoModel.from_pretrained(pretrained, output_loading_info=True)
    missing = sorted(info.get("missing_keys") or []) + sorted(str(k) for k in info.get("mismatched_keys") or [])
    if missing:
        raise RuntimeError(f"{pretrained}: the checkpoint has no weights for {len(missing)} backbone tensors "
                           f"({', '.join(missing[:5])}, ...): they would stay randomly initialised")
    backbone.load_state_dict(encoder.state_dict(), strict=True)
    unexpected = sorted(info.get("unexpected_keys") or [])
    dropped = sorted({key.split(".")[0] for key in unexpected})
    note = (f"left out {len(unexpected)} pretraining-only tensors ({', '.join(dropped)}): this is expected, "
            "a classifier does not use them") if unexpected else "nothing left out"
    print(f"Loaded {pretrained}: {len(encoder.state_dict())} backbone tensors; {note}.")


@contextmanager
def _quiet_transformers():
    """transformers' load-time warnings and progress bar off for the duration (restored afterwards)."""
    from transformers.utils import logging as hf_logging

    verbosity, bar = hf_logging.get_verbosity(), hf_logging.is_progress_bar_enabled()
    hf_logging.set_verbosity_error()
    hf_logging.disable_progress_bar()
    try:
        yield
    finally:
        hf_logging.set_verbosity(verbosity)
        if bar:
            hf_logging.enable_progress_bar()


def load_model(path_or_model, device: str | torch.device | None = None) -> AsitForAudioClassification:
    """A saved ASiT directory (or an already loaded model) in eval mode, on ``device`` (default: CPU)."""
    if isinstance(path_or_model, AsitForAudioClassification):
        model = path_or_model
    else:
        path = Path(path_or_model)
        if path.exists() and not (path / "config.json").exists():
            raise FileNotFoundError(f"{path}: not a checkpoint directory (no config.json)")
        model = AsitForAudioClassification.from_pretrained(str(path_or_model))
    if device is not None:
        model = model.to(device)
    return model.eval()


AutoConfig.register("asit", AsitConfig, exist_ok=True)
AutoModelForAudioClassification.register(AsitConfig, AsitForAudioClassification, exist_ok=True)
# transformers 4.45's pipeline() loads a feature extractor only for config types in this mapping: without this
# entry, pipeline("audio-classification", model=DIR) gets none there and fails on its first input.
AutoFeatureExtractor.register(AsitConfig, Wav2Vec2FeatureExtractor, exist_ok=True)
