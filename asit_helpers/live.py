"""Live listening: a continuous stream of 16 kHz samples in, an update every hop out.

:class:`ListenSession` keeps a bounded ring buffer of the newest audio (one model window plus one chunk). Every
``hop_s`` of audio it classifies the newest window through :func:`asit_helpers.inference.predict` (or the server's
predictor, which calls it) and returns an update: the top classes, every class's probability, the "no event"
answer for the newest hop (:func:`asit_helpers.activity.judge` against the session's own noise floor), the attention
curve over the window and the window's waveform envelope.

When the model is slower than real time, hops are **dropped, never queued**: a chunk that makes several hops due
gets one update, for the newest audio, and the others are counted in ``dropped_hops``; a chunk that arrives while
the session is still classifying is buffered and answered with no update. Latency therefore stays one
classification long, and ``updates_per_s`` reports the rate really achieved.

:class:`Listeners` is the registry ``asit serve`` keeps: a cap on concurrent sessions, idle expiry, unguessable ids.
Bad chunks (wrong type or length, NaN, integer PCM sent as float32, audio arriving faster than real time) raise
:class:`ChunkError`; the server ends that session with the message.

Without a server (the notebook widget's kernel side, ``asit timeline``)::

    session = ListenSession(model, hop_s=0.5)
    for chunk in chunks:                       # 1-D float32 at 16 kHz, any length up to max_chunk_s
        for update in session.feed(chunk):     # dicts, the same keys as the server's JSON
            print(update["t_end_s"], "no event" if update["no_event"] else update["label"])
"""

from __future__ import annotations

import secrets
import threading
import time
from collections import deque
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Callable

import numpy as np

from .activity import NoiseFloor, judge
from .audio import SAMPLE_RATE, AudioError
from .inference import no_event_fields, predict
from .model import AsitForAudioClassification

#: Default step between updates (seconds), as YAMNet's example (~0.49 s) and the issue ask.
DEFAULT_HOP_S = 0.5
#: Shortest hop a session accepts (seconds): faster than this only drops more hops.
MIN_HOP_S = 0.1
#: Longest chunk a session accepts (seconds of audio in one feed / one POST).
MAX_CHUNK_S = 2.0
#: Concurrent listening sessions per server.
DEFAULT_MAX_LISTENERS = 4
#: A session with no chunk for this long (seconds) expires.
DEFAULT_IDLE_S = 30.0
#: Float32 microphone audio lies in [-1, 1]; past this it is not float audio (int16 bytes, a file header, ...).
MAX_ABS_SAMPLE = 1.5
#: With ``realtime=True``, audio may run ahead of the wall clock by this factor plus this much (seconds): a client
#: catching up after a slow answer is fine; 48 kHz audio declared as 16 kHz arrives 3x too fast.
REALTIME_FACTOR, REALTIME_SLACK_S = 1.5, 3.0
#: A taught model's newest hop is "no event" when it holds less than this fraction of its even share of the
#: window's attention (:func:`heard_before_newest_hop`).
TAUGHT_HOP_ATTENTION = 0.25
#: Points in the waveform envelope of each update.
WAVEFORM_BINS = 200
#: ``updates_per_s`` counts the updates of the last this-many seconds (wall clock).
RATE_WINDOW_S = 10.0


class ChunkError(AudioError):
    """A chunk the session cannot use; ``status`` is the HTTP status the server answers with."""

    def __init__(self, reason: str, status: int = 422):
        super().__init__("audio chunk", reason)
        self.status = status


class ListenerLimit(RuntimeError):
    """The server already has its maximum number of listening sessions."""


def samples_from_bytes(data: bytes, max_samples: int) -> np.ndarray:
    """Raw little-endian float32 mono PCM → samples, or :class:`ChunkError` saying what is wrong with it."""
    if not data:
        raise ChunkError("empty chunk: send raw little-endian float32 mono samples at 16 kHz", 400)
    if len(data) > 4 * max_samples:
        raise ChunkError(f"chunk too large: {len(data) / 4 / SAMPLE_RATE:.2f} s of float32 audio; at most "
                         f"{max_samples / SAMPLE_RATE:g} s per chunk", 413)
    if len(data) % 4:
        raise ChunkError(f"{len(data)} bytes is not a whole number of float32 samples (4 bytes each)")
    return np.frombuffer(data, dtype="<f4").astype(np.float32)


def check_samples(samples: np.ndarray, max_samples: int) -> np.ndarray:
    """A 1-D float32 chunk of plausible audio, or :class:`ChunkError`."""
    x = np.asarray(samples)
    if x.ndim != 1:
        raise ChunkError(f"a chunk is 1-D mono samples, got shape {x.shape}", 400)
    if x.size == 0:
        raise ChunkError("empty chunk: no samples", 400)
    if x.size > max_samples:
        raise ChunkError(f"chunk too large: {x.size / SAMPLE_RATE:.2f} s; at most {max_samples / SAMPLE_RATE:g} s "
                         "per chunk", 413)
    x = x.astype(np.float32, copy=False)
    if not np.isfinite(x).all():
        raise ChunkError("chunk contains NaN or infinite samples (integer PCM sent as float32 looks like this)")
    peak = float(np.abs(x).max())
    tiny = np.count_nonzero((x != 0) & (np.abs(x) < 1e-20))
    if peak > MAX_ABS_SAMPLE or tiny > x.size // 10:
        raise ChunkError(f"chunk is not float32 audio in [-1, 1] (peak {peak:.3g}; {tiny} denormal-sized values): "
                         "send little-endian float32 samples, not integer PCM or a file")
    return x


@dataclass
class _Window:
    samples: np.ndarray
    start: int  # session sample index of samples[0]
    hop: np.ndarray  # the newest hop (what no_event judges)


class ListenSession:
    """One listener: feed chunks of 16 kHz float32 samples, get an update for the newest audio every hop.

    Args:
        model: a loaded :class:`~asit_helpers.model.AsitForAudioClassification`.
        hop_s: audio between updates. window_s: audio each update classifies (default: the model's
            ``clip_seconds``; shorter until that much has arrived).
        predictor: called like ``predict`` without its model (``asit serve`` passes its lock/queue); default
            :func:`~asit_helpers.inference.predict` on ``model``.
        realtime: refuse audio arriving much faster than the wall clock (a wrong sample rate); the server sets it,
            offline use (a file's timeline) does not.
        clock: seconds, monotonic (tests pass a fake one).
    """

    def __init__(
        self,
        model: AsitForAudioClassification,
        *,
        hop_s: float = DEFAULT_HOP_S,
        window_s: float | None = None,
        top_k: int = 5,
        precision: str = "auto",
        predictor: Callable | None = None,
        max_chunk_s: float = MAX_CHUNK_S,
        realtime: bool = False,
        session_id: str | None = None,
        clock: Callable[[], float] = time.monotonic,
    ):
        self.model = model
        self.window_s = float(window_s or model.config.clip_seconds)
        if not MIN_HOP_S <= hop_s <= self.window_s:
            raise ValueError(f"hop_s must be from {MIN_HOP_S:g} to {self.window_s:g} s (the window), got {hop_s!r}")
        self.hop_s = float(hop_s)
        self.id = session_id or secrets.token_urlsafe(18)
        self.top_k = max(1, min(top_k, model.config.num_labels))
        self.precision = precision
        self.labels = [model.config.id2label[i] for i in range(model.config.num_labels)]
        self.max_chunk = int(round(max_chunk_s * SAMPLE_RATE))
        self._window = int(round(self.window_s * SAMPLE_RATE))
        self._hop = int(round(self.hop_s * SAMPLE_RATE))
        self._predict = predictor or (lambda audio, **kw: predict(model, audio, **kw))
        self._realtime, self._clock = realtime, clock
        self._buf = np.zeros(0, dtype=np.float32)  # the newest <= window + max_chunk samples
        self._floor = NoiseFloor()
        self.received = 0  # samples fed so far
        self._classified_hops = 0  # hop boundaries already answered (or dropped)
        self.hops = self.dropped_hops = self.updates = 0
        self._next_seq = 0
        self._update_times: deque[float] = deque(maxlen=int(RATE_WINDOW_S / MIN_HOP_S) + 1)
        self.started = self.last_used = clock()
        self._state = threading.Lock()  # buffer and counters (held briefly)
        self._classifying = threading.Lock()  # at most one classification per session
        self.closed = False

    # -- feeding ----------------------------------------------------------------------------------------------------

    def feed(self, samples: np.ndarray, seq: int | None = None) -> list[dict[str, Any]]:
        """Add a chunk; return the update for the newest window if a hop became due (else ``[]``).

        Raises:
            ChunkError: a chunk that is not plausible 16 kHz float32 mono audio, or out of order (``seq``).
        """
        x = check_samples(samples, self.max_chunk)
        with self._state:
            self._check_order(seq, x.size)
            self._buf = np.concatenate([self._buf, x])[-(self._window + self.max_chunk):]
            self._floor.add(x)
            self.received += x.size
            self.hops = self.received // self._hop
            self.last_used = self._clock()
        if self.hops == self._classified_hops or not self._classifying.acquire(blocking=False):
            return []  # no hop due, or this session is classifying right now: that update will be the newest
        try:
            return [self._update()]
        finally:
            self._classifying.release()

    def feed_bytes(self, data: bytes, seq: int | None = None) -> list[dict[str, Any]]:
        """:meth:`feed` for raw little-endian float32 bytes (the server's request bodies)."""
        return self.feed(samples_from_bytes(data, self.max_chunk), seq)

    @property
    def busy(self) -> bool:
        return self._classifying.locked()

    def _check_order(self, seq: int | None, n: int) -> None:
        if seq is not None:
            if seq < self._next_seq:
                raise ChunkError(f"chunk {seq} was already received (expected {self._next_seq})", 409)
            if seq > self._next_seq:
                raise ChunkError(f"chunk {seq} arrived but chunk {self._next_seq} never did: audio went missing")
            self._next_seq += 1
        if self._realtime:
            ahead = (self.received + n) / SAMPLE_RATE
            allowed = REALTIME_FACTOR * (self._clock() - self.started) + REALTIME_SLACK_S
            if ahead > allowed:
                raise ChunkError(f"audio arrives faster than real time ({ahead:.1f} s of audio in "
                                 f"{self._clock() - self.started:.1f} s): is it really 16 kHz?")

    # -- one update -------------------------------------------------------------------------------------------------

    def _newest(self) -> _Window:
        with self._state:
            due, self._classified_hops = self.hops - self._classified_hops, self.hops
            self.dropped_hops += due - 1  # every hop due but the newest is skipped, not queued
            # whole hops only: while the first window fills, every session classifies the same few lengths (hop,
            # 2 hops, ...), not whatever the chunks summed to; each new input length costs the CPU backends new
            # kernels and buffers that they keep (server memory grew with every session start)
            n = min(self._buf.size // self._hop * self._hop, self._window)
            samples = self._buf[-n:].copy()
            start = self.received - n
        return _Window(samples, start, samples[-min(self._hop, n):])

    def _update(self) -> dict[str, Any]:
        win = self._newest()
        started = time.perf_counter()
        pred = self._predict(win.samples, top_k=self.top_k, precision=self.precision, max_seconds=None)
        gate = judge(win.hop, floor_db=self._floor.db())
        activity = no_event_fields(gate, pred.label, self.model.config)
        if gate.no_event and not activity["no_event"]:  # a taught model named a sound; the newest hop is quiet
            activity = heard_before_newest_hop(activity, pred, win.samples.size, win.hop.size)
        update = update_dict(pred, win.samples, win.start / SAMPLE_RATE, activity)
        update["classify_ms"] = round((time.perf_counter() - started) * 1000.0, 1)
        with self._state:
            self.updates += 1
            self._update_times.append(self._clock())
        return update

    def stats(self) -> dict[str, Any]:
        """Counters so far: hops due, updates given, hops dropped, the real update rate, audio received."""
        now = self._clock()
        with self._state:
            recent = [t for t in self._update_times if now - t <= RATE_WINDOW_S]
            span = min(RATE_WINDOW_S, max(now - self.started, 1e-9))
            return {"hops": self.hops, "updates_given": self.updates, "dropped_hops": self.dropped_hops,
                    "updates_per_s": round(len(recent) / span, 3), "hop_rate_per_s": round(1.0 / self.hop_s, 3),
                    "received_s": round(self.received / SAMPLE_RATE, 3)}

    def describe(self) -> dict[str, Any]:
        """What a client needs to stream to this session (the server's ``POST /live`` answer)."""
        return {"session": self.id, "sample_rate": SAMPLE_RATE, "format": "f32le", "channels": 1,
                "hop_s": self.hop_s, "window_s": self.window_s, "max_chunk_s": self.max_chunk / SAMPLE_RATE,
                "labels": self.labels, "top_k": self.top_k}


def heard_before_newest_hop(activity: dict, pred, window: int, hop: int) -> dict:
    """A taught model's event answer, for a newest hop that does not stand out from the room: "no event" when the
    attention also says the sound was heard earlier in the window (that hop holds under :data:`TAUGHT_HOP_ATTENTION`
    of its even share).

    Why: an update is shown for the newest hop, and a taught model decides no-event itself over its whole window
    (the energy gate alone would call a quiet or held taught sound nothing, see
    :func:`asit_helpers.inference.no_event_fields`), so its answer lingered up to window - hop after the sound ended
    (tests/test_teach_browser.py: ~1 s after each event with a 1.5 s window). Both must agree: attention alone cut a
    held buzz short once its onset had moved into the older part of the window."""
    attention = np.asarray(pred.weights, dtype=np.float64).mean(axis=0)
    newest = np.asarray(pred.frame_times_s) >= (window - hop) / SAMPLE_RATE
    if not newest.any() or newest.all():
        return activity
    share, even = float(attention[newest].sum()), float(newest.mean())
    if share >= TAUGHT_HOP_ATTENTION * even:
        return activity
    return dict(activity, no_event=True, no_event_reason=(
        f"heard earlier in the window, not in its newest {hop / SAMPLE_RATE:g} s (which does not stand out from the "
        f"room and holds {share:.0%} of the attention; {even:.0%} if spread evenly)"))


def update_dict(pred, samples: np.ndarray, start_s: float, activity: dict) -> dict[str, Any]:
    """One update as JSON-ready values: a window's Prediction, its place in session time, its activity."""
    attention = np.asarray(pred.weights, dtype=np.float64).mean(axis=0)
    return {
        "t_end_s": round(start_s + samples.size / SAMPLE_RATE, 4),
        "window_start_s": round(start_s, 4),
        "label": pred.label,
        "score": round(float(pred.score), 6),
        "top_k": [{"label": name, "score": round(float(p), 6)} for name, p in pred.top_k],
        "probabilities": np.round(pred.probabilities.astype(np.float64), 6).tolist(),
        "no_event": activity["no_event"],
        "no_event_reason": activity["no_event_reason"],
        "level_db": round(float(activity["level_db"]), 2),
        "attention": np.round(attention, 6).tolist(),
        "attention_uniform": round(1.0 / max(1, attention.size), 6),
        "frame_times_s": np.round(start_s + pred.frame_times_s.astype(np.float64), 4).tolist(),
        "waveform": envelope(samples),
    }


def envelope(samples: np.ndarray, bins: int = WAVEFORM_BINS) -> dict[str, Any]:
    """Min/max of each of ``bins`` equal stretches of ``samples`` (what a waveform drawing needs)."""
    edges = np.linspace(0, samples.size, min(bins, samples.size) + 1).astype(int)
    lo = [float(samples[a:b].min()) for a, b in zip(edges[:-1], edges[1:])]
    hi = [float(samples[a:b].max()) for a, b in zip(edges[:-1], edges[1:])]
    return {"bins": len(lo), "min": np.round(lo, 4).tolist(), "max": np.round(hi, 4).tolist()}


class Listeners:
    """The server's listening sessions: at most ``max_listeners`` at once, each expiring after ``idle_s`` without a
    chunk. Memory is bounded: each session holds one window plus one chunk of audio and 30 s of frame levels."""

    def __init__(
        self,
        model: AsitForAudioClassification,
        *,
        max_listeners: int = DEFAULT_MAX_LISTENERS,
        idle_s: float = DEFAULT_IDLE_S,
        clock: Callable[[], float] = time.monotonic,
        **session_kwargs: Any,
    ):
        self.model, self.max_listeners, self.idle_s, self._clock = model, max_listeners, idle_s, clock
        self._session_kwargs = session_kwargs
        self._sessions: dict[str, ListenSession] = {}
        self._lock = threading.Lock()

    def open(self, hop_s: float = DEFAULT_HOP_S) -> ListenSession:
        """A new session, or :class:`ListenerLimit` when ``max_listeners`` are listening."""
        self.expire()
        with self._lock:
            if len(self._sessions) >= self.max_listeners:
                raise ListenerLimit(f"{len(self._sessions)} listeners are already listening (the limit is "
                                    f"{self.max_listeners}); try again when one stops, or in {self.idle_s:g} s when "
                                    "an idle one expires")
            session = ListenSession(self.model, hop_s=hop_s, clock=self._clock, **self._session_kwargs)
            self._sessions[session.id] = session
        return session

    def get(self, session_id: str) -> ListenSession | None:
        self.expire()
        with self._lock:
            return self._sessions.get(session_id)

    def close(self, session_id: str) -> ListenSession | None:
        with self._lock:
            session = self._sessions.pop(session_id, None)
        if session is not None:
            session.closed = True
        return session

    def expire(self) -> list[str]:
        """End the sessions idle for ``idle_s`` or more; their ids."""
        now = self._clock()
        with self._lock:
            gone = [sid for sid, s in self._sessions.items() if now - s.last_used >= self.idle_s and not s.busy]
            for sid in gone:
                self._sessions.pop(sid).closed = True
        return gone

    def __len__(self) -> int:
        with self._lock:
            return len(self._sessions)


# -- a file's timeline: the same sessions, fed without a clock ---------------------------------------------------------


def timeline(model: AsitForAudioClassification, samples: np.ndarray, hop_s: float = DEFAULT_HOP_S,
             **session_kwargs: Any) -> list[dict[str, Any]]:
    """Every hop's update for a recording (16 kHz samples), as live listening would have shown it: a
    :class:`ListenSession` fed one hop at a time, so no hop is dropped."""
    session = ListenSession(model, hop_s=hop_s, **session_kwargs)
    hop = int(round(hop_s * SAMPLE_RATE))
    updates = []
    for start in range(0, len(samples), hop):
        updates.extend(session.feed(samples[start : start + hop]))
    return updates


def timeline_rows(updates: list[dict[str, Any]], labels: list[str]) -> list[dict[str, Any]]:
    """One CSV row per update: the hop it describes, the answer, no_event, every class's probability."""
    rows = []
    for u in updates:
        row = {"t_start_s": round(max(0.0, u["t_end_s"] - _hop_of(updates)), 4), "t_end_s": u["t_end_s"],
               "label": "" if u["no_event"] else u["label"], "model_label": u["label"], "score": u["score"],
               "no_event": u["no_event"], "level_db": u["level_db"]}
        row.update({name: p for name, p in zip(labels, u["probabilities"])})
        rows.append(row)
    return rows


def timeline_segments(updates: list[dict[str, Any]]) -> list[tuple[float, float, str]]:
    """Consecutive hops with the same answer merged: ``[(start_s, end_s, "dog (best 0.93)" or "no event")]``."""
    hop, segments = _hop_of(updates), []
    for u in updates:
        what = "no event" if u["no_event"] else u["label"]
        start = max(0.0, u["t_end_s"] - hop)
        if segments and segments[-1][2] == what:
            segments[-1][1], segments[-1][3] = u["t_end_s"], max(segments[-1][3], u["score"])
        else:
            segments.append([start, u["t_end_s"], what, u["score"]])
    return [(round(a, 3), round(b, 3), w if w == "no event" else f"{w} (best {p:.2f})") for a, b, w, p in segments]


def _hop_of(updates: list[dict[str, Any]]) -> float:
    return updates[1]["t_end_s"] - updates[0]["t_end_s"] if len(updates) > 1 else updates[0]["t_end_s"]


def save_timeline_csv(updates: list[dict[str, Any]], labels: list[str], path: str | Path) -> Path:
    import pandas as pd

    from .files import atomic_write_text

    atomic_write_text(Path(path), pd.DataFrame(timeline_rows(updates, labels)).to_csv(index=False))
    return Path(path)


def plot_timeline(updates: list[dict[str, Any]], labels: list[str], samples: np.ndarray | None = None,
                  max_classes: int = 8, title: str = ""):
    """The timeline as a figure: the waveform (when ``samples`` are given), then one row per class that was ever the
    answer (its probability per hop, darker = higher), a white dot where it was the answer, and a "no event" row.

    (Here rather than in viz.py, which another helper owns this session.)
    """
    import matplotlib.pyplot as plt

    hop = _hop_of(updates)
    ends = np.array([u["t_end_s"] for u in updates])
    probs = np.array([u["probabilities"] for u in updates])  # (hops, classes)
    quiet = np.array([u["no_event"] for u in updates])
    answered = [labels.index(u["label"]) for u in updates if not u["no_event"]]
    ranked = sorted(set(answered), key=lambda c: -answered.count(c))[:max_classes]
    rows = ranked or list(np.argsort(-probs.max(axis=0))[:3])
    fig, axes = plt.subplots(2 if samples is not None else 1, 1, figsize=(12, 2.2 + 0.35 * len(rows)),
                             sharex=True, squeeze=False, gridspec_kw={"height_ratios": [1, 1.6]} if samples is not None
                             else None)
    axes = axes[:, 0]
    if samples is not None:
        env = envelope(samples, 2000)
        t = np.linspace(0, samples.size / SAMPLE_RATE, env["bins"])
        axes[0].fill_between(t, env["min"], env["max"], color="0.3", lw=0)
        for end, q in zip(ends, quiet):
            if not q:
                axes[0].axvspan(end - hop, end, color="tab:orange", alpha=0.25, lw=0)
        axes[0].set_ylabel("waveform")
        axes[0].set_title(title or "timeline (orange: an event is heard)")
    ax = axes[-1]
    grid = np.vstack([quiet.astype(float)[None, :], probs[:, rows].T])
    ax.imshow(grid, aspect="auto", cmap="Blues", vmin=0, vmax=1, interpolation="nearest",
              extent=(ends[0] - hop, ends[-1], len(rows) + 0.5, -0.5))
    for i, (u, end) in enumerate(zip(updates, ends)):
        c = labels.index(u["label"])
        if not u["no_event"] and c in rows:
            ax.plot(end - hop / 2, 1 + rows.index(c), "o", ms=4, mfc="white", mec="black", mew=0.5)
    ax.set_yticks(range(len(rows) + 1), ["no event"] + [labels[c] for c in rows])
    ax.set_xlabel("time (s): each column is one hop; colour = probability; dot = the answer")
    fig.tight_layout()
    return fig
