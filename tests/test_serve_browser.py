"""The page in a real browser: headless Chromium, a fake microphone fed from a WAV, against a real ``asit serve``.

Record → stop → the predicted label appears and the attention curve is drawn; an upload does the same; a
microphone that cannot be opened shows a message on the page.
"""

from __future__ import annotations

import json

import numpy as np
import pytest
import soundfile as sf

from loadtest import ServerProcess
from conftest import LABELS, tone

pytestmark = pytest.mark.browser

PAGE_TIMEOUT_S = 60


@pytest.fixture(scope="module")
def server(tiny_checkpoint):
    with ServerProcess(tiny_checkpoint, threads=2) as srv:
        yield srv


@pytest.fixture
def mic_wav(tmp_path):
    """3 s at 44.1 kHz (the browser resamples it): a tone then noise, so the waveform is not flat."""
    rng = np.random.default_rng(0)
    x = np.concatenate([tone(660.0, 1.5, 44100), (0.2 * rng.standard_normal(int(1.5 * 44100))).astype(np.float32)])
    path = tmp_path / "mic.wav"
    sf.write(path, x, 44100, subtype="PCM_16")
    return path


def _wait(driver, condition, what: str):
    from selenium.webdriver.support.ui import WebDriverWait

    try:
        return WebDriverWait(driver, PAGE_TIMEOUT_S, poll_frequency=0.1).until(lambda d: condition(d))
    except Exception as exc:  # add what the page says, so a failure is readable
        state = driver.execute_script("return document.body.dataset.state")
        status = driver.execute_script("return document.getElementById('status').textContent")
        error = driver.execute_script("return document.getElementById('error').textContent")
        logs = driver.get_log("browser") if hasattr(driver, "get_log") else []
        raise AssertionError(f"timed out waiting for {what}; state={state!r} status={status!r} error={error!r} "
                             f"console={logs}") from exc


def _result(driver) -> dict:
    return driver.execute_script(
        """const c = document.getElementById('wave');
        return {label: document.getElementById('result-label').textContent,
                score: document.getElementById('result-score').textContent,
                bars: document.querySelectorAll('#topk .fill').length,
                attention: Number(c.dataset.attentionPoints || 0), wave: Number(c.dataset.wavePoints || 0),
                inked: (() => { const d = c.getContext('2d').getImageData(0, 0, c.width, c.height).data;
                                let n = 0; for (let i = 3; i < d.length; i += 4) if (d[i]) n++; return n; })(),
                error: document.getElementById('error').hidden ? null : document.getElementById('error').textContent};"""
    )


def _severe_console_errors(driver) -> list:
    return [e for e in driver.get_log("browser") if e["level"] == "SEVERE"]


def test_record_with_fake_microphone_shows_prediction_and_attention(server, make_chrome, mic_wav):
    driver = make_chrome(fake_mic_wav=mic_wav)
    driver.get(server.url + "/")
    _wait(driver, lambda d: d.execute_script("return document.body.dataset.state") == "idle", "the page script")
    driver.find_element("id", "record-button").click()
    _wait(driver, lambda d: d.execute_script("return document.body.dataset.state") == "recording", "recording")
    # record for at least 1.5 s of page time, read from the page's own timer (no fixed sleep)
    _wait(driver, lambda d: float((d.find_element("id", "rec-time").text or "0 s").split()[0]) >= 1.5, "1.5 s recorded")
    level = driver.execute_script("return document.getElementById('level').value")
    driver.find_element("id", "stop-button").click()
    _wait(driver, lambda d: d.execute_script("return document.body.dataset.state") in ("done", "error"), "a prediction")
    result = _result(driver)
    assert result["error"] is None, result
    assert result["label"] in LABELS, result
    assert result["bars"] == 5
    assert result["attention"] > 10 and result["wave"] >= 1.5 * 16000 * 0.9, result  # 16 kHz samples drawn
    assert result["inked"] > 500  # pixels actually painted on the canvas
    assert level > 0, "the level meter never moved"
    assert _severe_console_errors(driver) == []


def test_upload_in_the_browser_matches_the_api(server, make_chrome, tmp_path):
    import requests

    path = tmp_path / "upload.wav"
    sf.write(path, tone(330.0, 7.0, 22050), 22050)  # longer than one 5 s window
    expected = requests.post(server.url + "/predict", files={"file": ("upload.wav", path.read_bytes())}, timeout=60).json()
    driver = make_chrome()
    driver.get(server.url + "/")
    _wait(driver, lambda d: d.execute_script("return document.body.dataset.state") == "idle", "the page script")
    driver.find_element("id", "file-input").send_keys(str(path))
    _wait(driver, lambda d: d.execute_script("return document.body.dataset.state") in ("done", "error"), "a prediction")
    result = _result(driver)
    assert result["error"] is None, result
    assert result["label"] == expected["label"]  # the original file is sent, so the answer is the API's exactly
    assert result["attention"] == len(expected["frame_times_s"])
    assert driver.find_elements("css selector", "#windows tbody tr").__len__() == len(expected["windows"]) == 2
    assert _severe_console_errors(driver) == []


def test_bad_upload_shows_the_servers_message(server, make_chrome, tmp_path):
    path = tmp_path / "notes.wav"
    path.write_text("these are notes, not audio", encoding="utf-8")
    driver = make_chrome()
    driver.get(server.url + "/")
    _wait(driver, lambda d: d.execute_script("return document.body.dataset.state") == "idle", "the page script")
    driver.find_element("id", "file-input").send_keys(str(path))
    _wait(driver, lambda d: d.execute_script("return document.body.dataset.state") == "error", "the error message")
    message = driver.find_element("id", "error").text
    assert "415" in message and "notes.wav" in message and "not an audio file" in message


def test_missing_or_refused_microphone_shows_a_message(server, make_chrome):
    driver = make_chrome()  # no fake device: headless Chromium has no microphone at all
    driver.get(server.url + "/")
    _wait(driver, lambda d: d.execute_script("return document.body.dataset.state") == "idle", "the page script")
    driver.find_element("id", "record-button").click()
    _wait(driver, lambda d: d.execute_script("return document.body.dataset.state") == "error", "the error message")
    assert driver.find_element("id", "error").is_displayed()
    assert "no microphone was found" in driver.find_element("id", "error").text.lower()
    assert not driver.find_element("id", "record-button").get_attribute("disabled")

    # A user who clicks "Block": browsers reject getUserMedia with NotAllowedError. Headless Chromium's fake-UI
    # switch always accepts, so the refusal is produced the way the browser reports it.
    driver.execute_script(
        "navigator.mediaDevices.getUserMedia = () => "
        "Promise.reject(new DOMException('Permission denied', 'NotAllowedError'));"
    )
    driver.find_element("id", "record-button").click()
    _wait(driver, lambda d: "refused" in d.find_element("id", "error").text, "the refusal message")
    message = driver.find_element("id", "error").text
    assert driver.find_element("id", "error").is_displayed() and "Allow the microphone" in message
    print("\nrefused-microphone message:", json.dumps(message))
