"""Long recordings: does a 40 s recording's answer come from its one event? (issue 17, item 1)

22 synthetic 40 s recordings, one per class, one event each (``synth.render_clip(label, seed, seconds=40.0)``, seeds
from a dataset seed the training data never used). For each recording ``predict`` runs as a user would call it, and
the script reports:

- clip-label accuracy (``Prediction.label`` against the class);
- the share of recordings whose stitched attention curve (``Prediction.weights``, mean over heads) peaks inside the
  true event window, and the chance level of that (event duration / recording duration, averaged);
- how often the windows that contain the whole event are classified correctly, and in how many recordings at least
  one of them is (the ceiling of any aggregation of these windows);
- where the code has them (``inference.AGGREGATIONS``), every aggregation option on the same recordings.

It runs against whichever ``asit_helpers`` ``PYTHONPATH`` (or the installed package) provides, and prints which, so
the same script measures the code before and after a change:
``PYTHONPATH=<old checkout> python bench/long_recordings.py CHECKPOINT --tag before``.

    python bench/long_recordings.py CHECKPOINT [--seconds 40] [--seed 17] [--tag after]
"""

from __future__ import annotations

import argparse
import inspect
from pathlib import Path

import numpy as np

import asit_helpers  # noqa: F401  before _common (which puts this checkout first): PYTHONPATH picks the code measured
from _common import RESULTS, machine_info, write_json


def recordings(seconds: float, seed: int):
    """(label, audio, meta) for one recording per synthetic class."""
    from asit_helpers.synth import SYNTH_CLASSES, clip_seed, render_clip

    for i, spec in enumerate(SYNTH_CLASSES):
        audio, meta = render_clip(spec.name, clip_seed(seed, i, 0), seconds=seconds)
        yield spec.name, audio, meta


def score(pred, label: str, meta: dict) -> dict:
    """One recording's figures from one Prediction."""
    curve = np.asarray(pred.weights, dtype=np.float64).mean(axis=0)
    peak_s = float(pred.frame_times_s[int(np.argmax(curve))])
    onset, offset = meta["onset_s"], meta["offset_s"]
    holding = [w for w in pred.windows if w.start_s <= onset and w.end_s >= offset]
    return {
        "label": label,
        "predicted": pred.label,
        "correct": pred.label == label,
        "score": round(float(pred.score), 4),
        "peak_s": round(peak_s, 3),
        "onset_s": onset,
        "offset_s": offset,
        "peak_in_event": bool(onset <= peak_s <= offset),
        "curve_in_event": round(float(curve[(pred.frame_times_s >= onset) & (pred.frame_times_s <= offset)].sum()
                                      / curve.sum()), 4),
        "event_windows": len(holding),
        "event_windows_correct": sum(w.label == label for w in holding),
        "other_windows_mean_top1": round(float(np.mean([w.score for w in pred.windows if w not in holding] or [0])), 4),
    }


def summary(rows: list[dict], seconds: float) -> dict:
    n = len(rows)
    return {
        "recordings": n,
        "label_correct": sum(r["correct"] for r in rows),
        "peak_in_event": sum(r["peak_in_event"] for r in rows),
        "curve_share_in_event": round(float(np.mean([r["curve_in_event"] for r in rows])), 4),
        "chance_share": round(float(np.mean([(r["offset_s"] - r["onset_s"]) / seconds for r in rows])), 4),
        "event_windows_correct": f"{sum(r['event_windows_correct'] for r in rows)}/{sum(r['event_windows'] for r in rows)}",
        # the ceiling of any aggregation of these windows: recordings where some window holding the event is right
        "any_event_window_correct": sum(r["event_windows_correct"] > 0 for r in rows),
        "other_windows_mean_top1": round(float(np.mean([r["other_windows_mean_top1"] for r in rows])), 4),
    }


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("checkpoint", type=Path)
    parser.add_argument("--seconds", type=float, default=40.0)
    parser.add_argument("--seed", type=int, default=17, help="dataset seed of the recordings (training used 0)")
    parser.add_argument("--tag", default="after", help="results file name suffix (e.g. before / after)")
    args = parser.parse_args()

    import asit_helpers
    from asit_helpers import inference
    from asit_helpers.model import load_model

    model = load_model(args.checkpoint)
    options = list(getattr(inference, "AGGREGATIONS", {}))
    takes_option = "aggregation" in inspect.signature(inference.predict).parameters
    runs = {name: [] for name in (options if takes_option else ["default"])}
    for label, audio, meta in recordings(args.seconds, args.seed):
        for name, rows in runs.items():
            kwargs = {"aggregation": name} if takes_option else {}
            pred = inference.predict(model, audio, precision="fp32", **kwargs)
            rows.append(score(pred, label, meta))
    default = options[0] if takes_option else "default"
    result = {
        "package": str(Path(asit_helpers.__file__).parent),
        "checkpoint": str(args.checkpoint),
        "seconds": args.seconds,
        "seed": args.seed,
        "default": default,
        "summary": {name: summary(rows, args.seconds) for name, rows in runs.items()},
        "recordings": runs[default],
        "machine": machine_info(),
    }
    print(f"package: {result['package']}")
    for name, s in result["summary"].items():
        mark = " (predict's default)" if name == default else ""
        print(f"{name:>9}{mark}: label {s['label_correct']}/{s['recordings']}, curve peak in event "
              f"{s['peak_in_event']}/{s['recordings']}, curve share in event {s['curve_share_in_event']} "
              f"(chance {s['chance_share']}), windows holding the event correct {s['event_windows_correct']} "
              f"(recordings with one right: {s['any_event_window_correct']}/{s['recordings']}), "
              f"other windows' mean top-1 {s['other_windows_mean_top1']}")
    path = write_json(RESULTS / f"long_recordings_{args.tag}.json", result)
    print(f"saved {path}")


if __name__ == "__main__":
    main()
