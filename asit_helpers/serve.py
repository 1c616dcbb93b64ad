"""The Flask API and web page: ``create_app(checkpoint)`` and ``serve(checkpoint, host, port)`` (waitress).

Routes:
    ``GET /``          the page (upload or record a clip; top-k chart; attention over the waveform). No CDN: the
                       page, its JS (``static/app.js`` + the shared ``static/recorder.js``) and CSS ship in the
                       package, so it works offline.
    ``POST /predict``  multipart field ``file``, or the audio itself as the request body → ``Prediction.to_dict()``
                       plus ``latency_ms``. Query: ``top_k`` (default 5, or every class if fewer).
    ``GET /health``    model, device, classes, version, concurrency mode, limits.
    ``GET /labels``    the class names in label-id order.
    ``POST /live``     open a listening session (``asit_helpers.live``); ``POST /live/<id>/audio`` streams raw
                       float32 chunks to it and answers with updates; ``DELETE /live/<id>`` ends it.

Every prediction goes through :func:`asit_helpers.inference.predict` and every decode through
:func:`asit_helpers.audio.load_audio` (bytes in memory: no temporary files). Bad input is a 4xx with a JSON
``{"error", "status"}`` body, never a 500 (see :func:`_status_for`) -- also the 413 waitress itself answers for a
body over the limit, and a 405 carries ``Allow``. Every response carries a Content-Security-Policy that lets the page
load only from this server and be framed only by it (:data:`CONTENT_SECURITY_POLICY`).

Concurrency: waitress runs requests on several threads; the model is shared. Two strategies (``batching``):

* ``"lock"`` (the default on a CPU): one lock around ``predict``; torch already uses every core inside one
  forward pass.
* ``"micro"``: a queue that merges concurrent forward passes *of the same input shape* into one batch (equal
  shapes only, because padding changes a group-norm wav2vec2's output; a clip's answer must not depend on its
  neighbours), while decoding and post-processing of other requests overlap with it. The default on a GPU.

Why ``"auto"`` picks these (``bench/serve.py``, 8 clients, 5 s clips, both modes in one run; README has the
table): with idle cores, micro-batching served more -- 1.95x for the tiny test model on 16 cores, but only
1.07x (16 cores) and 1.12x (2 cores) for a full-size wav2vec2-base. On a 2-core machine busy with other work it
collapsed instead (load average ~10; tiny: 2.0 vs 22.2 requests/s). Likely cause: each request crosses two
extra thread hand-offs, and other requests' pre/post-processing competes with torch's intra-op threads, which on
that machine were erratic even alone (a 2-thread forward pass varied 0.1-1.3 s, 1-thread ~40 ms). A few percent
for the real model is not worth a 10x collapse on a busy laptop; ``--batching micro`` is there for a dedicated
many-core server. On a GPU (H100, full-size model) micro-batching served 2.1x more (96.4 vs 45.9 requests/s), so
it is the default there.
"""

from __future__ import annotations

import io
import json
import logging
import os
import queue
import signal
import sys
import threading
import time
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field
from importlib import resources
from pathlib import Path, PureWindowsPath
from typing import Any, Callable

import torch
from flask import Flask, Request, Response, jsonify, render_template, request
from werkzeug.exceptions import HTTPException, MethodNotAllowed

from . import __version__
from .audio import AudioError
from .inference import classify_batch, predict
from .live import DEFAULT_HOP_S, DEFAULT_IDLE_S, DEFAULT_MAX_LISTENERS, ChunkError, ListenerLimit, Listeners
from .model import AsitClassifierOutput, AsitForAudioClassification, load_model
from .runtime import resolve_precision

log = logging.getLogger(__name__)

DEFAULT_HOST = "127.0.0.1"
DEFAULT_PORT = 5000
DEFAULT_THREADS = 4
#: Largest accepted request body (MB): 20 MB holds ~10 minutes of 16 kHz 16-bit WAV, or far more as OGG/MP3.
DEFAULT_MAX_UPLOAD_MB = 20.0
#: Longest accepted audio (seconds). Longer than the model's 5 s window is fine (cut into windows);
#: past this cap the request gets a 422 before any decoding.
DEFAULT_MAX_SECONDS = 120.0

# Reasons from AudioError (audio.py / inference.py) that mean "we don't take this kind of data" (415);
# every other AudioError is data of a kind we take that is broken, empty, too short or too long (422).
_UNSUPPORTED_PREFIXES = ("unsupported", "not an audio file")

# Served with an explicit type: on Windows, mimetypes reads the registry, which often maps .js to text/plain,
# and browsers refuse to run an ES module served as text/plain.
_STATIC_TYPES = {".js": "text/javascript", ".css": "text/css", ".svg": "image/svg+xml", ".html": "text/html"}

#: The page loads nothing from elsewhere: scripts, styles, fetches only from this server (images and audio also from
#: data:/blob: URLs the page makes itself), no plugins, and only this server's own pages may frame it.
CONTENT_SECURITY_POLICY = ("default-src 'self'; img-src 'self' data: blob:; media-src 'self' blob:; "
                           "object-src 'none'; base-uri 'self'; form-action 'self'; frame-ancestors 'self'")
#: Longest upload name kept for messages (characters); a longer one is cut in its stem, keeping its extension.
MAX_NAME_CHARS = 120
#: How to send a file with curl: ``--data-binary`` alone sends it as a form (``application/x-www-form-urlencoded``).
_CURL_HINT = ("send it as multipart (curl -F file=@clip.wav) or as the body with a type "
              "(curl --data-binary @clip.wav -H 'Content-Type: application/octet-stream')")


def _status_for(exc: AudioError) -> int:
    """415 for data that isn't audio we can decode at all; 422 for audio that is corrupt, empty, too long or short."""
    return 415 if exc.reason.lower().startswith(_UNSUPPORTED_PREFIXES) else 422


def _error(status: int, message: str, **extra: Any) -> tuple[Response, int]:
    return jsonify({"error": message, "status": status, **extra}), status


# ------------------------------------------------------------------------------------------------------------------
# Concurrency: a lock, or a micro-batching queue in front of the model's forward pass
# ------------------------------------------------------------------------------------------------------------------


class LockedPredictor:
    """``predict`` on one worker thread: requests take turns; each forward pass uses all of torch's threads.

    Why one thread rather than a lock on whichever request thread came: each thread that runs forward passes
    keeps its own allocator arena and intra-op thread team, so spread over waitress's threads the server's memory
    grew with every thread that had served one (bench/live.py: RSS grew over a listening run after the warm-up).
    """

    mode = "lock"

    def __init__(self, model: AsitForAudioClassification):
        self.model = model
        self._worker = ThreadPoolExecutor(max_workers=1, thread_name_prefix="asit-predict")

    def __call__(self, audio: Any, **kwargs):
        return self._worker.submit(predict, self.model, audio, **kwargs).result()

    def close(self) -> None:
        self._worker.shutdown(wait=False)


@dataclass
class _Job:
    input_values: torch.Tensor  # (rows, samples)
    attention_mask: torch.Tensor | None  # (rows, samples)
    precision: str
    done: threading.Event = field(default_factory=threading.Event)
    output: AsitClassifierOutput | None = None
    error: BaseException | None = None


class MicroBatchPredictor:
    """``predict`` on many threads at once; one worker thread runs their forward passes together.

    Each request thread runs ``predict`` (decoding, windows, feature extraction, attention stitching) and hands its
    forward pass to :meth:`submit` (``predict(..., forward=...)``). The worker takes the first waiting pass, waits
    up to ``max_wait_ms`` for more, and runs each group with identical input shape and precision as one
    :func:`~asit_helpers.inference.classify_batch` call of at most ``max_batch`` rows (padding would change a
    clip's answer depending on its neighbours, so different lengths never share a batch).
    """

    mode = "micro"

    def __init__(self, model: AsitForAudioClassification, max_batch: int = 8, max_wait_ms: float = 5.0):
        self.model = model
        self.max_batch = max_batch
        self.max_wait_s = max_wait_ms / 1000.0
        self._queue: queue.Queue[_Job | None] = queue.Queue()
        self._worker = threading.Thread(target=self._run, name="asit-microbatch", daemon=True)
        self._worker.start()

    def __call__(self, audio: Any, **kwargs):
        return predict(self.model, audio, forward=self.submit, **kwargs)

    def submit(self, model: AsitForAudioClassification, input_values: torch.Tensor,
               attention_mask: torch.Tensor | None = None, precision: str = "fp32") -> AsitClassifierOutput:
        """Same call as ``classify_batch``; blocks until the worker has run the (merged) batch."""
        if model is not self.model:
            raise ValueError("this micro-batching queue serves one model only")
        if not self._worker.is_alive():
            raise RuntimeError("the micro-batching worker has stopped")
        job = _Job(input_values, attention_mask, precision)
        self._queue.put(job)
        job.done.wait()
        if job.error is not None:
            raise job.error
        return job.output

    def close(self) -> None:
        self._queue.put(None)
        self._worker.join(timeout=5)

    def _collect(self, first: _Job) -> tuple[list[_Job], bool]:
        jobs, rows = [first], first.input_values.shape[0]
        deadline = time.monotonic() + self.max_wait_s
        while rows < self.max_batch:
            remaining = deadline - time.monotonic()
            if remaining <= 0:
                break
            try:
                job = self._queue.get(timeout=remaining)
            except queue.Empty:
                break
            if job is None:
                return jobs, True
            jobs.append(job)
            rows += job.input_values.shape[0]
        return jobs, False

    def _run(self) -> None:
        stop = False
        while not stop:
            first = self._queue.get()
            if first is None:
                return
            jobs, stop = self._collect(first)
            groups: dict[tuple, list[_Job]] = {}
            for job in jobs:
                key = (tuple(job.input_values.shape[1:]), job.attention_mask is None, job.precision)
                groups.setdefault(key, []).append(job)
            for group in groups.values():
                self._forward(group)

    @torch.inference_mode()
    def _forward(self, group: list[_Job]) -> None:
        try:
            values = torch.cat([j.input_values for j in group])
            mask = None if group[0].attention_mask is None else torch.cat([j.attention_mask for j in group])
            out = classify_batch(self.model, values, attention_mask=mask, precision=group[0].precision)
            start = 0
            for job in group:
                n = job.input_values.shape[0]
                job.output = AsitClassifierOutput(
                    logits=out.logits[start : start + n],
                    pooling_weights=out.pooling_weights[start : start + n],
                    pooling_scores=out.pooling_scores[start : start + n],
                    frame_mask=out.frame_mask[start : start + n],
                    frame_times=out.frame_times,
                    pooled=out.pooled[start : start + n],
                )
                start += n
        except BaseException as exc:  # handed to every waiting request thread, which re-raises it
            for job in group:
                job.error = exc
        finally:
            for job in group:
                job.done.set()


def make_predictor(model: AsitForAudioClassification, batching: str = "auto") -> Callable:
    """``"lock"`` → :class:`LockedPredictor`, ``"micro"`` → :class:`MicroBatchPredictor`, ``"auto"`` → micro on a
    GPU, lock on a CPU (see the module docstring); each is called like ``predict`` without its model argument."""
    if batching == "auto":
        batching = "micro" if model.device.type == "cuda" else "lock"
    if batching == "lock":
        return LockedPredictor(model)
    if batching == "micro":
        return MicroBatchPredictor(model)
    raise ValueError(f"unknown batching mode {batching!r}; use 'auto', 'lock' or 'micro'")


# ------------------------------------------------------------------------------------------------------------------
# The app
# ------------------------------------------------------------------------------------------------------------------


class _InMemoryRequest(Request):
    """Multipart uploads stay in memory (Werkzeug spools files over 500 KB to a temporary file by default).

    Bodies are already capped by ``MAX_CONTENT_LENGTH``, so memory is bounded, and nothing is ever written to disk.
    """

    def _get_file_stream(self, total_content_length, content_type, filename=None, content_length=None):
        return io.BytesIO()


def upload_name(filename: str | None, limit: int = MAX_NAME_CHARS) -> str:
    """The base name of a client's file name, whichever separator its OS uses (a client-given path never reaches a
    message), cut to ``limit`` characters in its stem so the extension survives."""
    name = PureWindowsPath(filename or "upload").name or "upload"
    if len(name) <= limit:
        return name
    suffix = PureWindowsPath(name).suffix
    suffix = suffix if len(suffix) <= 16 else ""
    return name[: limit - len(suffix) - 1] + "\u2026" + suffix


def _request_audio() -> tuple[bytes, str] | None:
    """The uploaded audio and a name for messages: multipart field ``file``, else the raw body; None if neither.

    A body without a type, or typed as a url-encoded form (what ``curl --data-binary @clip.wav`` sends), is the
    audio itself: the form is never parsed, so its bytes arrive intact.
    """
    if request.mimetype == "multipart/form-data":
        upload = request.files.get("file")
        return None if upload is None else (upload.read(), upload_name(upload.filename))
    data = request.get_data(cache=False)
    return (data, "request body") if data else None


def create_app(
    checkpoint_dir_or_model: str | Path | AsitForAudioClassification,
    *,
    max_upload_mb: float = DEFAULT_MAX_UPLOAD_MB,
    max_seconds: float = DEFAULT_MAX_SECONDS,
    cors_origins: list[str] | str | None = None,
    batching: str = "auto",
    top_k: int = 5,
    device: str | None = None,
    precision: str = "auto",
    max_listeners: int = DEFAULT_MAX_LISTENERS,
    listen_idle_s: float = DEFAULT_IDLE_S,
) -> Flask:
    """Build the Flask app around one loaded model.

    Args:
        checkpoint_dir_or_model: a saved ASiT checkpoint directory, or a loaded model.
        max_upload_mb: request bodies above this get 413.
        max_seconds: audio longer than this gets 422 (shorter long audio is windowed by ``predict``).
        cors_origins: origins allowed to call the API from other pages (``"*"`` for any). ``None``: no CORS
            headers, so browsers only let the app's own page call it.
        batching: ``"auto"`` (micro-batching on a GPU, a lock on a CPU), ``"lock"`` or ``"micro"`` (see the module
            docstring).
        top_k: default number of ranked classes (a request may ask for another with ``?top_k=``).
        device: where to run the model (default: CPU, or where the given model already is).
        precision: the backbone's precision for every request (``"auto"``, ``"fp32"``, ``"bf16"``, ``"fp16"``),
            resolved once by :func:`asit_helpers.runtime.resolve_precision`; ``/health`` says what it chose and why.
        max_listeners: concurrent live-listening sessions (one more gets 429). listen_idle_s: a session without a
            chunk for this long expires.
    """
    model = load_model(checkpoint_dir_or_model, device=device)
    served = _Served(
        model=model,
        predictor=make_predictor(model, batching),
        precision=resolve_precision(precision, model.device),
        labels=[model.config.id2label[i] for i in range(model.config.num_labels)],
        name=(Path(checkpoint_dir_or_model).resolve().name if isinstance(checkpoint_dir_or_model, (str, Path))
              else getattr(model.config, "_name_or_path", "") or "in-memory model"),
        max_upload_mb=max_upload_mb,
        max_seconds=max_seconds,
    )
    served.default_top_k = max(1, min(top_k, len(served.labels)))  # a 3-class model can't rank 5
    served.listeners = Listeners(model, predictor=served.predictor, max_listeners=max_listeners, idle_s=listen_idle_s,
                                 precision=served.precision.precision, top_k=served.default_top_k, realtime=True)
    app = Flask(__name__, template_folder=str(_PACKAGE / "templates"), static_folder=None)
    app.request_class = _InMemoryRequest
    app.config["MAX_CONTENT_LENGTH"] = int(max_upload_mb * 1024 * 1024)
    app.config["ASIT_PREDICTOR"] = served.predictor
    app.config["ASIT_PRECISION"] = served.precision
    app.config["ASIT_LISTENERS"] = served.listeners
    app.json.sort_keys = False
    _add_error_handlers(app, max_upload_mb)
    _add_headers(app, [cors_origins] if isinstance(cors_origins, str) else list(cors_origins or []))
    _add_page(app, served)
    _add_api(app, served)
    _add_live(app, served)
    from .teach_routes import add_teach_routes  # the page's Teach panel: per-session teaching on this backbone

    add_teach_routes(app, model, error=_error,
                     predictor_kwargs=dict(max_seconds=max_seconds, precision=served.precision.precision))
    return app


_PACKAGE = resources.files("asit_helpers")


@dataclass
class _Served:
    """What the routes share: the model, how requests reach it, and the limits."""

    model: AsitForAudioClassification
    predictor: Callable
    precision: Any  # runtime.PrecisionChoice, resolved once
    labels: list[str]
    name: str
    max_upload_mb: float
    max_seconds: float
    default_top_k: int = 5
    listeners: Listeners | None = None


def _add_error_handlers(app: Flask, max_upload_mb: float) -> None:
    """Every error is JSON: 413 names the limit; a bug is logged with its traceback and answered 500."""

    @app.errorhandler(HTTPException)
    def _http_error(exc: HTTPException):
        if exc.code == 413:
            return _error(413, too_large_message(max_upload_mb))
        resp, status = _error(exc.code or 400, exc.description or exc.name)
        if isinstance(exc, MethodNotAllowed) and exc.valid_methods:
            resp.headers["Allow"] = ", ".join(sorted(exc.valid_methods))
        return resp, status

    @app.errorhandler(Exception)
    def _unexpected(exc: Exception):  # a bug, not bad input: logged with its traceback, answered as JSON
        log.exception("unexpected error while serving %s", request.path)
        return _error(500, f"internal error ({type(exc).__name__}); see the server log")


def _add_headers(app: Flask, origins: list[str]) -> None:
    """``nosniff`` and the Content-Security-Policy on every response; CORS headers only for the configured origins."""

    @app.after_request
    def _headers(resp: Response) -> Response:
        resp.headers.setdefault("X-Content-Type-Options", "nosniff")
        resp.headers.setdefault("Content-Security-Policy", CONTENT_SECURITY_POLICY)
        origin = request.headers.get("Origin")
        if origins and origin and ("*" in origins or origin in origins):
            resp.headers["Access-Control-Allow-Origin"] = "*" if "*" in origins else origin
            resp.headers["Access-Control-Allow-Methods"] = "GET, POST, DELETE, OPTIONS"
            resp.headers["Access-Control-Allow-Headers"] = "Content-Type"
            resp.headers["Vary"] = "Origin"
        return resp


def _add_page(app: Flask, served: _Served) -> None:
    """The web page and its static files (from the package, by an allow-list of types)."""

    @app.get("/")
    def index():
        return render_template("index.html", labels=served.labels, model_name=served.name, version=__version__,
                               max_upload_mb=served.max_upload_mb, max_seconds=served.max_seconds)

    @app.get("/static/<path:name>")
    def static_file(name: str):
        target = _PACKAGE / "static" / name
        suffix = Path(name).suffix
        if "/" in name or "\\" in name or name.startswith(".") or suffix not in _STATIC_TYPES or not target.is_file():
            return _error(404, f"no such file: {name}")
        return Response(target.read_bytes(), mimetype=_STATIC_TYPES[suffix],
                        headers={"Cache-Control": "no-cache"})


def _add_api(app: Flask, served: _Served) -> None:
    """``/health``, ``/labels`` and ``/predict``."""
    labels = served.labels

    @app.get("/health")
    def health():
        return jsonify({
            "status": "ok",
            "model": served.name,
            "device": str(served.model.device),
            "precision": served.precision.precision,
            "precision_reason": served.precision.reason,
            "classes": len(labels),
            "labels": labels,
            "version": __version__,
            "batching": served.predictor.mode,
            "max_upload_mb": served.max_upload_mb,
            "max_seconds": served.max_seconds,
            "live": {"listeners": len(served.listeners), "max_listeners": served.listeners.max_listeners,
                     "hop_s": DEFAULT_HOP_S, "window_s": served.model.config.clip_seconds,
                     "expires_s": served.listeners.idle_s},
        })

    @app.get("/labels")
    def get_labels():
        return jsonify({"labels": labels})

    @app.route("/predict", methods=["POST", "OPTIONS"])
    def predict_route():
        if request.method == "OPTIONS":  # CORS preflight; headers added by _headers when configured
            return Response(status=204)
        k = request.args.get("top_k", str(served.default_top_k))
        if not (k.isascii() and k.isdigit()) or not 1 <= int(k) <= len(labels):  # "²".isdigit() is True
            return _error(400, f"top_k must be a whole number from 1 to {len(labels)}, got {k!r}")
        got = _request_audio()
        if got is None:
            return _error(400, "no audio: send a multipart form with a 'file' field, or the audio as the request body")
        data, name = got
        source = io.BytesIO(data)
        source.name = name  # load_audio names the upload in its error messages
        started = time.perf_counter()
        try:
            pred = served.predictor(source, top_k=int(k), max_seconds=served.max_seconds,
                                    precision=served.precision.precision)
        except AudioError as exc:  # the reason alone: the client knows its file's name (also in "source")
            if request.mimetype == "application/x-www-form-urlencoded":  # a real form, or curl's default type
                return _error(400, f"no audio: the body came as a form (application/x-www-form-urlencoded) and is "
                                   f"not audio ({exc.reason}); {_CURL_HINT}", source=name)
            return _error(_status_for(exc), exc.reason, source=name)
        body = pred.to_dict()
        body["source"] = name
        body["latency_ms"] = round((time.perf_counter() - started) * 1000.0, 2)
        return jsonify(body)


def _add_live(app: Flask, served: _Served) -> None:
    """Live listening on the served model: ``POST /live`` opens a session (see :func:`add_live_routes`)."""
    add_live_routes(app, lambda: served.listeners)


def add_live_routes(app: Flask, listeners_of: Callable[..., Listeners], rule: str = "/live", name: str = "live") -> None:
    """Live listening routes: ``POST rule`` opens a session, ``POST rule/<id>/audio?seq=N`` feeds it raw float32
    chunks (updates back, see :mod:`asit_helpers.live`), ``DELETE rule/<id>`` ends it. A bad chunk ends its session.

    ``listeners_of(**values)`` is given the rule's own URL values (none for ``/live``; the teaching session for the
    Teach panel's ``/teach/<sid>/live``) and returns the :class:`~asit_helpers.live.Listeners` to use, or raises
    ``LookupError(message)`` (answered 404). ``name`` prefixes the endpoints (one set of routes per ``rule``).
    """

    def registry(values: dict) -> Listeners:
        return listeners_of(**{k: v for k, v in values.items() if k != "session_id"})

    def live_open(**values):
        try:
            listeners = registry(values)
        except LookupError as exc:
            return _error(404, str(exc))
        given = request.args.get("hop_s") or (request.get_json(silent=True) or {}).get("hop_s") or DEFAULT_HOP_S
        try:
            hop_s = float(given)
            session = listeners.open(hop_s=hop_s)
        except ListenerLimit as exc:
            return _error(429, str(exc), max_listeners=listeners.max_listeners)
        except (TypeError, ValueError) as exc:
            detail = str(exc) if "hop_s" in str(exc) else f"hop_s must be a number of seconds, got {given!r}"
            return _error(400, detail)
        body = session.describe()
        body.update(audio_url=f"{request.path.lstrip('/')}/{session.id}/audio", expires_s=listeners.idle_s,
                    max_listeners=listeners.max_listeners)
        return jsonify(body), 201

    def live_audio(session_id: str, **values):
        try:
            listeners = registry(values)
        except LookupError as exc:
            return _error(404, str(exc))
        session = listeners.get(session_id)
        if session is None:
            return _error(404, f"no listening session {session_id[:40]!r}: it ended, or expired after "
                               f"{listeners.idle_s:g} s without audio; open a new one with POST {rule}")
        try:
            updates = session.feed_bytes(_live_chunk(), seq=_live_seq())
        except ChunkError as exc:
            ended = exc.status != 409  # a repeated chunk is the client's retry: the session goes on
            if ended:
                listeners.close(session_id)
            return _error(exc.status, exc.reason + ("; this listening session has ended" if ended else ""),
                          ended=ended)
        return jsonify({"session": session.id, "seq": session._next_seq - 1, "busy": not updates and session.busy,
                        "updates": updates, **session.stats()})

    def live_close(session_id: str, **values):
        try:
            session = registry(values).close(session_id)
        except LookupError as exc:
            return _error(404, str(exc))
        if session is None:
            return _error(404, f"no listening session {session_id[:40]!r} (it ended or expired)")
        return jsonify({"session": session.id, "ended": True, **session.stats()})

    app.add_url_rule(rule, f"{name}_open", live_open, methods=["POST"])
    app.add_url_rule(f"{rule}/<session_id>/audio", f"{name}_audio", live_audio, methods=["POST"])
    app.add_url_rule(f"{rule}/<session_id>", f"{name}_close", live_close, methods=["DELETE"])


def _live_chunk() -> bytes:
    """A live chunk's bytes: raw float32, never a form (whose parsing would eat or alter the samples)."""
    if request.mimetype in ("multipart/form-data", "application/x-www-form-urlencoded"):
        raise ChunkError(f"a live chunk is raw little-endian float32 samples (Content-Type: application/octet-stream),"
                         f" not a form ({request.mimetype})", 400)
    rate = request.args.get("sample_rate")
    if rate is not None and rate != "16000":
        raise ChunkError(f"live audio must be 16 kHz, got sample_rate={rate[:20]!r}: resample before sending "
                         "(in a page: new AudioContext({sampleRate: 16000}))")
    return request.get_data(cache=False)


def _live_seq() -> int | None:
    seq = request.args.get("seq")
    if seq is None:
        return None
    if not (seq.isascii() and seq.isdigit()):
        raise ChunkError(f"seq must be the chunk's number (0, 1, 2, ...), got {seq[:20]!r}", 400)
    return int(seq)


def too_large_message(max_upload_mb: float) -> str:
    return f"upload too large: the limit is {max_upload_mb:g} MB"


def _json_error_channel(max_upload_mb: float):
    """A waitress channel whose own errors (413 for a body over the limit, bad requests) are JSON like the app's."""
    from waitress.channel import HTTPChannel
    from waitress.task import ErrorTask

    class JsonErrorTask(ErrorTask):
        def execute(self):
            err = self.request.error
            message = too_large_message(max_upload_mb) if err.code == 413 else f"{err.reason.lower()}: {err.body}"
            body = json.dumps({"error": message, "status": err.code}).encode("utf-8")
            self.status = f"{err.code} {err.reason}"
            self.response_headers.extend([("Content-Type", "application/json"),
                                          ("Content-Security-Policy", CONTENT_SECURITY_POLICY),
                                          ("X-Content-Type-Options", "nosniff")])
            self.set_close_on_finish()
            self.content_length = len(body)
            self.write(body)

    return type("JsonErrorChannel", (HTTPChannel,), {"error_task_class": JsonErrorTask})


def serve(
    checkpoint: str | Path,
    host: str = DEFAULT_HOST,
    port: int = DEFAULT_PORT,
    threads: int = DEFAULT_THREADS,
    **app_kwargs: Any,
) -> None:
    """Serve the app with waitress (a production WSGI server that also runs on Windows). Blocks until stopped.

    Binds to 127.0.0.1 unless told otherwise; there is no debug mode.
    """
    import waitress.server

    app = create_app(checkpoint, **app_kwargs)
    max_body = app.config["MAX_CONTENT_LENGTH"]
    if host not in ("127.0.0.1", "localhost", "::1"):
        log.warning("listening on %s: anyone who can reach this machine can use the API", host)
    print(f"ASiT serving {checkpoint} on http://{host}:{port}/  ({threads} threads, "
          f"{app.config['ASIT_PREDICTOR'].mode}; {app.config['ASIT_PRECISION'].reason}); Ctrl+C to stop", flush=True)
    _stop_on_sigterm()
    limit = max_body + 64 * 1024  # room for the multipart framing around a file of exactly the limit
    # waitress answers 413 itself (plain text) when Content-Length is over the limit, without reading the body;
    # inbuf_overflow keeps accepted bodies in memory (by default waitress spools inputs over 512 KB to a temp file).
    logging.basicConfig()  # as waitress.serve does: its own warnings (queue depth) reach the console
    server = waitress.server.create_server(app, host=host, port=port, threads=threads, max_request_body_size=limit,
                           inbuf_overflow=limit, ident="asit")
    channel = _json_error_channel(app_kwargs.get("max_upload_mb", DEFAULT_MAX_UPLOAD_MB))
    for listener in [server] if hasattr(server, "channel_class") else list(server.map.values()):
        if hasattr(listener, "channel_class"):  # one per address when the host name resolves to several
            listener.channel_class = channel
    server.run()
    print("ASiT server stopped", flush=True)
    if _TERMINATED.is_set():
        # The process was asked to end and nothing is left to write: skip the interpreter's teardown of torch and
        # transformers (seconds on a busy machine), which would count against `docker stop`'s 10 s before SIGKILL.
        logging.shutdown()
        sys.stderr.flush()
        os._exit(0)


_TERMINATED = threading.Event()


def _stop_on_sigterm() -> None:
    """Let SIGTERM (``docker stop``, systemd, Kubernetes) stop waitress as Ctrl+C does: it exits its loop on
    SystemExit and gives running requests up to 5 s. Needed in a container, where the server is PID 1 and the
    kernel drops any signal that PID 1 has no handler for, so ``docker stop`` would wait and then kill it."""

    def terminate(signum, frame):
        _TERMINATED.set()
        sys.exit(0)

    if threading.current_thread() is threading.main_thread():
        signal.signal(signal.SIGTERM, terminate)
