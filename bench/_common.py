"""Shared bits of the benchmark scripts: machine description, timing statistics, atomic JSON results.

Every performance figure ASiT quotes comes from a script in ``bench/`` that prints it and saves it as JSON under
``bench/results/`` with the machine, the date and the exact command, so a reader can re-run it.
"""

from __future__ import annotations

import datetime as _dt
import json
import os
import platform
import sys
import tempfile
from pathlib import Path
from typing import Any, Sequence

import numpy as np

ROOT = Path(__file__).resolve().parents[1]
RESULTS = ROOT / "bench" / "results"

if str(ROOT) not in sys.path:  # run as `python bench/x.py` from a checkout without `pip install -e .`
    sys.path.insert(0, str(ROOT))


def cpu_name() -> str:
    """The processor's marketing name where the OS tells it (Linux /proc/cpuinfo), else platform's guess."""
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                return line.split(":", 1)[1].strip()
    except OSError:
        pass
    return platform.processor() or platform.machine()


def machine_info() -> dict[str, Any]:
    """What the figures were measured on: CPU, cores, threads torch uses, load, versions, GPU if any."""
    import torch
    import transformers

    info: dict[str, Any] = {
        "cpu": cpu_name(),
        "logical_cpus": os.cpu_count(),
        "torch_threads": torch.get_num_threads(),
        "platform": platform.platform(),
        "python": platform.python_version(),
        "torch": torch.__version__,
        "transformers": transformers.__version__,
        "date_utc": _dt.datetime.now(_dt.timezone.utc).strftime("%Y-%m-%d %H:%M UTC"),
        "command": " ".join([Path(sys.executable).name] + sys.argv),
    }
    if hasattr(os, "getloadavg"):  # POSIX only; on Windows the load is simply not recorded
        info["load_avg_1_5_15"] = [round(x, 2) for x in os.getloadavg()]
    if torch.cuda.is_available():
        info["gpu"] = torch.cuda.get_device_name(0)
    return info


def latency_stats(seconds: Sequence[float], batch: int, clip_s: float) -> dict[str, float]:
    """p50/p95 of per-call wall times, clips per second and the real-time factor (compute time / audio time)."""
    t = np.asarray(seconds, dtype=np.float64)
    p50 = float(np.percentile(t, 50))
    return {
        "p50_s": round(p50, 5),
        "p95_s": round(float(np.percentile(t, 95)), 5),
        "clips_per_s": round(batch / p50, 3),
        "rtf": round(p50 / (batch * clip_s), 5),
        "n_timed": int(t.size),
    }


def write_json(path: Path, data: Any) -> Path:
    """Write JSON atomically (temp file in the same folder + os.replace): a crash never leaves half a file."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(dir=path.parent, prefix=path.name, suffix=".tmp")
    try:
        with os.fdopen(fd, "w", encoding="utf-8") as fh:
            json.dump(data, fh, indent=1)
            fh.write("\n")
        # mkstemp creates the file 0600; a results file is for everyone to read (rw-r--r-- less the umask)
        umask = os.umask(0)
        os.umask(umask)
        os.chmod(tmp, 0o666 & ~umask)
        os.replace(tmp, path)
    except BaseException:
        Path(tmp).unlink(missing_ok=True)
        raise
    return path
