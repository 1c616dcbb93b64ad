"""The page's Teach panel, server side: per-session teaching on the served model's backbone (``/teach`` routes).

    POST   /teach                          → 201 {session, limits, classes: {}, ...}   (429 at the session cap)
    GET    /teach/<id>                     → the session: recordings per class, background, the last report
    POST   /teach/<id>/classes             {"name": "clap"} → 201
    POST   /teach/<id>/clips/<class>       body: audio (any format load_audio reads; "background" for background)
    DELETE /teach/<id>/clips/<class>/<file>
    POST   /teach/<id>/train               → {report, labels}: the taught model is served at once for this session
    POST   /teach/<id>/predict             body: audio → the taught model's prediction (as /predict)
    POST   /teach/<id>/live                → live listening on the taught model: the /live routes' API
                                             (``/teach/<id>/live/<listen id>/audio?seq=N``, DELETE ...; serve.py)
    DELETE /teach/<id>                     → ends the session (its recordings and model stay on disk)

Each session has its own workspace folder (``TeachWorkspace``: the recordings as WAV, the taught model in
``model/``), bounded like live listening: at most ``max_sessions`` at once, ``max_clips`` recordings per class,
``max_classes`` classes, ``max_listeners`` listening to its model; idle sessions expire after ``expires_s``; one
Train runs at a time on the server (another gets 429 and tries again), so teaching never starves ``/predict`` of
more than one core's worth of work at once.
Sessions live in this process: behind a load balancer, a class's students stay on one replica (DESIGN.md).
"""

from __future__ import annotations

import secrets
import tempfile
import threading
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from flask import Flask, jsonify, request

from .audio import AudioError
from .live import Listeners
from .teach import BACKGROUND_FOLDER, NO_EVENT, TeachError, TeachWorkspace, teach


class Refused(Exception):
    """A /teach request answered with an error: its HTTP status and the reason (for people)."""

    def __init__(self, status: int, reason: str):
        super().__init__(reason)
        self.status, self.reason = status, reason


@dataclass
class TeachLimits:
    max_sessions: int = 4
    max_classes: int = 8
    max_clips: int = 30
    max_clip_seconds: float = 30.0
    expires_s: float = 15 * 60.0
    max_listeners: int = 2  # live-listening sessions on one teaching session's model (Listen on two devices)


@dataclass
class _Session:
    id: str
    workspace: TeachWorkspace
    model: Any = None
    report: dict | None = None
    listeners: Listeners | None = None  # live listening on the taught model (``/teach/<id>/live``)
    predictor: Any = None  # serve.LockedPredictor: the taught model's forward passes, on one worker thread
    seen: float = field(default_factory=time.monotonic)
    lock: threading.Lock = field(default_factory=threading.Lock)

    def describe(self) -> dict:
        counts = self.workspace.counts()
        return {"session": self.id, "classes": {k: v for k, v in counts.items() if k != BACKGROUND_FOLDER},
                "background": counts.get(BACKGROUND_FOLDER, 0),
                "recordings": {k: [p.name for p in self.workspace.recordings(k)] for k in counts},
                "trained": self.model is not None, "report": self.report, "no_event_label": NO_EVENT,
                "labels": [self.model.config.id2label[i] for i in range(self.model.config.num_labels)]
                if self.model is not None else []}

    def end(self) -> None:
        """Stop the taught model's worker thread (the recordings and the saved model stay on disk)."""
        if self.predictor is not None:
            self.predictor.close()
        self.listeners = self.predictor = None


class TeachSessions:
    """The capped registry of teaching sessions (one folder each under ``root``)."""

    def __init__(self, base, root: str | Path | None = None, limits: TeachLimits | None = None, *,
                 listen_kwargs: dict | None = None, **settings):
        self.base = base
        self.listen_kwargs = listen_kwargs or {}
        self.root = Path(root) if root is not None else Path(tempfile.mkdtemp(prefix="asit-teach-"))
        self.limits = limits or TeachLimits()
        self.settings = settings
        self.sessions: dict[str, _Session] = {}
        self.lock = threading.Lock()
        self.training = threading.Lock()

    def open(self) -> _Session | None:
        with self.lock:
            self.expire()
            if len(self.sessions) >= self.limits.max_sessions:
                return None
            sid = secrets.token_urlsafe(12)
            session = _Session(sid, TeachWorkspace(self.root / sid, max_seconds=self.limits.max_clip_seconds))
            self.sessions[sid] = session
            return session

    def get(self, sid: str) -> _Session | None:
        with self.lock:
            self.expire()
            session = self.sessions.get(sid)
            if session is not None:
                session.seen = time.monotonic()
            return session

    def close(self, sid: str) -> _Session | None:
        with self.lock:
            session = self.sessions.pop(sid, None)
        if session is not None:
            session.end()
        return session

    def expire(self) -> None:
        now = time.monotonic()
        for sid in [s for s, v in self.sessions.items() if now - v.seen > self.limits.expires_s]:
            self.sessions.pop(sid).end()

    def train(self, session: _Session) -> dict:
        """Teach from the session's recordings; raises TeachError (bad input) or BlockingIOError (busy)."""
        if not self.training.acquire(blocking=False):
            raise BlockingIOError("another session is training right now: try again in a few seconds")
        try:
            ws = session.workspace
            examples = {name: ws.recordings(name) for name in ws.classes() if ws.recordings(name)}
            result = teach(self.base, examples, ws.recordings(BACKGROUND_FOLDER), out=ws.root / "model",
                           **self.settings)
        finally:
            self.training.release()
        from .serve import LockedPredictor  # one worker thread per taught model, as the served model has (memory)

        old = session.predictor
        session.predictor = LockedPredictor(result.model)
        session.model, session.report = result.model, result.report.to_dict()
        # Listening on the old model ends: its sessions are not in the new registry (their next chunk gets 404).
        session.listeners = Listeners(result.model, predictor=session.predictor,
                                      max_listeners=self.limits.max_listeners, realtime=True, **self.listen_kwargs)
        if old is not None:
            old.close()
        return session.report


def add_teach_routes(app: Flask, base, *, error, predictor_kwargs: dict, root=None,
                     limits: TeachLimits | None = None, **settings) -> TeachSessions:
    """Register the ``/teach`` routes on ``app``; ``error(status, message)`` is the app's JSON error answer."""
    from .serve import add_live_routes

    sessions = TeachSessions(base, root, limits, listen_kwargs=dict(precision=predictor_kwargs.get("precision", "auto")),
                             **settings)
    app.config["ASIT_TEACH"] = sessions

    def route(rule: str, method: str, status: int = 200):
        """A /teach/<sid>... view: the session (or 404), its answer as JSON, a TeachError as 422 with its reason."""

        def register(view):
            def handler(sid, **values):
                session = sessions.get(sid)
                if session is None:
                    return error(404, f"no teaching session {sid!r} (ended or expired): start a new one")
                try:
                    answer = view(session, **values)
                except TeachError as exc:
                    return error(422, str(exc).removeprefix("error: "))
                except Refused as exc:
                    return error(exc.status, exc.reason)
                return jsonify(answer), status

            app.add_url_rule(rule, f"teach_{view.__name__}", handler, methods=[method])
            return view

        return register

    def audio_body() -> bytes:
        data = request.files["file"].read() if "file" in request.files else request.get_data()
        if not data:
            raise Refused(400, "no audio: send the recording as the request body or a 'file' form field")
        return data

    @app.post("/teach")
    def teach_open():
        session = sessions.open()
        if session is None:
            return error(429, f"{sessions.limits.max_sessions} teaching sessions are open already: try again when "
                              "one ends")
        body = session.describe() | {"limits": vars(sessions.limits)}
        return jsonify(body), 201

    @route("/teach/<sid>", "GET")
    def state(session):
        return session.describe()

    @app.delete("/teach/<sid>")
    def teach_close(sid):
        session = sessions.close(sid)
        return error(404, f"no teaching session {sid!r}") if session is None else jsonify({"session": sid, "ended": True})

    @route("/teach/<sid>/classes", "POST", 201)
    def add_class(session):
        name = str((request.get_json(silent=True) or {}).get("name") or request.args.get("name") or "")
        if len(session.workspace.classes()) >= sessions.limits.max_classes and name not in session.workspace.classes():
            raise TeachError(f"at most {sessions.limits.max_classes} classes per session")
        session.workspace.add_class(name)
        return session.describe()

    @route("/teach/<sid>/clips/<name>", "POST", 201)
    def add_clip(session, name):
        data = audio_body()
        if len(session.workspace.recordings(name)) >= sessions.limits.max_clips:
            raise TeachError(f"{name} has {sessions.limits.max_clips} recordings already (the most per class)")
        with session.lock:
            path = session.workspace.add_recording(name, data, request.args.get("filename") or "recording.wav")
        return session.describe() | {"saved": path.name}

    @route("/teach/<sid>/clips/<name>/<file_name>", "DELETE")
    def delete_clip(session, name, file_name):
        try:
            session.workspace.delete(name, file_name)
        except TeachError as exc:
            raise Refused(404, str(exc).removeprefix("error: ")) from None
        return session.describe()

    @route("/teach/<sid>/train", "POST")
    def train(session):
        try:
            with session.lock:
                sessions.train(session)
        except BlockingIOError as exc:
            raise Refused(429, str(exc)) from None
        return session.describe()

    @route("/teach/<sid>/predict", "POST")
    def predict_clip(session):
        if session.model is None:
            raise Refused(409, "nothing taught yet in this session: press Train first")
        try:
            return session.predictor(audio_body(), **predictor_kwargs).to_dict()
        except AudioError as exc:
            raise Refused(422, str(exc)) from None

    def taught_listeners(sid):
        """The /live routes' registry for a session's taught model (the Teach panel's Listen)."""
        session = sessions.get(sid)
        if session is None:
            raise LookupError(f"no teaching session {sid!r} (ended or expired): start a new one")
        if session.listeners is None:
            raise LookupError("nothing taught yet in this session: press Train, then Listen")
        return session.listeners

    add_live_routes(app, taught_listeners, rule="/teach/<sid>/live", name="teach_live")
    return sessions
