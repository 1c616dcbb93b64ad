"""``google.colab.files.upload``: the browser's file picker, then a copy of each picked file in the working folder.

As in colabtools, the files come from the browser through ``output.eval_js`` and every one is written to
``target_dir`` (default: the current folder, which is ``/content`` in Colab) before the dict is returned, so a
picked ``kaggle.json`` stays on disk, mode 0644, unless the caller removes it.
"""

import os
from pathlib import Path

from . import output

_queue: list[dict | None] = []


def will_pick(files: dict | None) -> None:
    """What the person picks next time: ``{name: bytes}``, or ``None`` to cancel the picker."""
    _queue.append(files)


def _from_env() -> dict | None:
    paths = os.environ.get("COLAB_STANDIN_PICK")
    if paths is None:
        raise RuntimeError("files.upload() needs a person; the stand-in has nothing queued (files.will_pick)")
    return {Path(p).name: Path(p).read_bytes() for p in paths.split(os.pathsep) if p} or None


def _browser_pick(input_id: str, output_id: str) -> dict | None:
    # colabtools: eval_js('google.colab._files._uploadFiles("<input>", "<output>")') and then chunks
    output._browser_answers.append(_queue.pop(0) if _queue else _from_env())
    return output.eval_js(f'google.colab._files._uploadFiles("{input_id}", "{output_id}")')


def upload(target_dir=""):
    picked = _browser_pick("files-input", "files-output") or {}
    for name, data in picked.items():
        path = os.path.join(target_dir, name)
        print(f"Saving {name} to {path}")
        with open(path, "wb") as f:  # default mode: world-readable (0644 with the usual umask)
            f.write(data)
    return dict(picked)


def download(filename):
    raise NotImplementedError("the stand-in does not download")
