"""Data: sources → manifest (+ rejected) → class mapping → group-aware split → preprocessing cache.

    from asit_helpers.data import preprocess, AudioCache
    report = preprocess("data/synth", "cache/synth", workers=2)   # scans, decodes, splits; resumable
    print(report.summary())
    cache = AudioCache.open("cache/synth")

Sources (each becomes the same manifest: path, label, category, group, fold, + event times where known):

* a folder tree ``Category/class/clip.ext`` at any depth (leaf folder = class, its parent = category), any audio
  extension — the original ASiT data's layout and what :func:`asit_helpers.synth.make_soundscapes` writes
  (its ``events.csv`` adds true event onsets);
* ESC-50 (``meta/esc50.csv``; official folds), whose default class map is the curated ESC-22 subset;
* UrbanSound8K (``UrbanSound8K.csv`` + ``fold1..fold10``; official folds);
* a CSV or DataFrame with at least ``path`` and ``label`` columns.

Downloads (Kaggle through kagglehub, ESC-50 from GitHub) live in :mod:`asit_helpers.sources`.
"""

from __future__ import annotations

import json
import os
import re
import time
import warnings
from dataclasses import dataclass, field
from pathlib import Path
from typing import Callable, Mapping, Sequence

import numpy as np
import pandas as pd

from .audio import DEFAULT_MAX_SECONDS, MIN_SAMPLES, SAMPLE_RATE, too_short_reason
from .cache import FORMAT_VERSION, AudioCache, CacheError, Store, decode_into_store, file_key
from .files import atomic_write_text
from .sources import KaggleCredentialsError, download, download_esc50, download_kaggle, use_kaggle_json

__all__ = [
    "AUDIO_EXTENSIONS",
    "ESC22",
    "ASIT_CATEGORIES",
    "AudioCache",
    "CacheError",
    "PreprocessReport",
    "scan",
    "scan_folder",
    "load_class_map",
    "apply_class_map",
    "assign_splits",
    "preprocess",
    "download",
    "download_kaggle",
    "download_esc50",
    "use_kaggle_json",
    "KaggleCredentialsError",
]

#: Extensions treated as audio when scanning a folder (anything soundfile/libsndfile may decode).
AUDIO_EXTENSIONS = {".wav", ".wave", ".flac", ".ogg", ".oga", ".opus", ".mp3", ".aif", ".aiff", ".aifc", ".au", ".snd", ".w64", ".caf"}
#: Files a scan passes over without comment: metadata beside the clips, and OS litter.
_METADATA_EXTENSIONS = {".csv", ".json", ".jsonl", ".yaml", ".yml", ".md", ".txt", ".xlsx", ".pdf", ".zip", ".py"}
_IGNORED_NAMES = {"thumbs.db", "desktop.ini", ".ds_store"}
ASIT_CATEGORIES = ("Animals", "Birds", "Vehicles", "Environmental")

#: The curated ESC-22 subset of ESC-50 in ASiT's four categories (ESC-50 class name → category).
ESC22: dict[str, str] = {
    **dict.fromkeys(["dog", "cat", "pig", "cow", "frog", "sheep", "insects"], "Animals"),
    **dict.fromkeys(["rooster", "hen", "crow", "chirping_birds"], "Birds"),
    **dict.fromkeys(["helicopter", "siren", "car_horn", "engine", "train", "airplane"], "Vehicles"),
    **dict.fromkeys(["rain", "sea_waves", "crackling_fire", "wind", "thunderstorm"], "Environmental"),
}
#: UrbanSound8K's 10 classes placed in ASiT's categories (urban noises other than vehicles → Environmental).
URBANSOUND_CATEGORIES = {
    "dog_bark": "Animals",
    "car_horn": "Vehicles",
    "engine_idling": "Vehicles",
    "siren": "Vehicles",
    "air_conditioner": "Environmental",
    "children_playing": "Environmental",
    "drilling": "Environmental",
    "gun_shot": "Environmental",
    "jackhammer": "Environmental",
    "street_music": "Environmental",
}
#: Clips cut from one recording must share a group; by default a file stem ending in an explicit segment marker
#: (``x_seg3``, ``x-chunk12``, ``x_part2``, ``x window 4`` ...) belongs to the group ``x``. Anything else is its own
#: group (guessing from bare trailing numbers would lump ``dog_01`` and ``dog_02`` together).
DEFAULT_GROUP_PATTERN = r"^(?P<group>.+?)[ _\-.](?:seg|segment|chunk|part|win|window|slice|crop|clip)[ _\-]?\d+$"

MANIFEST_COLUMNS = [
    "path", "label", "category", "group", "fold", "event_onset_s", "event_offset_s", "snr_db",
]


# ---- scanning -------------------------------------------------------------------------------------------------------


def _empty_rejected() -> pd.DataFrame:
    return pd.DataFrame({"path": pd.Series(dtype=object), "reason": pd.Series(dtype=object)})


def _finish_manifest(rows: list[dict] | pd.DataFrame) -> pd.DataFrame:
    df = pd.DataFrame(rows)
    for col in MANIFEST_COLUMNS:
        if col not in df:
            df[col] = np.nan if col in ("event_onset_s", "event_offset_s", "snr_db") else ""
    for col in ("path", "label", "category", "group", "fold"):
        df[col] = df[col].astype("string").fillna("").astype(object)
    for col in ("event_onset_s", "event_offset_s", "snr_db"):
        df[col] = pd.to_numeric(df[col], errors="coerce")
    return df[MANIFEST_COLUMNS + [c for c in df.columns if c not in MANIFEST_COLUMNS]].reset_index(drop=True)


def _group_of(stem: str, pattern: re.Pattern | None) -> str:
    if pattern is not None:
        m = pattern.match(stem)
        if m:
            return m.groupdict().get("group") or m.group(1)
    return stem


def scan_folder(root: str | os.PathLike, group_pattern: str | None = DEFAULT_GROUP_PATTERN) -> tuple[pd.DataFrame, pd.DataFrame]:
    """Walk a ``Category/class/clip`` tree (any depth: leaf folder = class, its parent = category).

    Files are listed, not decoded (decoding happens once, in :func:`preprocess`). Audio-extension files become
    manifest rows; other files inside class folders are *rejected* ("not an audio file"); metadata files
    (CSV/JSON/text) and hidden or OS files are passed over. An ``events.csv`` at the root (written by
    :mod:`asit_helpers.synth`) supplies each clip's true event onset/offset and SNR.

    Returns:
        ``(manifest, rejected)`` DataFrames.
    """
    root = Path(root)
    if not root.is_dir():
        raise FileNotFoundError(f"{root}: no such folder")
    pattern = re.compile(group_pattern, re.IGNORECASE) if group_pattern else None
    rows, rejected = [], []
    for dirpath, dirnames, filenames in os.walk(root):
        dirnames[:] = sorted(d for d in dirnames if not d.startswith((".", "__")))
        here = Path(dirpath)
        rel_dir = here.relative_to(root)
        for name in sorted(filenames):
            if name.startswith(".") or name.lower() in _IGNORED_NAMES:
                continue
            path = here / name
            ext = path.suffix.lower()
            if ext not in AUDIO_EXTENSIONS:
                if ext in _METADATA_EXTENSIONS:
                    continue
                rejected.append({"path": str(path), "reason": f"not an audio file (extension {ext or 'none'!r})"})
                continue
            if here == root:
                rejected.append({"path": str(path), "reason": "not inside a class folder (expected Category/class/clip)"})
                continue
            parts = rel_dir.parts
            rows.append(
                {
                    "path": str(path),
                    "rel_path": path.relative_to(root).as_posix(),
                    "label": parts[-1],
                    "category": parts[-2] if len(parts) >= 2 else "",
                    "group": f"{rel_dir.as_posix()}/{_group_of(path.stem, pattern)}",
                }
            )
    manifest = _finish_manifest(rows) if rows else _finish_manifest([])
    events_csv = root / "events.csv"
    if rows and events_csv.exists():
        events = pd.read_csv(events_csv)
        if "path" in events:
            events = events.set_index(events["path"].astype(str))
            rel = manifest["rel_path"]
            for src, dst in (("onset_s", "event_onset_s"), ("offset_s", "event_offset_s"), ("snr_db", "snr_db")):
                if src in events:
                    manifest[dst] = pd.to_numeric(rel.map(events[src]), errors="coerce")
            if "distractors" in events:  # synth --distractors: where the loud non-target sounds are
                manifest["distractors"] = rel.map(events["distractors"]).fillna("[]")
    return manifest, pd.DataFrame(rejected) if rejected else _empty_rejected()


def _scan_esc50(root: Path) -> pd.DataFrame:
    """ESC-50: ``meta/esc50.csv`` (filename, fold, target, category, src_file, take) + ``audio/``."""
    meta = pd.read_csv(root / "meta" / "esc50.csv")
    audio_dir = root / "audio"
    return _finish_manifest(
        {
            "path": [str(audio_dir / f) for f in meta["filename"]],
            "label": meta["category"],
            "category": meta["category"].map(ESC22).fillna(""),
            "group": meta["src_file"].astype(str) if "src_file" in meta else meta["filename"],
            "fold": meta["fold"].astype(str),
        }
    )


def _scan_urbansound(csv_path: Path) -> pd.DataFrame:
    """UrbanSound8K: ``UrbanSound8K.csv`` (slice_file_name, fsID, fold, class) + ``fold1..fold10/`` folders.

    The Kaggle copy (chrisfilo/urbansound8k) has the folds at the top level; the original archive under ``audio/``.
    """
    meta = pd.read_csv(csv_path)
    candidates = [csv_path.parent, csv_path.parent / "audio", csv_path.parent.parent / "audio", csv_path.parent.parent]
    audio_root = next((c for c in candidates if (c / "fold1").is_dir()), csv_path.parent)
    return _finish_manifest(
        {
            "path": [str(audio_root / f"fold{fold}" / name) for fold, name in zip(meta["fold"], meta["slice_file_name"])],
            "label": meta["class"],
            "category": meta["class"].map(URBANSOUND_CATEGORIES).fillna("Environmental"),
            "group": meta["fsID"].astype(str),  # one freesound recording → many slices: keep them together
            "fold": meta["fold"].astype(str),
        }
    )


def detect_recipe(root: str | os.PathLike) -> str:
    """``"esc50"``, ``"urbansound8k"`` or ``"folder"``, from the files a source folder holds."""
    root = Path(root)
    if (root / "meta" / "esc50.csv").exists():
        return "esc50"
    if (root / "UrbanSound8K.csv").exists() or (root / "metadata" / "UrbanSound8K.csv").exists():
        return "urbansound8k"
    return "folder"


def scan(
    source: str | os.PathLike | pd.DataFrame,
    recipe: str = "auto",
    group_pattern: str | None = DEFAULT_GROUP_PATTERN,
) -> tuple[pd.DataFrame, pd.DataFrame, object]:
    """Any source → ``(manifest, rejected, default_classes)``.

    ``source`` is a folder (recipe detected from its files unless ``recipe`` is given), a CSV file or a DataFrame
    with at least ``path`` and ``label`` columns (relative paths are relative to the CSV's folder).
    ``default_classes`` is the recipe's class map (ESC-50: the ESC-22 subset; otherwise ``None`` = keep all).
    """
    if isinstance(source, pd.DataFrame) or (Path(source).is_file() and Path(source).suffix.lower() == ".csv"):
        df = source.copy() if isinstance(source, pd.DataFrame) else pd.read_csv(source)
        missing = {"path", "label"} - set(df.columns)
        if missing:
            raise ValueError(f"manifest needs columns 'path' and 'label'; missing {sorted(missing)}")
        if not isinstance(source, pd.DataFrame):
            base = Path(source).parent
            df["path"] = [str(p) if Path(p).is_absolute() else str(base / p) for p in df["path"]]
        if "group" not in df:
            df["group"] = [Path(p).stem for p in df["path"]]
        # An events table (like synth's events.csv) names its event columns onset_s / offset_s.
        df = df.rename(columns={c: f"event_{c}" for c in ("onset_s", "offset_s") if c in df and f"event_{c}" not in df})
        return _finish_manifest(df), _empty_rejected(), None
    root = Path(source)
    if not root.exists():
        raise FileNotFoundError(f"{root}: no such file or folder")
    recipe = detect_recipe(root) if recipe == "auto" else recipe
    if recipe == "esc50":
        return _scan_esc50(root), _empty_rejected(), {"keep": list(ESC22), "categories": ESC22}
    if recipe in ("urbansound8k", "us8k"):
        csv = root / "UrbanSound8K.csv"
        return _scan_urbansound(csv if csv.exists() else root / "metadata" / "UrbanSound8K.csv"), _empty_rejected(), None
    if recipe in ("folder", "synth"):
        manifest, rejected = scan_folder(root, group_pattern)
        return manifest, rejected, None
    raise ValueError(f"unknown recipe {recipe!r}; use 'auto', 'folder', 'esc50' or 'urbansound8k'")


# ---- classes --------------------------------------------------------------------------------------------------------

_STRUCTURED_KEYS = {"keep", "drop", "rename", "merge", "categories", "min_clips", "top_n"}


def load_class_map(classes) -> dict | None:
    """Normalise a class map given as a dict, a list of names, a YAML/JSON file path or a YAML string.

    Two forms:

    * plain ``{old_name: new_name}`` (``null`` drops; names not listed are dropped; several old names with one
      new name merge them) or a list ``[names to keep]``;
    * structured, with any of ``keep`` (list, after renaming), ``drop``, ``rename`` ({old: new}), ``merge``
      ({new: [old, ...]}), ``categories`` ({class: category}), ``min_clips``, ``top_n``::

          merge: {bird: [crow, rooster, hen]}
          rename: {dog_bark: dog}
          min_clips: 20
          top_n: 22

    Returns the structured form (a dict), or ``None`` for "keep every class".
    """
    if classes is None:
        return None
    if isinstance(classes, (str, os.PathLike)):
        text = str(classes)
        path = Path(text)
        if "\n" not in text and path.suffix.lower() in (".yaml", ".yml", ".json") :
            if not path.exists():
                raise FileNotFoundError(f"{path}: class map file not found")
            text = path.read_text(encoding="utf-8")
        import yaml

        try:
            classes = yaml.safe_load(text)
        except yaml.YAMLError as exc:
            raise ValueError(f"class map is not valid YAML/JSON: {exc}") from exc
    if isinstance(classes, (list, tuple)):
        return {"keep": [str(c) for c in classes]}
    if not isinstance(classes, Mapping):
        raise ValueError(f"class map must be a dict, a list of class names or a YAML file, got {type(classes).__name__}")
    if set(classes) & _STRUCTURED_KEYS:
        unknown = set(classes) - _STRUCTURED_KEYS
        if unknown:
            raise ValueError(f"unknown class-map keys {sorted(unknown)}; allowed: {sorted(_STRUCTURED_KEYS)}")
        return dict(classes)
    rename = {str(k): v for k, v in classes.items() if v is not None}
    return {"rename": rename, "keep": sorted({str(v) for v in rename.values()}), "_listed_only": True}


def apply_class_map(
    manifest: pd.DataFrame,
    classes=None,
    min_clips: int = 0,
    top_n: int | None = None,
) -> tuple[pd.DataFrame, pd.DataFrame]:
    """Rename / merge / keep classes, then drop classes with fewer than ``min_clips`` clips and keep the ``top_n``
    most frequent (ties broken by name).

    Returns:
        ``(kept, excluded)``: ``excluded`` lists the clips left out and why (they are valid audio, just not
        wanted; the *rejected* table is only for files that cannot be used).
    """
    spec = load_class_map(classes) or {}
    df = manifest.copy()
    original = df["label"].astype(str)
    rename = {str(k): str(v) for k, v in (spec.get("rename") or {}).items()}
    for new, olds in (spec.get("merge") or {}).items():
        for old in [olds] if isinstance(olds, str) else olds:
            rename[str(old)] = str(new)
    reason = pd.Series("", index=df.index, dtype=object)
    if spec.get("_listed_only"):
        reason[~original.isin(list(rename))] = "class not in the class map"
    df["label"] = original.map(lambda name: rename.get(name, name))
    categories = {str(k): str(v) for k, v in (spec.get("categories") or {}).items()}
    if categories:
        df["category"] = [categories.get(lab, categories.get(orig, cat)) for lab, orig, cat in zip(df["label"], original, df["category"])]
    # A merged class takes the most common category of its members.
    if len(df):
        df["category"] = df.groupby("label")["category"].transform(lambda s: s.mode().iloc[0] if len(s.mode()) else "")
    drop = {str(c) for c in spec.get("drop") or []}
    reason[(reason == "") & (df["label"].isin(drop) | original.isin(drop))] = "dropped by the class map"
    if spec.get("keep") is not None and not spec.get("_listed_only"):
        keep = {str(c) for c in spec["keep"]}
        unknown = keep - set(df["label"])
        if unknown:
            warnings.warn(f"class map keeps classes that are not in the data: {sorted(unknown)}", stacklevel=2)
        reason[(reason == "") & ~df["label"].isin(keep)] = "class not kept by the class map"
    min_clips = int(spec.get("min_clips", 0) or 0) or int(min_clips or 0)
    top_n = spec.get("top_n") or top_n
    live = reason == ""
    counts = df.loc[live, "label"].value_counts()
    if min_clips:
        small = set(counts[counts < min_clips].index)
        reason[live & df["label"].isin(small)] = f"class has fewer than {min_clips} clips"
    if top_n:
        live = reason == ""
        counts = df.loc[live, "label"].value_counts()
        ranked = sorted(counts.items(), key=lambda kv: (-kv[1], kv[0]))
        top = {name for name, _ in ranked[: int(top_n)]}
        reason[live & ~df["label"].isin(top)] = f"not among the {int(top_n)} most frequent classes"
    excluded = df.loc[reason != "", ["path", "label"]].assign(reason=reason[reason != ""])
    return df.loc[reason == ""].reset_index(drop=True), excluded.reset_index(drop=True)


# ---- splits ---------------------------------------------------------------------------------------------------------


def assign_splits(
    manifest: pd.DataFrame,
    fractions: tuple[float, float, float] = (0.7, 0.15, 0.15),
    seed: int = 0,
    test_folds: Sequence[str] | None = None,
    val_folds: Sequence[str] | None = None,
) -> pd.Series:
    """A ``split`` value ('train'/'val'/'test') per row: stratified by label, seeded, and group-aware (all clips
    of one group — one source recording — land in the same split).

    Datasets with official folds (``fold`` column: ESC-50, UrbanSound8K) split by whole folds: the last
    ``round(n_folds * test_fraction)`` folds are test and the ones before them validation (or ``test_folds`` /
    ``val_folds``). Otherwise ``StratifiedGroupKFold`` carves test, then validation from the rest.
    """
    from sklearn.model_selection import GroupShuffleSplit, StratifiedGroupKFold, StratifiedKFold

    n = len(manifest)
    split = pd.Series("train", index=manifest.index, dtype=object)
    if n == 0:
        return split
    _, f_val, f_test = fractions
    folds = manifest["fold"].astype(str) if "fold" in manifest else pd.Series("", index=manifest.index)
    if (folds != "").all():
        names = sorted(folds.unique(), key=lambda f: (len(f), f))
        k = len(names)
        if test_folds is None:
            n_test = max(1, round(k * f_test)) if f_test > 0 and k >= 2 else 0
            test_folds = names[k - n_test :] if n_test else []
        if val_folds is None:
            rest = [f for f in names if f not in set(map(str, test_folds))]
            n_val = max(1, round(k * f_val)) if f_val > 0 and len(rest) >= 2 else 0
            val_folds = rest[len(rest) - n_val :] if n_val else []
        split[folds.isin([str(f) for f in val_folds])] = "val"
        split[folds.isin([str(f) for f in test_folds])] = "test"
        return split

    labels = manifest["label"].astype(str).to_numpy()
    groups = manifest["group"].astype(str).to_numpy() if "group" in manifest else np.arange(n).astype(str)

    def carve(idx: np.ndarray, fraction: float, salt: int) -> np.ndarray:
        """Indices (subset of ``idx``) forming about ``fraction`` of it, whole groups, stratified."""
        if fraction <= 0 or len(idx) < 2:
            return idx[:0]
        k = max(2, int(round(1.0 / fraction)))
        if len(set(groups[idx])) < k:
            return idx[:0]
        if len(set(groups[idx])) == len(idx):
            # Every clip is its own group: plain stratified folds are the same split, and far faster
            # (StratifiedGroupKFold scores every group against every fold: seconds for a few thousand clips).
            sgkf = StratifiedKFold(n_splits=k, shuffle=True, random_state=seed + salt)
        else:
            sgkf = StratifiedGroupKFold(n_splits=k, shuffle=True, random_state=seed + salt)
        try:
            with warnings.catch_warnings():
                warnings.simplefilter("ignore")  # "least populated class has only N members": fine for tiny data
                _, held = next(iter(sgkf.split(np.zeros(len(idx)), labels[idx], groups[idx])))
        except ValueError:
            # Every class is smaller than the number of folds: stratification is impossible, keep groups whole.
            gss = GroupShuffleSplit(n_splits=1, test_size=fraction, random_state=seed + salt)
            _, held = next(iter(gss.split(np.zeros(len(idx)), labels[idx], groups[idx])))
        return idx[held]

    all_idx = np.arange(n)
    test = carve(all_idx, f_test, 0)
    rest = np.setdiff1d(all_idx, test)
    val = carve(rest, f_val / max(1e-9, 1.0 - f_test), 1)
    split.iloc[test] = "test"
    split.iloc[val] = "val"
    return split


# ---- preprocessing --------------------------------------------------------------------------------------------------


@dataclass
class PreprocessReport:
    """What :func:`preprocess` did. ``kept``/``rejected``/``excluded`` are DataFrames; ``classes`` the label order."""

    cache_dir: Path
    kept: pd.DataFrame
    rejected: pd.DataFrame
    excluded: pd.DataFrame
    classes: list[str]
    decoded: int = 0
    reused: int = 0
    settings: dict = field(default_factory=dict)

    def summary(self) -> str:
        lines = [
            f"cache: {self.cache_dir}",
            f"kept {len(self.kept)} clips in {len(self.classes)} classes "
            f"({self.decoded} decoded now, {self.reused} reused from an earlier run)",
        ]
        if len(self.kept):
            splits = self.kept["split"].value_counts()
            lines.append("splits: " + ", ".join(f"{s} {int(splits.get(s, 0))}" for s in ("train", "val", "test")))
            per_class = self.kept["label"].value_counts()
            lines.append("per class: " + ", ".join(f"{lab} {int(per_class.get(lab, 0))}" for lab in self.classes))
        lines.append(f"rejected {len(self.rejected)} files" + (":" if len(self.rejected) else ""))
        shown = 20  # a broken download can reject thousands of files; the full list is in rejected.csv
        lines += [f"  {r.path}: {r.reason}" for r in self.rejected.head(shown).itertuples()]
        if len(self.rejected) > shown:
            lines.append(f"  ... and {len(self.rejected) - shown} more (all in {self.cache_dir / 'rejected.csv'})")
        if len(self.excluded):
            reasons = self.excluded["reason"].value_counts()
            lines.append(f"left out {len(self.excluded)} valid clips: " + "; ".join(f"{r} ({c})" for r, c in reasons.items()))
        return "\n".join(lines)

    def to_dict(self) -> dict:
        """JSON-ready: ``kept`` (count), ``rejected`` (list of {path, reason}), ``classes``, ``splits``, ..."""
        return {
            "cache_dir": str(self.cache_dir),
            "kept": int(len(self.kept)),
            "rejected": self.rejected[["path", "reason"]].to_dict(orient="records"),
            "excluded": int(len(self.excluded)),
            "classes": list(self.classes),
            "splits": {k: int(v) for k, v in self.kept["split"].value_counts().items()} if len(self.kept) else {},
            "decoded": self.decoded,
            "reused": self.reused,
        }


def preprocess(
    source: str | os.PathLike | pd.DataFrame,
    out_dir: str | os.PathLike,
    classes=None,
    clip_seconds: float = 5.0,
    workers: int = 2,
    seed: int = 0,
    *,
    fractions: tuple[float, float, float] = (0.7, 0.15, 0.15),
    min_clips: int = 0,
    top_n: int | None = None,
    recipe: str = "auto",
    crop: str = "energy",
    max_seconds: float | None = DEFAULT_MAX_SECONDS,
    group_pattern: str | None = DEFAULT_GROUP_PATTERN,
    progress: bool = True,
    callback: Callable[[int, int], None] | None = None,
    commit_every: int = 64,
    min_samples: int = MIN_SAMPLES,
) -> PreprocessReport:
    """Scan a source, map classes, split, and decode every clip once into a memory-mapped cache at ``out_dir``.

    Each file becomes one row of ``clip_seconds * 16000`` samples: mono, 16 kHz, zero-padded if shorter; a longer
    file keeps its ``crop`` window (default ``"energy"``: the loudest ``clip_seconds``, so an event away from the
    start survives; one row per file keeps "row = file = group member" simple and leak-free).

    Resumable: finished files are skipped; an interrupted run (Ctrl-C, a killed process) resumes where it
    stopped; changing ``clip_seconds``/``crop`` re-decodes (every row depends on them), while changing the class
    map, split fractions or seed only rewrites the manifest. Bad files are rejected with a reason, never fatal.

    Args:
        source: a folder (recipe auto-detected), a CSV or a DataFrame (see :func:`scan`).
        out_dir: the cache folder.
        classes: class map (see :func:`load_class_map`); ``None`` = the recipe's default (ESC-50 → ESC-22).
        workers: decoders: this process plus ``workers - 1`` spawned processes (``<= 1``: this process only).
        seed: split seed.
        min_clips, top_n: class filters (see :func:`apply_class_map`), counted over the files found.
        callback: ``callback(done, total)`` after each decoded file (progress in a UI).
        commit_every: decoded clips per durable commit (one fsync each); commits also happen every 2 s, so a
            kill loses at most that much work.
        min_samples: reject files shorter than this (default: one frame of wav2vec2's front end, 400 samples); a
            model whose front end needs more (``model.config.min_samples``, e.g. 720 for tiny-fb) refuses caches
            holding shorter clips, naming this setting.

    Returns:
        :class:`PreprocessReport` (``.kept``, ``.rejected``, ``.classes``, ``.cache_dir``, ``.summary()``).
    """
    out = Path(out_dir)
    out.mkdir(parents=True, exist_ok=True)
    # From here until the new cache.json is written the folder is "unfinished": AudioCache.open refuses it rather
    # than pairing an old manifest with rows this run is rewriting.
    (out / "cache.json").unlink(missing_ok=True)
    manifest, rejected, default_classes = scan(source, recipe=recipe, group_pattern=group_pattern)
    manifest, excluded = apply_class_map(manifest, classes if classes is not None else default_classes, min_clips, top_n)
    clip_samples = int(round(clip_seconds * SAMPLE_RATE))
    header = {"format": FORMAT_VERSION, "sample_rate": SAMPLE_RATE, "clip_samples": clip_samples, "crop": crop,
              "max_seconds": max_seconds}
    store = Store.open(out, header)
    manifest, decoded = _decode_new_files(manifest, store, header, workers, progress, callback, commit_every)
    kept, rejected = _kept_rows(manifest, rejected, store, clip_seconds, min_samples)
    kept, labels = _label_and_split(kept, fractions, seed)
    info = _write_cache(out, store, kept, rejected, labels, dict(
        clip_seconds=clip_seconds, clip_samples=clip_samples, crop=crop, min_samples=int(min_samples), seed=seed,
        fractions=list(fractions),
        source=str(source) if not isinstance(source, pd.DataFrame) else "<DataFrame>"))
    return PreprocessReport(cache_dir=out, kept=kept, rejected=rejected.reset_index(drop=True), excluded=excluded,
                            classes=labels, decoded=decoded, reused=len(manifest) - decoded, settings=info)


def _decode_new_files(manifest, store, header, workers, progress, callback, commit_every) -> tuple[pd.DataFrame, int]:
    """Decode the files the store has not seen (with these settings) into it; returns the de-duplicated manifest
    (a ``key`` per file) and how many files were decoded."""
    manifest = manifest.assign(key=[file_key(p) for p in manifest["path"]])
    manifest = manifest.drop_duplicates("key").reset_index(drop=True)
    # Rejected files are tried again on every run (they are few, and a permission or a half-copied file may have
    # been fixed without changing the file's size or time); finished ones never are.
    todo = manifest[~manifest["key"].isin(store.rows.keys())]
    tasks = [(p, header["clip_samples"], header["crop"], header["max_seconds"]) for p in todo["path"]]
    decode_into_store(store, tasks, list(todo["key"]), workers=workers, progress=progress, callback=callback,
                      commit_every=commit_every)
    return manifest, len(todo)


def _kept_rows(manifest, rejected, store, clip_seconds: float, min_samples: int = MIN_SAMPLES
               ) -> tuple[pd.DataFrame, pd.DataFrame]:
    """The manifest rows that decoded (with their decode facts and event times inside the kept window), and the
    rejected files with the decoders' reasons added (and files shorter than ``min_samples``)."""
    bad = manifest["key"].isin(store.errors.keys())
    rejected = pd.concat(
        [rejected, pd.DataFrame({"path": manifest.loc[bad, "path"], "reason": manifest.loc[bad, "key"].map(store.errors)})],
        ignore_index=True,
    )
    kept = manifest.loc[~bad].reset_index(drop=True)
    meta = pd.DataFrame([store.rows[k] for k in kept["key"]])
    for col in ("duration_s", "orig_sr", "channels", "length", "crop_start_s"):
        kept[col] = meta[col].to_numpy() if len(meta) else np.array([], dtype=float)
    short = kept["length"].to_numpy() < min_samples  # a wider front end than wav2vec2's (e.g. tiny-fb) needs more
    if short.any():
        reasons = [too_short_reason(int(n), min_samples) for n in kept.loc[short, "length"]]
        rejected = pd.concat([rejected, pd.DataFrame({"path": kept.loc[short, "path"], "reason": reasons})],
                             ignore_index=True)
        kept = kept.loc[~short].reset_index(drop=True)
    # Event times are relative to the file; shift them into the cropped row (and clip to it).
    if len(kept):
        for col in ("event_onset_s", "event_offset_s"):
            kept[col] = (kept[col] - kept["crop_start_s"]).clip(lower=0.0, upper=clip_seconds)
        outside = kept["event_offset_s"] <= kept["event_onset_s"]  # the event lies outside the kept window
        kept.loc[outside, ["event_onset_s", "event_offset_s"]] = np.nan
        if "distractors" in kept:
            from .synth import shift_spans

            kept["distractors"] = [shift_spans(v, s, clip_seconds) for v, s in zip(kept["distractors"], kept["crop_start_s"])]
    return kept, rejected


_MANIFEST_COLUMNS = [
    "path", "label", "label_id", "category", "split", "group", "fold", "duration_s", "orig_sr", "channels",
    "length", "crop_start_s", "event_onset_s", "event_offset_s", "snr_db", "key",
]


def _label_and_split(kept: pd.DataFrame, fractions, seed: int) -> tuple[pd.DataFrame, list[str]]:
    """Label ids (classes ordered by category, then name) and group-aware splits; columns in manifest order."""
    labels = sorted(kept["label"].unique(), key=lambda lab: (_category_rank(kept, lab), lab)) if len(kept) else []
    kept["label_id"] = kept["label"].map({lab: i for i, lab in enumerate(labels)}).astype("int64")
    kept["split"] = assign_splits(kept, fractions=fractions, seed=seed)
    return kept[_MANIFEST_COLUMNS + [c for c in kept.columns if c not in _MANIFEST_COLUMNS]], labels


def _write_cache(out: Path, store, kept, rejected, labels, settings: dict) -> dict:
    """Compact the rows to the manifest's order, then write manifest, rejected list and ``cache.json`` (last: the
    mark of a finished cache)."""
    store.compact(list(kept["key"]))
    store.truncate()
    atomic_write_text(out / "manifest.csv", kept.to_csv(index=False, lineterminator="\n"))
    atomic_write_text(out / "rejected.csv", rejected.to_csv(index=False, lineterminator="\n"))
    info = {
        "format": FORMAT_VERSION,
        "labels": labels,
        "categories": {lab: str(kept.loc[kept["label"] == lab, "category"].iloc[0]) for lab in labels},
        "sample_rate": SAMPLE_RATE,
        "clip_seconds": settings["clip_seconds"],
        "clip_samples": settings["clip_samples"],
        "crop": settings["crop"],
        "min_samples": settings["min_samples"],
        "n_clips": int(len(kept)),
        "n_rejected": int(len(rejected)),
        "source": settings["source"],
        "seed": settings["seed"],
        "fractions": settings["fractions"],
    }
    atomic_write_text(out / "cache.json", json.dumps(info, indent=1))
    return info


def _category_rank(kept: pd.DataFrame, label: str) -> tuple[int, str]:
    """Labels are ordered by ASiT category (Animals, Birds, Vehicles, Environmental, then others), then name."""
    cat = str(kept.loc[kept["label"] == label, "category"].iloc[0])
    return (ASIT_CATEGORIES.index(cat) if cat in ASIT_CATEGORIES else len(ASIT_CATEGORIES), cat)
