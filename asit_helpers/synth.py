"""Synthetic soundscapes: 22 procedurally synthesised event classes with known event onsets (the offline default).

Each clip is ``seconds`` (5 s) of background noise of one of several kinds, shared by all classes so it carries no
class information, with **one** event of the clip's class mixed in at a random onset, a random duration and a
random signal-to-noise ratio. The event is the only evidence, and ``events.csv`` says exactly where it is, so an
attention curve can be scored against the truth (``evaluate.py``).

Layout (the same ``Category/class/clip`` tree the real-data recipes read, so one pipeline ingests both)::

    OUT/Animals/dog/dog_0000.wav  ...  OUT/Environmental/rain/rain_0014.wav
    OUT/events.csv   path (relative, "/"-separated), label, category, onset_s, offset_s, snr_db, background,
                     distractors (JSON list of [onset_s, offset_s, kind, dB]; "[]" without), seed

With ``distractors=N`` (``asit synth --distractors N``) each clip also gets N loud non-target sounds (noise bursts,
clatter, door-like thumps) outside the event, 0-10 dB above it: there the loudest part of a clip is *not* the
event, so a localisation score can tell a model that learned the event from an energy detector.

Classes are told apart by their *event*: spectral shape, pitch range and temporal pattern (barks vs meows vs
moos, chirps vs trills vs hoots, engine hum vs siren wail vs horn, rain vs wind vs thunder ...). Pitch, timbre,
rhythm, duration and level vary within a class. Everything is vectorised numpy; a clip is a function of
``(class, per-clip seed)`` only, so adding clips or classes never changes the clips already made.

    from asit_helpers.synth import make_soundscapes
    events = make_soundscapes("data/synth", clips_per_class=40, seed=0)   # DataFrame, one row per clip
"""

from __future__ import annotations

import json
import os
import tempfile
from dataclasses import dataclass
from pathlib import Path
from typing import Callable

import numpy as np
import pandas as pd
import soundfile as sf

from .audio import SAMPLE_RATE

__all__ = [
    "SYNTH_CLASSES",
    "BACKGROUNDS",
    "SynthClass",
    "render_clip",
    "render_two_event_clip",
    "make_soundscapes",
    "clip_seed",
    "DISTRACTORS",
    "parse_spans",
]

SR = SAMPLE_RATE
TWO_PI = 2.0 * np.pi
#: Event-to-background SNR range (dB), drawn uniformly per clip. The low end is hard but audible; below ~3 dB
#: noise-like events (wind, rain) drown in the white/pink backgrounds, which teaches nothing.
DEFAULT_SNR_DB = (3.0, 20.0)


# ---- building blocks ----------------------------------------------------------------------------------------------
# All return float32 arrays of shape (n,) unless stated. ``rng`` is a numpy Generator.


def _t(n: int) -> np.ndarray:
    return np.arange(n, dtype=np.float64) / SR


def _fade(n: int, attack_s: float, release_s: float) -> np.ndarray:
    """Raised-cosine attack and release (no clicks at the edges of an event or sub-event)."""
    env = np.ones(n)
    a = min(n // 2, max(1, int(attack_s * SR)))
    r = min(n // 2, max(1, int(release_s * SR)))
    env[:a] = 0.5 - 0.5 * np.cos(np.linspace(0, np.pi, a))
    env[n - r :] = 0.5 + 0.5 * np.cos(np.linspace(0, np.pi, r))
    return env


def _shaped_noise(rng: np.random.Generator, n: int, gain: Callable[[np.ndarray], np.ndarray]) -> np.ndarray:
    """White noise coloured in the frequency domain by ``gain(freqs_hz)``, normalised to unit RMS."""
    spec = np.fft.rfft(rng.standard_normal(n))
    freqs = np.fft.rfftfreq(n, 1.0 / SR)
    out = np.fft.irfft(spec * gain(freqs), n)
    return out / (np.sqrt(np.mean(out**2)) + 1e-12)


def _band(lo: float, hi: float, slope: float = 0.15) -> Callable[[np.ndarray], np.ndarray]:
    """A smooth band-pass gain (log-frequency Gaussian-ish edges) for :func:`_shaped_noise`."""

    def gain(f: np.ndarray) -> np.ndarray:
        lf = np.log(np.maximum(f, 1.0))
        g = np.ones_like(f)
        g = np.where(lf < np.log(lo), np.exp(-(((lf - np.log(lo)) / slope) ** 2)), g)
        g = np.where(lf > np.log(hi), np.exp(-(((lf - np.log(hi)) / slope) ** 2)), g)
        return g

    return gain


def _harmonic(
    f0: np.ndarray,
    weights: np.ndarray,
    formant: tuple[float, float] | None = None,
    phase0: float = 0.0,
) -> np.ndarray:
    """Harmonic tone with instantaneous fundamental ``f0`` (Hz, shape (n,)) and per-harmonic ``weights`` (K,).

    ``formant=(centre_hz, width_octaves)`` tilts the harmonics' amplitudes towards a resonance, which is what
    makes a moo, a meow and a caw different timbres at similar pitch. Harmonics above Nyquist are silenced.
    """
    phase = phase0 + TWO_PI * np.cumsum(f0) / SR  # (n,)
    k = np.arange(1, len(weights) + 1)[:, None]  # (K, 1)
    freqs = k * f0[None, :]  # (K, n)
    amp = weights[:, None] * (freqs < 0.45 * SR)
    if formant is not None:
        centre, width = formant
        amp = amp * np.exp(-((np.log2(np.maximum(freqs, 1.0) / centre) / width) ** 2))
    out = (amp * np.sin(k * phase[None, :])).sum(axis=0)
    return out / (np.sqrt(np.mean(out**2)) + 1e-12)


def _rolloff(rng: np.random.Generator, k: int, lo: float, hi: float) -> np.ndarray:
    """Harmonic weights ``1/h^p`` with a random exponent ``p`` in [lo, hi] and a little per-harmonic jitter."""
    h = np.arange(1, k + 1)
    return h ** (-rng.uniform(lo, hi)) * rng.uniform(0.6, 1.0, k)


def _place(total: int, pieces: list[tuple[int, np.ndarray]]) -> np.ndarray:
    """Add sub-events (start sample, samples) into a silent buffer of ``total`` samples."""
    out = np.zeros(total)
    for start, piece in pieces:
        start = max(0, min(start, total - 1))
        end = min(total, start + len(piece))
        out[start:end] += piece[: end - start]
    return out


def _sequence(
    rng: np.random.Generator, total: int, unit_s: tuple[float, float], gap_s: tuple[float, float]
) -> list[tuple[int, int]]:
    """(start, length) of repeated sub-events filling ``total`` samples: the first starts at 0, the last ends
    at most at ``total`` (so the event window really begins and ends with sound)."""
    spans, pos = [], 0
    while True:
        length = int(rng.uniform(*unit_s) * SR)
        if pos + length > total:
            break
        spans.append((pos, length))
        pos += length + int(rng.uniform(*gap_s) * SR)
    if len(spans) <= 1:  # room for one unit only: one longer call (up to twice the usual) that fills the window
        return [(0, min(total, int(2 * unit_s[1] * SR)))]
    # Spread the unused tail over the gaps (up to doubling them), so the calls span the whole window instead of
    # leaving silence at its end.
    leftover = total - (spans[-1][0] + spans[-1][1])
    if len(spans) > 1 and leftover > 0:
        extra = min(leftover / (len(spans) - 1), gap_s[1] * SR)
        spans = [(start + int(i * extra), length) for i, (start, length) in enumerate(spans)]
    return spans


def _impulses(rng: np.random.Generator, n: int, rate_hz: float) -> np.ndarray:
    """Sample positions of a Poisson process with ``rate_hz`` events per second over ``n`` samples."""
    count = rng.poisson(rate_hz * n / SR)
    return np.sort(rng.integers(0, n, count))


def _decaying_tones(
    rng: np.random.Generator, n: int, times: np.ndarray, freq: tuple[float, float], decay_s: tuple[float, float],
    glide: float = 0.0,
) -> np.ndarray:
    """A short exponentially decaying sinusoid at each time in ``times`` (droplets, bubbles, clicks)."""
    length = int(4 * decay_s[1] * SR) + 1
    tt = _t(length)
    pieces = []
    for start in times:
        f = rng.uniform(*freq)
        tau = rng.uniform(*decay_s)
        inst = f * (1.0 + glide * tt / (4 * decay_s[1]))
        ph = TWO_PI * np.cumsum(inst) / SR
        pieces.append((int(start), np.sin(ph) * np.exp(-tt / tau) * rng.uniform(0.3, 1.0)))
    return _place(n, pieces)


# ---- the 22 event classes -----------------------------------------------------------------------------------------
# Each generator takes (rng, n_samples) and returns the event, shape (n,), any scale (normalised later).


def _dog(rng, n):  # barks: 2-4 short harmonic bursts, fast downward glide, noisy, sharp attack
    f0 = rng.uniform(380, 750)
    w = _rolloff(rng, 12, 0.6, 1.1)
    pieces = []
    for start, length in _sequence(rng, n, (0.09, 0.18), (0.08, 0.25)):
        t = _t(length)
        contour = f0 * rng.uniform(0.9, 1.1) * (1.2 - 0.45 * t / t[-1])
        tone = _harmonic(contour, w, formant=(rng.uniform(900, 1600), 1.3))
        noise = _shaped_noise(rng, length, _band(500, 3500))
        pieces.append((start, (tone + 0.5 * noise) * _fade(length, 0.004, 0.05) * np.exp(-t / 0.09)))
    return _place(n, pieces)


def _cat(rng, n):  # meow: one long call, pitch rises then falls, the vowel formant opens and closes
    f0 = rng.uniform(350, 600)
    t = _t(n) / (n / SR)
    contour = f0 * (1.0 + rng.uniform(0.4, 0.8) * np.sin(np.pi * t**rng.uniform(0.7, 1.2)))
    w = _rolloff(rng, 10, 0.8, 1.4)
    formant_centre = rng.uniform(1200, 2200)
    tone = _harmonic(contour, w, formant=(formant_centre, 1.6))
    bright = 0.4 + 0.6 * np.sin(np.pi * t)  # "m-e-o-w": darker at both ends
    return tone * bright * _fade(n, 0.05, 0.12)


def _cow(rng, n):  # moo: long, low, strongly harmonic with a low formant; slow attack
    f0 = rng.uniform(95, 170)
    t = _t(n) / (n / SR)
    contour = f0 * (1.0 + 0.25 * np.sin(np.pi * t) - 0.1 * t)
    tone = _harmonic(contour, _rolloff(rng, 20, 0.5, 0.9), formant=(rng.uniform(350, 700), 1.2))
    return tone * _fade(n, 0.15, 0.25)


def _frog(rng, n):  # croaks: repeated short pulsed tones (a fast 20-40 Hz amplitude rattle) at 3-6 per second
    f0 = rng.uniform(180, 350)
    rattle = rng.uniform(20, 40)
    w = _rolloff(rng, 10, 0.4, 0.8)
    pieces = []
    for start, length in _sequence(rng, n, (0.08, 0.16), (0.08, 0.2)):
        t = _t(length)
        tone = _harmonic(np.full(length, f0 * rng.uniform(0.95, 1.05)), w, formant=(rng.uniform(500, 1200), 1.5))
        am = 0.5 + 0.5 * np.sign(np.sin(TWO_PI * rattle * t))
        pieces.append((start, tone * am * _fade(length, 0.005, 0.02)))
    return _place(n, pieces)


def _sheep(rng, n):  # bleat: mid pitch with deep, fast vibrato and tremolo ("baa-aa-aa")
    f0 = rng.uniform(230, 400)
    t = _t(n)
    rate = rng.uniform(6, 10)
    contour = f0 * (1.0 + 0.06 * np.sin(TWO_PI * rate * t))
    tone = _harmonic(contour, _rolloff(rng, 14, 0.5, 0.9), formant=(rng.uniform(800, 1500), 1.0))
    trem = 0.55 + 0.45 * np.sin(TWO_PI * rate * t)
    return tone * trem * _fade(n, 0.04, 0.1)


def _insects(rng, n):  # buzz: continuous, bright sawtooth-like tone with a wobbling pitch
    f0 = rng.uniform(170, 280)
    t = _t(n)
    contour = f0 * (1.0 + 0.03 * np.sin(TWO_PI * rng.uniform(2, 6) * t) + 0.01 * rng.standard_normal(n).cumsum() / np.sqrt(n))
    tone = _harmonic(contour, _rolloff(rng, 40, 0.15, 0.45))
    return tone * (0.8 + 0.2 * np.sin(TWO_PI * rng.uniform(0.5, 2) * t)) * _fade(n, 0.06, 0.08)


def _chirping_birds(rng, n):  # chirps: many very short, fast pure-tone sweeps high up (2-6 kHz)
    pieces = []
    for start, length in _sequence(rng, n, (0.03, 0.08), (0.02, 0.12)):
        t = _t(length) / (length / SR)
        lo, hi = sorted(rng.uniform(2000, 6000, 2))
        contour = lo + (hi - lo) * (t if rng.random() < 0.6 else 1 - t)
        pieces.append((start, np.sin(TWO_PI * np.cumsum(contour) / SR) * np.sin(np.pi * t)))
    return _place(n, pieces)


def _warbler(rng, n):  # trill: one note repeated very fast (12-25 per second), near-constant pitch, 2.5-5 kHz
    rate = rng.uniform(12, 25)
    f = rng.uniform(2500, 5000)
    t = _t(n)
    contour = f * (1.0 + 0.08 * np.sin(TWO_PI * rate * t))
    gate = np.maximum(0.0, np.sin(TWO_PI * rate * t)) ** 2
    tone = np.sin(TWO_PI * np.cumsum(contour) / SR) + 0.2 * np.sin(2 * TWO_PI * np.cumsum(contour) / SR)
    return tone * gate * _fade(n, 0.02, 0.05)


def _owl(rng, n):  # hoots: 2-4 soft, low, nearly pure tones
    f0 = rng.uniform(280, 480)
    pieces = []
    for start, length in _sequence(rng, n, (0.22, 0.4), (0.1, 0.3)):
        t = _t(length) / (length / SR)
        contour = f0 * rng.uniform(0.97, 1.03) * (1.0 + 0.05 * np.sin(np.pi * t))
        tone = _harmonic(contour, np.array([1.0, 0.12, 0.05]))
        pieces.append((start, tone * _fade(length, 0.06, 0.1)))
    return _place(n, pieces)


def _crow(rng, n):  # caws: 2-4 harsh, rough harmonic calls (noisy, amplitude-roughened), mid formant
    f0 = rng.uniform(380, 650)
    pieces = []
    for start, length in _sequence(rng, n, (0.15, 0.3), (0.08, 0.2)):
        t = _t(length)
        contour = f0 * rng.uniform(0.93, 1.07) * (1.0 - 0.12 * t / t[-1])
        tone = _harmonic(contour, _rolloff(rng, 16, 0.2, 0.5), formant=(rng.uniform(1100, 2000), 1.0))
        rough = 1.0 + 0.7 * np.sin(TWO_PI * rng.uniform(60, 110) * t)
        noise = _shaped_noise(rng, length, _band(800, 3000))
        pieces.append((start, (tone * rough + 0.6 * noise) * _fade(length, 0.01, 0.04)))
    return _place(n, pieces)


def _rooster(rng, n):  # "cock-a-doodle-doo": 4 bright syllables stepping in pitch, the last the longest
    f0 = rng.uniform(650, 950)
    steps = np.array([1.0, 1.35, 1.25, 1.1]) * rng.uniform(0.95, 1.05, 4)
    frac = np.array([0.15, 0.15, 0.2, 0.5])
    edges = np.concatenate([[0], np.cumsum(frac / frac.sum())]) * n
    contour = np.empty(n)
    for i in range(4):
        contour[int(edges[i]) : int(edges[i + 1])] = f0 * steps[i]
    kernel = np.hanning(int(0.02 * SR))
    contour = np.convolve(contour, kernel / kernel.sum(), mode="same")
    contour[: len(kernel)] = contour[len(kernel)]
    contour[-len(kernel) :] = contour[-len(kernel) - 1]
    tone = _harmonic(contour, _rolloff(rng, 10, 0.3, 0.6), formant=(rng.uniform(1800, 3000), 1.4))
    gaps = np.ones(n)  # short breaks between the syllables
    for edge in edges[1:4]:
        g0 = int(edge - rng.uniform(0.02, 0.05) * SR)
        gaps[max(0, g0) : int(edge)] = 0.0
    smooth = np.hanning(int(0.01 * SR))
    gaps = np.convolve(gaps, smooth / smooth.sum(), mode="same")
    return tone * gaps * _fade(n, 0.02, 0.15)


def _engine(rng, n):  # hum: low firing frequency (30-70 Hz) with strong low harmonics plus a rumble
    f0 = rng.uniform(30, 70)
    t = _t(n)
    contour = f0 * (1.0 + 0.02 * np.sin(TWO_PI * rng.uniform(0.3, 1.5) * t))
    w = np.array([0.6, 1.0, 0.8, 0.9, 0.5, 0.4, 0.3, 0.2, 0.15, 0.1]) * rng.uniform(0.5, 1.0, 10)
    tone = _harmonic(contour, w)
    rumble = _shaped_noise(rng, n, _band(40, 250))
    return (tone + 0.4 * rumble) * _fade(n, 0.1, 0.15)


def _siren(rng, n):  # wail: a slow sinusoidal sweep between ~650 and ~1500 Hz
    lo, hi = rng.uniform(550, 800), rng.uniform(1200, 1700)
    rate = rng.uniform(0.8, 2.5)
    t = _t(n)
    contour = lo + (hi - lo) * (0.5 - 0.5 * np.cos(TWO_PI * rate * t + rng.uniform(0, np.pi)))
    return _harmonic(contour, np.array([1.0, 0.3, 0.15])) * _fade(n, 0.03, 0.05)


def _car_horn(rng, n):  # horn: 1-2 steady two-tone chords, square-like (odd harmonics), abrupt on and off
    f0 = rng.uniform(330, 500)
    odd = np.array([1.0 / k if k % 2 else 0.12 / k for k in range(1, 14)])
    pieces = []
    spans = _sequence(rng, n, (0.3, 0.8), (0.1, 0.2)) if rng.random() < 0.5 else [(0, n)]
    for start, length in spans:
        chord = _harmonic(np.full(length, f0), odd) + 0.8 * _harmonic(np.full(length, f0 * 1.26), odd)
        pieces.append((start, chord * _fade(length, 0.008, 0.01)))
    return _place(n, pieces)


def _helicopter(rng, n):  # rotor thump: a 10-25 Hz train of low, decaying thumps with a broadband slap
    rate = rng.uniform(10, 25)
    times = np.arange(0, n, SR / rate).astype(int)
    thump_len = int(0.045 * SR)
    tt = _t(thump_len)
    pieces = []
    for start in times:
        body = np.sin(TWO_PI * rng.uniform(70, 140) * tt) * np.exp(-tt / 0.015)
        slap = rng.standard_normal(thump_len) * np.exp(-tt / 0.004) * 0.5
        pieces.append((int(start), body + slap))
    whine = 0.08 * np.sin(TWO_PI * rng.uniform(1500, 2500) * _t(n))
    return (_place(n, pieces) + whine) * _fade(n, 0.05, 0.05)


def _train(rng, n):  # clatter: pairs of metallic clicks ("clack-clack") at a steady rate over a low rumble
    period = rng.uniform(0.25, 0.45)
    pair_gap = rng.uniform(0.07, 0.12)
    click_len = int(0.03 * SR)
    tt = _t(click_len)
    pieces = []
    for base in np.arange(0.0, n / SR - pair_gap, period):
        for offset in (0.0, pair_gap):
            click = _shaped_noise(rng, click_len, _band(2000, 5000)) * np.exp(-tt / 0.006)
            click += np.sin(TWO_PI * rng.uniform(2500, 4000) * tt) * np.exp(-tt / 0.01)
            pieces.append((int((base + offset) * SR), click))
    rumble = _shaped_noise(rng, n, _band(50, 300)) * 0.35
    return (_place(n, pieces) + rumble) * _fade(n, 0.03, 0.05)


def _airplane(rng, n):  # jet: a swelling broadband roar (hump at 200-800 Hz) with a gliding turbine whine
    t = _t(n) / (n / SR)
    roar = _shaped_noise(rng, n, _band(rng.uniform(150, 300), rng.uniform(700, 1200), 0.4))
    whine_f = rng.uniform(2500, 5000) * (1.0 + 0.1 * (t - 0.5))
    whine = 0.35 * np.sin(TWO_PI * np.cumsum(whine_f) / SR)
    swell = np.sin(np.pi * t) ** 0.7
    return (roar + whine) * swell


def _rain(rng, n):  # many tiny high droplets (Poisson, 150-450 per second) over a high hiss
    drops = _decaying_tones(rng, n, _impulses(rng, n, rng.uniform(150, 450)), (2500, 7500), (0.001, 0.004))
    hiss = _shaped_noise(rng, n, _band(3000, 7500))
    drops = drops / (np.sqrt(np.mean(drops**2)) + 1e-12)
    return (drops + 0.5 * hiss) * _fade(n, 0.15, 0.2)


def _wind(rng, n):  # gusts: narrow resonant noise whose centre (whistle) sweeps slowly, with slow swells
    t = _t(n)
    centre = rng.uniform(500, 1400)
    # A time-varying resonance, built as the sum of a few bands, crossfaded along the gust.
    bands = [_shaped_noise(rng, n, _band(centre * r, centre * r * 1.25, 0.08)) for r in (0.7, 1.0, 1.4, 1.9)]
    pos = 0.5 + 0.5 * np.sin(TWO_PI * rng.uniform(0.3, 0.8) * t + rng.uniform(0, TWO_PI))
    weights = np.stack([np.exp(-(((pos * 3) - i) ** 2)) for i in range(4)])
    gust = (weights * np.stack(bands)).sum(axis=0)
    swell = 0.4 + 0.6 * np.sin(np.pi * t / t[-1]) ** 2
    return gust * swell * _fade(n, 0.2, 0.25)


def _thunderstorm(rng, n):  # thunder: a sharp broadband crack, then a long, low, rumbling decay
    t = _t(n)
    crack_len = int(0.06 * SR)
    crack = _shaped_noise(rng, crack_len, _band(200, 6000)) * np.exp(-_t(crack_len) / 0.02) * 2.0
    rumble = _shaped_noise(rng, n, _band(30, 180, 0.3))
    rumble *= np.exp(-t / rng.uniform(0.5, 1.0)) * (0.7 + 0.3 * np.abs(np.sin(TWO_PI * rng.uniform(2, 5) * t)))
    return (_place(n, [(0, crack)]) + rumble) * _fade(n, 0.002, 0.2)


def _crackling_fire(rng, n):  # sparse, very short, loud crackles (heavy-tailed sizes) over a soft low roar
    times = _impulses(rng, n, rng.uniform(15, 45))
    pop_len = int(0.004 * SR)
    tt = _t(pop_len)
    pieces = [
        (int(s), rng.standard_normal(pop_len) * np.exp(-tt / 0.0008) * min(6.0, rng.pareto(2.0) + 0.5))
        for s in times
    ]
    roar = _shaped_noise(rng, n, _band(80, 500)) * 0.12
    return (_place(n, pieces) + roar) * _fade(n, 0.05, 0.05)


def _stream(rng, n):  # flowing water: dense bubbles (short rising tones, 400-2500 Hz) over broadband wash
    bubbles = _decaying_tones(rng, n, _impulses(rng, n, rng.uniform(60, 160)), (400, 2500), (0.004, 0.012), glide=0.6)
    bubbles = bubbles / (np.sqrt(np.mean(bubbles**2)) + 1e-12)
    wash = _shaped_noise(rng, n, _band(300, 3000, 0.3))
    return (bubbles + 0.35 * wash) * _fade(n, 0.15, 0.2)


@dataclass(frozen=True)
class SynthClass:
    """One synthetic event class: its name, ASiT category, event length range (seconds) and generator."""

    name: str
    category: str
    duration_s: tuple[float, float]
    make: Callable[[np.random.Generator, int], np.ndarray]
    description: str


_SHORT = (0.7, 1.6)  # most events are about a second long: a fifth of the clip, so attention has to find them
_TEXTURE = (1.0, 2.0)  # environmental textures are longer, but still a window with an onset and an offset

#: The 22 classes, in label-id order (category by category, as the folder tree sorts them).
SYNTH_CLASSES: tuple[SynthClass, ...] = (
    SynthClass("dog", "Animals", _SHORT, _dog, "2-4 barks: short noisy harmonic bursts, downward glide"),
    SynthClass("cat", "Animals", _SHORT, _cat, "meow: smooth rising-falling pitch 350-1000 Hz, opening vowel"),
    SynthClass("cow", "Animals", _SHORT, _cow, "moo: low (95-170 Hz) harmonic call, low formant"),
    SynthClass("frog", "Animals", _SHORT, _frog, "croaks: pulsed 180-350 Hz tones, 20-40 Hz rattle, 3-6 per second"),
    SynthClass("sheep", "Animals", _SHORT, _sheep, "bleat: 230-400 Hz with deep 6-10 Hz vibrato"),
    SynthClass("insects", "Animals", _SHORT, _insects, "buzz: bright sawtooth-like 170-280 Hz drone"),
    SynthClass("chirping_birds", "Birds", _SHORT, _chirping_birds, "chirps: 30-80 ms pure sweeps, 2-6 kHz"),
    SynthClass("warbler", "Birds", _SHORT, _warbler, "trill: one note repeated 12-25 times a second, 2.5-5 kHz"),
    SynthClass("owl", "Birds", _SHORT, _owl, "hoots: 2-4 soft near-pure tones, 280-480 Hz"),
    SynthClass("crow", "Birds", _SHORT, _crow, "caws: harsh rough harmonic calls, 380-650 Hz"),
    SynthClass("rooster", "Birds", _SHORT, _rooster, "cock-a-doodle-doo: 4 bright stepped syllables, 650-1300 Hz"),
    SynthClass("engine", "Vehicles", _SHORT, _engine, "hum: 30-70 Hz firing harmonics plus rumble"),
    SynthClass("siren", "Vehicles", _SHORT, _siren, "wail: slow sweep between ~650 and ~1500 Hz"),
    SynthClass("car_horn", "Vehicles", _SHORT, _car_horn, "horn: steady square-ish two-tone chord"),
    SynthClass("helicopter", "Vehicles", _SHORT, _helicopter, "rotor thump: 10-25 Hz train of low thumps"),
    SynthClass("train", "Vehicles", _SHORT, _train, "clatter: pairs of metallic clicks over rumble"),
    SynthClass("airplane", "Vehicles", _TEXTURE, _airplane, "jet: swelling roar with a turbine whine"),
    SynthClass("rain", "Environmental", _TEXTURE, _rain, "rain: dense tiny high droplets over hiss"),
    SynthClass("wind", "Environmental", _TEXTURE, _wind, "wind: resonant noise 350-2700 Hz, sweeping gusts"),
    SynthClass("thunderstorm", "Environmental", _TEXTURE, _thunderstorm, "thunder: crack then low rumble"),
    SynthClass("crackling_fire", "Environmental", _TEXTURE, _crackling_fire, "fire: sparse loud crackles"),
    SynthClass("stream", "Environmental", _TEXTURE, _stream, "flowing water: dense bubbles over wash"),
)


# ---- backgrounds (shared by every class: never evidence) ----------------------------------------------------------


def _pink(f):
    return 1.0 / np.sqrt(np.maximum(f, 20.0))


def _brown(f):
    return 1.0 / np.maximum(f, 20.0)


def _white(f):
    return np.ones_like(f)


def _bg_noise(gain):
    return lambda rng, n: _shaped_noise(rng, n, gain)


def _bg_room(rng, n):  # pink noise with slow level swells, like a room or a distant crowd
    swell = 1.0 + 0.3 * np.sin(TWO_PI * rng.uniform(0.05, 0.3) * _t(n) + rng.uniform(0, TWO_PI))
    return _shaped_noise(rng, n, _pink) * swell


def _bg_lowpass(rng, n):  # muffled broadband noise (far-away traffic, air conditioning)
    return _shaped_noise(rng, n, lambda f: 1.0 / (1.0 + (f / rng.uniform(300, 800)) ** 2))


#: Background kinds: name → generator(rng, n) returning unit-RMS noise.
BACKGROUNDS: dict[str, Callable[[np.random.Generator, int], np.ndarray]] = {
    "white": _bg_noise(_white),
    "pink": _bg_noise(_pink),
    "brown": _bg_noise(_brown),
    "room": _bg_room,
    "muffled": _bg_lowpass,
}

_CLASS_BY_NAME = {c.name: c for c in SYNTH_CLASSES}


def clip_seed(seed: int, class_index: int, clip_index: int, events: int = 1) -> int:
    """The per-clip seed: a pure function of (dataset seed, class id, clip number), so clips are reproducible
    one by one and adding clips or classes never changes existing ones. Two-event clips (``events=2``) draw from
    their own seeds, so they never replay a one-event clip's random draws."""
    entropy = [int(seed), int(class_index), int(clip_index)] + ([int(events)] if events != 1 else [])
    return int(np.random.SeedSequence(entropy).generate_state(1)[0])


def _audible_at_snr(event: np.ndarray, snr_db: float) -> tuple[np.ndarray, int]:
    """The part of ``event`` the generator filled, scaled to ``snr_db`` over a unit-power background.

    The true window is where the generator put the event: its first to last non-zero sample. A call sequence that
    did not fill its slot (two barks and then silence) ends at its last call, and no energy threshold decides
    where quiet tails stop being "event".

    Returns:
        ``(event[first:last] scaled, first)``.
    """
    sounding = np.flatnonzero(event)
    first, last = (int(sounding[0]), int(sounding[-1]) + 1) if sounding.size else (0, len(event))
    event = event[first:last]
    event_power = np.mean(event**2) + 1e-12
    return event * np.sqrt(10.0 ** (snr_db / 10.0) / event_power), first  # background has unit power


# ---- distractors: loud sounds that are not the event ----------------------------------------------------------------


def _noise_burst(rng, n):  # a burst of white or pink noise with short fades (a hiss, a gust on the microphone)
    gain = _white if rng.random() < 0.5 else _pink
    return _shaped_noise(rng, n, gain) * _fade(n, 0.005, 0.02)


def _clatter(rng, n):  # dishes or cutlery: irregular broadband clicks of random size, not a class's rhythm
    times = np.sort(rng.integers(0, max(1, n - int(0.02 * SR)), int(rng.integers(5, 14))))
    click_len = int(0.02 * SR)
    tt = _t(click_len)
    pieces = [(int(t0), rng.standard_normal(click_len) * np.exp(-tt / rng.uniform(0.002, 0.006)) * rng.uniform(0.4, 1.0))
              for t0 in times]
    return _place(n, pieces)


def _thump(rng, n):  # a door closing: a low decaying boom with a short broadband knock at its start
    t = _t(n)
    boom = np.sin(TWO_PI * rng.uniform(45, 110) * t) * np.exp(-t / rng.uniform(0.04, 0.1))
    knock_len = min(n, int(0.015 * SR))
    knock = np.zeros(n)
    knock[:knock_len] = rng.standard_normal(knock_len) * np.exp(-_t(knock_len) / 0.003)
    return boom + 0.6 * knock


#: Distractor kinds: name → (generator(rng, n), duration range in seconds).
DISTRACTORS: dict[str, tuple[Callable[[np.random.Generator, int], np.ndarray], tuple[float, float]]] = {
    "noise_burst": (_noise_burst, (0.2, 0.6)),
    "clatter": (_clatter, (0.3, 0.8)),
    "thump": (_thump, (0.15, 0.4)),
}
#: How much louder than the event (RMS over each sound's own span) a distractor is, in dB, drawn per distractor.
DEFAULT_DISTRACTOR_DB = (0.0, 10.0)
#: Silence kept between the event and a distractor (seconds), so no frame hears both.
_DISTRACTOR_GAP_S = 0.1


def _free_spans(n: int, taken: list[tuple[int, int]], gap: int) -> list[tuple[int, int]]:
    """The ``[start, end)`` sample ranges of ``n`` at least ``gap`` away from every span in ``taken``."""
    free, pos = [], 0
    for a, b in sorted(taken):
        if a - gap > pos:
            free.append((pos, a - gap))
        pos = max(pos, b + gap)
    if pos < n:
        free.append((pos, n))
    return free


def _add_distractors(
    mix: np.ndarray, rng: np.random.Generator, event_span: tuple[int, int], event_rms: float, count: int,
    level_db: tuple[float, float],
) -> list[list]:
    """Mix up to ``count`` distractors into ``mix`` outside ``event_span`` (in place); returns
    ``[[onset_s, offset_s, kind, db_above_event], ...]`` for those that fitted."""
    placed: list[list] = []
    taken = [event_span]
    gap = int(_DISTRACTOR_GAP_S * SR)
    for _ in range(count):
        kind = list(DISTRACTORS)[int(rng.integers(len(DISTRACTORS)))]
        make, dur_s = DISTRACTORS[kind]
        length = int(rng.uniform(*dur_s) * SR)
        room = [(a, b) for a, b in _free_spans(len(mix), taken, gap) if b - a >= length]
        if not room:
            continue
        a, b = room[int(rng.integers(len(room)))]
        start = int(rng.integers(a, b - length + 1))
        sound = make(rng, length)
        db = float(rng.uniform(*level_db))
        sound = sound * (event_rms * 10 ** (db / 20) / (np.sqrt(np.mean(sound**2)) + 1e-12))
        mix[start : start + length] += sound
        taken.append((start, start + length))
        placed.append([round(start / SR, 4), round((start + length) / SR, 4), kind, round(db, 2)])
    return sorted(placed)


def render_clip(
    label: str,
    seed: int,
    seconds: float = 5.0,
    snr_db: tuple[float, float] = DEFAULT_SNR_DB,
    distractors: int = 0,
    distractor_db: tuple[float, float] = DEFAULT_DISTRACTOR_DB,
) -> tuple[np.ndarray, dict]:
    """One synthetic clip of class ``label``, fully determined by ``seed`` (and ``distractors``).

    Args:
        distractors: how many loud non-target sounds (:data:`DISTRACTORS`: noise bursts, clatter, door-like thumps)
            to add outside the event, each ``distractor_db`` dB above the event (RMS over each sound's own span).
            They come from their own random stream: the clip with distractors is the clip without them plus the
            distractors (and the final peak normalisation).

    Returns:
        ``(audio, meta)``: ``audio`` float32 of shape ``(round(seconds * 16000),)`` with peak in [0.3, 0.9];
        ``meta`` = ``{"onset_s", "offset_s", "snr_db", "background", "distractors"}``: the window is where the
        generator put the event (first to last non-zero sample of it, see :func:`_audible_at_snr`); SNR is the
        event's mean power over that window against the background's mean power, in dB; ``distractors`` lists
        ``[onset_s, offset_s, kind, dB above the event]`` of each distractor placed.
    """
    if label not in _CLASS_BY_NAME:
        raise ValueError(f"unknown synthetic class {label!r}; choose from {sorted(_CLASS_BY_NAME)}")
    spec = _CLASS_BY_NAME[label]
    rng = np.random.default_rng(seed)
    n = int(round(seconds * SR))
    dur = min(rng.uniform(*spec.duration_s), seconds - 0.4)
    length = int(dur * SR)
    onset = int(rng.uniform(0.1, seconds - dur - 0.1) * SR)
    snr = float(rng.uniform(*snr_db))
    bg_name = list(BACKGROUNDS)[int(rng.integers(len(BACKGROUNDS)))]
    background = BACKGROUNDS[bg_name](rng, n)

    event, first = _audible_at_snr(spec.make(rng, length), snr)
    onset += first
    length = len(event)
    mix = background.copy()
    mix[onset : onset + length] += event
    placed = []
    if distractors:
        placed = _add_distractors(mix, np.random.default_rng([seed, 1]), (onset, onset + length),
                                  float(np.sqrt(np.mean(event**2))), int(distractors), distractor_db)
    mix *= rng.uniform(0.3, 0.9) / (np.max(np.abs(mix)) + 1e-12)
    meta = {
        "onset_s": round(onset / SR, 4),
        "offset_s": round((onset + length) / SR, 4),
        "snr_db": round(snr, 2),
        "background": bg_name,
        "distractors": placed,
    }
    return mix.astype(np.float32), meta


def _two_windows(rng: np.random.Generator, durations: tuple[float, float], seconds: float, gap_s: float) -> list[float]:
    """Onsets (seconds) of two events of ``durations``, in random order, ``gap_s`` apart at least, 0.1 s from the
    clip's edges, the free time split at random before, between and after them."""
    first = int(rng.integers(2))
    order = (first, 1 - first)
    free = max(0.0, seconds - 0.2 - gap_s - sum(durations))
    cuts = np.sort(rng.uniform(0.0, free, 2))
    onsets = [0.0, 0.0]
    onsets[order[0]] = 0.1 + cuts[0]
    onsets[order[1]] = onsets[order[0]] + durations[order[0]] + gap_s + (cuts[1] - cuts[0])
    return onsets


def render_two_event_clip(
    labels: tuple[str, str],
    seed: int,
    seconds: float = 5.0,
    snr_db: tuple[float, float] = DEFAULT_SNR_DB,
    gap_s: float = 0.3,
) -> tuple[np.ndarray, dict]:
    """One clip with **two** events of different classes at different times over one background.

    Each event gets its own duration (its class's range, shortened if both would not fit) and its own SNR drawn
    from ``snr_db``, so a clip has a louder and a longer event (not always the same one); the windows never
    overlap (at least ``gap_s`` apart).

    Returns:
        ``(audio, meta)``: ``audio`` float32 ``(round(seconds * 16000),)``, peak in [0.3, 0.9]; ``meta`` =
        ``{"events": [{"label", "onset_s", "offset_s", "snr_db"}, ...] (in the order of ``labels``),
        "background"}``. Each window is where its event really sounds, as in :func:`render_clip`.
    """
    unknown = [name for name in labels if name not in _CLASS_BY_NAME]
    if unknown:
        raise ValueError(f"unknown synthetic class {unknown[0]!r}; choose from {sorted(_CLASS_BY_NAME)}")
    if len(labels) != 2 or labels[0] == labels[1]:
        raise ValueError(f"a two-event clip needs two different classes, got {tuple(labels)}")
    specs = [_CLASS_BY_NAME[name] for name in labels]
    rng = np.random.default_rng(seed)
    n = int(round(seconds * SR))
    room = (seconds - 0.2 - gap_s) / 2  # each event may have at most half the room when both are long
    durations = tuple(min(rng.uniform(*spec.duration_s), room) for spec in specs)
    onsets = _two_windows(rng, durations, seconds, gap_s)
    snrs = [float(rng.uniform(*snr_db)) for _ in specs]
    bg_name = list(BACKGROUNDS)[int(rng.integers(len(BACKGROUNDS)))]
    mix = BACKGROUNDS[bg_name](rng, n)
    events = []
    for spec, dur, onset_s, snr in zip(specs, durations, onsets, snrs):
        event, first = _audible_at_snr(spec.make(rng, int(dur * SR)), snr)
        onset = int(onset_s * SR) + first
        mix[onset : onset + len(event)] += event
        events.append({"label": spec.name, "onset_s": round(onset / SR, 4),
                       "offset_s": round((onset + len(event)) / SR, 4), "snr_db": round(snr, 2)})
    mix *= rng.uniform(0.3, 0.9) / (np.max(np.abs(mix)) + 1e-12)
    return mix.astype(np.float32), {"events": events, "background": bg_name}


def render_recording(
    events: list[tuple[str, float]],
    seconds: float = 60.0,
    seed: int = 0,
    snr_db: float = 12.0,
    background: str = "room",
    background_level: float = 0.02,
) -> tuple[np.ndarray, list[dict]]:
    """A long recording with several events at chosen times over one background (a live-listening test signal).

    Args:
        events: ``[(label, onset_s), ...]``; each event has its class's usual duration (drawn from ``seed``).
        snr_db: each event's power over the background's, in dB. background_level: the background's RMS (0.02 is
            a quiet room, -34 dB); the whole recording is scaled down if its peak would pass 0.9.

    Returns:
        ``(audio, truth)``: float32 ``(round(seconds * 16000),)``; ``truth`` = ``[{"label", "onset_s",
        "offset_s"}, ...]`` where each event really sounds (as :func:`render_clip`'s window).
    """
    rng = np.random.default_rng(seed)
    n = int(round(seconds * SR))
    mix = BACKGROUNDS[background](rng, n)  # unit power
    truth = []
    for label, onset_s in events:
        if label not in _CLASS_BY_NAME:
            raise ValueError(f"unknown synthetic class {label!r}; choose from {sorted(_CLASS_BY_NAME)}")
        spec = _CLASS_BY_NAME[label]
        event, first = _audible_at_snr(spec.make(rng, int(rng.uniform(*spec.duration_s) * SR)), snr_db)
        onset = int(round(onset_s * SR)) + first
        if onset + len(event) > n:
            raise ValueError(f"{label} at {onset_s:g} s does not fit in {seconds:g} s")
        mix[onset : onset + len(event)] += event
        truth.append({"label": label, "onset_s": round(onset / SR, 4), "offset_s": round((onset + len(event)) / SR, 4)})
    mix *= background_level
    peak = float(np.abs(mix).max())
    if peak > 0.9:  # a sharp event (clicks, crackles) can peak far above its RMS: keep the recording in [-0.9, 0.9]
        mix *= 0.9 / peak
    return mix.astype(np.float32), truth


def _render_row(
    name: str, s: int, events: int, partners: list[str], seconds: float, snr_db, distractors: int = 0
) -> tuple[np.ndarray, dict]:
    """One clip of class ``name`` from its seed and its ``events.csv`` row (without path and seed)."""
    spec = _CLASS_BY_NAME[name]
    if events == 1:
        audio, meta = render_clip(name, s, seconds=seconds, snr_db=snr_db, distractors=distractors)
        return audio, {"label": name, "category": spec.category, **meta, "distractors": json.dumps(meta["distractors"])}
    # the partner is drawn from the clip's own seed, so a clip stays a function of (class list, class, seed)
    partner = partners[int(np.random.default_rng([s, 2]).integers(len(partners)))]
    audio, meta = render_two_event_clip((name, partner), s, seconds=seconds, snr_db=snr_db)
    own, other = meta["events"]
    row = {"label": name, "category": spec.category, "onset_s": own["onset_s"], "offset_s": own["offset_s"],
           "snr_db": own["snr_db"], "label_2": partner, "category_2": _CLASS_BY_NAME[partner].category,
           "onset_2_s": other["onset_s"], "offset_2_s": other["offset_s"], "snr_2_db": other["snr_db"]}
    return audio, {**row, "background": meta["background"]}


def parse_spans(value) -> list[tuple[float, float]]:
    """``[(onset_s, offset_s), ...]`` from an events.csv / manifest ``distractors`` cell (JSON; empty: none)."""
    if value is None or (isinstance(value, float) and not np.isfinite(value)) or value == "":
        return []
    items = json.loads(value) if isinstance(value, str) else value
    return [(float(item[0]), float(item[1])) for item in items]


def shift_spans(value, start_s: float, clip_s: float) -> str:
    """A ``distractors`` cell moved into a cropped row (times minus ``start_s``, clipped to ``[0, clip_s]``;
    spans left outside are dropped), as JSON."""
    if value is None or (isinstance(value, float) and not np.isfinite(value)) or value == "":
        return "[]"
    out = []
    for item in json.loads(value) if isinstance(value, str) else value:
        a, b = max(0.0, float(item[0]) - start_s), min(clip_s, float(item[1]) - start_s)
        if b > a:
            out.append([round(a, 4), round(b, 4), *item[2:]])
    return json.dumps(out)


def _write_wav_atomic(path: Path, audio: np.ndarray) -> None:
    """Write a 16-bit WAV through a temp file + ``os.replace``: a killed run never leaves a half-written clip."""
    fd, tmp = tempfile.mkstemp(dir=path.parent, prefix=path.stem + ".", suffix=".tmp")
    os.close(fd)
    try:
        sf.write(tmp, audio, SR, subtype="PCM_16", format="WAV")
        os.replace(tmp, path)
    except BaseException:
        Path(tmp).unlink(missing_ok=True)
        raise


def make_soundscapes(
    out_dir: str | os.PathLike,
    clips_per_class: int = 40,
    seed: int = 0,
    classes: list[str] | None = None,
    seconds: float = 5.0,
    snr_db: tuple[float, float] = DEFAULT_SNR_DB,
    overwrite: bool = False,
    progress: bool = True,
    events: int = 1,
    distractors: int = 0,
) -> pd.DataFrame:
    """Generate a synthetic dataset as ``out_dir/<Category>/<class>/<class>_NNNN.wav`` + ``out_dir/events.csv``.

    Deterministic by ``seed``; re-running keeps clips already on disk and listed in ``events.csv`` with the same
    seed (unless ``overwrite``), so an interrupted run resumes and asking for more clips per class only adds the
    new ones. (A different ``seconds``/``snr_db`` needs a new folder or ``overwrite=True``.)

    Args:
        out_dir: where to write (created).
        clips_per_class: clips of each class.
        seed: dataset seed (each clip's own seed is :func:`clip_seed` of it; stored in ``events.csv``).
        classes: a subset of :data:`SYNTH_CLASSES` names (default: all 22).
        seconds: clip length.
        snr_db: range of event-to-background SNRs, drawn uniformly per clip.
        events: ``1`` (one event per clip) or ``2``: each clip of class A also holds an event of another class B
            (drawn from ``classes``) at a different time (:func:`render_two_event_clip`). The clip is filed under
            A; ``onset_s``/``offset_s``/``snr_db`` are A's, ``label_2``, ``category_2``, ``onset_2_s``,
            ``offset_2_s``, ``snr_2_db`` B's. For testing what a model does with two sounds, not for training.
        distractors: loud non-target sounds per one-event clip, outside the event (see :func:`render_clip`); their
            times are the ``distractors`` column (JSON ``[[onset_s, offset_s, kind, dB above the event], ...]``).

    Returns:
        The events table (also written atomically to ``events.csv``): ``path`` (relative to ``out_dir``),
        ``label``, ``category``, ``onset_s``, ``offset_s``, ``snr_db``, (the second event's columns,) ``background``,
        ``seed``.
    """
    from tqdm.auto import tqdm

    if clips_per_class < 1:
        raise ValueError(f"clips_per_class must be at least 1, got {clips_per_class}")
    names = [c.name for c in SYNTH_CLASSES] if classes is None else list(classes)
    unknown = [c for c in names if c not in _CLASS_BY_NAME]
    if unknown:
        raise ValueError(f"unknown synthetic classes {unknown}; choose from {[c.name for c in SYNTH_CLASSES]}")
    if events not in (1, 2):
        raise ValueError(f"events must be 1 or 2 per clip, got {events}")
    if events == 2 and len(set(names)) < 2:
        raise ValueError(f"two events per clip need at least two classes, got {names}")
    if distractors < 0 or (distractors and events != 1):
        raise ValueError(f"distractors must be 0 or more, and go with one event per clip; got {distractors} with {events}")
    out = Path(out_dir)
    out.mkdir(parents=True, exist_ok=True)
    ids = {c.name: i for i, c in enumerate(SYNTH_CLASSES)}
    # Clips already on disk with a matching row in an earlier events.csv are kept as they are (resume).
    previous = {}
    if not overwrite and (out / "events.csv").exists():
        try:
            previous = {r["path"]: r for r in pd.read_csv(out / "events.csv").to_dict(orient="records")}
        except (pd.errors.ParserError, pd.errors.EmptyDataError, KeyError):
            previous = {}
    rows = []
    jobs = [(name, i) for name in names for i in range(clips_per_class)]
    for name, i in tqdm(jobs, desc="synthesising", unit="clip", disable=not progress):
        spec = _CLASS_BY_NAME[name]
        s = clip_seed(seed, ids[name], i, events=events)
        rel = Path(spec.category) / name / f"{name}_{i:04d}.wav"
        path = out / rel
        old = previous.get(rel.as_posix())
        same_distractors = old is not None and len(parse_spans(old.get("distractors"))) == distractors
        if old is not None and int(old.get("seed", -1)) == s and same_distractors and path.exists():
            rows.append(old)
            continue
        audio, row = _render_row(name, s, events, [c for c in names if c != name], seconds, snr_db, distractors)
        path.parent.mkdir(parents=True, exist_ok=True)
        _write_wav_atomic(path, audio)
        rows.append({"path": rel.as_posix(), **row, "seed": s})
    events = pd.DataFrame(rows)
    tmp = out / "events.csv.tmp"
    events.to_csv(tmp, index=False)
    os.replace(tmp, out / "events.csv")
    return events
