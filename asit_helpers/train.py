"""Training on a clip cache with Hugging Face Accelerate: one loop for one CPU, one GPU, or many GPUs / nodes.

    result = train(cache, "checkpoints/demo", preset="tiny", mode="full", epochs=12)
    result.history          # one dict per epoch: train_loss, val_loss, val_accuracy, val_macro_f1, lr, seconds
    result.model            # the best model (by validation macro-F1), also saved in checkpoints/demo/

Modes: ``head`` (backbone frozen: pooling + head train), ``partial`` (top ``top_layers`` transformer layers too),
``full`` (everything but the convolutional feature encoder, which stays frozen unless
``freeze_feature_encoder=False``). In ``head`` mode the *cached-embedding fast path* is on by default: the
frozen backbone runs once over the cache (float16 hidden states on disk, :class:`~asit_helpers.batches.EmbeddingStore`)
and each epoch only runs pooling + head, in seconds on a CPU. In ``partial`` mode the fast path caches the input of
the first trained layer instead (plus ``cached_views`` augmented views per training clip) and each epoch runs only
the top layers, pooling and head; ``fast=False`` (``--no-fast``) runs the frozen layers every step. The result is
always a normal, full :class:`~asit_helpers.model.AsitForAudioClassification` checkpoint.

Why Accelerate rather than ``Trainer``: the same few lines give device placement, DDP under ``torchrun`` /
``accelerate launch`` (gloo on CPU, NCCL on GPU), bf16/fp16 autocast, gradient accumulation and
``save_state``/``load_state`` for resume, while the loop stays readable for students and can feed either
waveforms or cached hidden states through the same model.

Checkpoint directory ``out/`` (a Hugging Face model directory)::

    config.json  model.safetensors  preprocessor_config.json   # the best model (save_pretrained)
    training_args.json  metrics.json                           # how it was trained, per-epoch history
    resume/state-<step>/                                       # last training state (removed when done)

Every file is written to a temporary name and moved into place with ``os.replace``; a resume state is a
complete directory renamed into place, so a kill at any moment leaves the last complete state to resume from.
Data order and augmentation are seeded per ``(seed, epoch, clip)`` and the RNG states (dropout) are saved with
the state, so a resumed run ends with the same weights and metrics as an uninterrupted one.
"""

from __future__ import annotations

import json
import math
import os
import random
import shutil
import time
import warnings
from contextlib import contextmanager
from dataclasses import asdict, dataclass, field, fields
from pathlib import Path
from typing import Any, Callable, Sequence

import numpy as np
import torch
from safetensors.torch import load_file, save_file
from torch import nn
from torch.utils.data import DataLoader

from .batches import (Augment, ClipDataset, EmbeddingDataset, EmbeddingStore, EpochSampler, LengthGroupedBatchSampler,
                      WaveformCollator, check_min_length)
from .cache import AudioCache
from .files import atomic_write_text, json_default
from .messages import OutOfMemoryError, out_of_memory
from .model import BASE_CHECKPOINT, POOLINGS, AsitForAudioClassification
from .runtime import (PRECISIONS, PrecisionChoice, check_precision, describe_device, require_hub_model, resolve_device,
                      resolve_precision)

MODES = ("head", "partial", "full")
BALANCE = ("none", "weights", "sampler")
METRICS = ("macro_f1", "accuracy")
_STATE_PREFIX = "state-"
#: each process's RNG states in a resume state (see :func:`save_rng_states`)
_RNG_FILE = "rng_states_{rank}.safetensors"


def _setting(default=None, help: str = "", *, factory=None, **extra):
    """A :class:`TrainArgs` field: its default and the help ``asit train --help`` shows (written once, here)."""
    if factory is not None:
        return field(default_factory=factory, metadata={"help": help, **extra})
    return field(default=default, metadata={"help": help, **extra})


@dataclass
class TrainArgs:
    """Everything that decides a training run (saved as ``training_args.json``; a resume must match it).

    Each field's default is the ``base`` preset's recipe; :meth:`for_preset` applies another preset's recipe.
    The help of every field is in its metadata, and ``asit train`` makes one flag per field from it.
    """

    preset: str = _setting("base", "backbone and its recipe: base (facebook/wav2vec2-base), tiny-fb (offline, "
                                   "trains from scratch on a CPU), a Hub id or a folder (base's recipe); base-random "
                                   "is for speed measurements")
    pooling: str = _setting("attention", "attention, multihead or mean pooling over the frames", choices=POOLINGS)
    model_kwargs: dict = _setting(factory=dict, help="other AsitConfig fields as JSON, e.g. '{\"num_heads\": 4, "
                                      "\"layer_weighted_sum\": true, \"label_smoothing\": 0.1}'")
    mode: str = _setting("full", "head: backbone frozen (cached-embedding fast path); partial: also the top "
                                 "--top-layers transformer layers; full: the whole backbone", choices=MODES)
    top_layers: int = _setting(2, "transformer layers trained in partial mode")
    freeze_feature_encoder: bool = _setting(True, "keep the convolutional front end frozen (the usual choice for "
                                                  "a pretrained wav2vec2; a random-initialised one must train it)")
    fast: bool | None = _setting(None, "cached fast path: the frozen part of the backbone runs once per clip (default: "
                                       "on in head and partial mode; --no-fast runs it every epoch)")
    cached_views: int = _setting(4, "partial mode's fast path: augmented views cached per training clip; each epoch "
                                    "reads the clean clip or one view (0: clean only; needs augment)")
    epochs: int = _setting(15, "passes over the train split")
    batch_size: int = _setting(8, "clips per batch on each device")
    grad_accum: int = _setting(2, "batches per optimiser step (effective batch = batch size x this x devices)")
    lr_head: float = _setting(1e-3, "AdamW learning rate of the pooling and the head")
    lr_backbone: float = _setting(3e-5, "AdamW learning rate of the trained backbone layers")
    weight_decay: float = _setting(0.01, "AdamW weight decay")
    warmup_ratio: float = _setting(0.1, "share of all steps with a linear warmup (then cosine decay)")
    max_grad_norm: float = _setting(1.0, "gradient clipping norm (0: off)")
    balance: str = _setting("none", "class imbalance: none, weights (class-weighted loss) or sampler (balanced "
                                    "sampling)", choices=BALANCE)
    augment: Augment | None = _setting(factory=Augment, help="waveform augmentation (gain, shift, noise; not on the fast "
                                                       "path, whose backbone outputs are computed once)", none="off")
    mixup_alpha: float = _setting(0.0, "mixup of pairs in a batch with Beta(alpha, alpha) weights (0: off)")
    early_stopping: int | None = _setting(None, "stop after this many epochs without a better validation metric",
                                         none="off")
    metric: str = _setting("macro_f1", "validation metric that picks the best epoch", choices=METRICS)
    gradient_checkpointing: bool = _setting(False, "recompute backbone activations in backward: less memory, "
                                                   "slower steps")
    precision: str = _setting("auto", "auto (bf16 on GPUs with native bf16, fp16 with a gradient scaler on T4/V100, "
                                      "fp32 on a CPU), fp32, bf16 or fp16; `asit env` shows what auto picks",
                              choices=PRECISIONS)
    save_every: int = _setting(50, "optimiser steps between resume states (also saved at every epoch end)")
    seed: int = _setting(0, "seeds the model's initialisation, data order, augmentation and dropout")
    num_workers: int = _setting(0, "DataLoader worker processes (0: load in the main process)")

    def __post_init__(self):
        if isinstance(self.augment, dict):
            aug = dict(self.augment)
            for key in ("noise_snr_db", "noise_colors"):
                if key in aug:
                    aug[key] = tuple(aug[key])
            self.augment = Augment(**aug)
        if self.mode not in MODES:
            raise ValueError(f"mode must be one of {MODES}, got {self.mode!r}")
        if self.balance not in BALANCE:
            raise ValueError(f"balance must be one of {BALANCE}, got {self.balance!r}")
        if self.metric not in METRICS:
            raise ValueError(f"metric must be one of {METRICS}, got {self.metric!r}")
        check_precision(self.precision)
        if self.fast and self.mode == "full":
            raise ValueError("the cached fast path needs mode='head' or 'partial' (a frozen part of the backbone)")
        if self.fast and self.mode == "partial" and self.model_kwargs.get("layer_weighted_sum"):
            raise ValueError("partial mode's fast path cannot cache layer_weighted_sum (it pools every layer); "
                             "use fast=False (--no-fast)")
        if int(self.cached_views) < 0:
            raise ValueError(f"cached_views must be 0 or more, got {self.cached_views}")
        for name in ("epochs", "batch_size", "grad_accum", "save_every"):
            if int(getattr(self, name)) < 1:
                raise ValueError(f"{name} must be at least 1, got {getattr(self, name)}")

    @classmethod
    def for_preset(cls, preset: str = "base", **overrides: Any) -> "TrainArgs":
        """The settings of ``preset``'s recipe, with ``overrides`` (any field) on top.

        A Hub id or a folder (a pretrained backbone) gets ``base``'s recipe.

        Raises:
            TypeError: an override that is not a field.
        """
        unknown = set(overrides) - {f.name for f in fields(cls)}
        if unknown:
            raise TypeError(f"unknown training argument(s) {sorted(unknown)}; see TrainArgs")
        recipe = PRESETS.get(preset, PRESETS["base"]).recipe
        return cls(preset=preset, **{**recipe, **overrides})

    @property
    def use_fast_path(self) -> bool:
        if self.fast is not None:
            return bool(self.fast)
        return self.mode == "head" or (self.mode == "partial" and not self.model_kwargs.get("layer_weighted_sum"))

    def to_dict(self) -> dict:
        d = asdict(self)
        d["augment"] = self.augment.to_dict() if self.augment is not None else None
        return d

    def differences(self, other: dict) -> list[str]:
        """Fields that change the result and differ from a saved run's ``other`` (for resume)."""
        ignore = {"num_workers", "save_every", "gradient_checkpointing"}  # same result, other memory and speed
        mine = json.loads(json.dumps(self.to_dict()))
        return [k for k in mine if k not in ignore and mine[k] != other.get(k)]


@dataclass(frozen=True)
class Preset:
    """A backbone and the training recipe that works for it.

    Attributes:
        backbone: what :meth:`AsitForAudioClassification.from_backbone` builds (a preset name or Hub id).
        help: one line for ``asit train --help``.
        recipe: the :class:`TrainArgs` fields that differ from the field defaults (base's recipe).
        offline: needs no download.
        offered: listed in ``--help`` and the README (``False``: kept for the test suite only).
        measurement_only: random weights at full size, for speed measurements; ``asit train`` refuses it.
    """

    backbone: str
    help: str
    recipe: dict = field(default_factory=dict)
    offline: bool = True
    offered: bool = True
    measurement_only: bool = False


#: Presets and their recipes. ``base`` is the default; ``tiny-fb`` is the offline one (messages.OFFLINE_PRESET).
PRESETS: dict[str, Preset] = {
    "base": Preset(
        BASE_CHECKPOINT, "facebook/wav2vec2-base, pretrained (95M parameters; downloaded once, ~360 MB): "
        "fine-tunes the transformer with the front end frozen; meant for a GPU", offline=False),
    "tiny-fb": Preset(
        "tiny-fb", "a small random-initialised wav2vec2 with a learnable 25 ms filterbank front end: needs no "
        "download and trains from scratch on a CPU in minutes (the offline preset)",
        recipe=dict(mode="full", freeze_feature_encoder=False, epochs=60, batch_size=16, grad_accum=1,
                    lr_head=5e-3, lr_backbone=5e-3, mixup_alpha=0.2)),
    "base-random": Preset(
        "base-random", "wav2vec2-base's size with random weights: for speed measurements only (it does not learn "
        "in a CPU budget; asit train refuses it)", recipe=dict(freeze_feature_encoder=False), measurement_only=True),
    # The test suite's miniature (a 7-layer conv front end at 1/1000 of the size): fast, but it does not learn
    # in any short recipe, so it is not offered to users.
    "tiny": Preset("tiny", "test fixture", recipe=dict(epochs=10, batch_size=16, grad_accum=1, lr_backbone=1e-4),
                   offered=False),
}


@dataclass
class TrainResult:
    """What :func:`train` returns.

    Attributes:
        model: the best model (eval mode, on CPU), identical to the one saved in ``checkpoint``.
        history: one dict per epoch: ``epoch``, ``step``, ``train_loss``, ``train_accuracy``, ``val_loss``,
            ``val_accuracy``, ``val_macro_f1``, ``lr_head``, ``lr_backbone``, ``seconds``.
        best_epoch: the epoch (1-based) whose model was kept; best_metrics: its validation metrics.
        checkpoint: the checkpoint directory.
        seconds: wall time of this call (training + validation + saving).
        resumed_from: the step a resumed run started from (None for a fresh run).
    """

    model: AsitForAudioClassification
    history: list[dict]
    best_epoch: int
    best_metrics: dict
    checkpoint: Path
    seconds: float
    resumed_from: int | None = None


# ---- small pieces -------------------------------------------------------------------------------------------


class _Forward(nn.Module):
    """Wraps the model so waveforms and cached hidden states both go through ``forward`` (DDP's gradient sync
    and Accelerate's autocast hook ``forward``; calling ``classify_hidden`` directly would bypass both).

    ``split_layer`` (partial mode): the first trained transformer layer. The frozen part below it runs as the
    fast path's cache computed it (:meth:`~AsitForAudioClassification.encode_lower`: eval mode, no gradients,
    its random draws kept out of the global RNG), with or without the cache, so both paths train the same
    thing, whatever the installed transformers draws from the RNG (wav2vec2 <= 5.15 draws a LayerDrop number in
    every layer it runs, even at layerdrop 0)."""

    def __init__(self, model: AsitForAudioClassification, split_layer: int | None = None):
        super().__init__()
        self.model = model
        self.split_layer = split_layer

    def train(self, mode: bool = True):
        super().train(mode)
        if mode and self.split_layer is not None:
            for module in self.model.lower_modules(self.split_layer):
                module.eval()  # frozen: no dropout, as in the cache
        return self

    def forward(self, input_values=None, attention_mask=None, hidden=None, frame_mask=None, **_):
        if hidden is None and self.split_layer is not None:  # partial mode without the cache
            with torch.no_grad(), torch.random.fork_rng(devices=[]):
                hidden, frame_mask = self.model.encode_lower(input_values, attention_mask, self.split_layer)
        if hidden is not None:
            if self.split_layer is not None:
                hidden = self.model.encode_upper(hidden, frame_mask, self.split_layer)
            out = self.model.classify_hidden(hidden, frame_mask)
        else:
            out = self.model(input_values, attention_mask=attention_mask)
        return out.logits


def _epoch_line(row: dict, epochs: int, best: bool) -> str:
    """One readable log line per epoch: ``epoch 3/30  train loss 2.812 acc 0.145 | val loss 2.701 acc 0.179
    macro-F1 0.150 | 5.3 s  <- best so far``."""
    line = f"epoch {row['epoch']}/{epochs}  train loss {row['train_loss']:.3f} acc {row['train_accuracy']:.3f}"
    if "val_loss" in row:
        line += f" | val loss {row['val_loss']:.3f} acc {row['val_accuracy']:.3f} macro-F1 {row['val_macro_f1']:.3f}"
    return line + f" | {row['seconds']:.1f} s" + ("  <- best so far" if best else "")


@contextmanager
def _no_transformers_bars():
    """transformers' own bars ("Writing model shards", "Loading weights") off for a block: training saves and
    reloads a one-file checkpoint, and a bar for each would bury the one line per epoch."""
    from transformers.utils import logging as hf_logging

    was_enabled = hf_logging.is_progress_bar_enabled()
    hf_logging.disable_progress_bar()
    try:
        yield
    finally:
        if was_enabled:
            hf_logging.enable_progress_bar()


def _latest_state(resume_dir: Path) -> Path | None:
    """The newest complete resume state (``state-<step>`` with ``trainer_state.json``), or None."""
    if not resume_dir.is_dir():
        return None
    states = [p for p in resume_dir.iterdir() if p.name.startswith(_STATE_PREFIX) and (p / "trainer_state.json").exists()]
    return max(states, key=lambda p: int(p.name[len(_STATE_PREFIX) :]), default=None)


def _open_cache(cache):
    return AudioCache.open(cache) if isinstance(cache, (str, Path)) else cache


def _build_model(args: TrainArgs, labels: list[str], model, clip_seconds: float) -> AsitForAudioClassification:
    if model is None:
        preset = PRESETS.get(args.preset)
        if preset is None or not preset.offline:
            require_hub_model(preset.backbone if preset else args.preset)  # fail in seconds, with what to do
        torch.manual_seed(args.seed)  # the head's initialisation is part of the run
        # the model's window is the cache's: predict then cuts long audio into the windows it was trained on
        config_kwargs = {"clip_seconds": clip_seconds, **args.model_kwargs}
        return AsitForAudioClassification.from_backbone(
            args.preset, labels=labels, pooling=args.pooling, **config_kwargs
        )
    if isinstance(model, (str, Path)):
        model = AsitForAudioClassification.from_pretrained(str(model))
    model_labels = [model.config.id2label[i] for i in range(model.config.num_labels)]
    if model_labels != list(labels):
        raise ValueError(f"the model's labels {model_labels} differ from the cache's {list(labels)}")
    model.config.clip_seconds = clip_seconds  # fine-tuned on this cache's windows: predict uses them
    return model


def _set_trainable(model: AsitForAudioClassification, args: TrainArgs) -> None:
    for p in model.parameters():
        p.requires_grad = True
    if args.mode == "head":
        model.freeze_backbone()
    elif args.mode == "partial":
        model.unfreeze_top_layers(args.top_layers)
    if args.freeze_feature_encoder:
        model.freeze_feature_encoder()


def _param_groups(model: AsitForAudioClassification, args: TrainArgs) -> list[dict]:
    backbone_ids = {id(p) for p in model.backbone.parameters()}
    groups = {"backbone": [], "head": []}
    for p in model.parameters():
        if p.requires_grad:
            groups["backbone" if id(p) in backbone_ids else "head"].append(p)
    out = [{"params": groups["head"], "lr": args.lr_head, "name": "head"}]
    if groups["backbone"]:
        out.append({"params": groups["backbone"], "lr": args.lr_backbone, "name": "backbone"})
    return out


def _class_weights(labels: np.ndarray, num_classes: int) -> torch.Tensor:
    """Inverse-frequency weights, mean 1 over the classes present (absent classes get 0)."""
    counts = np.bincount(labels, minlength=num_classes).astype(np.float64)
    w = np.where(counts > 0, counts.sum() / np.maximum(counts, 1) / max((counts > 0).sum(), 1), 0.0)
    return torch.tensor(w, dtype=torch.float32)


# ---- the entry point ----------------------------------------------------------------------------------------


def train(
    cache,
    out: str | Path = "checkpoints/run",
    *,
    model: AsitForAudioClassification | str | Path | None = None,
    resume: bool = False,
    overwrite: bool = False,
    device: str | None = None,
    embeddings_dir: str | Path | None = None,
    copy_to: str | Path | None = None,
    callbacks: Sequence[Callable[[dict], None]] = (),
    progress: bool = True,
    **kwargs: Any,
) -> TrainResult:
    """Train (or fine-tune) an ASiT classifier on a cache's ``train`` split, picking the best epoch on ``val``.

    Args:
        cache: an ``AudioCache`` (or its directory).
        out: checkpoint directory (created).
        model: a model or checkpoint directory to fine-tune (default: a new one from ``preset``).
        resume: continue from the last resume state in ``out`` (or return at once if that run finished).
        overwrite: start over even though ``out`` holds a checkpoint (otherwise that is an error).
        device: ``"cpu"`` or ``"cuda"`` (default: CUDA when available).
        embeddings_dir: where the fast path stores hidden states (default ``<cache>/embeddings/<fingerprint>``).
        copy_to: also copy the checkpoint (and resume state) here after each save, e.g. a mounted Google Drive
            folder in Colab, so a disconnect loses nothing.
        callbacks: functions called after every optimiser step with ``{"epoch", "step", "batch", "loss", "rank",
            "model"}`` (``model``: this process's model, as trained so far; ``epoch`` counts from 0).
        progress: ``tqdm.auto`` progress bars (main process only).
        **kwargs: :class:`TrainArgs` fields (``preset="tiny-fb"``, ``epochs=20``, ``augment=None``, ...); the
            preset's recipe fills in the others.

    Returns:
        a :class:`TrainResult`.

    Raises:
        OutOfMemoryError: a step ran out of memory (the resume state was saved first; the message says what to do).
    """
    args = TrainArgs.for_preset(**kwargs)
    started = time.perf_counter()
    cache = _open_cache(cache)
    accelerator, precision = _accelerator(args, device, progress)
    ckpt = _Checkpoints(accelerator, Path(out), copy_to, args, precision)
    finished = ckpt.finished_run(resume, overwrite)
    if finished is not None:
        finished.seconds = time.perf_counter() - started
        return finished
    net = _prepare_model(args, cache, model)
    run = _prepare_run(args, cache, net, accelerator, ckpt, embeddings_dir, callbacks, progress)
    state = ckpt.resume(args) if resume else None
    state = state or _State()
    run.bar.update(state.epoch * len(run.train_dl) + state.batch)
    while state.epoch < args.epochs:
        _train_epoch(run, state)
        if _end_of_epoch(run, state):
            break
        ckpt.save_state(run, state)
    run.bar.close()
    best = ckpt.finish(state)
    accelerator.free_memory()
    return TrainResult(best, state.history, state.best_epoch, state.best_metrics, ckpt.out,
                       time.perf_counter() - started, state.resumed_from)


# ---- the steps of train() -----------------------------------------------------------------------------------


@dataclass
class _State:
    """Where a run is; saved in every resume state (``trainer_state.json``) and restored from it."""

    epoch: int = 0  # epochs completed
    batch: int = 0  # batches of the current epoch already trained
    step: int = 0  # optimiser steps so far
    history: list = field(default_factory=list)
    running: dict = field(default_factory=lambda: {"loss": 0.0, "correct": 0.0, "seen": 0.0})
    best_value: float = -math.inf
    best_epoch: int = 0
    best_metrics: dict = field(default_factory=dict)
    stale: int = 0  # epochs since the best one
    resumed_from: int | None = None
    synced: tuple = (0, None)  # (batch, running sums) at the last optimiser step: where an interrupted step resumes
    epoch_started: float = 0.0

    _SAVED = ("epoch", "batch", "step", "history", "running", "best_value", "best_epoch", "best_metrics", "stale")

    def to_json(self, args: TrainArgs) -> dict:
        return {**{k: getattr(self, k) for k in self._SAVED}, "training_args": args.to_dict()}

    @classmethod
    def from_json(cls, saved: dict) -> "_State":
        state = cls(**{k: saved[k] for k in cls._SAVED})
        state.resumed_from = state.step
        return state


@dataclass
class _Run:
    """What one training run works with (built once by :func:`_prepare_run`)."""

    args: TrainArgs
    accelerator: Any
    net: AsitForAudioClassification
    fwd: "_Forward"
    optimizer: torch.optim.Optimizer
    scheduler: Any
    train_set: Any
    sampler: EpochSampler
    train_dl: DataLoader
    val_dl: DataLoader | None
    labels: list[str]
    class_weights: torch.Tensor | None
    ckpt: "_Checkpoints"
    callbacks: Sequence[Callable[[dict], None]]
    bar: Any
    progress: bool


def _accelerator(args: TrainArgs, device: str | None, progress: bool):
    """Accelerate on the resolved device and precision (one resolver for training and inference), and says which."""
    from accelerate import Accelerator
    from accelerate.utils import DistributedDataParallelKwargs

    target = resolve_device(device)
    precision = resolve_precision(args.precision, target, training=True)
    accelerator = Accelerator(
        cpu=target.type == "cpu",
        mixed_precision=precision.mixed_precision,
        gradient_accumulation_steps=args.grad_accum,
        kwargs_handlers=[DistributedDataParallelKwargs(find_unused_parameters=False)],
    )
    if accelerator.is_main_process and progress:
        print(f"device and precision: {precision.reason}")
    return accelerator, precision


def _prepare_model(args: TrainArgs, cache, model) -> AsitForAudioClassification:
    """The model to train, with the right parameters trainable; seeded, so the head's initialisation is part of
    the run."""
    from accelerate.utils import set_seed

    set_seed(args.seed)
    net = _build_model(args, [str(x) for x in cache.labels], model, cache.clip_samples / cache.sample_rate)
    _set_trainable(net, args)
    if args.gradient_checkpointing and args.mode != "head":
        net.gradient_checkpointing_enable(gradient_checkpointing_kwargs={"use_reentrant": False})
    return net


def _split_indices(cache) -> tuple[np.ndarray, np.ndarray]:
    train_idx = np.asarray(cache.indices("train"), dtype=np.int64)
    val_idx = np.asarray(cache.indices("val"), dtype=np.int64)
    if len(train_idx) == 0:
        raise ValueError("the cache has no clips in the 'train' split")
    if len(val_idx) == 0:
        warnings.warn("the cache has no 'val' split: the last epoch is kept and no validation metrics are reported")
    return train_idx, val_idx


def _cached_part(args: TrainArgs, model: AsitForAudioClassification, train_idx) -> dict:
    """What the fast path caches: head mode the backbone's output; partial mode the input of the first trained
    layer, with ``cached_views`` augmented views of each training clip (augmentation cannot be applied to
    activations after the fact). Raises ValueError when the backbone cannot be split there."""
    if args.mode == "head":
        return {}
    reason = model.split_supported()
    if reason:
        raise ValueError(f"partial mode's fast path: {reason}; use fast=False (--no-fast)")
    views = int(args.cached_views) if args.augment is not None else 0
    return {"layer": _split_layer(args, model), "views": views,
            "view_clips": train_idx, "augment": args.augment, "seed": args.seed}


def _split_layer(args: TrainArgs, model: AsitForAudioClassification) -> int | None:
    """Partial mode: the first trained transformer layer, where the backbone is split (None: not split)."""
    if args.mode != "partial" or model.split_supported():
        return None
    return max(0, len(model.backbone.encoder.layers) - args.top_layers)


def _datasets(args: TrainArgs, cache, net, accelerator, train_idx, val_idx, embeddings_dir, progress):
    """Waveform datasets, or on the fast path datasets of the frozen backbone's cached outputs."""
    label_ids = cache.label_ids()
    if not args.use_fast_path:
        return (ClipDataset(cache, train_idx, augment=args.augment, seed=args.seed), ClipDataset(cache, val_idx),
                WaveformCollator(net.feature_extractor()))
    # the main process encodes (or finds) the store; the others then open the same files
    store, cached = None, _cached_part(args, net, train_idx)
    if accelerator.is_main_process:
        store = EmbeddingStore.build(net.to(accelerator.device), cache, embeddings_dir, batch_size=args.batch_size,
                                     progress=progress, **cached)
    accelerator.wait_for_everyone()
    if not accelerator.is_main_process:
        store = EmbeddingStore.build(net.to(accelerator.device), cache, embeddings_dir, progress=False, **cached)
    return (EmbeddingDataset(store, train_idx, label_ids, use_views=True, seed=args.seed),
            EmbeddingDataset(store, val_idx, label_ids), None)


def _prepare_run(args, cache, net, accelerator, ckpt, embeddings_dir, callbacks, progress) -> _Run:
    """Loaders, optimiser and schedule, handed to Accelerate."""
    from tqdm.auto import tqdm
    from transformers import get_cosine_schedule_with_warmup

    train_idx, val_idx = _split_indices(cache)
    check_min_length(cache, np.concatenate([train_idx, val_idx]), net)  # clear error, not a conv crash
    train_set, val_set, collate = _datasets(args, cache, net, accelerator, train_idx, val_idx, embeddings_dir,
                                            progress)
    train_labels = cache.label_ids()[train_idx]
    sampler = EpochSampler(train_labels, seed=args.seed, balanced=args.balance == "sampler")
    # own generators: creating a DataLoader iterator otherwise draws from the global RNG, which would shift the
    # dropout masks of a resumed run (its iterator is created at a different point of the RNG stream)
    loader_kw = dict(batch_size=args.batch_size, collate_fn=collate, num_workers=args.num_workers,
                     generator=torch.Generator().manual_seed(args.seed))
    if collate is not None and not net.config.backbone_masks_input:
        # group-norm encoders take no mask, so padding changes their outputs: training batches group similar
        # lengths, validation batches hold one length only (what predict and evaluate see); issue 17
        loader_kw.pop("batch_size")
        train_dl = DataLoader(train_set, batch_sampler=LengthGroupedBatchSampler(
            train_set.lengths[train_idx], args.batch_size, order=sampler), **loader_kw)
        val_dl = DataLoader(val_set, batch_sampler=LengthGroupedBatchSampler(
            val_set.lengths[val_idx], args.batch_size, equal_lengths=True), **loader_kw) if len(val_idx) else None
    else:
        train_dl = DataLoader(train_set, sampler=sampler, drop_last=False, **loader_kw)
        val_dl = DataLoader(val_set, shuffle=False, **loader_kw) if len(val_idx) else None

    total_steps = math.ceil(len(train_dl) / args.grad_accum) * args.epochs
    optimizer = torch.optim.AdamW(_param_groups(net, args), weight_decay=args.weight_decay)
    scheduler = get_cosine_schedule_with_warmup(optimizer, int(args.warmup_ratio * total_steps), total_steps)
    weights = _class_weights(train_labels, len(cache.labels)) if args.balance == "weights" else None
    split_layer = _split_layer(args, net)
    prepared = accelerator.prepare(_Forward(net, split_layer), optimizer, train_dl, scheduler, *([val_dl] if val_dl else []))
    fwd, optimizer, train_dl, scheduler = prepared[:4]
    # One bar for the whole run and one printed line per epoch: a notebook shows one block, not one per epoch.
    bar = tqdm(total=args.epochs * len(train_dl), unit="batch", disable=not (progress and accelerator.is_main_process))
    return _Run(args, accelerator, net, fwd, optimizer, scheduler, train_set, sampler, train_dl,
                prepared[4] if val_dl else None, [str(x) for x in cache.labels],
                weights.to(accelerator.device) if weights is not None else None, ckpt, callbacks, bar, progress)


def _train_epoch(run: _Run, state: _State) -> None:
    """One pass over the train split (from ``state.batch`` on a resumed epoch); a resume state every
    ``save_every`` optimiser steps."""
    args, accelerator = run.args, run.accelerator
    run.sampler.set_epoch(state.epoch)
    run.train_set.set_epoch(state.epoch)
    state.epoch_started = time.perf_counter()
    run.fwd.train()
    if args.mode == "head":
        run.net.backbone.eval()  # frozen: no dropout or SpecAugment masking, the same outputs the fast path caches
    loader = accelerator.skip_first_batches(run.train_dl, state.batch) if state.batch else run.train_dl
    # Accelerate's loaders call sampler.set_epoch(<their own iteration count>) when iterated; a fresh
    # skip-loader counts from 0, so tell it the epoch or a resumed epoch would replay epoch 0's order
    loader.set_epoch(state.epoch)
    run.bar.set_description(f"epoch {state.epoch + 1}/{args.epochs}")
    state.synced = (state.batch, dict(state.running))
    for batch in loader:
        labels = batch.pop("labels")
        batch.pop("index", None)
        try:
            loss, logits = _train_step(run, state, batch, labels)
        except Exception as exc:
            if not is_out_of_memory(exc):
                raise
            raise _out_of_memory(run, state, exc) from None
        state.batch += 1
        run.bar.update(1)
        state.running["loss"] += float(loss.detach()) * len(labels)
        state.running["correct"] += float((logits.argmax(-1) == labels).sum())
        state.running["seen"] += len(labels)
        if accelerator.sync_gradients:
            _after_optimiser_step(run, state, float(loss.detach()))
    state.batch = 0


def _train_step(run: _Run, state: _State, batch: dict, labels: torch.Tensor):
    """Forward, loss (with mixup), backward; the optimiser steps every ``grad_accum`` batches."""
    args, accelerator, smoothing = run.args, run.accelerator, run.net.config.label_smoothing
    with accelerator.accumulate(run.fwd):
        inputs, targets_b, lam = batch, None, 1.0
        if args.mixup_alpha > 0:
            # the pair and the weight come from a generator of (seed, epoch, batch): replayable
            g = np.random.default_rng([args.seed, state.epoch, state.batch, accelerator.process_index])
            lam = float(g.beta(args.mixup_alpha, args.mixup_alpha))
            perm = torch.as_tensor(g.permutation(len(labels)), device=labels.device)
            inputs = _mix(batch, perm, lam)
            targets_b = labels[perm]
        logits = run.fwd(**inputs).float()
        loss = _loss(logits, labels, run.class_weights, smoothing)
        if targets_b is not None:
            loss = lam * loss + (1 - lam) * _loss(logits, targets_b, run.class_weights, smoothing)
        accelerator.backward(loss)
        if accelerator.sync_gradients and args.max_grad_norm:
            accelerator.clip_grad_norm_(run.fwd.parameters(), args.max_grad_norm)
        run.optimizer.step()
        run.scheduler.step()
        run.optimizer.zero_grad(set_to_none=True)
    return loss, logits


def _after_optimiser_step(run: _Run, state: _State, loss: float) -> None:
    state.step += 1
    state.synced = (state.batch, dict(state.running))
    run.bar.set_postfix(loss=f"{state.running['loss'] / max(state.running['seen'], 1):.3f}")
    for cb in run.callbacks:
        cb({"epoch": state.epoch, "step": state.step, "batch": state.batch, "loss": loss,
            "rank": run.accelerator.process_index, "model": run.net})
    if state.step % run.args.save_every == 0 and state.batch < len(run.train_dl):
        run.ckpt.save_state(run, state)


def _end_of_epoch(run: _Run, state: _State) -> bool:
    """Reduce the running sums over ranks, validate, keep the best model; True when training should stop."""
    args, accelerator = run.args, run.accelerator
    sums = accelerator.reduce(torch.tensor([state.running["loss"], state.running["correct"], state.running["seen"]],
                                           device=accelerator.device, dtype=torch.float64), reduction="sum")
    state.running = {"loss": 0.0, "correct": 0.0, "seen": 0.0}
    row = {"epoch": state.epoch + 1, "step": state.step, "train_loss": (sums[0] / sums[2]).item(),
           "train_accuracy": (sums[1] / sums[2]).item()}
    if run.val_dl is not None:
        row.update(_validate(run.fwd, run.val_dl, accelerator, run.labels, run.class_weights,
                             run.net.config.label_smoothing))
    lrs = {g.get("name", str(i)): g["lr"] for i, g in enumerate(run.optimizer.param_groups)}
    row["lr_head"], row["lr_backbone"] = lrs.get("head"), lrs.get("backbone")
    row["seconds"] = time.perf_counter() - state.epoch_started
    state.history.append(row)
    value = row.get(f"val_{args.metric}", -row["train_loss"]) if run.val_dl is not None else state.epoch
    if value > state.best_value:
        state.best_value, state.best_epoch, state.stale = value, state.epoch + 1, 0
        state.best_metrics = {k: v for k, v in row.items() if k.startswith("val_")}
        run.ckpt.save_best(run, state)
    else:
        state.stale += 1
    accelerator.wait_for_everyone()
    state.epoch += 1
    if accelerator.is_main_process and run.progress:
        run.bar.write(_epoch_line(row, args.epochs, best=state.best_epoch == state.epoch))
    stop_early = args.early_stopping is not None and state.stale >= args.early_stopping
    return stop_early or state.epoch == args.epochs


def is_out_of_memory(exc: BaseException) -> bool:
    """A CUDA or CPU allocation failure (torch raises ``OutOfMemoryError`` on CUDA, a ``RuntimeError`` on CPU)."""
    if isinstance(exc, (torch.OutOfMemoryError, MemoryError)):
        return True
    text = str(exc)
    return isinstance(exc, RuntimeError) and ("out of memory" in text.lower() or "can't allocate memory" in text)


def _memory_in_use(device: torch.device) -> str:
    if device.type == "cuda":
        free, total = torch.cuda.mem_get_info(device)
        return (f"{torch.cuda.max_memory_allocated(device) / 2**30:.1f} GB allocated at the peak, "
                f"{(total - free) / 2**30:.1f} of {total / 2**30:.1f} GB in use")
    import psutil  # an Accelerate dependency

    rss, total = psutil.Process().memory_info().rss, psutil.virtual_memory().total
    return f"this process {rss / 2**30:.1f} GB of {total / 2**30:.1f} GB RAM"


def _out_of_memory(run: _Run, state: _State, exc: BaseException) -> OutOfMemoryError:
    """Save the run as of its last optimiser step, then explain (batch size, memory in use, what to do)."""
    run.optimizer.zero_grad(set_to_none=True)  # the failed step's partial gradients: gone, and their memory
    if run.accelerator.device.type == "cuda":
        torch.cuda.empty_cache()
    memory = _memory_in_use(run.accelerator.device)
    state.batch, state.running = state.synced[0], state.synced[1] or state.running
    saved = None
    try:
        if run.accelerator.num_processes == 1:
            saved = run.ckpt.save_state(run, state)
    except Exception as save_error:  # noqa: BLE001 - the explanation matters more; say the state is older
        warnings.warn(f"could not save the resume state after running out of memory: {save_error}")
    run.bar.close()
    text = out_of_memory(batch_size=run.args.batch_size, device=describe_device(run.accelerator.device),
                         memory=memory, resume=str(saved) if saved else None, grad_accum=run.args.grad_accum,
                         preset=run.args.preset)
    return OutOfMemoryError(f"{text}\n  ({type(exc).__name__}: {' '.join(str(exc).split())[:160]})")


def save_rng_states(path: Path) -> None:
    """Write the global RNG states (torch CPU and CUDA, numpy, Python) as tensors in a safetensors file.

    Accelerate's ``save_state`` saves them too, but its ``load_state`` reads them back with ``torch.load``, and
    where that fails it only logs at info level and trains on with whatever the RNGs hold: numpy < 1.25 under
    torch >= 2.6 (``weights_only`` refuses numpy's uint32 dtype), accelerate 0.30 to 1.15 alike. The resumed run
    then drew other dropout and SpecAugment masks than the interrupted one. Plain tensors load everywhere."""
    keys, pos, has_gauss, gauss = np.random.get_state(legacy=True)[1:]
    version, internal, gauss_next = random.getstate()
    tensors = {
        "torch": torch.get_rng_state(),
        "numpy": torch.tensor([*keys.tolist(), pos, has_gauss], dtype=torch.int64),
        "numpy_gauss": torch.tensor([gauss], dtype=torch.float64),
        "python": torch.tensor([version, *internal], dtype=torch.int64),
        "python_gauss": torch.tensor([] if gauss_next is None else [gauss_next], dtype=torch.float64),
    }
    if torch.cuda.is_available() and torch.cuda.is_initialized():
        tensors.update({f"cuda_{i}": state for i, state in enumerate(torch.cuda.get_rng_state_all())})
    save_file(tensors, str(path))


def load_rng_states(path: Path) -> None:
    """Restore what :func:`save_rng_states` wrote."""
    saved = load_file(str(path))
    torch.set_rng_state(saved["torch"])
    numpy = saved["numpy"].tolist()
    np.random.set_state(("MT19937", np.asarray(numpy[:-2], dtype=np.uint32), numpy[-2], numpy[-1],
                         float(saved["numpy_gauss"][0])))
    python, gauss_next = saved["python"].tolist(), saved["python_gauss"].tolist()
    random.setstate((python[0], tuple(python[1:]), gauss_next[0] if gauss_next else None))
    cuda = [saved[f"cuda_{i}"] for i in range(len(saved)) if f"cuda_{i}" in saved]
    if cuda and torch.cuda.is_available():
        torch.cuda.set_rng_state_all(cuda[: torch.cuda.device_count()])


class _Checkpoints:
    """The checkpoint directory: the best model, resume states, the final metrics; every write atomic."""

    def __init__(self, accelerator, out: Path, copy_to, args: TrainArgs, precision: PrecisionChoice):
        self.accelerator, self.out, self.copy_to, self.args, self.precision = accelerator, out, copy_to, args, precision
        self.resume_dir = out / "resume"
        self.metrics_path = out / "metrics.json"
        self.main = accelerator.is_main_process

    def finished_run(self, resume: bool, overwrite: bool) -> TrainResult | None:
        """A finished run to return as it is (``resume=True`` on a completed run), or None to train; refuses to
        train over a run unless ``overwrite``."""
        out, state_dir = self.out, _latest_state(self.resume_dir)
        if resume and state_dir is None and self.metrics_path.exists():
            done = json.loads(self.metrics_path.read_text())
            if done.get("completed"):
                diff = self.args.differences(done.get("training_args", {}))
                if diff:
                    raise ValueError(f"{out}: finished run used different settings for {diff}")
                with _no_transformers_bars():
                    best = AsitForAudioClassification.from_pretrained(str(out)).eval()
                return TrainResult(best, done["history"], done["best_epoch"], done["best"], out, 0.0,
                                   resumed_from=done.get("steps"))
        if not resume and not overwrite and (self.metrics_path.exists() or state_dir is not None):
            raise FileExistsError(f"{out} already holds a training run: pass resume=True to continue it "
                                  "or overwrite=True to start over")
        if overwrite and self.main and not resume:
            shutil.rmtree(self.resume_dir, ignore_errors=True)
        if self.main:
            out.mkdir(parents=True, exist_ok=True)
        self.accelerator.wait_for_everyone()
        return None

    def resume(self, args: TrainArgs) -> _State | None:
        """The state of the interrupted run (model, optimiser, RNGs restored into Accelerate), or None."""
        state_dir = _latest_state(self.resume_dir)
        if state_dir is None:
            return None
        saved = json.loads((state_dir / "trainer_state.json").read_text())
        diff = args.differences(saved["training_args"])
        if diff:
            raise ValueError(f"{state_dir}: cannot resume, these settings differ from the interrupted run: {diff}")
        self.accelerator.load_state(str(state_dir))
        rng_file = state_dir / _RNG_FILE.format(rank=self.accelerator.process_index)
        if rng_file.exists():  # states written before this file existed rely on Accelerate's own restore
            load_rng_states(rng_file)
        state = _State.from_json(saved)
        if self.main:
            print(f"resuming {self.out} from step {state.step} (epoch {state.epoch + 1}, batch {state.batch})")
        return state

    def save_state(self, run: _Run, state: _State) -> Path:
        """A complete resume state, renamed into place; older states are removed afterwards."""
        final = self.resume_dir / f"{_STATE_PREFIX}{state.step:08d}"
        tmp = self.resume_dir / f".tmp-{_STATE_PREFIX}{state.step:08d}"
        if self.main:
            shutil.rmtree(tmp, ignore_errors=True)
            tmp.mkdir(parents=True, exist_ok=True)
        self.accelerator.wait_for_everyone()
        self.accelerator.save_state(str(tmp))
        save_rng_states(tmp / _RNG_FILE.format(rank=self.accelerator.process_index))
        self.accelerator.wait_for_everyone()
        if self.main:
            atomic_write_text(tmp / "trainer_state.json", json.dumps(state.to_json(self.args), indent=1,
                                                                      default=json_default))
            if final.exists():
                shutil.rmtree(final)
            os.replace(tmp, final)
            for old in self.resume_dir.iterdir():
                if old != final and old.name.startswith(_STATE_PREFIX):
                    shutil.rmtree(old, ignore_errors=True)
            _copy_out(self.out, self.copy_to)
        self.accelerator.wait_for_everyone()
        return final

    def save_best(self, run: _Run, state: _State) -> None:
        if not self.main:
            return
        unwrapped = self.accelerator.unwrap_model(run.fwd).model
        tmp = self.out / ".tmp-best"
        shutil.rmtree(tmp, ignore_errors=True)
        with _no_transformers_bars():  # one "Writing model shards" bar per better epoch would bury the log
            unwrapped.save_pretrained(tmp, safe_serialization=True)
        atomic_write_text(tmp / "training_args.json", json.dumps(_args_record(self.args, self.precision), indent=1))
        summary = _metrics_summary(self.args, state.history, state.best_epoch, state.best_metrics, state.step,
                                   completed=False)
        atomic_write_text(tmp / "metrics.json", json.dumps(summary, indent=1, default=json_default))
        # one os.replace per file, metrics.json last: a kill in between is repaired by the resumed run, which
        # replays this epoch (from an earlier state) and writes the best model again
        names = sorted(p.name for p in tmp.iterdir())
        for name in [n for n in names if n != "metrics.json"] + ["metrics.json"]:
            os.replace(tmp / name, self.out / name)
        shutil.rmtree(tmp, ignore_errors=True)

    def finish(self, state: _State) -> AsitForAudioClassification:
        """Final metrics, resume state removed; the best model, loaded back."""
        if self.main:
            summary = _metrics_summary(self.args, state.history, state.best_epoch, state.best_metrics, state.step,
                                       completed=True)
            atomic_write_text(self.metrics_path, json.dumps(summary, indent=1, default=json_default))
            shutil.rmtree(self.resume_dir, ignore_errors=True)
            _copy_out(self.out, self.copy_to)
        self.accelerator.wait_for_everyone()
        with _no_transformers_bars():
            return AsitForAudioClassification.from_pretrained(str(self.out)).eval()


def _args_record(args: TrainArgs, precision: PrecisionChoice) -> dict:
    """``training_args.json``: the settings, plus the precision the run used on this device and why."""
    return {**args.to_dict(), "precision_used": precision.precision, "precision_reason": precision.reason,
            "device_name": precision.device_name}


def _loss(logits, labels, weights, smoothing):
    return nn.functional.cross_entropy(logits, labels, weight=weights, label_smoothing=smoothing)


def _mix(batch: dict, perm: torch.Tensor, lam: float) -> dict:
    """Mixup of inputs: waveforms (sample masks OR-ed) or cached hidden states (frame masks OR-ed)."""
    mixed = dict(batch)
    for value_key, mask_key in (("input_values", "attention_mask"), ("hidden", "frame_mask")):
        if value_key in batch:
            mixed[value_key] = lam * batch[value_key] + (1 - lam) * batch[value_key][perm]
            mixed[mask_key] = batch[mask_key] | batch[mask_key][perm] if batch[mask_key].dtype == torch.bool \
                else torch.maximum(batch[mask_key], batch[mask_key][perm])
    return mixed


@torch.no_grad()
def _validate(fwd, val_dl, accelerator, labels, class_weights, smoothing) -> dict:
    fwd.eval()
    all_logits, all_labels = [], []
    for batch in val_dl:
        y = batch.pop("labels")
        batch.pop("index", None)
        logits = fwd(**batch).float()
        logits, y = accelerator.gather_for_metrics((logits, y))
        all_logits.append(logits.cpu())
        all_labels.append(y.cpu())
    logits, y = torch.cat(all_logits), torch.cat(all_labels)
    loss = _loss(logits, y, class_weights.cpu() if class_weights is not None else None, smoothing).item()
    from .evaluate import classification_metrics  # here, not at the top: `asit serve` builds the train flags
    # from this module, and the server's image has no pandas/scikit-learn (evaluate's imports)

    m = classification_metrics(y.numpy(), logits.argmax(-1).numpy(), labels)
    return {"val_loss": loss, "val_accuracy": m["accuracy"], "val_macro_f1": m["macro_f1"]}


def _metrics_summary(args, history, best_epoch, best, steps, completed) -> dict:
    return {
        "completed": completed,
        "best_epoch": best_epoch,
        "best": best,
        "steps": steps,
        "history": history,
        "training_args": args.to_dict(),
        "versions": {"torch": torch.__version__, **_versions()},
    }


def _versions() -> dict:
    import accelerate
    import transformers

    return {"transformers": transformers.__version__, "accelerate": accelerate.__version__}


def _copy_out(out: Path, copy_to: str | Path | None) -> None:
    """Mirror ``out`` into ``copy_to`` (e.g. Google Drive): copied beside, then swapped in."""
    if copy_to is None:
        return
    dest = Path(copy_to)
    tmp = dest.with_name(f".{dest.name}.tmp")
    shutil.rmtree(tmp, ignore_errors=True)
    shutil.copytree(out, tmp, ignore=shutil.ignore_patterns(".tmp-*"))
    old = dest.with_name(f".{dest.name}.old")
    if dest.exists():
        shutil.rmtree(old, ignore_errors=True)
        os.replace(dest, old)
    os.replace(tmp, dest)
    shutil.rmtree(old, ignore_errors=True)


def colab_drive_dir(run_name: str, mount: bool = True) -> Path | None:
    """In Colab: ``/content/drive/MyDrive/asit/<run_name>`` (mounting Drive if asked); elsewhere None.

    Pass it as ``train(..., copy_to=colab_drive_dir("demo"))`` so the checkpoint and resume state survive a
    disconnect; after reconnecting, copy it back (or train with ``out=`` that folder) and ``resume=True``.
    """
    try:
        from google.colab import drive  # type: ignore
    except ImportError:
        return None
    if mount and not Path("/content/drive/MyDrive").exists():
        drive.mount("/content/drive")
    return Path("/content/drive/MyDrive/asit") / run_name
