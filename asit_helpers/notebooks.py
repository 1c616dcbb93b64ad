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
"""

from __future__ import annotations

import json
import os
import sys
import tempfile
from dataclasses import dataclass
from pathlib import Path
from typing import Any

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


def in_colab() -> bool:
    return "google.colab" in sys.modules


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
            json.dump(data, f, indent=1, default=_json_default)
        os.replace(tmp, path)
        return path

    def read_json(self, name: str) -> dict:
        path = self.reports / f"{name}.json"
        if not path.exists():
            raise FileNotFoundError(f"{path}: not found; run the notebook that writes it first")
        return json.loads(path.read_text(encoding="utf-8"))


def _json_default(obj: Any):
    import numpy as np

    if isinstance(obj, (np.integer, np.floating, np.bool_)):
        return obj.item()
    if isinstance(obj, np.ndarray):
        return obj.tolist()
    if isinstance(obj, Path):
        return str(obj)
    raise TypeError(f"not JSON serialisable: {type(obj).__name__}")


def checkout_root() -> Path | None:
    """The checkout this package runs from (editable install), or None for an installed wheel."""
    root = Path(__file__).resolve().parent.parent
    return root if (root / "notebooks").is_dir() and (root / "pyproject.toml").is_file() else None


def workspace(work_dir: str | os.PathLike | None = None) -> Workspace:
    """The shared workspace: ``work_dir`` if given; else ``/content/asit`` in Colab, ``outputs/`` in a checkout,
    ``./asit-work`` anywhere else."""
    if work_dir is not None:
        root = Path(work_dir)
    elif in_colab():
        root = Path("/content/asit")
    elif checkout_root() is not None:
        root = checkout_root() / "outputs"
    else:
        root = Path.cwd() / "asit-work"
    root = root.expanduser().resolve()
    root.mkdir(parents=True, exist_ok=True)
    return Workspace(root)
