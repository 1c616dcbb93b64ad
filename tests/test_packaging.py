"""Install metadata: environment.yml lists what pyproject.toml declares; no exact torch; no torchaudio."""

from __future__ import annotations

import re
import tomllib
from pathlib import Path

import yaml

ROOT = Path(__file__).resolve().parents[1]


def _name(spec: str) -> str:
    return re.split(r"[<>=!~;\[ ]", spec, maxsplit=1)[0].strip().lower().replace("_", "-")


def _pyproject() -> dict[str, str]:
    project = tomllib.loads((ROOT / "pyproject.toml").read_text())["project"]
    specs = list(project["dependencies"])
    for extra in project.get("optional-dependencies", {}).values():
        specs += extra
    return {_name(s): s.replace(" ", "") for s in specs}


def _environment() -> dict[str, str]:
    env = yaml.safe_load((ROOT / "environment.yml").read_text())
    pip_specs = next(d["pip"] for d in env["dependencies"] if isinstance(d, dict) and "pip" in d)
    return {_name(s): s.replace(" ", "") for s in pip_specs}


def test_environment_yml_matches_pyproject():
    assert _environment() == _pyproject()


def test_torch_is_not_pinned_and_torchaudio_is_absent():
    deps = _pyproject()
    assert "torch" in deps and "==" not in deps["torch"]
    assert "torchaudio" not in deps and "torchvision" not in deps


def test_readme_names_the_two_setup_commands():
    readme = (ROOT / "README.md").read_text()
    assert "make demo" in readme and "make test" in readme
    makefile = (ROOT / "Makefile").read_text()
    assert re.search(r"^demo: install", makefile, re.M) and re.search(r"^test: install", makefile, re.M)
    assert 'TORCH  ?= torch==2.13.0' in makefile
