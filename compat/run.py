"""Run the non-browser test suite in venvs pinned to the stacks our users really have (``make test-compat``).

Each ``compat/<env>.txt`` names a Python (``# python: 3.11``) and exact pins. For each env this script:

1. builds a venv with those pins (reused while the pins file is unchanged; pip's cache makes a rebuild fast),
2. installs the package the way a notebook's Colab setup cell does (plain ``pip install``, its own dependencies,
   no constraints) and checks with ``pip freeze`` before and after that no package already there changed (again
   whenever pyproject.toml's dependencies change),
3. adds the test extras (constrained to the pins) and runs ``pytest -m "not browser"`` against this checkout.

    python compat/run.py                     # every env
    python compat/run.py colab-py313 --rebuild

Freezes and logs go to ``outputs/compat/<env>/``; venvs to ``$ASIT_COMPAT_HOME`` (default ``~/.cache/asit-compat``),
outside the checkout so a fresh clone (CI) reuses them when nothing they depend on changed.
"""

from __future__ import annotations

import argparse
import hashlib
import json
import os
import re
import shutil
import subprocess
import sys
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
COMPAT = ROOT / "compat"
LOGS = ROOT / "outputs" / "compat"
#: Bump when :func:`build` installs differently, so existing venvs are rebuilt.
BUILD_STEPS_VERSION = 1
VENVS = Path(os.environ.get("ASIT_COMPAT_HOME", Path.home() / ".cache" / "asit-compat"))


def env_names() -> list[str]:
    return sorted(p.stem for p in COMPAT.glob("*.txt"))


def read_pins(name: str) -> tuple[str, dict[str, str]]:
    """The Python version a pins file asks for and its ``{package: version}`` pins (names normalised)."""
    text = (COMPAT / f"{name}.txt").read_text()
    found = re.search(r"^# python: (\d+\.\d+)\s*$", text, re.M)
    if not found:
        raise SystemExit(f"compat/{name}.txt: first lines must say '# python: 3.X'")
    pins = {}
    for line in text.splitlines():
        line = line.split("#", 1)[0].strip()
        if line:
            package, version = line.split("==")
            pins[normalise(package)] = version.strip()
    return found.group(1), pins


def normalise(package: str) -> str:
    return re.sub(r"[-_.]+", "-", package).lower().strip()


def find_python(version: str) -> str:
    """An interpreter for ``3.X``: this one if it matches, else ``python3.X`` on PATH or in pyenv."""
    if f"{sys.version_info.major}.{sys.version_info.minor}" == version:
        return sys.executable
    candidates = [shutil.which(f"python{version}")]
    candidates += sorted(map(str, (Path.home() / ".pyenv" / "versions").glob(f"{version}.*/bin/python{version}")))
    for candidate in filter(None, candidates):
        probe = subprocess.run([candidate, "-c", "import sys; print(sys.version_info[:2])"], capture_output=True, text=True)
        if probe.returncode == 0 and probe.stdout.strip() == str(tuple(map(int, version.split(".")))):
            return candidate
    raise SystemExit(f"no Python {version} found (PATH or ~/.pyenv/versions): install it to run this env")


def fingerprints(name: str) -> dict[str, str]:
    """What a venv depends on: ``pins`` (its pins file, and how :func:`create` builds) and ``package`` (the
    dependencies pyproject.toml declares: when only they change, the package is reinstalled into the same venv)."""
    pins = f"build {BUILD_STEPS_VERSION}\n" + (COMPAT / f"{name}.txt").read_text()
    package = (ROOT / "pyproject.toml").read_text()
    try:
        import tomllib  # Python 3.11+: only the dependencies count, not pytest's settings

        project = tomllib.loads(package)["project"]
        package = repr((project["dependencies"], project.get("optional-dependencies", {})))
    except ImportError:
        pass
    return {key: hashlib.sha256(text.encode()).hexdigest() for key, text in (("pins", pins), ("package", package))}


def freeze(python: Path) -> dict[str, str]:
    out = subprocess.run([python, "-m", "pip", "freeze", "--all"], capture_output=True, text=True, check=True).stdout
    return {normalise(n): v for n, v in (line.split("==", 1) for line in out.splitlines() if "==" in line)}


def pinned(installed: str | None, pin: str) -> bool:
    """``2.13.0+cpu`` satisfies ``torch==2.13.0``, as pip itself says (a local build of that release)."""
    return installed is not None and (installed == pin or installed.startswith(pin + "+"))


def pip(python: Path, *args: str, log) -> None:
    log.write(f"$ pip install {' '.join(args)}\n")
    log.flush()
    had_build_dir = (ROOT / "build").exists()
    subprocess.run([python, "-m", "pip", "install", "--progress-bar", "off", *args], stdout=log, stderr=subprocess.STDOUT, check=True)
    if not had_build_dir:  # setuptools' in-tree build/: stale files there would end up in the next wheel
        shutil.rmtree(ROOT / "build", ignore_errors=True)


def write_freeze(path: Path, packages: dict[str, str]) -> None:
    path.write_text("".join(f"{n}=={v}\n" for n, v in sorted(packages.items())))


def changed(before: dict[str, str], after: dict[str, str]) -> list[str]:
    """Every package that was there before and is now another version or gone."""
    return [f"{n} {v} -> {after.get(n, 'removed')}" for n, v in sorted(before.items()) if after.get(n) != v]


def create(name: str, venv: Path, logs: Path) -> Path:
    """A fresh venv holding exactly the pins (what Colab has before the notebook's setup cell runs)."""
    version, pins = read_pins(name)
    shutil.rmtree(venv, ignore_errors=True)
    subprocess.run([find_python(version), "-m", "venv", venv], check=True)
    python = venv / ("Scripts/python.exe" if os.name == "nt" else "bin/python")
    with open(logs / "install.log", "w") as log:
        pip(python, "-r", str(COMPAT / f"{name}.txt"), log=log)
    installed = freeze(python)
    wrong = [f"{n}=={v} (got {installed.get(n)})" for n, v in pins.items() if not pinned(installed.get(n), v)]
    if wrong:
        raise SystemExit(f"{name}: the pins did not install as written: {', '.join(wrong)}")
    return python


def install_package(name: str, python: Path, logs: Path, fresh: bool) -> None:
    """Install the package as the notebooks' setup cell does; fail if any package already there changed.

    Writes ``freeze-{before,after,changed}.txt`` (fresh venv) or ``freeze-reinstall-*.txt`` (into a venv that
    already had the package and its test extras, after pyproject.toml's dependencies changed)."""
    package = f"asit-helpers @ {ROOT.as_uri()}"
    prefix = "freeze" if fresh else "freeze-reinstall"
    before = freeze(python)
    with open(logs / "install.log", "a") as log:
        pip(python, package, log=log)  # exactly what the notebooks' setup cell does: no constraints
        after = freeze(python)
        write_freeze(logs / f"{prefix}-before.txt", before)
        write_freeze(logs / f"{prefix}-after.txt", after)
        moved = changed(before, after)
        (logs / f"{prefix}-changed.txt").write_text("".join(f"{m}\n" for m in moved))
        if moved:
            raise SystemExit(f"{name}: installing the package changed preinstalled packages: {'; '.join(moved)}")
        pip(python, "-c", str(COMPAT / f"{name}.txt"), f"asit-helpers[test] @ {ROOT.as_uri()}", log=log)


def prepare(name: str, venv: Path, logs: Path, rebuild: bool) -> tuple[Path, str]:
    """The env's venv, (re)built only as far as needed; returns (its python, what was done)."""
    python = venv / ("Scripts/python.exe" if os.name == "nt" else "bin/python")
    stamp, wanted = venv / "fingerprints.json", fingerprints(name)
    have = json.loads(stamp.read_text()) if stamp.exists() and not rebuild else {}
    done = "reused"
    if have.get("pins") != wanted["pins"]:
        print(f"[{name}] building {venv} (log: {logs / 'install.log'})", flush=True)
        python, have, done = create(name, venv, logs), {}, "built"
    if have.get("package") != wanted["package"]:
        install_package(name, python, logs, fresh=done == "built")
        done = done if done == "built" else "package reinstalled"
    stamp.write_text(json.dumps(wanted))
    return python, done


def run_env(name: str, rebuild: bool, build_only: bool = False) -> tuple[str, int, str]:
    """Build (or reuse) the env's venv and run the suite there; returns (name, pytest's exit code, its summary)."""
    venv, logs = VENVS / name, LOGS / name
    logs.mkdir(parents=True, exist_ok=True)
    start = time.monotonic()
    try:
        python, done = prepare(name, venv, logs, rebuild)
    except (SystemExit, subprocess.CalledProcessError) as error:
        print(f"[{name}] build failed: {error}", flush=True)
        return name, 1, f"build failed: {error}"
    built = time.monotonic() - start
    _, pins = read_pins(name)
    installed = freeze(python)
    drift = [f"{n}=={v} (got {installed.get(n)})" for n, v in pins.items() if not pinned(installed.get(n), v)]
    if drift:
        return name, 1, f"pins not installed: {', '.join(drift)}"
    print(f"[{name}] venv {done} in {built:.0f} s; the package left the preinstalled packages unchanged "
          f"(freezes: {logs})", flush=True)
    if build_only:
        return name, 0, "built"
    print(f"[{name}] running tests (log: {logs / 'pytest.log'})", flush=True)
    env = {**os.environ, "PYTHONPATH": str(ROOT), "PYTHONDONTWRITEBYTECODE": "1"}
    cpu_before, tests_started = _children_cpu_seconds(), time.monotonic()
    with open(logs / "pytest.log", "w") as log:
        rc = subprocess.run([python, "-m", "pytest", "-m", "not browser", "-q", "-p", "no:cacheprovider"],
                            cwd=ROOT, env=env, stdout=log, stderr=subprocess.STDOUT).returncode
    lines = (logs / "pytest.log").read_text().strip().splitlines()
    summary = lines[-1] if lines else "no output"
    if rc != 0:  # CI shows this script's output, not the log: the failures' own lines go with it
        print("\n".join(lines[-120:]), flush=True)
    # CPU seconds say more than wall time on a shared machine (the tests' own subprocesses count when they exit)
    print(f"[{name}] pytest exit {rc}: {summary} (tests: {time.monotonic() - tests_started:.0f} s wall, "
          f"{_children_cpu_seconds() - cpu_before:.0f} s CPU)", flush=True)
    return name, rc, summary


def _children_cpu_seconds() -> float:
    times = os.times()
    return times.children_user + times.children_system


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("envs", nargs="*", help=f"envs to run (default: all of {', '.join(env_names())})")
    parser.add_argument("--rebuild", action="store_true", help="rebuild the venvs even when unchanged")
    parser.add_argument("--build-only", action="store_true", help="build (or check) the venvs, run no tests")
    args = parser.parse_args(argv)
    unknown = set(args.envs) - set(env_names())
    if unknown:
        parser.error(f"unknown env(s) {', '.join(sorted(unknown))}; known: {', '.join(env_names())}")
    results = [run_env(name, args.rebuild, args.build_only) for name in args.envs or env_names()]
    print("\ntest-compat:")
    for name, rc, summary in results:
        print(f"  {name:16s} {'ok    ' if rc == 0 else 'FAILED'} {summary}")
    # pytest's exit 5 (no tests collected) is a failure too.
    return 0 if all(rc == 0 for _, rc, _ in results) else 1


if __name__ == "__main__":
    sys.exit(main())
