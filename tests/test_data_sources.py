"""Downloads with only the network call faked: kagglehub's dataset_download and the ESC-50 HTTP fetch.
The recipes (ESC-50 → ESC-22, UrbanSound8K) are run on small trees with the real layouts."""

from __future__ import annotations

import json
import os
import stat
import zipfile
from pathlib import Path

import numpy as np
import pandas as pd
import pytest
import soundfile as sf

from asit_helpers import sources
from asit_helpers.data import ESC22, AudioCache, preprocess
from asit_helpers.sources import KaggleCredentialsError, download_esc50, download_kaggle, use_kaggle_json

SECRET = "s3cr3t-k3y-0123456789"


@pytest.fixture
def no_credentials(tmp_path, monkeypatch):
    """A process with no Kaggle credentials anywhere (env, ~/.kaggle, $KAGGLE_CONFIG_DIR)."""
    for var in ("KAGGLE_API_TOKEN", "KAGGLE_USERNAME", "KAGGLE_KEY"):
        monkeypatch.delenv(var, raising=False)
    home = tmp_path / "home"
    home.mkdir()
    monkeypatch.setenv("HOME", str(home))
    monkeypatch.setenv("USERPROFILE", str(home))
    monkeypatch.setenv("KAGGLE_CONFIG_DIR", str(home / ".kaggle"))
    monkeypatch.setenv("KAGGLEHUB_CACHE", str(tmp_path / "kagglehub-cache"))
    import kagglehub.config

    monkeypatch.setattr(kagglehub.config, "_kaggle_credentials", None, raising=False)
    return home


@pytest.fixture
def fake_kagglehub(monkeypatch, tmp_path):
    """Replace only the network call: record what kagglehub was asked for and return a local folder."""
    import kagglehub

    calls = []

    def dataset_download(handle, path=None, *, force_download=False, output_dir=None):
        calls.append({"handle": handle, "force_download": force_download, "output_dir": output_dir})
        folder = Path(output_dir) if output_dir else tmp_path / "kagglehub" / handle.replace("/", "_")
        folder.mkdir(parents=True, exist_ok=True)
        return str(folder)

    monkeypatch.setattr(kagglehub, "dataset_download", dataset_download)
    return calls


def test_missing_credentials_explain_every_way(no_credentials, fake_kagglehub):
    with pytest.raises(KaggleCredentialsError) as err:
        download_kaggle("chrisfilo/urbansound8k")
    text = str(err.value)
    for hint in ("KAGGLE_API_TOKEN", "KAGGLE_USERNAME", "KAGGLE_KEY", "Colab", "kaggle.json", "0600", "use_kaggle_json"):
        assert hint in text
    assert fake_kagglehub == []  # nothing was attempted


def test_cli_download_without_credentials_is_one_clear_message(no_credentials, fake_kagglehub, tmp_path, capsys):
    from asit_helpers.cli import main

    assert main(["download", "urbansound8k", str(tmp_path / "out")]) == 2
    err = capsys.readouterr().err
    assert "no Kaggle credentials" in err and "KAGGLE_API_TOKEN" in err and "Traceback" not in err


def test_download_asks_kagglehub_for_the_slug(no_credentials, fake_kagglehub, monkeypatch, tmp_path, capsys):
    monkeypatch.setenv("KAGGLE_USERNAME", "someone")
    monkeypatch.setenv("KAGGLE_KEY", SECRET)
    path = download_kaggle("chrisfilo/urbansound8k")
    assert fake_kagglehub[-1]["handle"] == "chrisfilo/urbansound8k" and path.is_dir()
    # Any slug works; the CLI recipe name maps to the UrbanSound8K slug and downloads into OUT.
    download_kaggle("someone/any-dataset/versions/3", force=True)
    assert fake_kagglehub[-1] == {"handle": "someone/any-dataset/versions/3", "force_download": True, "output_dir": None}
    from asit_helpers.cli import main

    assert main(["download", "urbansound8k", str(tmp_path / "out")]) == 0
    assert fake_kagglehub[-1]["handle"] == "chrisfilo/urbansound8k"
    assert Path(fake_kagglehub[-1]["output_dir"]).parent == tmp_path / "out"
    captured = capsys.readouterr()
    assert SECRET not in captured.out + captured.err
    with pytest.raises(ValueError, match="not a Kaggle dataset slug"):
        download_kaggle("not a slug")


def test_auth_failure_becomes_credentials_advice(no_credentials, monkeypatch):
    import kagglehub

    monkeypatch.setenv("KAGGLE_API_TOKEN", SECRET)

    def refuse(handle, **kwargs):
        raise RuntimeError("401 Client Error: Unauthorized for url: https://www.kaggle.com/api/v1/...")

    monkeypatch.setattr(kagglehub, "dataset_download", refuse)
    with pytest.raises(KaggleCredentialsError, match="refused the credentials") as err:
        download_kaggle("chrisfilo/urbansound8k")
    assert SECRET not in str(err.value)


def test_uploaded_kaggle_json_is_private_and_found(no_credentials, fake_kagglehub):
    target = use_kaggle_json(json.dumps({"username": "someone", "key": SECRET}).encode())
    assert target == no_credentials / ".kaggle" / "kaggle.json"
    assert json.loads(target.read_text()) == {"username": "someone", "key": SECRET}
    if os.name == "posix":
        assert stat.S_IMODE(target.stat().st_mode) == 0o600
    assert sources.kaggle_credentials_available()
    download_kaggle("chrisfilo/urbansound8k")
    assert fake_kagglehub[-1]["handle"] == "chrisfilo/urbansound8k"
    with pytest.raises(KaggleCredentialsError, match="username"):
        use_kaggle_json(b'{"user": "x"}')


# ---- ESC-50 / ESC-22 -------------------------------------------------------------------------------------------------


def _esc50_zip(path: Path) -> None:
    """A miniature ESC-50 archive with the real layout: ESC-50-master/meta/esc50.csv + audio/*.wav (44.1 kHz)."""
    rows = []
    classes = {"dog": 0, "rooster": 1, "siren": 42, "rain": 10, "laughing": 26}  # laughing is not in ESC-22
    rng = np.random.default_rng(0)
    with zipfile.ZipFile(path, "w") as zf:
        for name, target in classes.items():
            for fold in range(1, 6):
                src = f"{100 + target}{fold}"
                fname = f"{fold}-{src}-A-{target}.wav"
                import io

                buf = io.BytesIO()
                sf.write(buf, (0.1 * rng.standard_normal(4410)).astype(np.float32), 44100, format="WAV")
                zf.writestr(f"ESC-50-master/audio/{fname}", buf.getvalue())
                rows.append({"filename": fname, "fold": fold, "target": target, "category": name,
                             "esc10": False, "src_file": src, "take": "A"})
        zf.writestr("ESC-50-master/meta/esc50.csv", pd.DataFrame(rows).to_csv(index=False))
        zf.writestr("ESC-50-master/README.md", "ESC-50")


def test_esc50_download_and_esc22_recipe(tmp_path, monkeypatch):
    fetched = []

    def fake_http(url, target):
        fetched.append(url)
        _esc50_zip(target)

    monkeypatch.setattr(sources, "_http_download", fake_http)
    root = download_esc50(tmp_path / "data")
    assert fetched == [sources.ESC50_URL] and (root / "meta" / "esc50.csv").exists()
    assert not (tmp_path / "data" / "ESC-50-master.zip").exists()
    assert download_esc50(tmp_path / "data") == root and len(fetched) == 1  # already there: no second fetch

    with pytest.warns(UserWarning, match="not in the data"):  # the mini archive lacks most ESC-22 classes
        report = preprocess(root, tmp_path / "cache", workers=1, progress=False)
    assert report.classes == ["dog", "rooster", "siren", "rain"]  # ESC-22 subset, by ASiT category
    assert set(report.excluded["label"]) == {"laughing"}
    cache = AudioCache.open(tmp_path / "cache")
    cats = dict(zip(cache.manifest["label"], cache.manifest["category"]))
    assert all(cats[lab] == ESC22[lab] for lab in cats)
    m = cache.manifest
    assert set(m.loc[m["split"] == "test", "fold"]) == {"5"} and set(m.loc[m["split"] == "val", "fold"]) == {"4"}
    assert set(m["orig_sr"]) == {44100} and (m["length"] == 1600).all()


def test_esc22_is_the_curated_subset():
    assert len(ESC22) == 22
    assert pd.Series(ESC22).value_counts().to_dict() == {"Animals": 7, "Vehicles": 6, "Environmental": 5, "Birds": 4}


@pytest.mark.parametrize("layout", ["kaggle", "original"])
def test_urbansound8k_recipe(tmp_path, layout):
    """chrisfilo/urbansound8k (UrbanSound8K.csv + fold1..fold10) or the original archive (metadata/ + audio/):
    its 10-class labels, official folds split, and slices of one recording (fsID) grouped."""
    root = tmp_path / "us8k"
    audio = root if layout == "kaggle" else root / "audio"
    rows = []
    for fold in range(1, 11):
        for k, (cls, cid) in enumerate((("dog_bark", 3), ("siren", 8))):
            fs_id = 1000 + fold * 10 + k
            name = f"{fs_id}-{cid}-0-0.wav"
            (audio / f"fold{fold}").mkdir(parents=True, exist_ok=True)
            sf.write(audio / f"fold{fold}" / name, np.zeros(8000, dtype=np.float32) + 0.01, 22050)
            rows.append({"slice_file_name": name, "fsID": fs_id, "start": 0.0, "end": 0.36, "salience": 1,
                         "fold": fold, "classID": cid, "class": cls})
    csv = root / "UrbanSound8K.csv" if layout == "kaggle" else root / "metadata" / "UrbanSound8K.csv"
    csv.parent.mkdir(parents=True, exist_ok=True)
    pd.DataFrame(rows).to_csv(csv, index=False)
    report = preprocess(root, tmp_path / "cache", workers=1, progress=False)
    assert report.classes == ["dog_bark", "siren"] and len(report.kept) == 20
    m = report.kept
    assert set(m.loc[m["split"] == "test", "fold"]) == {"9", "10"}
    assert (m.groupby("group")["split"].nunique() == 1).all()
    assert dict(zip(m["label"], m["category"])) == {"dog_bark": "Animals", "siren": "Vehicles"}


def test_http_download_from_a_local_server(tmp_path):
    """The real urllib download path against a loopback server: a stale partial file does not corrupt the result."""
    import functools
    import http.server
    import threading

    served = tmp_path / "served"
    served.mkdir()
    _esc50_zip(served / "ESC-50-master.zip")
    class Quiet(http.server.SimpleHTTPRequestHandler):
        def log_message(self, *args):  # keep the test output clean
            pass

    handler = functools.partial(Quiet, directory=str(served))
    server = http.server.ThreadingHTTPServer(("127.0.0.1", 0), handler)
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    try:
        url = f"http://127.0.0.1:{server.server_address[1]}/ESC-50-master.zip"
        out = tmp_path / "data"
        out.mkdir()
        (out / "ESC-50-master.zip.part").write_bytes(b"stale bytes")  # this server ignores Range: start over
        root = download_esc50(out, url=url)
    finally:
        server.shutdown()
        server.server_close()
    assert (root / "meta" / "esc50.csv").exists() and len(list((root / "audio").glob("*.wav"))) == 25
    assert not (out / "ESC-50-master.zip.part").exists()
