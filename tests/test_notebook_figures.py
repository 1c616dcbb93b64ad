"""What a student sees in the executed notebooks: every cell that makes a figure shows it (an image output,
not only a PNG on disk), and progress bars and training logs end in a readable final state."""

from __future__ import annotations

import re

import nbformat
import pytest

from asit_helpers import notebooks as nbmod

#: A cell "makes a figure" when it calls a plot of viz or hands a figure to the workspace.
MAKES_FIGURE = re.compile(r"\bviz\.plot_\w+\(|\bws\.save\(")


def _images(cell) -> int:
    return sum("image/png" in out.get("data", {}) for out in cell.outputs)


def figure_cells(executed_dir):
    """``(notebook, cell index, images shown)`` for every code cell that makes a figure."""
    rows = []
    for name in nbmod.NOTEBOOKS:
        nb = nbformat.read(executed_dir / name, as_version=4)
        for i, cell in enumerate(nb.cells):
            if cell.cell_type == "code" and MAKES_FIGURE.search(cell.source):
                rows.append((name, i, _images(cell)))
    return rows


@pytest.mark.slow
def test_every_cell_that_makes_a_figure_shows_it(smoke_suite):
    out = smoke_suite.out
    rows = figure_cells(out / "notebooks")
    assert len(rows) >= 8, rows  # the suite's figure cells were found at all
    blank = [f"{name} cell {i}" for name, i, images in rows if images == 0]
    assert not blank, f"cells that make a figure but show none: {blank}"
    # and each saved figure is shown once: as many images in those cells as PNGs the workspace saved
    saved = sorted(p.name for p in (out / "figures").glob("*.png"))
    assert sum(images for *_, images in rows) == len(saved), saved


def _bar_state(prefix: str, value: float, total: float, suffix: str) -> dict:
    ids = {"box": "b0", "left": "h1", "bar": "p1", "right": "h2"}
    return {
        ids["box"]: {"model_name": "HBoxModel", "state": {"children": [f"IPY_MODEL_{ids[k]}" for k in ("left", "bar", "right")]}},
        ids["left"]: {"model_name": "HTMLModel", "state": {"value": prefix}},
        ids["bar"]: {"model_name": "FloatProgressModel", "state": {"value": value, "max": total}},
        ids["right"]: {"model_name": "HTMLModel", "state": {"value": suffix}},
    }


def test_saved_progress_bars_show_their_final_state():
    from asit_helpers.suite import settle_progress_bars

    cell = nbformat.v4.new_code_cell("preprocess(...)")
    cell.outputs = [
        nbformat.v4.new_output("display_data", data={
            "application/vnd.jupyter.widget-view+json": {"model_id": "b0", "version_major": 2, "version_minor": 0},
            "text/plain": "decoding:   0%|          | 0/132 [00:00<?, ?clip/s]"}),
        nbformat.v4.new_output("stream", name="stdout", text="line 1\n"),
        nbformat.v4.new_output("display_data", data={  # a widget that is not a saved bar: left alone
            "application/vnd.jupyter.widget-view+json": {"model_id": "zz", "version_major": 2, "version_minor": 0},
            "text/plain": "AsitDemo(...)"}),
        nbformat.v4.new_output("stream", name="stdout", text="line 2\n"),
        nbformat.v4.new_output("stream", name="stdout", text="line 3\n"),
    ]
    nb = nbformat.v4.new_notebook(cells=[cell])
    nb.metadata["widgets"] = {"application/vnd.jupyter.widget-state+json": {
        "state": _bar_state("decoding:\u2007100%", 132, 132, "\u2007132/132\u2007[00:01&lt;00:00,\u200773.10clip/s]")}}
    out = settle_progress_bars(nb).cells[0].outputs
    assert out[0].data["text/plain"] == "decoding: 100%|██████████| 132/132 [00:01<00:00, 73.10clip/s]"
    assert [o.output_type for o in out] == ["display_data", "stream", "display_data", "stream"]
    assert out[3].text == "line 2\nline 3\n"  # neighbouring log lines joined into one block


@pytest.mark.slow
def test_saved_notebooks_show_finished_bars_and_one_line_per_epoch(smoke_suite):
    out = smoke_suite.out
    for name in nbmod.NOTEBOOKS:
        nb = nbformat.read(out / "notebooks" / name, as_version=4)
        for i, cell in enumerate(nb.cells):
            for o in cell.get("outputs", []):
                text = o.get("data", {}).get("text/plain", "") if o.output_type == "display_data" else ""
                assert not re.search(r"\b0%\|", text), f"{name} cell {i} saved a bar at 0%: {text}"
    train = nbformat.read(out / "notebooks" / "03_train.ipynb", as_version=4)
    [cell] = [c for c in train.cells if c.cell_type == "code" and "train(" in c.source and "import train" in c.source]
    blocks = [o.output_type for o in cell.outputs]
    assert len(blocks) <= 4, blocks  # the cached-embedding bar, the training bar, the log; not one block per epoch
    log = "".join(o.text for o in cell.outputs if o.output_type == "stream" and o.name == "stdout")
    epochs = re.findall(r"^epoch (\d+)/(\d+) ", log, re.M)
    assert epochs and len(epochs) == int(epochs[0][1]), log
