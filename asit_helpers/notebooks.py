"""What the lessons (``notebooks/01_…`` → ``06_…``) call from their cells. The runner that executes them
headless (``asit demo``, ``make demo``, the tests) is :mod:`asit_helpers.suite`.

* The repository slug and branch the Colab badges and the Colab install line point at (:data:`REPO`,
  :data:`BRANCH`; a test checks every notebook against them).
* The switches a notebook reads after its ``parameters`` cell: :func:`offline_requested` (``ASIT_OFFLINE=1`` or
  ``CI`` → synthetic soundscapes and the tiny preset) and :func:`smoke_requested` (``CI`` → training cut to
  seconds).
* :class:`Workspace`: the folders the notebooks hand work to each other through (data, cache, checkpoints,
  figures, reports).
* :data:`SKIP_TAG`: the tag of cells that need a person (a credential upload, a file picker).
* Standing alone: Colab gives each notebook opened from its badge a fresh runtime, so a notebook may find nothing
  of what the earlier ones made. :func:`ensure_data` and :func:`ensure_checkpoint` then rebuild it (fetch the data,
  decode the cache, train the quick recipe) and say so; with ``USE_DRIVE`` the workspace is on Google Drive and
  they find it there.
* :func:`explained`: expected failures (no network, no Hub, Kaggle) as two lines instead of a traceback
  (:mod:`asit_helpers.messages`, shared with the CLI).
"""

from __future__ import annotations

import json
import os
import tempfile
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Callable, Iterator

from . import messages
from .colab import in_colab, workspace_root
from .files import json_default
from .messages import Explanation, LessonStop

__all__ = [
    "REPO",
    "BRANCH",
    "NOTEBOOKS",
    "SKIP_TAG",
    "INSTALL_SPEC",
    "colab_url",
    "github_url",
    "badge_row",
    "in_colab",
    "offline_requested",
    "smoke_requested",
    "Workspace",
    "workspace",
    "checkout_root",
    "LessonStop",
    "explained",
    "fetch_source",
    "ensure_data",
    "ensure_checkpoint",
    "check_backbone",
]

#: GitHub ``owner/name`` of the project: the Colab badges, the "view on GitHub" links and the Colab install line.
REPO = "asit-audio/asit"
BRANCH = "main"
#: The lessons, in the order they hand work to each other.
NOTEBOOKS = (
    "01_download_data.ipynb",
    "02_preprocess.ipynb",
    "03_train.ipynb",
    "04_evaluate.ipynb",
    "05_attention.ipynb",
    "06_demo_widget.ipynb",
)
#: Cells with this tag need a person (a credential upload, a file picker) and are skipped when run headless.
SKIP_TAG = "skip-ci"
#: What a notebook's Colab setup cell pip-installs: the package from GitHub. torch is not pinned by the package
#: (``torch>=2.2``), so Colab's own CUDA build satisfies it and is never reinstalled.
INSTALL_SPEC = f"asit-helpers @ git+https://github.com/{REPO}@{BRANCH}"

#: Notebook 03's recipe for the offline default (synthetic soundscapes, CPU): the "tiny-fb" preset (a learnable
#: 25 ms / 10 ms filterbank front end, 20 ms frames) trained from scratch, front end included, 30 epochs on the 60
#: clips per class notebook 01 makes. Measured on the quiet 2-core machine (2026-11-24, `asit train` with these
#: settings on the same 1,320-clip cache): 3 min 15 s of training, test accuracy 0.952, macro-F1 0.951, 0.98 of
#: the pooling weight inside the true event window vs 0.24 by chance. (12 epochs on 30 clips per class gave 0.53.)
OFFLINE_TRAINING = dict(preset="tiny-fb", mode="full", freeze_feature_encoder=False, epochs=30, batch_size=16,
                        lr_head=5e-3, lr_backbone=5e-3)
#: CI smoke runs (``SMOKE``): the cached-embedding fast path for two epochs; checks that the suite runs end to
#: end, not that the model learns.
SMOKE_TRAINING = dict(mode="head", epochs=2)
#: What notebooks 04-06 train when opened alone, with no checkpoint from 03 and none given in ``CHECKPOINT``, on
#: real data: wav2vec2-base frozen, only the pooling and head trained on its cached frames (one backbone pass over
#: the data, then seconds per epoch). Weaker than 03's fine-tuned default; offline they train 03's offline recipe.
QUICK_TRAINING = dict(preset="base", mode="head", epochs=10)
#: The dataset notebooks 02-06 fetch when opened alone (notebook 01's default).
DEFAULT_DATASET = "esc22"

_TRUE = {"1", "true", "yes", "on"}


def colab_url(name: str) -> str:
    """Open-in-Colab link of ``notebooks/<name>``."""
    return f"https://colab.research.google.com/github/{REPO}/blob/{BRANCH}/notebooks/{name}"


def github_url(name: str) -> str:
    return f"https://github.com/{REPO}/blob/{BRANCH}/notebooks/{name}"


def badge_row(name: str) -> str:
    """The markdown badge row at the top of ``notebooks/<name>``."""
    return (
        f"[![Open In Colab](https://colab.research.google.com/assets/colab-badge.svg)]({colab_url(name)}) "
        f"[![View on GitHub](https://img.shields.io/badge/view%20on-GitHub-181717?logo=github)]({github_url(name)})"
    )


def offline_requested(offline: bool = False) -> bool:
    """The offline default (synthetic soundscapes, tiny preset) when asked for in the notebook, by
    ``ASIT_OFFLINE=1``, or in CI (``CI`` set: CI machines have no Kaggle credentials or GPU)."""
    env = os.environ
    return bool(offline) or env.get("ASIT_OFFLINE", "").lower() in _TRUE or bool(env.get("CI"))


def smoke_requested(smoke: bool = False) -> bool:
    """Cut training and evaluation to seconds (``CI`` set, or ``ASIT_SMOKE=1``): checks that everything runs,
    not that it learns."""
    env = os.environ
    return bool(smoke) or env.get("ASIT_SMOKE", "").lower() in _TRUE or bool(env.get("CI"))


@dataclass(frozen=True)
class Workspace:
    """The folders the notebooks share (each notebook reads what the one before it wrote).

    ``root/data/source`` (01: downloaded or synthesised audio) → ``root/data/cache`` (02: decoded 16 kHz clips)
    → ``root/checkpoints/<run>`` (03) → ``root/reports`` (04) ; every figure lands in ``root/figures``.
    """

    root: Path

    @property
    def source(self) -> Path:
        return self.root / "data" / "source"

    @property
    def cache(self) -> Path:
        return self.root / "data" / "cache"

    @property
    def checkpoints(self) -> Path:
        return self.root / "checkpoints"

    @property
    def figures(self) -> Path:
        return self.root / "figures"

    @property
    def reports(self) -> Path:
        return self.root / "reports"

    def checkpoint(self, run: str) -> Path:
        return self.checkpoints / run

    def save(self, fig, name: str) -> None:
        """Save ``fig`` as ``figures/<name>.png``. (Returns nothing, so a cell ending in ``ws.save(...)`` shows
        the figure once, through the inline backend, not twice.)"""
        from .viz import save_figure

        save_figure(fig, self.figures / f"{name}.png")

    def write_json(self, name: str, data: dict) -> Path:
        """``reports/<name>.json``, written atomically."""
        path = self.reports / f"{name}.json"
        path.parent.mkdir(parents=True, exist_ok=True)
        fd, tmp = tempfile.mkstemp(suffix=".tmp", dir=path.parent)
        with os.fdopen(fd, "w", encoding="utf-8") as f:
            json.dump(data, f, indent=1, default=json_default)
        os.replace(tmp, path)
        return path

    def read_json(self, name: str) -> dict:
        path = self.reports / f"{name}.json"
        if not path.exists():
            raise FileNotFoundError(f"{path}: not found; run the notebook that writes it first")
        return json.loads(path.read_text(encoding="utf-8"))


def checkout_root() -> Path | None:
    """The checkout this package runs from (editable install), or None for an installed wheel."""
    root = Path(__file__).resolve().parent.parent
    return root if (root / "notebooks").is_dir() and (root / "pyproject.toml").is_file() else None


def workspace(work_dir: str | os.PathLike | None = None, use_drive: bool = False) -> Workspace:
    """The shared workspace: ``work_dir`` if given; else in Colab ``/content/asit`` (``MyDrive/asit`` with
    ``use_drive``, see :func:`asit_helpers.colab.workspace_root`), ``outputs/`` in a checkout, ``./asit-work``
    anywhere else."""
    root = workspace_root(work_dir, use_drive)
    if root is None:
        root = checkout_root() / "outputs" if checkout_root() is not None else Path.cwd() / "asit-work"
    root = root.expanduser().resolve()
    root.mkdir(parents=True, exist_ok=True)
    return Workspace(root)


# ---- expected failures, in two lines ---------------------------------------------------------------------------


@contextmanager
def explained(action: str, repo: str | None = None) -> Iterator[None]:
    """Run a cell's step; an expected failure (:func:`asit_helpers.messages.brief`) becomes a :class:`LessonStop`
    (two lines: what failed, what to do), anything else stays a normal traceback.

    Args:
        action: what the step does, as a verb phrase ("download ESC-50 from GitHub").
        repo: the Hub repository it loads, if any.
    """
    try:
        yield
    except LessonStop:
        raise
    except Exception as exc:
        explanation = messages.brief(exc, action=action, repo=repo)
        if explanation is None:
            raise
        raise LessonStop(explanation) from None


# ---- standing alone: rebuild what an earlier notebook would have made -----------------------------------------------


def fetch_source(ws: Workspace, dataset: str = DEFAULT_DATASET, *, offline: bool, smoke: bool = False,
                 clips_per_class: int = 60) -> Path:
    """Notebook 01's step: download ``dataset`` (offline: synthesise soundscapes) under ``ws.source`` and record
    where in ``reports/source.json``, which notebook 02 reads. Downloads are cached: a second call fetches nothing.

    Raises:
        LessonStop: no network, or Kaggle credentials missing or refused (two lines saying what to do).
    """
    from . import sources
    from .synth import make_soundscapes

    if offline:
        source_dir = ws.source / "synth"
        make_soundscapes(source_dir, clips_per_class=6 if smoke else clips_per_class, seed=0)
    else:
        where = "from Kaggle" if "/" in dataset else "from GitHub"
        with explained(f"download {dataset} {where}"):
            source_dir = sources.download(dataset, ws.source)
    ws.write_json("source", {"source": str(source_dir), "dataset": "synthetic" if offline else dataset})
    return source_dir


def _source_ready(ws: Workspace) -> bool:
    path = ws.reports / "source.json"
    return path.exists() and Path(json.loads(path.read_text(encoding="utf-8"))["source"]).is_dir()


def _cache_ready(ws: Workspace) -> bool:
    return (ws.cache / "cache.json").exists()


def _where(ws: Workspace) -> str:
    return f"this workspace ({ws.root})"


def ensure_data(ws: Workspace, upto: str = "cache", *, offline: bool, smoke: bool = False,
                dataset: str = DEFAULT_DATASET, say: Callable[[str], None] = print) -> None:
    """Make sure the workspace holds notebook 01's audio (``upto="source"``) and, with ``upto="cache"``, notebook
    02's cache; whatever is missing (a notebook opened alone in a fresh runtime) is rebuilt now, and it says so.
    """
    if upto not in ("source", "cache"):
        raise ValueError(f"upto must be 'source' or 'cache', got {upto!r}")
    if upto == "cache" and _cache_ready(ws):
        return
    import time

    started = time.perf_counter()
    if not _source_ready(ws):
        what = "synthesising the soundscapes" if offline else f"downloading {dataset}"
        say(f"No audio from notebook 01 in {_where(ws)}: {what} now, as notebook 01 does.")
        fetch_source(ws, dataset, offline=offline, smoke=smoke)
    if upto == "cache":
        from .data import preprocess

        say(f"No cache from notebook 02 in {_where(ws)}: decoding it now, as notebook 02 does.")
        source = json.loads((ws.reports / "source.json").read_text(encoding="utf-8"))["source"]
        preprocess(source, ws.cache, workers=2, seed=0, progress=False)
    say(f"Data ready in {time.perf_counter() - started:.0f} s.")


def _checkpoint_or_stop(path: str | os.PathLike) -> str:
    if not (Path(path) / "config.json").is_file():
        raise LessonStop(Explanation(
            f"CHECKPOINT = {str(path)!r} is not a checkpoint folder (no config.json in it).",
            "Point CHECKPOINT at a folder notebook 03 or `asit train` wrote (under checkpoints/), or set it to None.",
        ))
    return str(path)


def ensure_checkpoint(ws: Workspace, checkpoint: str | os.PathLike | None = None, *, offline: bool,
                      smoke: bool = False, say: Callable[[str], None] = print) -> str:
    """The checkpoint notebooks 04-06 use, and the cache they test it on (:func:`ensure_data`).

    ``checkpoint`` if given; else the one notebook 03 recorded in ``reports/run.json``; else (a notebook opened
    alone) the quick recipe is trained now (:data:`OFFLINE_TRAINING` offline, :data:`QUICK_TRAINING` on real
    data; :data:`SMOKE_TRAINING` on top with ``smoke``) and recorded there too, so the next notebook reuses it.
    """
    ensure_data(ws, "cache", offline=offline, smoke=smoke, say=say)
    if checkpoint is not None:
        return _checkpoint_or_stop(checkpoint)
    run = ws.reports / "run.json"
    if run.exists():
        recorded = json.loads(run.read_text(encoding="utf-8"))["checkpoint"]
        if (Path(recorded) / "config.json").is_file():
            return recorded
    from .train import train

    settings = dict(OFFLINE_TRAINING if offline else QUICK_TRAINING)
    settings.update(SMOKE_TRAINING if smoke else {})
    name = "quick-{preset}-{mode}-{epochs}ep".format(**settings)
    say(f"No checkpoint from notebook 03 in {_where(ws)} and CHECKPOINT is not set: training the quick recipe "
        f"now ({settings['preset']}, {settings['mode']}, {settings['epochs']} epochs). To skip this, run 03 with "
        "USE_DRIVE = True first, or set CHECKPOINT.")
    check_backbone(settings["preset"], offline=offline)
    with explained("train the quick recipe", repo=_hub_repo(settings["preset"])):
        result = train(ws.cache, ws.checkpoint(name), resume=True, **settings)
    ws.write_json("run", {"checkpoint": str(result.checkpoint), "settings": settings, "quick_recipe": True})
    say(f"Quick recipe trained in {result.seconds:.0f} s -> {result.checkpoint}")
    return str(result.checkpoint)


def _hub_repo(preset: str) -> str | None:
    """The Hub repository a preset loads its backbone from, or None (random init or a local folder)."""
    from .model import BASE_CHECKPOINT, PRESETS

    if preset == "base":
        return BASE_CHECKPOINT
    if preset in PRESETS or Path(preset).exists():
        return None
    return preset


def check_backbone(preset: str, *, offline: bool) -> None:
    """Before a long wait, fail in two lines (:class:`LessonStop`) if ``preset``'s backbone must come from a
    Hugging Face Hub this runtime cannot reach (rather than after ~35 s of retried requests); the same check
    ``train`` makes (:func:`asit_helpers.runtime.require_hub_model`), said for a notebook."""
    from .messages import ExpectedError, HubUnavailableError
    from .runtime import require_hub_model

    repo = None if offline else _hub_repo(preset)
    if repo is None:
        return
    try:
        require_hub_model(repo)
    except HubUnavailableError:
        raise LessonStop(messages.brief_hub_unavailable(repo)) from None
    except ExpectedError as exc:  # e.g. no such model on the Hub
        raise LessonStop(Explanation(str(exc).splitlines()[0].removeprefix("error: "),
                                     'Set PRESET to a Hub id (e.g. "facebook/wav2vec2-base"), "base", or '
                                     'OFFLINE = True.')) from None
