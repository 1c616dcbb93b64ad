"""Does the model rely on what it attends to? Deletion and insertion tests of saliencies (faithfulness).

A saliency ranks a clip's frames (20 ms each) by how much they should matter. The **deletion** test removes the
top-ranked audio step by step (by default the top 10 %, 20 %, ... of the frames) and records the true class's
probability; a faithful saliency makes it fall early, so the area under the curve (AUC) is small. **Insertion**
is the reverse: start from a clip with everything removed and put the top-ranked frames back; a faithful saliency
makes the probability rise early (a large AUC). Saliencies compared:

- ``attention``: the pooling weights (summed over heads), and ``attention_head{h}`` for each head of a multi-head
  pooling: the model's own answer to "when was the evidence".
- ``random``: a random order (the baseline every saliency must beat).
- ``energy``: the frame's signal energy (is attention more than a loudness detector?).
- ``gradient_x_input``: the gradient of the true class's log-probability with respect to the model's input
  samples, times the input, summed over each frame's samples (a first-order estimate of each frame's effect).
- ``occlusion``: the drop of the true class's probability when one window of frames is removed, window by window
  (the expensive reference: it asks the model directly, one forward pass per window).

*Removed audio is replaced by background-matched noise*, not by silence: noise with the average spectrum and level
of the clip's quieter half of frames (mostly background on clips whose event is shorter than the clip), a fresh
random phase, one realisation per clip shared by every step and every saliency. Silence would be a signal the model
never saw in training (synthetic and real clips always have a floor of noise), and with per-clip normalisation a
half-silent clip has its remaining audio amplified, so the curve would measure the model's reaction to an odd
input rather than the loss of evidence. ``replacement="zeros"`` is there to compare.

Everything runs through the model's own feature extractor and forward pass (:func:`~asit_helpers.inference.
classify_batch`, the function :func:`~asit_helpers.inference.predict` calls for each window), in batches that mix
steps and clips, so a test split runs in minutes on a CPU.

    from asit_helpers.explain import faithfulness_on_cache
    report = faithfulness_on_cache(model, cache, cache.indices("test"))
    report.summary()   # {"attention": {"deletion_auc": ..., "insertion_auc": ...}, "random": {...}, ...}
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any, Callable, Iterable, Iterator, Sequence

import numpy as np
import torch

from .audio import SAMPLE_RATE
from .inference import classify_batch
from .model import AsitForAudioClassification

#: Saliencies :func:`faithfulness` compares by default (``attention`` adds one entry per head for multi-head pooling).
SALIENCIES = ("attention", "random", "energy", "gradient_x_input", "occlusion")
#: What removed audio is replaced with (see the module docstring for why ``background`` is the default).
REPLACEMENTS = ("background", "zeros")


# ---- the frame grid: which samples belong to which frame ------------------------------------------------------


def num_frames(model: AsitForAudioClassification, n_samples: int) -> int:
    """Frames the backbone makes of ``n_samples`` samples (0 when the clip is shorter than one frame's field)."""
    if n_samples < model.config.receptive_field:
        return 0
    lengths = model.backbone._get_feat_extract_output_lengths(torch.tensor([int(n_samples)]))
    return int(lengths.item())


def sample_frames(model: AsitForAudioClassification, n_samples: int, frames: int) -> np.ndarray:
    """`(n_samples,)` the frame each sample belongs to: the frame whose centre is nearest.

    Frame ``t`` is centred at ``t · stride + field / 2``, so the frames tile the clip into consecutive pieces of
    ``stride`` samples (the first and last pieces stretch to the clip's edges); removing a frame removes its piece.
    """
    cfg = model.config
    centre0 = cfg.receptive_field / 2
    idx = np.floor((np.arange(n_samples) - centre0 + cfg.frame_stride / 2) / cfg.frame_stride).astype(np.int64)
    return np.clip(idx, 0, max(frames - 1, 0))


def removal_counts(frames: int, fractions: np.ndarray) -> np.ndarray:
    """How many top-ranked frames are removed at each fraction: non-decreasing, 0 at 0, all frames at 1."""
    return np.round(np.asarray(fractions, dtype=np.float64) * frames).astype(np.int64)


def removal_masks(order: np.ndarray, frame_of_sample: np.ndarray, fractions: np.ndarray) -> np.ndarray:
    """`(steps, n_samples)` bool: the samples removed at each step when frames are removed in ``order``.

    Step ``k`` removes the first ``removal_counts(...)[k]`` frames of ``order``, so each step's removed set contains
    the previous one's: the removed audio grows monotonically with the fraction.
    """
    rank = np.empty(len(order), dtype=np.int64)
    rank[np.asarray(order, dtype=np.int64)] = np.arange(len(order))
    sample_rank = rank[frame_of_sample]  # (n,)
    return sample_rank[None, :] < removal_counts(len(order), fractions)[:, None]


def background_noise(samples: np.ndarray, frame_of_sample: np.ndarray, frames: int, rng: np.random.Generator) -> np.ndarray:
    """Noise with the average power spectrum and level of the clip's quieter half of frames, ``samples``' length.

    The spectrum is averaged over Hann-windowed pieces of one frame each; a clip with no sound at all gets zeros.
    """
    n = len(samples)
    energy = np.bincount(frame_of_sample, weights=samples.astype(np.float64) ** 2, minlength=frames)
    quiet = np.flatnonzero(energy <= np.median(energy))
    piece = int(np.bincount(frame_of_sample, minlength=frames).max())
    spectra, power = [], []
    for t in quiet:
        seg = samples[frame_of_sample == t].astype(np.float64)
        power.append(np.mean(seg**2))
        seg = np.pad(seg, (0, piece - len(seg)))
        spectra.append(np.abs(np.fft.rfft(seg * np.hanning(piece))) ** 2)
    level = float(np.mean(power)) if power else 0.0
    if level <= 0.0:
        return np.zeros(n, dtype=np.float32)
    psd = np.mean(spectra, axis=0)
    freqs = np.fft.rfftfreq(n)
    gain = np.sqrt(np.interp(freqs, np.fft.rfftfreq(piece), psd))
    noise = np.fft.irfft(np.fft.rfft(rng.standard_normal(n)) * gain, n)
    return (noise * np.sqrt(level / (np.mean(noise**2) + 1e-30))).astype(np.float32)


# ---- forward passes through the model (the same path as predict) --------------------------------------------


def _batches(items: Iterable, batch_size: int, length: Callable[[Any], int]) -> Iterator[list]:
    """Consecutive lists of up to ``batch_size`` items of equal ``length`` from any iterable, built lazily.

    A batch never mixes lengths, so no zero padding reaches the backbone (padding changes a group-norm encoder's
    outputs), as in ``predict``, where a clip's windows all have one length.
    """
    chunk: list = []
    for item in items:
        if chunk and (len(chunk) == batch_size or length(item) != length(chunk[0])):
            yield chunk
            chunk = []
        chunk.append(item)
    if chunk:
        yield chunk


@torch.inference_mode()
def class_probabilities(
    model: AsitForAudioClassification, jobs: Iterable[tuple[np.ndarray, int]], batch_size: int = 16
) -> np.ndarray:
    """`(n,)` probability of class ``target`` for each ``(waveform, target)``, through the model's feature
    extractor and :func:`~asit_helpers.inference.classify_batch` (``predict``'s forward pass), in batches.
    ``jobs`` may be a generator: only one batch of waveforms is held at a time."""
    extractor = model.feature_extractor()
    out = []
    for chunk in _batches(jobs, batch_size, lambda job: len(job[0])):
        batch = extractor([x for x, _ in chunk], sampling_rate=SAMPLE_RATE, return_tensors="pt")
        logits = classify_batch(model, batch["input_values"].to(model.device),
                                batch["attention_mask"].to(model.device), precision="fp32").logits
        probs = torch.softmax(logits.float(), dim=-1).cpu().numpy()
        out.append(probs[np.arange(len(chunk)), [int(y) for _, y in chunk]])
    return np.concatenate(out) if out else np.zeros(0, dtype=np.float32)


def _attention_and_gradients(
    model: AsitForAudioClassification, waveforms: Sequence[np.ndarray], targets: Sequence[int], batch_size: int
) -> tuple[list[np.ndarray], list[np.ndarray]]:
    """Per clip: pooling weights `(heads, frames)` and gradient × input per sample `(n,)` of log p(target)."""
    extractor = model.feature_extractor()
    weights, grad_x = [], []
    for chunk in _batches(range(len(waveforms)), batch_size, lambda i: len(waveforms[i])):
        batch = extractor([waveforms[i] for i in chunk], sampling_rate=SAMPLE_RATE, return_tensors="pt")
        inputs = batch["input_values"].to(model.device).requires_grad_(True)
        with torch.enable_grad():
            out = classify_batch(model, inputs, batch["attention_mask"].to(model.device), precision="fp32")
            log_probs = torch.log_softmax(out.logits.float(), dim=-1)
            chosen = log_probs[torch.arange(len(chunk)), torch.as_tensor([int(targets[i]) for i in chunk])]
            (grad,) = torch.autograd.grad(chosen.sum(), inputs)
        contribution = (grad * inputs).detach().float().cpu().numpy()
        for row, i in enumerate(chunk):
            n = len(waveforms[i])
            weights.append(out.pooling_weights[row].detach().float().cpu().numpy())
            grad_x.append(contribution[row, :n])
    return weights, grad_x


# ---- saliencies -------------------------------------------------------------------------------------------------


@dataclass
class _Clip:
    """One clip prepared for the tests: samples, target class, frame grid and replacement signal."""

    samples: np.ndarray
    target: int
    frames: int
    frame_of_sample: np.ndarray
    replacement: np.ndarray


def _prepare(model, waveforms, targets, replacement: str, seed: int) -> list[_Clip | None]:
    """Clips with at least one real frame, or None (the clip is reported, not tested)."""
    if replacement not in REPLACEMENTS:
        raise ValueError(f"replacement must be one of {REPLACEMENTS}, got {replacement!r}")
    clips: list[_Clip | None] = []
    for i, (x, y) in enumerate(zip(waveforms, targets)):
        x = np.asarray(x, dtype=np.float32).reshape(-1)
        frames = num_frames(model, len(x))
        if frames == 0:
            clips.append(None)
            continue
        fos = sample_frames(model, len(x), frames)
        rng = np.random.default_rng([seed, i])
        fill = background_noise(x, fos, frames, rng) if replacement == "background" else np.zeros_like(x)
        clips.append(_Clip(x, int(y), frames, fos, fill))
    return clips


def _per_frame(values: np.ndarray, clip: _Clip) -> np.ndarray:
    return np.bincount(clip.frame_of_sample, weights=values.astype(np.float64), minlength=clip.frames)


def _occlusion(model, clips: list[_Clip], window: int, batch_size: int) -> list[np.ndarray]:
    """Per clip `(frames,)`: drop of p(target) when the window of ``window`` frames holding the frame is removed."""
    owners = [(c, start) for c, clip in enumerate(clips) for start in range(-window, clip.frames, window)]

    def jobs():  # start < 0: the intact clip, the reference each window's drop is measured from
        for c, start in owners:
            clip = clips[c]
            gone = (clip.frame_of_sample >= start) & (clip.frame_of_sample < start + window) & (start >= 0)
            yield np.where(gone, clip.replacement, clip.samples), clip.target

    probs = class_probabilities(model, jobs(), batch_size)
    intact = {c: p for (c, start), p in zip(owners, probs) if start < 0}
    scores = [np.zeros(clip.frames) for clip in clips]
    for (c, start), p in zip(owners, probs):
        if start >= 0:
            scores[c][start : start + window] = intact[c] - p
    return scores


def compute_saliencies(
    model: AsitForAudioClassification,
    clips: list[_Clip],
    names: Sequence[str] = SALIENCIES,
    batch_size: int = 16,
    seed: int = 0,
    occlusion_frames: int = 10,
) -> dict[str, list[np.ndarray]]:
    """``{name: [per-clip (frames,) scores]}``; higher = more important. See the module docstring for each."""
    unknown = [n for n in names if n not in SALIENCIES]
    if unknown:
        raise ValueError(f"unknown saliencies {unknown}; choose from {SALIENCIES}")
    out: dict[str, list[np.ndarray]] = {}
    if "attention" in names or "gradient_x_input" in names:
        weights, grad_x = _attention_and_gradients(model, [c.samples for c in clips], [c.target for c in clips],
                                                   batch_size)
        if "attention" in names:
            out["attention"] = [w[:, : c.frames].sum(axis=0) for w, c in zip(weights, clips)]
            heads = weights[0].shape[0] if weights else 1
            for h in range(heads if heads > 1 else 0):
                out[f"attention_head{h}"] = [w[h, : c.frames] for w, c in zip(weights, clips)]
        if "gradient_x_input" in names:
            out["gradient_x_input"] = [_per_frame(g, c) for g, c in zip(grad_x, clips)]
    if "random" in names:
        rng = np.random.default_rng(seed)
        out["random"] = [rng.random(c.frames) for c in clips]
    if "energy" in names:
        out["energy"] = [_per_frame(c.samples.astype(np.float64) ** 2, c) for c in clips]
    if "occlusion" in names:
        out["occlusion"] = _occlusion(model, clips, max(1, int(occlusion_frames)), batch_size)
    return out


# ---- deletion and insertion curves ----------------------------------------------------------------------------


def ranking(scores: np.ndarray) -> np.ndarray:
    """Frames from the most to the least important (ties keep time order, so the ranking is deterministic)."""
    return np.argsort(-np.asarray(scores, dtype=np.float64), kind="stable")


def _curves(model, clips: list[_Clip], scores: list[np.ndarray], fractions: np.ndarray, batch_size: int,
            ) -> tuple[np.ndarray, np.ndarray]:
    """Deletion and insertion curves `(clips, steps)` of p(target) for one saliency."""

    def jobs():
        for clip, s in zip(clips, scores):
            masks = removal_masks(ranking(s), clip.frame_of_sample, fractions)
            for m in masks:  # deletion: the top frames are gone
                yield np.where(m, clip.replacement, clip.samples), clip.target
            for m in masks:  # insertion: only the top frames are back
                yield np.where(m, clip.samples, clip.replacement), clip.target

    probs = class_probabilities(model, jobs(), batch_size).reshape(len(clips), 2, len(fractions))
    return probs[:, 0], probs[:, 1]


def auc(curve: np.ndarray, fractions: np.ndarray) -> np.ndarray:
    """Area under curve(s) over the removed fraction in [0, 1] (trapezoids); the last axis is the steps."""
    return np.trapezoid(curve, fractions, axis=-1) if hasattr(np, "trapezoid") else np.trapz(curve, fractions, axis=-1)


@dataclass
class FaithfulnessReport:
    """Deletion and insertion curves of several saliencies over a set of clips.

    Attributes:
        fractions: `(steps,)` share of the clip's frames removed (deletion) or put back (insertion), 0 to 1.
        deletion, insertion: ``{saliency: (clips, steps)}`` probability of the true class; NaN rows for clips that
            were skipped.
        labels: true class name of each clip. classes: class names in label-id order.
        skipped: positions of clips with no real frame (shorter than one frame's receptive field): not testable.
        replacement: what removed audio was replaced with.
        original: `(clips,)` p(true class) on the intact clip.
    """

    fractions: np.ndarray
    deletion: dict[str, np.ndarray]
    insertion: dict[str, np.ndarray]
    labels: list[str]
    replacement: str
    skipped: list[int] = field(default_factory=list)
    original: np.ndarray | None = None

    @property
    def saliencies(self) -> list[str]:
        return list(self.deletion)

    def aucs(self, kind: str = "deletion") -> dict[str, np.ndarray]:
        """``{saliency: (clips,) AUC}`` of the deletion or insertion curves (NaN for skipped clips)."""
        curves = self.deletion if kind == "deletion" else self.insertion
        return {name: auc(c, self.fractions) for name, c in curves.items()}

    def _means(self, rows: np.ndarray) -> dict[str, dict[str, float | None]]:
        dele, ins = self.aucs("deletion"), self.aucs("insertion")

        def mean(a):
            a = a[rows]
            a = a[np.isfinite(a)]
            return round(float(a.mean()), 6) if a.size else None

        return {name: {"deletion_auc": mean(dele[name]), "insertion_auc": mean(ins[name])} for name in dele}

    def summary(self) -> dict[str, dict[str, float | None]]:
        """``{saliency: {"deletion_auc", "insertion_auc"}}`` averaged over the tested clips. Deletion: lower is
        more faithful; insertion: higher is."""
        return self._means(np.ones(len(self.labels), bool))

    def per_class(self) -> dict[str, dict[str, dict[str, float | None]]]:
        """:meth:`summary` for each true class."""
        labels = np.asarray(self.labels, dtype=object)
        return {name: self._means(labels == name) for name in dict.fromkeys(self.labels)}

    def table(self):
        """The summary as a DataFrame (one row per saliency, most faithful deletion first)."""
        import pandas as pd

        return pd.DataFrame(self.summary()).T.sort_values("deletion_auc")

    def mean_curves(self, kind: str = "deletion") -> dict[str, np.ndarray]:
        """``{saliency: (steps,)}`` the mean curve over the tested clips."""
        curves = self.deletion if kind == "deletion" else self.insertion
        return {name: np.nanmean(c, axis=0) if np.isfinite(c).any() else c[0] for name, c in curves.items()}

    def to_dict(self) -> dict[str, Any]:
        """JSON-ready: the summary, per class, the mean curves and how the test was run."""
        return {
            "summary": self.summary(),
            "per_class": self.per_class(),
            "curves": {
                "fractions": np.round(self.fractions, 6).tolist(),
                "deletion": {k: np.round(v, 6).tolist() for k, v in self.mean_curves("deletion").items()},
                "insertion": {k: np.round(v, 6).tolist() for k, v in self.mean_curves("insertion").items()},
            },
            "n": int(len(self.labels) - len(self.skipped)),
            "skipped": len(self.skipped),
            "replacement": self.replacement,
        }

    def reading(self, tie: float = 0.02) -> str:
        """A plain-language reading of :meth:`summary`, written from the numbers (so it is true of this run):
        is attention more faithful than a random order, and than each other baseline? Deletion AUCs within
        ``tie`` of each other are called a tie."""
        s = {k: v["deletion_auc"] for k, v in self.summary().items() if v["deletion_auc"] is not None}
        if "attention" not in s:
            return "No clip could be tested (none has a real frame), so there is nothing to read."
        att = s["attention"]
        lines = []
        base = float(np.nanmean(self.original)) if self.original is not None else float("nan")
        if np.isfinite(base) and base < 0.5:
            lines.append(f"Caution: on the intact clips the model gives the true class only {base:.2f} on average, "
                         "so removing audio has little to take away and these curves say little.")
        for name in [n for n in s if n != "attention" and not n.startswith("attention_head")]:
            other = s[name]
            if att < other - tie:
                verdict = f"attention is more faithful than {name}"
            elif att > other + tie:
                verdict = f"attention is NOT more faithful than {name}: {name} finds the frames the model needs sooner"
            else:
                verdict = f"attention and {name} are about as faithful (a tie within {tie})"
            lines.append(f"Deletion AUC {att:.3f} (attention) vs {other:.3f} ({name}): {verdict}.")
        return "\n".join(lines)

    def plot(self, **kwargs):
        """The deletion and insertion curves (:func:`asit_helpers.viz.plot_deletion_curves`)."""
        from .viz import plot_deletion_curves

        return plot_deletion_curves(self, **kwargs)


def faithfulness(
    model: AsitForAudioClassification,
    waveforms: Sequence[np.ndarray],
    targets: Sequence[int],
    saliencies: Sequence[str] = SALIENCIES,
    steps: int = 10,
    replacement: str = "background",
    batch_size: int = 16,
    seed: int = 0,
    occlusion_frames: int = 10,
    progress: Callable[[Iterable], Iterable] | None = None,
) -> FaithfulnessReport:
    """Deletion and insertion curves of ``saliencies`` on clips ``waveforms`` (16 kHz, 1-D, any lengths).

    Args:
        model: the classifier (eval mode is set here; it runs on its own device).
        waveforms: the clips' real samples (no padding).
        targets: each clip's true class id: the probability the curves follow and the gradients are taken of.
        saliencies: names from :data:`SALIENCIES`.
        steps: the curves have ``steps + 1`` points, removing 0, 1/steps, ..., all of the frames.
        replacement: ``"background"`` (matched noise; default) or ``"zeros"``.
        batch_size: waveforms per forward pass (steps and clips are mixed in a batch).
        seed: for the random order and the replacement noise.
        occlusion_frames: width of the occlusion window in frames (10 = 200 ms).
        progress: wraps the loop over saliencies, e.g. ``tqdm.auto.tqdm``.

    Returns:
        a :class:`FaithfulnessReport`. Clips with no real frame are listed in ``skipped`` with NaN curves.
    """
    if len(waveforms) != len(targets):
        raise ValueError(f"{len(waveforms)} waveforms but {len(targets)} targets")
    if steps < 1:
        raise ValueError(f"steps must be at least 1, got {steps}")
    model.eval()
    fractions = np.linspace(0.0, 1.0, int(steps) + 1)
    id2label = {int(k): v for k, v in model.config.id2label.items()}
    prepared = _prepare(model, waveforms, targets, replacement, seed)
    tested = [i for i, c in enumerate(prepared) if c is not None]
    clips = [prepared[i] for i in tested]
    scores = compute_saliencies(model, clips, saliencies, batch_size, seed, occlusion_frames) if clips else {
        name: [] for name in saliencies}
    names = list(scores)
    deletion = {name: np.full((len(prepared), len(fractions)), np.nan) for name in names}
    insertion = {name: np.full((len(prepared), len(fractions)), np.nan) for name in names}
    for name in (progress(names) if progress else names):
        if clips:
            deletion[name][tested], insertion[name][tested] = _curves(model, clips, scores[name], fractions, batch_size)
    original = np.full(len(prepared), np.nan)
    if clips:
        original[tested] = class_probabilities(model, ((c.samples, c.target) for c in clips), batch_size)
    return FaithfulnessReport(
        fractions=fractions,
        deletion=deletion,
        insertion=insertion,
        labels=[id2label.get(int(y), str(y)) for y in targets],
        replacement=replacement,
        skipped=[i for i, c in enumerate(prepared) if c is None],
        original=original,
    )


def faithfulness_on_cache(model: AsitForAudioClassification, cache, indices: Sequence[int], **kwargs) -> FaithfulnessReport:
    """:func:`faithfulness` on clips ``indices`` of an ``AudioCache`` (their real samples, their true labels)."""
    indices = np.asarray(indices, dtype=np.int64)
    waveforms = [np.asarray(cache.audio(int(i))[: int(cache.lengths[int(i)])]) for i in indices]
    targets = cache.label_ids()[indices]
    return faithfulness(model, waveforms, targets, **kwargs)


# ---- clips with two events: what does each head attend to, which event wins? ----------------------------------


@torch.inference_mode()
def _forward_clips(model, waveforms: Sequence[np.ndarray], batch_size: int) -> tuple[np.ndarray, list[np.ndarray]]:
    """Probabilities `(n, classes)` and per clip pooling weights `(heads, frames)`, equal-length batches."""
    extractor = model.feature_extractor()
    probs, weights = [], []
    for chunk in _batches(range(len(waveforms)), batch_size, lambda i: len(waveforms[i])):
        batch = extractor([waveforms[i] for i in chunk], sampling_rate=SAMPLE_RATE, return_tensors="pt")
        out = classify_batch(model, batch["input_values"].to(model.device),
                             batch["attention_mask"].to(model.device), precision="fp32")
        probs.append(torch.softmax(out.logits.float(), dim=-1).cpu().numpy())
        weights.extend(w.float().cpu().numpy() for w in out.pooling_weights)
    return np.concatenate(probs), weights


def _window_share(weights: np.ndarray, times: np.ndarray, onset: float, offset: float) -> np.ndarray:
    """`(heads,)` share of each head's weight on frames centred inside ``[onset, offset]``."""
    inside = (times >= onset) & (times <= offset)
    return weights[:, inside].sum(axis=1) / np.maximum(weights.sum(axis=1), 1e-12)


@dataclass
class TwoEventReport:
    """What a model does with clips holding two events of different classes (``asit synth --events 2``).

    Attributes:
        clips: one row per clip: ``label``/``label_2`` (events A and B), their windows and SNRs, ``top1``,
            ``top2``, ``top1_is`` ("A", "B" or "other"), ``louder``/``longer`` ("A"/"B"), and per head ``h``
            ``share_A_h{h}``, ``share_B_h{h}`` (its weight inside each window) and ``head{h}_takes``
            ("A", "B" or "neither": the event holding at least half of the head's weight).
        heads: pooling heads of the model. pooling: its pooling kind.
        weights: per clip `(heads, frames)`; frame_times: `(frames,)` seconds; probabilities: `(clips, classes)`.
    """

    clips: Any
    heads: int
    pooling: str
    weights: list[np.ndarray] = field(repr=False, default_factory=list)
    frame_times: np.ndarray | None = field(repr=False, default=None)
    probabilities: np.ndarray | None = field(repr=False, default=None)

    def summary(self) -> dict[str, Any]:
        """Rates over the clips: top-1 is one of the two events, top-2 accuracy (both events are the top two),
        which event the prediction follows (louder / longer, and where the louder one is the shorter), and
        what the heads attend to."""
        df = self.clips
        hit = df["top1_is"].isin(["A", "B"])
        won = df[hit]
        disagree = won[won["louder"] != won["longer"]]
        takes = np.stack([df[f"head{h}_takes"].to_numpy() for h in range(self.heads)], axis=1)
        split = np.array([{"A", "B"} <= set(row) for row in takes])
        share_winner = np.where(won["top1_is"] == "A", won["share_A"], won["share_B"])
        share_other = np.where(won["top1_is"] == "A", won["share_B"], won["share_A"])
        rate = lambda mask: round(float(np.mean(mask)), 4) if len(mask) else None  # noqa: E731
        classes = self.probabilities.shape[1] if self.probabilities is not None else 0
        return {
            "clips": int(len(df)),
            "pooling": self.pooling,
            "heads": self.heads,
            "top1_is_one_of_the_two": rate(hit),
            "top1_chance": round(2 / classes, 4) if classes else None,  # a random ranking
            "top2_accuracy": rate(df["top2_both"]),
            "top2_chance": round(2 / (classes * (classes - 1)), 4) if classes > 1 else None,
            "top1_is_A": rate(df["top1_is"] == "A"),
            "follows_louder": rate(won["top1_is"] == won["louder"]),
            "follows_longer": rate(won["top1_is"] == won["longer"]),
            "louder_is_shorter_clips": int(len(disagree)),
            "follows_louder_when_it_is_shorter": rate(disagree["top1_is"] == disagree["louder"]),
            "attention_on_winner": round(float(np.mean(share_winner)), 4) if len(won) else None,
            "attention_on_other": round(float(np.mean(share_other)), 4) if len(won) else None,
            "attention_on_neither": round(float(np.mean(1 - df["share_A"] - df["share_B"])), 4),
            "heads_take_both_events": rate(split),
            "head_takes": {
                f"head{h}": {k: rate(df[f"head{h}_takes"] == k) for k in ("A", "B", "neither")}
                for h in range(self.heads)
            },
        }


    def describe(self) -> str:
        """The summary in sentences, each rate with its chance baseline (written from the numbers)."""
        s = self.summary()
        pct = lambda v: "n/a" if v is None else f"{v:.0%}"  # noqa: E731
        lines = [
            f"{s['clips']} clips with two events ({self.pooling} pooling, {self.heads} head(s)): the top class is one "
            f"of the two in {pct(s['top1_is_one_of_the_two'])} (chance {pct(s['top1_chance'])}); both are the top "
            f"two in {pct(s['top2_accuracy'])} (top-2 accuracy; chance {s['top2_chance']:.1%}).",
            f"When it names one of them, it names the louder in {pct(s['follows_louder'])} and the longer in "
            f"{pct(s['follows_longer'])} (chance 50 %); where the louder is the shorter ({s['louder_is_shorter_clips']} "
            f"clips), the louder wins in {pct(s['follows_louder_when_it_is_shorter'])}.",
        ]
        if s["attention_on_winner"] is not None:
            lines.append(f"Attention inside the named event's window {s['attention_on_winner']:.2f}, inside the other's "
                         f"{s['attention_on_other']:.2f}, on neither {s['attention_on_neither']:.2f} (mean of heads).")
        if self.heads > 1:
            lines.append(f"The heads split the two events between them (one head on each) in "
                         f"{pct(s['heads_take_both_events'])} of the clips.")
        return "\n".join(lines)


def two_event_report(model: AsitForAudioClassification, folder, batch_size: int = 16) -> TwoEventReport:
    """Classify every clip of a two-event synthetic folder (``asit synth OUT --events 2``) and score it.

    Args:
        model: the classifier (trained on one-event clips of the same classes).
        folder: the synth output folder (its ``events.csv`` names both events of each clip).
    """
    from pathlib import Path

    import pandas as pd

    from .audio import load_audio

    folder = Path(folder)
    events_csv = folder / "events.csv"
    if not events_csv.exists():
        raise FileNotFoundError(f"{events_csv}: no events table (make one with `asit synth OUT --events 2`)")
    df = pd.read_csv(events_csv)
    if "label_2" not in df or df["label_2"].isna().all():
        raise ValueError(f"{events_csv}: one event per clip; two-event clips come from `asit synth OUT --events 2`")
    label2id = {v: int(k) for k, v in model.config.id2label.items()}
    missing = sorted((set(df["label"]) | set(df["label_2"])) - set(label2id))
    if missing:
        raise ValueError(f"{folder}: classes {missing} are not among the model's classes")
    model.eval()
    waveforms = [load_audio(folder / p, SAMPLE_RATE) for p in df["path"]]
    probs, weights = _forward_clips(model, waveforms, batch_size)
    frames = max(w.shape[-1] for w in weights)
    times = model.frame_times(frames).numpy()
    order = np.argsort(-probs, axis=1)
    id2label = {int(k): v for k, v in model.config.id2label.items()}
    df = df.copy()
    df["top1"] = [id2label[int(o[0])] for o in order]
    df["top2"] = [id2label[int(o[1])] for o in order]
    df["top1_is"] = np.select([df["top1"] == df["label"], df["top1"] == df["label_2"]], ["A", "B"], "other")
    df["top2_both"] = [{a, b} == {t1, t2} for a, b, t1, t2 in zip(df["label"], df["label_2"], df["top1"], df["top2"])]
    df["louder"] = np.where(df["snr_db"] >= df["snr_2_db"], "A", "B")
    df["longer"] = np.where(df["offset_s"] - df["onset_s"] >= df["offset_2_s"] - df["onset_2_s"], "A", "B")
    heads = weights[0].shape[0]
    share_a = np.stack([_window_share(w, times[: w.shape[-1]], a0, a1)
                        for w, a0, a1 in zip(weights, df["onset_s"], df["offset_s"])])
    share_b = np.stack([_window_share(w, times[: w.shape[-1]], b0, b1)
                        for w, b0, b1 in zip(weights, df["onset_2_s"], df["offset_2_s"])])
    df["share_A"], df["share_B"] = share_a.mean(axis=1), share_b.mean(axis=1)
    for h in range(heads):
        df[f"share_A_h{h}"], df[f"share_B_h{h}"] = share_a[:, h], share_b[:, h]
        df[f"head{h}_takes"] = np.select([share_a[:, h] >= 0.5, share_b[:, h] >= 0.5], ["A", "B"], "neither")
    return TwoEventReport(df, heads, model.config.pooling, weights, times, probs)
