"""The Colab paths with the stand-in ``google.colab`` (tests/colab_standin): the workspace on Drive, Kaggle
credentials through the picker, the two-line explanations, and the web page served from a notebook through the
(stand-in) port proxy, requested over real HTTP."""

from __future__ import annotations

import io
import json
import logging
import os
import re
import stat
import urllib.request
from pathlib import Path

import numpy as np
import pytest
import soundfile as sf

from colab_runtime import standin_in_process

from asit_helpers import colab, messages, notebooks, sources

SECRET = "0123456789abcdef-not-a-real-key-but-unmistakable"


@pytest.fixture
def standin():
    with standin_in_process() as google_colab:
        yield google_colab


@pytest.fixture
def content(tmp_path, monkeypatch):
    """A fresh Colab runtime's /content, as the working folder, and a private ~/.kaggle."""
    folder = tmp_path / "content"
    folder.mkdir()
    monkeypatch.chdir(folder)
    monkeypatch.setattr(colab, "CONTENT", folder)
    monkeypatch.setenv("KAGGLE_CONFIG_DIR", str(tmp_path / "home" / ".kaggle"))
    for var in ("KAGGLE_API_TOKEN", "KAGGLE_USERNAME", "KAGGLE_KEY"):
        monkeypatch.delenv(var, raising=False)
    import kagglehub.config

    monkeypatch.setattr(kagglehub.config, "_kaggle_credentials", None, raising=False)
    return folder


def _wav(samples, sr=16000) -> bytes:
    buf = io.BytesIO()
    sf.write(buf, samples, sr, format="WAV")
    return buf.getvalue()


# ---- the stand-in itself ----------------------------------------------------------------------------------------


def test_standin_does_what_colab_does(standin, content, tmp_path, monkeypatch, capsys):
    assert colab.in_colab()
    monkeypatch.setenv("COLAB_STANDIN_DRIVE", str(tmp_path / "my-drive"))
    standin.drive.mount(str(content / "drive"))
    assert (content / "drive" / "MyDrive").is_dir() and "Mounted at" in capsys.readouterr().out
    standin.files.will_pick({"a.txt": b"hello"})
    assert standin.files.upload() == {"a.txt": b"hello"}
    assert (content / "a.txt").read_bytes() == b"hello"  # Colab's uploader leaves a copy in the working folder
    standin.files.will_pick(None)
    assert standin.files.upload() == {}  # cancelled
    with pytest.raises(standin.userdata.SecretNotFoundError):
        standin.userdata.get("KAGGLE_API_TOKEN")
    standin.userdata.set_secret("KAGGLE_API_TOKEN", SECRET, access=False)
    with pytest.raises(standin.userdata.NotebookAccessError):
        standin.userdata.get("KAGGLE_API_TOKEN")
    # kagglehub asks Colab's secrets itself; a refused secret is "no credentials", not a crash
    assert sources.kaggle_credentials_available() is False


# ---- the workspace, in Colab ------------------------------------------------------------------------------------


def test_workspace_in_colab_lives_in_content_or_on_drive(standin, content, tmp_path, monkeypatch):
    assert notebooks.workspace().root == (content / "asit").resolve()
    with pytest.raises(messages.LessonStop) as stop:
        notebooks.workspace(use_drive=True)
    assert stop.value._render_traceback_() == [
        f"USE_DRIVE = True, but Google Drive is not mounted at {content / 'drive'}.",
        "Run the Drive cell above (it asks you to allow access), then this cell again; or set USE_DRIVE = False.",
    ]
    monkeypatch.setenv("COLAB_STANDIN_DRIVE", str(tmp_path / "my-drive"))
    standin.drive.mount(str(content / "drive"))
    ws = notebooks.workspace(use_drive=True)
    assert ws.root == (tmp_path / "my-drive" / "asit").resolve()  # on "Drive": the next runtime finds it
    assert notebooks.workspace(tmp_path / "elsewhere", use_drive=True).root == (tmp_path / "elsewhere").resolve()


def test_setup_enables_the_widget_manager_and_prints_one_line(standin, capsys):
    assert colab.setup() is True
    out = capsys.readouterr().out
    assert out.count("\n") == 1 and out.startswith("ASiT ") and "Colab runtime" in out
    assert standin.output._widgets._installed_url  # what anywidget and the display hook read


# ---- credentials ------------------------------------------------------------------------------------------------


def _no_world_readable_copy(root: Path, secret: str) -> list[Path]:
    leaks = []
    for path in root.rglob("*"):
        if path.is_file() and secret.encode() in path.read_bytes():
            if stat.S_IMODE(path.stat().st_mode) & 0o077:
                leaks.append(path)
    return leaks


def test_uploaded_kaggle_json_is_installed_private_and_the_copy_removed(standin, content, tmp_path, capsys, caplog):
    caplog.set_level(logging.DEBUG)
    creds = json.dumps({"username": "student", "key": SECRET}).encode()
    standin.files.will_pick({"kaggle.json": creds})
    installed = colab.upload_kaggle_json()
    target = tmp_path / "home" / ".kaggle" / "kaggle.json"
    assert installed == target and json.loads(target.read_text())["key"] == SECRET
    if os.name == "posix":
        assert stat.S_IMODE(target.stat().st_mode) == 0o600
        assert _no_world_readable_copy(tmp_path, SECRET) == []
    assert not (content / "kaggle.json").exists()  # the uploader's copy in /content is gone
    assert sources.kaggle_credentials_available()
    # Kaggle refusing the key, or being unreachable: explained, and the key appears nowhere
    with pytest.raises(Exception) as err:
        sources.download_kaggle("someone/some-dataset")
    explanation = messages.brief(err.value, action="download someone/some-dataset from Kaggle")
    assert explanation is not None and "No network" in explanation.what
    printed = capsys.readouterr()
    assert "readable only by you" in printed.out and "was removed" in printed.out
    everything = printed.out + printed.err + caplog.text + str(err.value) + str(explanation)
    assert SECRET not in everything


@pytest.mark.parametrize("name, data, kind", [
    ("song.wav", _wav(np.zeros(1600, np.float32)), "song.wav is not a kaggle.json: it is a WAV file."),
    ("notes.txt", b"hello there, this is not json", "notes.txt is not a kaggle.json: it is a text file that is not JSON."),
    ("other.json", b'{"user": "x", "token": "y"}', 'other.json is not a kaggle.json: it is JSON without "username" and "key".'),
])
def test_a_wrong_file_is_named_as_a_wrong_file(standin, content, name, data, kind):
    standin.files.will_pick({name: data})
    with pytest.raises(messages.LessonStop) as stop:
        colab.upload_kaggle_json()
    what, todo = stop.value._render_traceback_()
    assert what == f"{kind} The uploaded copy ({content / name}) was removed."
    assert "kaggle.json" in todo and "KAGGLE_API_TOKEN" in todo
    assert not (content / name).exists()
    assert "hello" not in what and '"token"' not in what  # never quotes the file's contents


def test_cancelled_picker_installs_nothing(standin, content, tmp_path, capsys):
    standin.files.will_pick(None)
    assert colab.upload_kaggle_json() is None
    assert "No file chosen" in capsys.readouterr().out
    assert not (tmp_path / "home" / ".kaggle" / "kaggle.json").exists()


# ---- two-line explanations --------------------------------------------------------------------------------------


def test_no_network_is_two_lines_naming_the_way_out():
    import urllib.error

    try:
        try:
            raise OSError(-2, "Name or service not known")
        except OSError as low:
            import socket

            raise urllib.error.URLError(socket.gaierror(-2, "Name or service not known")) from low
    except urllib.error.URLError as exc:
        e = messages.brief(exc, action="download ESC-50 from GitHub")
        assert messages.explain(exc) is not None  # the CLI's form recognises the same failure
    assert str(e).count("\n") == 1
    assert e.what == "No network: could not download ESC-50 from GitHub (the name server could not be reached)."
    assert "OFFLINE = True" in e.todo
    assert messages.brief(ValueError("a bug"), action="x") is None  # unexpected errors stay tracebacks
    refused = messages.brief(ConnectionRefusedError(), action="reach the API")
    assert "connection refused" in refused.what


def test_no_hub_fails_at_once_in_two_lines(tmp_path, monkeypatch):
    """Hugging Face Hub unreachable (it is, on this machine) and the model not cached: no retries, two lines."""
    import time

    from huggingface_hub import constants, hf_api

    monkeypatch.setattr(constants, "ENDPOINT", "http://127.0.0.1:9")  # a closed port: unreachable for sure
    monkeypatch.setattr(hf_api.api, "endpoint", "http://127.0.0.1:9")
    monkeypatch.setattr(constants, "HF_HUB_CACHE", str(tmp_path / "hub"))
    started = time.perf_counter()
    with pytest.raises(messages.LessonStop) as stop:
        notebooks.check_backbone("base", offline=False)
    assert time.perf_counter() - started < 10
    what, todo = stop.value._render_traceback_()
    assert what == "The Hugging Face Hub is unreachable, and facebook/wav2vec2-base is not in the local cache."
    assert "hf download facebook/wav2vec2-base" in todo and "OFFLINE = True" in todo
    notebooks.check_backbone("base", offline=True)  # offline: the tiny preset, nothing to fetch
    notebooks.check_backbone("tiny-fb", offline=False)


# ---- the web page from a notebook, through the (stand-in) Colab proxy ---------------------------------------------


def _get(url: str) -> tuple[int, str, bytes]:
    with urllib.request.urlopen(url, timeout=30) as resp:
        return resp.status, resp.headers.get_content_type(), resp.read()


def _post_wav(url: str, data: bytes) -> dict:
    req = urllib.request.Request(url, data=data, headers={"Content-Type": "audio/wav"}, method="POST")
    with urllib.request.urlopen(req, timeout=60) as resp:
        return json.loads(resp.read())


def test_serve_in_notebook_through_the_colab_proxy(standin, tiny_checkpoint):
    from asit_helpers import serve_in_notebook  # exported at the package's top level

    handle = serve_in_notebook(tiny_checkpoint)
    try:
        [exposed] = standin.output.exposed
        assert exposed["kind"] == "window" and exposed["port"] == handle.port and exposed["path"] == "/"
        page_url = exposed["url"]
        assert page_url.endswith(f"/port/{handle.port}/")  # under a path prefix: only relative links work
        status, ctype, body = _get(page_url)
        assert status == 200 and ctype == "text/html"
        html = body.decode()
        links = re.findall(r'(?:src|href)="([^"]+)"', html)
        assert links and not [link for link in links if link.startswith("/") and not link.startswith("data:")]
        for link in links:
            if not link.startswith("data:"):
                assert _get(page_url + link)[0] == 200, link
        app_js = _get(page_url + "static/app.js")[2].decode()
        assert 'fetch("predict"' in app_js and 'fetch("/' not in app_js
        clip = np.sin(2 * np.pi * 700 * np.arange(32000) / 16000).astype(np.float32) * 0.3
        via_proxy = _post_wav(page_url + "predict", _wav(clip))
        direct = _post_wav(handle.url + "predict", _wav(clip))
        assert via_proxy["label"] == direct["label"] and len(via_proxy["top_k"]) >= 1
        assert standin.output.eval_js(f"google.colab.kernel.proxyPort({handle.port})") == page_url
    finally:
        handle.stop()
    with pytest.raises(OSError):
        _get(handle.url)
    handle.stop()  # twice: harmless
    # after a stop, and twice in a row: each start works, and a new one replaces the old
    again = serve_in_notebook(tiny_checkpoint, iframe=True)
    third = serve_in_notebook(tiny_checkpoint)
    try:
        assert not again.running and third.running
        assert _get(third.url)[0] == 200
        assert [e["kind"] for e in standin.output.exposed[1:]] == ["window", "iframe", "window"]
        third.stop()
        third.start()  # restart: same port when free, so an open tab keeps working
        assert _get(third.url)[0] == 200
    finally:
        third.stop()


def test_serve_in_notebook_elsewhere_shows_a_link(tiny_checkpoint):
    from asit_helpers import serve_in_notebook

    assert not colab.in_colab()
    handle = serve_in_notebook(tiny_checkpoint, show=False)
    try:
        assert handle.url.startswith("http://127.0.0.1:") and _get(handle.url)[0] == 200
        handle.show()  # outside a kernel IPython's display prints the link; it must not need Colab
    finally:
        handle.stop()


@pytest.mark.browser
def test_the_proxied_page_works_in_a_browser(standin, tiny_checkpoint, make_chrome, tmp_path):
    """Chromium opens the page at the stand-in proxy's URL (a path prefix), uploads a clip and gets the
    prediction: scripts, styles and /predict all resolve under the prefix. Saves a screenshot
    (``$ASIT_COLAB_SCREENSHOT`` to keep it)."""
    from selenium.webdriver.support.ui import WebDriverWait

    from asit_helpers import serve_in_notebook

    handle = serve_in_notebook(tiny_checkpoint)
    try:
        page_url = standin.output.exposed[-1]["url"]
        clip = tmp_path / "siren.wav"
        t = np.arange(3 * 16000) / 16000
        sf.write(clip, (0.3 * np.sin(2 * np.pi * (600 + 300 * np.sin(2 * np.pi * 0.5 * t)) * t)).astype(np.float32), 16000)
        driver = make_chrome()
        driver.get(page_url)
        state = lambda: driver.execute_script("return document.body.dataset.state")  # noqa: E731
        WebDriverWait(driver, 60, poll_frequency=0.1).until(lambda d: state() == "idle")
        driver.find_element("id", "file-input").send_keys(str(clip))
        WebDriverWait(driver, 60, poll_frequency=0.1).until(lambda d: state() in ("done", "error"))
        error = driver.execute_script("return document.getElementById('error').hidden ? null : "
                                      "document.getElementById('error').textContent")
        assert state() == "done" and error is None, error
        label = driver.find_element("id", "result-label").text
        known = list(json.loads((Path(tiny_checkpoint) / "config.json").read_text())["id2label"].values())
        assert label in known + ["no event"]  # the page shows the energy gate's no-event answer as such
        css = driver.execute_script("return getComputedStyle(document.querySelector('main')).maxWidth")
        assert css != "none"  # style.css loaded through the proxy
        shot = Path(os.environ.get("ASIT_COLAB_SCREENSHOT") or tmp_path / "proxied-page.png")
        driver.save_screenshot(str(shot))
        assert shot.stat().st_size > 10_000
    finally:
        handle.stop()


# ---- 06's Colab upload --------------------------------------------------------------------------------------------


def test_colab_upload_shows_every_file_clears_on_cancel_and_names_a_silent_file(standin, content, tiny_checkpoint):
    from asit_helpers.widgets import AsitDemo

    demo = AsitDemo(tiny_checkpoint)
    tone = (0.3 * np.sin(2 * np.pi * 700 * np.arange(32000) / 16000)).astype(np.float32)
    standin.files.will_pick({"a.wav": _wav(tone), "silent.wav": _wav(np.zeros(16000, np.float32)),
                             "b.wav": _wav(tone[::-1].copy())})
    a, silent, b = demo.upload_from_colab()
    assert a is not None and silent is None and b is not None
    for name in ("a.wav", "silent.wav", "b.wav"):  # every picked file has its row
        assert name in demo.batch.value
    assert "silent.wav is a silent file (all samples are zero)" in demo.batch.value
    assert "microphone" not in demo.batch.value
    assert demo.message_text == "3 files: 2 classified, 1 refused (see the table)."
    assert demo.prediction is b  # the player and plot show the last one
    standin.files.will_pick(None)  # the picker cancelled: nothing old stays on screen
    assert demo.upload_from_colab() == []
    assert demo.batch.value == "" and demo.result.value == "" and demo.prediction is None
    assert demo.message_text == "No file chosen."


@pytest.mark.slow
def test_the_package_builds_without_deprecation_warnings(tmp_path):
    """What Colab's setup cell does: build the package from the repository (in pip's isolated build environment,
    with the current setuptools from PyPI). No setuptools deprecation warning, and the licence is the SPDX form."""
    import subprocess
    import sys
    import zipfile

    import shutil

    root = Path(__file__).resolve().parent.parent
    src = tmp_path / "src"  # a copy: building in the checkout would leave build/ and *.egg-info behind
    shutil.copytree(root / "asit_helpers", src / "asit_helpers", ignore=shutil.ignore_patterns("__pycache__"))
    for name in ("pyproject.toml", "README.md"):
        shutil.copy(root / name, src / name)
    done = subprocess.run([sys.executable, "-m", "pip", "wheel", "--no-deps", "-w", str(tmp_path), str(src)],
                          capture_output=True, text=True, cwd=tmp_path)
    assert done.returncode == 0, done.stdout + done.stderr
    output = done.stdout + done.stderr
    assert "deprecated" not in output.lower() and "Warning" not in output, output
    [wheel] = tmp_path.glob("asit_helpers-*.whl")
    with zipfile.ZipFile(wheel) as zf:
        metadata = zf.read(next(n for n in zf.namelist() if n.endswith("METADATA"))).decode()
    assert "License-Expression: MIT" in metadata


def test_no_kaggle_credentials_is_two_lines_in_a_notebook(content, tmp_path):
    """01 with a Kaggle slug and no credentials anywhere (the upload cell skipped): what is missing, where to add it."""
    ws = notebooks.workspace(tmp_path / "work")
    with pytest.raises(messages.LessonStop) as stop:
        notebooks.fetch_source(ws, "someone/some-dataset", offline=False)
    what, todo = stop.value._render_traceback_()
    assert what == "no Kaggle credentials found for downloading 'someone/some-dataset'."
    assert todo == sources.KAGGLE_TODO and "KAGGLE_API_TOKEN" in todo and 'DATASET = "esc22"' in todo
