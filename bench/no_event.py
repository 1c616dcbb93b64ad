"""Nothing happening is an answer: which "no event" detector works? (issue 11, item 5)

Clips of the model's window length (5 s) in three groups, none of them seen in training:

- ``silence``: digital zeros, and a -80 dB dither (a muted microphone);
- ``background``: the synthetic set's five background kinds (white, pink, brown, room swells, muffled) alone, at
  the set's levels (peak 0.3-0.9), i.e. room-like noise with no event;
- ``event``: synthetic clips, one event each at 3-20 dB SNR over one of those backgrounds (``synth.render_clip``).

For every clip the script records the model's top-1 probability, its attention evidence (log-sum-exp of the
unnormalised pooling scores, the quantity ``aggregate_windows`` weighs windows by) and the energy gate's level above
the clip's own noise floor (:func:`asit_helpers.activity.judge`), then scores each detector at several thresholds:
the share of background/silence clips it calls "no event" and the share of event clips it keeps as events.

    python bench/no_event.py CHECKPOINT [--per-class 5] [--per-background 20] [--seed 31]
"""

from __future__ import annotations

import argparse

import numpy as np
import torch

import asit_helpers  # noqa: F401  before _common: PYTHONPATH picks the code measured
from _common import RESULTS, machine_info, write_json


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


@torch.inference_mode()
def measure(model, group: str, name: str, audio: np.ndarray) -> dict:
    from asit_helpers.activity import judge

    batch = model.feature_extractor()([audio], sampling_rate=16000, return_tensors="pt")
    out = model(batch["input_values"])
    probs = torch.softmax(out.logits.float(), -1)[0]
    scores = out.pooling_scores.float()[0]  # (heads, frames)
    act = judge(audio)
    return {"group": group, "name": name, "top1": float(probs.max()),
            "label": model.config.id2label[int(probs.argmax())],
            "evidence": float(torch.logsumexp(scores, -1).mean()), "level_db": act.level_db,
            "energy_no_event": act.no_event}


def rates(rows: list[dict], no_event) -> dict:
    """Share of each group the detector ``no_event(row) -> bool`` calls 'no event' (events: share kept)."""
    out = {}
    for group in ("silence", "background", "event"):
        sel = [r for r in rows if r["group"] == group]
        flagged = np.mean([bool(no_event(r)) for r in sel]) if sel else float("nan")
        out["event_kept" if group == "event" else f"{group}_no_event"] = round(float(1 - flagged if group == "event"
                                                                                     else flagged), 3)
    out["balanced"] = round((out["event_kept"] + out["background_no_event"]) / 2, 3)
    return out


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
    table = {name: rates(rows, fn) for name, fn in detectors.items()}
    summary = {g: {"n": sum(r["group"] == g for r in rows),
                   "top1_mean": round(float(np.mean([r["top1"] for r in rows if r["group"] == g])), 3),
                   "level_db_median": round(float(np.median([r["level_db"] for r in rows if r["group"] == g])), 2),
                   "evidence_mean": round(float(np.mean([r["evidence"] for r in rows if r["group"] == g])), 3)}
               for g in ("silence", "background", "event")}
    silence_labels = [r["label"] + f" {r['top1']:.2f}" for r in rows if r["group"] == "silence"]
    print("groups:", summary)
    print("model on silence:", silence_labels)
    print(f"{'detector':58s} silence  background  events-kept  balanced")
    for name, r in table.items():
        print(f"{name:58s} {r['silence_no_event']:7.3f}  {r['background_no_event']:10.3f}  {r['event_kept']:11.3f}"
              f"  {r['balanced']:8.3f}")
    write_json(args.out, {"machine": machine_info(), "checkpoint": str(args.checkpoint), "groups": summary,
                          "detectors": table, "silence_answers": silence_labels, "clips": rows})


if __name__ == "__main__":
    main()
