"""The Flask app through Flask's test client: every route, every bad-input status, CORS, no temp files, the CLI."""

from __future__ import annotations

import io
import re
import struct
import tempfile
import threading

import numpy as np
import pytest
import soundfile as sf

from asit_helpers.inference import predict
from asit_helpers.model import load_model
from asit_helpers.serve import MicroBatchPredictor, create_app

from conftest import LABELS, tone

MAX_UPLOAD_MB = 1.0
MAX_SECONDS = 12.0
RESPONSE_KEYS = {"label", "score", "top_k", "weights", "frame_times_s", "duration_s", "windows", "latency_ms"}


def wav_bytes(seconds: float = 1.0, sr: int = 16000, freq: float = 440.0, channels: int = 1, fmt: str = "WAV",
              subtype: str | None = None) -> bytes:
    buf = io.BytesIO()
    sf.write(buf, tone(freq, seconds, sr, channels), sr, format=fmt, subtype=subtype)
    return buf.getvalue()


@pytest.fixture(scope="module")
def model(tiny_checkpoint):
    return load_model(tiny_checkpoint)


@pytest.fixture(scope="module")
def app(tiny_checkpoint):
    return create_app(tiny_checkpoint, max_upload_mb=MAX_UPLOAD_MB, max_seconds=MAX_SECONDS)


@pytest.fixture
def client(app):
    return app.test_client()


# ------------------------------------------------------------------------------------------------ routes


def test_health_reports_model_device_classes_version(client, tiny_checkpoint):
    body = client.get("/health").get_json()
    assert body["status"] == "ok"
    assert body["model"] == tiny_checkpoint.name
    assert body["device"] == "cpu"
    assert body["classes"] == len(LABELS) and body["labels"] == LABELS
    assert re.fullmatch(r"\d+\.\d+\.\d+.*", body["version"])
    assert body["batching"] == "lock"
    assert body["max_upload_mb"] == MAX_UPLOAD_MB and body["max_seconds"] == MAX_SECONDS


def test_labels_in_id_order(client):
    assert client.get("/labels").get_json() == {"labels": LABELS}


def test_page_and_its_assets_are_served_without_any_external_url(client):
    page = client.get("/")
    assert page.status_code == 200 and page.mimetype == "text/html"
    html = page.get_data(as_text=True)
    # relative links only: the page also works under a path prefix (Colab's port proxy; tests/test_colab.py)
    assert 'type="module"' in html and 'src="static/app.js"' in html and 'href="static/style.css"' in html
    assert all(label in html for label in LABELS)  # the page lists the model's classes
    texts = [html]
    for name, mimetype in [("app.js", "text/javascript"), ("recorder.js", "text/javascript"), ("style.css", "text/css")]:
        resp = client.get(f"/static/{name}")
        assert resp.status_code == 200 and resp.mimetype == mimetype, name
        texts.append(resp.get_data(as_text=True))
    for text in texts:  # offline: no CDN, fonts or trackers; only relative / same-origin references
        assert not re.search(r"(src|href)\s*=\s*[\"']?(https?:)?//", text), text[:200]
        assert not re.search(r"""import[^;]*?from\s*["']https?://""", text)
    assert "prefers-color-scheme: dark" in texts[-1]
    # one shared browser module (the widget uses the same file): the page imports recording and listening from it
    imported = re.search(r'import \{([^}]*)\} from "\./recorder\.js"', texts[1])
    assert imported and {"startRecording", "toWav16kMono", "startListening", "Timeline"} <= {
        name.strip() for name in imported.group(1).split(",")}
    worklet = client.get("/static/capture-worklet.js")  # the AudioWorklet module Listen loads (CSP: same origin)
    assert worklet.status_code == 200 and "registerProcessor" in worklet.get_data(as_text=True)


def test_static_route_serves_only_known_asset_types(client):
    assert client.get("/static/nothing.js").status_code == 404
    assert client.get("/static/..%2Fserve.py").status_code == 404
    assert client.get("/static/%2e%2e/serve.py").status_code == 404


def test_predict_multipart_matches_predict(client, model):
    data = wav_bytes(2.0, sr=22050)
    resp = client.post("/predict", data={"file": (io.BytesIO(data), "clip.wav")})
    assert resp.status_code == 200, resp.get_json()
    body = resp.get_json()
    assert RESPONSE_KEYS <= set(body)
    assert body["source"] == "clip.wav"
    expected = predict(model, data, top_k=5).to_dict()
    assert body["label"] == expected["label"] and body["top_k"] == expected["top_k"]
    assert body["label"] in LABELS and len(body["top_k"]) == 5
    assert body["duration_s"] == pytest.approx(2.0, abs=1e-3)
    weights = np.asarray(body["weights"])
    assert weights.ndim == 2 and weights.shape[1] == len(body["frame_times_s"])
    np.testing.assert_allclose(weights.sum(axis=1), 1.0, atol=1e-3)
    assert body["latency_ms"] > 0
    assert len(body["windows"]) == 1


def test_predict_raw_body_equals_multipart(client):
    data = wav_bytes(1.5)
    raw = client.post("/predict", data=data, content_type="audio/wav").get_json()
    form = client.post("/predict", data={"file": (io.BytesIO(data), "x.wav")}).get_json()
    assert raw["source"] == "request body"
    assert raw["top_k"] == form["top_k"] and raw["weights"] == form["weights"]


def test_predict_other_formats_and_stereo(client):
    for data in (wav_bytes(1.0, sr=44100, channels=2), wav_bytes(1.0, fmt="FLAC"), wav_bytes(1.0, fmt="OGG", subtype="VORBIS")):
        resp = client.post("/predict", data=data, content_type="application/octet-stream")
        assert resp.status_code == 200, resp.get_json()


def test_long_audio_is_windowed_up_to_the_cap(client):
    body = client.post("/predict", data=wav_bytes(11.0, sr=8000), content_type="audio/wav").get_json()
    assert body["duration_s"] == pytest.approx(11.0, abs=1e-3)
    assert len(body["windows"]) == 4  # 5 s windows every 2.5 s, the last aligned to the end
    assert body["windows"][-1]["end_s"] == pytest.approx(11.0, abs=1e-3)
    assert body["frame_times_s"][-1] > 10.5


def test_top_k_query(client):
    body = client.post("/predict?top_k=2", data=wav_bytes(1.0), content_type="audio/wav").get_json()
    assert len(body["top_k"]) == 2


def test_default_top_k_fits_a_model_with_fewer_classes():
    from asit_helpers import AsitForAudioClassification

    three = AsitForAudioClassification.from_backbone("tiny", labels=["a", "b", "c"])
    resp = create_app(three).test_client().post("/predict", data=wav_bytes(1.0), content_type="audio/wav")
    assert resp.status_code == 200, resp.get_json()
    assert len(resp.get_json()["top_k"]) == 3


# ------------------------------------------------------------------------------------------------ bad input


def _truncated_wav() -> bytes:
    return wav_bytes(1.0)[:1000]


def _nan_wav() -> bytes:
    buf = io.BytesIO()
    sf.write(buf, np.full(8000, np.nan, dtype=np.float32), 16000, format="WAV", subtype="FLOAT")
    return buf.getvalue()


BAD_INPUTS = [
    # (case, request kwargs, status, words in the message)
    ("no body at all", dict(), 400, "no audio"),
    ("form without a file field", dict(data={"name": "x"}), 400, "no audio"),
    ("file field under another name", dict(data={"audio": (io.BytesIO(b"RIFF"), "a.wav")}), 400, "no audio"),
    ("text, not audio", dict(data=b"hello, this is not audio", content_type="text/plain"), 415, "not an audio file"),
    ("WebM (browser recording, not converted)", dict(data=b"\x1aE\xdf\xa3" + bytes(200), content_type="audio/webm"),
     415, "WebM"),
    ("MP4/M4A", dict(data=b"\x00\x00\x00\x20ftypM4A " + bytes(200), content_type="audio/mp4"), 415, "MP4"),
    ("empty uploaded file", dict(data={"file": (io.BytesIO(b""), "empty.wav")}), 422, "empty"),
    ("truncated WAV", dict(data={"file": (io.BytesIO(_truncated_wav()), "cut.wav")}), 422, "truncated"),
    ("NaN samples", dict(data={"file": (io.BytesIO(_nan_wav()), "nan.wav")}), 422, "NaN"),
    ("longer than max_seconds", dict(data=wav_bytes(13.0, sr=8000), content_type="audio/wav"), 422, "too long"),
    ("shorter than one frame", dict(data=wav_bytes(0.01), content_type="audio/wav"), 422, "too short"),
    ("larger than max_upload_mb (raw)", dict(data=bytes(int(1.2 * 2**20)), content_type="audio/wav"), 413, "too large"),
    ("larger than max_upload_mb (form)", dict(data={"file": (io.BytesIO(bytes(int(1.2 * 2**20))), "big.wav")}), 413,
     "too large"),
]


@pytest.mark.parametrize("case, kwargs, status, words", BAD_INPUTS, ids=[c[0] for c in BAD_INPUTS])
def test_bad_input_gets_a_clear_4xx(client, case, kwargs, status, words):
    resp = client.post("/predict", **kwargs)
    body = resp.get_json()
    assert resp.status_code == status, body
    assert body["status"] == status and words.lower() in body["error"].lower(), body


def test_error_names_the_uploaded_file(client):
    for client_name in ("../../dog_01.wav", "/home/me/dog_01.wav"):
        body = client.post("/predict", data={"file": (io.BytesIO(_truncated_wav()), client_name)}).get_json()
        assert body["source"] == "dog_01.wav"  # the name, never a client-given path
        assert body["error"].startswith("truncated WAV")  # the reason once: the page prefixes the name itself


@pytest.mark.parametrize("query", ["top_k=0", "top_k=99", "top_k=two", "top_k=-1", "top_k=%C2%B2", "top_k="])
def test_bad_top_k_is_400(client, query):
    resp = client.post(f"/predict?{query}", data=wav_bytes(0.5), content_type="audio/wav")
    assert resp.status_code == 400 and "top_k" in resp.get_json()["error"]


def test_wrong_method_and_route_are_json_errors(client):
    assert client.get("/predict").status_code == 405
    resp = client.get("/no-such-route")
    assert resp.status_code == 404 and resp.get_json()["status"] == 404


def _wav_header(rate: int, frames: int, channels: int = 1, bits: int = 16) -> bytes:
    """A hand-made PCM WAV with any header values (soundfile would refuse to write the odd ones)."""
    data = bytes(frames * channels * bits // 8)
    fmt = struct.pack("<IHHIIHH", 16, 1, channels, rate, rate * channels * bits // 8, channels * bits // 8, bits)
    return b"RIFF" + struct.pack("<I", 36 + len(data)) + b"WAVEfmt " + fmt + b"data" + struct.pack("<I", len(data)) + data


def test_fuzzed_garbage_never_gives_a_500(client):
    rng = np.random.default_rng(0)
    valid = wav_bytes(0.5)
    bodies = [rng.bytes(int(n)) for n in rng.integers(1, 5000, size=12)]
    bodies += [b"RIFF" + rng.bytes(100), valid[:44], valid[:45], b"fLaC" + rng.bytes(300), b"OggS" + rng.bytes(300),
               b"ID3" + rng.bytes(300), valid[:44] + bytes(4), b"\xff\xfb" + rng.bytes(500)]
    # odd headers: zero / absurd sample rates, zero channels, zero or 64-bit integer samples, 1 Hz audio
    bodies += [_wav_header(0, 1000), _wav_header(2**31 - 1, 1000), _wav_header(16000, 1000, channels=0),
               _wav_header(16000, 1000, bits=0), _wav_header(16000, 1000, bits=64), _wav_header(1, 100)]
    for i, body in enumerate(bodies):
        for kwargs in (dict(data=body, content_type="application/octet-stream"),
                       dict(data={"file": (io.BytesIO(body), f"fuzz{i}.bin")})):
            resp = client.post("/predict", **kwargs)
            assert resp.status_code in (200, 400, 413, 415, 422), (i, resp.status_code, resp.get_data()[:300])
            assert "error" in resp.get_json() or resp.status_code == 200


def test_no_temporary_files_are_written(client, tmp_path, monkeypatch):
    spool = tmp_path / "tmp"
    spool.mkdir()
    monkeypatch.setattr(tempfile, "tempdir", str(spool))
    opened = []  # on Linux an anonymous TemporaryFile never shows in the folder: watch the calls too

    def watch(name):
        real = getattr(tempfile, name)
        return lambda *a, **kw: (opened.append(name), real(*a, **kw))[1]

    for name in ("TemporaryFile", "NamedTemporaryFile", "mkstemp", "mkdtemp"):
        monkeypatch.setattr(tempfile, name, watch(name))
    big = wav_bytes(11.0, sr=44100, fmt="WAV")  # ~0.95 MB: Werkzeug would spool a file this size to disk
    assert len(big) > 600_000
    for kwargs in (dict(data={"file": (io.BytesIO(big), "big.wav")}),
                   dict(data={"file": (io.BytesIO(_truncated_wav()), "bad.wav")}),
                   dict(data=big, content_type="audio/wav")):
        assert client.post("/predict", **kwargs).status_code in (200, 422)
    assert opened == [] and list(spool.iterdir()) == []


# ------------------------------------------------------------------------------------------------ CORS


def test_no_cors_headers_unless_configured(client):
    resp = client.post("/predict", data=wav_bytes(0.5), content_type="audio/wav", headers={"Origin": "http://evil.test"})
    assert "Access-Control-Allow-Origin" not in resp.headers


def test_cors_only_for_configured_origins(model):
    client = create_app(model, cors_origins=["http://lab.test"]).test_client()
    ok = client.options("/predict", headers={"Origin": "http://lab.test", "Access-Control-Request-Method": "POST"})
    assert ok.status_code == 204 and ok.headers["Access-Control-Allow-Origin"] == "http://lab.test"
    other = client.get("/health", headers={"Origin": "http://other.test"})
    assert "Access-Control-Allow-Origin" not in other.headers


# ------------------------------------------------------------------------------------------------ concurrency


def test_micro_batching_gives_the_same_answers_as_predict(model):
    """Concurrent clips of two lengths through the batching queue equal plain fp32 predict, clip by clip."""
    batcher = MicroBatchPredictor(model, max_batch=8, max_wait_ms=20)
    clips = [tone(200.0 + 150 * i, 1.0 if i % 2 else 1.6) for i in range(8)]
    results: dict[int, object] = {}

    def work(i: int) -> None:
        results[i] = batcher(clips[i], precision="fp32")

    threads = [threading.Thread(target=work, args=(i,)) for i in range(len(clips))]
    for t in threads:
        t.start()
    for t in threads:
        t.join(timeout=60)
    batcher.close()
    assert sorted(results) == list(range(len(clips)))
    for i, clip in enumerate(clips):
        ref = predict(model, clip, precision="fp32")
        np.testing.assert_allclose(results[i].probabilities, ref.probabilities, atol=1e-4)
        np.testing.assert_allclose(results[i].weights, ref.weights, atol=1e-4)


def test_micro_batching_app_serves_and_reports_its_mode(model):
    app = create_app(model, batching="micro")
    try:
        client = app.test_client()
        assert client.get("/health").get_json()["batching"] == "micro"
        assert client.post("/predict", data=wav_bytes(1.0), content_type="audio/wav").status_code == 200
        assert client.post("/predict", data=b"junk", content_type="audio/wav").status_code == 415
    finally:
        app.config["ASIT_PREDICTOR"].close()


def test_unknown_batching_mode_is_refused(model):
    with pytest.raises(ValueError, match="batching"):
        create_app(model, batching="fast")


# ------------------------------------------------------------------------------------------------ CLI


def test_cli_serve_binds_loopback_with_waitress_and_no_debug(tiny_checkpoint, monkeypatch):
    import waitress.server

    from asit_helpers import cli

    seen = {}

    class FakeServer:  # what create_server returns; serve() swaps in its JSON-error channel, then runs it
        channel_class = None

        def run(self):
            seen["ran_with"] = self.channel_class

    def fake_create_server(app, **kw):
        seen.update(app=app, **kw)
        return FakeServer()

    monkeypatch.setattr(waitress.server, "create_server", fake_create_server)
    assert cli.main(["serve", str(tiny_checkpoint), "--port", "5123", "--threads", "3"]) == 0
    assert seen["host"] == "127.0.0.1" and seen["port"] == 5123 and seen["threads"] == 3
    assert seen["app"].debug is False
    assert seen["max_request_body_size"] >= seen["app"].config["MAX_CONTENT_LENGTH"]
    assert seen["ran_with"].__name__ == "JsonErrorChannel"


def test_cli_serve_on_a_missing_checkpoint_is_a_clear_error(tmp_path, capsys):
    from asit_helpers import cli

    assert cli.main(["serve", str(tmp_path)]) == 2
    assert "not a checkpoint directory" in capsys.readouterr().err
