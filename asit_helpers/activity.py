"""Is anything happening? The "no event" answer that a closed-set classifier cannot give by itself.

A classifier trained on 22 classes names one of them for anything, silence included. This module decides, from the
audio alone, whether a stretch of sound stands out from its own background: an **energy gate against the noise
floor** of a listening session's recent past: live listening and ``asit timeline`` judge the newest hop against
the session's floor (:func:`judge`). A single clip (``predict``, ``/predict``) has no past: :func:`judge_clip` calls
it "no event" only when it is silent or, when the room's floor is known, against that floor.

Why energy and not the model's confidence: measured on silence, room-like noise and the synthetic events between
them (``bench/no_event.py``; figures in bench/README.md), a model trained on the synthetic classes is about as
confident on event-free windows as on events, so a confidence band cannot tell them apart, while the level above the
floor can. Its limit: a sound that never stops (rain through a whole clip) *is* the clip's background, so a single clip
is not gated against its own floor; a listening session sees such a sound start, because its floor comes from the
seconds before (and after half a minute of it, the sound has become the room).

Levels are in dB of mean square (0 dB = a full-scale square wave; a full-scale sine is -3 dB), over 50 ms frames.
"""

from __future__ import annotations

from collections import deque
from dataclasses import dataclass

import numpy as np

from .audio import SAMPLE_RATE

#: Frame over which levels are measured (samples at 16 kHz): 50 ms.
FRAME = 800
#: The noise floor is this percentile of the frame levels: the median (events are short; a low percentile such as
#: the 20th sits in the dips of fluctuating noise, so noise itself "stands out": bench/no_event.py).
FLOOR_PERCENTILE = 50.0
#: The loudest stretch of this many frames (250 ms) is what must stand out: one click is not an event.
SPAN_FRAMES = 5
#: A stretch this many dB above the noise floor is an event (between the loudest background-only clip and the
#: quietest 3 dB-SNR event clip of bench/no_event.py's set).
EVENT_MARGIN_DB = 4.5
#: Below this level (dB) everything is silence, whatever the floor: a muted microphone, digital zeros.
SILENCE_DB = -60.0
#: A listening session's floor comes from this much of its recent past (seconds).
FLOOR_HISTORY_S = 30.0

#: What to tell a user about a steady single clip (``Activity.steady``): the CLI prints it, the page shows its own.
STEADY_NOTE = ("steady sound: nothing in the clip stands out from its own level, so it is one sound throughout or "
               "background only; the answer is the model's alone")

_TINY = 1e-12


@dataclass
class Activity:
    """The gate's answer for one stretch of audio.

    Attributes:
        no_event: True when nothing stands out (silence, or nothing above the noise floor by the margin).
        reason: a sentence saying why there is no event (None when there is one).
        level_db: how far the loudest 250 ms stands above the noise floor (dB).
        peak_db: level of the loudest 250 ms (dB of mean square); floor_db: the noise floor used.
        steady: a single clip in which nothing stands out from its own level (one sound throughout, or steady
            background: the gate cannot tell which, so the model's answer stands; :func:`judge_clip`).
    """

    no_event: bool
    reason: str | None
    level_db: float
    peak_db: float
    floor_db: float
    steady: bool = False

    def to_dict(self) -> dict:
        return {"no_event": self.no_event, "no_event_reason": self.reason, "level_db": round(self.level_db, 2)}


def frame_levels_db(samples: np.ndarray, frame: int = FRAME) -> np.ndarray:
    """`(frames,)` level of each whole ``frame`` of ``samples`` in dB (a trailing part frame is left out; audio
    shorter than one frame is one frame)."""
    x = np.asarray(samples, dtype=np.float64)
    n = max(1, x.size // frame)
    power = (x[: n * frame].reshape(n, frame) ** 2).mean(axis=1) if x.size >= frame else np.array([np.mean(x**2)])
    return 10.0 * np.log10(power + _TINY)


def span_peak_db(levels_db: np.ndarray, span: int = SPAN_FRAMES) -> float:
    """Level of the loudest ``span`` consecutive frames (mean power over the span, in dB)."""
    power = 10.0 ** (np.asarray(levels_db, dtype=np.float64) / 10.0)
    span = max(1, min(span, power.size))
    run = np.convolve(power, np.ones(span) / span, mode="valid")
    return float(10.0 * np.log10(run.max() + _TINY))


def noise_floor_db(levels_db: np.ndarray, percentile: float = FLOOR_PERCENTILE) -> float:
    """The background's level: a low percentile of the frame levels."""
    return float(np.percentile(np.asarray(levels_db, dtype=np.float64), percentile))


def judge(
    samples: np.ndarray,
    floor_db: float | None = None,
    margin_db: float = EVENT_MARGIN_DB,
    silence_db: float = SILENCE_DB,
) -> Activity:
    """Does ``samples`` (16 kHz) hold an event? Its loudest 250 ms against ``floor_db`` (default: the floor of
    ``samples`` themselves, :func:`noise_floor_db`)."""
    levels = frame_levels_db(samples)
    peak = span_peak_db(levels)
    floor = noise_floor_db(levels) if floor_db is None else float(floor_db)
    level = peak - floor
    if peak < silence_db:
        return Activity(True, f"silence: the loudest 250 ms is at {peak:.0f} dB (below {silence_db:g} dB)",
                        level, peak, floor)
    if level < margin_db:
        return Activity(True, f"no event: nothing stands out from the background (the loudest 250 ms is "
                              f"{level:.1f} dB above the noise floor; an event needs {margin_db:g} dB)",
                        level, peak, floor)
    return Activity(False, None, level, peak, floor)


def judge_clip(samples: np.ndarray, floor_db: float | None = None, silence_db: float = SILENCE_DB) -> Activity:
    """Does a single clip (``predict``) hold an event? Against ``floor_db`` when the room's floor is known (then as
    :func:`judge`); without one, only silence is "no event" and otherwise the model's answer stands.

    Why not the clip's own floor: a clip that is one sound from start to end (rain, an engine, a held whistle: many
    ESC-50 and UrbanSound8K clips) has no quieter part, so against its own median it "stands out" by 0 dB and would
    be called nothing although the model names it (bench/no_event.py's ``sustained`` group). ``level_db`` still
    says how far the loudest 250 ms stands above the clip's own median, and ``steady`` is True when nothing stands
    out from it (then the clip is one sound throughout, or background only, and the model's answer is all there is:
    measured, neither a confidence band nor a fixed attention threshold separates the two across checkpoints).
    """
    if floor_db is not None:
        return judge(samples, floor_db=floor_db, silence_db=silence_db)
    own = judge(samples, silence_db=silence_db)
    if own.peak_db < silence_db:
        return own
    return Activity(False, None, own.level_db, own.peak_db, own.floor_db, steady=own.no_event)


class NoiseFloor:
    """A listening session's noise floor: :func:`noise_floor_db` over the last ``history_s`` of frame levels.

    Bounded memory (one float per 50 ms frame of history); audio that does not fill a frame waits for the next
    chunk, so chunk sizes do not change the levels.
    """

    def __init__(self, history_s: float = FLOOR_HISTORY_S):
        self._levels: deque[float] = deque(maxlen=max(1, int(history_s * SAMPLE_RATE / FRAME)))
        self._rest = np.zeros(0, dtype=np.float32)

    def add(self, samples: np.ndarray) -> None:
        x = np.concatenate([self._rest, np.asarray(samples, dtype=np.float32)])
        whole = (x.size // FRAME) * FRAME
        if whole:
            self._levels.extend(frame_levels_db(x[:whole]).tolist())
        self._rest = x[whole:]

    def db(self) -> float | None:
        """The floor now (None before the first whole frame)."""
        return noise_floor_db(np.fromiter(self._levels, dtype=np.float64)) if self._levels else None
