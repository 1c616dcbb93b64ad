"""Requests/s of the API in its container against ``asit serve`` on the host: same model, same run, side by side.

Builds the image as ``make test-container`` does (podman; cached base and layers), saves a random-initialised
model, starts the container (checkpoint at /model, port on 127.0.0.1) and a host ``asit serve`` with the same
threads and batching, and loads each with ``--concurrency`` clients posting a 5 s WAV. The two are measured in
alternating rounds (container, host, host, container, ...) so a change in the machine's load hits both alike.

    python bench/container.py                         # tiny model, 8 clients, 2 x 2 rounds of 200 requests
    python bench/container.py --models tiny base-random --requests 100

Prints a table and saves ``bench/results/container.json`` (with the image size and the seconds from
``podman run`` to the first healthy answer).
"""

from __future__ import annotations

import argparse
import os
import sys
import tempfile
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))
sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "tests"))
from _common import RESULTS, machine_info, write_json  # noqa: E402
from serve import clip_wav, save_random_model  # noqa: E402

import container_image as ci  # noqa: E402

TAG = "localhost/asit-api:bench"


def measure(url: str, body: bytes, args) -> dict:
    return ci.hammer(url + "/predict", body, requests_total=args.requests, concurrency=args.concurrency)


def run_model(checkpoint: Path, body: bytes, args) -> dict:
    env = {"ASIT_THREADS": str(args.threads), "ASIT_BATCHING": "lock"}
    port = ci.free_port()
    started = time.monotonic()
    with ci.running(TAG, checkpoint, port, env=env, name=f"asit-bench-{port}") as name:
        ci.wait_healthy(f"http://127.0.0.1:{port}", container=name)
        healthy_s = time.monotonic() - started
        host_started = time.monotonic()
        with ci.ServerProcess(checkpoint, threads=args.threads, batching="lock") as host:
            host_healthy_s = time.monotonic() - host_started
            targets = {"container": f"http://127.0.0.1:{port}", "host": host.url}
            for url in targets.values():  # warm-up: first requests pay for lazy initialisation
                ci.hammer(url + "/predict", body, requests_total=2 * args.concurrency, concurrency=args.concurrency)
            runs: dict[str, list[dict]] = {"container": [], "host": []}
            for r in range(args.rounds):
                order = ["container", "host"] if r % 2 == 0 else ["host", "container"]
                for which in order:
                    runs[which].append(measure(targets[which], body, args))
                    print(f"  round {r + 1} {which:9s} {runs[which][-1]['requests_per_s']:7.2f} requests/s, "
                          f"errors {runs[which][-1]['errors']}", flush=True)
    summary = {}
    for which, results in runs.items():
        total_s = sum(x["seconds"] for x in results)
        summary[which] = {
            "requests_per_s": round(sum(x["requests"] for x in results) / total_s, 2),
            "errors": sum(x["errors"] for x in results),
            "p50_ms": [x["p50_ms"] for x in results],
            "p95_ms": [x["p95_ms"] for x in results],
            "rounds": [x["requests_per_s"] for x in results],
        }
    summary["ratio_container_over_host"] = round(summary["container"]["requests_per_s"]
                                                  / summary["host"]["requests_per_s"], 3)
    summary["healthy_after_run_s"] = round(healthy_s, 1)
    summary["host_healthy_after_start_s"] = round(host_healthy_s, 1)
    return summary


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--models", nargs="+", default=["tiny"], help="presets (random init): tiny, base-random")
    parser.add_argument("--requests", type=int, default=200, help="requests per round")
    parser.add_argument("--rounds", type=int, default=4, help="rounds, alternating which server goes first")
    parser.add_argument("--concurrency", type=int, default=8)
    parser.add_argument("--threads", type=int, default=4, help="waitress threads, both servers")
    parser.add_argument("--seconds", type=float, default=5.0, help="clip length")
    parser.add_argument("--out", type=Path, default=RESULTS / "container.json")
    args = parser.parse_args()
    if ci.podman_command() is None:
        sys.exit(ci.INSTALL_HINT)

    build_s = ci.build_image(TAG)
    size_mb = ci.image_size_mb(TAG)
    print(f"image {TAG}: {size_mb:.0f} MB (build {build_s:.0f} s)")
    body = clip_wav(args.seconds)
    results = {"machine": machine_info(), "image": TAG, "image_size_mb": round(size_mb), "models": {}}
    with tempfile.TemporaryDirectory() as tmp:
        for preset in args.models:
            checkpoint = ci.share_with_container(save_random_model(preset, Path(tmp)))
            print(f"{preset}: {args.rounds} rounds x {args.requests} requests, {args.concurrency} clients")
            results["models"][preset] = run_model(checkpoint, body, args)
    results["machine"]["load_avg_after"] = [round(x, 2) for x in os.getloadavg()]
    print(f"\n{'model':12s} {'container req/s':>16s} {'host req/s':>11s} {'ratio':>6s} {'errors':>7s} "
          f"{'healthy after start: container / host':>38s}")
    for preset, r in results["models"].items():
        print(f"{preset:12s} {r['container']['requests_per_s']:16.2f} {r['host']['requests_per_s']:11.2f} "
              f"{r['ratio_container_over_host']:6.3f} {r['container']['errors'] + r['host']['errors']:7d} "
              f"{r['healthy_after_run_s']:27.1f} s / {r['host_healthy_after_start_s']:.1f} s")
    write_json(args.out, results)
    print(f"saved {args.out}")


if __name__ == "__main__":
    main()
