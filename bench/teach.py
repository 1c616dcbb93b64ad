"""Teach speed: from "Train" to a usable model, for a wav2vec2-base-sized backbone on this machine.

    python bench/teach.py            # table; writes bench/results/teach.json
    python bench/teach.py --json     # one JSON object on stdout (progress on stderr)

3 synthetic classes x 8 recordings of 1.5 s (the event inside, over the shared backgrounds) + 20 s of background,
taught with :func:`asit_helpers.teach.teach` on ``--base`` (default ``base-random``: wav2vec2-base's size with
random weights, the real compute; nothing downloaded), loaded once beforehand as the widget and the page do when
they start (``base_load_s``). ``teach_s`` is the report's ``seconds_to_model``: from the Train press to a usable
model (copying the base, reading the clips, embedding every clip and each example's augmented views once, training
pooling + head); ``cv_s`` (the cross-validated accuracy estimate, which runs after the model is usable) and
``save_s`` follow it. Each ``--views`` setting is timed in the same process, one after the other, after one untimed
warm-up call.
"""

from __future__ import annotations

import argparse
import json
import os
import sys
import tempfile
import time
from pathlib import Path

import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parent))
from _common import RESULTS, machine_info, write_json  # noqa: E402

CLASSES = ("dog", "siren", "rain")


def examples(clips: int, seconds: float, background_s: float, seed: int = 0):
    """``{class: [clips]}`` of synthetic 1.5 s recordings and one background recording."""
    from asit_helpers.synth import BACKGROUNDS, clip_seed, render_clip

    ex = {name: [render_clip(name, clip_seed(seed, k, i), seconds=seconds)[0] for i in range(clips)]
          for k, name in enumerate(CLASSES)}
    rng = np.random.default_rng(seed)
    room = BACKGROUNDS["room"](rng, int(background_s * 16000)) * np.float32(0.05)
    return ex, [room.astype(np.float32)]


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--base", default="base-random")
    ap.add_argument("--clips", type=int, default=8, help="recordings per class")
    ap.add_argument("--seconds", type=float, default=1.5)
    ap.add_argument("--background-s", type=float, default=20.0)
    ap.add_argument("--views", type=int, nargs="+", default=[1, 0], help="augmented views per example, each timed")
    ap.add_argument("--json", action="store_true")
    args = ap.parse_args(argv)
    log = (lambda *a: print(*a, file=sys.stderr, flush=True)) if args.json else print

    from asit_helpers.teach import TeachSettings, teach

    from asit_helpers.model import AsitForAudioClassification

    ex, bg = examples(args.clips, args.seconds, args.background_s)
    started = time.perf_counter()  # what the widget and the page do once, when they start: load the base model
    base = AsitForAudioClassification.from_backbone(args.base, labels=["?"]).eval()
    build_s = time.perf_counter() - started
    runs = []
    with tempfile.TemporaryDirectory() as tmp:
        teach(base, ex, bg, views=0, steps=5, cross_validation=False)  # warm-up: imports, first allocations
        for views in args.views:
            started = time.perf_counter()
            result = teach(base, ex, bg, out=Path(tmp) / f"v{views}", views=views)
            wall = time.perf_counter() - started
            r = result.report
            runs.append({"views": views, "teach_s": round(r.seconds_to_model, 2), "embed_s": round(r.embed_seconds, 2),
                         "train_s": round(r.train_seconds, 2), "cv_s": round(r.cv_seconds, 2),
                         "save_s": round(r.seconds - r.seconds_to_model - r.cv_seconds, 2), "total_s": round(wall, 2),
                         "cv_accuracy": r.cv_accuracy, "audio_s_embedded": round(
                             (1 + views) * len(CLASSES) * args.clips * args.seconds + args.background_s, 1)})
            log(f"views {views}: model ready in {r.seconds_to_model:.2f} s (embedding {r.embed_seconds:.2f} s, "
                f"training {r.train_seconds:.2f} s); cross-validation {r.cv_seconds:.2f} s; {wall:.2f} s in all")
    default = next((run for run in runs if run["views"] == TeachSettings.views), runs[0])
    out = {"teach_s": default["teach_s"], "goal_s": 10.0, "base": args.base, "base_load_s": round(build_s, 2),
           "classes": len(CLASSES),
           "clips_per_class": args.clips, "clip_s": args.seconds, "background_s": args.background_s,
           "default_views": TeachSettings.views, "steps": TeachSettings.steps, "runs": runs,
           "machine": machine_info()}
    write_json(RESULTS / "teach.json", out)
    if args.json:
        print(json.dumps(out, indent=1))
    else:
        print(f"teach_s {out['teach_s']} s (goal <= 10 s) for {args.base}, {len(CLASSES)} classes x {args.clips} "
              f"clips of {args.seconds} s + {args.background_s:g} s background")
    return 0


if __name__ == "__main__":
    sys.exit(main())
