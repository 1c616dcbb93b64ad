"""``make bench``: the CPU benchmark suite at small settings, in one go (budget: 10 minutes on a 2-core machine).

    python bench/run_all.py              # every bench script that exists, small settings
    python bench/run_all.py --only latency serve

Each script runs in its own process (a fresh interpreter: no warm caches or threads carried from one benchmark to
the next), prints its own table and writes its own ``bench/results/<name>.json``. A script that is not in this
checkout is reported as missing; a script that fails makes the whole run fail (exit status 1) after the others
have run, with its name and exit status, so a broken benchmark is never silently left out. The GPU benchmark
(``bench/gpu.py``) is not part of this suite: it needs a CUDA machine (see bench/README.md).
"""

from __future__ import annotations

import argparse
import subprocess
import sys
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))
from _common import RESULTS, ROOT, machine_info, write_json  # noqa: E402

#: name -> arguments at "small" settings. Order: the cheap ones first, so a failure shows up early.
SUITE: dict[str, list[str]] = {
    "preprocess": ["--clips", "200", "--repeats", "1"],
    "latency": ["--quick"],
    "train": ["--quick"],
    "serve": ["--models", "tiny", "base-random", "--requests", "48", "--single", "8"],
    "teach": [],
    "live": ["--seconds", "20"],
}


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--only", nargs="+", choices=list(SUITE), help="run only these")
    args = ap.parse_args(argv)

    started = time.perf_counter()
    runs = []
    for name, extra in SUITE.items():
        if args.only and name not in args.only:
            continue
        script = ROOT / "bench" / f"{name}.py"
        if not script.exists():
            print(f"== {name}: bench/{name}.py is not in this checkout, skipped", flush=True)
            runs.append({"name": name, "status": "missing"})
            continue
        cmd = [sys.executable, str(script), *extra]
        print(f"== {name}: {' '.join(['python', f'bench/{name}.py', *extra])}", flush=True)
        t0 = time.perf_counter()
        rc = subprocess.run(cmd, cwd=ROOT).returncode
        elapsed = time.perf_counter() - t0
        runs.append({"name": name, "args": extra, "returncode": rc, "elapsed_s": round(elapsed, 1),
                     "status": "ok" if rc == 0 else "failed"})
        print(f"== {name}: {'ok' if rc == 0 else f'FAILED (exit status {rc})'} in {elapsed:.0f} s\n", flush=True)

    total = time.perf_counter() - started
    write_json(RESULTS / "run_all.json", {"machine": machine_info(), "runs": runs, "total_s": round(total, 1)})
    print("summary:")
    for r in runs:
        extra = f" in {r['elapsed_s']:.0f} s" if "elapsed_s" in r else ""
        print(f"  {r['name']:12s} {r['status']}{extra}")
    print(f"total {total / 60:.1f} min; results in {RESULTS}")
    failed = [r["name"] for r in runs if r["status"] == "failed"]
    if failed:
        print(f"error: benchmark(s) failed: {', '.join(failed)}", file=sys.stderr)
        return 1
    return 0


if __name__ == "__main__":
    sys.exit(main())
