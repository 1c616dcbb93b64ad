"""The one door from samples to a :class:`Prediction`: :func:`predict`.

The CLI (``asit predict``), the notebooks, the recorder widget and the Flask server all call :func:`predict`, so a
clip gets the same answer, the same top-k and the same attention curve wherever it is classified.

Audio longer than the model's window (``config.clip_seconds``, 5 s) is cut into equal, half-overlapping windows
(the last aligned to the end, so no window is padded) and each window is classified. :func:`aggregate_windows`
then forms the recording's answer from its evidence: each window's share of the recording's attention mass (its
unnormalised attention scores) says how much evidence it holds, the answer is the window holding the most (so the
many windows without the event cannot outvote the one with it), and the attention curve is one softmax over all the
recording's frames, each frame placed to the sample.

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

from .activity import SILENCE_DB, Activity, judge_clip
from .audio import SAMPLE_RATE, AudioError, AudioSource, load_audio, resample, to_mono, too_short_reason, window_starts
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
    evidence: float = 1.0  # the window's weight in the clip's answer (see aggregate_windows)
    attention_share: float = 1.0  # its share of the recording's attention mass: how much evidence it holds


@dataclass
class Prediction:
    """What the model says about one clip.

    Attributes:
        label, score: the top class and its probability (for long audio: aggregated over windows, see
            ``aggregation``).
        top_k: ``[(label, probability), ...]``, best first.
        probabilities: `(num_labels,)` every class's probability, in label-id order.
        weights: `(heads, frames)` pooling weights over the whole clip; each head sums to 1 (for long audio the
            stitched curve of :func:`aggregate_windows`).
        frame_times_s: `(frames,)` centre of each frame in seconds.
        duration_s: length of the audio.
        windows: one :class:`WindowPrediction` per window (a single entry for a clip within one window).
        source: the file name, or ``"<array>"``.
        precision: what the backbone ran in: ``"fp32"``, ``"bf16"`` or ``"fp16"``.
        aggregation: how the windows became one answer (a key of :data:`AGGREGATIONS`).
        no_event: True when the clip is silent, or (given ``predict(noise_floor_db=...)``) nothing in it stands out
            from that floor; a taught model's background answer too. Then ``label`` is the model's guess, not an
            event (:func:`asit_helpers.activity.judge_clip`). A clip that is one steady sound is not "no event".
        no_event_reason: why there is no event (None when there is one).
        level_db: how far the clip's loudest 250 ms stands above the noise floor (the given one, else the clip's
            own median) (dB).
        steady: nothing in the clip stands out from its own level: one sound from start to end, or background
            only; the energy gate cannot tell which, so ``label`` is the model's answer alone.
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
    aggregation: str = "peak"
    no_event: bool = False
    no_event_reason: str | None = None
    level_db: float | None = None
    steady: bool = False

    def to_dict(self, include_weights: bool = True) -> dict[str, Any]:
        """JSON-ready: the shape the CLI's ``--json`` and the server's ``/predict`` return."""
        out: dict[str, Any] = {
            "source": self.source,
            "label": self.label,
            "score": round(float(self.score), 6),
            "top_k": [{"label": name, "score": round(float(p), 6)} for name, p in self.top_k],
            "duration_s": round(float(self.duration_s), 4),
            "precision": self.precision,
            "aggregation": self.aggregation,
            "aggregation_how": AGGREGATIONS.get(self.aggregation, ""),
            "no_event": bool(self.no_event),
            "no_event_reason": self.no_event_reason,
            "level_db": None if self.level_db is None else round(float(self.level_db), 2),
            "steady": bool(self.steady),
            "windows": [
                {
                    "start_s": round(w.start_s, 4),
                    "end_s": round(w.end_s, 4),
                    "label": w.label,
                    "score": round(float(w.score), 6),
                    "top_k": [{"label": n, "score": round(float(p), 6)} for n, p in w.top_k],
                    "evidence": round(float(w.evidence), 6),
                    "attention_share": round(float(w.attention_share), 6),
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


def _as_samples(
    audio: AudioSource | np.ndarray | torch.Tensor, sr: int, max_seconds: float | None, layout: str | None
) -> tuple[np.ndarray, str]:
    if isinstance(audio, torch.Tensor):
        audio = audio.detach().cpu().numpy()
    if isinstance(audio, np.ndarray):
        samples = to_mono(np.asarray(audio, dtype=np.float32), layout, "<array>")
        if samples.size == 0:
            raise AudioError("<array>", "contains no samples (zero length)")
        if not np.isfinite(samples).all():
            raise AudioError("<array>", "contains NaN or infinite sample values")
        if max_seconds is not None and samples.size / sr > max_seconds:
            raise AudioError("<array>", f"too long: {samples.size / sr:.1f} s exceeds the limit of {max_seconds:g} s")
        return resample(samples, sr, SAMPLE_RATE), "<array>"
    name = str(audio) if isinstance(audio, (str, Path)) else getattr(audio, "name", "<audio bytes>")
    return load_audio(audio, SAMPLE_RATE, max_seconds=max_seconds), str(name)


# -- from windows to one answer -------------------------------------------------------------------------------------

#: How :func:`aggregate_windows` can turn a recording's windows into one answer; ``predict`` uses the first.
#: ``bench/long_recordings.py`` measures them against each other on 40 s recordings (figures in bench/README.md):
#: on the offline model "peak" was right wherever any window holding the event was, "evidence" lost recordings
#: whose many event-free windows together outweighed the one or two with the event.
AGGREGATIONS = {
    "peak": "the probabilities of the window holding the most evidence: the largest share of the recording's "
    "attention mass (softmax over windows of the log-sum-exp of its unnormalised attention scores); windows "
    "without the event do not vote",
    "evidence": "the mean of the window probabilities, each window weighted by its share of the recording's "
    "attention mass (softmax over windows of the log-sum-exp of its unnormalised attention scores), as if "
    "the pooling attended over the whole recording; windows without the event get little weight",
    "mean": "the plain mean of the window probabilities (every window counts the same)",
    "max": "each class's highest probability in any window, renormalised",
    "top2": "the mean of the two most confident windows' probabilities",
}


@dataclass
class WindowAggregate:
    """A recording's answer from its windows (see :func:`aggregate_windows`).

    Attributes:
        probabilities: `(num_labels,)` the recording's class probabilities.
        evidence: `(windows,)` each window's weight in ``probabilities`` (sums to 1).
        attention_share: `(windows,)` each window's share of the recording's attention mass (sums to 1): how much
            evidence it holds, whatever ``method`` did with it.
        weights: `(heads, frames)` the stitched attention curve on the recording's frame grid (each head sums to 1).
        frame_times_s: `(frames,)` frame centres in seconds.
        method: the :data:`AGGREGATIONS` key used.
    """

    probabilities: np.ndarray
    evidence: np.ndarray
    attention_share: np.ndarray
    weights: np.ndarray
    frame_times_s: np.ndarray
    method: str


def _window_evidence(window_scores: np.ndarray) -> np.ndarray:
    """Each window's share of the recording's attention mass: softmax over windows of ``logsumexp_t score``
    (averaged over heads). Windows are equal length, so the frame count cancels out."""
    scores = window_scores.astype(np.float64)
    top = scores.max(axis=-1, keepdims=True)
    mass = (top[..., 0] + np.log(np.exp(scores - top).sum(axis=-1))).mean(axis=1)  # (windows,)
    share = np.exp(mass - mass.max())
    return share / share.sum()


def _stitch_scores(
    window_scores: np.ndarray, starts: Sequence[int], total_frames: int, stride: int
) -> np.ndarray:
    """Window scores `(windows, heads, frames)` → one `(heads, total_frames)` score per frame of the recording.

    A window starting at sample ``s`` has its frame ``j`` centred where the recording's frame ``j + s / stride``
    is (a fractional index when ``s`` is not a multiple of the stride): its scores are interpolated onto the
    recording's frames at those exact positions, and frames seen by several windows get the mean. The first and
    last windows extend to the recording's edges, so every frame gets a score and each counts once.
    """
    heads, per_window = window_scores.shape[1], window_scores.shape[2]
    grid = np.arange(total_frames, dtype=np.float64)
    acc = np.zeros((heads, total_frames), dtype=np.float64)
    cover = np.zeros(total_frames, dtype=np.float64)
    last = len(starts) - 1
    for i, (w, start) in enumerate(zip(window_scores, starts)):
        local = np.arange(per_window, dtype=np.float64) + start / stride
        lo = -np.inf if i == 0 else local[0] - 1e-9
        hi = np.inf if i == last else local[-1] + 1e-9
        inside = (grid >= lo) & (grid <= hi)
        for h in range(heads):  # np.interp holds the edge value beyond the window's first/last frame centre
            acc[h, inside] += np.interp(grid[inside], local, w[h].astype(np.float64))
        cover[inside] += 1
    return acc / np.maximum(cover, 1)[None, :]


def aggregate_windows(
    window_probs: np.ndarray,
    window_scores: np.ndarray,
    starts: Sequence[int],
    n_samples: int,
    model: AsitForAudioClassification,
    method: str = "peak",
    window_weights: np.ndarray | None = None,
) -> WindowAggregate:
    """One answer for a recording cut into equal windows: the one place ``predict`` (and any timeline or live
    view built on it) turns per-window outputs into the recording's probabilities and attention curve.

    The curve is a softmax over *all* the recording's frames of their stitched attention scores
    (:func:`_stitch_scores`): each window's frames are weighted by how much evidence that window holds, every
    frame is covered and counted once, and frames sit where their samples are. The probabilities follow
    ``method`` (:data:`AGGREGATIONS`).

    Args:
        window_probs: `(windows, num_labels)` softmax of each window's logits.
        window_scores: `(windows, heads, frames)` unnormalised attention scores (``pooling_scores``).
        starts: each window's first sample. n_samples: the recording's length.
        window_weights: `(windows, heads, frames)`; with a single window the curve is exactly these weights.
    """
    if method not in AGGREGATIONS:
        raise ValueError(f"aggregation must be one of {list(AGGREGATIONS)}, got {method!r}")
    total_frames = int(model.backbone._get_feat_extract_output_lengths(torch.tensor([n_samples])).item())
    times = model.frame_times(total_frames).numpy()
    attention_share = _window_evidence(window_scores)
    if len(starts) == 1 and window_weights is not None:
        curve = window_weights[0].astype(np.float64)
    else:
        stitched = _stitch_scores(window_scores, starts, total_frames, model.config.frame_stride)
        curve = np.exp(stitched - stitched.max(axis=1, keepdims=True))
        curve /= curve.sum(axis=1, keepdims=True)
    probs, share = _combine_windows(window_probs.astype(np.float64), attention_share, method)
    return WindowAggregate(probs, share, attention_share, curve.astype(np.float32), times, method)


def _combine_windows(window_probs: np.ndarray, attention_share: np.ndarray, method: str):
    """``(probabilities, each window's weight in them)`` by ``method`` (see :data:`AGGREGATIONS`)."""
    n = len(window_probs)
    if method == "max":  # a window's weight is how much of the winning class's peak it holds
        peak = window_probs.max(axis=0)
        probs = peak / peak.sum()
        top = window_probs[:, int(np.argmax(probs))]
        return probs, top / top.sum()
    if method == "peak":
        share = np.zeros(n)
        share[int(np.argmax(attention_share))] = 1.0
    elif method == "evidence":
        share = attention_share
    elif method == "top2":
        best = np.argsort(-window_probs.max(axis=1))[:2]
        share = np.zeros(n)
        share[best] = 1.0 / len(best)
    else:  # mean
        share = np.full(n, 1.0 / n)
    return (share[:, None] * window_probs).sum(axis=0), share


# -- precision: the fast path ---------------------------------------------------------------------------------------

_DTYPE_NAMES = {torch.float32: "fp32", torch.bfloat16: "bf16", torch.float16: "fp16"}


# model -> (fingerprint of its backbone weights, bf16 copy). Weak keys: the copy goes when the model goes.
_BF16_COPIES: "weakref.WeakKeyDictionary[AsitForAudioClassification, tuple[tuple, AsitForAudioClassification]]"
_BF16_COPIES = weakref.WeakKeyDictionary()
_BF16_LOCK = threading.Lock()  # the server classifies on several threads: build each copy once


def _weights_fingerprint(model: AsitForAudioClassification) -> tuple:
    """Changes when any backbone weight is replaced (new storage) or updated in place (version counter): a copy
    made before more training or a ``load_state_dict`` is never reused.

    Inference tensors have no version counter (transformers < 5 loads a checkpoint's weights as such when
    ``from_pretrained`` runs inside ``predict``'s inference mode); no training step can update them in place,
    so their storage alone identifies them."""
    return tuple((p.data_ptr(), None if p.is_inference() else p._version) for p in model.backbone.parameters())


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
    layout: str | None = None,
    aggregation: str = "peak",
    noise_floor_db: float | None = None,
) -> Prediction:
    """Classify one clip.

    Args:
        model: a loaded :class:`AsitForAudioClassification` or a checkpoint directory.
        audio: a path, bytes, a binary file object, or samples (`np.ndarray`/`torch.Tensor` at ``sr`` Hz: 1-D, or
            2-D with ``layout``).
        top_k: how many classes to rank.
        sr: sample rate of raw ``audio`` samples (files carry their own).
        hop_s: step between windows for long audio (default: half the window).
        batch_size: windows per forward pass.
        max_seconds: refuse longer audio with :class:`AudioError` (``None``: no limit).
        precision: ``"auto"``, ``"fp32"`` (the reference), ``"bf16"`` or ``"fp16"``: see
            :func:`asit_helpers.runtime.resolve_precision` (``asit predict --precision``).
        forward: replaces :func:`classify_batch` (same signature) for the forward passes; ``asit serve``'s
            micro-batching queue uses it to merge concurrent requests. Default: :func:`classify_batch`.
        layout: for a 2-D array, ``"channels_first"`` `(channels, samples)` or ``"channels_last"``
            `(samples, channels)`; its channels are averaged (see :func:`asit_helpers.audio.to_mono`).
        aggregation: how a multi-window recording's answer is formed (:data:`AGGREGATIONS`).
        noise_floor_db: the room's noise floor (dB, as :mod:`asit_helpers.activity` measures it) when known: the
            clip is "no event" unless it stands out from it. Default: only silence is "no event".

    Returns:
        a :class:`Prediction`.

    Raises:
        AudioError: unreadable, empty or too long audio (naming the source), a 2-D array without a layout, channels
            that cancel when averaged, or audio shorter than the backbone's minimum (``config.min_samples``).
    """
    model = load_model(model) if not isinstance(model, AsitForAudioClassification) else model
    precision = resolve_precision(precision, model.device).precision
    samples, source = _as_samples(audio, sr, max_seconds, layout)
    check_min_length(samples.size, model, source)
    window = int(round(model.config.clip_seconds * SAMPLE_RATE))
    hop = int(round((hop_s if hop_s else model.config.clip_seconds / 2) * SAMPLE_RATE))
    starts = window_starts(samples.size, window, max(1, hop))
    pieces = [samples[s : s + window] for s in starts]  # equal lengths: no padding reaches the backbone

    extractor = model.feature_extractor()
    device = model.device
    probs, weights, scores = [], [], []
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
        scores.append(out.pooling_scores.float().cpu().numpy())
    window_probs = np.concatenate(probs)
    agg = aggregate_windows(
        window_probs, np.concatenate(scores), starts, samples.size, model, aggregation, np.concatenate(weights)
    )

    id2label = {int(k): v for k, v in model.config.id2label.items()}
    ranked = _top_k(agg.probabilities, id2label, top_k)
    windows = []
    for start, p, share, mass in zip(starts, window_probs, agg.evidence, agg.attention_share):
        w_top = _top_k(p, id2label, top_k)
        windows.append(
            WindowPrediction(
                start_s=start / SAMPLE_RATE,
                end_s=min(start + window, samples.size) / SAMPLE_RATE,
                label=w_top[0][0],
                score=w_top[0][1],
                top_k=w_top,
                evidence=float(share),
                attention_share=float(mass),
            )
        )
    return Prediction(
        label=ranked[0][0],
        score=ranked[0][1],
        top_k=ranked,
        probabilities=agg.probabilities.astype(np.float32),
        weights=agg.weights,
        frame_times_s=agg.frame_times_s,
        duration_s=samples.size / SAMPLE_RATE,
        windows=windows,
        source=source,
        precision=precision if model.dtype == torch.float32 else _DTYPE_NAMES.get(model.dtype, str(model.dtype)),
        aggregation=aggregation,
        **no_event_fields(judge_clip(samples, noise_floor_db), ranked[0][0], model.config),
    )


def no_event_fields(activity: Activity, label: str, config: Any) -> dict[str, Any]:
    """``no_event``, ``no_event_reason``, ``level_db``: the energy gate's answer; for a taught model
    (``config.no_event_label``, see :mod:`asit_helpers.teach`) the model's own, except on silence.

    Why a taught model decides for itself: it learned its background from recordings of the room it will hear, and
    a sustained taught sound (a whistle held for the whole window) has no quieter part for the gate to measure
    against, so the gate would call it nothing."""
    taught = getattr(config, "no_event_label", None)
    common = {"level_db": activity.level_db, "steady": activity.steady}
    if taught is None or (activity.no_event and activity.peak_db < SILENCE_DB):
        return {"no_event": activity.no_event, "no_event_reason": activity.reason, **common}
    if label == taught:
        return {"no_event": True, "no_event_reason": f"the taught background answer ({taught!r})", **common}
    return {"no_event": False, "no_event_reason": None, **common}


def check_min_length(n_samples: int, model: AsitForAudioClassification, source: str = "<array>") -> None:
    """Refuse audio shorter than the backbone's conv stack can turn into one frame (``config.min_samples``)."""
    if n_samples < model.config.min_samples:
        raise AudioError(source, too_short_reason(n_samples, model.config.min_samples))
