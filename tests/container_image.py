"""Build and run ASiT's container image with podman (used by tests/test_container.py and bench/container.py).

No image registry is needed. The base image is Debian 12 made with ``debootstrap --variant=minbase`` plus
``python3`` and ``python3-venv``: what ``python:3.11-slim`` gives the Dockerfile (Debian 12, Python 3.11, its venv
module), so the Dockerfile builds the same way on both. It is cached twice: as a tarball in
``$ASIT_CONTAINER_CACHE`` (default ``~/.cache/asit-container``) and as the podman image ``localhost/asit-base``.

The image's torch is the host's torch version: from the local wheel folder pip is configured with (mounted
read-only into the build) when it holds that wheel, else from the Dockerfile's default (PyTorch's CPU index).
pip's CA bundle, when pip has one configured, is mounted at a path of its own and passed as ``PIP_CERT``.

``ASIT_PODMAN`` overrides the podman command (default ``podman --runtime runc --cgroup-manager=cgroupfs`` where
runc is installed: Debian's default crun refuses hybrid cgroup machines).
"""

from __future__ import annotations

import contextlib
import os
import shlex
import shutil
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from typing import Iterator

from loadtest import ServerProcess, free_port, hammer  # test tooling, beside this file in tests/

__all__ = ["ServerProcess", "free_port", "hammer", "podman_command", "podman", "ensure_base", "build_image",
           "image_size_mb", "share_with_container", "running", "wait_healthy"]

ROOT = Path(__file__).resolve().parents[1]
BASE_IMAGE = "localhost/asit-base:bookworm"
BASE_PACKAGES = "python3,python3-venv"
DEBIAN_MIRROR = os.environ.get("ASIT_DEBIAN_MIRROR", "http://deb.debian.org/debian")
#: explicit limits: containers may not raise the host's, and podman's defaults ask for more than some hosts allow
LIMITS = ["--ulimit", "nofile=1024:1024", "--ulimit", "nproc=4096:4096"]
INSTALL_HINT = "container tests need podman, runc and debootstrap: `sudo apt-get install podman runc debootstrap`"


def podman_command() -> list[str] | None:
    """The podman command line to use, or None when podman isn't installed."""
    if os.environ.get("ASIT_PODMAN"):
        return shlex.split(os.environ["ASIT_PODMAN"])
    if shutil.which("podman") is None:
        return None
    runtime = ["--runtime", "runc"] if shutil.which("runc") else []
    return ["podman", *runtime, "--cgroup-manager=cgroupfs"]


def podman(*args: str, check: bool = True, timeout: float = 600, quiet: bool = True) -> subprocess.CompletedProcess:
    """Run one podman command; output captured (``quiet``) or streamed to this process's stdout."""
    cmd = [*podman_command(), *args]
    out = subprocess.PIPE if quiet else None
    proc = subprocess.run(cmd, stdout=out, stderr=subprocess.STDOUT if quiet else None, text=True, timeout=timeout)
    if check and proc.returncode != 0:
        raise RuntimeError(f"`{shlex.join(cmd)}` exited with {proc.returncode}:\n{proc.stdout or ''}"[-6000:])
    return proc


def cache_dir() -> Path:
    return Path(os.environ.get("ASIT_CONTAINER_CACHE", Path.home() / ".cache" / "asit-container"))


def _debootstrap_tarball(tarball: Path) -> None:
    """Debian 12 minbase + python3 + python3-venv as a tarball (written to a temporary name, then renamed)."""
    if shutil.which("debootstrap") is None:
        raise RuntimeError("no base image and no debootstrap to make one. " + INSTALL_HINT)
    tarball.parent.mkdir(parents=True, exist_ok=True)
    with tempfile.TemporaryDirectory(dir=tarball.parent, prefix="rootfs-") as tmp:
        rootfs = Path(tmp) / "rootfs"
        subprocess.run(["debootstrap", "--variant=minbase", f"--include={BASE_PACKAGES}", "bookworm", str(rootfs),
                        DEBIAN_MIRROR], check=True, stdout=subprocess.DEVNULL)
        # what python:3.11-slim leaves out too: package lists and downloaded .debs (~95 MB)
        for leftover in ("var/lib/apt/lists", "var/cache/apt", "var/cache/apt/archives"):
            for path in (rootfs / leftover).glob("*.*"):
                path.unlink()
        partial = tarball.with_suffix(".partial")
        subprocess.run(["tar", "-C", str(rootfs), "-cf", str(partial), "."], check=True)
        partial.replace(tarball)


def ensure_base(log=print) -> str:
    """The local base image, from podman's store, else the cached tarball, else debootstrap (minutes)."""
    if podman("image", "exists", BASE_IMAGE, check=False).returncode == 0:
        return BASE_IMAGE
    tarball = cache_dir() / "debian12-minbase-python3.tar"
    if not tarball.exists():
        log(f"making the base image with debootstrap into {tarball} (a few minutes, once)")
        _debootstrap_tarball(tarball)
    podman("import", str(tarball), BASE_IMAGE)
    return BASE_IMAGE


def _pip_config() -> dict[str, str]:
    """pip's configured ``cert`` and ``find-links`` (environment or config files), as ``pip config list`` shows."""
    out = subprocess.run([sys.executable, "-m", "pip", "config", "list"], capture_output=True, text=True).stdout
    found = {}
    for line in out.splitlines():
        key, _, value = line.partition("=")
        name = key.rsplit(".", 1)[-1]
        value = value.strip().strip("'\"").split()
        if name in ("cert", "find-links") and value and name not in found:
            found[name] = value[0]  # the first of several find-links folders
    return found


def build_args() -> list[str]:
    """``podman build`` options that make this machine's torch wheel and CA bundle available to the build."""
    import torch

    args = ["--build-arg", f"BASE={ensure_base()}"]
    config = _pip_config()
    if config.get("cert") and Path(config["cert"]).is_file():
        args += ["-v", f"{config['cert']}:/run/asit-build/ca.crt:ro", "--build-arg", "PIP_CERT=/run/asit-build/ca.crt"]
    wheels = Path(config.get("find-links", "") or "/nonexistent")
    version = torch.__version__
    if wheels.is_dir() and any(wheels.glob(f"torch-{version}-*.whl")):
        args += ["-v", f"{wheels}:/wheels:ro", "--build-arg", f"TORCH=torch=={version}",
                 "--build-arg", "TORCH_PIP_ARGS=--find-links /wheels"]
    return args


def build_image(tag: str, log=print) -> float:
    """Build the Dockerfile at the repository root as ``tag``; returns the seconds it took."""
    started = time.monotonic()
    args = build_args()
    log(f"building {tag} (podman layer cache: seconds when only asit_helpers/ changed)")
    # --format docker keeps HEALTHCHECK (the OCI format has no such field); --network host: pip reaches PyPI
    podman("build", "--format", "docker", "--network", "host", *LIMITS, *args, "-t", tag, str(ROOT), timeout=3600)
    return time.monotonic() - started


def image_size_mb(tag: str) -> float:
    return int(podman("image", "inspect", "--format", "{{.Size}}", tag).stdout.strip()) / 1e6


def share_with_container(checkpoint: Path) -> Path:
    """Let the container's non-root user read a checkpoint through the bind mount (temporary folders are 0700,
    and some files are written 0600)."""
    checkpoint.chmod(0o755)
    for path in checkpoint.rglob("*"):
        path.chmod(0o755 if path.is_dir() else 0o644)
    return checkpoint


@contextlib.contextmanager
def running(tag: str, checkpoint: Path, port: int, env: dict[str, str] | None = None,
            name: str | None = None) -> Iterator[str]:
    """``podman run -d`` the image with ``checkpoint`` at /model and its port on 127.0.0.1:``port``; removed after."""
    name = name or f"asit-test-{os.getpid()}-{port}"
    env_args = [a for k, v in (env or {}).items() for a in ("-e", f"{k}={v}")]
    podman("run", "-d", "--name", name, "-p", f"127.0.0.1:{port}:5000", "-v", f"{checkpoint}:/model:ro",
           "--read-only", "--tmpfs", "/tmp", *LIMITS, *env_args, tag)
    try:
        yield name
    finally:
        podman("rm", "--force", "--time", "0", name, check=False)


def wait_healthy(url: str, timeout_s: float = 180.0, container: str | None = None) -> float:
    """Seconds until ``GET url/health`` answers 200 (counting from this call)."""
    import requests

    started = time.monotonic()
    while time.monotonic() - started < timeout_s:
        try:
            if requests.get(url + "/health", timeout=2).status_code == 200:
                return time.monotonic() - started
        except requests.ConnectionError:
            pass
        if container and podman("container", "exists", container, check=False).returncode == 0:
            state = podman("inspect", "--format", "{{.State.Status}}", container).stdout.strip()
            if state in ("exited", "stopped"):
                raise RuntimeError(f"container {container} exited:\n{podman('logs', container).stdout}")
        time.sleep(0.25)
    logs = podman("logs", container, check=False).stdout if container else ""
    raise TimeoutError(f"{url}/health did not answer within {timeout_s:g} s\n{logs}")
