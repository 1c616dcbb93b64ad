"""The notebook's Teach widget: name classes, record (or upload) a few examples of each and some background,
press Train, then Listen with the taught model (the live mode's widget).

    from asit_helpers.teach_widget import TeachWidget
    teacher = TeachWidget("tiny-fb", "outputs/teach")     # base preset or checkpoint; the workspace folder
    display(teacher)

Every recording is saved as a 16 kHz WAV in the workspace the moment it arrives (``WORKSPACE/class/NNN.wav``,
background in ``WORKSPACE/background/``), so a kernel restart loses nothing: a new widget on the same folder shows
the same classes and counts, and Train can be repeated or extended. A deleted recording is moved to
``WORKSPACE/.deleted/``, not destroyed. The workspace is exactly what ``asit teach BASE WORKSPACE --out DIR``
reads. Recording uses the same in-browser recorder as the demo widget (:class:`asit_helpers.widgets.Recorder`);
the Python side (:class:`TeachWorkspace` and the widget's methods) is what the tests call without a browser.
"""

from __future__ import annotations

import html
import os
import time
from pathlib import Path

import ipywidgets as w
import numpy as np

from .audio import SAMPLE_RATE
from .colab import in_colab
from .teach import BACKGROUND_FOLDER, TeachError, TeachResult, TeachWorkspace, teach
from .widgets import Listener, Recorder, _uploaded_files

__all__ = ["TeachWorkspace", "TeachWidget"]

class TeachWidget(w.VBox):
    """Add classes, record or upload examples and background, Train, then Listen with the taught model.

    Args:
        base: a backbone preset, a checkpoint directory, or a loaded model; loaded once, when the widget is made.
        workspace: the folder the recordings are saved in (created; an existing one is picked up as it is).
        out: where Train saves the taught model (default ``workspace/model``).
        **settings: passed to :func:`asit_helpers.teach.teach` (``views``, ``steps``, ...).

    Attributes:
        result: the last :class:`~asit_helpers.teach.TeachResult` (None before the first Train).
        message_text: the last message shown.
    """

    def __init__(self, base, workspace: str | os.PathLike = "teach", *, out: str | os.PathLike | None = None,
                 max_seconds: float = 30.0, **settings):
        from .model import AsitForAudioClassification, load_model

        self.workspace = TeachWorkspace(workspace, max_seconds=max_seconds)
        self.out = Path(out) if out is not None else self.workspace.root / "model"
        self.base = base if isinstance(base, AsitForAudioClassification) else (
            load_model(base) if (Path(str(base)) / "config.json").is_file()
            else AsitForAudioClassification.from_backbone(str(base), labels=["?"]).eval())
        self.base_name = str(base) if not isinstance(base, AsitForAudioClassification) else "the given model"
        self.settings = settings
        self.result: TeachResult | None = None
        self.listener: Listener | None = None  # after Train: live listening with the taught model
        self.message_text = ""

        self.new_class = w.Text(placeholder="new class name, e.g. clap", layout=w.Layout(width="220px"))
        self.add_button = w.Button(description="Add class", icon="plus")
        self.add_button.on_click(lambda _: self._guard(self.add_class, self.new_class.value))
        self.target = w.Dropdown(description="Record into", layout=w.Layout(width="260px"))
        self.recorder = Recorder(max_seconds=max_seconds)
        self.recorder.on_msg(self._on_recorder_msg)
        self.upload = w.FileUpload(accept=".wav,.flac,.ogg,.oga,.opus,.mp3,.aif,.aiff,audio/*", multiple=True,
                                   description="Upload")
        self.upload.observe(self._on_upload, names="value")
        self.rows = w.VBox()
        self.message = w.HTML()
        self.train_button = w.Button(description="Train", icon="graduation-cap", button_style="primary")
        self.train_button.on_click(lambda _: self._guard(self.train))
        self.progress = w.FloatProgress(min=0.0, max=1.0, description="", layout=w.Layout(width="260px"))
        self.status = w.HTML()
        self.report = w.HTML()
        self.try_box = w.VBox()
        hint = ("In Colab, recording and Upload work; Upload drops files of 1 MB or more there, so use "
                "<code>teacher.upload_from_colab(\"CLASS\")</code> for big files." if in_colab() else "")
        header = w.HTML(f"<div><b>Teach ASiT new sounds</b> on {html.escape(self.base_name)} &middot; "
                        f"recordings saved in <code>{html.escape(str(self.workspace.root))}</code>"
                        f"{'<br>' + hint if hint else ''}</div>")
        super().__init__([header, w.HBox([self.new_class, self.add_button]),
                          w.HBox([self.target, self.recorder, self.upload]), self.rows, self.message,
                          w.HBox([self.train_button, self.progress, self.status]), self.report, self.try_box])
        self.refresh()

    # -- what the buttons do (tests call these) -------------------------------------------------------------------

    def add_class(self, name: str) -> str:
        name = self.workspace.add_class(name)
        self.new_class.value = ""
        self.refresh(select=name)
        self.show_message(f"Class {name!r} added: record or upload 8 or more examples of it.", "info")
        return name

    def add_bytes(self, target: str, data: bytes, name: str = "recording.wav") -> Path:
        path = self.workspace.add_recording(target, data, name)
        self.refresh(select=target)
        self.show_message(f"Saved {path.relative_to(self.workspace.root).as_posix()}.", "info")
        return path

    def delete(self, target: str, file_name: str) -> Path:
        moved = self.workspace.delete(target, file_name)
        self.refresh(select=target)
        self.show_message(f"Deleted {target}/{file_name} (kept in {moved.parent.relative_to(self.workspace.root)}).",
                          "info")
        return moved

    def train(self) -> TeachResult:
        """Teach from the workspace as it is now; the progress bar follows embedding and training."""
        self.train_button.disabled = True
        started = time.perf_counter()
        stages = {"embedding": (0.0, 0.8), "training": (0.8, 0.95), "checking": (0.95, 1.0)}

        def progress(stage, fraction):
            lo, hi = stages.get(stage, (0.0, 1.0))
            self.progress.value = lo + (hi - lo) * fraction
            self.status.value = f"{stage}... {time.perf_counter() - started:.1f} s"

        try:
            self.result = teach(self.base, self.workspace.root, out=self.out, progress=progress, **self.settings)
        finally:
            self.train_button.disabled = False
        r = self.result.report
        self.progress.value = 1.0
        self.status.value = f"model ready in {r.seconds_to_model:.1f} s ({r.seconds:.1f} s with the accuracy check)"
        self.report.value = f"<pre style='font-size:11px'>{html.escape(r.summary())}\nsaved in {self.out}</pre>"
        self.show_message("")
        self._show_try(self.result.model)
        return self.result

    def upload_from_colab(self, target: str) -> list[Path]:
        """Colab only: pick files with ``google.colab.files.upload`` (no 1 MB limit) and add each to ``target``."""
        if not in_colab():
            raise RuntimeError("upload_from_colab works in Google Colab only; use the Upload button elsewhere")
        from google.colab import files  # type: ignore[import-not-found]

        return [self._guard(self.add_bytes, target, data, name) for name, data in files.upload().items()]

    # -- display ------------------------------------------------------------------------------------------------

    def show_message(self, text: str, kind: str = "error") -> None:
        self.message_text = text
        color = "#e8453c" if kind == "error" else "inherit"
        self.message.value = (f'<div class="asit-message asit-{kind}" style="color:{color}">{html.escape(text)}</div>'
                              if text else "")

    def refresh(self, select: str | None = None) -> None:
        """Class rows (name, count, a list of recordings and Delete) and the record target, from the disk."""
        options = self.workspace.classes() + [BACKGROUND_FOLDER]
        current = select or self.target.value
        self.target.options = options
        self.target.value = current if current in options else options[0]
        self.rows.children = [self._row(name) for name in options]

    def _row(self, name: str) -> w.HBox:
        files = [p.name for p in self.workspace.recordings(name)]
        what = "background (the 'no event' answer)" if name == BACKGROUND_FOLDER else name
        label = w.HTML(f'<span class="asit-teach-class"><b>{html.escape(what)}</b>: '
                       f'<span class="asit-count">{len(files)}</span> recording(s)</span>',
                       layout=w.Layout(width="300px"))
        pick = w.Dropdown(options=files, layout=w.Layout(width="110px"))
        delete = w.Button(description="Delete", icon="trash", disabled=not files, layout=w.Layout(width="90px"))
        delete.on_click(lambda _: pick.value and self._guard(self.delete, name, pick.value))
        return w.HBox([label, pick, delete])

    def _show_try(self, model) -> None:
        """Listen with the taught model: the live mode's own widget (top class, timeline, attention over the window);
        a listener on the previous model is stopped first (its session object is dropped with the widget)."""
        for old in self.try_box.children:
            if isinstance(old, Listener):
                old.session = None
        self.listener = Listener(model, on_error=self.show_message)
        self.try_box.children = [w.HTML("<b>Listen</b> with the taught model:"), self.listener]

    # -- callbacks ------------------------------------------------------------------------------------------------

    def _guard(self, fn, *args):
        try:
            return fn(*args)
        except TeachError as exc:
            self.show_message(str(exc).removeprefix("error: "))
        except Exception as exc:  # noqa: BLE001 — a UI callback's last line of defence
            self.show_message(f"{type(exc).__name__}: {exc}")
        return None

    def _on_recorder_msg(self, _widget, content, buffers) -> None:
        if not isinstance(content, dict):
            return
        if content.get("event") == "error":
            self.show_message(str(content.get("message") or "The recording failed."))
        elif content.get("event") == "audio" and buffers:
            saved = self._guard(self.add_bytes, self.target.value, bytes(buffers[0]),
                                str(content.get("name") or "recording.wav"))
            self.recorder.status = ""
            self.recorder.status = f"Saved into {self.target.value}" if saved else "Not saved (see below)."

    def _on_upload(self, change) -> None:
        for name, data in _uploaded_files(change["new"]):
            self._guard(self.add_bytes, self.target.value, data, name)


def synthetic_recordings(workspace: TeachWorkspace, classes: tuple[str, ...] = ("frog", "warbler"), per_class: int = 8,
                         seconds: float = 1.5, background_s: float = 20.0, seed: int = 0) -> dict[str, int]:
    """Stand-in recordings for a run without a person (CI, a headless lesson): ``per_class`` synthetic clips of
    ``seconds`` per class (the event inside) and ``background_s`` of synthetic room noise, saved into the
    workspace as any recording is. Classes that already hold ``per_class`` recordings are left as they are."""
    from .synth import BACKGROUNDS, SYNTH_CLASSES, clip_seed, render_clip

    index = {c.name: i for i, c in enumerate(SYNTH_CLASSES)}
    for name in classes:
        workspace.add_class(name)
        for i in range(len(workspace.recordings(name)), per_class):
            audio, _ = render_clip(name, clip_seed(seed + 100, index[name], i), seconds=seconds)
            workspace.add_recording(name, audio, f"{name} (synthetic)")
    if not workspace.recordings(BACKGROUND_FOLDER):
        rng = np.random.default_rng(seed)
        room = BACKGROUNDS["room"](rng, int(background_s * SAMPLE_RATE))
        workspace.add_recording(BACKGROUND_FOLDER, (room * 0.3 / np.abs(room).max()).astype(np.float32),
                                "room noise (synthetic)")
    return workspace.counts()
