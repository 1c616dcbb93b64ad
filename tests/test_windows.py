"""Long recordings (issue 17, item 1): a recording's answer comes from its evidence, and the stitched attention
curve weights windows by evidence, covers every frame once and is placed to the sample."""

from __future__ import annotations

import numpy as np
import pytest
import torch

from asit_helpers.inference import AGGREGATIONS, _stitch_scores, aggregate_windows, classify_batch, predict
from asit_helpers.model import AsitForAudioClassification
from conftest import tone

LABELS = ["a", "b", "c"]


@pytest.fixture(scope="module")
def model():
    torch.manual_seed(0)
    return AsitForAudioClassification.from_backbone("tiny", labels=LABELS).eval()


def _loudest_frame_forward(model, input_values, attention_mask=None, precision="fp32"):
    """The real forward pass, with pooling scores replaced by a sharp function of each frame's energy: a model that
    attends to the loudest frame of every window (the case that used to come back peaking at the wrong time)."""
    out = classify_batch(model, input_values, attention_mask, precision="fp32")
    cfg = model.config
    frames = out.pooling_weights.shape[-1]
    starts = torch.arange(frames) * cfg.frame_stride
    power = torch.nn.functional.pad(torch.cumsum(input_values.double() ** 2, dim=1), (1, 0))
    energy = (power[:, starts + cfg.receptive_field] - power[:, starts]) / cfg.receptive_field
    scores = 20.0 * torch.log(energy.float() + 1e-6)[:, None, :]
    out.pooling_scores = scores
    out.pooling_weights = torch.softmax(scores, dim=-1)
    return out


def test_curve_peaks_at_a_short_tone_in_a_long_signal(model):
    rng = np.random.default_rng(0)
    x = (0.05 * rng.standard_normal(60 * 16000)).astype(np.float32)
    x[int(31.0 * 16000) : int(31.3 * 16000)] += tone(1000, 0.3, amp=0.5)
    pred = predict(model, x, precision="fp32", forward=_loudest_frame_forward)
    curve = pred.weights.mean(axis=0)
    peak = pred.frame_times_s[int(np.argmax(curve))]
    assert 31.0 <= peak <= 31.3, peak
    # every frame of the recording is on the curve, once, with a weight; the curve sums to 1
    total = int(model.backbone._get_feat_extract_output_lengths(torch.tensor([x.size])).item())
    assert pred.weights.shape == (1, total) and (pred.weights > 0).all()
    assert pred.weights.sum() == pytest.approx(1.0, abs=1e-5)
    inside = (pred.frame_times_s >= 31.0) & (pred.frame_times_s <= 31.3)
    assert curve[inside].sum() > 0.9  # the other 59.7 s hold no evidence and get almost none of the weight
    # the windows holding the tone carry the recording's answer
    best = max(pred.windows, key=lambda w: w.evidence)
    assert best.start_s <= 31.0 and best.end_s >= 31.3
    assert sum(w.evidence for w in pred.windows) == pytest.approx(1.0)


def test_stitching_places_frames_to_the_sample():
    """Window scores that are the absolute time of each frame centre stitch to exactly the recording's frame
    centres, for windows starting anywhere (rounding starts to the 320-sample grid is up to 10 ms off)."""
    stride, field, window_frames = 320, 400, 249
    n = 16000 * 12 + 123
    starts = [0, 40000, 80000, n - 80000]  # the last window is aligned to the end: not a multiple of 320
    assert starts[-1] % stride
    total = (n - field) // stride + 1
    scores = np.stack([
        ((s + np.arange(window_frames) * stride + field / 2) / 16000)[None, :] for s in starts
    ])
    stitched = _stitch_scores(scores, starts, total, stride)
    exact = (np.arange(total) * stride + field / 2) / 16000
    covered = exact <= (starts[-1] + (window_frames - 1) * stride + field / 2) / 16000
    np.testing.assert_allclose(stitched[0, covered], exact[covered], atol=1e-9)
    # frames past the last window's last centre (less than one stride) still get a score: the edge value
    assert np.isfinite(stitched).all() and stitched.shape == (1, total)


def test_windows_without_evidence_do_not_outvote_the_one_with_it(model):
    n_windows, frames = 7, 249
    probs = np.tile([0.1, 0.7, 0.2], (n_windows, 1))  # confident guesses of "b" where nothing happens
    probs[3] = [0.95, 0.03, 0.02]  # the window with the event says "a"
    scores = np.zeros((n_windows, 1, frames))
    scores[3, 0, 100:140] = 6.0  # and its attention found something there
    starts = [i * 40000 for i in range(n_windows)]
    n = starts[-1] + 80000
    mean = aggregate_windows(probs, scores, starts, n, model, "mean")
    assert int(np.argmax(mean.probabilities)) == 1
    agg = aggregate_windows(probs, scores, starts, n, model, "evidence")
    assert int(np.argmax(agg.probabilities)) == 0 and agg.evidence.argmax() == 3
    assert agg.probabilities.sum() == pytest.approx(1.0)
    peak = aggregate_windows(probs, scores, starts, n, model, "peak")
    np.testing.assert_allclose(peak.probabilities, probs[3])
    assert peak.evidence.tolist() == [0, 0, 0, 1, 0, 0, 0]
    for method in AGGREGATIONS:
        out = aggregate_windows(probs, scores, starts, n, model, method)
        assert out.probabilities.sum() == pytest.approx(1.0) and out.evidence.sum() == pytest.approx(1.0)
        np.testing.assert_allclose(out.attention_share, agg.evidence)  # the evidence, whatever the method
    with pytest.raises(ValueError, match="aggregation must be one of"):
        aggregate_windows(probs, scores, starts, n, model, "vote")


def test_many_weak_windows_do_not_outvote_the_peak(model):
    """The offline model's failure of the "evidence" mean (seen on 40 s recordings): 13 event-free windows, each
    with a little less attention mass than the two that hold the event, outweigh them together; the peak does not."""
    n_windows, frames = 15, 249
    probs = np.tile([0.2, 0.7, 0.1], (n_windows, 1))  # background windows: a confident "b"
    probs[6:8] = [0.97, 0.02, 0.01]  # the two windows holding the event say "a"
    scores = np.zeros((n_windows, 1, frames))
    scores[6:8, 0, 100:140] = 1.0  # more attention mass than any background window, but not 13 of them
    starts = [i * 40000 for i in range(n_windows)]
    n = starts[-1] + 80000
    evidence = aggregate_windows(probs, scores, starts, n, model, "evidence")
    assert int(np.argmax(evidence.probabilities)) == 1 and evidence.attention_share[6:8].sum() < 0.5
    peak = aggregate_windows(probs, scores, starts, n, model, "peak")
    assert int(np.argmax(peak.probabilities)) == 0 and int(np.argmax(peak.evidence)) in (6, 7)
    assert peak.probabilities.sum() == pytest.approx(1.0)


def test_one_window_is_the_models_own_answer(model):
    x = tone(700, 3.0)
    pred = predict(model, x, precision="fp32")
    with torch.no_grad():
        batch = model.feature_extractor()([x], sampling_rate=16000, return_tensors="pt")
        out = model(batch["input_values"], attention_mask=batch["attention_mask"])
    np.testing.assert_allclose(pred.probabilities, torch.softmax(out.logits, -1)[0].numpy(), atol=1e-6)
    np.testing.assert_allclose(pred.weights, out.pooling_weights[0].numpy(), atol=1e-7)
    d = pred.to_dict()
    assert d["aggregation"] == "peak" and "attention mass" in d["aggregation_how"]
    assert d["windows"][0]["evidence"] == 1.0 and d["windows"][0]["attention_share"] == 1.0


def test_the_json_says_how_a_long_recording_was_aggregated(model):
    d = predict(model, tone(500, 12.0), precision="fp32").to_dict(include_weights=False)
    assert d["aggregation"] == "peak" and len(d["windows"]) == 4
    assert sum(w["evidence"] for w in d["windows"]) == pytest.approx(1.0, abs=1e-5)
    assert sum(w["attention_share"] for w in d["windows"]) == pytest.approx(1.0, abs=1e-5)
    [best] = [w for w in d["windows"] if w["evidence"] == 1.0]  # the peak window answers (ties: any of them)
    assert best["attention_share"] == pytest.approx(max(w["attention_share"] for w in d["windows"]), abs=1e-6)
    assert (d["label"], d["score"]) == (best["label"], best["score"])
    assert predict(model, tone(500, 12.0), precision="fp32", aggregation="mean").to_dict()["aggregation"] == "mean"
