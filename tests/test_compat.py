"""The compatibility matrix's own files: pins parse, the lowest env is pyproject's floors, the freeze check bites.

``make test-compat`` (``compat/run.py``) runs the whole suite in each env; these checks keep its inputs honest.
"""

from __future__ import annotations

import importlib.util
import re
import tomllib
from pathlib import Path

import pytest
from packaging.version import Version

ROOT = Path(__file__).resolve().parents[1]
spec = importlib.util.spec_from_file_location("compat_run", ROOT / "compat" / "run.py")
run = importlib.util.module_from_spec(spec)
spec.loader.exec_module(run)

#: What Colab preinstalls and what installing asit-helpers must leave alone (issue 10).
COLAB_PREINSTALLED = {"torch", "numpy", "transformers", "ipywidgets", "flask", "pandas"}


def _floors() -> dict[str, str]:
    deps = tomllib.loads((ROOT / "pyproject.toml").read_text())["project"]["dependencies"]
    floors = {}
    for dep in deps:
        found = re.fullmatch(r"([A-Za-z0-9_.-]+)>=([0-9.]+)", dep.replace(" ", ""))
        assert found, f"pyproject dependency {dep!r}: declare a floor as 'name>=X.Y'"
        floors[run.normalise(found.group(1))] = found.group(2)
    return floors


def test_every_env_names_a_python_and_exact_pins():
    assert set(run.env_names()) >= {"colab-current", "colab-previous", "colab-py313", "lowest"}
    for name in run.env_names():
        python, pins = run.read_pins(name)
        assert re.fullmatch(r"3\.\d+", python)
        assert "torch" in pins, name


def test_colab_envs_pin_what_colab_preinstalls():
    for name in ("colab-current", "colab-py313"):
        _, pins = run.read_pins(name)
        assert COLAB_PREINSTALLED <= set(pins), name
        assert pins["ipywidgets"] == "7.7.1"
    assert run.read_pins("colab-py313")[0] == "3.13"
    assert run.read_pins("colab-py313")[1]["torch"] == "2.11.0"


def test_lowest_env_is_pyprojects_floors():
    _, pins = run.read_pins("lowest")
    floors = _floors()
    # torch is this machine's CPU wheel (the lowest torch tested is colab-py313's)
    assert pins.pop("torch") == "2.13.0"
    floors.pop("torch")
    assert {p: Version(v) for p, v in pins.items()} == {p: Version(v) for p, v in floors.items()}


def test_floors_admit_colabs_pins():
    """No floor above what Colab ships: pip would upgrade Colab's package to satisfy it."""
    floors = _floors()
    for name in ("colab-current", "colab-previous", "colab-py313"):
        for package, version in run.read_pins(name)[1].items():
            if package in floors:
                assert Version(version) >= Version(floors[package]), (name, package)


def test_freeze_comparison_reports_upgrades_and_removals():
    before = {"ipywidgets": "7.7.1", "numpy": "2.1.3", "flask": "3.1.3"}
    after = {"ipywidgets": "8.1.9", "numpy": "2.1.3", "anywidget": "0.9.0"}
    assert run.changed(before, after) == ["flask 3.1.3 -> removed", "ipywidgets 7.7.1 -> 8.1.9"]
    assert run.changed(before, {**before, "anywidget": "0.9.0"}) == []  # new packages are fine


def test_unknown_env_is_a_clear_error(capsys):
    with pytest.raises(SystemExit):
        run.main(["colab-2019"])
    assert "unknown env(s) colab-2019" in capsys.readouterr().err
