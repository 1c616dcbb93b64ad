"""Google Colab (and notebooks in general): what a student's runtime needs beyond the lessons themselves.

* :func:`in_colab`: the one test for "this kernel runs in Colab".
* :func:`setup`: the setup cell's work after installing: Colab's manager for third-party widgets, one printed line.
* :func:`workspace_root`: where the shared workspace lives in Colab (``/content/asit``, or on Google Drive, which
  outlives the runtime: each notebook opened from its badge gets a fresh runtime with its own ``/content``).
* :func:`upload_kaggle_json`: Colab's file picker for ``kaggle.json``; the key is installed readable only by you
  and the copy Colab's uploader leaves in ``/content`` is removed.
* :func:`serve_in_notebook`: the web page of ``asit serve``, started from a cell and opened through Colab's port
  proxy (elsewhere: a link to the loopback address).

The test suite imitates ``google.colab`` with a stand-in (``tests/colab_standin``); see its docstring for which of
Colab's behaviours it copies.
"""

from __future__ import annotations

import logging
import sys
import threading
from pathlib import Path
from typing import Any, Callable

from .messages import Explanation, LessonStop

__all__ = ["in_colab", "setup", "workspace_root", "upload_kaggle_json", "serve_in_notebook", "NotebookServer",
           "CONTENT"]

log = logging.getLogger(__name__)

#: Colab's working folder (a fresh one per runtime); ``files.upload`` saves picked files here.
CONTENT = Path("/content")


def in_colab() -> bool:
    """True inside a Google Colab kernel (which imports ``google.colab`` at start-up)."""
    return "google.colab" in sys.modules


def setup(say: Callable[[str], None] = print) -> bool:
    """Everything the setup cell does once the package is installed; says so in one line. Returns :func:`in_colab`.

    In Colab it enables the custom widget manager, without which third-party widgets (the recorder) show as
    "Error displaying widget". Colab's own torch, numpy and ipywidgets are left as they are.
    """
    import torch

    from . import __version__
    from .runtime import describe_device, resolve_device

    colab = in_colab()
    if colab:
        from google.colab import output  # type: ignore[import-not-found]

        output.enable_custom_widget_manager()
    device = describe_device()
    if colab and resolve_device(None).type == "cpu":
        device += "; Runtime → Change runtime type → T4 GPU for the real model"
    say(f"ASiT {__version__} ready: {'Colab' if colab else 'local'} runtime, torch {torch.__version__}, {device}")
    return colab


def workspace_root(work_dir: str | Path | None = None, use_drive: bool = False) -> Path | None:
    """The workspace folder: ``work_dir`` if given; in Colab ``/content/asit``, or ``MyDrive/asit`` on a mounted
    Google Drive with ``use_drive`` (where the next notebook, in its own runtime, finds what this one made).
    ``None`` outside Colab without ``work_dir`` (the caller picks a local default).

    Raises:
        LessonStop: ``use_drive`` in Colab, but Drive is not mounted.
    """
    if work_dir is not None:
        return Path(work_dir)
    if not in_colab():
        return None
    if not use_drive:
        return CONTENT / "asit"
    my_drive = CONTENT / "drive" / "MyDrive"
    if not my_drive.is_dir():
        raise LessonStop(Explanation(
            f"USE_DRIVE = True, but Google Drive is not mounted at {my_drive.parent}.",
            "Run the Drive cell above (it asks you to allow access), then this cell again; or set USE_DRIVE = False.",
        ))
    return my_drive / "asit"


# ---- Kaggle credentials through Colab's file picker --------------------------------------------------------------


def _remove_uploaded_copy(name: str, data: bytes, folder: Path) -> Path | None:
    """Colab's uploader writes every picked file into the working folder (as ``name``, or ``name (1).ext`` when
    that exists): remove that copy, only if it is the very file that was picked, so nothing else is ever deleted."""
    picked = Path(name)
    candidates = [folder / picked.name, *sorted(folder.glob(f"{picked.stem} (*){picked.suffix}"))]
    for copy in candidates:
        try:
            if copy.is_file() and copy.read_bytes() == bytes(data):
                copy.unlink()
                return copy
        except OSError:
            continue
    return None


def upload_kaggle_json(say: Callable[[str], None] = print) -> Path | None:
    """Colab: pick ``kaggle.json`` with Colab's file picker and install it as ``~/.kaggle/kaggle.json`` (mode 0600).

    Every picked file's copy in the working folder is removed, kaggle.json or not. Returns the installed path, or
    ``None`` if the picker was cancelled. Never prints or logs the key.

    Raises:
        LessonStop: the picked file is not a kaggle.json (named as what it is: "a WAV file", "not JSON", ...).
    """
    from google.colab import files  # type: ignore[import-not-found]

    from .sources import KaggleCredentialsError, use_kaggle_json

    picked = files.upload()
    if not picked:
        say("No file chosen: nothing installed. Run the cell again to pick kaggle.json.")
        return None
    installed, problem, removed = None, None, []
    for name, data in picked.items():
        try:
            installed = use_kaggle_json(data, name=name)
        except KaggleCredentialsError as exc:
            problem = exc
        finally:
            copy = _remove_uploaded_copy(name, data, Path.cwd())
            removed += [str(copy)] if copy else []
    gone = f" The uploaded copy ({', '.join(removed)}) was removed." if removed else ""
    if installed is None:
        raise LessonStop(Explanation(problem.what + gone, problem.todo))
    say(f"Kaggle key installed at {installed} (readable only by you).{gone}")
    return installed


# ---- the web page from a notebook -----------------------------------------------------------------------------------

_running: list["NotebookServer"] = []


class NotebookServer:
    """The Flask app of ``asit serve`` running in a background thread of the kernel.

    Attributes:
        url: the page on the kernel's loopback (what Python in the kernel can request; in Colab the student's
            browser reaches it through Colab's proxy, which :meth:`show` opens).
        port: the loopback port.
    """

    def __init__(self, app, host: str = "127.0.0.1"):
        self.app = app
        self.host = host
        self.port: int | None = None
        self._server = None
        self._thread: threading.Thread | None = None

    @property
    def url(self) -> str:
        return f"http://{self.host}:{self.port}/"

    @property
    def running(self) -> bool:
        return self._thread is not None and self._thread.is_alive()

    def start(self) -> "NotebookServer":
        """Start serving (again, after :meth:`stop`: on the same port when it is still free, so an open tab keeps
        working)."""
        from werkzeug.serving import WSGIRequestHandler, make_server

        class QuietHandler(WSGIRequestHandler):
            # werkzeug logs each request to stderr, which a notebook shows in whichever cell runs next
            def log(self, type: str, message: str, *args: Any) -> None:
                log.debug(message, *args)

        if self.running:
            return self
        # Werkzeug's threaded server, not waitress: it stops on request (shutdown) and needs no process of its own;
        # one student's page on a loopback port is what it is made for.
        for port in ([self.port] if self.port else []) + [0]:  # 0: any free port
            try:
                self._server = make_server(self.host, port, self.app, threaded=True, request_handler=QuietHandler)
                break
            except OSError:  # the old port was taken meanwhile
                continue
        self.port = self._server.server_port
        self._thread = threading.Thread(target=self._server.serve_forever, name=f"asit-page-{self.port}", daemon=True)
        self._thread.start()
        return self

    def stop(self) -> None:
        """Stop serving and free the port (calling it twice is harmless)."""
        if self._server is not None:
            self._server.shutdown()
            self._server.server_close()
            self._thread.join(timeout=5)
            self._server, self._thread = None, None
        if self in _running:
            _running.remove(self)

    def show(self, iframe: bool = False, height: int = 720) -> None:
        """Colab: a link that opens the page through Colab's HTTPS port proxy (the microphone works there), and
        with ``iframe`` the page inside the output too; elsewhere a link to :attr:`url`."""
        if in_colab():
            from google.colab import output  # type: ignore[import-not-found]

            output.serve_kernel_port_as_window(self.port, path="/", anchor_text="Open the ASiT page in a new tab")
            if iframe:
                output.serve_kernel_port_as_iframe(self.port, path="/", height=str(height))
            return
        from IPython.display import HTML, display

        display(HTML(f'<a href="{self.url}" target="_blank" rel="noopener">Open the ASiT page</a> at {self.url} '
                     "(on this machine; stop it with <code>handle.stop()</code>)"))

    def __repr__(self) -> str:
        return f"NotebookServer({self.url if self.running else 'stopped'})"


def serve_in_notebook(checkpoint, *, iframe: bool = False, show: bool = True, **app_kwargs: Any) -> NotebookServer:
    """Serve the web page of ``asit serve`` from a notebook cell: ``handle = serve_in_notebook(CHECKPOINT)``.

    Builds the same app (:func:`asit_helpers.serve.create_app`, ``app_kwargs`` passed on), starts it on a free
    loopback port in a background thread and shows it (:meth:`NotebookServer.show`). A page started earlier from
    this kernel is stopped first, so rerunning the cell never leaves an old model serving. ``handle.url`` is the
    address, ``handle.stop()`` stops it.
    """
    from .serve import create_app

    for old in list(_running):
        old.stop()
    server = NotebookServer(create_app(checkpoint, **app_kwargs)).start()
    _running.append(server)
    if show:
        server.show(iframe=iframe)
    return server
