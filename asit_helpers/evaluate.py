"""Evaluation: accuracy, macro-F1, per-class scores, confusion matrix, misclassified clips, accuracy by SNR, and
attention localisation (how much pooling weight falls inside each clip's true event window).

    report = evaluate("checkpoints/demo", cache, split="test")
    report.accuracy, report.macro_f1, report.per_class, report.confusion, report.misclassified
    report.localisation                                      # on data with true event times (synthetic)
    report.localisation_table()                              # attention vs energy vs loudest frame vs uniform
    report.to_dict()                                         # what `asit evaluate ... --json` prints

Predictions come from the model's forward pass over the cache in batches, with the model's own feature extractor
(per-clip normalisation, sample mask), through the same :func:`~asit_helpers.inference.classify_batch` at the same
precision as ``predict`` (``precision="auto"``: what ``predict`` and ``asit serve`` pick on this device; the report
records it), so each clip gets ``predict``'s single-window answer. For encoders that take no attention mask
(group-norm wav2vec2-base, HuBERT/WavLM defaults) zero padding would change a short clip's outputs, so there a
batch holds clips of one length only and nothing is padded.

*Attention localisation.* For a clip with a known event ``[onset, offset]``, the score is the share of the
pooling weight (averaged over heads) on frames whose centre lies inside the event. ``localisation`` scores three
baselines the same way on the same frames: weights proportional to each frame's energy, all weight on the loudest
frame, and uniform weights (the chance share: about event duration / clip duration). Where events are the loud
part of a clip, the energy detectors score high as well; clips with loud distractors (``asit synth
--distractors``) are where attention must beat them, and ``localisation_on_distractors`` says how much weight
each weighting puts on the distractors.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Sequence

import numpy as np
import pandas as pd
import torch
from sklearn.metrics import accuracy_score, confusion_matrix, f1_score, precision_recall_fscore_support

from .batches import ClipDataset, EmbeddingStore, WaveformCollator, check_min_length, equal_length_batches
from .cache import AudioCache
from .inference import classify_batch
from .model import AsitForAudioClassification, load_model
from .runtime import resolve_device, resolve_precision
from .synth import parse_spans


def classification_metrics(y_true: Sequence[int], y_pred: Sequence[int], labels: Sequence[str]) -> dict[str, Any]:
    """Accuracy, macro-F1, per-class precision/recall/F1/support and the confusion matrix (scikit-learn).

    Classes absent from ``y_true`` still get a row (support 0) so every report has the same shape; macro-F1
    averages only the classes present in ``y_true`` or ``y_pred``, as scikit-learn does with ``labels`` unset.
    """
    y_true = np.asarray(y_true, dtype=np.int64)
    y_pred = np.asarray(y_pred, dtype=np.int64)
    ids = np.arange(len(labels))
    if len(y_true) == 0:
        raise ValueError("no clips to evaluate")
    precision, recall, f1, support = precision_recall_fscore_support(
        y_true, y_pred, labels=ids, zero_division=0
    )
    present = np.union1d(np.unique(y_true), np.unique(y_pred))
    return {
        "accuracy": float(accuracy_score(y_true, y_pred)),
        "macro_f1": float(f1_score(y_true, y_pred, labels=present, average="macro", zero_division=0)),
        "per_class": {
            str(name): {
                "precision": float(precision[i]),
                "recall": float(recall[i]),
                "f1": float(f1[i]),
                "support": int(support[i]),
            }
            for i, name in enumerate(labels)
        },
        "confusion": confusion_matrix(y_true, y_pred, labels=ids),
    }


def event_weight_share(
    weights: np.ndarray, frame_mask: np.ndarray, frame_times: np.ndarray, onset: float, offset: float
) -> tuple[float, float]:
    """Share of pooling weight inside ``[onset, offset]`` and the chance share, for one clip.

    Args:
        weights: `(heads, frames)` pooling weights (each head sums to 1 over real frames).
        frame_mask: `(frames,)` bool, real frames.
        frame_times: `(frames,)` frame centres in seconds.

    Returns:
        ``(share, chance)``; both NaN when the event times are unknown or the clip has no real frame.
    """
    if not (np.isfinite(onset) and np.isfinite(offset)) or not frame_mask.any():
        return float("nan"), float("nan")
    inside = (frame_times >= onset) & (frame_times <= offset)
    w = weights.astype(np.float64).mean(axis=0)
    share = float(w[inside & frame_mask].sum() / max(w[frame_mask].sum(), 1e-12))
    chance = float((inside & frame_mask).sum() / frame_mask.sum())
    return share, chance


#: The weightings ``localisation`` scores on the same clips: the model's pooling weights, weights proportional to
#: each frame's energy, all weight on the loudest frame, and equal weights (the chance level).
LOCALISERS = ("attention", "energy", "loudest_frame", "uniform")


def frame_energy(audio: np.ndarray, n_frames: int, stride: int, field: int) -> np.ndarray:
    """Mean square of the samples each frame sees (frame ``t``: samples ``[t·stride, t·stride + field)``)."""
    power = np.concatenate([[0.0], np.cumsum(np.asarray(audio, dtype=np.float64) ** 2)])
    starts = np.arange(n_frames) * stride
    ends = np.minimum(starts + field, len(audio))
    return (power[ends] - power[np.minimum(starts, ends)]) / np.maximum(ends - starts, 1)


def baseline_weights(energy: np.ndarray, frame_mask: np.ndarray) -> dict[str, np.ndarray]:
    """The energy detectors and the uniform weighting, `(1, frames)` each, over a clip's real frames."""
    real = frame_mask.astype(np.float64)
    e = energy * real
    loudest = np.zeros_like(real)
    loudest[int(np.argmax(np.where(frame_mask, energy, -np.inf)))] = 1.0
    return {
        "energy": (e / max(e.sum(), 1e-20))[None, :],
        "loudest_frame": loudest[None, :],
        "uniform": (real / max(real.sum(), 1.0))[None, :],
    }


def span_weight_share(weights: np.ndarray, frame_mask: np.ndarray, frame_times: np.ndarray, spans) -> float:
    """Share of pooling weight on frames whose centre lies in any of ``spans`` ``[(onset, offset), ...]``."""
    if not spans or not frame_mask.any():
        return float("nan")
    inside = np.zeros(len(frame_times), dtype=bool)
    for onset, offset in spans:
        inside |= (frame_times >= onset) & (frame_times <= offset)
    w = weights.astype(np.float64).mean(axis=0)
    return float(w[inside & frame_mask].sum() / max(w[frame_mask].sum(), 1e-12))


def localisation_table(cache, indices, out: dict, config, onset, offset, distractors) -> pd.DataFrame:
    """Per clip: the in-event share (``loc_<name>``) and, with distractors, the on-distractor share
    (``distractor_<name>``) of each of :data:`LOCALISERS`, all on the same frames of the same clips."""
    rows = []
    for i, idx in enumerate(indices):
        mask, times = out["frame_mask"][i], out["frame_times"]
        length = int(cache.lengths[int(idx)])
        energy = frame_energy(np.asarray(cache.audio(int(idx)))[:length], len(mask), config.frame_stride,
                              config.receptive_field)
        weightings = {"attention": out["weights"][i], **baseline_weights(energy, mask)}
        row = {}
        for name, w in weightings.items():
            row[f"loc_{name}"] = event_weight_share(w, mask, times, onset[i], offset[i])[0]
            if distractors is not None:
                row[f"distractor_{name}"] = span_weight_share(w, mask, times, distractors[i])
        rows.append(row)
    return pd.DataFrame(rows)


def _localisation_summary(clips: pd.DataFrame, prefix: str) -> dict[str, Any] | None:
    """``{"attention", "energy", "loudest_frame", "uniform", "n", "per_class": {label: {...}}}`` over the clips that
    have a score (None without any)."""
    cols = [f"{prefix}{name}" for name in LOCALISERS]
    if cols[0] not in clips:
        return None
    known = clips[clips[cols[0]].notna()]
    if known.empty:
        return None
    overall = {name: float(known[col].mean()) for name, col in zip(LOCALISERS, cols)}
    per_class = known.groupby("label")[cols].mean()
    per_class.columns = list(LOCALISERS)
    return {**overall, "n": int(len(known)), "per_class": per_class.to_dict(orient="index")}


@dataclass
class EvalReport:
    """What :func:`evaluate` measured on one split.

    Attributes:
        labels: class names in label-id order.
        accuracy, macro_f1: over the split's clips.
        per_class: DataFrame indexed by label: precision, recall, f1, support, and (with event times)
            attention_in_event, attention_chance.
        confusion: `(classes, classes)` counts, rows = true class, columns = predicted.
        clips: one row per clip: manifest columns plus ``predicted``, ``score`` (its probability), ``correct``,
            ``attention_in_event`` and ``attention_chance`` (NaN without event times).
        attention_in_event, attention_chance: means over clips with event times (None without any); the same
            figures as ``localisation["attention"]`` and ``localisation["uniform"]``.
        localisation: ``{"attention", "energy", "loudest_frame", "uniform", "n", "per_class": {label: {...}}}``:
            the share of weight inside the true event window for the model's pooling weights and, on the same
            clips and frames, for weights proportional to frame energy, for all weight on the loudest frame and for
            uniform weights (chance). On data whose events are the loud part of each clip the energy detectors
            score high too: attention has to beat them where loud non-target sounds exist (``--distractors``).
        localisation_on_distractors: the same four, as the share of weight on the distractor sounds (lower is
            better); None without distractor times.
        by_snr: accuracy (and attention share) per SNR level, when the manifest has ``snr_db``.
        weights: `(clips, heads, frames)` pooling weights; frame_times: `(frames,)` seconds.
        precision, precision_reason: what the backbone ran in (as ``predict`` would here) and why.
    """

    split: str
    labels: list[str]
    accuracy: float
    macro_f1: float
    per_class: pd.DataFrame
    confusion: np.ndarray
    clips: pd.DataFrame
    attention_in_event: float | None = None
    attention_chance: float | None = None
    by_snr: pd.DataFrame | None = None
    weights: np.ndarray | None = field(default=None, repr=False)
    frame_times: np.ndarray | None = field(default=None, repr=False)
    pooling: str = ""
    precision: str = "fp32"
    precision_reason: str = ""
    faithfulness: Any = field(default=None, repr=False)  # explain.FaithfulnessReport, with faithfulness=True
    localisation: dict | None = None
    localisation_on_distractors: dict | None = None

    def localisation_table(self, on_distractors: bool = False) -> pd.DataFrame | None:
        """Rows ``"all"`` then each class; columns :data:`LOCALISERS` (share of weight in the event window, or on
        the distractors), plus ``n`` clips. None without event times."""
        loc = self.localisation_on_distractors if on_distractors else self.localisation
        if loc is None:
            return None
        rows = {"all": {**{k: loc[k] for k in LOCALISERS}, "n": loc["n"]}}
        counts = self.clips.groupby("label").size()
        rows.update({label: {**v, "n": int(counts.get(label, 0))} for label, v in loc["per_class"].items()})
        return pd.DataFrame.from_dict(rows, orient="index")

    @property
    def misclassified(self) -> pd.DataFrame:
        """The clips the model got wrong, most confident mistakes first."""
        wrong = self.clips[~self.clips["correct"]]
        return wrong.sort_values("score", ascending=False)

    @property
    def low_snr_accuracy(self) -> float | None:
        """Accuracy at the lowest SNR level in :attr:`by_snr` (None without SNRs)."""
        if self.by_snr is None or self.by_snr.empty:
            return None
        return float(self.by_snr.iloc[0]["accuracy"])

    def to_dict(self) -> dict[str, Any]:
        """JSON-ready summary (what ``asit evaluate --json`` prints)."""

        def clean(v):
            if isinstance(v, (float, np.floating)):
                return None if not np.isfinite(v) else round(float(v), 6)
            if isinstance(v, (np.integer,)):
                return int(v)
            return v

        miss_cols = [c for c in ("index", "path", "label", "predicted", "score", "snr_db") if c in self.clips]
        out: dict[str, Any] = {
            "split": self.split,
            "pooling": self.pooling,
            "precision": self.precision,
            "precision_reason": self.precision_reason,
            "n": int(len(self.clips)),
            "accuracy": clean(self.accuracy),
            "macro_f1": clean(self.macro_f1),
            "labels": list(self.labels),
            "per_class": {
                str(name): {k: clean(v) for k, v in row.items()} for name, row in self.per_class.iterrows()
            },
            "confusion": self.confusion.astype(int).tolist(),
            "misclassified": [
                {k: clean(v) for k, v in row.items()} for row in self.misclassified[miss_cols].to_dict("records")
            ],
        }
        if self.attention_in_event is not None:
            out["attention_in_event"] = clean(self.attention_in_event)
            out["attention_chance"] = clean(self.attention_chance)

        def clean_loc(loc):
            return {**{k: clean(loc[k]) for k in LOCALISERS}, "n": loc["n"],
                    "per_class": {c: {k: clean(v) for k, v in d.items()} for c, d in loc["per_class"].items()}}

        if self.localisation is not None:
            out["localisation"] = clean_loc(self.localisation)
        if self.localisation_on_distractors is not None:
            out["localisation_on_distractors"] = clean_loc(self.localisation_on_distractors)
        if self.by_snr is not None:
            out["accuracy_by_snr"] = [{k: clean(v) for k, v in r.items()} for r in self.by_snr.to_dict("records")]
            out["low_snr_accuracy"] = clean(self.low_snr_accuracy)
        if self.faithfulness is not None:
            details = self.faithfulness.to_dict()
            out["faithfulness"] = details.pop("summary")  # {saliency: {deletion_auc, insertion_auc}}
            out["faithfulness_details"] = details  # per class, mean curves, clips tested, replacement
        return out


def _snr_levels(snr: pd.Series) -> tuple[np.ndarray, list[tuple[Any, float, float]]]:
    """Group SNRs: exact values when there are a few levels (synthetic data), else quartiles.

    Returns each clip's level number (0 = the quietest) and per level ``(name, low dB, high dB)``: the value
    itself for exact levels, else ``"3.1 to 8.0"`` (the quartile's range, rounded to 0.1 dB, or 0.01 dB where that
    is needed to tell two edges apart)."""
    values = snr.to_numpy(dtype=float)
    if snr.nunique() <= 8:
        levels = np.unique(values)
        return np.searchsorted(levels, values), [(round(float(v), 2), round(float(v), 2), round(float(v), 2))
                                                 for v in levels]
    codes, edges = pd.qcut(snr, 4, labels=False, retbins=True, duplicates="drop")
    edges[0], edges[-1] = values.min(), values.max()  # qcut widens the lowest edge by 0.1 % of the range
    digits = 1 if len(np.unique(np.round(edges, 1))) == len(edges) else 2
    rounded = [round(float(e), digits) for e in edges]
    names = [(f"{lo:.{digits}f} to {hi:.{digits}f}", lo, hi) for lo, hi in zip(rounded[:-1], rounded[1:])]
    return np.asarray(codes, dtype=np.int64), names


@torch.inference_mode()
def forward_cache(
    model: AsitForAudioClassification,
    cache,
    indices: Sequence[int],
    batch_size: int = 16,
    embeddings: EmbeddingStore | None = None,
    progress: bool = False,
    precision: str = "fp32",
) -> dict[str, np.ndarray]:
    """The model's outputs on ``cache`` clips ``indices``, in batches, on the model's device.

    With ``embeddings`` (a store built from this model's backbone) only pooling + head run. ``precision`` (resolved:
    ``"fp32"``, ``"bf16"``, ``"fp16"``) is the backbone's, as in :func:`~asit_helpers.inference.classify_batch`.

    For encoders that take no attention mask (group-norm wav2vec2-base, HuBERT/WavLM defaults) a batch only
    holds clips of one length, so no clip is zero-padded and every clip's logits are :func:`predict`'s for it.

    Returns:
        ``{"logits": (n, C), "weights": (n, H, T), "frame_mask": (n, T)}`` as float32 / bool numpy arrays,
        padded to the longest clip's frame count; ``"frame_times": (T,)``.
    """
    from tqdm.auto import tqdm

    model.eval()
    device = model.device
    indices = np.asarray(indices, dtype=np.int64)
    lengths = np.asarray(cache.lengths, dtype=np.int64)[indices]
    if embeddings is not None or model.config.backbone_masks_input:
        batches = [np.arange(i, min(len(indices), i + batch_size)) for i in range(0, len(indices), batch_size)]
    else:  # no mask reaches this encoder, so padding would change its outputs: one length per batch (issue 17)
        batches = equal_length_batches(lengths, batch_size)
    if embeddings is None:
        dataset = ClipDataset(cache, indices)
        collate = WaveformCollator(model.feature_extractor())
    results = []
    for rows in tqdm(batches, desc="evaluating", disable=not progress, unit="batch"):
        if embeddings is None:
            batch = collate([dataset[int(i)] for i in rows])
            out = classify_batch(model, batch["input_values"].to(device),
                                 attention_mask=batch["attention_mask"].to(device), precision=precision)
        else:
            chunk = indices[rows]
            hidden = torch.from_numpy(np.asarray(embeddings.hidden[chunk], dtype=np.float32)).to(device)
            mask = torch.from_numpy(np.asarray(embeddings.frame_mask[chunk], dtype=bool)).to(device)
            if getattr(embeddings, "layer", None) is not None:  # a partial-mode store: the top layers run first
                hidden = model.encode_upper(hidden.to(model.dtype), mask, embeddings.layer)
            out = model.classify_hidden(hidden.to(model.dtype), mask)
        results.append((rows, out.logits.float().cpu().numpy(), out.pooling_weights.float().cpu().numpy(),
                        out.frame_mask.cpu().numpy()))
    frames = max(w.shape[-1] for _, _, w, _ in results)
    n, heads = len(indices), results[0][2].shape[1]
    logits = np.zeros((n, results[0][1].shape[1]), dtype=np.float32)
    weights = np.zeros((n, heads, frames), dtype=np.float32)
    masks = np.zeros((n, frames), dtype=bool)
    for rows, lg, w, m in results:  # back in the order of ``indices``, padded to the longest clip's frames
        logits[rows] = lg
        weights[rows, :, : w.shape[-1]] = w
        masks[rows, : m.shape[-1]] = m
    return {"logits": logits, "weights": weights, "frame_mask": masks, "frame_times": model.frame_times(frames).numpy()}


def evaluate(
    model_or_dir: AsitForAudioClassification | str | Path,
    cache,
    split: str | None = "test",
    batch_size: int = 16,
    device: str | torch.device | None = None,
    embeddings: EmbeddingStore | None = None,
    progress: bool = True,
    precision: str = "auto",
    faithfulness: bool = False,
) -> EvalReport:
    """Evaluate a model on one split of a cache.

    Args:
        model_or_dir: a model or a checkpoint directory.
        cache: an ``AudioCache`` (or the path of one).
        split: ``"train"``, ``"val"``, ``"test"``, or ``None`` for every clip.
        batch_size: clips per forward pass.
        device: where to run (default: CUDA when available, else CPU).
        embeddings: cached backbone outputs for this model (skips the backbone).
        precision: the backbone's precision, resolved as ``predict`` resolves it (``"auto"``, ``"fp32"``,
            ``"bf16"``, ``"fp16"``; see :func:`asit_helpers.runtime.resolve_precision`).
        faithfulness: also run the deletion/insertion tests of :mod:`asit_helpers.explain` on the split
            (``report.faithfulness``; ``report.faithfulness.plot()`` draws the curves). Costs ~22 forward passes
            per clip and saliency.

    Returns:
        an :class:`EvalReport`.
    """
    if isinstance(cache, (str, Path)):
        cache = AudioCache.open(cache)
    model = load_model(model_or_dir, device=resolve_device(device))
    choice = resolve_precision(precision, model.device)
    labels = _check_labels(model, cache)
    indices = _split_indices(cache, split)
    check_min_length(cache, indices, model)
    out = forward_cache(model, cache, indices, batch_size, embeddings, progress, precision=choice.precision)
    probs = torch.softmax(torch.from_numpy(out["logits"]), dim=-1).numpy()
    y_true = cache.label_ids()[indices]
    metrics = classification_metrics(y_true, probs.argmax(axis=1), labels)
    clips = _clips_table(cache, indices, probs, y_true, labels)
    _add_localisation(clips, cache, indices, out, model.config)
    per_class, attn, chance = _per_class_table(metrics, clips)
    faith = None
    if faithfulness:
        faith = _faithfulness(model, cache, indices, batch_size, progress)
    return EvalReport(
        split=str(split),
        labels=labels,
        accuracy=metrics["accuracy"],
        macro_f1=metrics["macro_f1"],
        per_class=per_class,
        confusion=metrics["confusion"],
        clips=clips,
        attention_in_event=attn,
        attention_chance=chance,
        by_snr=accuracy_by_snr(clips),
        weights=out["weights"],
        frame_times=out["frame_times"],
        pooling=model.config.pooling,
        precision=choice.precision if embeddings is None else "fp32",
        precision_reason=choice.reason if embeddings is None else "cached embeddings: pooling and head in fp32",
        faithfulness=faith,
        localisation=_localisation_summary(clips, "loc_"),
        localisation_on_distractors=_localisation_summary(clips, "distractor_"),
    )


# -- evaluate's steps -----------------------------------------------------------------------------------------------


def _check_labels(model: AsitForAudioClassification, cache) -> list[str]:
    """The model's class names in label-id order; they must be the cache's."""
    labels = [model.config.id2label[i] for i in range(model.config.num_labels)]
    if list(cache.labels) != labels:
        raise ValueError(
            f"the model's labels {labels} differ from the cache's {list(cache.labels)}: "
            "evaluate a model trained on this cache's classes"
        )
    return labels


def _split_indices(cache, split: str | None) -> np.ndarray:
    indices = np.arange(len(cache)) if split is None else np.asarray(cache.indices(split), dtype=np.int64)
    if len(indices) == 0:
        raise ValueError(f"the cache has no clips in split {split!r}")
    return indices


def _clips_table(cache, indices: np.ndarray, probs: np.ndarray, y_true: np.ndarray, labels: list[str]) -> pd.DataFrame:
    """One row per clip: the manifest's columns, then ``index``, ``predicted``, ``score`` (its probability),
    ``true_score`` and ``correct``."""
    y_pred = probs.argmax(axis=1)
    rows = np.arange(len(indices))
    clips = cache.manifest.iloc[indices].copy().reset_index(drop=True)
    clips.insert(0, "index", indices)
    clips["predicted"] = [labels[i] for i in y_pred]
    clips["score"] = probs[rows, y_pred]
    clips["true_score"] = probs[rows, y_true]
    clips["correct"] = y_pred == y_true
    return clips


def _add_localisation(clips: pd.DataFrame, cache, indices: np.ndarray, out: dict, config) -> None:
    """Adds each localiser's in-event share (``loc_<name>``), on-distractor share (``distractor_<name>``) and the
    old names ``attention_in_event`` / ``attention_chance`` to ``clips`` (NaN without event times)."""

    def column(name: str) -> np.ndarray:
        return clips[name].to_numpy(dtype=float) if name in clips else np.full(len(clips), np.nan)

    onset, offset = column("event_onset_s"), column("event_offset_s")
    distractors = [parse_spans(v) for v in clips["distractors"]] if "distractors" in clips else None
    if distractors is not None and not any(distractors):
        distractors = None
    if np.isfinite(onset).any() or distractors is not None:
        loc = localisation_table(cache, indices, out, config, onset, offset, distractors)
        for col in loc.columns:
            clips[col] = loc[col].to_numpy()
    else:
        clips["loc_attention"] = clips["loc_uniform"] = np.nan
    clips["attention_in_event"] = clips["loc_attention"]
    clips["attention_chance"] = clips["loc_uniform"]


def _per_class_table(metrics: dict, clips: pd.DataFrame) -> tuple[pd.DataFrame, float | None, float | None]:
    """Per-class precision/recall/F1/support (plus attention in event and chance, with event times), and the
    attention and chance shares over all clips that have event times (None without any)."""
    per_class = pd.DataFrame.from_dict(metrics["per_class"], orient="index")
    has_events = clips["attention_in_event"].notna()
    if not has_events.any():
        return per_class, None, None
    attn = float(clips.loc[has_events, "attention_in_event"].mean())
    chance = float(clips.loc[has_events, "attention_chance"].mean())
    grouped = clips[has_events].groupby("label")[["attention_in_event", "attention_chance"]].mean()
    return per_class.join(grouped), attn, chance


def accuracy_by_snr(clips: pd.DataFrame) -> pd.DataFrame | None:
    """Accuracy (and attention in event) per SNR level, lowest first; None without ``snr_db``.

    Columns: ``snr_db`` (the level: the value itself when the data has a few exact levels, else a readable
    quartile such as ``"3.1 to 8.0"``), ``snr_db_low`` / ``snr_db_high`` (its range in dB), ``n``, ``accuracy``
    and, with event times, ``attention_in_event``.
    """
    if "snr_db" not in clips or not clips["snr_db"].notna().any():
        return None
    known = clips[clips["snr_db"].notna()].copy()
    known["snr_level"], names = _snr_levels(known["snr_db"].astype(float))
    agg = {"n": ("correct", "size"), "accuracy": ("correct", "mean")}
    if known["attention_in_event"].notna().any():
        agg["attention_in_event"] = ("attention_in_event", "mean")
    table = known.groupby("snr_level", sort=True).agg(**agg).reset_index()
    levels = table.pop("snr_level")
    table.insert(0, "snr_db", [names[i][0] for i in levels])
    table.insert(1, "snr_db_low", [names[i][1] for i in levels])
    table.insert(2, "snr_db_high", [names[i][2] for i in levels])
    return table


def _faithfulness(model, cache, indices, batch_size: int, progress: bool):
    from tqdm.auto import tqdm

    from .explain import faithfulness_on_cache

    return faithfulness_on_cache(model, cache, indices, batch_size=batch_size,
                                 progress=lambda names: tqdm(names, desc="faithfulness", disable=not progress))


def compare_reports(reports: dict[str, EvalReport]) -> pd.DataFrame:
    """Side-by-side summary of several evaluations (e.g. ``{"attention": r1, "mean": r2}``): accuracy,
    macro-F1, accuracy at the lowest SNR, attention inside the event window and its chance share."""
    rows = []
    for name, r in reports.items():
        rows.append(
            {
                "model": name,
                "pooling": r.pooling,
                "accuracy": r.accuracy,
                "macro_f1": r.macro_f1,
                "low_snr_accuracy": r.low_snr_accuracy,
                "attention_in_event": r.attention_in_event,
                "attention_chance": r.attention_chance,
            }
        )
    return pd.DataFrame(rows).set_index("model")
