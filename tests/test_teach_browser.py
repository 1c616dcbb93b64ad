"""The page's Teach panel in a real browser (headless Chromium, fake microphone) against a real ``asit serve``.

Two classes (a whistle, clicks) and background are taught through the panel (its Upload, its Train), then the
taught model is tried through the fake microphone: a whistle answers "whistle", room noise answers "no event".
The served base is an untrained tiny-fb (its filterbank front end makes frames that tell tones from clicks).
"""

from __future__ import annotations

import os

import numpy as np
import pytest
import soundfile as sf

from loadtest import ServerProcess

pytestmark = pytest.mark.browser

SR = 16000
TIMEOUT_S = 300


def _whistle(rng, seconds=1.5):
    t = np.arange(int(seconds * SR)) / SR
    return 0.5 * np.sin(2 * np.pi * rng.uniform(2000, 2400) * t) + 0.01 * rng.standard_normal(t.size)


def _clicks(rng, seconds=1.5):
    x = 0.01 * rng.standard_normal(int(seconds * SR))
    x[rng.integers(0, x.size, 40)] = 0.9
    return x


def _room(rng, seconds):
    return 0.05 * np.cumsum(rng.standard_normal(int(seconds * SR))) / 300


@pytest.fixture(scope="module")
def base(tmp_path_factory):
    import torch

    from asit_helpers import AsitForAudioClassification

    torch.manual_seed(0)
    path = tmp_path_factory.mktemp("base") / "tiny-fb"
    AsitForAudioClassification.from_backbone("tiny-fb", labels=["a", "b"]).save_pretrained(path)
    return path


@pytest.fixture(scope="module")
def server(base):
    with ServerProcess(base, threads=2, startup_timeout_s=400) as srv:  # a loaded CI machine starts slowly
        yield srv


def _files(folder, make, n, rng):
    folder.mkdir(parents=True, exist_ok=True)
    paths = []
    for i in range(n):
        paths.append(folder / f"{i}.wav")
        sf.write(paths[-1], make(rng).astype(np.float32), SR)
    return paths


def _wait(driver, condition, what):
    from selenium.webdriver.support.ui import WebDriverWait

    try:
        return WebDriverWait(driver, TIMEOUT_S, poll_frequency=0.2).until(lambda d: condition(d))
    except Exception as exc:
        status = driver.find_element("id", "teach-status").text
        raise AssertionError(f"timed out waiting for {what}; teach status={status!r}; "
                             f"console={driver.get_log('browser')}") from exc


def _mic(tmp_path, name, audio):
    path = tmp_path / name
    sf.write(path, np.tile(audio, 4).astype(np.float32), SR, subtype="PCM_16")  # the fake microphone loops it
    return path


def test_teach_two_classes_and_background_in_the_page_then_try_them(server, make_chrome, tmp_path):
    rng = np.random.default_rng(0)
    whistles = _files(tmp_path / "whistle", _whistle, 8, rng)
    clicks = _files(tmp_path / "clicks", _clicks, 8, rng)
    background = _files(tmp_path / "bg", lambda r: _room(r, 20.0), 1, rng)
    mic = _mic(tmp_path, "mic-whistle.wav", _whistle(rng, 3.0))
    driver = make_chrome(fake_mic_wav=mic)
    driver.get(server.url + "/")
    status = lambda d: d.find_element("id", "teach-status").text  # noqa: E731

    from selenium.webdriver.support.ui import Select

    for name, paths in (("whistle", whistles), ("clicks", clicks)):
        driver.find_element("id", "teach-name").send_keys(name)
        driver.find_element("id", "teach-add").click()
        _wait(driver, lambda d: f"Class {name} added" in status(d), f"class {name}")
        Select(driver.find_element("id", "teach-target")).select_by_value(name)
        driver.find_element("id", "teach-files").send_keys("\n".join(str(p) for p in paths))
        _wait(driver, lambda d: f"{name}/008.wav" in status(d), f"8 uploads into {name}")
    Select(driver.find_element("id", "teach-target")).select_by_value("background")
    driver.find_element("id", "teach-files").send_keys(str(background[0]))
    _wait(driver, lambda d: "background/001.wav" in status(d), "the background upload")
    counts = [e.text for e in driver.find_elements("css selector", "#teach-classes .teach-count")]
    assert [c.split()[0] for c in counts] == ["8", "8", "1"], counts

    # a bad recording is deleted from its row
    driver.find_element("css selector", "#teach-classes li[data-name='clicks'] .teach-delete").click()
    _wait(driver, lambda d: d.execute_script(  # read by script: the list is rebuilt, so elements go stale
        "return document.querySelector(\"#teach-classes li[data-name='clicks'] .teach-count\").textContent")
          .split()[0] == "7", "the deletion")

    driver.find_element("id", "teach-train").click()
    _wait(driver, lambda d: "Trained in" in status(d), "training")
    report = driver.find_element("id", "teach-report").text
    assert "clicks, whistle + no event" in report and "model ready in" in report, report
    if os.environ.get("ASIT_SCREENSHOTS"):
        driver.save_screenshot(os.environ["ASIT_SCREENSHOTS"] + "-page.png")

    driver.find_element("id", "teach-try").click()
    _wait(driver, lambda d: d.find_element("id", "teach-answer").text, "an answer")
    assert driver.find_element("id", "teach-answer").text.startswith("whistle"), \
        driver.find_element("id", "teach-answer").text
    assert [e for e in driver.get_log("browser") if e["level"] == "SEVERE"] == []

    # the page's session answers room noise (nothing happening) with "no event"
    import requests

    sid = driver.execute_script("return document.getElementById('teach').dataset.session")
    room = tmp_path / "room.wav"
    sf.write(room, _room(rng, 2.0).astype(np.float32), SR)
    answer = requests.post(f"{server.url}/teach/{sid}/predict", data=room.read_bytes(), timeout=30).json()
    assert answer["no_event"] and answer["label"] == "no event", answer
