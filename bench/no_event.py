"""Nothing happening is an answer: which "no event" detector works? (issue 11, item 5)

Clips of the model's window length (5 s) in four groups, none of them seen in training:

- ``silence``: digital zeros, and a -80 dB dither (a muted microphone);
- ``background``: the synthetic set's five background kinds (white, pink, brown, room swells, muffled) alone, at
  the set's levels (peak 0.3-0.9), i.e. room-like noise with no event;
- ``event``: synthetic clips, one event each at 3-20 dB SNR over one of those backgrounds (``synth.render_clip``);
- ``sustained``: one sound from start to end (each class's generator run for the whole clip, 3-20 dB over one of
  the backgrounds): rain, an engine, a held horn as ESC-50 / UrbanSound8K clips often are. It has no quieter part,
  so a gate against the clip's *own* floor calls it nothing.

For every clip the script records the model's top-1 probability, its attention evidence (log-sum-exp of the
unnormalised pooling scores, the quantity ``aggregate_windows`` weighs windows by) and the energy gate's level above
the clip's own noise floor (:func:`asit_helpers.activity.judge`), then scores each detector at several thresholds:
the share of background/silence clips it calls "no event", the share of event and sustained clips it keeps as
events, and the share of sustained clips it names correctly. ``predict``'s rule for a single clip is the row
"single clip (predict)": :func:`asit_helpers.activity.judge_clip` without a known floor.

    python bench/no_event.py CHECKPOINT [--per-class 5] [--per-background 20] [--seed 31]
"""

from __future__ import annotations

import argparse

import numpy as np
import torch

import asit_helpers  # noqa: F401  before _common: PYTHONPATH picks the code measured
from _common import RESULTS, machine_info, write_json


def sustained(spec, seed: int, n: int) -> np.ndarray:
    """Class ``spec``'s sound for the whole clip (0.05 s from each edge) over a background, peak 0.3-0.9."""
    from asit_helpers.synth import BACKGROUNDS

    rng = np.random.default_rng([seed, 2])
    background = list(BACKGROUNDS.values())[int(rng.integers(len(BACKGROUNDS)))](rng, n)
    edge = 800
    event = spec.make(rng, n - 2 * edge)
    event = event * np.sqrt(10 ** (rng.uniform(3, 20) / 10) / (np.mean(event**2) + 1e-12))  # unit-power background
    background[edge : n - edge] += event
    return (background * rng.uniform(0.3, 0.9) / np.abs(background).max()).astype(np.float32)


def clips(per_class: int, per_background: int, seed: int):
    """(group, name, audio) for every test clip."""
    from asit_helpers.synth import BACKGROUNDS, SYNTH_CLASSES, clip_seed, render_clip

    n = 5 * 16000
    rng = np.random.default_rng(seed)
    yield "silence", "zeros", np.zeros(n, dtype=np.float32)
    for k in range(4):
        yield "silence", "dither", (10 ** (-80 / 20) * rng.standard_normal(n)).astype(np.float32)
    for kind, make in BACKGROUNDS.items():
        for _ in range(per_background):
            x = make(rng, n)
            yield "background", kind, (x * rng.uniform(0.3, 0.9) / np.abs(x).max()).astype(np.float32)
    for i, spec in enumerate(SYNTH_CLASSES):
        for j in range(per_class):
            audio, _ = render_clip(spec.name, clip_seed(seed, i, j))
            yield "event", spec.name, audio
    for i, spec in enumerate(SYNTH_CLASSES):
        for j in range(max(1, per_class // 2)):
            yield "sustained", spec.name, sustained(spec, clip_seed(seed, i, 1000 + j), n)


@torch.inference_mode()
def measure(model, group: str, name: str, audio: np.ndarray) -> dict:
    from asit_helpers.activity import judge, judge_clip

    batch = model.feature_extractor()([audio], sampling_rate=16000, return_tensors="pt")
    out = model(batch["input_values"])
    probs = torch.softmax(out.logits.float(), -1)[0]
    scores = out.pooling_scores.float()[0]  # (heads, frames)
    act = judge(audio)
    return {"group": group, "name": name, "top1": float(probs.max()),
            "label": model.config.id2label[int(probs.argmax())],
            "evidence": float(torch.logsumexp(scores, -1).mean()), "level_db": act.level_db,
            "energy_no_event": act.no_event, "clip_no_event": judge_clip(audio).no_event}


def rates(rows: list[dict], no_event) -> dict:
    """Share of each group the detector ``no_event(row) -> bool`` calls 'no event' (events and sustained sounds:
    the share kept; ``sustained_named``: kept and the right class)."""
    out = {}
    for group in GROUPS:
        sel = [r for r in rows if r["group"] == group]
        flagged = np.mean([bool(no_event(r)) for r in sel]) if sel else float("nan")
        out[f"{group}_kept" if group in SOUNDS else f"{group}_no_event"] = round(
            float(1 - flagged if group in SOUNDS else flagged), 3)
    sel = [r for r in rows if r["group"] == "sustained"]
    out["sustained_named"] = round(float(np.mean([not no_event(r) and r["label"] == r["name"] for r in sel])), 3)
    out["balanced"] = round((out["event_kept"] + out["background_no_event"]) / 2, 3)
    return out


GROUPS = ("silence", "background", "event", "sustained")
SOUNDS = ("event", "sustained")


def main() -> None:
    from asit_helpers.model import load_model

    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("checkpoint")
    ap.add_argument("--per-class", type=int, default=5)
    ap.add_argument("--per-background", type=int, default=20)
    ap.add_argument("--seed", type=int, default=31)
    ap.add_argument("--out", default=str(RESULTS / "no_event.json"))
    args = ap.parse_args()

    model = load_model(args.checkpoint).eval()
    rows = [measure(model, *c) for c in clips(args.per_class, args.per_background, args.seed)]
    detectors = {}
    for margin in (3, 4, 5, 6, 8, 10):
        detectors[f"energy >= {margin} dB over the clip's floor"] = lambda r, m=margin: r["level_db"] < m or (
            r["group"] == "silence" and r["energy_no_event"])
    for tau in (0.5, 0.7, 0.8, 0.9, 0.95, 0.99):
        detectors[f"confidence top-1 >= {tau}"] = lambda r, t=tau: r["top1"] < t
    ev = np.array([r["evidence"] for r in rows])
    for q in (10, 25, 50):
        cut = float(np.percentile(ev, q))
        detectors[f"attention evidence >= its {q}th percentile ({cut:.2f})"] = lambda r, c=cut: r["evidence"] < c
    for tau in (0.5, 0.8):
        detectors[f"energy gate (kept margin) and top-1 >= {tau}"] = lambda r, t=tau: r["energy_no_event"] or r["top1"] < t
    detectors["before: gate against the clip's own floor (kept margin)"] = lambda r: r["energy_no_event"]
    detectors["single clip (predict): silence only, else the model"] = lambda r: r["clip_no_event"]
    for tau in (0.5, 0.7, 0.9):  # an "uncertain" band, only where the own-floor gate finds nothing standing out
        detectors[f"silence only; a steady clip needs top-1 >= {tau}"] = lambda r, t=tau: r["clip_no_event"] or (
            r["energy_no_event"] and r["top1"] < t)
    for q in (25, 50):
        cut = float(np.percentile(ev, q))
        detectors[f"silence only; a steady clip needs evidence >= {q}th pct ({cut:.2f})"] = lambda r, c=cut: (
            r["clip_no_event"] or (r["energy_no_event"] and r["evidence"] < c))
    table = {name: rates(rows, fn) for name, fn in detectors.items()}
    summary = {g: {"n": sum(r["group"] == g for r in rows),
                   "top1_mean": round(float(np.mean([r["top1"] for r in rows if r["group"] == g])), 3),
                   "level_db_median": round(float(np.median([r["level_db"] for r in rows if r["group"] == g])), 2),
                   "evidence_mean": round(float(np.mean([r["evidence"] for r in rows if r["group"] == g])), 3)}
               for g in GROUPS}
    silence_labels = [r["label"] + f" {r['top1']:.2f}" for r in rows if r["group"] == "silence"]
    print("groups:", summary)
    print("model on silence:", silence_labels)
    print(f"{'detector':62s} silence  background  events-kept  sustained-kept  sustained-named")
    for name, r in table.items():
        print(f"{name:62s} {r['silence_no_event']:7.3f}  {r['background_no_event']:10.3f}  {r['event_kept']:11.3f}"
              f"  {r['sustained_kept']:14.3f}  {r['sustained_named']:15.3f}")
    write_json(args.out, {"machine": machine_info(), "checkpoint": str(args.checkpoint), "groups": summary,
                          "detectors": table, "silence_answers": silence_labels, "clips": rows})


if __name__ == "__main__":
    main()
