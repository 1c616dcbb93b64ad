"""A real ``asit serve`` process (waitress) on 127.0.0.1, hit by a real HTTP client, and a bounded load test.

The load test's figures are printed and saved to ``bench/results/serve_load.json``.
"""

from __future__ import annotations

import importlib.util
import io
import json
from pathlib import Path

import pytest
import soundfile as sf

from loadtest import ServerProcess, hammer
from conftest import LABELS, tone

requests = pytest.importorskip("requests")

ROOT = Path(__file__).resolve().parents[1]
LOAD_REQUESTS = 2000
LOAD_CLIENTS = 8
#: Generous bound on the server's RSS growth over the load test. A leak of even 10 KB per request (a kept
#: response, an unclosed upload) would add 20 MB over 2,000 requests; allocator noise stays far below.
RSS_GROWTH_LIMIT_MB = 60.0


def _bench_common():
    spec = importlib.util.spec_from_file_location("asit_bench_common", ROOT / "bench" / "_common.py")
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def wav_bytes(seconds: float, sr: int = 16000, freq: float = 440.0) -> bytes:
    buf = io.BytesIO()
    sf.write(buf, tone(freq, seconds, sr), sr, format="WAV")
    return buf.getvalue()


@pytest.fixture(scope="module")
def server(tiny_checkpoint):
    with ServerProcess(tiny_checkpoint, threads=4, extra_args=["--max-upload-mb", "1"]) as srv:
        yield srv


def test_health_and_page_over_http(server):
    assert server.url.startswith("http://127.0.0.1:")
    health = requests.get(server.url + "/health", timeout=10).json()
    assert health["labels"] == LABELS and health["batching"] == "lock"
    page = requests.get(server.url + "/", timeout=10)
    assert page.status_code == 200 and page.headers["Content-Type"].startswith("text/html")
    js = requests.get(server.url + "/static/recorder.js", timeout=10)
    assert js.headers["Content-Type"].startswith("text/javascript")
    assert "export async function startRecording" in js.text


def test_predict_over_http_multipart_and_raw(server):
    data = wav_bytes(2.0, sr=44100)
    multi = requests.post(server.url + "/predict", files={"file": ("clip.wav", data, "audio/wav")}, timeout=30)
    raw = requests.post(server.url + "/predict", data=data, headers={"Content-Type": "audio/wav"}, timeout=30)
    assert multi.status_code == raw.status_code == 200
    assert multi.json()["label"] in LABELS
    assert multi.json()["top_k"] == raw.json()["top_k"]
    assert multi.json()["latency_ms"] > 0


def test_bad_input_over_http(server):
    cases = [
        (dict(data=b""), 400),
        (dict(data=b"plain text, not audio", headers={"Content-Type": "text/plain"}), 415),
        (dict(files={"file": ("cut.wav", wav_bytes(1.0)[:500], "audio/wav")}), 422),
        (dict(data=bytes(2 * 2**20), headers={"Content-Type": "audio/wav"}), 413),  # past --max-upload-mb 1
    ]
    for kwargs, status in cases:
        resp = requests.post(server.url + "/predict", timeout=30, **kwargs)
        assert resp.status_code == status, (status, resp.text[:300])
        if status == 413:  # waitress refuses it from the Content-Length alone, before the app reads a byte
            assert "too large" in resp.text.lower()
        else:
            assert resp.json()["status"] == status
    # the server is still healthy after all of that
    assert requests.get(server.url + "/health", timeout=10).status_code == 200


@pytest.mark.slow
def test_load_8_clients_2000_requests_no_errors_flat_memory(server, capsys):
    """8 concurrent keep-alive clients, 2,000 POSTs of a 0.5 s clip; stops by itself after the last request."""
    body = wav_bytes(0.5)
    warm = hammer(server.url + "/predict", body, requests_total=100, concurrency=LOAD_CLIENTS)
    assert warm["errors"] == 0, warm["first_error"]
    rss_before = server.rss_mb()
    stats = hammer(server.url + "/predict", body, requests_total=LOAD_REQUESTS, concurrency=LOAD_CLIENTS)
    rss_after = server.rss_mb()
    mode = requests.get(server.url + "/health", timeout=10).json()["batching"]
    common = _bench_common()
    result = {
        **stats,
        "clip_s": 0.5,
        "model": "tiny (random init, tests' fixture)",
        "server": f"asit serve, waitress, 4 threads, batching={mode}",
        "rss_before_mb": round(rss_before, 1),
        "rss_after_mb": round(rss_after, 1),
        "rss_growth_mb": round(rss_after - rss_before, 1),
        "machine": common.machine_info(),
    }
    common.write_json(ROOT / "bench" / "results" / "serve_load.json", result)
    with capsys.disabled():  # shown in every `make test` run, not only with -s
        print("\nserve load test:", json.dumps({k: v for k, v in result.items() if k != "machine"}))
    assert stats["errors"] == 0, stats["first_error"]
    assert stats["statuses"] == {"200": LOAD_REQUESTS}
    assert rss_after - rss_before < RSS_GROWTH_LIMIT_MB, result
