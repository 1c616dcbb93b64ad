"""Run ``asit serve`` in a child process on loopback and load it with concurrent HTTP clients.

Used by ``tests/test_serve_live.py`` (the bounded load test) and ``bench/serve.py``. Loopback only: the server
binds 127.0.0.1 on a free port, and :func:`hammer` refuses any other host.

    with ServerProcess(checkpoint, batching="lock") as server:
        stats = hammer(server.url + "/predict", wav_bytes, requests_total=2000, concurrency=8)
"""

from __future__ import annotations

import os
import socket
import subprocess
import sys
import threading
import time
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from urllib.parse import urlparse

import numpy as np

__all__ = ["free_port", "ServerProcess", "hammer"]


def free_port() -> int:
    """A TCP port on 127.0.0.1 that is free right now."""
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


class ServerProcess:
    """``python -m asit_helpers.cli serve CHECKPOINT`` on 127.0.0.1:<free port>, stopped on exit.

    A separate process (not a thread) so the test measures the real thing: waitress, its threads, and the
    server's own memory (``rss_mb``). ``subprocess`` + ``terminate()``: works the same on Windows.
    """

    def __init__(self, checkpoint: str | Path, *, threads: int = 4, batching: str = "auto",
                 extra_args: list[str] | None = None, startup_timeout_s: float = 120.0):
        self.checkpoint = Path(checkpoint)
        self.port = free_port()
        self.url = f"http://127.0.0.1:{self.port}"
        self.args = [sys.executable, "-m", "asit_helpers.cli", "serve", str(self.checkpoint), "--host", "127.0.0.1",
                     "--port", str(self.port), "--threads", str(threads), "--batching", batching,
                     *(extra_args or [])]
        self.startup_timeout_s = startup_timeout_s
        self.proc: subprocess.Popen | None = None
        self._log: list[str] = []

    def __enter__(self) -> "ServerProcess":
        import requests

        env = dict(os.environ, PYTHONUNBUFFERED="1")
        self.proc = subprocess.Popen(self.args, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True,
                                     env=env, encoding="utf-8", errors="replace")
        # Drain the output on a thread: a full pipe would block the server.
        threading.Thread(target=lambda: self._log.extend(self.proc.stdout), daemon=True).start()
        deadline = time.monotonic() + self.startup_timeout_s
        while time.monotonic() < deadline:
            if self.proc.poll() is not None:
                raise RuntimeError(f"asit serve exited with {self.proc.returncode}:\n{self.output}")
            try:
                if requests.get(self.url + "/health", timeout=2).status_code == 200:
                    return self
            except requests.ConnectionError:
                pass
            time.sleep(0.2)
        self.__exit__(None, None, None)
        raise TimeoutError(f"asit serve did not answer /health within {self.startup_timeout_s:g} s:\n{self.output}")

    def __exit__(self, *exc) -> None:
        if self.proc is not None and self.proc.poll() is None:
            self.proc.terminate()
            try:
                self.proc.wait(timeout=10)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait(timeout=10)

    @property
    def output(self) -> str:
        return "".join(self._log)

    def rss_mb(self) -> float:
        """Resident memory of the server process (MB)."""
        import psutil

        return psutil.Process(self.proc.pid).memory_info().rss / 2**20


def hammer(url: str, body: bytes, *, requests_total: int = 2000, concurrency: int = 8, timeout_s: float = 60.0,
           content_type: str = "audio/wav") -> dict:
    """POST ``body`` to ``url`` ``requests_total`` times from ``concurrency`` clients (one keep-alive session each).

    Stops by itself after the fixed number of requests (a request that times out counts as an error).

    Returns:
        ``{"requests", "concurrency", "errors", "statuses", "seconds", "requests_per_s", "p50_ms", "p95_ms",
        "max_ms", "first_error"}``.
    """
    import requests

    host = urlparse(url).hostname
    if host not in ("127.0.0.1", "localhost", "::1"):
        raise ValueError(f"hammer only loads loopback servers, got {host!r}")
    latencies = np.zeros(requests_total)
    statuses: dict[str, int] = {}
    errors: list[str] = []
    lock = threading.Lock()
    counter = iter(range(requests_total))

    def client() -> None:
        with requests.Session() as session:
            while True:
                with lock:
                    i = next(counter, None)
                if i is None:
                    return
                t0 = time.perf_counter()
                try:
                    r = session.post(url, data=body, headers={"Content-Type": content_type}, timeout=timeout_s)
                    status, ok = str(r.status_code), r.status_code == 200 and "label" in r.json()
                    problem = None if ok else f"HTTP {r.status_code}: {r.text[:200]}"
                except Exception as exc:  # noqa: BLE001 - every failure is counted, not raised
                    status, problem = type(exc).__name__, str(exc)[:200]
                latencies[i] = time.perf_counter() - t0
                with lock:
                    statuses[status] = statuses.get(status, 0) + 1
                    if problem:
                        errors.append(problem)

    started = time.perf_counter()
    with ThreadPoolExecutor(max_workers=concurrency) as pool:
        for f in [pool.submit(client) for _ in range(concurrency)]:
            f.result()
    seconds = time.perf_counter() - started
    return {
        "requests": requests_total,
        "concurrency": concurrency,
        "errors": len(errors),
        "statuses": statuses,
        "seconds": round(seconds, 3),
        "requests_per_s": round(requests_total / seconds, 2),
        "p50_ms": round(float(np.percentile(latencies, 50)) * 1000, 2),
        "p95_ms": round(float(np.percentile(latencies, 95)) * 1000, 2),
        "max_ms": round(float(latencies.max()) * 1000, 2),
        "first_error": errors[0] if errors else None,
    }
