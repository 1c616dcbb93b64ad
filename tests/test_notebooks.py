"""The notebook suite: committed clean, every badge pointing at its own path, a Colab-ready setup and a papermill
parameters cell in each, and the whole suite executed headless (CI smoke settings) through ``asit demo``."""

from __future__ import annotations

import re
from pathlib import Path

import nbformat
import pytest

from asit_helpers import notebooks as nbmod

NB_DIR = Path(__file__).resolve().parent.parent / "notebooks"


def _load(name):
    return nbformat.read(NB_DIR / name, as_version=4)


def _tagged(nb, tag):
    return [c for c in nb.cells if tag in c.get("metadata", {}).get("tags", [])]


def test_the_suite_is_every_notebook_in_order():
    assert sorted(p.name for p in NB_DIR.glob("*.ipynb")) == list(nbmod.NOTEBOOKS)
    assert [n[:2] for n in nbmod.NOTEBOOKS] == ["01", "02", "03", "04", "05", "06", "07"]


@pytest.mark.parametrize("name", nbmod.NOTEBOOKS)
def test_committed_without_outputs(name):
    nb = _load(name)
    nbformat.validate(nb)
    for i, cell in enumerate(nb.cells):
        if cell.cell_type == "code":
            assert cell.outputs == [], f"{name} cell {i} has outputs: clear them before committing"
            assert cell.execution_count is None, f"{name} cell {i} has an execution count"
    assert "widgets" not in nb.metadata, f"{name} carries saved widget state"
    assert "papermill" not in nb.metadata, f"{name} is an executed copy, not the source"


@pytest.mark.parametrize("name", nbmod.NOTEBOOKS)
def test_badges_point_at_the_notebooks_own_path(name):
    nb = _load(name)
    first = nb.cells[0]
    assert first.cell_type == "markdown" and first.source.startswith("# ")
    assert nbmod.badge_row(name) in first.source
    assert f"https://colab.research.google.com/github/{nbmod.REPO}/blob/{nbmod.BRANCH}/notebooks/{name}" in first.source
    # every GitHub/Colab link in the suite uses the one slug, and no notebook links to another's Colab page as its own
    text = "\n".join(c.source for c in nb.cells)
    for slug in re.findall(r"(?:github\.com|colab\.research\.google\.com/github)/([\w.-]+/[\w.-]+)", text):
        assert slug == nbmod.REPO, f"{name} links to {slug}, not {nbmod.REPO}"
    colab_links = re.findall(r"colab\.research\.google\.com/github/[^)\s]+", text)
    assert colab_links and all(link.endswith(f"/notebooks/{name}") for link in colab_links)


@pytest.mark.parametrize("name", nbmod.NOTEBOOKS)
def test_lesson_structure(name):
    nb = _load(name)
    assert "## What you will learn" in nb.cells[0].source
    assert len(re.findall(r"^- ", nb.cells[0].source.split("## What you will learn")[1], re.M)) >= 3
    assert any("What to try next" in c.source for c in nb.cells if c.cell_type == "markdown")
    code = [c for c in nb.cells if c.cell_type == "code"]
    # Setup first: installs the package in Colab without touching torch, enables third-party widgets
    setup = code[0].source
    [install] = [line for line in setup.splitlines() if f'"{nbmod.INSTALL_SPEC}"' in line]
    assert '"pip", "install", "-q"' in install and "torch" not in install
    assert 'if "google.colab" in sys.modules' in setup and "IN_COLAB = colab.setup()" in setup
    # then exactly one papermill parameters cell, with the one-line offline switch defaulting to the real path
    [params] = _tagged(nb, "parameters")
    assert code.index(params) == 1
    assert re.search(r"^OFFLINE = False\b", params.source, re.M)
    assert re.search(r"^SMOKE = False\b", params.source, re.M)
    assert re.search(r"^WORK_DIR = None\b", params.source, re.M)
    # the Drive mount needs a person: tagged, and only in Colab
    drive = [c for c in _tagged(nb, nbmod.SKIP_TAG) if "drive.mount" in c.source]
    assert len(drive) == 1 and "IN_COLAB" in drive[0].source
    # the cell after the parameters applies ASIT_OFFLINE / CI
    assert "nb.offline_requested(OFFLINE)" in code[3].source and "nb.smoke_requested(SMOKE)" in code[3].source
    # cells stay thin: anything long belongs in the package
    for c in code:
        assert len(c.source.splitlines()) <= 30, f"{name}: a {len(c.source.splitlines())}-line cell"


@pytest.mark.parametrize("name", nbmod.NOTEBOOKS)
def test_papermill_reads_every_parameter(name):
    import papermill as pm

    params = pm.inspect_notebook(str(NB_DIR / name))
    assert {"OFFLINE", "SMOKE", "WORK_DIR", "USE_DRIVE"} <= set(params)
    [cell] = _tagged(_load(name), "parameters")
    assigned = re.findall(r"^([A-Z_][A-Z0-9_]*) = ", cell.source, re.M)
    assert sorted(assigned) == sorted(params), "papermill could not parse every parameter line"
    for pname, info in params.items():
        assert info["help"], f"{name}: parameter {pname} has no comment explaining it"


def test_real_defaults_for_colab():
    """The defaults are the real path (ESC-22 data, wav2vec2-base); offline is one switch away."""
    import papermill as pm

    assert pm.inspect_notebook(str(NB_DIR / "01_download_data.ipynb"))["DATASET"]["default"] == '"esc22"'
    train_params = pm.inspect_notebook(str(NB_DIR / "03_train.ipynb"))
    assert train_params["PRESET"]["default"] == '"base"'
    assert nbmod.OFFLINE_TRAINING["preset"].startswith("tiny")  # offline: a random-initialised tiny backbone


def test_offline_and_smoke_switches(monkeypatch):
    for var in ("CI", "ASIT_OFFLINE", "ASIT_SMOKE"):
        monkeypatch.delenv(var, raising=False)
    assert not nbmod.offline_requested() and not nbmod.smoke_requested()
    assert nbmod.offline_requested(True) and nbmod.smoke_requested(True)
    monkeypatch.setenv("ASIT_OFFLINE", "1")
    assert nbmod.offline_requested() and not nbmod.smoke_requested()
    monkeypatch.setenv("ASIT_OFFLINE", "0")
    assert not nbmod.offline_requested()
    monkeypatch.setenv("CI", "true")
    assert nbmod.offline_requested() and nbmod.smoke_requested()


def test_workspace_layout(tmp_path):
    ws = nbmod.workspace(tmp_path / "w")
    assert ws.root == (tmp_path / "w").resolve() and ws.root.is_dir()
    ws.write_json("x", {"a": 1})
    assert ws.read_json("x") == {"a": 1}
    assert not list(ws.reports.glob("*.tmp"))
    with pytest.raises(FileNotFoundError, match="run the notebook"):
        ws.read_json("missing")


def test_readme_badge_table_lists_every_notebook():
    readme = (NB_DIR.parent / "README.md").read_text(encoding="utf-8")
    section = readme.split("<!-- section:notebooks -->")[1].split("<!-- section:")[0]
    for name in nbmod.NOTEBOOKS:
        assert f"(notebooks/{name})" in section
        assert f"({nbmod.colab_url(name)})" in section
