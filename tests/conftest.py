"""Shared fixtures: a tiny saved checkpoint, generated audio, and a headless Chromium with a fake microphone.

Browser tests need Debian's ``chromium`` and ``chromium-driver``. Without them they skip with a message; with
``ASIT_REQUIRE_BROWSER=1`` (set by ``.ci/run``) they fail instead, so CI can't pass by skipping them.
"""

from __future__ import annotations

import os
import shutil
from pathlib import Path

import numpy as np
import pytest
import soundfile as sf

LABELS = ["dog", "cat", "siren", "rain", "crow"]
BROWSER_HINT = (
    "browser tests need Chromium + ChromeDriver: `sudo apt-get install chromium chromium-driver` "
    "(set ASIT_REQUIRE_BROWSER=1 to make a missing browser an error)"
)


def tone(freq: float = 1000.0, seconds: float = 1.0, sr: int = 16000, channels: int = 1, amp: float = 0.3) -> np.ndarray:
    """A sine tone, shape (samples,) or (samples, channels), float32."""
    t = np.arange(int(seconds * sr)) / sr
    x = (amp * np.sin(2 * np.pi * freq * t)).astype(np.float32)
    return x if channels == 1 else np.repeat(x[:, None], channels, axis=1)


@pytest.fixture(scope="session")
def tiny_checkpoint(tmp_path_factory) -> Path:
    """A random-initialised tiny ASiT model saved with save_pretrained (5 labels, attention pooling)."""
    import torch

    from asit_helpers import AsitForAudioClassification

    torch.manual_seed(0)
    model = AsitForAudioClassification.from_backbone("tiny", labels=LABELS)
    path = tmp_path_factory.mktemp("ckpt") / "tiny"
    model.save_pretrained(path)
    return path


@pytest.fixture
def wav_file(tmp_path) -> Path:
    path = tmp_path / "tone.wav"
    sf.write(path, tone(seconds=2.0), 16000)
    return path


def _find_browser() -> tuple[str, str] | None:
    chromium = shutil.which("chromium") or shutil.which("chromium-browser") or shutil.which("google-chrome")
    driver = shutil.which("chromedriver")
    return (chromium, driver) if chromium and driver else None


@pytest.fixture(scope="session")
def browser_paths() -> tuple[str, str]:
    found = _find_browser()
    if found is None:
        if os.environ.get("ASIT_REQUIRE_BROWSER") == "1":
            pytest.fail("ASIT_REQUIRE_BROWSER=1 but Chromium/ChromeDriver were not found. " + BROWSER_HINT)
        pytest.skip(BROWSER_HINT)
    return found


@pytest.fixture
def make_chrome(browser_paths, tmp_path):
    """Factory: ``make_chrome(fake_mic_wav=None)`` → a selenium Chrome driver (headless, loopback only).

    With ``fake_mic_wav`` the page's getUserMedia gets that WAV as the microphone, and the permission prompt is
    auto-accepted. Drivers are closed at the end of the test.
    """
    from selenium import webdriver
    from selenium.webdriver.chrome.service import Service

    chromium, driver_path = browser_paths
    drivers = []

    def factory(fake_mic_wav: Path | None = None):
        opts = webdriver.ChromeOptions()
        opts.binary_location = chromium
        for flag in (
            "--headless=new",
            "--no-sandbox",
            "--disable-gpu",
            "--disable-dev-shm-usage",
            "--no-first-run",
            "--disable-background-networking",
            "--disable-component-update",
            "--disable-sync",
            "--window-size=1280,1000",
            f"--user-data-dir={tmp_path / f'chrome-profile-{len(drivers)}'}",
        ):
            opts.add_argument(flag)
        if fake_mic_wav is not None:
            opts.add_argument("--use-fake-device-for-media-stream")
            opts.add_argument("--use-fake-ui-for-media-stream")
            opts.add_argument(f"--use-file-for-fake-audio-capture={fake_mic_wav}")
        drv = webdriver.Chrome(service=Service(driver_path), options=opts)
        drivers.append(drv)
        return drv

    yield factory
    for drv in drivers:
        try:
            drv.quit()
        except Exception:  # a crashed browser must not hide the test's own failure
            pass


@pytest.fixture(scope="session")
def train_cache(tmp_path_factory):
    """A small real cache for the training/evaluation tests: synth → preprocess, 4 classes × 8 clips of 2 s
    (train 22 / val 5 / test 5), with true event times and SNRs in the manifest."""
    from asit_helpers.data import AudioCache, preprocess
    from asit_helpers.synth import make_soundscapes

    root = tmp_path_factory.mktemp("train_data")
    make_soundscapes(root / "synth", clips_per_class=8, classes=["dog", "siren", "rain", "crow"], seconds=2.0,
                     seed=0, progress=False)
    preprocess(root / "synth", root / "cache", clip_seconds=2.0, workers=1, progress=False)
    return AudioCache.open(root / "cache")


@pytest.fixture(scope="session")
def smoke_suite(tmp_path_factory):
    """The notebook suite executed once per session the way CI and `make demo` run it (`asit demo --smoke`).
    The tests that read executed notebooks share this one run. Attributes: ``out`` (the workspace), ``printed``
    (what the command printed), ``sources_before`` (sha256 of each source notebook before the run)."""
    import contextlib
    import hashlib
    import io
    from types import SimpleNamespace

    from asit_helpers.cli import main

    nb_dir = Path(__file__).resolve().parent.parent / "notebooks"
    before = {p.name: hashlib.sha256(p.read_bytes()).hexdigest() for p in sorted(nb_dir.glob("*.ipynb"))}
    out = tmp_path_factory.mktemp("suite") / "outputs"
    printed = io.StringIO()
    with contextlib.redirect_stdout(printed):
        code = main(["demo", "--out", str(out), "--smoke"])
    assert code == 0, printed.getvalue()
    return SimpleNamespace(out=out, printed=printed.getvalue(), sources_before=before)


@pytest.fixture(scope="session")
def teach_base(tmp_path_factory) -> Path:
    """A tiny-fb trained from scratch on 4 synthetic classes (24 clips of 2 s each; ~1 min): the stand-in for a
    pretrained backbone that the Teach panel's and widget's browser tests teach new sounds on. (An untrained
    tiny-fb's frames were measured too weak for their sounds: cross-validated 0.57-0.93, whistles missed.)"""
    import torch

    from asit_helpers.data import AudioCache, preprocess
    from asit_helpers.synth import make_soundscapes
    from asit_helpers.train import train

    root = tmp_path_factory.mktemp("teach_base")
    make_soundscapes(root / "synth", clips_per_class=24, classes=["siren", "dog", "rain", "crow"], seconds=2.0,
                     seed=0, progress=False)
    preprocess(root / "synth", root / "cache", clip_seconds=2.0, workers=1, progress=False)
    torch.manual_seed(0)
    result = train(AudioCache.open(root / "cache"), root / "ck", preset="tiny-fb", epochs=25, progress=False)
    assert result.best_metrics["val_accuracy"] >= 0.8, result.best_metrics  # else the teach tests mean nothing
    return result.checkpoint
