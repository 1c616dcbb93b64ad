"""Listen mode in a real browser: headless Chromium, a fake microphone fed from a WAV with known events, a real
``asit serve`` with a model trained here on the events' synthetic classes.

The fake microphone plays the WAV from the start of the capture and loops it. The test does not assume that: it
aligns the file with the page's own clock by cross-correlating the levels of the audio the page sent (session time,
64 ms blocks) with the file's levels, then scores the timeline the page drew against the events' known times.
"""

from __future__ import annotations

import json
import os

import numpy as np
import pytest
import soundfile as sf

from loadtest import ServerProcess

pytestmark = [pytest.mark.browser, pytest.mark.slow]

SR = 16000
CLASSES = ["siren", "dog", "car_horn"]
#: (class, onset s, duration s) in the fake microphone's file; quiet background everywhere else.
EVENTS = [("siren", 3.0, 1.5), ("dog", 9.0, 1.5), ("car_horn", 15.0, 1.5)]
FILE_S = 20.0
TOLERANCE_S = 0.5  # the issue's: the right class within +-0.5 s of each moment of an event
PAGE_TIMEOUT_S = 90


@pytest.fixture(scope="module")
def listen_checkpoint(tmp_path_factory):
    """tiny-fb trained from scratch on 3 synthetic classes (24 clips of 2 s each; ~30 s on a loaded 2-core CPU)."""
    import torch

    from asit_helpers.data import AudioCache, preprocess
    from asit_helpers.synth import make_soundscapes
    from asit_helpers.train import train

    root = tmp_path_factory.mktemp("listen_model")
    make_soundscapes(root / "synth", clips_per_class=24, classes=CLASSES, seconds=2.0, seed=0, progress=False)
    preprocess(root / "synth", root / "cache", clip_seconds=2.0, workers=1, progress=False)
    torch.manual_seed(0)
    result = train(AudioCache.open(root / "cache"), root / "ck", preset="tiny-fb", epochs=25, progress=False)
    assert result.best_metrics["val_accuracy"] >= 0.8, result.best_metrics  # else the browser test means nothing
    return result.checkpoint


def event_wav(path, events=EVENTS, seconds=FILE_S, bg_rms=0.01, snr_db=15.0, seed=0):
    """Pink background at ``bg_rms`` with each event (the synthetic class's own generator) ``snr_db`` above it.

    Returns the events' true spans ``[(label, onset_s, offset_s)]``: first to last non-zero sample of each.
    """
    from asit_helpers.synth import BACKGROUNDS, SYNTH_CLASSES

    rng = np.random.default_rng(seed)
    x = BACKGROUNDS["pink"](rng, int(seconds * SR)) * bg_rms
    makers = {c.name: c.make for c in SYNTH_CLASSES}
    spans = []
    for label, onset, duration in events:
        sound = makers[label](rng, int(duration * SR))
        nonzero = np.flatnonzero(sound)
        sound = sound[nonzero[0]: nonzero[-1] + 1]
        sound = sound * bg_rms * np.sqrt(10 ** (snr_db / 10) / np.mean(sound**2))
        start = int(onset * SR) + int(nonzero[0])
        x[start: start + sound.size] += sound
        spans.append((label, start / SR, (start + sound.size) / SR))
    sf.write(path, x.astype(np.float32), SR, subtype="PCM_16")
    return spans


def align(levels, wav_path) -> tuple[float, float]:
    """(offset s, correlation): file time = (session time + offset) mod file length, from the levels the page sent."""
    x, _ = sf.read(wav_path, dtype="float32")
    lv = np.asarray(levels, dtype=np.float64)  # rows: start_s, duration_s, rms
    n = x.size

    def file_levels(offset):
        out = np.empty(len(lv))
        for k, (start, dur, _rms) in enumerate(lv):
            idx = np.arange(int(round((start + offset) * SR)), int(round((start + offset + dur) * SR))) % n
            out[k] = np.sqrt(np.mean(x[idx] ** 2))
        return np.log(out + 1e-6)

    page = np.log(lv[:, 2] + 1e-6)
    scores = [(np.corrcoef(file_levels(o), page)[0, 1], o) for o in np.arange(0.0, n / SR, 0.02)]
    corr, offset = max(scores)
    return float(offset), float(corr)


def timeline_shares(verdicts, spans, offset, file_s, start_s=1.0, step_s=0.05) -> dict:
    """Share of event time whose class the timeline shows within +-TOLERANCE_S, and of the silent time between
    events (more than TOLERANCE_S from any event) where it shows "no event" (at that moment, and within the
    tolerance), over the span the timeline covers after ``start_s`` (the first second builds the noise floor)."""
    bins = {round(v["t0"], 3): v["label"] for v in verdicts}
    bin_s = round(verdicts[0]["t1"] - verdicts[0]["t0"], 3)
    t_end = max(v["t1"] for v in verdicts)

    def shown(t, tol):
        ks = range(int(np.floor((t - tol) / bin_s + 1e-9)), int(np.floor((t + tol) / bin_s + 1e-9)) + 1)
        return {bins[round(k * bin_s, 3)] for k in ks if round(k * bin_s, 3) in bins}

    event_hit = event_n = quiet_hit = quiet_strict = quiet_n = 0
    per_event = {}
    for t in np.arange(start_s + TOLERANCE_S, t_end - TOLERANCE_S, step_s):
        pos = (t + offset) % file_s
        label = next((lab for lab, a, b in spans if a <= pos < b), None)
        if label is not None:
            ok = label in shown(t, TOLERANCE_S)
            event_n += 1
            event_hit += ok
            per_event.setdefault(label, [0, 0])[0] += ok
            per_event[label][1] += 1
        elif not any(a - TOLERANCE_S <= pos < b + TOLERANCE_S for _lab, a, b in spans):
            quiet_n += 1
            quiet_hit += "no event" in shown(t, TOLERANCE_S)
            quiet_strict += shown(t, 0.0) == {"no event"}
    return {"event_share": event_hit / max(1, event_n), "event_points": event_n,
            "silence_share": quiet_hit / max(1, quiet_n), "silence_share_strict": quiet_strict / max(1, quiet_n),
            "silence_points": quiet_n, "per_event": {k: round(a / b, 3) for k, (a, b) in per_event.items()}}


@pytest.fixture(scope="module")
def server(listen_checkpoint):
    with ServerProcess(listen_checkpoint, threads=4, startup_timeout_s=300) as srv:
        yield srv


# Every fetch the page makes, with the page's clock: what was sent after Stop is read from here, not from the
# page's own counters.
FETCH_LOG_JS = """
window.__requests = [];
const original = window.fetch.bind(window);
window.fetch = (url, init = {}) => {
  window.__requests.push({url: String(url), method: init.method || 'GET', t: performance.now()});
  return original(url, init);
};
"""


def _page(driver, url):
    from selenium.webdriver.support.ui import WebDriverWait

    driver.get(url + "/")
    WebDriverWait(driver, PAGE_TIMEOUT_S).until(lambda d: d.execute_script("return document.body.dataset.listen") == "idle")
    driver.execute_script(FETCH_LOG_JS)


def _wait(driver, condition, what, timeout=PAGE_TIMEOUT_S):
    from selenium.webdriver.support.ui import WebDriverWait

    try:
        return WebDriverWait(driver, timeout, poll_frequency=0.2).until(lambda d: condition(d))
    except Exception as exc:
        state = driver.execute_script(
            "return [document.body.dataset.listen, document.getElementById('listen-status').textContent, "
            "document.getElementById('listen-error').textContent]")
        raise AssertionError(f"timed out waiting for {what}; page: {state}; console: {driver.get_log('browser')}") from exc


def _now_s(driver) -> float:
    return driver.execute_script("const t = window.asitListen.timeline; return t ? t.nowS : 0;")


def test_listening_timeline_follows_known_events_and_stop_sends_nothing(server, make_chrome, tmp_path, capsys):
    wav = tmp_path / "events.wav"
    spans = event_wav(wav)
    driver = make_chrome(fake_mic_wav=wav)
    _page(driver, server.url)
    driver.find_element("id", "listen-button").click()
    _wait(driver, lambda d: d.execute_script("return document.body.dataset.listen") == "listening", "listening")
    # one whole pass of the file plus 3 s, on the session's clock (the fake microphone runs in real time)
    _wait(driver, lambda d: _now_s(d) >= FILE_S + 3.0, "a pass of the file", timeout=FILE_S + 60)
    seen = driver.execute_script(
        "const L = window.asitListen; return {verdicts: L.timeline.verdicts(), levels: L.levels, "
        "label: document.getElementById('listen-label').textContent, rate: document.getElementById('listen-rate')"
        ".textContent, rows: document.getElementById('timeline').dataset.rows, session: L.info.session, "
        "wave: Number(document.getElementById('listen-wave').dataset.attentionPoints || 0)};")
    if os.environ.get("ASIT_SCREENSHOTS"):  # a picture for a person to look at (the issue asks for one), no check
        driver.execute_script("document.getElementById('timeline').scrollIntoView({block: 'center'});")
        driver.save_screenshot(os.path.join(os.environ["ASIT_SCREENSHOTS"], "page-listening.png"))
    stopped_at = driver.execute_script("document.getElementById('listen-stop').click(); return performance.now();")
    _wait(driver, lambda d: d.execute_script("return document.body.dataset.listen") == "stopped", "Stop")
    driver.execute_script("return new Promise((done) => setTimeout(done, 3000));")  # 3 s of page time after Stop
    requests_log = driver.execute_script("return window.__requests;")
    after = [r for r in requests_log if r["t"] > stopped_at]

    offset, corr = align(seen["levels"], wav)
    shares = timeline_shares(seen["verdicts"], spans, offset, FILE_S)
    with capsys.disabled():
        print(f"\nlive timeline vs known events: offset {offset:.2f} s (level correlation {corr:.3f}); "
              f"event time with the right class within +-{TOLERANCE_S} s: {shares['event_share']:.1%} "
              f"({shares['event_points']} points; {shares['per_event']}); silent time shown as no event: "
              f"{shares['silence_share']:.1%} within +-{TOLERANCE_S} s, {shares['silence_share_strict']:.1%} "
              f"at the moment itself ({shares['silence_points']} points); {seen['rate']}; "
              f"{len([r for r in requests_log if '/audio' in r['url']])} chunks sent; after Stop: "
              f"{json.dumps([(r['method'], r['url'].rsplit('/', 1)[-1]) for r in after])}")
    assert corr > 0.9, "the page's levels do not line up with the file: the alignment is not trustworthy"
    assert shares["event_share"] >= 0.8, shares
    assert shares["silence_share"] >= 0.8 and shares["silence_share_strict"] >= 0.8, shares
    assert set(seen["rows"].split("|")) <= set(CLASSES) and seen["wave"] > 10
    # After Stop: nothing sent (the session's DELETE leaves inside the click, before Stop returns), session ended.
    assert after == [], after
    assert [r["method"] for r in requests_log if seen["session"] in r["url"]][-1] == "DELETE"
    import requests

    gone = requests.post(f"{server.url}/live/{seen['session']}/audio?seq=999999", data=b"\0\0\0\0",
                         headers={"Content-Type": "application/octet-stream"}, timeout=10)
    assert gone.status_code == 404, gone.text
    stats = driver.execute_script("return window.asitListen.stopped;")
    assert stats["pendingSamples"] == 0 and stats["stopped"] is True

    # Listen again without reloading: a new session, updates again.
    driver.find_element("id", "listen-button").click()
    _wait(driver, lambda d: d.execute_script("return window.asitListen.info.session") != seen["session"]
          and _now_s(d) >= 1.0, "updates in a second session")
    driver.find_element("id", "listen-stop").click()
    _wait(driver, lambda d: d.execute_script("return document.body.dataset.listen") == "stopped", "the second Stop")
    assert [e for e in driver.get_log("browser") if e["level"] == "SEVERE"] == []  # CSP violations are SEVERE too


def test_listen_without_or_losing_the_microphone_says_so(server, make_chrome, tmp_path):
    driver = make_chrome()  # no fake device: headless Chromium has no microphone at all
    _page(driver, server.url)
    driver.find_element("id", "listen-button").click()
    _wait(driver, lambda d: d.execute_script("return document.body.dataset.listen") == "error", "the error")
    assert "no microphone was found" in driver.find_element("id", "listen-error").text.lower()
    assert not driver.find_element("id", "listen-button").get_attribute("disabled")

    driver.execute_script("navigator.mediaDevices.getUserMedia = () => "
                          "Promise.reject(new DOMException('Permission denied', 'NotAllowedError'));")
    driver.find_element("id", "listen-button").click()
    _wait(driver, lambda d: "refused" in d.find_element("id", "listen-error").text, "the refusal message")
    # the session opened before the microphone was asked for is closed again: nothing is left listening
    import requests

    assert requests.get(server.url + "/health", timeout=10).json()["live"]["listeners"] == 0

    # A microphone that vanishes while listening (unplugged): the track ends, the page says so and stops.
    wav = tmp_path / "quiet.wav"
    event_wav(wav, events=[("siren", 1.0, 1.0)], seconds=4.0)
    driver = make_chrome(fake_mic_wav=wav)
    _page(driver, server.url)
    driver.execute_script("""
      const original = navigator.mediaDevices.getUserMedia.bind(navigator.mediaDevices);
      navigator.mediaDevices.getUserMedia = async (c) => { const s = await original(c); window.__stream = s; return s; };""")
    driver.find_element("id", "listen-button").click()
    _wait(driver, lambda d: _now_s(d) >= 1.0, "the first updates")
    driver.execute_script("window.__stream.getAudioTracks()[0].dispatchEvent(new Event('ended'));")
    _wait(driver, lambda d: d.execute_script("return document.body.dataset.listen") == "error", "the lost microphone")
    assert "microphone stopped" in driver.find_element("id", "listen-error").text
    _wait(driver, lambda d: requests.get(server.url + "/health", timeout=10).json()["live"]["listeners"] == 0,
          "the session to be closed")
