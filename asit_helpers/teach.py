"""Teach a model new sounds from a handful of recordings: :func:`teach`.

    result = teach("tiny-fb", {"clap": ["clap1.wav", "clap2.wav"], "whistle": [...]}, background=["room.wav"])
    result.model                  # an ordinary AsitForAudioClassification: predict, serve, live, pipeline
    print(result.report.summary())

The backbone stays frozen. Each clip is run through it once (plus a cheap augmented *view* of each example: mixed
with a stretch of the recorded background; a circular shift is the other choice), and only the pooling and the
head train, on those cached frames, in a few seconds. Clips of any length from 0.5 s up are kept at their own length: in the cache a shorter clip is
padded with frames its mask marks as padding (the pooling gives them weight 0), never stretched; the backbone
always sees one clip length at a time, so padding never reaches a mask-less (group-norm) encoder.

The recorded background becomes the **no-event answer**: one more output of the head, named by
``config.no_event_label`` in the saved ``config.json`` (not presented as a sound), learned from the background cut
into pieces of the examples' length. The model's window (``config.clip_seconds``) is the longest example's
length, so live listening classifies windows like the ones it was taught on.

The result is saved as a Hugging Face directory (``save_pretrained``, safetensors), with ``examples.json`` (what
it was taught from) and ``teach_report.json`` (classes, clips per class, a cross-validated accuracy estimate,
seconds) beside it.
"""

from __future__ import annotations

import copy
import json
import os
import re
import shutil
import time
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any, Callable, Iterable, Mapping, Sequence

import numpy as np
import soundfile as sf
import torch

from .audio import SAMPLE_RATE, AudioError, load_audio, window_starts
from .batches import Augment, augment_clip, colored_noise, equal_length_batches
from .files import atomic_write_text, json_default
from .messages import ExpectedError
from .model import POOLINGS, AsitAttentionPooling, AsitForAudioClassification, AsitMeanPooling
from .model import PRESETS as BACKBONE_PRESETS

#: The head's output for the recorded background (``config.no_event_label``).
NO_EVENT = "no event"
#: A folder of this name inside an examples folder holds background recordings, not a class.
BACKGROUND_FOLDER = "background"
#: Shortest clip taught from (seconds): shorter recordings are refused, not padded into a mostly-empty window.
MIN_CLIP_SECONDS = 0.5
#: The longest window a taught model uses; longer examples are cut into windows of the model's length.
MAX_WINDOW_SECONDS = 5.0
#: The augmented views :func:`teach` can add per example (``augment=``); ``bench/teach_shots.py`` measures them.
VIEWS = ("shift", "mix")


#: A recording quieter than this RMS (-60 dBFS, the demo widget's silence level) is a muted microphone, not a sound.
SILENT_RMS = 1e-3


class TeachError(ExpectedError, ValueError):
    """Examples that cannot be taught from; ``str()`` names the input and the problem (for people)."""


@dataclass
class Clip:
    """One recording: where it came from (a file name, or ``"<class>[i]"`` for arrays) and its 16 kHz samples."""

    source: str
    samples: np.ndarray

    @property
    def seconds(self) -> float:
        return len(self.samples) / SAMPLE_RATE


@dataclass
class TeachReport:
    """What was taught and how well it is expected to do (``teach_report.json``).

    Attributes:
        classes: the taught classes (the head's outputs, without the no-event answer).
        clips_per_class: examples per class.
        background_clips, background_seconds: the background recordings and their total length.
        no_event_label: the head's output for the background (None without background).
        clip_seconds: the model's window.
        views: augmented views per clip and which (``("shift", "mix")``).
        cv_accuracy: share of held-out clips (examples and background pieces) answered correctly, over ``cv_folds``
            folds, each fold's model taught without those clips (None when a class has too few clips).
        cv_per_class: that accuracy per class (and for the no-event answer).
        chance: the share of the most frequent answer among the held-out clips (what always guessing it scores).
        seconds: the whole call; seconds_to_model: until the model was ready (reading, embedding, training: the
            cross-validation and saving come after); embed_seconds / train_seconds / cv_seconds: the parts.
        base: the backbone preset or checkpoint taught on.
    """

    classes: list[str]
    clips_per_class: dict[str, int]
    background_clips: int
    background_seconds: float
    no_event_label: str | None
    clip_seconds: float
    views: list[str]
    cv_accuracy: float | None
    cv_folds: int
    cv_per_class: dict[str, float]
    chance: float | None
    seconds: float
    seconds_to_model: float
    embed_seconds: float
    train_seconds: float
    cv_seconds: float
    base: str
    steps: int

    def to_dict(self) -> dict:
        return asdict(self)

    def summary(self) -> str:
        """A few lines for people (what ``asit teach`` prints)."""
        lines = [f"taught {len(self.classes)} class(es) on {self.base}: "
                 + ", ".join(f"{name} ({n} clips)" for name, n in self.clips_per_class.items())]
        if self.no_event_label:
            lines.append(f"background: {self.background_clips} recording(s), {self.background_seconds:.1f} s -> "
                         f"the answer {self.no_event_label!r}")
        else:
            lines.append("no background recorded: the model always names one of the classes")
        lines.append(f"window {self.clip_seconds:g} s; versions of each example: clean"
                     + "".join(f" + {v}" for v in self.views))
        if self.cv_accuracy is None:
            lines.append("cross-validated accuracy: not estimated (a class has fewer than 2 clips)")
        else:
            per = ", ".join(f"{k} {v:.2f}" for k, v in self.cv_per_class.items())
            lines.append(f"cross-validated accuracy ({self.cv_folds} folds, held-out clips): {self.cv_accuracy:.2f} "
                         f"(always the most frequent answer: {self.chance:.2f}); per class: {per}")
        lines.append(f"model ready in {self.seconds_to_model:.1f} s (embedding {self.embed_seconds:.1f} s, training "
                     f"{self.train_seconds:.1f} s); cross-validation {self.cv_seconds:.1f} s; {self.seconds:.1f} s in all")
        return "\n".join(lines)


@dataclass
class TeachResult:
    """What :func:`teach` returns: the taught model (eval mode), its report, the examples, where it was saved."""

    model: AsitForAudioClassification
    report: TeachReport
    examples: list[dict]
    out: Path | None = None


@dataclass
class TeachSettings:
    """How :func:`teach` trains (defaults measured by ``bench/teach_shots.py``; see bench/README.md)."""

    pooling: str = "attention"
    augment: tuple[str, ...] = ("mix",)
    views: int = 1
    steps: int = 120
    train_batch: int = 16
    lr: float = 3e-3
    weight_decay: float = 0.01
    cv_folds: int = 3
    start_from_pooling: bool = True
    seed: int = 0
    precision: str = "auto"
    batch_size: int = 8
    min_clips: int = 2  # the shots curve's 1-example point sets 1; people get the 2-clip rule

    def __post_init__(self):
        if self.pooling not in POOLINGS:
            raise TeachError(f"error: pooling must be one of {POOLINGS}, got {self.pooling!r}")
        unknown = set(self.augment) - set(VIEWS)
        if unknown:
            raise TeachError(f"error: unknown augmentation(s) {sorted(unknown)}; choose from {VIEWS}")
        self.augment = tuple(self.augment)


_NAME = re.compile(r"^[\w][\w .-]{0,39}$")


class TeachWorkspace:
    """The recordings of a teaching session, on disk: ``root/class/NNN.wav`` and ``root/background/NNN.wav``."""

    def __init__(self, root: str | os.PathLike, max_seconds: float = 30.0):
        self.root = Path(root)
        self.root.mkdir(parents=True, exist_ok=True)
        self.max_seconds = max_seconds

    def classes(self) -> list[str]:
        return sorted(p.name for p in self.root.iterdir()
                      if p.is_dir() and not p.name.startswith((".", "__")) and p.name != BACKGROUND_FOLDER
                      and not (p / "config.json").exists())

    def recordings(self, name: str) -> list[Path]:
        folder = self.root / name
        return sorted(folder.glob("*.wav")) if folder.is_dir() else []

    def counts(self) -> dict[str, int]:
        return {name: len(self.recordings(name)) for name in self.classes() + [BACKGROUND_FOLDER]}

    def add_class(self, name: str) -> str:
        """Create a class folder; the name must be a plain folder name (letters, digits, space, ``_.-``)."""
        name = (name or "").strip()
        if not _NAME.match(name) or name in (BACKGROUND_FOLDER, NO_EVENT):
            raise TeachError(f"error: {name!r} can't be a class name: use letters, digits, spaces, '_', '.', '-' "
                             f"(40 at most; {BACKGROUND_FOLDER!r} and {NO_EVENT!r} are taken)")
        (self.root / name).mkdir(exist_ok=True)
        return name

    def add_recording(self, name: str, data: bytes | np.ndarray, source: str = "recording.wav") -> Path:
        """Decode (``load_audio``), check, and save one recording of ``name`` (a class or ``"background"``) as
        the next ``NNN.wav`` (written beside, then renamed: never half a file).

        Raises:
            TeachError: unreadable, silent, shorter than 0.5 s or longer than ``max_seconds``; or no such class.
        """
        if name != BACKGROUND_FOLDER and name not in self.classes():
            raise TeachError(f"error: no class {name!r}: add it first")
        try:
            samples = data if isinstance(data, np.ndarray) else \
                load_audio(bytes(data), SAMPLE_RATE, max_seconds=self.max_seconds, name=source)
        except AudioError as exc:
            raise TeachError(f"error: could not use {exc.source}: {exc.reason}") from None
        samples = np.asarray(samples, dtype=np.float32).reshape(-1)
        seconds = len(samples) / SAMPLE_RATE
        if seconds < MIN_CLIP_SECONDS:
            raise TeachError(f"error: {source} is {seconds:.2f} s long; record at least {MIN_CLIP_SECONDS:g} s")
        rms = float(np.sqrt(np.mean(np.square(samples, dtype=np.float64))))
        if rms < SILENT_RMS:
            raise TeachError(f"error: no sound in {source}: check that the microphone is connected, not muted and "
                             "allowed for this page")
        folder = self.root / name
        folder.mkdir(exist_ok=True)
        taken = [int(p.stem) for p in folder.glob("*.wav") if p.stem.isdigit()]
        path = folder / f"{max(taken, default=0) + 1:03d}.wav"
        tmp = folder / f".{path.name}.tmp"
        sf.write(tmp, samples, SAMPLE_RATE, format="WAV", subtype="PCM_16")
        os.replace(tmp, path)
        return path

    def delete(self, name: str, file_name: str) -> Path:
        """Move one recording to ``root/.deleted/`` (kept, in case it was the wrong one)."""
        path = self.root / name / Path(file_name).name
        if not path.is_file():
            raise TeachError(f"error: no recording {file_name!r} in {name!r}")
        bin_dir = self.root / ".deleted" / name
        bin_dir.mkdir(parents=True, exist_ok=True)
        target = bin_dir / f"{time.strftime('%Y%m%d-%H%M%S')}-{path.name}"
        os.replace(path, target)
        return target


# ---- reading examples -----------------------------------------------------------------------------------------


def _read_clip(item: Any, name: str) -> Clip:
    """An array (16 kHz samples), a path, bytes or a file object → a :class:`Clip` (via ``load_audio``)."""
    if isinstance(item, Clip):
        return item
    if isinstance(item, torch.Tensor):
        item = item.detach().cpu().numpy()
    if isinstance(item, np.ndarray):
        samples = np.asarray(item, dtype=np.float32).reshape(-1)
        if not np.isfinite(samples).all():
            raise AudioError(name, "contains NaN or infinite sample values")
        return Clip(name, samples)
    if isinstance(item, (str, os.PathLike)):
        name = str(item)
    return Clip(name, load_audio(item, SAMPLE_RATE, max_seconds=10 * 60.0, name=name))


def _audio_files(folder: Path) -> list[Path]:
    from .data import AUDIO_EXTENSIONS  # here: the server (no pandas) passes clips, not folders

    return sorted(p for p in folder.iterdir() if p.is_file() and p.suffix.lower() in AUDIO_EXTENSIONS
                  and not p.name.startswith("."))


def _folder_examples(root: Path) -> tuple[dict[str, list[Path]], list[Path]]:
    """``root/class/clip.ext`` → ``({class: [paths]}, background paths from root/background/)``."""
    if not root.is_dir():
        raise TeachError(f"error: {root}: no such folder (expected EXAMPLES_DIR/class/clip.wav)")
    examples, background = {}, []
    for sub in sorted(p for p in root.iterdir() if p.is_dir() and not p.name.startswith((".", "__"))):
        files = _audio_files(sub)
        if sub.name == BACKGROUND_FOLDER:
            background = files
        elif files:
            examples[sub.name] = files
    return examples, background


def read_examples(examples: Mapping[str, Iterable] | str | os.PathLike,
                  background: Iterable | str | os.PathLike | None = None) -> tuple[dict[str, list[Clip]], list[Clip]]:
    """Decode every example and background recording once; every unreadable one is named in one error.

    Args:
        examples: ``{class: [clip, ...]}`` (arrays at 16 kHz, paths, bytes, file objects) or a folder
            ``class/clip.ext`` (a ``background/`` subfolder there is background, not a class).
        background: clips, or a folder of them (default: the examples folder's ``background/``).

    Raises:
        TeachError: unreadable files (all of them listed), a clip shorter than 0.5 s.
    """
    folder_background: list = []
    if isinstance(examples, (str, os.PathLike)):
        examples, folder_background = _folder_examples(Path(examples))
    if isinstance(background, (str, os.PathLike)):
        folder = Path(background)
        if not folder.is_dir():
            raise TeachError(f"error: {folder}: no such folder of background recordings")
        background = _audio_files(folder)
    elif background is None:
        background = folder_background
    elif isinstance(background, (np.ndarray, torch.Tensor, bytes)):
        background = [background]
    problems: list[str] = []

    def read(items, label):
        clips = []
        for i, item in enumerate(items):
            try:
                clip = _read_clip(item, f"{label}[{i}]")
            except AudioError as exc:
                problems.append(str(exc))
                continue
            if clip.seconds < MIN_CLIP_SECONDS:
                problems.append(f"{clip.source}: too short: {clip.seconds:.2f} s; record at least "
                                f"{MIN_CLIP_SECONDS:g} s")
                continue
            clips.append(clip)
        return clips

    clips = {str(name): read(list(items) if not isinstance(items, np.ndarray) else [items], str(name))
             for name, items in examples.items()}
    bg = read(list(background), "background")
    if problems:
        shown = "\n  ".join(problems[:10]) + (f"\n  ... and {len(problems) - 10} more" if len(problems) > 10 else "")
        raise TeachError(f"error: {len(problems)} recording(s) can't be used (nothing was changed):\n  {shown}")
    return clips, bg


def check_examples(clips: Mapping[str, Sequence[Clip]], background: Sequence[Clip], min_clips: int = 2) -> None:
    """Refuse what cannot be taught: a class with fewer than 2 clips, a single class without background, a class
    named like the no-event answer."""
    if not clips:
        raise TeachError("error: no examples: give at least two classes (or one and a background), "
                         "each with two or more recordings (EXAMPLES_DIR/class/clip.wav)")
    few = [f"{name} ({len(c)})" for name, c in clips.items() if len(c) < min_clips]
    if few:
        raise TeachError(f"error: every class needs at least {min_clips} recordings (8 or more work better); too few: "
                         f"{', '.join(few)}")
    if len(clips) == 1 and not background:
        only = next(iter(clips))
        raise TeachError(f"error: only one class ({only}) and no background: a model with one answer can't tell "
                         "anything apart; record a second class or some background (--background DIR)")
    if NO_EVENT in clips or BACKGROUND_FOLDER in clips:
        raise TeachError(f"error: {NO_EVENT!r} and {BACKGROUND_FOLDER!r} are reserved for the background; "
                         "rename that class")


# ---- the model ------------------------------------------------------------------------------------------------


def _base_model(base, labels: list[str], clip_seconds: float, settings: TeachSettings) -> AsitForAudioClassification:
    """A new head on ``base``: a backbone preset / Hub id, or a trained ASiT checkpoint or model (a copy of its
    backbone, and of its pooling as the starting point when ``start_from_pooling`` and the pooling kinds agree)."""
    torch.manual_seed(settings.seed)
    trained = base if isinstance(base, AsitForAudioClassification) else None
    if trained is None and isinstance(base, (str, os.PathLike)) and (Path(base) / "config.json").is_file() \
            and json.loads((Path(base) / "config.json").read_text()).get("model_type") == "asit":
        trained = AsitForAudioClassification.from_pretrained(str(base))
    if trained is None:
        return AsitForAudioClassification.from_backbone(str(base), labels=labels, pooling=settings.pooling,
                                                        clip_seconds=clip_seconds).eval()
    # a copy, not a new model loaded with its weights: building a base-sized backbone from its config means
    # initialising 95M random weights first (seconds on a CPU) only to overwrite them
    model = copy.deepcopy(trained).eval()
    cfg = model.config
    keep_pooling = settings.start_from_pooling and cfg.pooling == settings.pooling and settings.pooling != "mean"
    if not keep_pooling:
        hidden = cfg.backbone_config.hidden_size
        cfg.pooling = settings.pooling
        model.pooling = AsitMeanPooling(cfg.attentive_stats) if settings.pooling == "mean" else \
            AsitAttentionPooling(hidden, cfg.pooling_heads, cfg.attention_dim, cfg.attentive_stats)
    model.classifier = torch.nn.Linear(model.classifier.in_features if keep_pooling else
                                       cfg.backbone_config.hidden_size * model.pooling.output_dim_factor, len(labels))
    cfg.id2label = {i: name for i, name in enumerate(labels)}
    cfg.label2id = {name: i for i, name in enumerate(labels)}
    cfg.clip_seconds = clip_seconds
    if hasattr(cfg, "no_event_label"):
        del cfg.no_event_label
    return model


def check_base(base) -> None:
    """Refuse a ``base`` that is neither a preset, a checkpoint or encoder folder, nor a Hub id (before any work)."""
    if isinstance(base, AsitForAudioClassification):
        return
    name = str(base)
    if name not in BACKBONE_PRESETS and (Path(name).exists() or "/" not in name.strip("/")) \
            and not (Path(name) / "config.json").is_file():
        raise TeachError(f"error: {name} is neither a backbone preset ({', '.join(BACKBONE_PRESETS)}), nor a "
                         "checkpoint directory (config.json), nor a Hub id (owner/name)")


def _window_seconds(clips: Mapping[str, Sequence[Clip]]) -> float:
    """The model's window: the longest example (to 0.1 s), at most :data:`MAX_WINDOW_SECONDS`."""
    longest = max(c.seconds for group in clips.values() for c in group)
    return float(min(MAX_WINDOW_SECONDS, np.ceil(longest * 10 - 1e-6) / 10))


# ---- embedding once, with views -------------------------------------------------------------------------------


@dataclass
class _Items:
    """What the head trains on: one row per embedded piece (a clip, a window of a long clip, or a view of one)."""

    hidden: torch.Tensor  # (N, T, D) or (N, L+1, T, D), float32, zero on padded frames
    frame_mask: torch.Tensor  # (N, T) bool
    labels: np.ndarray  # (N,) label id
    groups: np.ndarray  # (N,) the recording (or background stretch) a row comes from: cross-validation keeps
    # all rows of one group in one fold
    view: np.ndarray  # (N,) 0 = clean, v = view v


def _pieces(clips: Mapping[str, Sequence[Clip]], background: Sequence[Clip], window: int, labels: list[str],
            folds: int) -> tuple[list[np.ndarray], list[int], list[int]]:
    """Examples (longer ones cut into windows) and the background cut into window-long pieces; with labels and
    groups (an example is its own group; a background recording is cut into ``folds`` contiguous stretches)."""
    pieces, label_ids, groups = [], [], []
    group = 0
    for name, group_clips in clips.items():
        for clip in group_clips:
            for s in window_starts(len(clip.samples), window, window):
                pieces.append(clip.samples[s : s + window])
                label_ids.append(labels.index(name))
                groups.append(group)
            group += 1
    for clip in background:
        starts = [s for s in range(0, max(1, len(clip.samples) - window + 1), window)] or [0]
        for i, s in enumerate(starts):
            pieces.append(clip.samples[s : s + window])
            label_ids.append(len(labels) - 1)
            groups.append(group + i * folds // len(starts))
        group += folds
    return pieces, label_ids, groups


def _view(x: np.ndarray, kinds: Sequence[str], background: Sequence[np.ndarray], rng: np.random.Generator) -> np.ndarray:
    """One augmented version of ``x``: a circular shift (up to half its length), then a mix with a random stretch
    of the recorded background (coloured noise without one) at 5-20 dB SNR."""
    if "shift" in kinds:
        x = augment_clip(x, Augment(shift_s=len(x) / SAMPLE_RATE / 2, gain_db=0.0, noise_prob=0.0), rng)
    if "mix" in kinds:
        if background:
            source = background[int(rng.integers(len(background)))]
            noise = np.resize(np.roll(source, int(rng.integers(len(source)))), len(x)).astype(np.float32)
        else:
            noise = colored_noise(len(x), ("white", "pink", "brown")[int(rng.integers(3))], rng)
        signal = float(np.sqrt(np.mean(x.astype(np.float64) ** 2))) or 1e-3
        level = float(np.sqrt(np.mean(noise.astype(np.float64) ** 2))) or 1.0
        snr = rng.uniform(5.0, 20.0)
        x = x + noise * np.float32(signal / level / 10 ** (snr / 20))
    return x.astype(np.float32, copy=False)


@torch.inference_mode()
def _encode(model: AsitForAudioClassification, pieces: list[np.ndarray], precision: str, batch_size: int,
            tick: Callable[[int], None]) -> tuple[torch.Tensor, torch.Tensor]:
    """Frames of every piece: equal-length batches only (no padding reaches the backbone), then padded to the
    longest with a frame mask. The backbone runs in ``precision`` as ``predict`` runs it (bf16 copy on CPUs
    with native bf16), so the head trains on the frames it will see."""
    from .inference import bf16_copy
    from .runtime import TORCH_DTYPES

    extractor = model.feature_extractor()
    lengths = [len(p) for p in pieces]
    frames = model.backbone._get_feat_extract_output_lengths(torch.tensor(lengths)).tolist()
    runner = bf16_copy(model) if precision == "bf16" and model.device.type == "cpu" else model
    hidden = mask = None
    for rows in equal_length_batches(lengths, batch_size):
        batch = extractor([pieces[i] for i in rows], sampling_rate=SAMPLE_RATE, return_tensors="pt")
        inputs = batch["input_values"].to(model.device), batch["attention_mask"].to(model.device)
        with torch.autocast(model.device.type, dtype=TORCH_DTYPES[precision], enabled=precision != "fp32"):
            h, m = runner.encode(*inputs)
        h = h.float().cpu()
        if hidden is None:
            hidden = torch.zeros((len(pieces),) + tuple(h.shape[1:-2]) + (max(frames), h.shape[-1]))
            mask = torch.zeros(len(pieces), max(frames), dtype=torch.bool)
        t = h.shape[-2]
        hidden[torch.as_tensor(rows), ..., :t, :] = h
        mask[torch.as_tensor(rows), :t] = m.cpu()
        tick(len(rows))
    return hidden, mask


def embed_examples(model, clips, background, labels, settings: TeachSettings,
                   progress: Callable[[str, float], None] | None = None) -> _Items:
    """Run the frozen backbone once over every piece and ``settings.views`` augmented versions of each."""
    from .runtime import resolve_precision

    window = int(round(model.config.clip_seconds * SAMPLE_RATE))
    pieces, label_ids, groups = _pieces(clips, background, window, labels, max(2, settings.cv_folds))
    background_audio = [c.samples for c in background]
    rng = np.random.default_rng(settings.seed)
    views = settings.views if settings.augment else 0
    events = [i for i, label in enumerate(label_ids) if labels[label] != NO_EVENT]  # background mixed with
    # background would be background again: only the examples get views
    all_pieces = list(pieces) + [_view(pieces[i], settings.augment, background_audio, rng)
                                 for _ in range(views) for i in events]
    done = [0]

    def tick(n):
        done[0] += n
        if progress:
            progress("embedding", done[0] / len(all_pieces))

    precision = resolve_precision(settings.precision, model.device).precision
    hidden, mask = _encode(model, all_pieces, precision, settings.batch_size, tick)
    rows = np.concatenate([np.arange(len(pieces))] + [np.asarray(events, dtype=np.int64)] * views)
    view = np.concatenate([np.zeros(len(pieces), np.int64)] + [np.full(len(events), v + 1) for v in range(views)])
    return _Items(hidden, mask, np.asarray(label_ids)[rows], np.asarray(groups)[rows], view)


# ---- training the pooling and the head on cached frames --------------------------------------------------------


def _head_parameters(model: AsitForAudioClassification) -> list[torch.nn.Parameter]:
    model.freeze_backbone()
    return [p for name, p in model.named_parameters() if not name.startswith("backbone.")]


def fit_head(model: AsitForAudioClassification, items: _Items, rows: np.ndarray, settings: TeachSettings,
             progress: Callable[[float], None] | None = None) -> list[float]:
    """Train the pooling + head on ``items[rows]``: ``settings.steps`` AdamW steps on shuffled batches of
    ``settings.train_batch`` rows, class-balanced cross-entropy (the background has more pieces than a class has
    clips); the backbone stays frozen and out of the loop. Returns the loss of each step."""
    from transformers import get_cosine_schedule_with_warmup

    torch.manual_seed(settings.seed)
    rng = np.random.default_rng([settings.seed, len(rows)])
    params = _head_parameters(model)
    counts = np.bincount(items.labels[rows], minlength=model.config.num_labels).astype(np.float64)
    weights = np.where(counts > 0, counts.sum() / np.maximum(counts, 1) / max((counts > 0).sum(), 1), 0.0)
    weights = torch.tensor(weights, dtype=torch.float32, device=model.device)
    optimizer = torch.optim.AdamW(params, lr=settings.lr, weight_decay=settings.weight_decay)
    schedule = get_cosine_schedule_with_warmup(optimizer, max(1, settings.steps // 10), settings.steps)
    model.train()
    model.backbone.eval()
    losses, order = [], np.empty(0, dtype=np.int64)
    for step in range(settings.steps):
        if len(order) < min(settings.train_batch, len(rows)):  # epochs of shuffled rows, cut into batches
            order = np.concatenate([order, rng.permutation(rows)])
        batch, order = order[: settings.train_batch], order[settings.train_batch :]
        hidden, mask = items.hidden[batch].to(model.device), items.frame_mask[batch].to(model.device)
        labels = torch.as_tensor(items.labels[batch], device=model.device)
        logits = model.classify_hidden(hidden, mask).logits.float()
        loss = torch.nn.functional.cross_entropy(logits, labels, weight=weights)
        optimizer.zero_grad(set_to_none=True)
        loss.backward()
        optimizer.step()
        schedule.step()
        losses.append(float(loss.detach()))
        if progress and (step % 10 == 0 or step == settings.steps - 1):
            progress((step + 1) / settings.steps)
    model.eval()
    return losses


@torch.no_grad()
def _answers(model: AsitForAudioClassification, items: _Items, rows: np.ndarray) -> np.ndarray:
    out = model.classify_hidden(items.hidden[rows].to(model.device), items.frame_mask[rows].to(model.device))
    return out.logits.argmax(-1).cpu().numpy()


def _fold_of_groups(items: _Items, folds: int, seed: int) -> dict[int, int]:
    """Stratified folds of whole groups: each class's groups shuffled and dealt round-robin."""
    rng = np.random.default_rng([seed, 7])
    fold = {}
    clean = items.view == 0
    for label in np.unique(items.labels[clean]):
        groups = np.unique(items.groups[clean & (items.labels == label)])
        for i, g in enumerate(rng.permutation(groups)):
            fold[int(g)] = i % folds
    return fold


def cross_validate(model_factory: Callable[[], AsitForAudioClassification], items: _Items, labels: list[str],
                   settings: TeachSettings) -> tuple[float | None, int, dict[str, float], float | None]:
    """Accuracy on held-out clean clips, each fold's model taught without their groups (and their views).

    Returns:
        ``(accuracy, folds, per-class accuracy, share of the most frequent answer)``; accuracy None when a class
        has fewer than two groups.
    """
    clean = items.view == 0
    per_class_groups = [len(np.unique(items.groups[clean & (items.labels == k)])) for k in np.unique(items.labels)]
    folds = min(settings.cv_folds, min(per_class_groups))
    if folds < 2:
        return None, 0, {}, None
    fold_of = _fold_of_groups(items, folds, settings.seed)
    row_fold = np.array([fold_of[int(g)] for g in items.groups])
    truth, answers = [], []
    for k in range(folds):
        test = np.flatnonzero(clean & (row_fold == k))
        train = np.flatnonzero(row_fold != k)
        model = model_factory()
        fit_head(model, items, train, settings)
        answers.append(_answers(model, items, test))
        truth.append(items.labels[test])
    truth, answers = np.concatenate(truth), np.concatenate(answers)
    per_class = {labels[k]: float(np.mean(answers[truth == k] == k)) for k in np.unique(truth)}
    chance = float(np.bincount(truth).max() / len(truth))
    return float(np.mean(answers == truth)), folds, per_class, chance


# ---- the entry point ------------------------------------------------------------------------------------------


def teach(
    base: str | os.PathLike | AsitForAudioClassification,
    examples: Mapping[str, Iterable] | str | os.PathLike,
    background: Iterable | str | os.PathLike | None = None,
    *,
    out: str | os.PathLike | None = None,
    cross_validation: bool = True,
    device: str | None = None,
    progress: Callable[[str, float], None] | None = None,
    **settings: Any,
) -> TeachResult:
    """Teach a classifier the classes in ``examples`` (and a no-event answer from ``background``).

    Args:
        base: a backbone preset (``"tiny-fb"``, ``"base"``, ``"base-random"``), a Hub id or encoder folder, or a
            trained ASiT checkpoint (directory or model: its backbone, and its pooling as the start).
        examples: ``{class: [clips]}`` (16 kHz arrays, paths, bytes, file objects) or a folder ``class/clip.ext``
            (its ``background/`` subfolder is background).
        background: recordings of the room with no event (clips or a folder); they become the no-event answer.
        out: save the model here (``save_pretrained``, plus ``examples.json`` and ``teach_report.json``); files
            already there that are not the model's are left alone.
        cross_validation: estimate accuracy on held-out clips (a few more head trainings, each a second or so).
        device: torch device (default: CUDA when available, else CPU).
        progress: called with ``(stage, fraction)``; stages ``"embedding"``, ``"training"``, ``"checking"``.
        **settings: :class:`TeachSettings` fields (``views=0``, ``augment=("shift",)``, ``steps=300``, ...).

    Raises:
        TeachError: unusable examples (the message names which and why).
    """
    from .runtime import resolve_device

    opts = TeachSettings(**settings)
    started = time.perf_counter()
    check_base(base)
    clips, bg = read_examples(examples, background)
    check_examples(clips, bg, opts.min_clips)
    labels = list(clips) + ([NO_EVENT] if bg else [])
    window_s = _window_seconds(clips)
    model = _base_model(base, labels, window_s, opts).to(resolve_device(device))
    if bg:
        model.config.no_event_label = NO_EVENT
    items = embed_examples(model, clips, bg, labels, opts, progress)
    embedded = time.perf_counter()
    initial = _head_state(model)
    fit_head(model, items, np.arange(len(items.labels)), opts,
             progress=(lambda f: progress("training", f)) if progress else None)
    trained = time.perf_counter()
    cv = (None, 0, {}, None)
    if cross_validation:  # after the model is ready: the page and the widget can use it while this runs
        final = _head_state(model)

        def fresh() -> AsitForAudioClassification:  # every fold starts where the final model started
            model.load_state_dict(initial, strict=False)
            return model

        cv = cross_validate(fresh, items, labels, opts)
        model.load_state_dict(final, strict=False)
        if progress:
            progress("checking", 1.0)
    checked = time.perf_counter()
    report = TeachReport(
        classes=list(clips), clips_per_class={k: len(v) for k, v in clips.items()}, background_clips=len(bg),
        background_seconds=round(sum(c.seconds for c in bg), 3), no_event_label=NO_EVENT if bg else None,
        clip_seconds=window_s, views=list(opts.augment) if opts.views else [], cv_accuracy=cv[0], cv_folds=cv[1],
        cv_per_class=cv[2], chance=cv[3], seconds=0.0, seconds_to_model=trained - started,
        embed_seconds=embedded - started, train_seconds=trained - embedded, cv_seconds=checked - trained,
        base=_base_name(base), steps=opts.steps)
    listing = [{"class": name, "source": c.source, "seconds": round(c.seconds, 3)}
               for name, group in clips.items() for c in group]
    listing += [{"class": NO_EVENT, "source": c.source, "seconds": round(c.seconds, 3), "background": True}
                for c in bg]
    report.seconds = time.perf_counter() - started
    result = TeachResult(model.eval(), report, listing)
    if out is not None:
        result.out = save_taught(result, out)
        report.seconds = time.perf_counter() - started
    return result


def check_out_dir(out: str | os.PathLike, examples: str | os.PathLike | None = None, overwrite: bool = False) -> None:
    """Refuse an ``out`` that would lose work: the examples folder itself (or one of its class folders), or a
    checkpoint that :func:`teach` did not write (a trained model), unless ``overwrite``."""
    out = Path(out).resolve()
    if examples is not None and isinstance(examples, (str, os.PathLike)):
        root = Path(examples).resolve()
        if out == root or out.parent == root and (out / "config.json").exists() is False and _has_audio(out):
            raise TeachError(f"error: --out {out} is the examples folder or one of its class folders; "
                             "put the model elsewhere (the recordings stay where they are)")
    if (out / "config.json").exists() and not (out / "teach_report.json").exists() and not overwrite:
        raise TeachError(f"error: {out} holds a checkpoint that teach did not write (e.g. a trained model); "
                         "choose another --out, or pass --overwrite to replace it")


def _has_audio(folder: Path) -> bool:
    return folder.is_dir() and bool(_audio_files(folder))


def _head_state(model: AsitForAudioClassification) -> dict[str, torch.Tensor]:
    """Copies of everything but the backbone (pooling, layer weights, head)."""
    return {k: v.detach().clone() for k, v in model.state_dict().items() if not k.startswith("backbone.")}


def _base_name(base) -> str:
    if isinstance(base, AsitForAudioClassification):
        return getattr(base.config, "_name_or_path", "") or "a trained ASiT model"
    return str(base)


def save_taught(result: TeachResult, out: str | os.PathLike) -> Path:
    """The model as an ordinary checkpoint in ``out``, with ``examples.json`` and ``teach_report.json``; each file
    written beside and moved into place (``os.replace``), the report last. Other files in ``out`` stay."""
    out = Path(out)
    out.mkdir(parents=True, exist_ok=True)
    tmp = out / ".tmp-teach"
    shutil.rmtree(tmp, ignore_errors=True)
    from transformers.utils import logging as hf_logging

    bars = hf_logging.is_progress_bar_enabled()
    hf_logging.disable_progress_bar()  # a "Writing model shards" bar for a one-file checkpoint is noise
    try:
        result.model.save_pretrained(tmp, safe_serialization=True)
    finally:
        if bars:
            hf_logging.enable_progress_bar()
    atomic_write_text(tmp / "examples.json", json.dumps(result.examples, indent=1))
    atomic_write_text(tmp / "teach_report.json", json.dumps(result.report.to_dict(), indent=1, default=json_default))
    names = sorted(p.name for p in tmp.iterdir())
    for name in [n for n in names if n != "teach_report.json"] + ["teach_report.json"]:
        os.replace(tmp / name, out / name)
    shutil.rmtree(tmp, ignore_errors=True)
    return out
