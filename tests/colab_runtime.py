"""Test helpers around the stand-in ``google.colab`` (``tests/colab_standin``): load it in this process, or give a
notebook kernel a "Colab runtime" (the stand-in imported at start-up, as Colab's kernel imports the real one)."""

from __future__ import annotations

import os
import sys
from contextlib import contextmanager
from pathlib import Path

STANDIN = Path(__file__).resolve().parent / "colab_standin"
ROOT = Path(__file__).resolve().parent.parent


def _forget_colab() -> None:
    for name in [n for n in sys.modules if n == "google.colab" or n.startswith("google.colab.")]:
        del sys.modules[name]


@contextmanager
def standin_in_process():
    """``import google.colab`` gives the stand-in while the context is open (a fresh copy each time)."""
    _forget_colab()
    sys.path.insert(0, str(STANDIN))  # so `google` imports even where no other package provides it
    import google  # a namespace package (protobuf lives there too): add the stand-in to its path for a while

    saved = google.__path__
    google.__path__ = list(dict.fromkeys([str(STANDIN / "google"), *saved]))
    try:
        import google.colab

        yield google.colab
    finally:
        google.__path__ = saved  # afterwards `import google.colab` fails again, as it does outside Colab
        sys.path.remove(str(STANDIN))
        _forget_colab()


def colab_kernel_env(monkeypatch, folder: Path, **env: str) -> None:
    """Kernels started from now on import the stand-in at start-up (an IPython startup file in their own
    IPYTHONDIR) and see ``env`` (``COLAB_STANDIN_*`` and others)."""
    startup = folder / "ipython" / "profile_default" / "startup"
    startup.mkdir(parents=True, exist_ok=True)
    (startup / "00-colab-standin.py").write_text("import google.colab  # as Colab's kernel does at start-up\n")
    monkeypatch.setenv("IPYTHONDIR", str(folder / "ipython"))
    paths = [str(STANDIN), str(ROOT)] + [p for p in os.environ.get("PYTHONPATH", "").split(os.pathsep) if p]
    monkeypatch.setenv("PYTHONPATH", os.pathsep.join(dict.fromkeys(paths)))
    for key, value in env.items():
        monkeypatch.setenv(key, value)


def run_notebook(name: str, work_dir: Path, *, cwd: Path | None = None, keep_skipped: bool = False, **params):
    """Execute one notebook in a fresh kernel (a fresh "runtime") on ``work_dir``; returns the executed notebook,
    also when a cell failed (then ``.failed`` holds the papermill error). ``keep_skipped``: run the cells that need
    a person too (the stand-in plays the person)."""
    import tempfile

    import nbformat
    import papermill as pm

    from asit_helpers.suite import notebook_dir, private_kernel, without_skipped_cells

    nb = nbformat.read(notebook_dir() / name, as_version=4)
    nb = nb if keep_skipped else without_skipped_cells(nb)
    target = Path(work_dir) / "executed" / name
    target.parent.mkdir(parents=True, exist_ok=True)
    failed = None
    with tempfile.TemporaryDirectory(prefix="asit-kernel-") as tmp, private_kernel(tmp) as kernel:
        try:
            pm.execute_notebook(nb, str(target), parameters={"WORK_DIR": str(work_dir), **params},
                                kernel_name=kernel, cwd=str(cwd or work_dir), progress_bar=False,
                                execution_timeout=900)
        except pm.PapermillExecutionError as exc:
            failed = exc
    executed = nbformat.read(target, as_version=4)
    executed.failed = failed
    return executed


def outputs(nb, kind: str | None = None) -> list:
    return [o for c in nb.cells if c.cell_type == "code" for o in c.outputs if kind is None or o.output_type == kind]


def text_of(nb, outputs_only: bool = False) -> str:
    """The executed notebook as text (for secrets checks), or only what its cells printed and displayed."""
    import json

    if outputs_only:
        return json.dumps(outputs(nb))
    return json.dumps({key: value for key, value in nb.items() if key != "failed"})
