"""The prediction and attention plots in viz.py, drawn from a real Prediction of a tiny model."""

from __future__ import annotations

import numpy as np
import pytest
import torch

from asit_helpers import AsitForAudioClassification, predict
from asit_helpers import viz

SR = 16000


@pytest.fixture(scope="module")
def clip() -> np.ndarray:
    """6 s of faint noise with a loud tone from 2 s to 3 s."""
    x = np.random.default_rng(0).normal(0, 0.01, 6 * SR).astype(np.float32)
    x[2 * SR : 3 * SR] += 0.5 * np.sin(2 * np.pi * 800 * np.arange(SR) / SR).astype(np.float32)
    return x


@pytest.fixture(scope="module", params=["attention", "multihead"])
def pred(request, clip):
    torch.manual_seed(0)
    model = AsitForAudioClassification.from_backbone("tiny", labels=["dog", "cat", "siren"], pooling=request.param)
    return predict(model.eval(), clip, top_k=3)


def _attention_lines(ax):
    """Lines on an axis's twin (the attention curves)."""
    twins = [other for other in ax.figure.axes if other is not ax and other.bbox.bounds == ax.bbox.bounds]
    return [line for twin in twins for line in twin.get_lines()]


@pytest.mark.parametrize("theme", ["light", "dark"])
def test_plot_attention_one_curve_per_head_on_both_panels(pred, clip, theme, tmp_path):
    fig = viz.plot_attention(pred, clip, SR, events=[(2.0, 3.0)], theme=theme)
    heads = pred.weights.shape[0]
    main_axes = [ax for ax in fig.axes if ax.get_ylabel() in ("amplitude", "mel band (kHz)")]
    assert len(main_axes) == 2
    for ax in main_axes:
        lines = _attention_lines(ax)
        assert len(lines) == heads
        # the curve is the weights in "× uniform" units on the frame-time grid
        np.testing.assert_allclose(lines[0].get_xdata(), pred.frame_times_s)
        np.testing.assert_allclose(lines[0].get_ydata(), pred.weights[0] * pred.weights.shape[1], rtol=1e-5)
    assert main_axes[0].get_xlim() == pytest.approx((0.0, clip.size / SR))
    path = viz.save_figure(fig, tmp_path / "sub" / "attention.png")
    assert path.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
    assert not list(path.parent.glob("*.tmp*"))
    bg = fig.get_facecolor()
    assert (sum(bg[:3]) < 0.5) == (theme == "dark")


def test_log_mel_is_on_the_event(clip):
    spec, freqs = viz._log_mel(clip, SR, n_mels=64)
    assert spec.shape[0] == 64 and freqs.shape == (64,)
    assert np.all(np.diff(freqs) > 0)
    band = int(np.argmin(np.abs(freqs - 800)))
    frames = spec.shape[1]
    inside = spec[band, int(frames * 2.2 / 6) : int(frames * 2.8 / 6)].mean()
    outside = spec[band, : int(frames * 1.5 / 6)].mean()
    assert inside > outside + 20  # dB


def test_frame_energy_follows_the_event(pred, clip):
    energy = viz.frame_energy_db(pred, clip, SR)
    assert energy.shape == pred.frame_times_s.shape
    t = pred.frame_times_s
    assert energy[(t > 2.1) & (t < 2.9)].min() > energy[(t < 1.9) | (t > 3.1)].max() + 20


def test_attention_vs_energy_reports_spearman(pred, clip):
    fig = viz.plot_attention_vs_energy(pred, clip, SR)
    rho = viz.spearman(viz.frame_energy_db(pred, clip, SR), viz.attention_relative(pred).mean(axis=0))
    assert f"ρ = {rho:.2f}" in fig.axes[1].get_title() or any(f"ρ = {rho:.2f}" in a.get_title() for a in fig.axes)


def test_spearman():
    a = np.arange(10.0)
    assert viz.spearman(a, a**3) == pytest.approx(1.0)
    assert viz.spearman(a, -a) == pytest.approx(-1.0)
    assert np.isnan(viz.spearman(a, np.ones(10)))


def test_top_k_bars(pred):
    fig = viz.plot_top_k(pred)
    bars = fig.axes[0].patches
    assert len(bars) == len(pred.top_k)
    widths = [b.get_width() for b in bars]
    assert widths[::-1] == pytest.approx([p for _, p in pred.top_k])  # best on top
    assert fig.axes[0].get_yticklabels()[-1].get_text() == pred.label


def test_attention_profiles(pred):
    shifted = type(pred)(**{**pred.__dict__, "weights": np.roll(pred.weights, 50, axis=1)})
    names, profiles, grid = viz.attention_profiles([pred, pred, shifted], ["b", "b", "a"], n_bins=20)
    assert names == ["a", "b"] and profiles.shape == (2, 20) and grid.shape == (20,)
    expected_b = np.interp(grid, pred.frame_times_s / pred.duration_s, viz.attention_relative(pred).mean(0))
    np.testing.assert_allclose(profiles[1], expected_b)
    assert profiles.mean(axis=1) == pytest.approx([1.0, 1.0], abs=0.1)
    fig = viz.plot_attention_profiles([pred, shifted], ["b", "a"], theme="dark")
    assert [t.get_text() for t in fig.axes[0].get_yticklabels()] == ["a", "b"]
    with pytest.raises(ValueError):
        viz.attention_profiles([], [])


def test_unknown_theme_is_refused(pred, clip):
    with pytest.raises(ValueError, match="theme"):
        viz.plot_top_k(pred, theme="solarized")
