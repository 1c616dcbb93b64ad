"""The Teach widget in a real browser: JupyterLab on loopback, headless Chromium with a fake microphone.

A workspace holds 8 recordings each of a whistle and a buzz and 20 s of the room (as the widget saves recordings;
the sounds of ``test_teach_browser``); the notebook shows a ``TeachWidget`` on it; the browser clicks **Train**, then
the taught model's **Listen** (the live mode's widget) streams the fake microphone (both sounds over the room) to the
kernel: the timeline names both taught classes and "no event", and the attention curve is drawn. The page's test
scores the same flow against the events' times; this one shows the widget's flow works end to end.
"""

from __future__ import annotations

import json
import os

import numpy as np
import pytest

from test_teach_browser import FILE_S, _example, _room, microphone_wav
from test_widget_browser import KERNEL, _wait, jupyter_lab, open_and_run  # noqa: F401 (a fixture)

pytestmark = [pytest.mark.browser, pytest.mark.slow]


def _notebook(path, base, workspace) -> None:
    source = (
        "from asit_helpers.teach_widget import TeachWidget\n"
        f"teacher = TeachWidget({str(base)!r}, {str(workspace)!r})\n"
        "display(teacher)"
    )
    nb = {"cells": [{"cell_type": "code", "execution_count": None, "id": "teach", "metadata": {}, "outputs": [],
                     "source": source}],
          "metadata": {"kernelspec": {"name": KERNEL, "display_name": "ASiT test", "language": "python"}},
          "nbformat": 4, "nbformat_minor": 5}
    path.write_text(json.dumps(nb), encoding="utf-8")


def test_teach_widget_trains_then_listens_in_jupyterlab(jupyter_lab, make_chrome, teach_base, tmp_path):
    from selenium.webdriver.common.by import By

    from asit_helpers.teach import TeachWorkspace

    root = jupyter_lab[2]
    rng = np.random.default_rng(0)
    ws = TeachWorkspace(root / "teach-ws")
    for name in ("whistle", "buzz"):
        ws.add_class(name)
        for _ in range(8):
            ws.add_recording(name, _example(name, rng).astype(np.float32), f"{name}.wav")
    ws.add_recording("background", _room(rng, 20.0).astype(np.float32), "room.wav")
    mic = tmp_path / "microphone.wav"
    microphone_wav(mic)
    _notebook(root / "teach.ipynb", teach_base, ws.root)
    driver = make_chrome(fake_mic_wav=mic)

    diagnostics = open_and_run(driver, jupyter_lab, "teach.ipynb")
    train = _wait(lambda: driver.find_element(By.XPATH, "//button[normalize-space(.)='Train']"), 180,
                  "the Teach widget to render", diagnostics)
    counts = _wait(lambda: [e.text for e in driver.find_elements(By.CSS_SELECTOR, ".asit-teach-class .asit-count")],
                   30, "the class rows", diagnostics)
    assert counts == ["8", "8", "1"], counts  # buzz, whistle, background: what the workspace holds
    train.click()
    _wait(lambda: "model ready in" in driver.find_element(By.CSS_SELECTOR, "body").text, 300, "training",
          diagnostics)
    listen = _wait(lambda: driver.find_element(By.CSS_SELECTOR, ".asit-listen .asit-listen-start"), 60,
                   "the Listen button under the report", diagnostics)
    listen.click()
    state = "const el = document.querySelector('.asit-listen').parentElement; const L = el.__asitListen; "
    _wait(lambda: driver.execute_script(state + "return L && L.timeline ? L.timeline.nowS : 0") >= FILE_S + 3.0,
          FILE_S + 120, "a pass of the microphone's file", diagnostics)
    seen = driver.execute_script(state + "return {labels: L.listener.info.labels, verdicts: L.timeline.verdicts(), "
                                 "wave: Number(el.querySelector('.asit-wave').dataset.attentionPoints || 0), "
                                 "rows: el.querySelector('.asit-timeline').dataset.rows};")
    if os.environ.get("ASIT_SCREENSHOTS"):
        driver.execute_script("document.querySelectorAll('.Toastify').forEach((e) => e.remove());"  # JupyterLab's news
                              "document.querySelector('.asit-listen').scrollIntoView({block: 'end'})")
        driver.save_screenshot(os.environ["ASIT_SCREENSHOTS"] + "-widget.png")
    driver.find_element(By.CSS_SELECTOR, ".asit-listen .asit-listen-stop").click()
    status = lambda: driver.find_element(By.CSS_SELECTOR, ".asit-listen .asit-status").text  # noqa: E731
    _wait(lambda: status().startswith("Stopped:"), 30, "Stop", diagnostics)

    assert seen["labels"] == ["buzz", "whistle", "no event"]
    shown = [v["label"] for v in seen["verdicts"]]
    share = {label: shown.count(label) / len(shown) for label in set(shown)}
    print(f"\nTeach widget, listening with the taught model: share of the timeline per answer {share}")
    # one pass: 2 x 1.5 s of each sound in ~26 s of the room
    assert {"whistle", "buzz", "no event"} <= set(shown), share
    assert share["no event"] > 0.5, share
    assert seen["wave"] > 10
    assert set(seen["rows"].split("|")) <= {"whistle", "buzz"}, seen["rows"]  # "no event" is a band, not a class row
    assert not driver.find_elements(By.CSS_SELECTOR, ".asit-message.asit-error"), diagnostics()
