"""``asit`` — the command line. Each subcommand is a thin call into the package's modules.

    asit predict CHECKPOINT FILE... [--json] [--top-k K]
"""

from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path

from .audio import AudioError


def _cmd_predict(args: argparse.Namespace) -> int:
    from .inference import predict
    from .model import load_model

    model = load_model(args.checkpoint)
    failures = 0
    results = []
    for path in args.files:
        try:
            pred = predict(model, path, top_k=args.top_k)
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
            print(f"{path}: {pred.label} ({pred.score:.2f})  [{ranked}]  {pred.duration_s:.1f} s, "
                  f"{len(pred.windows)} window(s)")
    if args.json:
        print(json.dumps(results[0] if len(results) == 1 else results, indent=1))
    return 1 if failures else 0


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="asit", description="ASiT: audio event classification with attention pooling")
    sub = parser.add_subparsers(dest="command", required=True)

    p = sub.add_parser("predict", help="classify audio files with a checkpoint")
    p.add_argument("checkpoint", type=Path, help="checkpoint directory (save_pretrained format)")
    p.add_argument("files", nargs="+", type=Path, help="audio files (wav, flac, ogg, mp3)")
    p.add_argument("--top-k", type=int, default=5)
    p.add_argument("--json", action="store_true", help="print JSON (one object, or a list for several files)")
    p.add_argument("--no-weights", action="store_true", help="leave pooling weights out of the JSON")
    p.set_defaults(func=_cmd_predict)

    return parser


def main(argv: list[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    try:
        return int(args.func(args) or 0)
    except (AudioError, FileNotFoundError, ValueError) as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 2


if __name__ == "__main__":
    sys.exit(main())
