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


def _state_is(*states):
    """A wait condition: the page's ``body[data-state]`` is one of ``states``."""
    return lambda d: d.execute_script("return document.body.dataset.state") in states


def _open_page(server, make_chrome, **chrome):
    """A browser on the page, its script loaded and idle."""
    driver = make_chrome(**chrome)
    driver.get(server.url + "/")
    _wait(driver, _state_is("idle"), "the page script")
    return driver


def test_record_with_fake_microphone_shows_prediction_and_attention(server, make_chrome, mic_wav):
    driver = _open_page(server, make_chrome, fake_mic_wav=mic_wav)
    driver.find_element("id", "record-button").click()
    _wait(driver, _state_is("recording"), "recording")
    # record for at least 1.5 s of page time, read from the page's own timer (no fixed sleep)
    _wait(driver, lambda d: float((d.find_element("id", "rec-time").text or "0 s").split()[0]) >= 1.5, "1.5 s recorded")
    level = driver.execute_script("return document.getElementById('level').value")
    driver.find_element("id", "stop-button").click()
    _wait(driver, _state_is("done", "error"), "a prediction")
    result = _result(driver)
    assert result["error"] is None, result
    assert result["label"] in LABELS + ["no event"], result  # a steady fake-mic signal may be "no event"
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
    driver = _open_page(server, make_chrome)
    driver.find_element("id", "file-input").send_keys(str(path))
    _wait(driver, _state_is("done", "error"), "a prediction")
    result = _result(driver)
    assert result["error"] is None, result
    # the original file is sent, so the answer is the API's exactly (its no-event answer included)
    assert result["label"] == ("no event" if expected["no_event"] else expected["label"])
    assert result["attention"] == len(expected["frame_times_s"])
    assert driver.find_elements("css selector", "#windows tbody tr").__len__() == len(expected["windows"]) == 2
    # the headline says how the two windows became one answer (predict's aggregation), next to the headline
    how = driver.find_element("id", "result-aggregation")
    assert how.is_displayed() and f"({expected['aggregation']})" in how.text and "2 windows" in how.text
    # the waveform has a time axis and labelled window lines; attention sits on a fixed scale against uniform
    wave = driver.find_element("id", "wave")
    assert float(wave.get_attribute("data-scale-top")) >= float(wave.get_attribute("data-attention-peak-ratio"))
    assert _severe_console_errors(driver) == []


def test_flat_attention_is_drawn_flat_at_the_uniform_line(server, make_chrome):
    """Evenly spread attention must not look like a confident curve: it is drawn at 1x uniform, a quarter up."""
    driver = _open_page(server, make_chrome)
    rows = driver.execute_async_script("""
        const done = arguments[arguments.length - 1];
        import("./static/recorder.js").then((m) => {
          const c = document.getElementById('wave');
          document.getElementById('result').hidden = false;
          const n = 150, times = Array.from({length: n}, (_, j) => 0.01 + j * 0.02);
          m.drawAttention(c, {startS: 0, endS: 3, samples: new Float32Array(48000), frameTimes: times,
                              attention: new Array(n).fill(1 / n), height: 220});
          const ctx = c.getContext('2d'), d = ctx.getImageData(0, 0, c.width, c.height).data, hits = new Set();
          for (let i = 0; i < d.length; i += 4)  // the attention colour (#d9480f in the light theme)
            if (Math.abs(d[i] - 0xd9) < 40 && Math.abs(d[i + 1] - 0x48) < 40 && Math.abs(d[i + 2] - 0x0f) < 40)
              hits.add(Math.floor(i / 4 / c.width));
          done({rows: [...hits], height: c.height, top: Number(c.dataset.scaleTop),
                peak: Number(c.dataset.attentionPeakRatio), dpr: window.devicePixelRatio});
        });""")
    assert rows["peak"] == pytest.approx(1.0) and rows["top"] == 4
    plot_h = (220 - 20) * rows["dpr"]  # the plot above the time axis, in device pixels
    expected = plot_h - 4 * rows["dpr"] - (plot_h - 14 * rows["dpr"]) / 4
    assert rows["rows"] and all(abs(r - expected) <= 3 * rows["dpr"] for r in rows["rows"]), (rows, expected)


def test_bad_upload_shows_the_servers_message(server, make_chrome, tmp_path):
    good = tmp_path / "good.wav"
    sf.write(good, tone(440.0, 1.0, 16000), 16000)
    path = tmp_path / "notes.wav"
    path.write_text("these are notes, not audio", encoding="utf-8")
    driver = _open_page(server, make_chrome)
    driver.find_element("id", "file-input").send_keys(str(good))
    _wait(driver, _state_is("done"), "the first prediction")
    assert driver.find_element("id", "result").is_displayed()
    driver.find_element("id", "file-input").send_keys(str(path))
    _wait(driver, _state_is("error"), "the error message")
    message = driver.find_element("id", "error").text
    assert "415" in message and "notes.wav" in message and "not an audio file" in message
    assert message.count("notes.wav") == 1, message  # the file is named once, not by the page and the server
    # the previous file's prediction is gone: nothing is shown under the new file's name
    assert not driver.find_element("id", "result").is_displayed()
    assert driver.find_element("id", "result-label").text == ""


def test_long_file_names_keep_their_extension(server, make_chrome, tmp_path):
    path = tmp_path / ("a_very_long_field_recording_name_" * 4 + "final.wav")
    sf.write(path, tone(440.0, 1.0, 16000), 16000)
    driver = _open_page(server, make_chrome)
    driver.find_element("id", "file-input").send_keys(str(path))
    _wait(driver, _state_is("done"), "the prediction")
    shown = driver.find_element("id", "file-name").text
    assert shown.endswith("final.wav") and "\u2026" in shown and len(shown) <= 60, shown
    assert driver.find_element("id", "file-name").get_attribute("title") == path.name


def test_missing_or_refused_microphone_shows_a_message(server, make_chrome):
    driver = _open_page(server, make_chrome)  # no fake device: headless Chromium has no microphone at all
    driver.find_element("id", "record-button").click()
    _wait(driver, _state_is("error"), "the error message")
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


def test_the_streaming_resampler_keeps_speech_band_and_removes_aliases(server, make_chrome):
    """Where the AudioContext will not run at 16 kHz, recorder.js resamples the microphone itself, block by block."""
    driver = _open_page(server, make_chrome)
    result = driver.execute_async_script("""
        const done = arguments[arguments.length - 1];
        import("./static/recorder.js").then((m) => {
          const out = {};
          for (const rate of [44100, 48000, 22050]) {
            const r = m.createResampler(rate, 16000), n = rate * 2, x = new Float32Array(n);
            // 1 kHz (kept) + 11.5 kHz (above the 8 kHz Nyquist of 16 kHz: must not fold back to 4.5 kHz)
            for (let i = 0; i < n; i++) x[i] = 0.5 * Math.sin(2 * Math.PI * 1000 * i / rate)
                                               + (rate > 23000 ? 0.5 * Math.sin(2 * Math.PI * 11500 * i / rate) : 0);
            const y = [];
            for (let a = 0; a < n; a += 1000) y.push(...r(x.subarray(a, a + 1000)));  // odd block size on purpose
            let err = 0, cnt = 0;
            for (let k = 200; k < y.length - 200; k++) {
              err += (y[k] - 0.5 * Math.sin(2 * Math.PI * 1000 * k / 16000)) ** 2; cnt++;
            }
            out[rate] = {samples: y.length, rmsError: Math.sqrt(err / cnt)};
          }
          done(out);
        });""")
    for rate, r in result.items():
        assert abs(r["samples"] - 32000) <= 64, (rate, r)  # 2 s in, 2 s out (a few samples wait for the next block)
        assert r["rmsError"] < 0.01, (rate, r)  # vs 0.35 if the 11.5 kHz tone aliased through
