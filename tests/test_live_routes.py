"""The server's live routes (POST /live, POST /live/<id>/audio, DELETE /live/<id>) and item 6's API edges (JSON
405 with Allow, Content-Security-Policy, curl's form-typed bodies, long names, the error text), on Flask's test
client with a tiny random model; the JSON 413 that waitress itself answers needs a real server process."""

from __future__ import annotations

import io

import numpy as np
import pytest
import soundfile as sf

from asit_helpers.serve import CONTENT_SECURITY_POLICY, create_app, upload_name
from conftest import tone

SR = 16000


@pytest.fixture(scope="module")
def app(tiny_checkpoint):
    return create_app(tiny_checkpoint, max_listeners=2, max_upload_mb=1)


@pytest.fixture
def client(app):
    yield app.test_client()
    served = app.config["ASIT_LISTENERS"]
    for sid in list(served._sessions):
        served.close(sid)


def f32(seconds: float, level: float = 0.1, seed: int = 0) -> bytes:
    return (level * np.random.default_rng(seed).standard_normal(int(seconds * SR))).astype("<f4").tobytes()


def open_session(client, **query) -> dict:
    resp = client.post("/live", query_string=query)
    assert resp.status_code == 201, resp.get_json()
    return resp.get_json()


def test_open_stream_and_close(client):
    info = open_session(client, hop_s=0.5)
    assert info["sample_rate"] == 16000 and info["format"] == "f32le" and info["hop_s"] == 0.5
    assert info["audio_url"] == f"live/{info['session']}/audio" and info["max_listeners"] == 2
    assert len(info["labels"]) == 5 and info["expires_s"] > 0 and info["max_chunk_s"] > 0
    url = "/" + info["audio_url"]
    first = client.post(url, query_string={"seq": 0}, data=f32(0.3), content_type="application/octet-stream")
    assert first.status_code == 200 and first.get_json()["updates"] == []  # no hop due yet
    body = client.post(url, query_string={"seq": 1}, data=f32(0.3, seed=1),
                       content_type="application/octet-stream").get_json()
    (update,) = body["updates"]
    assert update["t_end_s"] == pytest.approx(0.6) and isinstance(update["no_event"], bool)
    assert {"label", "score", "probabilities", "attention", "attention_uniform", "frame_times_s", "waveform",
            "level_db", "no_event_reason", "classify_ms"} <= set(update)
    assert body["hops"] == 1 and body["dropped_hops"] == 0 and body["received_s"] == pytest.approx(0.6)
    health = client.get("/health").get_json()["live"]
    assert health["listeners"] == 1 and health["max_listeners"] == 2
    end = client.delete(f"/live/{info['session']}")
    assert end.status_code == 200 and end.get_json()["ended"] is True and end.get_json()["updates_given"] == 1
    gone = client.post(url, query_string={"seq": 2}, data=f32(0.1), content_type="application/octet-stream")
    assert gone.status_code == 404 and "POST /live" in gone.get_json()["error"]
    assert client.delete(f"/live/{info['session']}").status_code == 404


def test_the_listener_over_the_cap_gets_429(client):
    open_session(client)
    open_session(client)
    resp = client.post("/live")
    assert resp.status_code == 429
    body = resp.get_json()
    assert body["status"] == 429 and body["max_listeners"] == 2 and "limit is 2" in body["error"]


@pytest.mark.parametrize("query, data, content_type, status, words", [
    ({}, f32(0.1)[:-1], "application/octet-stream", 422, "whole number of float32"),
    ({}, np.array([np.nan] * 8, "<f4").tobytes(), "application/octet-stream", 422, "nan"),
    ({}, f32(3.0), "application/octet-stream", 413, "too large"),
    ({}, b"", "application/octet-stream", 400, "empty"),
    ({"sample_rate": "48000"}, f32(0.1), "application/octet-stream", 422, "16 khz"),
    ({"seq": "x"}, f32(0.1), "application/octet-stream", 400, "seq"),
    ({"seq": "3"}, f32(0.1), "application/octet-stream", 422, "went missing"),
    ({}, {"file": (io.BytesIO(f32(0.1)), "a.raw")}, None, 400, "not a form"),
], ids=["odd-bytes", "nan", "too-long", "empty", "rate", "bad-seq", "seq-gap", "form"])
def test_a_bad_chunk_ends_that_session_only(client, query, data, content_type, status, words):
    info, other = open_session(client), open_session(client)
    kwargs = {"content_type": content_type} if content_type else {}
    resp = client.post(f"/live/{info['session']}/audio", query_string=query, data=data, **kwargs)
    body = resp.get_json()
    assert resp.status_code == status, body
    assert body["ended"] is True and words in body["error"].lower() and "ended" in body["error"]
    again = client.post(f"/live/{info['session']}/audio", data=f32(0.1), content_type="application/octet-stream")
    assert again.status_code == 404
    fine = client.post(f"/live/{other['session']}/audio", data=f32(0.6), content_type="application/octet-stream")
    assert fine.status_code == 200 and len(fine.get_json()["updates"]) == 1


def test_a_repeated_chunk_is_409_and_the_session_goes_on(client):
    info = open_session(client)
    url = f"/live/{info['session']}/audio"
    assert client.post(url, query_string={"seq": 0}, data=f32(0.1), content_type="application/octet-stream").status_code == 200
    dup = client.post(url, query_string={"seq": 0}, data=f32(0.1), content_type="application/octet-stream")
    assert dup.status_code == 409 and dup.get_json()["ended"] is False
    assert client.post(url, query_string={"seq": 1}, data=f32(0.1), content_type="application/octet-stream").status_code == 200


@pytest.mark.parametrize("hop", ["0", "abc", "99"])
def test_bad_hop_is_400(client, hop):
    resp = client.post("/live", query_string={"hop_s": hop})
    assert resp.status_code == 400 and "hop_s" in resp.get_json()["error"]


def test_405_is_json_with_allow(client):
    for method, path, allowed in (("get", "/predict", "POST"), ("get", "/live", "POST"), ("put", "/health", "GET")):
        resp = getattr(client, method)(path)
        assert resp.status_code == 405 and resp.get_json()["status"] == 405
        assert allowed in resp.headers["Allow"], resp.headers


def test_every_response_carries_the_content_security_policy(client):
    for resp in (client.get("/"), client.get("/static/app.js"), client.get("/health"), client.get("/nope")):
        assert resp.headers["Content-Security-Policy"] == CONTENT_SECURITY_POLICY
    assert "frame-ancestors 'self'" in CONTENT_SECURITY_POLICY and "default-src 'self'" in CONTENT_SECURITY_POLICY


def _wav(seconds=1.0) -> bytes:
    buf = io.BytesIO()
    sf.write(buf, tone(440, seconds), SR, format="WAV")
    return buf.getvalue()


def test_curl_data_binary_without_a_type_is_accepted(client):
    # `curl --data-binary @clip.wav URL` sends Content-Type: application/x-www-form-urlencoded
    resp = client.post("/predict", data=_wav(), content_type="application/x-www-form-urlencoded")
    assert resp.status_code == 200 and resp.get_json()["duration_s"] == pytest.approx(1.0)
    untyped = client.post("/predict", data=_wav(), headers={"Content-Type": ""})
    assert untyped.status_code == 200
    text = client.post("/predict", data=b"file=clip.wav", content_type="application/x-www-form-urlencoded")
    assert text.status_code == 400 and "-F file=@clip.wav" in text.get_json()["error"]
    assert "Content-Type: application/octet-stream" in text.get_json()["error"]


def test_long_names_keep_their_extension_and_errors_say_the_reason_once(client):
    long = "a" * 300 + ".flac"
    assert upload_name(long).endswith("\u2026.flac") and len(upload_name(long)) == 120
    assert upload_name("C:\\Users\\me\\x.wav") == "x.wav" and upload_name("") == "upload"
    body = client.post("/predict", data={"file": (io.BytesIO(b"not audio at all"), long)}).get_json()
    assert body["source"].endswith(".flac") and long[:40] not in body["error"]


def test_waitress_own_413_is_json(tiny_checkpoint):
    requests = pytest.importorskip("requests")
    from loadtest import ServerProcess

    with ServerProcess(tiny_checkpoint, threads=2, extra_args=["--max-upload-mb", "1"]) as srv:
        resp = requests.post(srv.url + "/predict", data=bytes(3 * 2**20), headers={"Content-Type": "audio/wav"},
                             timeout=120)
        assert resp.status_code == 413 and resp.headers["Content-Type"].startswith("application/json")
        assert resp.json() == {"error": "upload too large: the limit is 1 MB", "status": 413}
        info = requests.post(srv.url + "/live", timeout=120).json()
        chunk = requests.post(f"{srv.url}/{info['audio_url']}?seq=0", data=f32(0.6),
                              headers={"Content-Type": "application/octet-stream"}, timeout=120)
        assert chunk.status_code == 200 and len(chunk.json()["updates"]) == 1
