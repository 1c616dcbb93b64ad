"""The headless suite runner (``asit demo`` / ``make demo``): skipped cells, refusals, and the whole suite executed
with CI smoke settings."""

from __future__ import annotations

import hashlib
import json
from pathlib import Path

import nbformat
import pytest

from asit_helpers import notebooks as nbmod
from asit_helpers import suite

NB_DIR = Path(__file__).resolve().parent.parent / "notebooks"


def _load(name):
    return nbformat.read(NB_DIR / name, as_version=4)


def _tagged(nb, tag):
    return [c for c in nb.cells if tag in c.get("metadata", {}).get("tags", [])]


def test_skipped_cells_become_notes():
    nb = _load("01_download_data.ipynb")
    tagged = len(_tagged(nb, nbmod.SKIP_TAG))
    assert tagged >= 2  # the Drive mount and the Kaggle credential upload
    out = suite.without_skipped_cells(nb)
    assert len(out.cells) == len(nb.cells)
    assert all(c.cell_type == "markdown" for c in _tagged(out, nbmod.SKIP_TAG))
    assert any(c.cell_type == "code" for c in _tagged(nb, nbmod.SKIP_TAG))  # the source is untouched


def test_unknown_notebook_is_refused(tmp_path):
    with pytest.raises(ValueError, match="unknown notebooks"):
        suite.run_suite(tmp_path, notebooks=["07_nope"])


def test_demo_sets_no_cell_timeout_unless_asked(tmp_path, monkeypatch):
    """A slow CPU must not kill 03's training cell: `asit demo` runs every cell without a time limit by default
    (papermill's execution_timeout=None); --cell-timeout sets one."""
    import papermill as pm

    from asit_helpers.cli import main

    seen = []

    def fake_execute(nb, target, **kwargs):
        seen.append(kwargs["execution_timeout"])
        nbformat.write(nb, target)

    monkeypatch.setattr(pm, "execute_notebook", fake_execute)
    assert main(["demo", "--out", str(tmp_path / "a"), "--only", "01_download_data"]) == 0
    assert main(["demo", "--out", str(tmp_path / "b"), "--only", "01_download_data", "--cell-timeout", "60"]) == 0
    assert seen == [None, 60]


def _digest(folder: Path) -> dict:
    return {p.name: hashlib.sha256(p.read_bytes()).hexdigest() for p in sorted(folder.glob("*.ipynb"))}


@pytest.mark.slow
def test_asit_demo_executes_the_whole_suite(smoke_suite):
    """`asit demo --smoke`: every notebook runs headless, in order, in one workspace (what `make demo` runs)."""
    before, out, printed = smoke_suite.sources_before, smoke_suite.out, smoke_suite.printed
    assert "Where to look:" in printed and str(out.resolve() / "figures") in printed

    for name in nbmod.NOTEBOOKS:
        executed = nbformat.read(out / "notebooks" / name, as_version=4)
        errors = [o for c in executed.cells if c.cell_type == "code" for o in c.outputs if o.output_type == "error"]
        assert not errors, f"{name}: {errors[0]['ename']}: {errors[0]['evalue']}"
        injected = _tagged(executed, "injected-parameters")
        assert injected and "OFFLINE = True" in injected[0].source
        skipped = [c for c in _tagged(executed, nbmod.SKIP_TAG)]
        assert all(c.cell_type == "markdown" for c in skipped)
    figures = {p.name for p in (out / "figures").glob("*.png")}
    assert {"03_learning_curves.png", "04_confusion.png", "05_attention_profiles.png",
            "05_attention_vs_energy.png"} <= figures
    assert any(f.startswith("05_attention_") and f not in ("05_attention_profiles.png", "05_attention_vs_energy.png")
               for f in figures)
    run = json.loads((out / "reports" / "run.json").read_text())
    assert (Path(run["checkpoint"]) / "model.safetensors").exists()
    attention = json.loads((out / "reports" / "attention.json").read_text())
    assert attention["clips"] > 0 and 0 <= attention["attention_in_event"] <= 1
    # the 06 demo cell classified a test clip through the widget and left a static copy of its result
    demo_nb = nbformat.read(out / "notebooks" / "06_demo_widget.ipynb", as_version=4)
    html = [o for c in demo_nb.cells if c.cell_type == "code" for o in c.outputs
            if o.output_type == "display_data" and "text/html" in o.data and "asit-label" in o.data["text/html"]]
    assert html
    # the source notebooks are untouched and nothing was written next to them
    assert _digest(NB_DIR) == before
    assert sorted(p.name for p in NB_DIR.iterdir()) == sorted(nbmod.NOTEBOOKS)


@pytest.mark.slow
def test_asit_demo_reports_a_failing_notebook(tmp_path, capsys):
    """04 on a workspace whose reports/source.json is corrupt: the CLI says which cell failed and where the
    partly executed notebook is. (On an empty workspace 04 stands alone: it rebuilds what it needs.)"""
    from asit_helpers.cli import main

    out = tmp_path / "broken"
    (out / "reports").mkdir(parents=True)
    (out / "reports" / "source.json").write_text("{not json")
    assert main(["demo", "--out", str(out), "--smoke", "--only", "04_evaluate"]) == 1
    err = capsys.readouterr().err
    assert "JSONDecodeError" in err and "a notebook failed in cell" in err
    assert str(out / "notebooks") in err
    assert (out / "notebooks" / "04_evaluate.ipynb").exists()
