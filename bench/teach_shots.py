"""How many examples are enough? The shots curve of ``teach`` on synthetic classes a base model never heard.

    python bench/teach_shots.py                 # base model (cached in --work), then the curve → bench/results/teach_shots.json
    python bench/teach_shots.py --stage base    # only train (or find) the base model
    python bench/teach_shots.py --png notes/shots.png

1. **Base model**: ``tiny-fb`` trained from scratch (notebook 03's offline recipe, ``notebooks.OFFLINE_TRAINING``)
   on the synthetic soundscapes of 18 classes; the 4 ``HELD_OUT`` classes (one per category) are left out of its
   data altogether. Cached in ``--work`` (``train`` resumes an interrupted run).
2. **The curve**: for each held-out class, ``--shots`` (1, 2, 4, 8, 16) recordings of 1.5 s (synthetic clips with
   the event inside, over the shared backgrounds) plus 20 s of background are taught with :func:`teach`; accuracy is
   measured on ``--test`` unseen 1.5 s clips per held-out class (and unseen background: the no-event answer),
   ``--repeats`` draws of the examples each. Three conditions side by side, the same examples for each:
   ``base`` (the trained backbone, attention pooling started from the base model's), ``random`` (the same
   ``tiny-fb`` architecture with random weights), ``mean`` (the trained backbone, mean pooling).
3. **Views** at 8 shots (base condition): none, one shifted view, one shifted and mixed, one mixed (the default),
   two mixed.
"""

from __future__ import annotations

import argparse
import json
import sys
import time
from pathlib import Path

import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parent))
from _common import RESULTS, machine_info, write_json  # noqa: E402

#: One class per category that the base model never hears.
HELD_OUT = ("frog", "warbler", "car_horn", "wind")
CLIP_S = 1.5
#: The copy notebook 07 reads (package data).
PACKAGED = Path(__file__).resolve().parents[1] / "asit_helpers" / "results" / "teach_shots.json"
BACKGROUND_S = 20.0


def base_model(work: Path, clips_per_class: int, epochs: int | None) -> Path:
    """Train (or find, or resume) the tiny-fb base model on the synthetic classes minus :data:`HELD_OUT`."""
    from asit_helpers.data import preprocess
    from asit_helpers.notebooks import OFFLINE_TRAINING
    from asit_helpers.synth import SYNTH_CLASSES, make_soundscapes
    from asit_helpers.train import train

    out = work / "base"
    if (out / "metrics.json").exists() and json.loads((out / "metrics.json").read_text()).get("completed"):
        return out
    data, cache = work / "synth", work / "cache"
    if not (data / "events.csv").exists():
        make_soundscapes(data, clips_per_class=clips_per_class, seed=0)
    keep = [c.name for c in SYNTH_CLASSES if c.name not in HELD_OUT]
    if not (cache / "cache.json").exists():
        preprocess(data, cache, classes=keep, min_samples=720, progress=False)
    recipe = dict(OFFLINE_TRAINING, **({"epochs": epochs} if epochs else {}))
    started = time.perf_counter()
    result = train(cache, out, resume=True, **recipe)
    print(f"base model: best epoch {result.best_epoch} {result.best_metrics} in {time.perf_counter() - started:.0f} s",
          file=sys.stderr)
    return out


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--work", type=Path, default=Path("outputs/teach_shots"))
    ap.add_argument("--stage", choices=["base", "all"], default="all")
    ap.add_argument("--clips-per-class", type=int, default=40, help="base model's data per class")
    ap.add_argument("--epochs", type=int, default=None, help="base model's epochs (default: the offline recipe's)")
    ap.add_argument("--shots", type=int, nargs="+", default=[1, 2, 4, 8, 16])
    ap.add_argument("--test", type=int, default=25, help="unseen test clips per held-out class")
    ap.add_argument("--repeats", type=int, default=3)
    ap.add_argument("--png", type=Path, default=None)
    ap.add_argument("--json", action="store_true")
    args = ap.parse_args(argv)
    base = base_model(args.work, args.clips_per_class, args.epochs)
    if args.stage == "base":
        return 0
    started = time.perf_counter()
    result = run_curve(base, args)
    result["seconds"] = round(time.perf_counter() - started, 1)
    saved = {"machine": machine_info(), "command_args": vars(args) | {"work": str(args.work), "png": str(args.png)},
             **result}
    write_json(RESULTS / "teach_shots.json", saved)
    write_json(PACKAGED, saved)  # what notebook 07 plots (the package has no bench/ folder in Colab)
    if args.png:
        from asit_helpers.viz import plot_shots_curve, save_figure

        save_figure(plot_shots_curve(result), args.png)
    print(json.dumps(result, indent=1) if args.json else table(result))
    return 0


# ---- the curve -------------------------------------------------------------------------------------------------

CONDITIONS = {
    "base": "trained tiny-fb backbone, attention pooling (started from the base model's)",
    "random": "untrained tiny-fb (Gabor-filterbank front end, the rest random), attention pooling",
    "mean": "trained tiny-fb backbone, mean pooling",
}


def _clips(label: str, seed: int, n: int) -> list[np.ndarray]:
    from asit_helpers.synth import SYNTH_CLASSES, clip_seed, render_clip

    k = [c.name for c in SYNTH_CLASSES].index(label)
    return [render_clip(label, clip_seed(seed, k, i), seconds=CLIP_S)[0] for i in range(n)]


def _background(rng: np.random.Generator, seconds: float) -> np.ndarray:
    """A background recording: stretches of the synthetic backgrounds, levelled like the clips (peak 0.3-0.9)."""
    from asit_helpers.synth import BACKGROUNDS

    parts = []
    for _ in range(int(np.ceil(seconds / 5.0))):
        noise = BACKGROUNDS[list(BACKGROUNDS)[int(rng.integers(len(BACKGROUNDS)))]](rng, 5 * 16000)
        parts.append(noise * rng.uniform(0.3, 0.9) / (np.abs(noise).max() + 1e-9))
    return np.concatenate(parts)[: int(seconds * 16000)].astype(np.float32)


def _test_frames(model, test: dict, test_background: list, labels: list[str]):
    """Frames of the unseen clips through ``model``'s backbone, as teach embeds (views off)."""
    from asit_helpers.teach import TeachSettings, embed_examples, read_examples

    clips, bg = read_examples(test, test_background)
    return embed_examples(model, clips, bg, labels, TeachSettings(views=0))


def _accuracy(model, items, no_event: int) -> tuple[float, float]:
    import torch

    with torch.no_grad():
        answers = model.classify_hidden(items.hidden, items.frame_mask).logits.argmax(-1).numpy()
    events = items.labels != no_event
    return float(np.mean(answers[events] == items.labels[events])), float(np.mean(answers[~events] == no_event))


def run_curve(base_dir: Path, args) -> dict:
    """Accuracy on unseen clips of the held-out classes after teaching each with 1-16 examples (see docstring)."""
    import torch

    from asit_helpers.model import AsitForAudioClassification, load_model
    from asit_helpers.teach import NO_EVENT, teach

    labels = list(HELD_OUT) + [NO_EVENT]
    trained = load_model(base_dir)
    torch.manual_seed(0)
    random = AsitForAudioClassification.from_backbone("tiny-fb", labels=labels).eval()
    pool = {name: _clips(name, 1, max(args.shots) * args.repeats) for name in HELD_OUT}
    test = {name: _clips(name, 2, args.test) for name in HELD_OUT}
    rng = np.random.default_rng(3)
    test_bg = [_background(rng, CLIP_S) for _ in range(args.test)]
    frames = {"trained": _test_frames(trained, test, test_bg, labels),
              "random": _test_frames(random, test, test_bg, labels)}
    setups = {"base": (trained, "attention", "trained"), "random": (random, "attention", "random"),
              "mean": (trained, "mean", "trained")}
    rows = []

    def run(condition, shots, repeat, **settings):
        model, pooling, backbone = setups[condition]
        ex = {name: clips[repeat * shots : (repeat + 1) * shots] for name, clips in pool.items()}
        bg = [_background(np.random.default_rng([4, repeat]), BACKGROUND_S)]
        result = teach(model, ex, bg, pooling=pooling, cross_validation=False, min_clips=1, seed=repeat, **settings)
        acc, no_event = _accuracy(result.model, frames[backbone], len(HELD_OUT))
        rows.append({"condition": condition, "shots": shots, "repeat": repeat, "accuracy": acc,
                     "no_event_accuracy": no_event, "seconds": round(result.report.seconds_to_model, 2), **settings})
        print(f"{condition:7s} {shots:2d} shots, repeat {repeat}{' ' + str(settings) if settings else ''}: "
              f"accuracy {acc:.3f}, no event {no_event:.3f}", file=sys.stderr, flush=True)

    for shots in args.shots:
        for repeat in range(args.repeats):
            for condition in CONDITIONS:
                run(condition, shots, repeat)
    for views, augment in ((0, ()), (1, ("shift",)), (1, ("shift", "mix")), (2, ("mix",))):  # default: in the curve
        for repeat in range(args.repeats):
            run("base", 8, repeat, views=views, augment=augment)
    return summarise(rows, args)


def summarise(rows: list[dict], args) -> dict:
    curve = {}
    for condition in CONDITIONS:
        curve[condition] = []
        for shots in args.shots:
            got = [r for r in rows if r["condition"] == condition and r["shots"] == shots and "views" not in r]
            acc = [r["accuracy"] for r in got]
            curve[condition].append({"shots": shots, "accuracy_mean": round(float(np.mean(acc)), 4),
                                     "accuracy_sd": round(float(np.std(acc)), 4),
                                     "no_event_accuracy_mean": round(float(np.mean([r["no_event_accuracy"] for r in got])), 4),
                                     "repeats": len(got)})
    views = []
    for name, pick in (("none", lambda r: r.get("views") == 0), ("1 shift", lambda r: r.get("augment") == ("shift",)),
                       ("1 shift+mix", lambda r: r.get("augment") == ("shift", "mix")),
                       ("1 mix (default)", lambda r: "views" not in r),
                       ("2 mix", lambda r: r.get("augment") == ("mix",))):
        got = [r for r in rows if r["condition"] == "base" and r["shots"] == 8 and pick(r)]
        if got:
            views.append({"views": name, "accuracy_mean": round(float(np.mean([r["accuracy"] for r in got])), 4),
                          "no_event_accuracy_mean": round(float(np.mean([r["no_event_accuracy"] for r in got])), 4),
                          "repeats": len(got)})
    return {"held_out": list(HELD_OUT), "chance": round(1 / (len(HELD_OUT) + 1), 4), "test_clips_per_class": args.test,
            "clip_s": CLIP_S, "background_s": BACKGROUND_S, "conditions": CONDITIONS, "curve": curve,
            "views_at_8_shots": views, "rows": rows}


def table(result: dict) -> str:
    lines = [f"accuracy on unseen {result['clip_s']} s clips of {', '.join(result['held_out'])} "
             f"(5 answers with no event; chance {result['chance']:.2f}), mean ± sd over repeats:"]
    shots = [p["shots"] for p in next(iter(result["curve"].values()))]
    lines.append("condition  " + "  ".join(f"{s:>11d}" for s in shots))
    for condition, points in result["curve"].items():
        lines.append(f"{condition:9s}  " + "  ".join(f"{p['accuracy_mean']:.3f}±{p['accuracy_sd']:.3f}" for p in points))
    lines.append("views at 8 shots (base): " + ", ".join(f"{v['views']} {v['accuracy_mean']:.3f}"
                                                        for v in result["views_at_8_shots"]))
    return "\n".join(lines)


if __name__ == "__main__":
    sys.exit(main())
