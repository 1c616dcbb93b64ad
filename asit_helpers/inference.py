"""The one door from samples to a :class:`Prediction`: :func:`predict`.

The CLI (``asit predict``), the notebooks, the recorder widget and the Flask server all call :func:`predict`, so a
clip gets the same answer, the same top-k and the same attention curve wherever it is classified.

Audio longer than the model's window (``config.clip_seconds``, 5 s) is cut into equal, half-overlapping windows
(the last aligned to the end, so no window is padded); each window is classified, the clip's probabilities are
the mean over windows, and the windows' attention curves are stitched into one curve over the whole clip.

Precision: ``precision="auto"`` (the default) asks :func:`asit_helpers.runtime.resolve_precision`, the one resolver
training, evaluation and serving share: bf16 where the hardware has native bf16 matrix instructions, fp16 on GPUs
that only have fp16 tensor cores (T4, V100), float32 elsewhere. On a CPU bf16 runs through a cached copy
(:mod:`asit_helpers.fast_inference`: bf16 weights, the conv front end as matrix products, weight norm folded),
under autocast (norms and the residual stream in float32); on a GPU through autocast. The pooling, the head and the
softmax always run in float32, so the attention curve and the probabilities keep full precision.
``precision="fp32"`` (``asit predict --precision fp32``) forces the float32 reference. ``bench/latency.py`` measures
the speed-up and the top-1 agreement with float32 that justify this default.
"""

from __future__ import annotations

import threading
import weakref
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Sequence

import numpy as np
import torch

from .audio import SAMPLE_RATE, AudioError, AudioSource, load_audio, resample, window_starts
from .fast_inference import build_fast_copy
from .model import AsitClassifierOutput, AsitForAudioClassification, load_model
from .runtime import TORCH_DTYPES, resolve_precision

#: Audio longer than this is refused by predict (seconds): a 10-minute clip is 239 windows of 5 s.
DEFAULT_MAX_SECONDS = 600.0


@dataclass
class WindowPrediction:
    """One window of a long clip."""

    start_s: float
    end_s: float
    label: str
    score: float
    top_k: list[tuple[str, float]]


@dataclass
class Prediction:
    """What the model says about one clip.

    Attributes:
        label, score: the top class and its probability (mean over windows for long audio).
        top_k: ``[(label, probability), ...]``, best first.
        probabilities: `(num_labels,)` every class's probability, in label-id order.
        weights: `(heads, frames)` pooling weights over the whole clip; each head sums to 1.
        frame_times_s: `(frames,)` centre of each frame in seconds.
        duration_s: length of the audio.
        windows: one :class:`WindowPrediction` per window (a single entry for a clip within one window).
        source: the file name, or ``"<array>"``.
        precision: what the backbone ran in: ``"fp32"``, ``"bf16"`` or ``"fp16"``.
    """

    label: str
    score: float
    top_k: list[tuple[str, float]]
    probabilities: np.ndarray
    weights: np.ndarray
    frame_times_s: np.ndarray
    duration_s: float
    windows: list[WindowPrediction] = field(default_factory=list)
    source: str = "<array>"
    precision: str = "fp32"

    def to_dict(self, include_weights: bool = True) -> dict[str, Any]:
        """JSON-ready: the shape the CLI's ``--json`` and the server's ``/predict`` return."""
        out: dict[str, Any] = {
            "source": self.source,
            "label": self.label,
            "score": round(float(self.score), 6),
            "top_k": [{"label": name, "score": round(float(p), 6)} for name, p in self.top_k],
            "duration_s": round(float(self.duration_s), 4),
            "precision": self.precision,
            "windows": [
                {
                    "start_s": round(w.start_s, 4),
                    "end_s": round(w.end_s, 4),
                    "label": w.label,
                    "score": round(float(w.score), 6),
                    "top_k": [{"label": n, "score": round(float(p), 6)} for n, p in w.top_k],
                }
                for w in self.windows
            ],
        }
        if include_weights:
            out["weights"] = np.round(self.weights.astype(np.float64), 6).tolist()
            out["frame_times_s"] = np.round(self.frame_times_s.astype(np.float64), 4).tolist()
        return out


def _top_k(probs: np.ndarray, id2label: dict, k: int) -> list[tuple[str, float]]:
    order = np.argsort(-probs)[: max(1, min(k, len(probs)))]
    return [(id2label[int(i)], float(probs[i])) for i in order]


def _as_samples(audio: AudioSource | np.ndarray | torch.Tensor, sr: int, max_seconds: float | None) -> tuple[np.ndarray, str]:
    if isinstance(audio, torch.Tensor):
        audio = audio.detach().cpu().numpy()
    if isinstance(audio, np.ndarray):
        samples = np.asarray(audio, dtype=np.float32)
        if samples.ndim == 2:  # (channels, samples) or (samples, channels): average the short axis
            samples = samples.mean(axis=0 if samples.shape[0] < samples.shape[1] else 1)
        if samples.ndim != 1:
            raise AudioError("<array>", f"expected a 1-D signal, got shape {audio.shape}")
        if samples.size == 0:
            raise AudioError("<array>", "contains no samples (zero length)")
        if not np.isfinite(samples).all():
            raise AudioError("<array>", "contains NaN or infinite sample values")
        if max_seconds is not None and samples.size / sr > max_seconds:
            raise AudioError("<array>", f"too long: {samples.size / sr:.1f} s exceeds the limit of {max_seconds:g} s")
        return resample(samples, sr, SAMPLE_RATE), "<array>"
    name = str(audio) if isinstance(audio, (str, Path)) else getattr(audio, "name", "<audio bytes>")
    return load_audio(audio, SAMPLE_RATE, max_seconds=max_seconds), str(name)


def _stitch_weights(
    window_weights: np.ndarray, starts: Sequence[int], n_samples: int, model: AsitForAudioClassification
) -> tuple[np.ndarray, np.ndarray]:
    """Place each window's `(heads, frames)` weights on the clip's frame grid, average overlaps, renormalise."""
    cfg = model.config
    total_frames = int(
        model.backbone._get_feat_extract_output_lengths(torch.tensor([n_samples])).item()
    )
    heads, per_window = window_weights.shape[1], window_weights.shape[2]
    acc = np.zeros((heads, total_frames), dtype=np.float64)
    cover = np.zeros(total_frames, dtype=np.float64)
    for w, start in zip(window_weights, starts):
        offset = int(round(start / cfg.frame_stride))
        n = min(per_window, total_frames - offset)
        acc[:, offset : offset + n] += w[:, :n]
        cover[offset : offset + n] += 1
    acc /= np.maximum(cover, 1)[None, :]
    acc /= np.maximum(acc.sum(axis=1, keepdims=True), 1e-12)
    times = model.frame_times(total_frames).numpy()
    return acc.astype(np.float32), times


# -- precision: the fast path ---------------------------------------------------------------------------------------

_DTYPE_NAMES = {torch.float32: "fp32", torch.bfloat16: "bf16", torch.float16: "fp16"}


# model -> (fingerprint of its backbone weights, bf16 copy). Weak keys: the copy goes when the model goes.
_BF16_COPIES: "weakref.WeakKeyDictionary[AsitForAudioClassification, tuple[tuple, AsitForAudioClassification]]"
_BF16_COPIES = weakref.WeakKeyDictionary()
_BF16_LOCK = threading.Lock()  # the server classifies on several threads: build each copy once


def _weights_fingerprint(model: AsitForAudioClassification) -> tuple:
    """Changes when any backbone weight is replaced (new storage) or updated in place (version counter): a copy
    made before more training or a ``load_state_dict`` is never reused."""
    return tuple((p.data_ptr(), p._version) for p in model.backbone.parameters())


def bf16_copy(model: AsitForAudioClassification) -> AsitForAudioClassification:
    """The CPU fast path's cached copy of ``model`` (eval mode), rebuilt when the weights change.

    Built by :func:`asit_helpers.fast_inference.build_fast_copy`: bf16 weights for the linear layers, the
    convolutional front end rearranged as matrix products, the positional conv's weight norm folded into one bf16
    weight, the norms in float32. Run under ``torch.autocast("cpu", torch.bfloat16)`` (as :func:`classify_batch` does): the
    residual stream stays float32 (a bf16 product added to a float32 residual promotes), and no weight is re-cast
    per call. It costs 2 bytes per matrix/conv parameter (~190 MB for wav2vec2-base).
    """
    key = _weights_fingerprint(model)
    with _BF16_LOCK:
        cached = _BF16_COPIES.get(model)
        if cached is not None and cached[0] == key:
            return cached[1]
        # built outside inference mode: a copy made inside predict's inference_mode would hold inference tensors,
        # which some later uses (no_grad code, dispatch modes such as FlopCounterMode) cannot handle
        fast = build_fast_copy(model)
        _BF16_COPIES[model] = (key, fast)
        return fast


def classify_batch(
    model: AsitForAudioClassification,
    input_values: torch.Tensor,
    attention_mask: torch.Tensor | None = None,
    precision: str = "fp32",
) -> AsitClassifierOutput:
    """One forward pass with the backbone in ``precision`` (``"fp32"``, ``"bf16"`` or ``"fp16"``, already resolved
    by :func:`~asit_helpers.runtime.resolve_precision`).

    The pooling, head and everything after run in the model's own float32, on float32 hidden states.

    Args:
        input_values: `(batch, samples)` as the feature extractor returns them. attention_mask: `(batch, samples)`.

    Returns:
        the model's :class:`AsitClassifierOutput` (logits `(batch, num_labels)`, pooling_weights `(batch, heads,
        frames)`, ...).
    """
    if precision == "fp32" or model.dtype != torch.float32:
        return model(input_values, attention_mask=attention_mask)
    if precision not in ("bf16", "fp16"):
        raise ValueError(f"classify_batch takes a resolved precision ('fp32', 'bf16' or 'fp16'), got {precision!r}")
    # on GPUs plain autocast: weight re-casts are cheap there; on CPUs autocast over the pre-cast bf16 copy
    runner = bf16_copy(model) if model.device.type == "cpu" and precision == "bf16" else model
    with torch.autocast(model.device.type, dtype=TORCH_DTYPES[precision]):
        hidden, frame_mask = runner.encode(input_values, attention_mask)
    return model.classify_hidden(hidden.float(), frame_mask)


@torch.inference_mode()
def predict(
    model: AsitForAudioClassification | str | Path,
    audio: AudioSource | np.ndarray | torch.Tensor,
    top_k: int = 5,
    *,
    sr: int = SAMPLE_RATE,
    hop_s: float | None = None,
    batch_size: int = 8,
    max_seconds: float | None = DEFAULT_MAX_SECONDS,
    precision: str = "auto",
    forward: Any = None,
) -> Prediction:
    """Classify one clip.

    Args:
        model: a loaded :class:`AsitForAudioClassification` or a checkpoint directory.
        audio: a path, bytes, a binary file object, or samples (`np.ndarray`/`torch.Tensor`, 1-D, at ``sr`` Hz).
        top_k: how many classes to rank.
        sr: sample rate of raw ``audio`` samples (files carry their own).
        hop_s: step between windows for long audio (default: half the window).
        batch_size: windows per forward pass.
        max_seconds: refuse longer audio with :class:`AudioError` (``None``: no limit).
        precision: ``"auto"``, ``"fp32"`` (the reference), ``"bf16"`` or ``"fp16"``: see
            :func:`asit_helpers.runtime.resolve_precision` (``asit predict --precision``).
        forward: replaces :func:`classify_batch` (same signature) for the forward passes; ``asit serve``'s
            micro-batching queue uses it to merge concurrent requests. Default: :func:`classify_batch`.

    Returns:
        a :class:`Prediction`.

    Raises:
        AudioError: unreadable, empty or too long audio (naming the source), or shorter than one frame (25 ms).
    """
    model = load_model(model) if not isinstance(model, AsitForAudioClassification) else model
    precision = resolve_precision(precision, model.device).precision
    samples, source = _as_samples(audio, sr, max_seconds)
    if samples.size < model.config.receptive_field:
        raise AudioError(source, f"too short: {samples.size / SAMPLE_RATE * 1000:.0f} ms; need at least 25 ms")
    window = int(round(model.config.clip_seconds * SAMPLE_RATE))
    hop = int(round((hop_s if hop_s else model.config.clip_seconds / 2) * SAMPLE_RATE))
    starts = window_starts(samples.size, window, max(1, hop))
    pieces = [samples[s : s + window] for s in starts]  # equal lengths: no padding reaches the backbone

    extractor = model.feature_extractor()
    device = model.device
    probs, weights = [], []
    for i in range(0, len(pieces), batch_size):
        batch = extractor(pieces[i : i + batch_size], sampling_rate=SAMPLE_RATE, return_tensors="pt")
        out = (forward or classify_batch)(  # the server passes its micro-batching queue here
            model,
            batch["input_values"].to(device),
            attention_mask=batch["attention_mask"].to(device),
            precision=precision,
        )
        probs.append(torch.softmax(out.logits.float(), dim=-1).cpu().numpy())
        weights.append(out.pooling_weights.float().cpu().numpy())
    window_probs = np.concatenate(probs)
    window_weights = np.concatenate(weights)

    id2label = {int(k): v for k, v in model.config.id2label.items()}
    clip_probs = window_probs.mean(axis=0)
    ranked = _top_k(clip_probs, id2label, top_k)
    stitched, times = _stitch_weights(window_weights, starts, samples.size, model)
    windows = []
    for start, p in zip(starts, window_probs):
        w_top = _top_k(p, id2label, top_k)
        windows.append(
            WindowPrediction(
                start_s=start / SAMPLE_RATE,
                end_s=min(start + window, samples.size) / SAMPLE_RATE,
                label=w_top[0][0],
                score=w_top[0][1],
                top_k=w_top,
            )
        )
    return Prediction(
        label=ranked[0][0],
        score=ranked[0][1],
        top_k=ranked,
        probabilities=clip_probs,
        weights=stitched,
        frame_times_s=times,
        duration_s=samples.size / SAMPLE_RATE,
        windows=windows,
        source=source,
        precision=precision if model.dtype == torch.float32 else _DTYPE_NAMES.get(model.dtype, str(model.dtype)),
    )
