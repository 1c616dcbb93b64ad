"""predict (the one path from samples to a Prediction) and `asit predict`."""

from __future__ import annotations

import json
import subprocess
import sys

import numpy as np
import pytest
import soundfile as sf

from asit_helpers import AudioError, load_model, predict
from conftest import LABELS, tone


@pytest.fixture(scope="module")
def model(tiny_checkpoint):
    return load_model(tiny_checkpoint)


def test_short_clip_single_window(model, wav_file):
    pred = predict(model, wav_file, top_k=3)
    assert pred.label in LABELS and len(pred.top_k) == 3
    assert pred.top_k[0] == (pred.label, pred.score)
    assert [p for _, p in pred.top_k] == sorted((p for _, p in pred.top_k), reverse=True)
    assert abs(pred.probabilities.sum() - 1) < 1e-5 and len(pred.windows) == 1
    assert pred.weights.shape == (1, len(pred.frame_times_s))
    assert abs(pred.weights.sum() - 1) < 1e-5 and pred.duration_s == 2.0


def test_three_minute_file_gives_per_window_predictions(model, tmp_path):
    rng = np.random.default_rng(0)
    path = tmp_path / "three_minutes.flac"
    sf.write(path, (rng.standard_normal(16000 * 180) * 0.05).astype(np.float32), 16000)
    pred = predict(model, path)
    # 5 s windows, 2.5 s hop: 71 windows cover 180 s, the last ending exactly at the end
    assert len(pred.windows) == 71
    assert pred.windows[0].start_s == 0 and pred.windows[-1].end_s == 180.0
    assert all(w.end_s - w.start_s == 5.0 for w in pred.windows)
    assert all(w.label in LABELS for w in pred.windows)
    # the clip's probabilities are the mean of the windows'; its attention curve spans the whole file
    assert pred.frame_times_s[-1] > 179.9 and pred.weights.shape[1] == len(pred.frame_times_s)
    np.testing.assert_allclose(pred.weights.sum(axis=1), 1.0, rtol=1e-5)


def test_arrays_at_other_rates_and_stereo(model):
    mono16 = tone(500, 2.0)
    stereo44 = tone(500, 2.0, sr=44100, channels=2)
    a = predict(model, mono16)
    b = predict(model, stereo44, sr=44100, layout="channels_last")
    assert a.label == b.label and abs(a.score - b.score) < 0.05 and a.source == "<array>"
    with pytest.raises(AudioError, match="ambiguous"):  # a (samples, 2) array without its layout
        predict(model, stereo44, sr=44100)


def test_bad_input_to_predict(model, tmp_path):
    bad = tmp_path / "bad.wav"
    bad.write_text("not audio")
    with pytest.raises(AudioError, match="bad.wav"):
        predict(model, bad)
    with pytest.raises(AudioError, match="too short"):
        predict(model, np.zeros(100, dtype=np.float32))
    with pytest.raises(AudioError, match="NaN"):
        predict(model, np.full(16000, np.nan, dtype=np.float32))
    with pytest.raises(AudioError, match="too long"):
        predict(model, np.zeros(16000 * 11, dtype=np.float32), max_seconds=10)


def test_to_dict_is_json(model, wav_file):
    d = predict(model, wav_file).to_dict()
    json.dumps(d)
    assert {"label", "score", "top_k", "weights", "frame_times_s", "duration_s", "windows"} <= d.keys()
    assert len(d["weights"][0]) == len(d["frame_times_s"])


def test_cli_predict_json_on_ogg(tiny_checkpoint, tmp_path):
    clip = tmp_path / "clip.ogg"
    sf.write(clip, tone(880, 3.0, sr=44100, channels=2), 44100, subtype="VORBIS")
    out = subprocess.run(
        [sys.executable, "-m", "asit_helpers.cli", "predict", str(tiny_checkpoint), str(clip), "--json"],
        capture_output=True, text=True, timeout=180,
    )
    assert out.returncode == 0, out.stderr
    result = json.loads(out.stdout)
    assert result["label"] in LABELS and len(result["top_k"]) == 5
    assert len(result["weights"][0]) == len(result["frame_times_s"]) > 100
    assert result["frame_times_s"][0] == pytest.approx(0.0125)


def test_cli_reports_bad_files_and_keeps_going(tiny_checkpoint, tmp_path, wav_file):
    bad = tmp_path / "broken.wav"
    bad.write_bytes(b"RIFF")
    out = subprocess.run(
        [sys.executable, "-m", "asit_helpers.cli", "predict", str(tiny_checkpoint), str(bad), str(wav_file)],
        capture_output=True, text=True, timeout=180,
    )
    assert out.returncode == 1
    assert "broken.wav" in out.stderr and "Traceback" not in out.stderr
    assert wav_file.name in out.stdout
