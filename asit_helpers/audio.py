"""The one door from bytes to samples: :func:`load_audio`, plus fixed-length windows and masks.

Everything in ASiT that reads audio (data scanning, the cache, ``predict``, the CLI, the widget, the server)
calls :func:`load_audio`, so a file that works in one place works in all of them, and a bad file fails with
the same clear :class:`AudioError` everywhere.

Decoding is soundfile (libsndfile: WAV, FLAC, OGG/Vorbis, Opus-in-OGG, MP3, AIFF, ...) and resampling is
soxr; neither needs FFmpeg or torchaudio.
"""

from __future__ import annotations

import io
import os
import struct
from pathlib import Path
from typing import BinaryIO, Union

import numpy as np
import soundfile as sf
import soxr

SAMPLE_RATE = 16_000
#: Longest audio :func:`load_audio` accepts by default (seconds). Long recordings are windowed by ``predict``,
#: but an hour of float32 audio is 230 MB, so an explicit limit protects servers and free-Colab RAM.
DEFAULT_MAX_SECONDS = 30 * 60.0
#: wav2vec2's (and HuBERT's, WavLM's) conv front end: kernels and strides of its 7 layers.
WAV2VEC2_CONV_KERNEL = (10, 3, 3, 3, 3, 2, 2)
WAV2VEC2_CONV_STRIDE = (5, 2, 2, 2, 2, 2, 2)


def conv_min_samples(kernels, strides) -> int:
    """The shortest input a stack of convolutions (``kernels``, ``strides``, first layer first) maps to one frame.

    Each layer needs at least ``kernel`` inputs for one output, so working back from one frame at the top:
    ``need = (need - 1) * stride + kernel``, layer by layer. That is the stack's receptive field: 400 samples
    (25 ms at 16 kHz) for wav2vec2's front end.
    """
    need = 1
    for k, s in reversed(list(zip(kernels, strides))):
        need = (need - 1) * int(s) + int(k)
    return need


#: The shortest clip the preprocessing cache keeps by default: one frame of wav2vec2's front end (400 samples).
#: A backbone with a wider front end needs more (``AsitConfig.min_samples``; tiny-fb: 720); ``preprocess`` takes
#: ``min_samples`` for it, and training, evaluation and ``predict`` check it.
MIN_SAMPLES = conv_min_samples(WAV2VEC2_CONV_KERNEL, WAV2VEC2_CONV_STRIDE)


def too_short_reason(n_samples: int, need: int) -> str:
    """The one message for audio shorter than a backbone's minimum, with both figures."""
    return (f"too short: {n_samples} samples ({n_samples / SAMPLE_RATE * 1000:.1f} ms at 16 kHz); the backbone "
            f"needs at least {need} samples ({need / SAMPLE_RATE * 1000:g} ms) for one frame")


#: A downmix this far (dB) below its channels' level, with channels that are not silent, is a cancellation
#: (anti-phase stereo, a polarity-flipped microphone), not quiet audio.
CANCELLED_DOWNMIX_DB = 40.0
#: What :func:`to_mono` accepts as ``layout`` for a 2-D array.
LAYOUTS = ("channels_first", "channels_last")

AudioSource = Union[str, os.PathLike, bytes, bytearray, memoryview, BinaryIO]

__all__ = [
    "SAMPLE_RATE",
    "AudioError",
    "load_audio",
    "audio_info",
    "resample",
    "fix_length",
    "crop_offsets",
    "window_starts",
    "to_mono",
]


class AudioError(ValueError):
    """Audio that cannot be used, with the file it came from and the reason, e.g.

    ``AudioError: dog_01.wav: truncated WAV: header promises 441000 bytes of samples, file holds 1024``.
    """

    def __init__(self, source: str, reason: str):
        self.source = source
        self.reason = reason
        super().__init__(f"{source}: {reason}")


def _source_name(src: AudioSource, name: str | None) -> str:
    if name:
        return str(name)
    if isinstance(src, (str, os.PathLike)):
        return str(src)
    file_name = getattr(src, "name", None)
    if isinstance(file_name, str):
        return file_name
    return "<audio bytes>"


def _read_bytes(src: AudioSource, label: str) -> bytes:
    """All bytes of a path, a bytes-like object or a binary file-like object."""
    if isinstance(src, (bytes, bytearray, memoryview)):
        return bytes(src)
    if isinstance(src, (str, os.PathLike)):
        path = Path(src)
        if not path.exists():
            raise AudioError(label, "file not found")
        if path.is_dir():
            raise AudioError(label, "is a folder, not an audio file")
        try:
            return path.read_bytes()
        except OSError as exc:
            raise AudioError(label, f"cannot be read ({exc.strerror or exc})") from exc
    if hasattr(src, "read"):
        data = src.read()
        if isinstance(data, str):
            raise AudioError(label, "file object is opened in text mode; open it with 'rb'")
        return bytes(data)
    raise TypeError(f"load_audio expects a path, bytes or a binary file object, got {type(src).__name__}")


def _check_wav_truncation(data: bytes, label: str) -> None:
    """libsndfile quietly reads what is there when a WAV's data chunk is cut short; we say so instead.

    A download that stopped half-way or a copy that ran out of disk leaves exactly this: a valid header that
    promises more samples than the file holds. Streaming writers that don't know the size in advance write
    0 or 0xFFFFFFFF as the chunk size; those are accepted.
    """
    if len(data) < 12 or data[:4] not in (b"RIFF", b"RF64") or data[8:12] != b"WAVE":
        return
    pos = 12
    while pos + 8 <= len(data):
        chunk_id = data[pos : pos + 4]
        (size,) = struct.unpack("<I", data[pos + 4 : pos + 8])
        if chunk_id == b"data":
            available = len(data) - (pos + 8)
            if size not in (0, 0xFFFFFFFF) and data[:4] == b"RIFF" and available < size:
                raise AudioError(
                    label,
                    f"truncated WAV: header promises {size} bytes of samples, file holds {available}",
                )
            return
        pos += 8 + size + (size & 1)
    if data[:4] == b"RIFF":
        raise AudioError(label, "corrupt WAV: no data chunk found")


def _classify_soundfile_error(exc: Exception, data: bytes) -> str:
    message = str(exc)
    head = data[:16]
    lowered = message.lower()
    if "format not recognised" in lowered or "unknown format" in lowered or "file contains data in an unknown" in lowered:
        if head[:4] == b"\x1aE\xdf\xa3":
            return "unsupported format: WebM/Matroska (convert to WAV, FLAC, OGG or MP3, e.g. with ffmpeg)"
        if head[4:8] == b"ftyp":
            return "unsupported format: MP4/M4A/AAC (convert to WAV, FLAC, OGG or MP3, e.g. with ffmpeg)"
        try:
            head.decode("utf-8")
            return "not an audio file (looks like text)"
        except UnicodeDecodeError:
            return "not an audio file, or a format soundfile cannot decode (supported: WAV, FLAC, OGG, MP3, AIFF)"
    if "unsupported" in lowered or "codec" in lowered or "encoding" in lowered:
        return f"unsupported codec ({message})"
    return f"corrupt or truncated audio ({message})"


def _rms_db(x: np.ndarray) -> float:
    return float(10 * np.log10(np.mean(np.square(x, dtype=np.float64)) + 1e-20))


def downmix(samples: np.ndarray, label: str) -> np.ndarray:
    """`(frames, channels)` float32 → `(frames,)`: the mean of the channels.

    Raises:
        AudioError: the channels cancel (each clearly audible, their mean :data:`CANCELLED_DOWNMIX_DB` dB or more
            below them): anti-phase stereo would otherwise reach the model as near-silence.
    """
    if samples.shape[1] == 1:
        return samples[:, 0]
    # Channel by channel: numpy's mean(axis=1) over 2 channels is a strided reduction ~25x slower (more than
    # decoding and resampling together), and a BLAS matrix-vector product spins up threads that fight parallel
    # decode workers. Same values as the mean.
    mono = samples[:, 0].copy()
    for c in range(1, samples.shape[1]):
        mono += samples[:, c]
    mono *= np.float32(1.0 / samples.shape[1])
    channel_db = [_rms_db(samples[:, c]) for c in range(samples.shape[1])]
    loudest = max(channel_db)
    if loudest > -60.0 and _rms_db(mono) < loudest - CANCELLED_DOWNMIX_DB:
        raise AudioError(
            label,
            f"its {samples.shape[1]} channels cancel when averaged to mono (channels at "
            f"{', '.join(f'{d:.0f}' for d in channel_db)} dBFS, their mean at {_rms_db(mono):.0f} dBFS: anti-phase "
            "or polarity-inverted channels); use one channel: load_audio(..., channel=0) for a file, "
            "x[0] of a (channels, samples) array",
        )
    return mono


def to_mono(samples: np.ndarray, layout: str | None, label: str = "<array>") -> np.ndarray:
    """An array of samples → `(samples,)` float32.

    A 1-D array passes through; a 2-D one with a single row or column is squeezed. A true multi-channel array
    needs ``layout`` (``"channels_first"``: `(channels, samples)`, ``"channels_last"``: `(samples, channels)`):
    guessing from the shape silently turns a batch of clips into one averaged clip. Channels are averaged by
    :func:`downmix`, which refuses a mix that cancels.
    """
    samples = np.asarray(samples, dtype=np.float32)
    if samples.ndim == 2 and 1 in samples.shape and layout is None:
        return samples.reshape(-1)
    if samples.ndim == 1:
        return samples
    if samples.ndim != 2:
        raise AudioError(label, f"expected a 1-D signal or a 2-D (channels, samples) array, got shape {samples.shape}")
    if layout not in LAYOUTS:
        raise AudioError(
            label,
            f"a 2-D array of shape {samples.shape} is ambiguous: say which axis holds the channels with "
            "layout='channels_first' (channels, samples) or layout='channels_last' (samples, channels); "
            "to classify several clips, call predict once per clip",
        )
    frames_by_channels = samples.T if layout == "channels_first" else samples
    return downmix(np.ascontiguousarray(frames_by_channels), label)


def resample(samples: np.ndarray, orig_sr: int, target_sr: int = SAMPLE_RATE) -> np.ndarray:
    """Resample a mono float32 signal with soxr (high quality, linear phase)."""
    if orig_sr == target_sr:
        return samples.astype(np.float32, copy=False)
    return soxr.resample(samples, orig_sr, target_sr, quality="HQ").astype(np.float32, copy=False)


def _checked_bytes(src: AudioSource, name: str | None) -> tuple[str, bytes]:
    """The source's name for messages and its bytes, after the checks every reader needs (exists, not empty,
    not a truncated WAV)."""
    label = _source_name(src, name)
    data = _read_bytes(src, label)
    if not data:
        raise AudioError(label, "empty file (0 bytes)")
    _check_wav_truncation(data, label)
    return label, data


def audio_info(src: AudioSource, *, name: str | None = None) -> dict:
    """Header facts without decoding the samples: ``{"sample_rate", "channels", "frames", "duration_s", "format"}``.

    Raises :class:`AudioError` for anything :func:`load_audio` would also reject at the header stage.
    """
    label, data = _checked_bytes(src, name)
    try:
        info = sf.info(io.BytesIO(data))
    except (sf.LibsndfileError, RuntimeError, TypeError) as exc:
        raise AudioError(label, _classify_soundfile_error(exc, data)) from exc
    return {
        "sample_rate": int(info.samplerate),
        "channels": int(info.channels),
        "frames": int(info.frames),
        "duration_s": float(info.frames) / info.samplerate if info.samplerate else 0.0,
        "format": str(info.format),
    }


def load_audio(
    src: AudioSource,
    sr: int = SAMPLE_RATE,
    *,
    max_seconds: float | None = DEFAULT_MAX_SECONDS,
    name: str | None = None,
    return_info: bool = False,
    channel: int | None = None,
) -> np.ndarray | tuple[np.ndarray, dict]:
    """Decode any supported audio to a float32 mono signal at ``sr`` Hz.

    Args:
        src: a path, the file's bytes, or a binary file-like object (an upload, ``io.BytesIO``).
        sr: target sample rate (16 kHz is what wav2vec2 was trained on).
        max_seconds: reject audio longer than this (``None``: no limit). Checked from the header, before decoding.
        name: how to call the source in error messages (defaults to the path or the file object's name).
        return_info: also return the source's ``{"sample_rate", "channels"}`` (the preprocessing cache records
            them; this saves it opening every file a second time just for the header).
        channel: keep only this channel (0-based) instead of averaging them all.

    Returns:
        ``np.ndarray`` of shape ``(samples,)``, dtype float32; channels are averaged (:func:`downmix`). With
        ``return_info``: ``(samples, info)``.

    Raises:
        AudioError: empty file, not audio, truncated or corrupt data, unsupported codec, zero samples,
            NaN/Inf samples, longer than ``max_seconds``, channels that cancel when averaged, or a ``channel``
            the file does not have — always naming the source.
    """
    label, data = _checked_bytes(src, name)
    try:
        with sf.SoundFile(io.BytesIO(data)) as f:
            orig_sr = int(f.samplerate)
            if max_seconds is not None and f.frames > 0 and f.frames / orig_sr > max_seconds:
                raise AudioError(
                    label, f"too long: {f.frames / orig_sr:.1f} s exceeds the limit of {max_seconds:g} s"
                )
            samples = f.read(dtype="float32", always_2d=True)
    except AudioError:
        raise
    except (sf.LibsndfileError, RuntimeError, TypeError, ValueError) as exc:
        raise AudioError(label, _classify_soundfile_error(exc, data)) from exc
    if samples.shape[0] == 0:
        raise AudioError(label, "contains no samples (zero length)")
    if max_seconds is not None and samples.shape[0] / orig_sr > max_seconds:
        raise AudioError(label, f"too long: {samples.shape[0] / orig_sr:.1f} s exceeds the limit of {max_seconds:g} s")
    if not np.isfinite(samples).all():
        raise AudioError(label, "contains NaN or infinite sample values")
    if channel is not None:
        if not 0 <= channel < samples.shape[1]:
            raise AudioError(label, f"has {samples.shape[1]} channel(s); channel={channel} does not exist")
        samples = samples[:, channel : channel + 1]
    mono = downmix(samples, label)
    out = resample(np.ascontiguousarray(mono, dtype=np.float32), orig_sr, sr)
    return (out, {"sample_rate": orig_sr, "channels": int(samples.shape[1])}) if return_info else out


# ----------------------------------------------------------------------------------------------------------------
# Fixed-length windows
# ----------------------------------------------------------------------------------------------------------------


def crop_offsets(
    samples: np.ndarray,
    length: int,
    mode: str = "center",
    rng: np.random.Generator | None = None,
    hop: int = SAMPLE_RATE // 10,
) -> int:
    """Where a ``length``-sample crop starts inside ``samples`` (0 when the signal is not longer).

    Modes: ``"start"``, ``"center"``, ``"random"`` (training; uses ``rng``) and ``"energy"`` (the window with the
    most energy, searched on a ``hop`` grid: keeps a short event that sits off-centre in a long clip).
    """
    excess = len(samples) - length
    if excess <= 0:
        return 0
    if mode == "start":
        return 0
    if mode == "center":
        return excess // 2
    if mode == "random":
        rng = rng if rng is not None else np.random.default_rng()
        return int(rng.integers(0, excess + 1))
    if mode == "energy":
        power = np.cumsum(np.concatenate([[0.0], samples.astype(np.float64) ** 2]))
        starts = np.arange(0, excess + 1, max(1, hop))
        energies = power[starts + length] - power[starts]
        return int(starts[int(np.argmax(energies))])
    raise ValueError(f"unknown crop mode {mode!r}; use 'start', 'center', 'random' or 'energy'")


def fix_length(
    samples: np.ndarray,
    length: int,
    mode: str = "center",
    rng: np.random.Generator | None = None,
) -> tuple[np.ndarray, np.ndarray]:
    """Pad with zeros or crop to exactly ``length`` samples.

    Returns:
        ``(signal, mask)``: ``signal`` float32 of shape ``(length,)``; ``mask`` bool of shape ``(length,)``, True
        on real samples and False on padding (zero-padding sits at the end so frame masks stay a prefix).
    """
    start = crop_offsets(samples, length, mode, rng)
    piece = np.asarray(samples[start : start + length], dtype=np.float32)
    mask = np.zeros(length, dtype=bool)
    mask[: len(piece)] = True
    if len(piece) < length:
        piece = np.concatenate([piece, np.zeros(length - len(piece), dtype=np.float32)])
    return piece, mask


def window_starts(n_samples: int, window: int, hop: int) -> list[int]:
    """Start offsets of equal-length windows covering ``n_samples``; the last window is aligned to the end.

    Every window has exactly ``window`` samples (no padding, which would change a group-norm backbone's
    output), and every sample is covered. A signal no longer than ``window`` gives ``[0]``.
    """
    if n_samples <= window:
        return [0]
    starts = list(range(0, n_samples - window + 1, hop))
    if starts[-1] + window < n_samples:
        starts.append(n_samples - window)
    return starts
