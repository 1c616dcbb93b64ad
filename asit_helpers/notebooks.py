"""The notebook suite (``notebooks/01_…`` → ``06_…``): what the lessons share, and the one runner that executes
them headless for ``asit demo`` / ``make demo`` and the tests.

* The repository slug and branch the Colab badges and the Colab install line point at (:data:`REPO`,
  :data:`BRANCH`; a test checks every notebook against them).
* The switches a notebook reads after its ``parameters`` cell: :func:`offline_requested` (``ASIT_OFFLINE=1`` or
  ``CI`` → synthetic soundscapes and the tiny preset) and :func:`smoke_requested` (``CI`` → training cut to
  seconds).
* :class:`Workspace`: the folders the notebooks hand work to each other through (data, cache, checkpoints,
  figures, reports).
* :func:`run_suite`: execute the notebooks in order with papermill, offline, in one workspace; cells tagged
  :data:`SKIP_TAG` (those that need a person, e.g. a credential upload) are left out.
"""

from __future__ import annotations

import json
import os
import sys
import tempfile
import time
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Callable, Iterator, Sequence

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
    "notebook_dir",
    "run_suite",
    "suite_summary",
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


def _repo_root() -> Path | None:
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
    elif _repo_root() is not None:
        root = _repo_root() / "outputs"
    else:
        root = Path.cwd() / "asit-work"
    root = root.expanduser().resolve()
    root.mkdir(parents=True, exist_ok=True)
    return Workspace(root)


def notebook_dir() -> Path:
    """``notebooks/`` of the checkout (the suite ships with the repository, not with the wheel)."""
    root = _repo_root()
    if root is None:
        raise FileNotFoundError("the notebooks live in the repository: clone it to run the suite")
    return root / "notebooks"


# ---- running the suite headless ----------------------------------------------------------------------------


@contextmanager
def private_kernel(folder: str | os.PathLike, name: str = "asit-python") -> Iterator[str]:
    """A Jupyter kernel spec for *this* interpreter in ``folder``, visible (through ``JUPYTER_PATH``) only while
    the context is open: headless runs use the Python that runs them, whatever kernels the user has installed,
    and nothing global changes."""
    data = Path(folder) / "jupyter-data"
    spec = data / "kernels" / name
    spec.mkdir(parents=True, exist_ok=True)
    (spec / "kernel.json").write_text(json.dumps({
        # log_level=ERROR: the kernel's start-up warnings would drown `asit demo`'s progress lines; errors in
        # cells still show (they are cell outputs, and papermill raises on them)
        "argv": [sys.executable, "-m", "ipykernel_launcher", "-f", "{connection_file}", "--IPKernelApp.log_level=ERROR"],
        "display_name": f"ASiT ({Path(sys.executable).name})",
        "language": "python",
    }), encoding="utf-8")
    old = os.environ.get("JUPYTER_PATH")
    os.environ["JUPYTER_PATH"] = os.pathsep.join([str(data)] + ([old] if old else []))
    try:
        yield name
    finally:
        if old is None:
            os.environ.pop("JUPYTER_PATH", None)
        else:
            os.environ["JUPYTER_PATH"] = old


def without_skipped_cells(nb):
    """A copy of ``nb`` whose :data:`SKIP_TAG` cells are replaced by a markdown note (so cell numbers in error
    messages still match the source notebook)."""
    import copy

    import nbformat

    out = copy.deepcopy(nb)
    for i, cell in enumerate(out.cells):
        if SKIP_TAG in cell.get("metadata", {}).get("tags", []):
            note = nbformat.v4.new_markdown_cell(
                f"*(skipped in this headless run: a cell tagged `{SKIP_TAG}` that needs a person)*"
            )
            note.metadata["tags"] = [SKIP_TAG]
            out.cells[i] = note
    return out


def run_suite(
    out: str | os.PathLike = "outputs",
    *,
    notebooks: Sequence[str] | None = None,
    smoke: bool = False,
    parameters: dict | None = None,
    cell_timeout: int = 900,
    log: Callable[[str], None] = print,
) -> list[dict]:
    """Execute the notebooks headless, in order, offline, sharing one workspace.

    Args:
        out: the workspace (``WORK_DIR`` of every notebook); executed notebooks go to ``out/notebooks``.
        notebooks: names from :data:`NOTEBOOKS`, with or without ``.ipynb`` (default: all, in order).
        smoke: cut training to seconds (what CI and the tests run).
        parameters: extra papermill parameters for every notebook (a notebook ignores names it lacks).
        cell_timeout: seconds one cell may run.
        log: where progress lines go.

    Returns:
        one dict per notebook: ``name``, ``seconds``, ``output`` (the executed notebook).

    Raises:
        papermill.PapermillExecutionError: a cell failed; the partly executed notebook (with the error) is in
            ``out/notebooks``.
    """
    import nbformat
    import papermill as pm

    names = [n if n.endswith(".ipynb") else n + ".ipynb" for n in notebooks] if notebooks else list(NOTEBOOKS)
    unknown = [n for n in names if n not in NOTEBOOKS]
    if unknown:
        raise ValueError(f"unknown notebooks {unknown}; choose from {list(NOTEBOOKS)}")
    src_dir = notebook_dir()
    ws = workspace(out)
    executed_dir = ws.root / "notebooks"
    executed_dir.mkdir(parents=True, exist_ok=True)
    params = {"OFFLINE": True, "SMOKE": bool(smoke), "WORK_DIR": str(ws.root), **(parameters or {})}
    results = []
    with tempfile.TemporaryDirectory(prefix="asit-kernel-") as tmp, private_kernel(tmp) as kernel:
        for name in names:
            nb = without_skipped_cells(nbformat.read(src_dir / name, as_version=4))
            target = executed_dir / name
            log(f"running {name} ...")
            started = time.perf_counter()
            pm.execute_notebook(
                nb,
                str(target),
                parameters=params,
                kernel_name=kernel,
                cwd=str(src_dir),
                progress_bar=False,
                execution_timeout=cell_timeout,
            )
            seconds = time.perf_counter() - started
            log(f"  done in {seconds:.0f} s -> {target}")
            results.append({"name": name, "seconds": round(seconds, 1), "output": str(target)})
    return results


def suite_summary(out: str | os.PathLike, results: Sequence[dict]) -> str:
    """What ``asit demo`` prints at the end: where everything is, and the headline numbers the notebooks saved."""
    ws = Workspace(Path(out).resolve())
    lines = ["", f"Notebook suite finished in {sum(r['seconds'] for r in results):.0f} s:"]
    lines += [f"  {r['name']:<24} {r['seconds']:>6.0f} s" for r in results]
    for name, text in (("eval_test", "test accuracy {accuracy:.3f}, macro-F1 {macro_f1:.3f}"),
                       ("attention", "attention inside the true event window {attention_in_event:.2f} "
                                     "(chance {chance:.2f}); peak inside the event in {peak_in_event:.0%} of clips")):
        try:
            lines.append("  " + text.format(**ws.read_json(name)))
        except (FileNotFoundError, KeyError, TypeError, ValueError):
            pass
    lines += [
        "Where to look:",
        f"  executed notebooks  {ws.root / 'notebooks'}   (open 05_attention.ipynb first)",
        f"  figures (PNG)       {ws.figures}",
        f"  checkpoint          {ws.checkpoints}",
        f"  reports (JSON)      {ws.reports}",
    ]
    return "\n".join(lines)
