"""load_audio: formats, rates, channels, resampling accuracy, and every bad-input case naming the file."""

from __future__ import annotations

import io

import numpy as np
import pytest
import soundfile as sf

from asit_helpers import AudioError, fix_length, load_audio
from asit_helpers.audio import audio_info, crop_offsets, window_starts
from conftest import tone


def _peak_hz(x: np.ndarray, sr: int) -> float:
    spectrum = np.abs(np.fft.rfft(x * np.hanning(len(x))))
    return float(np.fft.rfftfreq(len(x), 1 / sr)[np.argmax(spectrum)])


@pytest.mark.parametrize(
    "ext,subtype",
    [("wav", "PCM_16"), ("wav", "FLOAT"), ("flac", "PCM_24"), ("ogg", "VORBIS"), ("mp3", "MPEG_LAYER_III")],
)
def test_formats_decode_to_16k_mono_float32(tmp_path, ext, subtype):
    path = tmp_path / f"clip.{ext}"
    sf.write(path, tone(440, 1.0, sr=44100, channels=2), 44100, subtype=subtype)
    x = load_audio(path)
    assert x.dtype == np.float32 and x.ndim == 1
    assert abs(len(x) - 16000) < 1600  # mp3 adds encoder delay / padding
    assert abs(_peak_hz(x, 16000) - 440) < 5


def test_1khz_tone_at_44k1_peaks_at_1khz_after_resampling(tmp_path):
    path = tmp_path / "tone44k.wav"
    sf.write(path, tone(1000, 2.0, sr=44100), 44100)
    x = load_audio(path)
    assert len(x) == 32000
    assert abs(_peak_hz(x, 16000) - 1000) < 2
    # soxr keeps the level: a 0.3-amplitude sine has RMS 0.3/sqrt(2)
    assert abs(np.sqrt(np.mean(x[1000:-1000] ** 2)) - 0.3 / np.sqrt(2)) < 0.005


def test_channels_are_averaged(tmp_path):
    left = tone(300, 1.0)
    right = tone(500, 1.0)
    sf.write(tmp_path / "two.wav", np.stack([left, right], axis=1), 16000, subtype="FLOAT")
    np.testing.assert_allclose(load_audio(tmp_path / "two.wav"), (left + right) / 2, atol=1e-6)
    six = np.repeat(left[:, None], 6, axis=1)
    sf.write(tmp_path / "six.wav", six, 16000, subtype="FLOAT")
    np.testing.assert_allclose(load_audio(tmp_path / "six.wav"), left, atol=1e-6)


def test_cancelling_downmix_is_an_error_not_silence(tmp_path):
    left = tone(300, 1.0)
    path = tmp_path / "st.wav"
    sf.write(path, np.stack([left, -left], axis=1), 16000, subtype="FLOAT")  # opposite phase: the mean is silence
    with pytest.raises(AudioError, match=r"st\.wav: its 2 channels cancel when averaged.*channel=0"):
        load_audio(path)
    np.testing.assert_allclose(load_audio(path, channel=0), left, atol=1e-6)
    np.testing.assert_allclose(load_audio(path, channel=1), -left, atol=1e-6)
    with pytest.raises(AudioError, match="has 2 channel"):
        load_audio(path, channel=2)
    # genuinely silent stereo is not a cancellation: it loads (as silence)
    sf.write(tmp_path / "quiet.wav", np.zeros((16000, 2), np.float32), 16000, subtype="FLOAT")
    assert np.abs(load_audio(tmp_path / "quiet.wav")).max() == 0


def test_multichannel_arrays_need_a_layout():
    from asit_helpers.audio import to_mono

    x = np.stack([tone(300, 5.0), tone(500, 5.0), tone(700, 5.0)])  # (3, 80000)
    with pytest.raises(AudioError, match=r"shape \(3, 80000\) is ambiguous.*layout='channels_first'"):
        to_mono(x, None)
    np.testing.assert_allclose(to_mono(x, "channels_first"), x.mean(axis=0), atol=1e-6)
    np.testing.assert_allclose(to_mono(x.T, "channels_last"), x.mean(axis=0), atol=1e-6)
    assert to_mono(x[:1], None).shape == (80000,)  # one channel: nothing to decide
    with pytest.raises(AudioError, match="channels cancel"):
        to_mono(np.stack([x[0], -x[0]]), "channels_first")
    with pytest.raises(AudioError, match="1-D signal or a 2-D"):
        to_mono(np.zeros((2, 2, 100)), None)


def test_bytes_and_file_objects(tmp_path, wav_file):
    from_path = load_audio(wav_file)
    np.testing.assert_array_equal(load_audio(wav_file.read_bytes()), from_path)
    with open(wav_file, "rb") as f:
        np.testing.assert_array_equal(load_audio(f), from_path)
    np.testing.assert_array_equal(load_audio(io.BytesIO(wav_file.read_bytes())), from_path)


def _write(path, data: bytes):
    path.write_bytes(data)
    return path


def _truncated_wav(tmp_path):
    full = tmp_path / "full.wav"
    sf.write(full, tone(seconds=1.0), 16000)
    data = full.read_bytes()
    path = tmp_path / "truncated.wav"
    path.write_bytes(data[: len(data) // 3])
    return path


def _nan_wav(tmp_path):
    x = tone(seconds=0.5)
    x[100] = np.nan
    path = tmp_path / "nan.wav"
    sf.write(path, x, 16000, subtype="FLOAT")
    return path


def _zero_length(tmp_path):
    path = tmp_path / "zero.wav"
    sf.write(path, np.zeros(0, dtype=np.float32), 16000)
    return path


def _webm(tmp_path):
    path = tmp_path / "recording.webm"
    path.write_bytes(b"\x1aE\xdf\xa3" + bytes(200))  # EBML magic: what MediaRecorder produces in Chrome
    return path


def _corrupt_ogg(tmp_path):
    good = tmp_path / "good.ogg"
    sf.write(good, tone(seconds=1.0), 16000, subtype="VORBIS")
    data = bytearray(good.read_bytes())
    data[200:] = bytes(len(data) - 200)  # keep the header pages, zero the audio pages
    path = tmp_path / "corrupt.ogg"
    path.write_bytes(bytes(data))
    return path


@pytest.mark.parametrize(
    "make,reason",
    [
        (lambda p: _write(p / "empty.wav", b""), "empty file"),
        (lambda p: _write(p / "notes.wav", b"hello, I am a text file\n"), "not an audio file"),
        (_truncated_wav, "truncated"),
        (_nan_wav, "NaN"),
        (_zero_length, "no samples"),
        (_webm, "unsupported format"),
        (lambda p: p / "missing.wav", "not found"),
    ],
    ids=["empty", "text", "truncated", "nan", "zero-length", "webm", "missing"],
)
def test_bad_input_raises_audio_error_naming_the_file(tmp_path, make, reason):
    path = make(tmp_path)
    with pytest.raises(AudioError) as info:
        load_audio(path)
    assert path.name in str(info.value)
    assert reason.lower() in info.value.reason.lower()


def test_corrupt_ogg_is_reported_not_silently_zero(tmp_path):
    path = _corrupt_ogg(tmp_path)
    try:
        x = load_audio(path)
    except AudioError as exc:
        assert path.name in str(exc)
    else:  # libsndfile may decode the header page; then what it returns must not be a silent stand-in
        assert len(x) < 16000


def test_too_long_is_refused_from_the_header(tmp_path):
    path = tmp_path / "long.wav"
    sf.write(path, np.zeros(16000 * 3, dtype=np.float32), 16000)
    with pytest.raises(AudioError, match="too long"):
        load_audio(path, max_seconds=2)
    assert len(load_audio(path, max_seconds=None)) == 48000


def test_bytes_error_uses_given_name():
    with pytest.raises(AudioError, match="upload.wav"):
        load_audio(b"garbage bytes", name="upload.wav")


def test_audio_info_reads_header(tmp_path):
    path = tmp_path / "i.flac"
    sf.write(path, tone(seconds=1.5, sr=22050, channels=2), 22050)
    info = audio_info(path)
    assert info["sample_rate"] == 22050 and info["channels"] == 2 and abs(info["duration_s"] - 1.5) < 1e-3


def test_fix_length_pads_and_masks():
    x = np.ones(100, dtype=np.float32)
    y, mask = fix_length(x, 160)
    assert y.shape == (160,) and mask.sum() == 100 and y[100:].sum() == 0 and mask[:100].all()
    y, mask = fix_length(np.arange(300, dtype=np.float32), 100, mode="center")
    assert y[0] == 100 and mask.all()


def test_crop_modes():
    x = np.zeros(1000, dtype=np.float32)
    x[700:760] = 1.0
    assert crop_offsets(x, 100, "start") == 0
    assert crop_offsets(x, 100, "center") == 450
    start = crop_offsets(x, 100, "energy", hop=10)
    assert start <= 700 and start + 100 >= 760
    rng = np.random.default_rng(0)
    offsets = {crop_offsets(x, 100, "random", rng) for _ in range(20)}
    assert len(offsets) > 1 and all(0 <= o <= 900 for o in offsets)
    with pytest.raises(ValueError):
        crop_offsets(x, 100, "sideways")


def test_window_starts_cover_everything_without_padding():
    starts = window_starts(10 * 16000 + 123, 80000, 40000)
    assert starts[0] == 0 and starts[-1] + 80000 == 10 * 16000 + 123
    assert all(b - a <= 40000 for a, b in zip(starts, starts[1:]))
    assert window_starts(5000, 80000, 40000) == [0]
