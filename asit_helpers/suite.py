"""Run the notebook suite headless: ``asit demo`` / ``make demo`` and the tests execute the lessons in order with
papermill, offline, in one workspace. Cells tagged :data:`~asit_helpers.notebooks.SKIP_TAG` (those that need a
person, e.g. a credential upload) are left out. What the lessons themselves call is :mod:`asit_helpers.notebooks`.
"""

from __future__ import annotations

import html
import json
import os
import re
import sys
import tempfile
import time
from contextlib import contextmanager
from pathlib import Path
from typing import Callable, Iterator, Sequence

from .notebooks import NOTEBOOKS, SKIP_TAG, Workspace, checkout_root, workspace

__all__ = ["notebook_dir", "private_kernel", "without_skipped_cells", "settle_progress_bars", "run_suite",
           "suite_summary"]


def notebook_dir() -> Path:
    """``notebooks/`` of the checkout (the suite ships with the repository, not with the wheel)."""
    root = checkout_root()
    if root is None:
        raise FileNotFoundError("the notebooks live in the repository: clone it to run the suite")
    return root / "notebooks"


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
    cell_timeout: int | None = None,
    log: Callable[[str], None] = print,
) -> list[dict]:
    """Execute the notebooks headless, in order, offline, sharing one workspace.

    Args:
        out: the workspace (``WORK_DIR`` of every notebook); executed notebooks go to ``out/notebooks``.
        notebooks: names from :data:`NOTEBOOKS`, with or without ``.ipynb`` (default: all, in order).
        smoke: cut training to seconds (what CI and the tests run).
        parameters: extra papermill parameters for every notebook (a notebook ignores names it lacks).
        cell_timeout: seconds one cell may run (``None``: no limit, the default: 03's training cell takes minutes
            on a quiet CPU and can take an hour on a slow or busy one, and a demo must not die of that; set one
            to stop a hung cell, e.g. in CI).
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
            nbformat.write(settle_progress_bars(nbformat.read(target, as_version=4)), str(target))
            log(f"  done in {seconds:.0f} s -> {target}")
            results.append({"name": name, "seconds": round(seconds, 1), "output": str(target)})
    return results


_WIDGET_VIEW = "application/vnd.jupyter.widget-view+json"
_WIDGET_STATE = "application/vnd.jupyter.widget-state+json"
_TQDM_TEXT = re.compile(r"\d+%\|.*\|")


def _bar_text(state: dict, model_id: str) -> str | None:
    """The final text of a tqdm notebook bar (an HBox of HTML, FloatProgress, HTML) from saved widget state."""
    box = state.get(model_id, {})
    children = [state.get(ref.removeprefix("IPY_MODEL_"), {}) for ref in box.get("state", {}).get("children", [])]
    if box.get("model_name") != "HBoxModel" or [c.get("model_name") for c in children] != [
        "HTMLModel", "FloatProgressModel", "HTMLModel"]:
        return None
    left, bar, right = (c["state"] for c in children)
    filled = round(10 * bar.get("value", 0) / bar["max"]) if bar.get("max") else 0
    text = f"{html.unescape(left.get('value', ''))}|{'█' * filled:<10}|{html.unescape(right.get('value', ''))}"
    return text.replace("\u2007", " ")


def settle_progress_bars(nb):
    """A saved notebook as its reader would have seen it live: each tqdm bar's plain-text copy (what viewers
    without widgets show) gets the bar's final state instead of the "0%" it was displayed with, and bars that
    closed themselves (``leave=False``: one per training epoch) are dropped, with the log lines around them joined
    into one output. Changes ``nb`` in place and returns it."""
    state = nb.metadata.get("widgets", {}).get(_WIDGET_STATE, {}).get("state", {})
    for cell in nb.cells:
        if cell.cell_type != "code":
            continue
        outputs = []
        for out in cell.outputs:
            view = out.get("data", {}).get(_WIDGET_VIEW) if out.output_type == "display_data" else None
            if view and _TQDM_TEXT.search(out.data.get("text/plain", "")):
                final = _bar_text(state, view["model_id"])
                if final is None:
                    continue  # the bar is gone in the live notebook too
                out.data["text/plain"] = final
            if outputs and out.output_type == "stream" and outputs[-1].output_type == "stream" \
                    and outputs[-1].name == out.name:
                outputs[-1].text += out.text
                continue
            outputs.append(out)
        cell.outputs = outputs
    return nb


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
