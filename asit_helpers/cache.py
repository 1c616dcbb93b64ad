"""The preprocessing cache: every clip decoded once (mono, 16 kHz, fixed length) into one memory-mapped array.

Why a raw numpy memmap and not HF ``datasets``/Arrow: the clips are equal-length float32 rows, so a flat
``(N, clip_samples)`` file is the whole format; ``np.memmap`` reads any row with no decoding, no copy and no
extra dependency (``datasets`` 4 decodes ``Audio`` through torchcodec, which needs FFmpeg and a matching torch),
training can fancy-index a batch straight out of it, and only the pages a batch touches occupy RAM (free Colab
cannot hold ESC-50 or UrbanSound8K as Python lists). Appending rows at a byte offset makes resuming trivial.

Files in a cache folder::

    waveforms.f32   float32 rows of clip_samples, row i <-> manifest row i (workers write their rows in place)
    store.jsonl     header (decode settings) + one line per finished file: its key, row, length, sample rate,
                    channels, or the reason it was rejected. Written after the row's samples are synced, so a
                    killed run never claims a row it did not finish; a torn last line is ignored.
    manifest.csv    the kept clips (path, label, label_id, category, split, group, ...)
    rejected.csv    files that could not be used (path, reason)
    cache.json      labels, settings, counts; written last — a folder without it is an unfinished run.

A file's key is its path, size and modification time, so an edited file is decoded again and nothing else is.
"""
# Decode workers (spawned processes) import this module: keep its top-level imports light (no pandas, no torch).

from __future__ import annotations

import hashlib
import json
import os
import time
import warnings
from collections import deque
from dataclasses import dataclass, field
from pathlib import Path
from typing import Callable

import numpy as np

from .audio import MIN_SAMPLES, SAMPLE_RATE, AudioError, crop_offsets, load_audio, too_short_reason
from .files import atomic_write_text

__all__ = ["AudioCache", "CacheError", "file_key", "decode_clip", "decode_many", "Store"]

FORMAT_VERSION = 1
DTYPE = np.float32


class CacheError(RuntimeError):
    """A cache folder that is missing, unfinished or inconsistent, with what to do about it."""


def file_key(path: str | os.PathLike) -> str:
    """Identity of a source file's contents for the cache: path + size + mtime (cheap; no hashing of audio)."""
    p = Path(path)
    try:
        st = p.stat()
        ident = f"{p.resolve()}|{st.st_size}|{st.st_mtime_ns}"
    except OSError:
        ident = f"{p}|missing"
    return hashlib.sha1(ident.encode("utf-8")).hexdigest()[:20]


def decode_clip(task: tuple) -> dict:
    """Decode one file into a fixed-length row and write it into its slot of the cache's data file.

    Runs in worker processes (module-level, picklable: spawn-safe). Writing the row here, at its own offset,
    means only a few numbers travel back to the parent instead of 320 KB of samples per clip through a pipe.

    Args:
        task: ``(path, clip_samples, crop_mode, max_seconds, data_path, row)``.

    Returns:
        ``{"row", "length", "orig_sr", "channels", "duration_s", "crop_start_s"}`` once the samples are written
        (to the OS; the parent makes them durable), or ``{"error": reason}`` for a file that cannot be used
        (never raises for bad audio).
    """
    path, clip_samples, crop_mode, max_seconds, data_path, row = task
    try:
        samples, info = load_audio(path, SAMPLE_RATE, max_seconds=max_seconds, name=str(path), return_info=True)
    except AudioError as exc:
        return {"error": exc.reason}
    if len(samples) < MIN_SAMPLES:  # shorter than one wav2vec2 frame: nothing any backbone could use
        return {"error": too_short_reason(len(samples), MIN_SAMPLES)}
    start = crop_offsets(samples, clip_samples, crop_mode)
    piece = samples[start : start + clip_samples]
    out = np.zeros(clip_samples, dtype=DTYPE)
    out[: len(piece)] = piece
    with open(data_path, "r+b") as f:
        f.seek(row * clip_samples * out.itemsize)
        f.write(memoryview(out))
    return {
        "row": int(row),
        "length": int(len(piece)),
        "orig_sr": int(info["sample_rate"]),
        "channels": int(info["channels"]),
        "duration_s": round(len(samples) / SAMPLE_RATE, 4),
        "crop_start_s": round(start / SAMPLE_RATE, 4),
    }


def decode_many(tasks: list[tuple]) -> list[dict]:
    """:func:`decode_clip` over a chunk of tasks (one round trip to a worker process per chunk)."""
    return [decode_clip(task) for task in tasks]


@dataclass
class Store:
    """The append-only decoded-rows store behind a cache (``waveforms.f32`` + ``store.jsonl``).

    ``rows[key]`` is the finished row's metadata (with ``"row"``); ``errors[key]`` the reason a file was rejected.
    Each decode task gets a slot (row) up front so workers can write in parallel; slots of rejected or unfinished
    files stay unused until :meth:`compact` packs the rows in manifest order.
    """

    folder: Path
    header: dict
    rows: dict = field(default_factory=dict)
    errors: dict = field(default_factory=dict)
    n_slots: int = 0
    _committer: object = field(default=None, repr=False)
    _commits: list = field(default_factory=list, repr=False)

    @property
    def data_path(self) -> Path:
        return self.folder / "waveforms.f32"

    @property
    def log_path(self) -> Path:
        return self.folder / "store.jsonl"

    @property
    def row_bytes(self) -> int:
        return int(self.header["clip_samples"]) * np.dtype(DTYPE).itemsize

    def reserve(self, count: int) -> int:
        """Claim ``count`` new slots; returns the first one's row index."""
        base = self.n_slots
        self.n_slots += count
        return base

    @classmethod
    def open(cls, folder: Path, header: dict) -> "Store":
        """Open the store in ``folder`` if it was made with the same decode settings (``header``); otherwise start
        an empty one (every row depends on those settings, so nothing old is reusable)."""
        folder.mkdir(parents=True, exist_ok=True)
        store = cls(folder, dict(header))
        lines = store.log_path.read_text(encoding="utf-8").splitlines() if store.log_path.exists() else []
        old_header = None
        if lines:
            try:
                old_header = json.loads(lines[0])
            except json.JSONDecodeError:
                old_header = None
        if old_header != store.header or not store.data_path.exists():
            store._reset()
            return store
        size = store.data_path.stat().st_size if store.data_path.exists() else 0
        owner: dict[int, str] = {}
        for line in lines[1:]:
            try:
                rec = json.loads(line)
            except json.JSONDecodeError:
                continue  # a line torn by a kill: that file is simply decoded again
            if "error" in rec:
                store.errors[rec["key"]] = rec["error"]
                store.rows.pop(rec["key"], None)
            elif (rec["row"] + 1) * store.row_bytes <= size:
                store.errors.pop(rec["key"], None)
                # Later lines are newer: a row written again for another file no longer holds the old one.
                previous = owner.get(rec["row"])
                if previous is not None and previous != rec["key"]:
                    store.rows.pop(previous, None)
                owner[rec["row"]] = rec["key"]
                store.rows[rec["key"]] = rec
        store.n_slots = 1 + max((m["row"] for m in store.rows.values()), default=-1)
        return store

    def _reset(self) -> None:
        self.rows, self.errors, self.n_slots = {}, {}, 0
        atomic_write_text(self.log_path, json.dumps(self.header) + "\n")
        with open(self.data_path, "wb"):
            pass

    def append(self, results: list[tuple[str, dict]]) -> None:
        """Record finished files (their samples are already in their slots, written by :func:`decode_clip`).

        Durability runs on a background thread, so waiting for the disk overlaps with decoding: fsync the
        samples, *then* append and fsync the log lines. The log never names a row before its samples are on
        disk, so a kill or a power cut at any moment leaves a store whose logged rows are all valid. Call
        :meth:`flush` before relying on the log.
        """
        if not results:
            return
        lines = []
        for key, res in results:
            if "error" in res:
                self.errors[key] = res["error"]
                lines.append({"key": key, "error": res["error"]})
            else:
                meta = dict(res, key=key)
                self.rows[key] = meta
                self.errors.pop(key, None)  # a file that failed before (e.g. no permission) and works now
                lines.append(meta)
        self._raise_background_error()
        if self._committer is None:
            from concurrent.futures import ThreadPoolExecutor

            self._committer = ThreadPoolExecutor(max_workers=1, thread_name_prefix="asit-cache-commit")
        self._commits.append(self._committer.submit(self._make_durable, lines))

    def _make_durable(self, lines: list[dict]) -> None:
        with open(self.data_path, "r+b") as f:
            os.fsync(f.fileno())
        with open(self.log_path, "a", encoding="utf-8", newline="\n") as f:
            f.write("".join(json.dumps(rec) + "\n" for rec in lines))
            f.flush()
            os.fsync(f.fileno())

    def _raise_background_error(self) -> None:
        done = [c for c in self._commits if c.done()]
        self._commits = [c for c in self._commits if not c.done()]
        for c in done:
            c.result()  # re-raises an OSError (disk full, ...) from the commit thread

    def flush(self) -> None:
        """Wait until every appended row is durable and logged."""
        commits, self._commits = self._commits, []
        for c in commits:
            c.result()
        if self._committer is not None:
            self._committer.shutdown(wait=True)
            self._committer = None

    def compact(self, keys: list[str]) -> None:
        """Rewrite the store so that row ``i`` holds ``keys[i]`` (dropping rows no longer wanted).

        Needed only when the set or order of wanted clips changed (a new class mapping, files added or removed);
        a plain run or a resumed run already appends in manifest order. Crash-safe: the old log is removed
        before the data file is replaced, so the worst case is decoding again, never a wrong row.
        """
        self.flush()
        if [self.rows[k]["row"] for k in keys] == list(range(len(keys))):
            # The data is already in order; only unused slots follow (truncate() drops them). Forget rows
            # no longer wanted, in the log too, so a later run may reuse their slots.
            if len(self.rows) != len(keys):
                self.rows = {k: self.rows[k] for k in keys}
                self._rewrite_log(keys)
            self.n_slots = len(keys)
            return
        present = self.data_path.stat().st_size // self.row_bytes  # trailing slots may never have been written
        old = np.memmap(self.data_path, dtype=DTYPE, mode="r", shape=(present, int(self.header["clip_samples"])))
        tmp_data = self.data_path.with_name(self.data_path.name + ".tmp")
        new_rows = {}
        with open(tmp_data, "wb") as f:
            for i, key in enumerate(keys):
                f.write(np.asarray(old[self.rows[key]["row"]]).tobytes())
                new_rows[key] = {**self.rows[key], "row": i}
            f.flush()
            os.fsync(f.fileno())
        del old
        self.log_path.unlink(missing_ok=True)
        os.replace(tmp_data, self.data_path)
        self.rows = new_rows
        self._rewrite_log(keys)
        self.n_slots = len(keys)

    def _rewrite_log(self, keys: list[str]) -> None:
        log = json.dumps(self.header) + "\n" + "".join(json.dumps(self.rows[k]) + "\n" for k in keys)
        log += "".join(json.dumps({"key": k, "error": e}) + "\n" for k, e in self.errors.items())
        atomic_write_text(self.log_path, log)

    def truncate(self) -> None:
        """Drop bytes past the last slot (left by a killed run)."""
        self.flush()
        with open(self.data_path, "r+b") as f:
            f.truncate(self.n_slots * self.row_bytes)


class AudioCache:
    """A finished preprocessing cache, opened read-only.

    Attributes:
        labels: class names in label-id order.
        manifest: DataFrame, row ``i`` <-> clip ``i`` (path, label, label_id, category, split, group, fold,
            duration_s, orig_sr, channels, length, crop_start_s, event_onset_s, event_offset_s, snr_db).
        rejected: DataFrame of files that could not be used (path, reason).
        clip_samples: samples per row (``clip_seconds * 16000``).
        waveforms: read-only ``np.memmap`` of shape ``(N, clip_samples)``, float32, zero-padded.
        lengths: int array ``(N,)`` of valid (non-padding) samples per row.

    Example::

        cache = AudioCache.open("cache/synth")
        train = cache.indices("train")
        batch = cache.waveforms[train[:8]]            # (8, 80000) float32, copied out of the memmap
    """

    def __init__(self, folder: Path, info: dict, manifest: "pd.DataFrame", rejected: "pd.DataFrame"):
        self.folder = folder
        self.info = info
        self.labels: list[str] = list(info["labels"])
        self.sample_rate: int = int(info["sample_rate"])
        self.clip_samples: int = int(info["clip_samples"])
        self.manifest = manifest
        self.rejected = rejected
        n = len(manifest)
        data = folder / "waveforms.f32"
        expected = n * self.clip_samples * np.dtype(DTYPE).itemsize
        if not data.exists() or data.stat().st_size < expected:
            raise CacheError(f"{folder}: waveforms.f32 is missing or shorter than its manifest; run preprocess again")
        self.waveforms = (
            np.memmap(data, dtype=DTYPE, mode="r", shape=(n, self.clip_samples))
            if n
            else np.zeros((0, self.clip_samples), dtype=DTYPE)
        )
        self.lengths = manifest["length"].to_numpy(dtype=np.int64)

    @classmethod
    def open(cls, folder: str | os.PathLike) -> "AudioCache":
        import pandas as pd  # imported here, not at the top: decode workers import this module and never need it

        folder = Path(folder)
        info_path = folder / "cache.json"
        if not info_path.exists():
            hint = (
                "it holds an unfinished run; run preprocess again to resume"
                if (folder / "store.jsonl").exists()
                else "run `asit preprocess DATA_DIR --out CACHE` (or asit_helpers.data.preprocess) first"
            )
            raise CacheError(f"{folder}: not a finished ASiT cache ({hint})")
        info = json.loads(info_path.read_text(encoding="utf-8"))
        manifest = pd.read_csv(folder / "manifest.csv", keep_default_na=True)
        for col in ("group", "fold", "path", "label", "category", "split"):
            if col in manifest:
                manifest[col] = manifest[col].astype("string").fillna("").astype(object)
        rejected_path = folder / "rejected.csv"
        rejected = pd.read_csv(rejected_path) if rejected_path.exists() else pd.DataFrame(columns=["path", "reason"])
        return cls(folder, info, manifest, rejected)

    def __len__(self) -> int:
        return len(self.manifest)

    def __repr__(self) -> str:
        counts = self.manifest["split"].value_counts().to_dict() if len(self) else {}
        return f"AudioCache({str(self.folder)!r}, clips={len(self)}, classes={len(self.labels)}, splits={counts})"

    def audio(self, i: int) -> np.ndarray:
        """Clip ``i`` as a float32 array of shape ``(clip_samples,)`` (a copy; zero padding after ``lengths[i]``)."""
        return np.array(self.waveforms[i], dtype=np.float32)

    def indices(self, split: str | None = None) -> np.ndarray:
        """Row indices of one split (``'train'``, ``'val'``, ``'test'``), or all rows for ``None``."""
        if split is None:
            return np.arange(len(self))
        valid = set(self.manifest["split"].unique())
        if split not in {"train", "val", "test"} | valid:
            raise ValueError(f"unknown split {split!r}; use 'train', 'val' or 'test'")
        return np.flatnonzero(self.manifest["split"].to_numpy() == split)

    def label_ids(self, split: str | None = None) -> np.ndarray:
        """Label ids (int64) of all rows, or of one split's rows."""
        return self.manifest["label_id"].to_numpy(dtype=np.int64)[self.indices(split)]

    def event_windows(self) -> np.ndarray:
        """``(N, 2)`` true event onset/offset in seconds within each row (NaN where unknown)."""
        return self.manifest[["event_onset_s", "event_offset_s"]].to_numpy(dtype=np.float64)


# -- decoding into a store: scheduling beside the cache it fills -------------------------------------------------


def decode_into_store(
    store: Store,
    tasks: list[tuple],
    keys: list[str],
    *,
    workers: int = 1,
    progress: bool = True,
    callback: Callable[[int, int], None] | None = None,
    commit_every: int = 64,
) -> None:
    """Decode ``tasks`` (``(path, clip_samples, crop, max_seconds)``) with ``workers`` decoders (this process
    plus ``workers - 1`` spawn-safe processes) and commit them to ``store`` in batches, so an interruption loses
    at most one batch.

    Args:
        keys: the store key of each task's file.
        callback: ``callback(done, total)`` after each decoded file.
        commit_every: decoded clips per durable commit (one fsync each); commits also happen every 2 s.
    """
    from tqdm.auto import tqdm

    if not tasks:
        return
    # Every task gets its own row slot up front, so workers write their samples straight into the data file.
    base = store.reserve(len(tasks))
    tasks = [(*task, str(store.data_path), base + i) for i, task in enumerate(tasks)]
    bar = tqdm(total=len(tasks), desc="decoding", unit="clip", disable=not progress)
    commits = _Commits(store, commit_every)
    decoder = _ParallelDecoder(tasks, workers)
    try:
        for done, (i, result) in enumerate(decoder, start=1):
            commits.add(keys[i], result)
            bar.update(1)
            if callback is not None:
                callback(done, len(tasks))
    finally:
        commits.close()  # keeps what finished before an interruption (KeyboardInterrupt, a callback's exception)
        bar.close()
        decoder.close()


class _Commits:
    """Decoded rows waiting for a durable commit: one fsync per batch (not per clip), at least every 2 s."""

    def __init__(self, store: Store, every: int, max_wait_s: float = 2.0):
        self.store, self.every, self.max_wait_s = store, every, max_wait_s
        self.pending: list[tuple[str, dict]] = []
        self.last = time.monotonic()

    def add(self, key: str, result: dict) -> None:
        self.pending.append((key, result))
        if len(self.pending) >= self.every or time.monotonic() - self.last > self.max_wait_s:
            self.commit()

    def commit(self) -> None:
        self.store.append(self.pending)
        self.pending = []
        self.last = time.monotonic()

    def close(self) -> None:
        if self.pending:
            self.commit()
        self.store.flush()


class _ParallelDecoder:
    """``(task index, result)`` as tasks finish.

    Worker processes take chunks from the front of the list while this process decodes chunks from the back:
    ``workers=2`` is one spawned process plus this one, this process is never idle (it starts at once, while the
    worker is still spawning), and on a machine with no spare core it is no slower than ``workers=1``. Rows have
    preassigned slots, so finishing order does not change the cache.
    """

    def __init__(self, tasks: list[tuple], workers: int):
        self.tasks, self.workers = tasks, max(1, workers or 1)
        self.n_proc = self.workers - 1
        size = max(1, min(16, len(tasks) // (self.workers * 4)))
        self.chunks = deque((lo, min(lo + size, len(tasks))) for lo in range(0, len(tasks), size))
        self.inflight: dict = {}
        self.current: tuple[int, int] | None = None  # the chunk being collected (lost if its worker breaks)
        self.executor = None

    def __iter__(self):
        if self.n_proc < 1:
            yield from enumerate(map(decode_clip, self.tasks))
            return
        import multiprocessing as mp
        from concurrent.futures import ProcessPoolExecutor
        from concurrent.futures.process import BrokenProcessPool

        # spawn: the only start method on Windows and macOS, and safe with torch/threads in the parent.
        self.executor = ProcessPoolExecutor(max_workers=self.n_proc, mp_context=mp.get_context("spawn"))
        try:
            while self.inflight or self.chunks:
                yield from self._step()
        except BrokenProcessPool as exc:
            yield from self._finish_here(exc)

    def _step(self):
        """Keep the workers fed, hand on what they finished, else decode a chunk here (or wait)."""
        from concurrent.futures import FIRST_COMPLETED, wait

        while self.chunks and len(self.inflight) < 2 * self.n_proc:
            lo, hi = self.chunks.popleft()
            self.inflight[self.executor.submit(decode_many, self.tasks[lo:hi])] = (lo, hi)
        ready = [f for f in self.inflight if f.done()]
        for fut in ready:
            self.current = self.inflight.pop(fut)
            yield from zip(range(*self.current), fut.result())
            self.current = None
        if ready:
            return
        if self.chunks:
            yield from self._decode_here(self.chunks.pop())
        else:
            wait(list(self.inflight), return_when=FIRST_COMPLETED)

    def _decode_here(self, chunk: tuple[int, int]):
        for i in range(*chunk):
            yield i, decode_clip(self.tasks[i])

    def _finish_here(self, exc: BaseException):
        """A worker died (out of memory, a crash in a codec library) or could not start (a script fed on stdin
        cannot be re-imported by spawn): finish in this process rather than lose the run."""
        warnings.warn(f"decoding workers failed ({exc}); continuing in this process", RuntimeWarning, stacklevel=4)
        left = ([self.current] if self.current else []) + list(self.inflight.values()) + list(self.chunks)
        self.close(wait=False)
        self.inflight, self.chunks, self.current = {}, deque(), None
        for chunk in sorted(left):
            yield from self._decode_here(chunk)

    def close(self, wait: bool = True) -> None:
        if self.executor is not None:
            self.executor.shutdown(wait=wait, cancel_futures=True)
            self.executor = None
