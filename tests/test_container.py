"""The container image, built and run for real with podman (``make test-container``).

The fast tests at the top need no podman: the image's dependency list agrees with pyproject.toml, the serving
modules import nothing outside it, and ``ASIT_*`` environment variables configure ``asit serve``.

The container tests build the local Debian 12 base (cached, see ``container_image.py``) and the image, start it
with a checkpoint made here, and compare its answers with ``asit predict`` and ``asit serve`` on this machine.
They run under ``make test-container`` (or with ``ASIT_CONTAINER=1``); a plain ``pytest`` skips them with a
one-line reason, because a first build takes minutes. Without podman they skip, unless
``ASIT_REQUIRE_CONTAINER=1`` (set by ``.ci/run``), which makes a missing podman or a failed build an error.
"""

from __future__ import annotations

import contextlib
import io
import json
import os
import re
import subprocess
import sys
import time
import tomllib
from pathlib import Path

import numpy as np
import pytest
import soundfile as sf

import container_image as ci
from conftest import tone

ROOT = Path(__file__).resolve().parents[1]
REQUIRE = os.environ.get("ASIT_REQUIRE_CONTAINER") == "1"
TAG = "localhost/asit-api:test"
# scipy is left out: transformers imports it when it is installed, and runs without it
HEAVY = ("pandas", "matplotlib", "seaborn", "sklearn", "ipywidgets", "anywidget", "kagglehub", "IPython")
MAX_UPLOAD_MB = 1.0  # small, so the oversized upload is quick to send
LABELS = ["dog", "rooster", "siren", "rain"]


# ------------------------------------------------------------------------------------------------------------------
# Without podman
# ------------------------------------------------------------------------------------------------------------------


def _requirements(lines: list[str]) -> dict[str, str]:
    found = {}
    for line in lines:
        line = line.split("#", 1)[0].strip()
        if line:
            name = re.match(r"[A-Za-z0-9_.-]+", line).group(0)
            found[name.lower()] = line[len(name):].strip()
    return found


def test_serving_requirements_agree_with_pyproject():
    project = tomllib.loads((ROOT / "pyproject.toml").read_text(encoding="utf-8"))["project"]
    declared = _requirements(project["dependencies"])
    serving = _requirements((ROOT / "deploy" / "requirements-serve.txt").read_text(encoding="utf-8").splitlines())
    assert serving, "deploy/requirements-serve.txt lists nothing"
    for name, spec in serving.items():
        assert name in declared, f"{name} is in the image but not in pyproject.toml's dependencies"
        assert spec == declared[name], f"{name}: image wants {spec!r}, pyproject.toml {declared[name]!r}"


def test_serving_modules_import_only_the_serving_requirements():
    """What the image leaves out (notebook, data and plotting packages) is never imported by ``asit serve``'s code.

    Only imports made by ASiT's modules count: a third-party package may import a left-out one when it happens to be
    installed (transformers 5.15 imports scikit-learn's metrics if present), which cannot happen in the image, where
    it is absent; the podman tests below run the image itself. ``-X importtime`` gives each import's importer.
    """
    code = ("import asit_helpers.cli, asit_helpers.serve, asit_helpers.inference; "
            "asit_helpers.cli.build_parser().parse_args(['serve', 'ckpt'])")  # what `asit serve` runs first
    err = subprocess.run([sys.executable, "-X", "importtime", "-c", code], capture_output=True, text=True, cwd=ROOT,
                         env=dict(os.environ, PYTHONPATH=str(ROOT)), check=True).stderr
    assert "asit_helpers.serve" in err  # the report is there to read
    imported_by_asit = sorted({module.split(".")[0] for module, importer in _importers(err)
                               if module.split(".")[0] in HEAVY and importer.split(".")[0] == "asit_helpers"})
    assert imported_by_asit == [], (f"ASiT's serving modules import {imported_by_asit}: "
                                    "add them to deploy/requirements-serve.txt")


def _importers(importtime_report: str) -> list[tuple[str, str]]:
    """``(module, the first importer outside that module's own package)`` for each import in a ``-X importtime``
    report (post-order: a module's imports are listed before it, two spaces deeper)."""
    entries = []
    for line in importtime_report.splitlines():
        if line.startswith("import time:") and "|" in line and not line.rstrip().endswith("imported package"):
            name = line.split("|")[2]
            entries.append(((len(name) - len(name.lstrip())) // 2, name.strip()))
    pairs = []
    for i, (level, module) in enumerate(entries):
        for later_level, later in entries[i + 1:]:
            if later_level < level:
                level = later_level
                if later.split(".")[0] != module.split(".")[0]:
                    pairs.append((module, later))
                    break
    return pairs


def test_serve_settings_come_from_the_environment(monkeypatch):
    from asit_helpers.cli import build_parser

    monkeypatch.setenv("ASIT_THREADS", "7")
    monkeypatch.setenv("ASIT_MAX_UPLOAD_MB", "2.5")
    monkeypatch.setenv("ASIT_CORS_ORIGIN", "https://a.example, https://b.example")
    args = build_parser().parse_args(["serve", "ckpt"])
    assert (args.threads, args.max_upload_mb, args.host) == (7, 2.5, "127.0.0.1")
    assert args.cors_origin == ["https://a.example", "https://b.example"]
    assert build_parser().parse_args(["serve", "ckpt", "--threads", "3"]).threads == 3  # a flag still wins
    monkeypatch.setenv("ASIT_THREADS", "many")
    with pytest.raises(SystemExit), contextlib.redirect_stderr(io.StringIO()) as err:
        build_parser().parse_args(["serve", "ckpt"])
    assert "--threads: invalid int value: 'many'" in err.getvalue()
    assert build_parser().parse_args(["predict", "ckpt", "x.wav"]).top_k == 5  # other subcommands unaffected


def test_dockerignore_keeps_the_context_small():
    """A whitelist: only what the Dockerfile copies goes into the build context."""
    lines = [ln.strip() for ln in (ROOT / ".dockerignore").read_text().splitlines() if ln.strip() and ln[0] != "#"]
    assert lines[0] == "*"
    copied = set(re.findall(r"^COPY (.+) \S+$", (ROOT / "Dockerfile").read_text(), flags=re.M))
    allowed = {ln[1:].rstrip("/") for ln in lines if ln.startswith("!")}
    assert {p for c in copied for p in c.split()} <= allowed


# ------------------------------------------------------------------------------------------------------------------
# With podman
# ------------------------------------------------------------------------------------------------------------------


def _unavailable(reason: str):
    if REQUIRE:
        pytest.fail(f"ASIT_REQUIRE_CONTAINER=1 but {reason}")
    pytest.skip(reason)


@pytest.fixture(scope="module")
def image() -> str:
    if os.environ.get("ASIT_CONTAINER") != "1":
        pytest.skip("container image tests run under `make test-container` (the first build takes minutes)")
    if ci.podman_command() is None:
        _unavailable(ci.INSTALL_HINT)
    seconds = ci.build_image(TAG)
    print(f"\ncontainer: image {TAG} built in {seconds:.0f} s, {ci.image_size_mb(TAG):.0f} MB")
    return TAG


@pytest.fixture(scope="module")
def checkpoint(tmp_path_factory) -> Path:
    """A random tiny model of our own (not a preset, so other changes to presets can't move this test)."""
    import torch
    from transformers import Wav2Vec2Config

    from asit_helpers import AsitForAudioClassification

    torch.manual_seed(16)
    backbone = Wav2Vec2Config(hidden_size=48, num_hidden_layers=2, num_attention_heads=2, intermediate_size=96,
                              conv_dim=(32,) * 7, num_conv_pos_embeddings=16, num_conv_pos_embedding_groups=4,
                              feat_extract_norm="layer", do_stable_layer_norm=True)
    path = tmp_path_factory.mktemp("container-ckpt") / "tiny-container"
    AsitForAudioClassification.from_backbone(backbone, labels=LABELS).save_pretrained(path)
    return ci.share_with_container(path)


@pytest.fixture(scope="module")
def container(image, checkpoint):
    """The image running with the checkpoint at /model; limits from ASIT_* variables, as a deployment sets them."""
    port = ci.free_port()
    started = time.monotonic()
    with ci.running(image, checkpoint, port, env={"ASIT_MAX_UPLOAD_MB": str(MAX_UPLOAD_MB), "ASIT_THREADS": "4",
                                                  "ASIT_MAX_SECONDS": "60"}) as name:
        ci.wait_healthy(f"http://127.0.0.1:{port}", container=name)
        print(f"\ncontainer: first healthy response {time.monotonic() - started:.1f} s after `podman run`")
        yield {"name": name, "url": f"http://127.0.0.1:{port}"}


@pytest.fixture(scope="module")
def host_server(checkpoint):
    """``asit serve`` on this machine with the same checkpoint and limits: the reference for every answer."""
    with ci.ServerProcess(checkpoint, extra_args=["--max-upload-mb", str(MAX_UPLOAD_MB), "--max-seconds", "60"]) as s:
        yield s


@pytest.fixture(scope="module")
def clip(tmp_path_factory) -> Path:
    path = tmp_path_factory.mktemp("container-audio") / "clip.wav"
    rng = np.random.default_rng(0)
    audio = tone(660.0, seconds=7.0) + 0.05 * rng.standard_normal(7 * 16000).astype(np.float32)  # two windows
    sf.write(path, audio, 16000)
    return path


def _close(a, b, path="") -> None:
    """Equal JSON, numbers within 1e-4 (two processes may order float reductions differently)."""
    if isinstance(a, dict):
        assert a.keys() == b.keys(), f"{path}: keys {sorted(a)} != {sorted(b)}"
        for k in a:
            _close(a[k], b[k], f"{path}.{k}")
    elif isinstance(a, list):
        assert len(a) == len(b), f"{path}: {len(a)} != {len(b)} items"
        for i, (x, y) in enumerate(zip(a, b)):
            _close(x, y, f"{path}[{i}]")
    elif isinstance(a, float) or isinstance(b, float):
        assert abs(a - b) <= 1e-4, f"{path}: {a} != {b}"
    else:
        assert a == b, f"{path}: {a!r} != {b!r}"


def test_health(container):
    import requests

    body = requests.get(container["url"] + "/health", timeout=10).json()
    assert body["status"] == "ok" and body["labels"] == LABELS and body["model"] == "model"
    assert body["max_upload_mb"] == MAX_UPLOAD_MB and body["max_seconds"] == 60  # from ASIT_* variables


def test_predict_equals_asit_predict_on_the_host(container, checkpoint, clip):
    import requests

    cli = subprocess.run([sys.executable, "-m", "asit_helpers.cli", "predict", str(checkpoint), str(clip), "--json"],
                         capture_output=True, text=True, check=True, env=dict(os.environ, PYTHONPATH=str(ROOT)))
    expected = json.loads(cli.stdout)
    with open(clip, "rb") as f:
        got = requests.post(container["url"] + "/predict", files={"file": ("clip.wav", f, "audio/wav")}, timeout=60)
    assert got.status_code == 200, got.text
    answer = got.json()
    assert answer.pop("latency_ms") > 0
    answer["source"] = expected["source"]  # the server names the upload, the CLI the path
    assert len(answer["windows"]) == 2
    _close(answer, expected)


def _bad_requests(clip: Path) -> list[tuple[str, dict]]:
    wav = clip.read_bytes()
    big = MAX_UPLOAD_MB * 1024 * 1024
    return [
        ("empty body", dict(data=b"")),
        ("not audio", dict(data=b"this is not audio" * 10, headers={"Content-Type": "audio/wav"})),
        ("truncated WAV", dict(data=wav[:60], headers={"Content-Type": "audio/wav"})),
        ("bad top_k", dict(data=wav, params={"top_k": "zero"})),
        ("form without a file", dict(files={"other": ("x.wav", wav)})),
        ("upload just over the limit", dict(data=b"\0" * int(big + 1024), headers={"Content-Type": "audio/wav"})),
        ("upload far over the limit", dict(data=b"\0" * int(3 * big), headers={"Content-Type": "audio/wav"})),
    ]


def test_bad_inputs_get_the_same_answers_as_outside(container, host_server, clip):
    import requests

    for what, kwargs in _bad_requests(clip):
        inside = requests.post(container["url"] + "/predict", timeout=60, **kwargs)
        outside = requests.post(host_server.url + "/predict", timeout=60, **kwargs)
        assert 400 <= inside.status_code < 500, f"{what}: {inside.status_code} {inside.text[:200]}"
        assert (inside.status_code, inside.headers["Content-Type"]) == \
            (outside.status_code, outside.headers["Content-Type"]), what
        if inside.headers["Content-Type"].startswith("application/json"):
            assert inside.json() == outside.json(), what
        else:
            assert inside.text == outside.text, what
    assert requests.get(container["url"] + "/health", timeout=10).status_code == 200  # still serving


def test_runs_as_non_root_and_its_healthcheck_passes(container):
    status = ci.podman("exec", container["name"], "cat", "/proc/1/status").stdout
    uids = re.search(r"^Uid:\s+(.+)$", status, flags=re.M).group(1).split()
    assert "0" not in uids, f"PID 1 runs with uids {uids}"
    assert ci.podman("exec", container["name"], "id", "-un").stdout.strip() == "asit"
    command = ci.podman("exec", container["name"], "cat", "/proc/1/cmdline").stdout.split("\0")
    assert command[1:3] == ["/opt/asit/bin/asit", "serve"], command  # the server itself is PID 1: it gets SIGTERM
    check = ci.podman("healthcheck", "run", container["name"], check=False)
    assert check.returncode == 0, f"HEALTHCHECK failed: {check.stdout}"


def test_sigterm_stops_it_cleanly_within_seconds(container):
    """Last: ``podman stop`` sends SIGTERM and would SIGKILL after 30 s; the server exits 0 long before."""
    started = time.monotonic()
    ci.podman("stop", "--time", "30", container["name"])
    seconds = time.monotonic() - started
    code = ci.podman("inspect", "--format", "{{.State.ExitCode}}", container["name"]).stdout.strip()
    logs = ci.podman("logs", container["name"]).stdout
    print(f"\ncontainer: stopped by SIGTERM in {seconds:.1f} s, exit code {code}")
    assert code == "0", logs
    assert seconds < 10, logs
    assert "ASiT server stopped" in logs and "Traceback" not in logs


# ------------------------------------------------------------------------------------------------------------------
# compose.yaml: two replicas behind one port
# ------------------------------------------------------------------------------------------------------------------

CONTAINERS_CONF = """\
[containers]
default_ulimits = ["nofile=1024:1024", "nproc=4096:4096"]
[engine]
runtime = "runc"
cgroup_manager = "cgroupfs"
"""


def test_compose_runs_two_replicas_behind_one_port(image, checkpoint, clip, tmp_path):
    """``podman-compose up`` with compose.yaml as it ships; the images are the ones built above (no rebuild)."""
    import shutil

    import requests

    if shutil.which("podman-compose") is None:
        _unavailable("the compose test needs podman-compose: `sudo apt-get install podman-compose`")
    lb_image = "localhost/asit-lb:test"
    ci.podman("build", "--format", "docker", "--network", "host", *ci.LIMITS, "--build-arg", f"BASE={ci.ensure_base()}",
              "-t", lb_image, str(ROOT / "deploy" / "lb"), timeout=1200)
    conf = tmp_path / "containers.conf"  # podman-compose calls plain `podman`: this machine's settings go here
    conf.write_text(CONTAINERS_CONF)
    port = ci.free_port()
    env = dict(os.environ, CONTAINERS_CONF=str(conf), ASIT_IMAGE=image, ASIT_LB_IMAGE=lb_image,
               ASIT_CHECKPOINT=str(checkpoint), ASIT_PORT=str(port), ASIT_MAX_UPLOAD_MB=str(MAX_UPLOAD_MB))
    project = f"asit-test-{os.getpid()}"
    compose = ["podman-compose", "-p", project, "-f", str(ROOT / "compose.yaml")]
    try:
        up = subprocess.run([*compose, "up", "-d"], env=env, cwd=ROOT, capture_output=True, text=True, timeout=600)
        assert up.returncode == 0, up.stdout + up.stderr
        url = f"http://127.0.0.1:{port}"
        ci.wait_healthy(url)
        # Replicas finish loading at different times, and nginx skips one that refused a connection for 10 s:
        # wait (bounded) until both have answered through the one port.
        replicas, deadline = set(), time.monotonic() + 120
        while len(replicas) < 2 and time.monotonic() < deadline:
            replicas.add(requests.get(url + "/health", timeout=10).headers["X-Asit-Replica"])
            time.sleep(0.5)
        assert len(replicas) == 2, f"one port should reach both replicas, reached {replicas}"
        with open(clip, "rb") as f:
            answer = requests.post(url + "/predict", files={"file": ("clip.wav", f)}, timeout=60)
        assert answer.status_code == 200 and answer.json()["label"] in LABELS, answer.text[:300]
        too_big = requests.post(url + "/predict", data=b"\0" * int(MAX_UPLOAD_MB * 1024 * 1024 + 1024), timeout=60)
        assert too_big.status_code == 413 and "limit is 1 MB" in too_big.json()["error"]  # the API's own answer
        print(f"\ncompose: 2 replicas behind 127.0.0.1:{port}: {sorted(replicas)}")
    finally:
        down = subprocess.run([*compose, "down"], env=env, cwd=ROOT, capture_output=True, text=True, timeout=300)
        ci.podman("network", "rm", "--force", f"{project}_default", check=False)  # `down` leaves it behind
        assert down.returncode == 0, down.stdout + down.stderr
