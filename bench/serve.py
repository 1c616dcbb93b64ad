"""Throughput of ``asit serve`` under concurrent clients against 1 / single-request latency, lock vs micro-batching.

For each model and each concurrency mode, a real ``asit serve`` process (waitress, 4 threads, 127.0.0.1) gets:
  1. ``--single`` requests one after another (one client): p50 latency, and 1 / p50 = what one client gets;
  2. ``--requests`` requests from ``--concurrency`` clients: requests/s, p50 / p95, errors.
Both modes run in the same invocation, side by side, so their ratio is not skewed by a change of machine load.

    python bench/serve.py                          # tiny + full-size (random init) models, 5 s clips
    python bench/serve.py --models tiny --requests 400
    python bench/serve.py --checkpoint path/to/checkpoint
    python bench/serve.py --device cuda --requests 400 --out bench/results/serve_gpu.json

Prints a table and saves ``bench/results/serve.json``. Models are random-initialised (the speed of a forward pass
does not depend on the weights' values); the checkpoint is written to a temporary folder and removed afterwards.
"""

from __future__ import annotations

import argparse
import io
import json
import sys
import tempfile
from pathlib import Path

import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parent))
from _common import RESULTS, machine_info, write_json  # noqa: E402

sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "tests"))  # the load tester is test tooling
from loadtest import ServerProcess, hammer  # noqa: E402

LABELS = [f"class_{i}" for i in range(22)]  # ASiT's 22 classes; names don't matter for speed


def clip_wav(seconds: float) -> bytes:
    import soundfile as sf

    rng = np.random.default_rng(0)
    buf = io.BytesIO()
    sf.write(buf, (0.1 * rng.standard_normal(int(seconds * 16000))).astype(np.float32), 16000, format="WAV")
    return buf.getvalue()


def save_random_model(preset: str, folder: Path) -> Path:
    import torch

    from asit_helpers import AsitForAudioClassification

    torch.manual_seed(0)
    model = AsitForAudioClassification.from_backbone(preset, labels=LABELS)
    path = folder / preset
    model.save_pretrained(path)
    return path


def run_one(checkpoint: Path, mode: str, body: bytes, args) -> dict:
    extra = ["--device", args.device] if args.device else []
    with ServerProcess(checkpoint, threads=args.threads, batching=mode, extra_args=extra) as server:
        url = server.url + "/predict"
        hammer(url, body, requests_total=max(4, args.concurrency), concurrency=args.concurrency)  # warm-up
        single = hammer(url, body, requests_total=args.single, concurrency=1)
        rss_before = server.rss_mb()
        loaded = hammer(url, body, requests_total=args.requests, concurrency=args.concurrency)
        rss_after = server.rss_mb()
    single_rps = 1000.0 / single["p50_ms"]
    return {
        "mode": mode,
        "single_p50_ms": single["p50_ms"],
        "single_p95_ms": single["p95_ms"],
        "one_over_latency_rps": round(single_rps, 2),
        "concurrent_rps": loaded["requests_per_s"],
        "concurrent_p50_ms": loaded["p50_ms"],
        "concurrent_p95_ms": loaded["p95_ms"],
        "throughput_gain": round(loaded["requests_per_s"] / single_rps, 2),
        "errors": single["errors"] + loaded["errors"],
        "rss_before_mb": round(rss_before, 1),
        "rss_after_mb": round(rss_after, 1),
    }


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--models", nargs="+", default=["tiny", "base-random"],
                        help="random-initialised presets to serve (default: tiny base-random)")
    parser.add_argument("--checkpoint", type=Path, help="serve this checkpoint instead of random presets")
    parser.add_argument("--modes", nargs="+", default=["lock", "micro"], choices=["lock", "micro"])
    parser.add_argument("--clip-s", type=float, default=5.0, help="length of the posted clip (default: one 5 s window)")
    parser.add_argument("--concurrency", type=int, default=8)
    parser.add_argument("--requests", type=int, default=None, help="concurrent requests per run (default by model)")
    parser.add_argument("--single", type=int, default=None, help="sequential requests per run (default by model)")
    parser.add_argument("--threads", type=int, default=4, help="waitress threads")
    parser.add_argument("--device", default=None, help="serve on this torch device (default: the server's, cpu)")
    parser.add_argument("--out", type=Path, default=RESULTS / "serve.json")
    args = parser.parse_args(argv)

    body = clip_wav(args.clip_s)
    results = []
    with tempfile.TemporaryDirectory(prefix="asit-bench-serve-") as tmp:
        targets = [(args.checkpoint.name, args.checkpoint)] if args.checkpoint else \
            [(name, save_random_model(name, Path(tmp))) for name in args.models]
        for name, path in targets:
            small = name == "tiny"
            run_args = argparse.Namespace(**vars(args))
            run_args.requests = args.requests or (400 if small else 48)
            run_args.single = args.single or (60 if small else 12)
            for mode in args.modes:
                row = {"model": name, "device": args.device or "cpu", "clip_s": args.clip_s,
                       "concurrency": args.concurrency,
                       "requests": run_args.requests, "single_requests": run_args.single,
                       **run_one(path, mode, body, run_args)}
                results.append(row)
                print(json.dumps(row), flush=True)

    print(f"\n{'model':<12} {'mode':<6} {'1-client p50':>13} {'1/latency':>10} {'8-client rps':>13} "
          f"{'p50':>8} {'p95':>8} {'gain':>5} {'errors':>6}")
    for r in results:
        print(f"{r['model']:<12} {r['mode']:<6} {r['single_p50_ms']:>10.1f} ms {r['one_over_latency_rps']:>10.2f} "
              f"{r['concurrent_rps']:>13.2f} {r['concurrent_p50_ms']:>6.0f}ms {r['concurrent_p95_ms']:>6.0f}ms "
              f"{r['throughput_gain']:>5.2f} {r['errors']:>6}")
    best = {}
    for r in results:
        if r["errors"] == 0 and r["concurrent_rps"] > best.get(r["model"], {}).get("concurrent_rps", 0):
            best[r["model"]] = r
    for model, r in best.items():
        print(f"best for {model}: {r['mode']} ({r['concurrent_rps']:.2f} requests/s)")
    write_json(args.out, {"results": results, "best_mode": {m: r["mode"] for m, r in best.items()},
                          "machine": machine_info()})
    print(f"saved {args.out}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
