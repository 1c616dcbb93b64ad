"""Downloads: any Kaggle dataset through kagglehub, and ESC-50 from its public GitHub archive.

    from asit_helpers.sources import download_kaggle, download_esc50
    root = download_kaggle("chrisfilo/urbansound8k")        # a folder; pass it to data.preprocess
    esc = download_esc50("data")                            # data/ESC-50-master (meta/esc50.csv + audio/)

Kaggle credentials are whatever kagglehub finds: ``KAGGLE_API_TOKEN``, or ``KAGGLE_USERNAME`` + ``KAGGLE_KEY``,
Colab secrets of those names, ``~/.kaggle/access_token`` or ``~/.kaggle/kaggle.json`` (``$KAGGLE_CONFIG_DIR``);
:func:`use_kaggle_json` saves an uploaded kaggle.json there with mode 0600. Secrets are never printed, logged or
written anywhere else. A downloaded folder may be a read-only mount (Colab's ``/kaggle/input``): ASiT only reads it.
"""

from __future__ import annotations

import json
import os
import re
import shutil
import zipfile
from pathlib import Path

__all__ = [
    "KaggleCredentialsError",
    "CREDENTIALS_HELP",
    "KAGGLE_TODO",
    "RECIPES",
    "kaggle_credentials_available",
    "use_kaggle_json",
    "download_kaggle",
    "download_esc50",
    "download",
]

ESC50_URL = "https://github.com/karoldvl/ESC-50/archive/master.zip"
#: Named recipes for ``asit download``: what they fetch and from where.
RECIPES = {
    "esc50": "ESC-50 from GitHub (2,000 clips, 50 classes, 5 folds); preprocess keeps the ESC-22 subset",
    "esc22": "same download as esc50 (ESC-22 is its default class map)",
    "urbansound8k": "UrbanSound8K from Kaggle (chrisfilo/urbansound8k; 8,732 clips, 10 classes, 10 folds)",
}
_SLUG = re.compile(r"^[\w.-]+/[\w.-]+(/versions/\d+)?$")

CREDENTIALS_HELP = """\
Kaggle needs your API credentials. Provide them in one of these ways (kaggle.com → Settings → API):
  1. environment variable KAGGLE_API_TOKEN=<token>  (or KAGGLE_USERNAME=<user> and KAGGLE_KEY=<key>);
  2. in Google Colab: add a secret KAGGLE_API_TOKEN (or KAGGLE_USERNAME + KAGGLE_KEY) in the key-icon panel
     and allow this notebook to access it;
  3. a file ~/.kaggle/kaggle.json ({"username": ..., "key": ...}) or ~/.kaggle/access_token
     (or the same files under $KAGGLE_CONFIG_DIR);
  4. in a notebook: upload your kaggle.json and call asit_helpers.sources.use_kaggle_json(<path or bytes>),
     which stores it as ~/.kaggle/kaggle.json readable only by you (mode 0600).
Never paste a key into a notebook cell or commit it to a repository."""


#: The "what to do" line of a missing or refused credential (the long version is :data:`CREDENTIALS_HELP`).
KAGGLE_TODO = ("Add a Colab secret named KAGGLE_API_TOKEN (key icon, left bar; kaggle.com → Settings → API) or "
               "upload your kaggle.json, then run the cell again; ESC-50 (DATASET = \"esc22\") needs no account.")


class KaggleCredentialsError(RuntimeError):
    """No usable Kaggle credentials, refused ones, or a file that is not a kaggle.json.

    ``what`` (what failed) and ``todo`` (what to do) are one line each: the notebooks show just those two
    (:mod:`asit_helpers.messages`); ``str()`` adds ``help`` (every way to provide credentials) for the CLI.
    None of them ever contains a secret.
    """

    def __init__(self, what: str, todo: str = KAGGLE_TODO, help: str = ""):
        self.what, self.todo, self.help = what, todo, help
        super().__init__("\n".join([what, todo] + (["", help] if help else [])))


def _kagglehub_credentials():
    """kagglehub's own credential lookup (env, files, Colab secrets), so we accept exactly what it accepts."""
    from kagglehub.config import get_kaggle_credentials

    try:
        return get_kaggle_credentials()
    except ValueError as exc:  # a malformed kaggle.json: kagglehub's message names the file, not its contents
        raise KaggleCredentialsError(f"{exc}.", "Replace it with a fresh kaggle.json from kaggle.com → Settings → "
                                     "API, or delete it and add a Colab secret KAGGLE_API_TOKEN.", CREDENTIALS_HELP) from None


def kaggle_credentials_available() -> bool:
    """Whether kagglehub will find credentials (never returns or prints them)."""
    return _kagglehub_credentials() is not None


def _credentials_dir() -> Path:
    return Path(os.environ.get("KAGGLE_CONFIG_DIR") or Path.home() / ".kaggle")


_MAGIC = ((b"RIFF", "a WAV file"), (b"fLaC", "a FLAC file"), (b"OggS", "an Ogg audio file"), (b"ID3", "an MP3 file"),
          (b"\xff\xfb", "an MP3 file"), (b"PK\x03\x04", "a zip archive"), (b"%PDF", "a PDF"),
          (b"\x89PNG", "a PNG image"), (b"\xff\xd8\xff", "a JPEG image"))
_PICK_KAGGLE_JSON = ("Pick the kaggle.json that kaggle.com → Settings → API → \"Create Legacy API Key\" downloads (it "
                     "holds \"username\" and \"key\"), or add a Colab secret KAGGLE_API_TOKEN instead.")


def _not_kaggle_json(name: str, raw: bytes) -> KaggleCredentialsError | None:
    """Why ``raw`` is not a kaggle.json, judged from its first bytes and structure only (never quoting them)."""
    kind = next((k for magic, k in _MAGIC if raw.startswith(magic)), None)
    if kind is None:
        try:
            text = raw.decode("utf-8")
        except UnicodeDecodeError:
            kind = "a binary file"
        else:
            try:
                creds = json.loads(text)
            except json.JSONDecodeError:
                if text.strip() and len(text.split()) == 1:  # one word: likely a new-style API token
                    return KaggleCredentialsError(
                        f"{name} is not a kaggle.json: it holds a single word, like a new-style API token.",
                        "Add that token as a Colab secret named KAGGLE_API_TOKEN (key icon, left bar) instead of "
                        "uploading it; never paste it into a cell.")
                kind = "an empty file" if not text.strip() else "a text file that is not JSON"
            else:
                if isinstance(creds, dict) and creds.get("username") and creds.get("key"):
                    return None
                kind = 'JSON without "username" and "key"'
    return KaggleCredentialsError(f"{name} is not a kaggle.json: it is {kind}.", _PICK_KAGGLE_JSON)


def use_kaggle_json(src: str | os.PathLike | bytes | dict, name: str | None = None) -> Path:
    """Install an uploaded ``kaggle.json`` (path, bytes or dict) as ``~/.kaggle/kaggle.json`` with mode 0600.

    Returns the path written. The file is validated (``username`` and ``key``) and written atomically; its
    contents are never echoed. A wrong file is named as one (``name``: what to call it in the message; default its
    file name): "song.wav is not a kaggle.json: it is a WAV file". In Colab, prefer the secrets panel: nothing
    then touches the disk.
    """
    if isinstance(src, dict):
        creds = src
        if not creds.get("username") or not creds.get("key"):
            raise KaggleCredentialsError(f'{name or "that dict"} is not a kaggle.json: it lacks "username" and "key".',
                                         _PICK_KAGGLE_JSON)
    else:
        raw = bytes(src) if isinstance(src, (bytes, bytearray)) else Path(src).read_bytes()
        name = name or ("the uploaded file" if isinstance(src, (bytes, bytearray)) else Path(src).name)
        problem = _not_kaggle_json(name, raw)
        if problem is not None:
            raise problem
        creds = json.loads(raw.decode("utf-8"))
    folder = _credentials_dir()
    folder.mkdir(parents=True, exist_ok=True)
    target = folder / "kaggle.json"
    tmp = folder / "kaggle.json.tmp"
    # Create the file 0600 from the start (no window in which it is world-readable).
    fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
    with os.fdopen(fd, "w", encoding="utf-8") as f:
        json.dump({"username": str(creds["username"]), "key": str(creds["key"])}, f)
    os.replace(tmp, target)
    try:
        os.chmod(target, 0o600)
    except OSError:  # Windows: POSIX modes are advisory; the user profile folder is already private
        pass
    return target


def download_kaggle(slug: str, *, output_dir: str | os.PathLike | None = None, force: bool = False) -> Path:
    """Download (or reuse the cached copy of) any Kaggle dataset with kagglehub and return its local folder.

    Args:
        slug: ``"owner/dataset"`` (optionally ``"owner/dataset/versions/N"``), e.g. ``"chrisfilo/urbansound8k"``.
        output_dir: download straight into this folder instead of kagglehub's cache (``~/.cache/kagglehub`` or
            ``$KAGGLEHUB_CACHE``). In Colab, kagglehub may instead return a read-only ``/kaggle/input`` mount.
        force: download again even if cached.

    Raises:
        KaggleCredentialsError: no credentials, or Kaggle refused them (the message says how to fix it).
        ValueError: a malformed slug.
    """
    slug = slug.strip().strip("/")
    if not _SLUG.match(slug):
        raise ValueError(f"{slug!r} is not a Kaggle dataset slug; expected 'owner/dataset', e.g. 'chrisfilo/urbansound8k'")
    if _kagglehub_credentials() is None:
        raise KaggleCredentialsError(f"no Kaggle credentials found for downloading {slug!r}.", help=CREDENTIALS_HELP)
    import kagglehub

    kwargs = {"force_download": force}
    if output_dir is not None:
        kwargs["output_dir"] = str(output_dir)
    try:
        path = kagglehub.dataset_download(slug, **kwargs)
    except Exception as exc:  # kagglehub raises requests' HTTPError subclasses; map auth failures to advice
        text = str(exc)
        if any(code in text for code in ("401", "403", "Unauthorized", "Forbidden")):
            raise KaggleCredentialsError(
                f"Kaggle refused the credentials for {slug!r} (or the dataset needs its terms accepted on its page).",
                "Create a new token (kaggle.com → Settings → API), replace the secret or kaggle.json, and accept "
                "the dataset's terms on kaggle.com if it has any.", CREDENTIALS_HELP,
            ) from None
        raise
    return Path(path)


def _http_download(url: str, target: Path) -> None:
    """Stream ``url`` to ``target`` through ``target.part``, resuming a partial download (HTTP Range).

    Standard library only (urllib), so downloading needs no extra dependency; the file appears under its final
    name only when complete.
    """
    import urllib.error
    import urllib.request

    from tqdm.auto import tqdm

    part = target.with_name(target.name + ".part")
    have = part.stat().st_size if part.exists() else 0
    request = urllib.request.Request(url, headers={"Range": f"bytes={have}-"} if have else {})
    try:
        resp = urllib.request.urlopen(request, timeout=60)
    except urllib.error.HTTPError as exc:
        if exc.code == 416 and have:  # nothing left to fetch: the partial file is complete
            os.replace(part, target)
            return
        raise
    with resp:
        resumed = have and resp.status == 206
        total = int(resp.headers.get("Content-Length") or 0) + (have if resumed else 0)
        with open(part, "ab" if resumed else "wb") as f, tqdm(
            total=total or None, initial=have if resumed else 0, unit="B", unit_scale=True, desc=target.name
        ) as bar:
            while chunk := resp.read(1 << 20):
                f.write(chunk)
                bar.update(len(chunk))
    os.replace(part, target)


def download_esc50(out_dir: str | os.PathLike, *, url: str = ESC50_URL, keep_zip: bool = False) -> Path:
    """Download and unpack ESC-50 into ``out_dir/ESC-50-master`` (skipped if already there). Returns that folder.

    Preprocessing it keeps the ESC-22 subset by default (:data:`asit_helpers.data.ESC22`), split by the official
    folds.
    """
    out = Path(out_dir)
    final = out / "ESC-50-master"
    if (final / "meta" / "esc50.csv").exists():
        return final
    out.mkdir(parents=True, exist_ok=True)
    archive = out / "ESC-50-master.zip"
    if not archive.exists():
        _http_download(url, archive)
    tmp = out / "ESC-50-master.extracting"
    shutil.rmtree(tmp, ignore_errors=True)
    try:
        with zipfile.ZipFile(archive) as zf:
            zf.extractall(tmp)
    except zipfile.BadZipFile:
        archive.unlink(missing_ok=True)
        raise ValueError(f"{archive}: the download is not a valid zip archive (removed; run again)") from None
    inner = next((p for p in tmp.rglob("esc50.csv") if p.parent.name == "meta"), None)
    if inner is None:
        shutil.rmtree(tmp, ignore_errors=True)
        raise ValueError(f"{archive}: no meta/esc50.csv inside; is this the ESC-50 archive?")
    os.replace(inner.parent.parent, final)  # unpack fully, then move into place: never a half-extracted folder
    shutil.rmtree(tmp, ignore_errors=True)
    if not keep_zip:
        archive.unlink(missing_ok=True)
    return final


def download(recipe_or_slug: str, out_dir: str | os.PathLike, *, force: bool = False) -> Path:
    """``asit download``: a named recipe (:data:`RECIPES`) or any Kaggle slug, into ``out_dir``."""
    name = recipe_or_slug.strip().lower()
    if name in ("esc50", "esc-50", "esc22", "esc-22"):
        return download_esc50(out_dir)
    if name in ("urbansound8k", "us8k"):
        return download_kaggle("chrisfilo/urbansound8k", output_dir=Path(out_dir) / "urbansound8k", force=force)
    if "/" in recipe_or_slug:
        return download_kaggle(recipe_or_slug, output_dir=Path(out_dir) / recipe_or_slug.strip("/").split("/")[1], force=force)
    raise ValueError(
        f"unknown dataset {recipe_or_slug!r}: use one of {sorted(RECIPES)} or a Kaggle slug 'owner/dataset' "
        "(for synthetic data: asit synth OUT)"
    )
