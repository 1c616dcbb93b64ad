"""The notebooks as a Colab student meets them, with the stand-in ``google.colab`` imported at kernel start:
each notebook alone in a fresh runtime (offline, smoke), widgets shown with Colab's metadata, failures in two
lines, and Kaggle credentials that stay private. Network failures are made certain with a proxy on a closed port,
whatever network the machine has."""

from __future__ import annotations

import json
import stat
import time
from pathlib import Path

import numpy as np
import pytest
import soundfile as sf

from colab_runtime import colab_kernel_env, outputs, run_notebook, text_of

from asit_helpers import notebooks as nbmod

pytestmark = pytest.mark.slow

WIDGET = "application/vnd.jupyter.widget-view+json"
CLOSED = "http://127.0.0.1:9"  # nothing listens on port 9 (discard): every connection is refused at once
SECRET = "fedcba9876543210-not-a-real-key-but-unmistakable"


@pytest.fixture
def online_but_unreachable(monkeypatch, tmp_path):
    """The notebooks' real (non-offline) defaults, on a network where nothing answers."""
    for var in ("CI", "ASIT_OFFLINE", "ASIT_SMOKE"):
        monkeypatch.delenv(var, raising=False)
    for var in ("http_proxy", "https_proxy", "HTTP_PROXY", "HTTPS_PROXY"):
        monkeypatch.setenv(var, CLOSED)
    monkeypatch.setenv("no_proxy", "")
    monkeypatch.setenv("HF_ENDPOINT", CLOSED)
    monkeypatch.setenv("HF_HOME", str(tmp_path / "hf-home"))  # nothing cached


def _errors(nb) -> list:
    return outputs(nb, "error")


def _cell_text(cell) -> str:
    return "".join(o.get("text", "") for o in cell.outputs if o.output_type == "stream")


# ---- each notebook alone, in a fresh runtime ------------------------------------------------------------------

_alone: dict[str, tuple] = {}


def _run_alone(name: str, tmp_path_factory) -> tuple:
    """Run ``name`` alone: a fresh kernel with the stand-in Colab, a fresh empty workspace, offline + smoke."""
    if name not in _alone:
        mp = pytest.MonkeyPatch()
        try:
            root = tmp_path_factory.mktemp(f"alone-{name[:2]}")
            colab_kernel_env(mp, root)
            started = time.perf_counter()
            nb = run_notebook(name, root / "work", OFFLINE=True, SMOKE=True)
            _alone[name] = (nb, time.perf_counter() - started, root / "work")
        finally:
            mp.undo()
    return _alone[name]


@pytest.mark.parametrize("name", nbmod.NOTEBOOKS)
def test_each_notebook_stands_alone_in_a_fresh_runtime(name, tmp_path_factory, capsys):
    nb, seconds, work = _run_alone(name, tmp_path_factory)
    with capsys.disabled():
        print(f"\n{name} alone in a fresh runtime (offline, smoke): {seconds:.0f} s")
    errors = _errors(nb)
    assert not errors, f"{name}: {errors[0]['ename']}: {errors[0]['evalue']}"
    setup = next(c for c in nb.cells if c.cell_type == "code")
    assert _cell_text(setup).count("\n") == 1 and "Colab runtime" in _cell_text(setup)  # one quiet line
    said = "\n".join(_cell_text(c) for c in nb.cells if c.cell_type == "code")
    if name != "01_download_data.ipynb":  # it says what it rebuilt, and how long that took
        assert "No audio from notebook 01" in said and "Data ready in" in said
    if name[:2] in ("04", "05", "06"):
        assert "training the quick recipe" in said and "Quick recipe trained in" in said
        assert (Path(json.loads((work / "reports" / "run.json").read_text())["checkpoint"]) / "config.json").exists()


def test_widget_outputs_carry_colab_metadata(tmp_path_factory):
    """With the stand-in's enable_custom_widget_manager: every widget output of every notebook (06's demo, progress
    bars) is a display() with the metadata Colab's manager needs (a bare last expression would go out as an
    execute_result without it)."""
    for name in nbmod.NOTEBOOKS:
        nb, _, _ = _run_alone(name, tmp_path_factory)
        for o in [o for o in outputs(nb) if WIDGET in o.get("data", {})]:
            assert o.output_type == "display_data", f"{name}: {o.output_type}"
            assert o.metadata[WIDGET]["colab"]["custom_widget_manager"]["url"].startswith("https://"), name
    nb, _, _ = _run_alone("06_demo_widget.ipynb", tmp_path_factory)
    assert [o for o in outputs(nb) if WIDGET in o.get("data", {})], "06 showed no widget"
    demo_cell = next(c for c in nb.cells if "AsitDemo(checkpoint)" in c.source)
    assert any(WIDGET in o.get("data", {}) for o in demo_cell.outputs)
    # the web-page section ran too: shown through the proxy, then stopped
    serve_cell = next(c for c in nb.cells if c.cell_type == "code" and "serve_in_notebook(checkpoint)" in c.source)
    html = "".join(o.data.get("text/html", "") for o in serve_cell.outputs if o.output_type == "display_data")
    assert "/port/" in html and "Open the ASiT page" in html


# ---- failures in two lines -----------------------------------------------------------------------------------


def _two_line_error(nb) -> list[str]:
    [error] = _errors(nb)
    assert error["ename"] == "LessonStop"
    return error["traceback"]


def test_no_network_in_01_is_two_lines(online_but_unreachable, tmp_path, monkeypatch):
    colab_kernel_env(monkeypatch, tmp_path)
    nb = run_notebook("01_download_data.ipynb", tmp_path / "work")
    what, todo = _two_line_error(nb)
    assert what == "No network: could not download esc22 from GitHub (connection refused)."
    assert todo.startswith("Check the internet connection") and "OFFLINE = True" in todo
    print("\n".join(["", "01 with its defaults and no network shows:", what, todo]))


def test_no_hub_in_03_is_two_lines(online_but_unreachable, tmp_path, monkeypatch):
    from asit_helpers.data import preprocess

    ws = nbmod.workspace(tmp_path / "work")
    nbmod.fetch_source(ws, offline=True, smoke=True)  # what 01 and 02 left in this workspace
    preprocess(ws.read_json("source")["source"], ws.cache, workers=1, progress=False)
    colab_kernel_env(monkeypatch, tmp_path)
    started = time.perf_counter()
    nb = run_notebook("03_train.ipynb", ws.root)
    what, todo = _two_line_error(nb)
    assert what == "The Hugging Face Hub is unreachable, and facebook/wav2vec2-base is not in the local cache."
    assert "hf download facebook/wav2vec2-base" in todo and "OFFLINE = True" in todo
    shown = text_of(nb, outputs_only=True)
    assert "Retrying" not in shown and "huggingface.co" not in shown
    print("\n".join(["", f"03 with its defaults and no Hub shows (after {time.perf_counter() - started:.0f} s "
                         "including the kernel start):", what, todo]))


# ---- Kaggle credentials through 01's upload cell ---------------------------------------------------------------


@pytest.fixture
def kaggle_student(online_but_unreachable, tmp_path, monkeypatch):
    """A Colab runtime whose /content is the kernel's working folder and whose ~/.kaggle is empty."""
    content = tmp_path / "content"
    content.mkdir()
    monkeypatch.setenv("KAGGLE_CONFIG_DIR", str(tmp_path / "home" / ".kaggle"))
    for var in ("KAGGLE_API_TOKEN", "KAGGLE_USERNAME", "KAGGLE_KEY"):
        monkeypatch.delenv(var, raising=False)
    return content


def test_kaggle_json_through_the_picker_stays_private(kaggle_student, tmp_path, monkeypatch):
    picked = tmp_path / "downloads" / "kaggle.json"
    picked.parent.mkdir()
    picked.write_text(json.dumps({"username": "student", "key": SECRET}))
    colab_kernel_env(monkeypatch, tmp_path, COLAB_STANDIN_PICK=str(picked))
    nb = run_notebook("01_download_data.ipynb", tmp_path / "work", cwd=kaggle_student, keep_skipped=True,
                      DATASET="someone/some-dataset")
    installed = tmp_path / "home" / ".kaggle" / "kaggle.json"
    assert json.loads(installed.read_text())["key"] == SECRET
    assert stat.S_IMODE(installed.stat().st_mode) == 0o600
    assert not (kaggle_student / "kaggle.json").exists()  # the uploader's copy is gone
    world_readable = [p for p in tmp_path.rglob("*") if p.is_file() and p != picked
                      and SECRET.encode() in p.read_bytes() and stat.S_IMODE(p.stat().st_mode) & 0o077]
    assert world_readable == []
    cell = next(c for c in nb.cells if "upload_kaggle_json" in c.source)
    assert "readable only by you" in _cell_text(cell) and "was removed" in _cell_text(cell)
    what, todo = _two_line_error(nb)  # Kaggle unreachable: two lines, not requests' ConnectionError
    assert what.startswith("No network: could not download someone/some-dataset from Kaggle")
    assert SECRET not in text_of(nb)  # the key is in no output, no error, no parameter


def test_a_wrong_kaggle_file_is_named_as_one(kaggle_student, tmp_path, monkeypatch):
    song = tmp_path / "downloads" / "song.wav"
    song.parent.mkdir()
    sf.write(song, np.zeros(1600, np.float32), 16000)
    colab_kernel_env(monkeypatch, tmp_path, COLAB_STANDIN_PICK=str(song))
    nb = run_notebook("01_download_data.ipynb", tmp_path / "work", cwd=kaggle_student, keep_skipped=True,
                      DATASET="someone/some-dataset")
    what, todo = _two_line_error(nb)
    assert what == f"song.wav is not a kaggle.json: it is a WAV file. The uploaded copy ({kaggle_student / 'song.wav'}) was removed."
    assert todo.startswith("Pick the kaggle.json")
    assert not (kaggle_student / "song.wav").exists()
    print("\n".join(["", "01's upload cell, given a WAV, shows:", what, todo]))
