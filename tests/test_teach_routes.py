"""The page's Teach panel, server side: /teach sessions on the served backbone (Flask test client, tiny model)."""

from __future__ import annotations

import io

import numpy as np
import pytest
import soundfile as sf

from asit_helpers.serve import create_app

SR = 16000


def _wav(x) -> bytes:
    buf = io.BytesIO()
    sf.write(buf, np.asarray(x, np.float32), SR, format="WAV")
    return buf.getvalue()


def _sound(kind, rng):
    t = np.arange(int(1.2 * SR)) / SR
    if kind == "whistle":
        return 0.5 * np.sin(2 * np.pi * 2200 * t) + 0.01 * rng.standard_normal(t.size)
    x = 0.01 * rng.standard_normal(t.size)
    x[rng.integers(0, t.size, 40)] = 0.9
    return x


@pytest.fixture
def app(tiny_checkpoint):
    app = create_app(tiny_checkpoint)
    app.config["ASIT_TEACH"].settings.update(steps=20, views=0, cv_folds=2)
    return app


def test_teach_a_session_then_predict_with_its_model(app):
    client = app.test_client()
    opened = client.post("/teach")
    assert opened.status_code == 201
    sid = opened.get_json()["session"]
    rng = np.random.default_rng(0)
    for name in ("whistle", "clicks"):
        assert client.post(f"/teach/{sid}/classes", json={"name": name}).status_code == 201
        for _ in range(3):
            r = client.post(f"/teach/{sid}/clips/{name}", data=_wav(_sound(name, rng)),
                            content_type="application/octet-stream")
            assert r.status_code == 201, r.get_json()
    assert client.post(f"/teach/{sid}/clips/background", data=_wav(0.02 * rng.standard_normal(5 * SR))).status_code == 201
    state = client.delete(f"/teach/{sid}/clips/whistle/002.wav").get_json()
    assert state["classes"] == {"clicks": 3, "whistle": 2} and state["background"] == 1
    assert client.post(f"/teach/{sid}/predict", data=_wav(_sound("whistle", rng))).status_code == 409  # not yet
    early = client.post(f"/teach/{sid}/live")
    assert early.status_code == 404 and "press Train" in early.get_json()["error"]
    trained = client.post(f"/teach/{sid}/train")
    assert trained.status_code == 200, trained.get_json()
    body = trained.get_json()
    assert body["trained"] and body["labels"] == ["clicks", "whistle", "no event"]
    assert body["report"]["clips_per_class"] == {"clicks": 3, "whistle": 2}
    pred = client.post(f"/teach/{sid}/predict", data=_wav(_sound("clicks", rng))).get_json()
    assert pred["label"] in body["labels"] and isinstance(pred["no_event"], bool)
    # Listen: the live routes stream to the taught model (the same API as /live)
    listen = client.post(f"/teach/{sid}/live", json={"hop_s": 0.5})
    assert listen.status_code == 201, listen.get_json()
    info = listen.get_json()
    assert info["labels"] == body["labels"] and info["audio_url"] == f"teach/{sid}/live/{info['session']}/audio"
    chunk = np.concatenate([_sound("whistle", rng), 0.01 * rng.standard_normal(SR // 2)]).astype("<f4")
    answer = client.post("/" + info["audio_url"] + "?seq=0", data=chunk.tobytes(),
                         content_type="application/octet-stream").get_json()
    assert len(answer["updates"]) == 1 and answer["updates"][0]["label"] in body["labels"], answer
    assert isinstance(answer["updates"][0]["no_event"], bool) and len(answer["updates"][0]["attention"]) > 1
    assert client.post(f"/live/{info['session']}/audio?seq=1", data=chunk.tobytes(),  # not the page's session
                       content_type="application/octet-stream").status_code == 404
    # Train again: listening sessions on the old model end (404), a new one gets the new model
    assert client.post(f"/teach/{sid}/train").status_code == 200
    assert client.post("/" + info["audio_url"] + "?seq=1", data=chunk.tobytes(),
                       content_type="application/octet-stream").status_code == 404
    again = client.post(f"/teach/{sid}/live").get_json()["session"]
    assert client.delete(f"/teach/{sid}/live/{again}").get_json()["ended"]
    assert client.post(f"/teach/nope/live").status_code == 404
    # the page's own model is untouched
    assert client.get("/labels").get_json()["labels"] == ["dog", "cat", "siren", "rain", "crow"]
    sessions = app.config["ASIT_TEACH"]
    assert (sessions.root / sid / "model" / "model.safetensors").is_file()  # saved as well as served
    assert client.delete(f"/teach/{sid}").get_json()["ended"]
    assert client.get(f"/teach/{sid}").status_code == 404


def test_limits_and_bad_input_answer_json(app):
    client = app.test_client()
    sessions = app.config["ASIT_TEACH"]
    sessions.limits.max_sessions = 1
    sid = client.post("/teach").get_json()["session"]
    over = client.post("/teach")
    assert over.status_code == 429 and "teaching sessions are open" in over.get_json()["error"]
    assert client.post(f"/teach/{sid}/classes", json={"name": "../x"}).status_code == 422
    client.post(f"/teach/{sid}/classes", json={"name": "clap"})
    bad = client.post(f"/teach/{sid}/clips/clap", data=b"not audio")
    assert bad.status_code == 422 and "could not use" in bad.get_json()["error"]
    assert client.post(f"/teach/{sid}/clips/nope", data=_wav(np.ones(SR) * 0.1)).status_code == 422
    train = client.post(f"/teach/{sid}/train")
    assert train.status_code == 422 and "no examples" in train.get_json()["error"]
    assert client.get("/teach/unknown").status_code == 404
