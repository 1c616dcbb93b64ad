"""``asit`` — the command line. Each subcommand is a thin call into the package's modules.

    asit predict CHECKPOINT FILE... [--json] [--top-k K]
    asit synth OUT [--clips-per-class N] [--seed S]
    asit download RECIPE_OR_SLUG OUT
    asit preprocess DATA_DIR --out CACHE [--classes MAPPING] [--json]
    asit train CACHE --out DIR [--preset base|tiny-fb|base-random] [any TrainArgs field as --flag]
    asit evaluate CHECKPOINT CACHE [--json]        asit serve CHECKPOINT       asit env [--json]
    asit teach BASE EXAMPLES_DIR --out DIR [--background DIR]
    asit timeline CHECKPOINT FILE [--hop S] [--csv OUT] [--png OUT]

Expected failures (no Hub, not a checkpoint, a missing cache, bad input) end with a short explanation from
:mod:`asit_helpers.messages` and exit code 2; anything else is a bug and keeps its traceback.
"""

from __future__ import annotations

import argparse
import json
import os
import sys
from dataclasses import MISSING, fields
from pathlib import Path

from .audio import AudioError
from .messages import OFFLINE_PRESET, ExpectedError, explain, missing_cache, not_a_checkpoint


def _checkpoint(path: Path) -> Path:
    """``path`` if it is a checkpoint directory; otherwise the explanation (never a Hub look-up for a typo)."""
    if not (path / "config.json").is_file():
        raise ExpectedError(not_a_checkpoint(path))
    return path


def _cache(path: Path) -> Path:
    """``path`` if it holds a finished cache (``cache.json``); otherwise the explanation."""
    if not (path / "cache.json").is_file():
        raise ExpectedError(missing_cache(path))
    return path


def _cmd_predict(args: argparse.Namespace) -> int:
    from .activity import STEADY_NOTE
    from .inference import predict
    from .model import load_model

    model = load_model(_checkpoint(args.checkpoint))
    failures = 0
    results = []
    for path in args.files:
        try:
            pred = predict(model, path, top_k=args.top_k, precision=args.precision)
        except AudioError as exc:
            failures += 1
            print(f"error: {exc}", file=sys.stderr)
            if args.json:
                results.append({"source": str(path), "error": exc.reason})
            continue
        if args.json:
            results.append(pred.to_dict(include_weights=not args.no_weights))
        else:
            ranked = ", ".join(f"{name} {p:.2f}" for name, p in pred.top_k)
            how = f" (aggregation: {pred.aggregation})" if len(pred.windows) > 1 else ""
            print(f"{path}: {pred.label} ({pred.score:.2f})  [{ranked}]  {pred.duration_s:.1f} s, "
                  f"{len(pred.windows)} window(s){how}")
            if pred.no_event and pred.label == getattr(model.config, "no_event_label", None):
                print(f"  {pred.no_event_reason}: the model itself answers that nothing it was taught is there")
            elif pred.no_event:
                print(f"  {pred.no_event_reason}: {pred.label} is only the model's guess")
            elif pred.steady:
                print(f"  {STEADY_NOTE}")
    if args.json:
        print(json.dumps(results[0] if len(results) == 1 else results, indent=1))
    return 1 if failures else 0


def _cmd_serve(args: argparse.Namespace) -> int:
    from .serve import serve

    serve(_checkpoint(args.checkpoint), host=args.host, port=args.port, threads=args.threads, max_upload_mb=args.max_upload_mb,
          max_seconds=args.max_seconds, cors_origins=args.cors_origin or None, batching=args.batching,
          device=args.device, precision=args.precision, max_listeners=args.max_listeners)
    return 0


def _cmd_timeline(args: argparse.Namespace) -> int:
    from .audio import load_audio
    from .live import plot_timeline, save_timeline_csv, timeline, timeline_segments
    from .model import load_model

    model = load_model(_checkpoint(args.checkpoint))
    samples = load_audio(args.file, max_seconds=args.max_seconds)
    labels = [model.config.id2label[i] for i in range(model.config.num_labels)]
    updates = timeline(model, samples, hop_s=args.hop, precision=args.precision)
    if not updates:
        raise AudioError(str(args.file), f"shorter than one hop ({args.hop:g} s): nothing to draw")
    for start, end, what in timeline_segments(updates):
        print(f"{start:7.2f}-{end:7.2f} s  {what}")
    if args.csv:
        print(f"timeline ({len(updates)} hops of {args.hop:g} s) written to {save_timeline_csv(updates, labels, args.csv)}")
    if args.png:
        from .viz import save_figure

        save_figure(plot_timeline(updates, labels, samples, title=f"{Path(args.file).name}: {args.hop:g} s hops"),
                    args.png)
        print(f"figure written to {args.png}")
    return 0


def _cmd_train(args: argparse.Namespace) -> int:
    from .train import PRESETS, TrainArgs, train

    settings = _train_settings(args)
    preset = settings.get("preset", TrainArgs.preset)
    known = PRESETS.get(preset)
    if known is not None and not known.offered:
        raise ExpectedError(f"error: preset {preset!r} is a test fixture that does not learn with a short recipe; "
                            f"offline, use --preset {OFFLINE_PRESET}")
    if known is not None and known.measurement_only:
        raise ExpectedError(f"error: preset {preset!r} has random weights at full size: it is for speed "
                            "measurements (bench/train.py, bench/latency.py) and does not learn to classify in any "
                            f"reasonable budget; train --preset base (pretrained) or {OFFLINE_PRESET} (offline)")
    chosen = TrainArgs.for_preset(**settings)
    recipe = ", ".join(f"{f.name}={_show(getattr(chosen, f.name), f.metadata.get('none', 'auto'))}"
                       for f in fields(TrainArgs) if f.name != "preset")
    print(f"preset {preset}: {recipe}")
    result = train(_cache(args.cache), args.out, model=args.init and _checkpoint(args.init), resume=args.resume,
                   overwrite=args.overwrite, device=args.device, copy_to=args.copy_to, **settings)
    best = {k: round(v, 4) for k, v in result.best_metrics.items()}
    print(f"best epoch {result.best_epoch}: {best}; checkpoint {result.checkpoint} ({result.seconds:.0f} s)")
    return 0


def _train_settings(args: argparse.Namespace) -> dict:
    """The TrainArgs fields given on the command line (the preset's recipe fills in the others)."""
    from .batches import Augment
    from .train import TrainArgs

    settings = {f.name: getattr(args, f.name) for f in fields(TrainArgs) if hasattr(args, f.name)}
    if "augment" in settings:
        settings["augment"] = Augment() if settings["augment"] else None
    return settings


def _show(value, none: str = "auto") -> str:
    if value is None:
        return none
    if isinstance(value, bool):
        return "on" if value else "off"
    if hasattr(value, "to_dict"):
        return "on"
    if isinstance(value, dict):
        return json.dumps(value) if value else "{}"
    return f"{value:g}" if isinstance(value, float) else str(value)


def _json_object(text: str) -> dict:
    try:
        value = json.loads(text)
    except json.JSONDecodeError as exc:
        raise argparse.ArgumentTypeError(f"not JSON: {exc}") from None
    if not isinstance(value, dict):
        raise argparse.ArgumentTypeError("expected a JSON object, e.g. '{\"num_heads\": 4}'")
    return value


def _add_train_settings(p: argparse.ArgumentParser) -> None:
    """One flag per TrainArgs field, its help from the field's metadata, its defaults from the presets' recipes."""
    from .train import PRESETS, TrainArgs

    group = p.add_argument_group("training settings (every TrainArgs field; a flag overrides one field of the "
                                 "preset's recipe)")
    offered = {name: preset for name, preset in PRESETS.items() if preset.offered and not preset.measurement_only}
    for f in fields(TrainArgs):
        default = f.default_factory() if f.default is MISSING else f.default
        none = f.metadata.get("none", "auto")
        others = "".join(f"; {name}: {_show(pr.recipe[f.name], none)}" for name, pr in offered.items()
                         if pr.recipe.get(f.name, default) != default)
        kind = str(f.type)
        kw: dict = dict(dest=f.name, default=argparse.SUPPRESS,
                        help=f"{f.metadata['help']} (default {_show(default, none)}{others})")
        if f.name == "preset":
            kw["metavar"] = "{" + ",".join(offered) + "}|HUB_ID|DIR"
        elif kind.startswith("bool") or f.name == "augment":
            kw["action"] = argparse.BooleanOptionalAction
        elif kind == "dict":
            kw.update(type=_json_object, metavar="JSON")
        else:
            kind = kind.split(" |")[0]
            kw.update(type={"int": int, "float": float, "str": str}[kind], metavar={"int": "N"}.get(kind, kind.upper()))
        if "choices" in f.metadata:
            kw["choices"] = f.metadata["choices"]
            kw.pop("metavar", None)
        group.add_argument("--" + f.name.replace("_", "-"), **kw)


def _cmd_evaluate(args: argparse.Namespace) -> int:
    from .evaluate import evaluate

    report = evaluate(_checkpoint(args.checkpoint), _cache(args.cache), split=None if args.split == "all" else args.split,
                      batch_size=args.batch_size, device=args.device, progress=not args.json,
                      precision=args.precision,
                      faithfulness=args.faithfulness or args.faithfulness_figure is not None)
    if report.faithfulness is not None and args.faithfulness_figure is not None:
        from .viz import save_figure

        save_figure(report.faithfulness.plot(), args.faithfulness_figure)
    if args.json:
        print(json.dumps(report.to_dict(), indent=1))
        return 0
    print(f"{args.checkpoint} on {args.split} ({len(report.clips)} clips): accuracy {report.accuracy:.4f}, "
          f"macro-F1 {report.macro_f1:.4f}  [{report.precision}: {report.precision_reason}]")
    if report.localisation is not None:
        loc = report.localisation
        print("share of weight inside the true event window (same clips, same frames): "
              + ", ".join(f"{name} {loc[name]:.3f}" for name in ("attention", "energy", "loudest_frame", "uniform")))
    if report.localisation_on_distractors is not None:
        loc = report.localisation_on_distractors
        print("share of weight on the distractor sounds (lower is better): "
              + ", ".join(f"{name} {loc[name]:.3f}" for name in ("attention", "energy", "loudest_frame", "uniform")))
    if report.low_snr_accuracy is not None:
        print(f"accuracy at the lowest SNR level ({report.by_snr.iloc[0]['snr_db']} dB): {report.low_snr_accuracy:.4f}")
    print(report.per_class.round(3).to_string())
    if report.faithfulness is not None:
        print(f"faithfulness (deletion AUC: lower is more faithful; insertion AUC: higher is; removed audio → "
              f"{report.faithfulness.replacement}):\n{report.faithfulness.table().round(4).to_string()}")
    return 0


def _cmd_teach(args: argparse.Namespace) -> int:
    from .teach import check_out_dir, teach

    check_out_dir(args.out, args.examples, overwrite=args.overwrite)
    settings = {k: v for k, v in (("views", args.views), ("steps", args.steps), ("pooling", args.pooling))
                if v is not None}
    result = teach(args.base, args.examples, args.background, out=args.out, cross_validation=not args.no_cv,
                   device=args.device, **settings)
    if args.json:
        print(json.dumps({**result.report.to_dict(), "out": str(result.out)}, indent=1))
        return 0
    print(result.report.summary())
    print(f"saved {result.out} (examples.json and teach_report.json beside the model); try: "
          f"asit predict {result.out} CLIP.wav")
    return 0


def _cmd_synth(args: argparse.Namespace) -> int:
    from .synth import make_soundscapes

    events = make_soundscapes(args.out, clips_per_class=args.clips_per_class, seed=args.seed, snr_db=tuple(args.snr),
                              events=args.events, distractors=args.distractors)
    kind = "two-event clips" if args.events == 2 else "clips"
    print(f"{len(events)} {kind} in {events['label'].nunique()} classes written to {args.out} "
          f"(true event times in {Path(args.out) / 'events.csv'})")
    return 0


def _cmd_download(args: argparse.Namespace) -> int:
    from .sources import KaggleCredentialsError, download

    try:
        path = download(args.dataset, args.out, force=args.force)
    except KaggleCredentialsError as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 2
    print(f"{args.dataset}: {path}\nnext: asit preprocess {path} --out CACHE_DIR")
    return 0


def _cmd_preprocess(args: argparse.Namespace) -> int:
    from .data import preprocess

    report = preprocess(args.data_dir, args.out, classes=args.classes, clip_seconds=args.clip_seconds,
                        workers=args.workers, seed=args.seed, min_clips=args.min_clips, top_n=args.top_n,
                        recipe=args.recipe, progress=not args.json, min_samples=args.min_samples)
    print(json.dumps(report.to_dict(), indent=1) if args.json else report.summary())
    return 0 if len(report.kept) else 1  # nothing usable is a failure a script should notice


def _cmd_env(args: argparse.Namespace) -> int:
    from .runtime import environment, format_environment

    info = environment()
    print(json.dumps(info, indent=1) if args.json else format_environment(info, short=args.short))
    return 0


def _cmd_demo(args: argparse.Namespace) -> int:
    from .suite import run_suite, suite_summary

    try:
        import papermill as pm
    except ImportError:
        print("error: `asit demo` runs the notebooks with papermill: pip install 'asit-helpers[test]'", file=sys.stderr)
        return 2
    try:
        results = run_suite(args.out, notebooks=args.only, smoke=args.smoke, cell_timeout=args.cell_timeout)
    except pm.PapermillExecutionError as exc:
        print(f"error: a notebook failed in cell {exc.exec_count}: {exc.ename}: {exc.evalue}\n"
              f"the partly executed notebook is in {Path(args.out) / 'notebooks'}", file=sys.stderr)
        return 1
    print(suite_summary(args.out, results))
    return 0


def defaults_from_environment(parser: argparse.ArgumentParser, prefix: str = "ASIT_") -> None:
    """Let ``PREFIX<FLAG>`` environment variables (``ASIT_THREADS`` for ``--threads``) set option defaults.

    Containers and service managers configure a server through its environment; a flag on the command line still
    wins. argparse converts a string default with the option's ``type`` only when that subcommand runs, so a bad
    value fails like a bad flag, and only there. A repeatable option takes a comma-separated list.
    """
    for action in parser._actions:
        name = prefix + action.dest.upper()
        if action.option_strings and action.dest != "help" and name in os.environ:
            raw = os.environ[name]
            repeatable = isinstance(action, argparse._AppendAction)
            parser.set_defaults(**{action.dest: [v.strip() for v in raw.split(",") if v.strip()] if repeatable else raw})


class _DeprecatedAlias(argparse.Action):
    """An old flag that still works, says so, and sets its new flag's value."""

    def __init__(self, option_strings, dest, const=None, nargs=None, **kwargs):
        kwargs["default"] = argparse.SUPPRESS  # absent, it leaves the new flag's default alone
        super().__init__(option_strings, dest, nargs=nargs, const=const, **kwargs)

    def __call__(self, parser, namespace, values, option_string=None):
        value = self.const if self.const is not None else values
        print(f"note: {option_string} is {self.help}", file=sys.stderr)
        setattr(namespace, self.dest, value)


def _add_precision(p: argparse.ArgumentParser, training: bool = False) -> None:
    from .runtime import PRECISIONS

    where = "fp32 on a CPU" if training else "bf16 on a CPU with native bf16, else fp32"
    p.add_argument("--precision", choices=PRECISIONS, default="auto",
                   help=f"backbone precision (default auto: bf16 on GPUs with native bf16, fp16 on T4/V100, {where}; "
                        "`asit env` shows what auto picks here)")


def _add_predict(sub) -> None:
    p = sub.add_parser("predict", help="classify audio files with a checkpoint")
    p.add_argument("checkpoint", type=Path, help="checkpoint directory (save_pretrained format)")
    p.add_argument("files", nargs="+", type=Path, help="audio files (wav, flac, ogg, mp3)")
    p.add_argument("--top-k", type=int, default=5)
    p.add_argument("--json", action="store_true", help="print JSON (one object, or a list for several files)")
    p.add_argument("--no-weights", action="store_true", help="leave pooling weights out of the JSON")
    _add_precision(p)
    p.add_argument("--fp32", action=_DeprecatedAlias, dest="precision", const="fp32", nargs=0,
                   help="deprecated: use --precision fp32")
    p.set_defaults(func=_cmd_predict)


def _add_serve(sub) -> None:
    p = sub.add_parser("serve", help="serve the web page and JSON API (waitress; 127.0.0.1 by default)")
    p.add_argument("checkpoint", type=Path, help="checkpoint directory (save_pretrained format)")
    p.add_argument("--host", default="127.0.0.1", help="interface to bind (default 127.0.0.1: this machine only)")
    p.add_argument("--port", type=int, default=5000)
    p.add_argument("--threads", type=int, default=4, help="waitress worker threads")
    p.add_argument("--max-upload-mb", type=float, default=20.0, help="larger request bodies get 413")
    p.add_argument("--max-seconds", type=float, default=120.0, help="longer audio gets 422")
    p.add_argument("--cors-origin", action="append", default=[],
                   help="allow this origin to call the API from its pages (repeatable; '*' for any); default none")
    p.add_argument("--batching", choices=["auto", "lock", "micro"], default="auto",
                   help="concurrency: a lock around the model or a micro-batching queue (auto: micro on a GPU, "
                        "lock on a CPU)")
    p.add_argument("--device", default=None, help="torch device for the model, e.g. cuda (default: cpu)")
    p.add_argument("--max-listeners", type=int, default=4, help="concurrent live-listening sessions (more get 429)")
    _add_precision(p)
    p.set_defaults(func=_cmd_serve)
    defaults_from_environment(p, prefix="ASIT_")


def _add_train(sub) -> None:
    p = sub.add_parser("train", help="train a classifier on a preprocessed cache (checkpoint in --out)",
                       description="Train a preset's recipe (default: base); any flag below overrides one setting.",
                       formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("cache", type=Path, help="cache directory (asit preprocess)")
    p.add_argument("--out", type=Path, required=True, help="checkpoint directory, e.g. checkpoints/NAME")
    p.add_argument("--init", type=Path, default=None, help="fine-tune this checkpoint instead of a new model")
    _add_train_settings(p)
    p.add_argument("--train-feature-encoder", action=_DeprecatedAlias, dest="freeze_feature_encoder", const=False,
                   nargs=0, help="deprecated: use --no-freeze-feature-encoder")
    p.add_argument("--mixed-precision", action=_DeprecatedAlias, dest="precision",
                   type=lambda v: "fp32" if v == "no" else v, help="deprecated: use --precision (auto|fp32|bf16|fp16)")
    p.add_argument("--device", choices=["cpu", "cuda"], default=None)
    p.add_argument("--resume", action="store_true", help="continue an interrupted run in --out")
    p.add_argument("--overwrite", action="store_true", help="start over although --out holds a run")
    p.add_argument("--copy-to", type=Path, default=None, help="mirror the checkpoint here too (e.g. Google Drive)")
    p.set_defaults(func=_cmd_train)


def _add_evaluate(sub) -> None:
    p = sub.add_parser("evaluate", help="accuracy, macro-F1, per-class scores, attention localisation")
    p.add_argument("checkpoint", type=Path, help="checkpoint directory")
    p.add_argument("cache", type=Path, help="cache directory")
    p.add_argument("--split", choices=["train", "val", "test", "all"], default="test")
    p.add_argument("--batch-size", type=int, default=16)
    p.add_argument("--device", choices=["cpu", "cuda"], default=None)
    p.add_argument("--json", action="store_true", help="print the report as JSON")
    _add_precision(p)
    p.add_argument("--faithfulness", action="store_true",
                   help="also run deletion/insertion tests of attention vs random, energy, gradient x input and "
                        "occlusion (slow: ~22 forward passes per clip and saliency)")
    p.add_argument("--faithfulness-figure", type=Path, default=None, metavar="PNG",
                   help="save the deletion/insertion curves here (implies --faithfulness)")
    p.set_defaults(func=_cmd_evaluate)


def _add_teach(sub) -> None:
    from .teach import BACKGROUND_FOLDER, TeachSettings

    p = sub.add_parser("teach", help="teach new sounds from a few recordings per class (pooling + head on a frozen "
                                     "backbone, seconds on a CPU)",
                       description="Teach the classes in EXAMPLES_DIR/class/clip.wav (2 or more clips per class, "
                                   "0.5 s and up) on a frozen backbone; background recordings become the "
                                   "'no event' answer.")
    p.add_argument("base", help="backbone preset (tiny-fb, base, ...), Hub id, or a trained ASiT checkpoint")
    p.add_argument("examples", type=Path, help=f"folder of class folders of recordings (a {BACKGROUND_FOLDER}/ "
                                               "folder there is background)")
    p.add_argument("--out", type=Path, required=True, help="where the taught checkpoint goes")
    p.add_argument("--background", type=Path, default=None,
                   help=f"folder of background recordings (default: EXAMPLES_DIR/{BACKGROUND_FOLDER})")
    p.add_argument("--views", type=int, default=None,
                   help=f"augmented views per clip (default {TeachSettings.views}: shifted and mixed with background)")
    p.add_argument("--steps", type=int, default=None, help=f"training steps (default {TeachSettings.steps})")
    p.add_argument("--pooling", choices=["attention", "multihead", "mean"], default=None)
    p.add_argument("--no-cv", action="store_true", help="skip the cross-validated accuracy estimate")
    p.add_argument("--overwrite", action="store_true", help="replace a checkpoint in --out that teach did not write")
    p.add_argument("--device", default=None, help="torch device (default: cuda when available, else cpu)")
    p.add_argument("--json", action="store_true", help="print the report as JSON")
    p.set_defaults(func=_cmd_teach)


def _add_synth(sub) -> None:
    p = sub.add_parser("synth", help="generate the synthetic soundscape dataset (22 classes, true event times)")
    p.add_argument("out", type=Path, help="output folder (Category/class/clip.wav + events.csv)")
    p.add_argument("--clips-per-class", type=int, default=40)
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--snr", type=float, nargs=2, default=[3.0, 20.0], metavar=("LOW", "HIGH"),
                   help="event-to-background SNR range in dB (default 3 20; e.g. 10 20 for an easier set)")
    p.add_argument("--events", type=int, choices=[1, 2], default=1,
                   help="events per clip; 2: a second class at another time, both windows in events.csv (for "
                        "testing what a model attends to, not for training)")
    p.add_argument("--distractors", type=int, default=0, metavar="N",
                   help="add N loud non-target sounds per clip outside the event (noise bursts, clatter, door-like "
                        "thumps, 0-10 dB above it; times in events.csv): a localisation test energy cannot pass")
    p.set_defaults(func=_cmd_synth)


def _add_download(sub) -> None:
    p = sub.add_parser("download", help="download a dataset: esc50 / esc22 / urbansound8k or any Kaggle slug")
    p.add_argument("dataset", help="recipe name (esc50, esc22, urbansound8k) or Kaggle slug owner/dataset")
    p.add_argument("out", type=Path, help="folder to download into")
    p.add_argument("--force", action="store_true", help="download again even if cached (Kaggle)")
    p.set_defaults(func=_cmd_download)


def _add_preprocess(sub) -> None:
    p = sub.add_parser("preprocess", help="scan, map classes, split and decode a dataset into a cache (resumable)")
    p.add_argument("data_dir", type=Path, help="dataset folder (Category/class/clip, ESC-50, UrbanSound8K) or CSV")
    p.add_argument("--out", type=Path, required=True, help="cache folder")
    p.add_argument("--classes", help="class map: YAML/JSON file (keep / merge / rename / min_clips / top_n)")
    p.add_argument("--clip-seconds", type=float, default=5.0)
    p.add_argument("--workers", type=int, default=2)
    p.add_argument("--seed", type=int, default=0, help="split seed")
    p.add_argument("--min-clips", type=int, default=0, help="drop classes with fewer clips")
    p.add_argument("--top-n", type=int, default=None, help="keep the N most frequent classes")
    p.add_argument("--recipe", default="auto", choices=["auto", "folder", "esc50", "urbansound8k"])
    p.add_argument("--min-samples", type=int, default=400,
                   help="reject clips shorter than this many 16 kHz samples (400: one wav2vec2 frame; tiny-fb needs 720)")
    p.add_argument("--json", action="store_true", help="print one JSON object (kept, rejected, classes, splits)")
    p.set_defaults(func=_cmd_preprocess)


def _add_demo(sub) -> None:
    p = sub.add_parser("demo", help="run the notebook suite 01-07 offline (synthetic data, the tiny-fb preset) into --out")
    p.add_argument("--out", type=Path, default=Path("outputs"), help="workspace: executed notebooks, figures, data")
    p.add_argument("--only", nargs="+", metavar="NOTEBOOK", help="run these notebooks only (names as in notebooks/)")
    p.add_argument("--smoke", action="store_true", help="seconds-long training (what CI runs)")
    p.add_argument("--cell-timeout", type=int, default=None, metavar="SECONDS",
                   help="stop a cell that runs longer (default: no limit; 03's training can take an hour on a slow CPU)")
    p.set_defaults(func=_cmd_demo)


def _add_env(sub) -> None:
    p = sub.add_parser("env", help="versions, device, what --precision auto picks and why, Hub status (for bug reports)")
    p.add_argument("--json", action="store_true", help="print one JSON object (for tools)")
    p.add_argument("--short", action="store_true", help="three lines (what the notebooks' setup cell prints)")
    p.set_defaults(func=_cmd_env)


def _add_timeline(sub) -> None:
    p = sub.add_parser("timeline", help="which class when: classify a recording hop by hop, as live listening does")
    p.add_argument("checkpoint", type=Path, help="checkpoint directory (save_pretrained format)")
    p.add_argument("file", type=Path, help="audio file (wav, flac, ogg, mp3)")
    p.add_argument("--hop", type=float, default=0.5, metavar="S", help="seconds between updates (default 0.5)")
    p.add_argument("--csv", type=Path, default=None, metavar="OUT", help="write one row per hop (every class's probability)")
    p.add_argument("--png", type=Path, default=None, metavar="OUT", help="draw the timeline (waveform + class rows)")
    p.add_argument("--max-seconds", type=float, default=1800.0, help="refuse longer files (default 1800)")
    _add_precision(p)
    p.set_defaults(func=_cmd_timeline)


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="asit", description="ASiT: audio event classification with attention pooling")
    sub = parser.add_subparsers(dest="command", required=True)
    for add in (_add_predict, _add_serve, _add_train, _add_evaluate, _add_teach, _add_synth, _add_download,
                _add_preprocess, _add_demo, _add_env, _add_timeline):
        add(sub)
    return parser


def main(argv: list[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    from transformers.utils import logging as hf_logging

    hf_logging.disable_progress_bar()  # "Loading weights 69/69" bars are noise on a command line
    try:
        return int(args.func(args) or 0)
    except Exception as exc:  # expected failures get their explanation; anything else is a bug: traceback
        text = explain(exc)
        if text is None:
            raise
        print(text, file=sys.stderr)
        return 2


if __name__ == "__main__":
    sys.exit(main())
