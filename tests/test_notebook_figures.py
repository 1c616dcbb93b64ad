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
    out, _ = smoke_suite
    rows = figure_cells(out / "notebooks")
    assert len(rows) >= 8, rows  # the suite's figure cells were found at all
    blank = [f"{name} cell {i}" for name, i, images in rows if images == 0]
    assert not blank, f"cells that make a figure but show none: {blank}"
    # and each saved figure is shown once: as many images in those cells as PNGs the workspace saved
    saved = sorted(p.name for p in (out / "figures").glob("*.png"))
    assert sum(images for *_, images in rows) == len(saved), saved
