"""Faithfulness of saliencies (issue 12): deletion/insertion curves on a model whose evidence is known exactly,
monotone removal, clips with no real frame, and clips with two events."""

from __future__ import annotations

import json
from types import SimpleNamespace

import numpy as np
import pytest
import torch
from torch import nn

from asit_helpers import AsitForAudioClassification
from asit_helpers.explain import (
    SALIENCIES,
    background_noise,
    class_probabilities,
    faithfulness,
    num_frames,
    removal_counts,
    removal_masks,
    sample_frames,
    two_event_report,
)
from asit_helpers.model import AsitAttentionPooling

SR = 16000
FIELD, STRIDE = 400, 320  # the tiny preset's conv stack: 25 ms fields every 20 ms
EVIDENCE = (40, 60)  # the only frames the constructed model looks at


class EnergyFrames(nn.Module):
    """A stand-in backbone: frame t = samples [320 t, 320 t + 400); features = (log energy, 1 if t in EVIDENCE)."""

    def __init__(self, evidence: tuple[int, int]):
        super().__init__()
        self.evidence = evidence

    def _get_feat_extract_output_lengths(self, lengths):
        return torch.div(torch.as_tensor(lengths) - FIELD, STRIDE, rounding_mode="floor") + 1

    def forward(self, input_values, attention_mask=None, output_hidden_states=False, return_dict=True):
        frames = input_values.unfold(1, FIELD, STRIDE)  # (B, T, FIELD)
        energy = torch.log(frames.pow(2).mean(-1) + 1e-6)
        t = torch.arange(frames.shape[1])
        inside = ((t >= self.evidence[0]) & (t < self.evidence[1])).float().expand_as(energy)
        return SimpleNamespace(last_hidden_state=torch.stack([energy, inside], dim=-1), hidden_states=None)


def evidence_model() -> AsitForAudioClassification:
    """An ASiT classifier whose attention sits on EVIDENCE and whose 'event' probability rises with the audio's
    energy there (and nowhere else): the one frame range that matters is known exactly."""
    model = AsitForAudioClassification.from_backbone("tiny", labels=["quiet", "event"], do_normalize=False)
    model.backbone = EnergyFrames(EVIDENCE)
    model.pooling = AsitAttentionPooling(2, num_heads=1, attention_dim=2)
    model.classifier = nn.Linear(2, 2)
    with torch.no_grad():
        model.pooling.proj.weight.copy_(torch.tensor([[0.0, 1.0], [0.0, 0.0]]))
        model.pooling.proj.bias.zero_()
        model.pooling.score.weight.copy_(torch.tensor([[20.0, 0.0]]))  # ~e^-15 of the weight outside EVIDENCE
        model.pooling.score.bias.zero_()
        model.classifier.weight.copy_(torch.tensor([[0.0, 0.0], [3.0, 0.0]]))  # logit(event) = 3 (E + 4)
        model.classifier.bias.copy_(torch.tensor([0.0, 12.0]))
    return model.eval()


def evidence_clip(seed: int = 0, seconds: float = 2.0) -> np.ndarray:
    """Quiet noise with a loud tone over exactly the EVIDENCE frames' samples."""
    rng = np.random.default_rng(seed)
    x = 0.05 * rng.standard_normal(int(seconds * SR))
    start, stop = EVIDENCE[0] * STRIDE, (EVIDENCE[1] - 1) * STRIDE + FIELD
    x[start:stop] += 0.5 * np.sin(2 * np.pi * 700 * np.arange(stop - start) / SR)
    return x.astype(np.float32)


@pytest.fixture(scope="module")
def evidence_report():
    model = evidence_model()
    clips = [evidence_clip(s) for s in range(3)]
    return faithfulness(model, clips, [1, 1, 1], steps=20, batch_size=8, occlusion_frames=5)


def first_below(curve: np.ndarray, fractions: np.ndarray, level: float = 0.5) -> float:
    below = np.flatnonzero(curve < level)
    return float(fractions[below[0]]) if below.size else float("inf")


def test_attention_deletion_drops_the_probability_before_random_does(evidence_report):
    r = evidence_report
    assert np.all(r.original > 0.95)  # the intact clips are confidently "event"
    att, rnd = r.deletion["attention"], r.deletion["random"]
    for clip in range(3):
        # EVIDENCE is 20 % of the frames: attention has removed it all by 0.2; random has removed a fifth of it
        assert first_below(att[clip], r.fractions) <= 0.2 + 1e-9
        assert first_below(rnd[clip], r.fractions) > first_below(att[clip], r.fractions)
        assert att[clip, 4] < 0.05 < 0.5 < rnd[clip, 4]  # at 20 % removed
    s = r.summary()
    assert s["attention"]["deletion_auc"] < s["random"]["deletion_auc"] - 0.3
    assert s["attention"]["insertion_auc"] > s["random"]["insertion_auc"] + 0.2
    # the expensive reference finds the same frames; energy does too on this clip (the tone is the loud part)
    assert s["occlusion"]["deletion_auc"] < s["random"]["deletion_auc"] - 0.3
    assert s["gradient_x_input"]["deletion_auc"] < s["random"]["deletion_auc"] - 0.3


def test_curves_are_monotone_in_the_amount_removed(evidence_report):
    """What is monotone: the removed audio. Each step removes a superset of the previous step's samples (0 at
    fraction 0, every sample at 1). On the constructed model, whose probability only grows with the evidence's
    energy, the attention-ranked curves are then monotone too: deletion never rises, insertion never falls."""
    rng = np.random.default_rng(1)
    frames = 99
    fractions = np.linspace(0, 1, 21)
    counts = removal_counts(frames, fractions)
    assert counts[0] == 0 and counts[-1] == frames and np.all(np.diff(counts) >= 0)
    fos = sample_frames(evidence_model(), 32000, frames)
    masks = removal_masks(rng.permutation(frames), fos, fractions)
    assert not masks[0].any() and masks[-1].all()
    assert np.all(masks[:-1] <= masks[1:])  # nested: nothing removed comes back
    assert np.all(np.diff(masks.sum(axis=1)) >= 0)
    r = evidence_report
    assert np.all(np.diff(r.deletion["attention"], axis=1) <= 1e-6)
    assert np.all(np.diff(r.insertion["attention"], axis=1) >= -1e-6)
    # endpoints: nothing removed is the intact clip; everything removed is the same input for every saliency
    for name in r.saliencies:
        np.testing.assert_allclose(r.deletion[name][:, 0], r.original, atol=1e-5)
        np.testing.assert_allclose(r.insertion[name][:, -1], r.original, atol=1e-5)
        np.testing.assert_allclose(r.deletion[name][:, -1], r.insertion[name][:, 0], atol=1e-5)


def test_frames_tile_the_clip():
    model = evidence_model()
    n = 32000
    frames = num_frames(model, n)
    assert frames == (n - FIELD) // STRIDE + 1
    fos = sample_frames(model, n, frames)
    assert fos[0] == 0 and fos[-1] == frames - 1 and np.all(np.diff(fos) >= 0)
    assert set(np.unique(fos)) == set(range(frames))
    # a sample belongs to the frame whose centre (320 t + 200) is nearest
    t = 50
    assert fos[t * STRIDE + FIELD // 2] == t and fos[t * STRIDE + FIELD // 2 + STRIDE // 2 + 1] == t + 1


def test_clips_with_no_real_frame_are_reported_not_tested():
    model = evidence_model()
    clips = [evidence_clip(0), np.zeros(100, np.float32), np.zeros(0, np.float32)]
    r = faithfulness(model, clips, [1, 1, 0], steps=5, batch_size=4, saliencies=("attention", "random", "energy"))
    assert r.skipped == [1, 2]
    for name in r.saliencies:
        assert np.isfinite(r.deletion[name][0]).all()
        assert np.isnan(r.deletion[name][1:]).all() and np.isnan(r.insertion[name][1:]).all()
    d = r.to_dict()
    json.dumps(d)  # JSON-ready: no NaN leaks as a float
    assert d["n"] == 1 and d["skipped"] == 2 and d["summary"]["attention"]["deletion_auc"] is not None
    # only empty clips: a report with nothing in it, not a crash
    empty = faithfulness(model, [np.zeros(10, np.float32)], [0], steps=4, saliencies=("attention", "random"))
    assert empty.skipped == [0] and empty.summary()["attention"]["deletion_auc"] is None
    json.dumps(empty.to_dict())


def test_silent_clip_and_background_replacement():
    model = evidence_model()
    x = evidence_clip(3)
    frames = num_frames(model, len(x))
    fos = sample_frames(model, len(x), frames)
    noise = background_noise(x, fos, frames, np.random.default_rng(0))
    assert noise.shape == x.shape and noise.dtype == np.float32
    # the level of the quiet background (0.05 RMS), not of the tone, and a fresh signal rather than a copy
    assert 0.04 < float(np.sqrt(np.mean(noise**2))) < 0.06
    assert abs(np.corrcoef(noise, x)[0, 1]) < 0.1
    silent = np.zeros(16000, np.float32)
    f = num_frames(model, len(silent))
    assert not background_noise(silent, sample_frames(model, len(silent), f), f, np.random.default_rng(0)).any()
    r = faithfulness(model, [silent], [0], steps=4, saliencies=("energy", "random"))
    assert r.skipped == [] and np.isfinite(r.deletion["energy"]).all()
    with pytest.raises(ValueError, match="replacement must be one of"):
        faithfulness(model, [x], [1], replacement="silence")
    with pytest.raises(ValueError, match="unknown saliencies"):
        faithfulness(model, [x], [1], saliencies=("attention", "shap"))


def test_real_model_batched_and_multihead(tiny_checkpoint):
    """On a real (random) tiny wav2vec2 with two heads: one curve per head, batching does not change results,
    clips of different lengths are never padded together."""
    torch.manual_seed(0)
    model = AsitForAudioClassification.from_backbone("tiny-fb", labels=["a", "b", "c"], pooling="multihead",
                                                     num_heads=2).eval()
    rng = np.random.default_rng(0)
    clips = [rng.standard_normal(n).astype(np.float32) * 0.1 for n in (6400, 6400, 4800)]
    r = faithfulness(model, clips, [0, 1, 2], steps=2, batch_size=16, occlusion_frames=8)
    assert set(r.saliencies) == set(SALIENCIES) | {f"attention_head{h}" for h in range(2)}
    assert r.deletion["attention"].shape == (3, 3) and np.isfinite(r.deletion["attention"]).all()
    one = class_probabilities(model, ((c, 0) for c in clips), batch_size=1)
    many = class_probabilities(model, ((c, 0) for c in clips), batch_size=16)
    np.testing.assert_allclose(one, many, atol=1e-5)
    np.testing.assert_allclose(r.original, [class_probabilities(model, [(c, y)])[0] for c, y in zip(clips, [0, 1, 2])],
                               atol=1e-5)
    table = r.table()
    assert list(table.columns) == ["deletion_auc", "insertion_auc"] and len(table) == len(r.saliencies)
    assert set(r.per_class()) == {"a", "b", "c"}
    fig = r.plot()
    assert len(fig.axes) == 2


def test_two_event_report(tmp_path):
    from asit_helpers.synth import make_soundscapes
    from asit_helpers.viz import plot_two_events

    classes = ["dog", "owl", "siren"]
    make_soundscapes(tmp_path / "two", clips_per_class=2, seed=0, classes=classes, seconds=2.5, events=2,
                     progress=False)
    torch.manual_seed(0)
    single = AsitForAudioClassification.from_backbone("tiny", labels=classes).eval()
    multi = AsitForAudioClassification.from_backbone("tiny", labels=classes, pooling="multihead", num_heads=2).eval()
    reports = {"single": two_event_report(single, tmp_path / "two"), "multi": two_event_report(multi, tmp_path / "two")}
    for rep in reports.values():
        df, s = rep.clips, rep.summary()
        assert len(df) == 6 and s["clips"] == 6
        for key in ("top1_is_one_of_the_two", "top2_accuracy", "heads_take_both_events", "attention_on_winner"):
            assert s[key] is None or 0.0 <= s[key] <= 1.0
        assert ((df["share_A"] + df["share_B"]) <= 1 + 1e-6).all()
        # with three classes, the top two are the clip's two events exactly when the third class is ranked last
        third = [next(c for c in classes if c not in (a, b)) for a, b in zip(df["label"], df["label_2"])]
        ranks = rep.probabilities.argsort(axis=1)[:, 0]
        assert (df["top2_both"].to_numpy() == (np.array(classes)[ranks] == np.array(third))).all()
    assert reports["single"].heads == 1 and reports["single"].summary()["heads_take_both_events"] == 0.0
    assert "top-2 accuracy" in reports["single"].describe() and "heads split" in reports["multi"].describe()
    assert set(reports["multi"].summary()["head_takes"]) == {"head0", "head1"}
    from asit_helpers.audio import load_audio

    samples = load_audio(tmp_path / "two" / reports["single"].clips["path"].iloc[0])
    fig = plot_two_events(reports, samples, 0)
    assert len(fig.axes) >= 3
    rates_ax = fig.axes[len(reports)]  # the bars, after one clip row per model (twins come later)
    assert "heads take both events" in [t.get_text() for t in rates_ax.get_xticklabels()]
    assert "chance" in rates_ax.get_legend_handles_labels()[1]
    # one head cannot split two events: the single-head figure has no bar for it (it would read 0.00)
    single_fig = plot_two_events({"single": reports["single"]}, samples, 0)
    labels = [t.get_text() for t in single_fig.axes[1].get_xticklabels()]
    assert "heads take both events" not in labels and "follows louder" in labels
    make_soundscapes(tmp_path / "one", clips_per_class=1, classes=classes, seconds=2.0, progress=False)
    with pytest.raises(ValueError, match="one event per clip"):
        two_event_report(single, tmp_path / "one")
    with pytest.raises(FileNotFoundError, match="no events table"):
        two_event_report(single, tmp_path / "nowhere")


def test_evaluate_and_cli_faithfulness(train_cache, tmp_path, capsys):
    """`asit evaluate CK CACHE --json --faithfulness` adds {saliency: {deletion_auc, insertion_auc}} over the split,
    per class in the details, and --faithfulness-figure saves the curves."""
    from asit_helpers.cli import main

    torch.manual_seed(0)
    ck = tmp_path / "ck"
    AsitForAudioClassification.from_backbone("tiny-fb", labels=train_cache.labels).save_pretrained(ck)
    png = tmp_path / "faith.png"
    assert main(["evaluate", str(ck), str(train_cache.folder), "--json", "--faithfulness",
                 "--faithfulness-figure", str(png)]) == 0
    out = json.loads(capsys.readouterr().out)
    assert set(out["faithfulness"]) == set(SALIENCIES)
    for scores in out["faithfulness"].values():
        assert set(scores) == {"deletion_auc", "insertion_auc"}
        assert 0.0 <= scores["deletion_auc"] <= 1.0 and 0.0 <= scores["insertion_auc"] <= 1.0
    details = out["faithfulness_details"]
    assert details["n"] == len(train_cache.indices("test")) and details["replacement"] == "background"
    test_labels = set(train_cache.manifest["label"].iloc[train_cache.indices("test")])
    assert set(details["per_class"]) == test_labels
    assert len(details["curves"]["fractions"]) == 11 and png.stat().st_size > 10_000


def test_reading_is_written_from_the_numbers(evidence_report):
    text = evidence_report.reading()
    assert "attention is more faithful than random" in text
    r = evidence_report
    flipped = type(r)(r.fractions, {"attention": r.deletion["random"], "random": r.deletion["attention"]},
                      {"attention": r.insertion["random"], "random": r.insertion["attention"]}, r.labels,
                      r.replacement, original=r.original)
    assert "attention is NOT more faithful than random" in flipped.reading()
    tie = type(r)(r.fractions, {"attention": r.deletion["attention"], "energy": r.deletion["attention"] + 0.001},
                  {"attention": r.insertion["attention"], "energy": r.insertion["attention"]}, r.labels,
                  r.replacement, original=r.original * 0.1)
    assert "about as faithful" in tie.reading() and tie.reading().startswith("Caution")
