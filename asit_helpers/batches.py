"""From a clip cache to model-ready batches: datasets, augmentation, samplers, and the cached-embedding store.

Shared by :mod:`asit_helpers.train` and :mod:`asit_helpers.evaluate`, so training, validation and evaluation
feed the model exactly the same way (the model's own feature extractor: per-clip normalisation, zero padding,
sample mask), which is also what :func:`asit_helpers.inference.predict` does for one window.

Everything random here is seeded by ``(seed, epoch, clip index)`` rather than a global generator, so the
same epoch produces the same batches and the same augmented audio whether a run went straight through or was
killed and resumed half-way (the property the resume test checks).
"""

from __future__ import annotations

import hashlib
import json
import os
import shutil
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Iterator, Sequence

import numpy as np
import torch
from torch.utils.data import Dataset, Sampler

from .audio import SAMPLE_RATE


# ---- augmentation -------------------------------------------------------------------------------------------


@dataclass
class Augment:
    """On-the-fly waveform augmentation for training (never applied to validation or test clips).

    Attributes:
        crop_s: train on a random ``crop_s``-second piece of each clip (``None``: the whole clip).
        shift_s: circular time shift of up to ``±shift_s`` seconds within the clip's real samples.
        gain_db: random gain in ``±gain_db`` dB. With ``do_normalize`` (per-clip zero-mean unit-variance) gain
            alone cancels out; it matters together with the noise, whose level is drawn independently.
        noise_prob: probability of mixing in background noise.
        noise_snr_db: ``(low, high)`` signal-to-noise ratio range for that noise, in dB.
        noise_colors: noise spectra to draw from: ``"white"``, ``"pink"`` (1/f), ``"brown"`` (1/f²).
    """

    crop_s: float | None = None
    shift_s: float = 1.0
    gain_db: float = 6.0
    noise_prob: float = 0.5
    noise_snr_db: tuple[float, float] = (10.0, 30.0)
    noise_colors: tuple[str, ...] = ("white", "pink", "brown")

    def to_dict(self) -> dict:
        return asdict(self)


def colored_noise(n: int, color: str, rng: np.random.Generator) -> np.ndarray:
    """Unit-RMS noise of ``n`` samples with a white, pink (1/f power) or brown (1/f²) spectrum, float32."""
    white = rng.standard_normal(n)
    if color != "white":
        exponent = {"pink": 0.5, "brown": 1.0}.get(color)
        if exponent is None:
            raise ValueError(f"unknown noise colour {color!r}; use 'white', 'pink' or 'brown'")
        spectrum = np.fft.rfft(white)
        freqs = np.fft.rfftfreq(n)
        freqs[0] = freqs[1] if n > 1 else 1.0  # no infinite DC gain
        white = np.fft.irfft(spectrum / freqs**exponent, n)
    rms = np.sqrt(np.mean(white**2)) or 1.0
    return (white / rms).astype(np.float32)


def augment_clip(x: np.ndarray, aug: Augment, rng: np.random.Generator) -> np.ndarray:
    """Apply ``aug`` to one clip's real samples `(n,)` → `(m,)` float32 (``m = n`` unless cropped)."""
    x = np.asarray(x, dtype=np.float32)
    if aug.crop_s is not None:
        length = int(round(aug.crop_s * SAMPLE_RATE))
        if len(x) > length:
            start = int(rng.integers(0, len(x) - length + 1))
            x = x[start : start + length]
    if aug.shift_s and len(x) > 1:
        max_shift = min(int(aug.shift_s * SAMPLE_RATE), len(x) - 1)
        x = np.roll(x, int(rng.integers(-max_shift, max_shift + 1)))
    if aug.gain_db:
        x = x * np.float32(10 ** (rng.uniform(-aug.gain_db, aug.gain_db) / 20))
    if aug.noise_prob and rng.random() < aug.noise_prob:
        color = aug.noise_colors[int(rng.integers(len(aug.noise_colors)))]
        snr = rng.uniform(*aug.noise_snr_db)
        signal_rms = float(np.sqrt(np.mean(x.astype(np.float64) ** 2)))
        if signal_rms > 0:
            x = x + colored_noise(len(x), color, rng) * np.float32(signal_rms / 10 ** (snr / 20))
    return x.astype(np.float32, copy=False)


# ---- datasets -----------------------------------------------------------------------------------------------


class ClipDataset(Dataset):
    """Clips of a cache (``indices`` into it) as ``{"audio": (n,) float32, "label": int, "index": int}``.

    ``audio`` holds the clip's real samples only (the cache's zero padding is cut off, so the collator pads
    and masks it exactly as ``predict`` would). With ``augment``, each item is augmented with a generator
    seeded by ``(seed, epoch, index)``; call :meth:`set_epoch` at the start of every epoch.
    """

    def __init__(self, cache, indices: Sequence[int], augment: Augment | None = None, seed: int = 0):
        self.cache = cache
        self.indices = np.asarray(indices, dtype=np.int64)
        self.labels = cache.label_ids()
        self.lengths = np.asarray(cache.lengths, dtype=np.int64)
        self.augment = augment
        self.seed = int(seed)
        self.epoch = 0

    def set_epoch(self, epoch: int) -> None:
        self.epoch = int(epoch)

    def __len__(self) -> int:
        return len(self.indices)

    def __getitem__(self, i: int) -> dict:
        idx = int(self.indices[i])
        audio = np.asarray(self.cache.audio(idx), dtype=np.float32)[: max(1, int(self.lengths[idx]))]
        if self.augment is not None:
            rng = np.random.default_rng([self.seed, self.epoch, idx])
            audio = augment_clip(audio, self.augment, rng)
        return {"audio": audio, "label": int(self.labels[idx]), "index": idx}


class WaveformCollator:
    """Items of :class:`ClipDataset` → ``{"input_values": (B, S), "attention_mask": (B, S), "labels": (B,),
    "index": (B,)}`` through the model's feature extractor. A class, not a closure, so DataLoader workers can be
    spawned (Windows, macOS) as well as forked."""

    def __init__(self, feature_extractor):
        self.feature_extractor = feature_extractor

    def __call__(self, items: list[dict]) -> dict[str, torch.Tensor]:
        batch = self.feature_extractor(
            [it["audio"] for it in items],
            sampling_rate=SAMPLE_RATE,
            padding=True,
            return_attention_mask=True,
            return_tensors="pt",
        )
        return {
            "input_values": batch["input_values"],
            "attention_mask": batch["attention_mask"].long(),
            "labels": torch.tensor([it["label"] for it in items], dtype=torch.long),
            "index": torch.tensor([it["index"] for it in items], dtype=torch.long),
        }


class EmbeddingDataset(Dataset):
    """Cached backbone outputs as ``{"hidden": (T, D) float32, "frame_mask": (T,) bool, "labels", "index"}``.

    With ``use_views`` (training, on a store with augmented views), each epoch reads one version of each clip:
    the clean one or one of its views, drawn uniformly by a generator seeded with ``(seed, epoch, clip index)``, so
    a resumed epoch reads the same versions. Call :meth:`set_epoch` at the start of every epoch.
    """

    def __init__(self, store: "EmbeddingStore", indices: Sequence[int], labels: np.ndarray,
                 use_views: bool = False, seed: int = 0):
        self.store = store
        self.indices = np.asarray(indices, dtype=np.int64)
        self.labels = labels
        self.use_views = bool(use_views and store.num_views)
        self.seed = int(seed)
        self.epoch = 0

    def set_epoch(self, epoch: int) -> None:
        self.epoch = int(epoch)

    def __len__(self) -> int:
        return len(self.indices)

    def view_of(self, idx: int) -> int:
        """Which version of clip ``idx`` this epoch reads: 0 = clean, ``v`` = augmented view ``v``."""
        if not self.use_views or idx not in self.store.view_row:
            return 0
        return int(np.random.default_rng([self.seed, self.epoch, idx]).integers(0, self.store.num_views + 1))

    def _read(self, idx: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        """Hidden states and frame masks of clips ``idx`` (sorted reads of the memmaps, in ``idx``'s order)."""
        store = self.store
        hidden = np.empty((len(idx),) + store.hidden.shape[1:], dtype=np.float32)
        mask = np.empty((len(idx),) + store.frame_mask.shape[1:], dtype=bool)
        view = np.array([self.view_of(int(j)) for j in idx], dtype=np.int64)
        clean = np.flatnonzero(view == 0)
        order = clean[np.argsort(idx[clean], kind="stable")]
        hidden[order] = store.hidden[idx[order]]
        mask[order] = store.frame_mask[idx[order]]
        for k in np.flatnonzero(view > 0):
            row = store.view_row[int(idx[k])]
            hidden[k] = store.views[row, view[k] - 1]
            mask[k] = store.view_mask[row, view[k] - 1]
        return hidden, mask

    def __getitems__(self, positions: list[int]) -> list[dict]:
        """A whole batch in one call (DataLoader uses this when it exists): sorted reads of the memmaps instead of
        a Python-level read per clip, which dominates an epoch once the backbone is out of the loop."""
        idx = self.indices[np.asarray(positions, dtype=np.int64)]
        hidden, mask = self._read(idx)
        hidden_t, mask_t = torch.from_numpy(hidden), torch.from_numpy(mask)
        return [
            {"hidden": hidden_t[k], "frame_mask": mask_t[k], "labels": torch.tensor(int(self.labels[j])),
             "index": torch.tensor(int(j))}
            for k, j in enumerate(idx)
        ]

    def __getitem__(self, i: int) -> dict:
        return self.__getitems__([i])[0]


class EpochSampler(Sampler[int]):
    """A shuffled (or class-balanced) order of ``range(n)`` that depends only on ``(seed, epoch)``.

    Every rank of a distributed run builds the same order (Accelerate then gives each rank its share of the
    batches), and a resumed run rebuilds the order of the epoch it was killed in.

    Args:
        labels: label id of each item, `(n,)`; used when ``balanced``.
        shuffle: random order (training) or ``range(n)`` (evaluation).
        balanced: draw ``n`` items with replacement, each class equally likely (for imbalanced data).
    """

    def __init__(self, labels: np.ndarray, seed: int = 0, shuffle: bool = True, balanced: bool = False):
        self.labels = np.asarray(labels)
        self.seed = int(seed)
        self.shuffle = shuffle
        self.balanced = balanced
        self.epoch = 0

    def set_epoch(self, epoch: int) -> None:
        self.epoch = int(epoch)

    def __len__(self) -> int:
        return len(self.labels)

    def __iter__(self) -> Iterator[int]:
        n = len(self.labels)
        if not self.shuffle:
            return iter(range(n))
        g = torch.Generator().manual_seed(self.seed * 100_003 + self.epoch)
        if self.balanced:
            counts = np.bincount(self.labels)
            weights = torch.as_tensor(1.0 / counts[self.labels], dtype=torch.double)
            return iter(torch.multinomial(weights, n, replacement=True, generator=g).tolist())
        return iter(torch.randperm(n, generator=g).tolist())


def check_min_length(cache, indices: Sequence[int], model) -> None:
    """Refuse cache clips the model's conv front end cannot turn into a single frame.

    Such a clip alone makes the convolution raise; in a padded batch it silently gets zero real frames and still
    counts in the metrics. ``preprocess(min_samples=...)`` keeps them out of a cache in the first place.

    Raises:
        ValueError: naming how many clips, an example path and both figures.
    """
    from .audio import too_short_reason

    need = int(model.config.min_samples)
    indices = np.asarray(indices, dtype=np.int64)
    lengths = np.asarray(cache.lengths, dtype=np.int64)[indices]
    short = np.flatnonzero(lengths < need)
    if short.size:
        first = int(indices[short[0]])
        raise ValueError(
            f"{short.size} clip(s) of the cache are too short for this model, e.g. {cache.manifest['path'].iloc[first]}: "
            f"{too_short_reason(int(lengths[short[0]]), need)}; rebuild the cache with "
            f"`asit preprocess ... --min-samples {need}` (preprocess(min_samples={need}))"
        )


# ---- length grouping: no padding next to a clip of another length -------------------------------------------


def equal_length_batches(lengths: Sequence[int], batch_size: int) -> list[np.ndarray]:
    """Positions ``0..n-1`` in batches of at most ``batch_size`` whose clips all have the same length.

    For encoders that take no attention mask (group-norm wav2vec2-base, HuBERT/WavLM defaults) zero padding
    changes every frame's output, so a short clip padded beside a long one is not what :func:`predict` sees.
    Equal-length batches need no padding at all. Batches follow the first appearance of each length, positions
    keep their order within a length; with a single length this is plain consecutive batching.
    """
    lengths = np.asarray(lengths, dtype=np.int64)
    _, first, inverse = np.unique(lengths, return_index=True, return_inverse=True)
    batches = []
    for group in np.argsort(first, kind="stable"):
        members = np.flatnonzero(inverse == group)
        batches.extend(members[i : i + batch_size] for i in range(0, len(members), batch_size))
    return batches


class LengthGroupedBatchSampler(Sampler[list[int]]):
    """Batches of dataset positions whose clips have equal or similar lengths (a ``DataLoader`` batch_sampler).

    ``equal_lengths=True`` (evaluation, validation): :func:`equal_length_batches`, never any padding.
    ``equal_lengths=False`` (training): ``order`` (an :class:`EpochSampler`: shuffled or class-balanced) is cut
    into mega-batches of ``mega * batch_size`` positions, each sorted by length and cut into batches, so clips sit
    beside clips of about their length (the idea of HF Trainer's ``group_by_length``). With one length throughout
    the batches are exactly those of ``order``. ``set_epoch`` reaches ``order``, so resumed runs replay the same
    batches.
    """

    def __init__(self, lengths: Sequence[int], batch_size: int, order: Sampler | None = None,
                 equal_lengths: bool = False, mega: int = 50):
        self.lengths = np.asarray(lengths, dtype=np.int64)
        self.batch_size = int(batch_size)
        self.order = order
        self.equal_lengths = equal_lengths
        self.mega = int(mega)

    def set_epoch(self, epoch: int) -> None:
        if self.order is not None and hasattr(self.order, "set_epoch"):
            self.order.set_epoch(epoch)

    def _batches(self) -> list[list[int]]:
        order = np.asarray(list(self.order) if self.order is not None else range(len(self.lengths)), dtype=np.int64)
        if self.equal_lengths:
            return [order[b].tolist() for b in equal_length_batches(self.lengths[order], self.batch_size)]
        batches, span = [], self.mega * self.batch_size
        for i in range(0, len(order), span):
            chunk = order[i : i + span]
            chunk = chunk[np.argsort(self.lengths[chunk], kind="stable")]
            batches.extend(chunk[j : j + self.batch_size].tolist() for j in range(0, len(chunk), self.batch_size))
        return batches

    def __iter__(self) -> Iterator[list[int]]:
        return iter(self._batches())

    def __len__(self) -> int:
        if self.equal_lengths:
            _, counts = np.unique(self.lengths, return_counts=True)
            return int(sum(-(-c // self.batch_size) for c in counts))
        n = len(self.order) if self.order is not None else len(self.lengths)
        span = self.mega * self.batch_size
        return int(sum(-(-min(span, n - i) // self.batch_size) for i in range(0, n, span)))


# ---- the cached-embedding store -----------------------------------------------------------------------------


def _cache_dir(cache) -> Path | None:
    for name in ("folder", "root", "path", "directory"):
        value = getattr(cache, name, None)
        if isinstance(value, (str, os.PathLike)):
            return Path(value)
    return None


def embedding_fingerprint(model, cache, extra: dict | None = None) -> str:
    """A key for "this backbone's outputs on this cache": the backbone's weights and config, the pooling input
    (last layer or all layers), the cache's clips (manifest paths and lengths), and ``extra`` (what else decides
    the stored arrays: the layer they were taken at, the augmented views)."""
    h = hashlib.sha256()
    if extra:
        h.update(json.dumps(extra, sort_keys=True, default=str).encode())
    h.update(json.dumps(model.config.backbone_config.to_dict(), sort_keys=True, default=str).encode())
    h.update(str(bool(model.config.layer_weighted_sum)).encode())
    h.update(str(bool(model.config.do_normalize)).encode())
    for name, tensor in sorted(model.backbone.state_dict().items()):
        h.update(name.encode())
        h.update(tensor.detach().to("cpu", torch.float32).contiguous().numpy().tobytes())
    h.update(str(len(cache)).encode())
    h.update(np.asarray(cache.lengths, dtype=np.int64).tobytes())
    h.update("\n".join(map(str, cache.manifest["path"].tolist())).encode())
    return h.hexdigest()[:16]


class EmbeddingStore:
    """The frozen part of the backbone's output for every clip of a cache, on disk in float16 (numpy memmaps).

    Head mode stores the last layer (what the pooling reads); partial mode stores the input of the first trained
    transformer layer (``layer``), plus ``views`` augmented versions of each training clip, because waveform
    augmentation cannot be applied to activations after the fact.

    Layout of ``directory``: ``hidden.npy`` `(N, T, D)` (or `(N, L+1, T, D)` with ``layer_weighted_sum``),
    ``frame_mask.npy`` `(N, T)` bool; with views, ``views.npy`` `(M, V, T, D)`, ``views_mask.npy`` `(M, V, T)` and
    ``view_clips.npy`` `(M,)` (the cache indices of those clips); ``meta.json`` (written last: a directory without
    it is incomplete and is rebuilt). Arrays are written under temporary names and moved into place with
    ``os.replace``.
    """

    def __init__(self, directory: Path):
        self.directory = Path(directory)
        self.meta = json.loads((self.directory / "meta.json").read_text())
        self.hidden = np.load(self.directory / "hidden.npy", mmap_mode="r")
        self.frame_mask = np.load(self.directory / "frame_mask.npy", mmap_mode="r")
        self.layer = self.meta.get("layer")
        self.views = self.view_mask = None
        self.view_row: dict[int, int] = {}
        if self.meta.get("views"):
            self.views = np.load(self.directory / "views.npy", mmap_mode="r")
            self.view_mask = np.load(self.directory / "views_mask.npy", mmap_mode="r")
            clips = np.load(self.directory / "view_clips.npy")
            self.view_row = {int(c): i for i, c in enumerate(clips)}

    def __len__(self) -> int:
        return int(self.hidden.shape[0])

    @property
    def num_views(self) -> int:
        return 0 if self.views is None else int(self.views.shape[1])

    @classmethod
    def build(
        cls,
        model,
        cache,
        directory: str | Path | None = None,
        batch_size: int = 16,
        device: str | torch.device | None = None,
        progress: bool = True,
        *,
        layer: int | None = None,
        views: int = 0,
        view_clips: Sequence[int] = (),
        augment: Augment | None = None,
        seed: int = 0,
    ) -> "EmbeddingStore":
        """Run the frozen part of ``model`` once over every clip of ``cache`` (or reuse a complete store with the
        same fingerprint). ``directory`` defaults to ``<cache dir>/embeddings/<fingerprint>``.

        Args:
            layer: ``None``: the backbone's output (``model.encode``); an int: the input of that transformer layer
                (``model.encode_lower``), for partial mode.
            views, view_clips, augment, seed: also store ``views`` versions of the clips ``view_clips`` augmented
                with ``augment`` (view ``v`` of clip ``i`` seeded by ``(seed, 1_000_000 + v, i)``).
        """
        from tqdm.auto import tqdm

        view_clips = np.asarray(view_clips if views and augment is not None else (), dtype=np.int64)
        views = int(views) if len(view_clips) else 0
        extra = None
        if layer is not None or views:  # head-mode stores keep their old fingerprints
            extra = {"layer": layer, "views": views, "seed": int(seed),
                     "augment": augment.to_dict() if views else None,
                     "view_clips": hashlib.sha256(view_clips.tobytes()).hexdigest() if views else None}
        key = embedding_fingerprint(model, cache, extra)
        if directory is None:
            base = _cache_dir(cache)
            if base is None:
                raise ValueError("the cache has no directory; pass embeddings_dir=... to store the embeddings")
            directory = base / "embeddings" / key
        directory = Path(directory)
        if (directory / "meta.json").exists():
            store = cls(directory)
            if store.meta.get("fingerprint") == key and len(store) == len(cache):
                return store
        directory.mkdir(parents=True, exist_ok=True)
        device = torch.device(device) if device is not None else model.device
        frames = int(model.backbone._get_feat_extract_output_lengths(torch.tensor([int(cache.clip_samples)])).item())

        def encode(batch):
            inputs = batch["input_values"].to(device), batch["attention_mask"].to(device)
            return model.encode(*inputs) if layer is None else model.encode_lower(*inputs, layer)

        was_training = model.training
        model.eval()
        collate = WaveformCollator(model.feature_extractor())
        equal_lengths = not model.config.backbone_masks_input  # no mask reaches the encoder: padding would show
        written = []
        try:
            with torch.inference_mode():
                clean = ClipDataset(cache, np.arange(len(cache)))
                written += _encode_into(directory, "", clean, collate, encode, batch_size, frames, None,
                                        tqdm, progress, "encoding clips", equal_lengths)
                if views:
                    augmented = ClipDataset(cache, view_clips, augment=augment, seed=seed)
                    written += _encode_into(directory, "views", augmented, collate, encode, batch_size, frames,
                                            views, tqdm, progress, f"encoding {views} augmented views", equal_lengths)
                    tmp = directory / "view_clips.tmp.npy"
                    np.save(tmp, view_clips)
                    written.append((tmp, directory / "view_clips.npy"))
            for tmp, final in written:
                os.replace(tmp, final)
            meta = {"fingerprint": key, "clips": len(cache), "dtype": "float16", "layer": layer, "views": views}
            tmp_meta = directory / "meta.tmp.json"
            tmp_meta.write_text(json.dumps(meta, indent=1))
            os.replace(tmp_meta, directory / "meta.json")
        finally:
            model.train(was_training)
            for tmp, _ in written:
                tmp.unlink(missing_ok=True)
        return cls(directory)

    @staticmethod
    def remove(directory: str | Path) -> None:
        shutil.rmtree(directory, ignore_errors=True)


def _encode_into(directory: Path, name: str, dataset: ClipDataset, collate, encode, batch_size: int, frames: int,
                 views: int | None, tqdm, progress: bool, desc: str, equal_lengths: bool = False) -> list[tuple[Path, Path]]:
    """Encode ``dataset`` (``views`` times, each with its own augmentation seed, or once) into float16 memmaps
    under temporary names; returns ``[(temporary, final path), ...]`` for the caller to move into place.
    ``equal_lengths``: batch clips of one length only (:func:`equal_length_batches`), for encoders without a mask."""
    hidden_name, mask_name = ("views", "views_mask") if views else ("hidden", "frame_mask")
    tmp_hidden, tmp_mask = directory / f"{hidden_name}.tmp.npy", directory / f"{mask_name}.tmp.npy"
    n, rounds = len(dataset), views or 1
    if equal_lengths:
        batches = equal_length_batches(dataset.lengths[dataset.indices], batch_size)
    else:
        batches = [np.arange(start, min(n, start + batch_size)) for start in range(0, n, batch_size)]
    hidden_mm = mask_mm = None
    bar = tqdm(total=n * rounds, desc=desc, disable=not progress, unit="clip")
    for view in range(rounds):
        dataset.set_epoch(1_000_000 + view + 1)  # never a training epoch: views are their own draws
        for rows in batches:
            batch = collate([dataset[int(i)] for i in rows])
            hidden, frame_mask = encode(batch)
            lead = (n, views) if views else (n,)
            if hidden_mm is None:
                # clips are padded to the longest in the batch; size the store for the full window
                shape = lead + tuple(hidden.shape[1:-2]) + (frames, hidden.shape[-1])
                hidden_mm = np.lib.format.open_memmap(tmp_hidden, mode="w+", dtype=np.float16, shape=shape)
                mask_mm = np.lib.format.open_memmap(tmp_mask, mode="w+", dtype=bool, shape=lead + (frames,))
            t = hidden.shape[-2]
            block = np.zeros((len(rows),) + hidden_mm.shape[len(lead):], dtype=np.float16)
            block[..., :t, :] = hidden.float().cpu().numpy().astype(np.float16)
            mask_block = np.zeros((len(rows), frames), dtype=bool)
            mask_block[:, :t] = frame_mask.cpu().numpy()
            if views:
                hidden_mm[rows, view], mask_mm[rows, view] = block, mask_block
            else:
                hidden_mm[rows], mask_mm[rows] = block, mask_block
            bar.update(len(rows))
    bar.close()
    hidden_mm.flush()
    mask_mm.flush()
    del hidden_mm, mask_mm
    return [(tmp_hidden, directory / f"{hidden_name}.npy"), (tmp_mask, directory / f"{mask_name}.npy")]
