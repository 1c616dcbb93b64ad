"""Evaluation: metrics against hand-computed values, attention localisation, agreement with predict, plots."""

from __future__ import annotations

import re

import matplotlib

matplotlib.use("Agg")

import numpy as np
import pandas as pd
import pytest
import torch

from asit_helpers.evaluate import (accuracy_by_snr, classification_metrics, compare_reports, evaluate,
                                 event_weight_share)
from asit_helpers.inference import predict
from asit_helpers.model import AsitForAudioClassification


@pytest.fixture(scope="module")
def models(train_cache):
    """Random tiny models on the cache's labels, one per pooling (untrained: evaluation must not care)."""
    out = {}
    for pooling in ("attention", "mean"):
        torch.manual_seed(1)
        out[pooling] = AsitForAudioClassification.from_backbone("tiny", labels=train_cache.labels, pooling=pooling).eval()
    return out


def test_classification_metrics_by_hand():
    m = classification_metrics([0, 0, 1, 2, 2], [0, 1, 1, 2, 0], ["a", "b", "c"])
    assert m["accuracy"] == pytest.approx(3 / 5)
    assert m["per_class"]["a"] == {"precision": 0.5, "recall": 0.5, "f1": 0.5, "support": 2}
    assert m["per_class"]["b"]["precision"] == 0.5 and m["per_class"]["b"]["recall"] == 1.0
    assert m["per_class"]["c"]["f1"] == pytest.approx(2 / 3)
    assert m["macro_f1"] == pytest.approx((0.5 + 2 / 3 + 2 / 3) / 3)
    assert m["confusion"].tolist() == [[1, 1, 0], [0, 1, 0], [1, 0, 1]]
    with pytest.raises(ValueError, match="no clips"):
        classification_metrics([], [], ["a"])


def test_event_weight_share():
    times = np.arange(10) * 0.5 + 0.25  # frame centres 0.25 .. 4.75 s
    mask = np.ones(10, dtype=bool)
    peaked = np.zeros((1, 10))
    peaked[0, 4] = 1.0  # all weight at 2.25 s
    share, chance = event_weight_share(peaked, mask, times, 2.0, 3.0)  # frames at 2.25 and 2.75 inside
    assert share == 1.0 and chance == pytest.approx(0.2)
    uniform = np.full((2, 10), 0.1)
    assert event_weight_share(uniform, mask, times, 2.0, 3.0) == pytest.approx((0.2, 0.2))
    # padding frames count for neither the weight nor the chance share
    mask[5:] = False
    share, chance = event_weight_share(np.full((1, 10), 0.2) * mask, mask, times, 2.0, 3.0)
    assert share == pytest.approx(0.2) and chance == pytest.approx(0.2)
    assert all(np.isnan(event_weight_share(peaked, np.ones(10, bool), times, np.nan, np.nan)))


def test_evaluate_report(train_cache, models):
    report = evaluate(models["attention"], train_cache, split="test", progress=False)
    test_idx = train_cache.indices("test")
    assert len(report.clips) == len(test_idx) and report.split == "test"
    assert report.accuracy == pytest.approx(report.clips["correct"].mean())
    assert report.confusion.shape == (4, 4) and report.confusion.sum() == len(test_idx)
    assert list(report.per_class.index) == list(train_cache.labels)
    assert {"precision", "recall", "f1", "support", "attention_in_event", "attention_chance"} <= set(report.per_class)
    assert 0.0 <= report.attention_in_event <= 1.0 and 0.0 < report.attention_chance < 1.0
    assert len(report.misclassified) == int((~report.clips["correct"]).sum())
    assert report.by_snr is not None and report.by_snr["n"].sum() == len(test_idx)
    assert report.weights.shape[0] == len(test_idx)
    d = report.to_dict()
    assert {"accuracy", "macro_f1", "per_class", "confusion", "misclassified", "attention_in_event",
            "attention_chance", "accuracy_by_snr", "low_snr_accuracy"} <= set(d)

    # the chance share is the event's share of the clip, i.e. about event duration / clip duration
    clips = report.clips
    expected = ((clips["event_offset_s"] - clips["event_onset_s"]) / (clips["length"] / 16000)).mean()
    assert report.attention_chance == pytest.approx(expected, abs=0.03)


def test_mean_pooling_scores_exactly_chance(train_cache, models):
    mean = evaluate(models["mean"], train_cache, split=None, progress=False)
    assert mean.attention_in_event == pytest.approx(mean.attention_chance, abs=1e-6)
    attn = evaluate(models["attention"], train_cache, split=None, progress=False)
    # accuracy by SNR quartile, lowest first (32 clips: quartile bins, not exact values)
    snr = attn.clips["snr_db"]
    lowest = attn.clips[snr <= snr.quantile(0.25)]
    assert len(attn.by_snr) == 4 and attn.low_snr_accuracy == pytest.approx(lowest["correct"].mean())
    for row in attn.to_dict()["accuracy_by_snr"]:  # readable, JSON-ready levels
        assert re.fullmatch(r"-?\d+\.\d{1,2} to -?\d+\.\d{1,2}", row["snr_db"]), row
    table = compare_reports({"attention": attn, "mean": mean})
    assert list(table.index) == ["attention", "mean"]
    assert table.loc["mean", "pooling"] == "mean" and "low_snr_accuracy" in table


def test_snr_levels_read_as_rounded_ranges():
    """Quartile levels print as "3.1 to 8.0", not pandas' "(3.1390000000000002, 7.99]" (issue 20)."""
    rng = np.random.default_rng(0)
    snr = np.round(np.concatenate([[3.14], rng.uniform(3.2, 19.9, 38), [19.93]]), 2)
    clips = pd.DataFrame({"snr_db": snr, "correct": rng.random(40) < 0.8, "attention_in_event": np.nan})
    table = accuracy_by_snr(clips)
    assert list(table.columns) == ["snr_db", "snr_db_low", "snr_db_high", "n", "accuracy"]
    assert table["snr_db"].iloc[0].startswith("3.1 to ") and table["snr_db"].iloc[-1].endswith(" to 19.9")
    for name, lo, hi in table[["snr_db", "snr_db_low", "snr_db_high"]].itertuples(index=False):
        assert name == f"{lo:.1f} to {hi:.1f}" and lo < hi
    assert table["n"].sum() == 40 and list(table["snr_db_high"].iloc[:-1]) == list(table["snr_db_low"].iloc[1:])
    lowest = clips[clips["snr_db"] <= np.quantile(snr, 0.25)]
    assert table["accuracy"].iloc[0] == pytest.approx(lowest["correct"].mean())
    # a few exact levels (the synthetic sets' fixed SNRs) stay values, lowest first
    exact = accuracy_by_snr(pd.DataFrame({"snr_db": [10.0, 0.0, 5.0, 0.0], "correct": [True, False, True, True],
                                          "attention_in_event": np.nan}))
    assert list(exact["snr_db"]) == [0.0, 5.0, 10.0] and list(exact["n"]) == [2, 1, 1]
    assert list(exact["snr_db_low"]) == list(exact["snr_db_high"]) == [0.0, 5.0, 10.0]


def test_evaluate_agrees_with_predict(train_cache, models):
    """The batch forward over the cache gives what predict gives for the same clip (one window)."""
    model = models["attention"]
    report = evaluate(model, train_cache, split="val", progress=False, precision="fp32")
    assert report.precision == "fp32" and report.to_dict()["precision"] == "fp32"
    for row in report.clips.itertuples():
        clip = train_cache.audio(row.index)[: train_cache.lengths[row.index]]
        pred = predict(model, clip, top_k=1, precision="fp32")
        assert pred.label == row.predicted
        assert pred.score == pytest.approx(row.score, abs=1e-4)


def test_evaluate_runs_the_precision_predict_runs(train_cache, models):
    """By default evaluate measures the numeric path users get: predict's auto precision, recorded in the report."""
    model = models["attention"]
    report = evaluate(model, train_cache, split="val", progress=False)
    row = report.clips.iloc[0]
    clip = train_cache.audio(int(row["index"]))[: train_cache.lengths[int(row["index"])]]
    pred = predict(model, clip, top_k=len(report.labels))
    assert report.precision == pred.precision and report.precision_reason
    assert report.to_dict()["precision"] == pred.precision
    assert dict(pred.top_k)[row["predicted"]] == pytest.approx(row["score"], abs=0.02)


def test_evaluate_refuses_other_labels(train_cache, tiny_checkpoint):
    with pytest.raises(ValueError, match="labels"):
        evaluate(tiny_checkpoint, train_cache, progress=False)


def test_training_and_evaluation_plots(train_cache, models):
    from asit_helpers.viz import plot_attention_localisation, plot_confusion, plot_learning_curves

    history = [
        {"epoch": 1, "train_loss": 1.4, "val_loss": 1.3, "train_accuracy": 0.3, "val_accuracy": 0.4, "val_macro_f1": 0.3},
        {"epoch": 2, "train_loss": 0.9, "val_loss": 1.0, "train_accuracy": 0.6, "val_accuracy": 0.6, "val_macro_f1": 0.55},
    ]
    fig = plot_learning_curves(history)
    loss_ax, metric_ax = fig.axes
    assert [line.get_label() for line in loss_ax.get_lines()] == ["train", "validation"]
    assert list(loss_ax.get_lines()[0].get_ydata()) == [1.4, 0.9]
    assert len(metric_ax.get_lines()) == 3
    with pytest.raises(ValueError, match="empty"):
        plot_learning_curves([])

    report = evaluate(models["attention"], train_cache, split="test", progress=False)
    fig = plot_confusion(report)
    heat = fig.axes[0]
    assert [t.get_text() for t in heat.get_xticklabels()] == list(train_cache.labels)
    cells = heat.collections[0].get_array().reshape(4, 4)
    rows = report.confusion / np.maximum(report.confusion.sum(1, keepdims=True), 1)
    np.testing.assert_allclose(cells, rows)  # colour: share of the true class
    written = [t.get_text() for t in heat.texts if t.get_text()]  # numbers: clip counts, only where there are clips
    assert sorted(written) == sorted(str(c) for c in report.confusion.ravel() if c > 0)
    # grouped by category: the classes of one category are neighbours, with the category written beside them
    cats = train_cache.manifest.drop_duplicates("label").set_index("label")["category"].to_dict()
    grouped = plot_confusion(report.to_dict(), categories=cats).axes[0]
    order = [t.get_text() for t in grouped.get_yticklabels()]
    runs = [cats[a] != cats[b] for a, b in zip(order, order[1:])]
    assert sum(runs) == len(set(cats.values())) - 1
    assert set(cats.values()) <= {t.get_text() for t in grouped.texts}

    fig = plot_attention_localisation(report)
    bars = fig.axes[0].patches
    assert len(bars) == 4
    assert sorted(b.get_width() for b in bars) == pytest.approx(sorted(report.per_class["attention_in_event"]))
    # beside each bar the loudness detectors on the same clips (issue 17): energy and loudest frame, per class
    legend = [t.get_text() for t in fig.axes[0].get_legend().get_texts()]
    assert legend[:3] == ["attention", "energy", "loudest frame"]
    energy = fig.axes[0].collections[0].get_offsets()[:, 0]
    assert sorted(energy) == pytest.approx(sorted(v["energy"] for v in report.localisation["per_class"].values()))
