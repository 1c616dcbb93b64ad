"""The notebook demo widget: record (in the browser) or upload a clip → top-k predictions, playback, and the
model's attention over the waveform; or listen continuously, with the web page's scrolling timeline.

    from IPython.display import display
    from asit_helpers.widgets import AsitDemo
    demo = AsitDemo("checkpoints/asit-tiny")
    display(demo)   # display(), not a bare `demo`: Colab adds its widget-manager metadata only to display() output

Two halves:

* :class:`Recorder` — an `anywidget <https://anywidget.dev>`_ whose JavaScript records in the browser with the
  same ``recorder.js`` the web page uses (``asit_helpers/static/recorder.js``), converts the clip to 16 kHz
  mono WAV there, and sends the bytes to Python in a custom message. It runs wherever anywidget runs: JupyterLab,
  Notebook 7, VS Code and Colab (anywidget enables Colab's custom widget manager itself).
* :class:`Listener` — an anywidget that streams the microphone (16 kHz float32 chunks, at most one in flight) to
  the kernel, where :class:`asit_helpers.live.ListenSession` classifies the newest window every hop, and draws the
  answers with the web page's own timeline and attention code (the same ``recorder.js``). No HTTP server: the
  chunks travel as the widget's custom messages.
* :class:`AsitDemo` — the whole widget: the recorder, an upload button, the listener, and the result area (an
  audio player, the top-k table and the attention plot). Its Python logic is the plain method :meth:`AsitDemo.classify_bytes`
  (bytes → :func:`~asit_helpers.audio.load_audio` → :func:`~asit_helpers.inference.predict` → display), which
  tests call without a browser.

A refused microphone, a silent recording or an unreadable file shows a message in the widget, never a traceback.
"""

from __future__ import annotations

import html
import io
import json
from collections import deque
from importlib import resources
from pathlib import Path

import anywidget
import ipywidgets as w
import numpy as np
import soundfile as sf
import traitlets

from .audio import SAMPLE_RATE, AudioError, load_audio
from .colab import in_colab
from .inference import Prediction, predict
from .model import AsitForAudioClassification, load_model

__all__ = ["Recorder", "Listener", "AsitDemo", "SILENCE_RMS", "COLAB_LISTEN_NOTE"]

#: A clip whose RMS is below this (-60 dBFS) counts as silence: a muted or disconnected microphone records
#: digital zeros or a faint hiss, and classifying that would show a confident-looking label for nothing.
SILENCE_RMS = 1e-3


def _asset(name: str) -> str:
    return resources.files("asit_helpers").joinpath(name).read_text(encoding="utf-8")


def _esm(view: str = "widget/recorder_widget.js") -> str:
    """recorder.js (shared with the web page) followed by one of the widget's views: one ES module."""
    return _asset("static/recorder.js") + "\n\n" + _asset(view)


def _css(view: str) -> str:
    """The views' shared controls (controls.css) followed by one view's own styles."""
    return _asset("widget/controls.css") + "\n" + _asset(view)


class Recorder(anywidget.AnyWidget):
    """Record button, level meter and status line; sends the recording to Python as 16 kHz mono WAV.

    Messages to Python (handled by :meth:`AsitDemo.handle_message`): ``{"event": "audio", "name", "seconds"}``
    with the WAV bytes as the one buffer, or ``{"event": "error", "message"}``.
    """

    _esm = _esm()
    _css = _css("widget/recorder_widget.css")
    #: Recordings stop themselves after this many seconds.
    max_seconds = traitlets.Float(30.0).tag(sync=True)
    #: A line Python can show under the buttons.
    status = traitlets.Unicode("").tag(sync=True)


#: What Listen can and cannot do in Colab (shown in the widget there; the README says the same).
COLAB_LISTEN_NOTE = (
    "In Colab, Listen sends the microphone to this kernel through Colab's widget channel, which runs through "
    "Google's servers: expect fewer updates per second than on a local notebook, and if the output frame is not "
    "allowed the microphone, only the message below appears. The web page, "
    "<code>serve_in_notebook(checkpoint)</code> in a new tab, listens through Colab's port proxy instead."
)


class Listener(anywidget.AnyWidget):
    """Listen / Stop and the live timeline; the kernel side of each chunk is :meth:`handle_message`.

    Args:
        model: a loaded :class:`AsitForAudioClassification`.
        hop_s: audio between updates (seconds). top_k: classes ranked in each update.
        keep: how many updates :attr:`updates` keeps (the oldest go first).

    Attributes:
        session: the :class:`~asit_helpers.live.ListenSession` while listening, else ``None``.
        updates: the latest updates (dicts, the live API's keys), oldest first.
        message: the last error the view reported (refused or lost microphone, a refused chunk), or ``""``.
    """

    _esm = _esm("widget/listen_widget.js")
    _css = _css("widget/listen_widget.css")
    #: The AudioWorklet module's text (capture-worklet.js): the view loads it from a blob: URL.
    worklet_source = traitlets.Unicode(_asset("static/capture-worklet.js")).tag(sync=True)

    def __init__(self, model: AsitForAudioClassification, *, hop_s: float = 0.5, top_k: int = 5, keep: int = 600,
                 on_error=None, **kwargs):
        super().__init__(**kwargs)
        self.model = model
        self.hop_s = hop_s
        self.top_k = top_k
        self.session = None
        self.updates: deque[dict] = deque(maxlen=keep)
        self.message = ""
        self._on_error = on_error
        self.on_msg(self._on_msg)

    def handle_message(self, content: dict, buffers=()) -> dict | None:
        """One message from the view; returns the reply sent back (``None`` for none)."""
        from .live import ChunkError, ListenSession

        event = content.get("event") if isinstance(content, dict) else None
        if event == "error":
            self.message = str(content.get("message") or "Listening failed.")
            if self._on_error:
                self._on_error(self.message)
            return None
        reply: dict = {"reply": content.get("id"), "ok": True}
        if event == "listen-open":
            self.session = ListenSession(self.model, hop_s=self.hop_s, top_k=self.top_k, realtime=True)
            self.message = ""
            reply["body"] = self.session.describe()
        elif event == "listen-audio":
            if self.session is None:
                reply.update(ok=False, error="this listening session has ended; click Listen again", ended=True)
            elif not buffers:
                reply.update(ok=False, error="a chunk arrived without audio data", ended=False)
            else:
                try:
                    updates = self.session.feed_bytes(bytes(buffers[0]), content.get("seq"))
                except ChunkError as exc:
                    ended = getattr(exc, "status", 422) != 409
                    if ended:
                        self.session = None
                    reply.update(ok=False, error=str(exc), ended=ended)
                else:
                    self.updates.extend(updates)
                    reply["body"] = {**self.session.stats(), "updates": updates, "busy": False}
        elif event == "listen-close":
            reply["body"] = {**(self.session.stats() if self.session else {}), "ended": True}
            self.session = None
        else:
            return None
        return json.loads(json.dumps(reply, default=_jsonable))  # numpy scalars → plain JSON for the comm

    def _on_msg(self, _widget, content, buffers) -> None:
        try:
            reply = self.handle_message(content, buffers)
        except Exception as exc:  # noqa: BLE001 — a callback's exception would vanish into the kernel log
            reply = {"reply": content.get("id") if isinstance(content, dict) else None, "ok": False, "ended": True,
                     "error": f"the kernel failed on this chunk ({type(exc).__name__}: {exc})"}
            self.session = None
        if reply is not None:
            self.send(reply)


def _jsonable(value):
    if isinstance(value, np.generic):
        return value.item()
    if isinstance(value, np.ndarray):
        return value.tolist()
    raise TypeError(f"not JSON-serialisable: {type(value).__name__}")


def _wav_bytes(samples: np.ndarray, sr: int = SAMPLE_RATE) -> bytes:
    buf = io.BytesIO()
    sf.write(buf, samples, sr, format="WAV", subtype="PCM_16")
    return buf.getvalue()


def _figure_png(fig) -> bytes:
    import matplotlib.pyplot as plt

    buf = io.BytesIO()
    fig.savefig(buf, format="png", dpi=80, facecolor=fig.get_facecolor())
    plt.close(fig)  # the figure lives in the Image widget now; keep pyplot from also showing it inline
    return buf.getvalue()


def _top_k_html(pred: Prediction) -> str:
    rows = []
    for i, (name, p) in enumerate(pred.top_k):
        weight = "600" if i == 0 else "400"
        rows.append(
            f'<tr><td style="padding:1px 8px 1px 0;font-weight:{weight}">{html.escape(name)}</td>'
            f'<td style="width:160px"><div style="height:10px;width:{max(1.0, p * 100):.1f}%;'
            f'background:{"#ff8c00" if i == 0 else "#8c8c8c"};border-radius:2px"></div></td>'
            f'<td style="padding-left:8px;font-variant-numeric:tabular-nums">{p:.1%}</td></tr>'
        )
    windows = f", {len(pred.windows)} windows of 5 s" if len(pred.windows) > 1 else ""
    return (
        f'<div class="asit-result"><div>Prediction: <b class="asit-label">{html.escape(pred.label)}</b> '
        f'({pred.score:.1%}) &middot; <span class="asit-duration">{pred.duration_s:.1f} s</span>{windows}</div>'
        f'<table class="asit-topk" style="margin-top:4px">{"".join(rows)}</table></div>'
    )


class AsitDemo(w.VBox):
    """Record or upload a clip and see what the model hears, and when.

    Args:
        model: a checkpoint directory or a loaded :class:`AsitForAudioClassification`.
        top_k: how many classes to list.
        silence_rms: clips quieter than this RMS are refused with a "no sound" message.
        max_seconds: the longest recording/upload accepted.
        theme: "light" or "dark" for the attention plot.

    Attributes:
        prediction: the last :class:`~asit_helpers.inference.Prediction` (``None`` before the first clip or
            after a refused one).
        message: an ``ipywidgets.HTML`` with the last error or hint (``message_text`` gives its plain text).
    """

    def __init__(
        self,
        model: AsitForAudioClassification | str | Path,
        *,
        top_k: int = 5,
        silence_rms: float = SILENCE_RMS,
        max_seconds: float = 30.0,
        theme: str = "light",
    ):
        self.model = load_model(model)
        self.top_k = top_k
        self.silence_rms = silence_rms
        self.max_seconds = max_seconds
        self.theme = theme
        self.prediction: Prediction | None = None
        self._message_text = ""

        self.recorder = Recorder(max_seconds=max_seconds)
        self.recorder.on_msg(self._on_recorder_msg)
        #: Listen mode: the microphone, continuously, with the timeline (see :class:`Listener`)
        self.listener = Listener(self.model, top_k=top_k,
                                 on_error=lambda text: self.show_message(text))
        self.upload = w.FileUpload(
            accept=".wav,.flac,.ogg,.oga,.opus,.mp3,.aif,.aiff,audio/*", multiple=False, description="Upload"
        )
        self.upload.observe(self._on_upload, names="value")
        self.message = w.HTML(layout=w.Layout(margin="4px 0"))
        self.player = w.Audio(format="wav", autoplay=False, controls=True, layout=w.Layout(display="none"))
        self.result = w.HTML()
        #: one row per file of the last multi-file pick (:meth:`upload_from_colab`)
        self.batch = w.HTML()
        self.plot = w.Image(format="png", layout=w.Layout(display="none", max_width="100%"))
        hint = ""
        if in_colab():
            hint = ("In Colab this Upload button drops files of 1 MB or more: for those run "
                    "<code>demo.upload_from_colab()</code> in a cell.<br>" + COLAB_LISTEN_NOTE)
        labels = ", ".join(self.model.config.id2label[i] for i in sorted(self.model.config.id2label))
        header = w.HTML(
            f"<div><b>ASiT demo</b> &middot; {len(self.model.config.id2label)} classes: {html.escape(labels)}"
            f"{'<br>' + hint if hint else ''}</div>"
        )
        super().__init__([header, w.HBox([self.recorder, self.upload]), self.message, self.batch, self.player,
                          self.result, self.plot, self.listener])
        self.add_class("asit-demo")

    # -- messages ----------------------------------------------------------------------------------------------

    @property
    def message_text(self) -> str:
        """The message currently shown, as plain text ("" when none)."""
        return self._message_text

    def show_message(self, text: str, kind: str = "error") -> None:
        """Show ``text`` above the result ("error" in red, "info" plain)."""
        self._message_text = text
        color = "#e8453c" if kind == "error" else "inherit"
        weight = "600" if kind == "error" else "400"
        self.message.value = (
            f'<div class="asit-message asit-{kind}" style="color:{color};font-weight:{weight}">'
            f"{html.escape(text)}</div>" if text else ""
        )

    def _clear_result(self) -> None:
        self.prediction = None
        self.result.value = ""
        self.player.layout.display = "none"
        self.plot.layout.display = "none"

    # -- the logic tests call ------------------------------------------------------------------------------------

    def classify_bytes(self, data: bytes, name: str = "recording.wav", *, recorded: bool = False) -> Prediction | None:
        """Decode ``data`` (any format :func:`load_audio` reads), classify it and show the result.

        Returns the Prediction, or ``None`` when the clip was refused; the reason is then in
        :attr:`message_text` (unreadable file, silence, too short or too long). ``recorded``: the clip came from
        the microphone, so silence means a muted or refused microphone, not a silent file.
        """
        self._clear_result()
        try:
            samples = load_audio(bytes(data), SAMPLE_RATE, max_seconds=self.max_seconds, name=name)
        except AudioError as exc:
            self.show_message(f"Could not use {exc.source}: {exc.reason}.")
            return None
        rms = float(np.sqrt(np.mean(np.square(samples, dtype=np.float64))))
        if rms < self.silence_rms:
            level = "all samples are zero" if rms == 0 else f"level {20 * np.log10(rms):.0f} dBFS"
            if recorded:
                self.show_message(f"No sound recorded in {name} ({level}): check that the microphone is connected, "
                                  "not muted, and allowed for this page, then try again.")
            else:
                self.show_message(f"{name} is a silent file ({level}): there is nothing to classify; "
                                  "choose a file with a sound in it.")
            return None
        try:
            pred = predict(self.model, samples, top_k=self.top_k, max_seconds=self.max_seconds)
        except AudioError as exc:
            self.show_message(f"Could not use {name}: {exc.reason}.")
            return None
        pred.source = name
        self.prediction = pred
        self.show_message("")
        self.player.value = _wav_bytes(samples)
        self.player.layout.display = None
        self.result.value = _top_k_html(pred)
        try:
            from .viz import plot_attention

            self.plot.value = _figure_png(plot_attention(pred, samples, SAMPLE_RATE, theme=self.theme))
            self.plot.layout.display = None
        except Exception as exc:  # a plotting problem must not hide the prediction already shown
            self.show_message(f"The attention plot could not be drawn ({type(exc).__name__}: {exc}).", "info")
        return pred

    def handle_message(self, content: dict, buffers=()) -> Prediction | None:
        """One message from the browser (see :class:`Recorder`)."""
        event = content.get("event") if isinstance(content, dict) else None
        if event == "error":
            self._clear_result()
            self.show_message(str(content.get("message") or "The recording failed."))
            return None
        if event == "audio":
            if not buffers:
                self._clear_result()
                self.show_message("The browser sent no audio data: try recording again.")
                return None
            return self.classify_bytes(bytes(buffers[0]), str(content.get("name") or "recording.wav"), recorded=True)
        return None

    # -- callbacks -------------------------------------------------------------------------------------------------

    def _guard(self, fn, *args):
        # Exceptions in widget callbacks vanish into the kernel log; show them in the widget instead.
        try:
            return fn(*args)
        except Exception as exc:  # noqa: BLE001 — the last line of defence for a UI callback
            self._clear_result()
            self.show_message(f"Classification failed ({type(exc).__name__}: {exc}).")
            return None

    def _on_recorder_msg(self, _widget, content, buffers) -> None:
        self._guard(self.handle_message, content, buffers)
        if isinstance(content, dict) and content.get("event") == "audio":  # an error already shows in the view
            self.recorder.status = ""  # so the same text twice still reaches the view as a change
            self.recorder.status = (
                f"Done: {self.prediction.label}" if self.prediction is not None else "Not classified (see below)."
            )

    def _on_upload(self, change) -> None:
        for name, data in _uploaded_files(change["new"])[:1]:  # multiple=False: one file per pick
            self.batch.value = ""
            self._guard(self.classify_bytes, data, name)

    def upload_from_colab(self) -> list[Prediction | None]:
        """Colab only: pick files with ``google.colab.files.upload`` (no 1 MB limit) and classify each.

        Every picked file gets a row in :attr:`batch` (its prediction, or why it was refused); the player and plot
        show the last one. Cancelling the picker clears the previous result and message.
        """
        if not in_colab():
            raise RuntimeError("upload_from_colab works in Google Colab only; use the Upload button elsewhere")
        from google.colab import files  # type: ignore[import-not-found]

        picked = files.upload()
        self.batch.value = ""
        if not picked:
            self._clear_result()
            self.show_message("No file chosen.", "info")
            return []
        results, rows = [], []
        for name, data in picked.items():
            pred = self._guard(self.classify_bytes, data, name)
            results.append(pred)
            rows.append((name, pred, self.message_text))
        if len(picked) > 1:
            self.batch.value = _batch_html(rows)
            refused = sum(pred is None for pred in results)
            summary = f"{len(picked)} files: {len(picked) - refused} classified, {refused} refused (see the table)."
            self.show_message(summary, "error" if refused else "info")
        return results


def _uploaded_files(value) -> list[tuple[str, bytes]]:
    """(name, bytes) of a FileUpload value: a tuple of dicts in ipywidgets 8, a dict by name in 7 (Colab's 7.7.1)."""
    if isinstance(value, dict):
        return [(str(name), bytes(item["content"])) for name, item in value.items()]
    return [(str(item.get("name") or "upload"), bytes(item["content"])) for item in value or ()]


def _batch_html(rows: list[tuple[str, Prediction | None, str]]) -> str:
    cells = []
    for name, pred, reason in rows:
        outcome = (f"<b>{html.escape(pred.label)}</b> ({pred.score:.1%})" if pred is not None
                   else f'<span style="color:#e8453c">{html.escape(reason)}</span>')
        cells.append(f'<tr><td style="padding:1px 8px 1px 0">{html.escape(name)}</td><td>{outcome}</td></tr>')
    return f'<table class="asit-batch" style="margin:4px 0">{"".join(cells)}</table>'
