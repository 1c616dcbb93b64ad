"""The same ``train`` under ``torchrun --nproc_per_node 2`` on CPU (gloo): two ranks, one model.

Each rank trains on its share of every batch (Accelerate shards them), DDP averages the gradients, so after the
steps both ranks must hold identical weights and report identical metrics.
"""

from __future__ import annotations

import json
import socket
import subprocess
import sys
import textwrap

import pytest

WORKER = textwrap.dedent(
    """
    import hashlib, json, os, sys
    import torch
    from asit_helpers.data import AudioCache
    from asit_helpers.train import train

    cache_dir, out = sys.argv[1], sys.argv[2]
    seen = {}

    def fingerprint(info):
        # the weights this rank holds in memory after each optimiser step (not the checkpoint both ranks reload)
        h = hashlib.sha256()
        for name, p in sorted(info["model"].state_dict().items()):
            h.update(name.encode()); h.update(p.detach().float().numpy().tobytes())
        seen[info["step"]] = h.hexdigest()

    result = train(AudioCache.open(cache_dir), out, preset="tiny", mode="partial", top_layers=1, epochs=1, batch_size=4,
                   lr_head=3e-3, lr_backbone=1e-3, progress=False, overwrite=True, callbacks=[fingerprint])
    import torch.distributed as dist
    rank = int(os.environ["RANK"])
    report = {"rank": rank, "world": int(os.environ["WORLD_SIZE"]),
              "backend": dist.get_backend() if dist.is_initialized() else None,
              "weights_by_step": seen, "history": result.history}
    with open(os.path.join(out, f"rank{rank}.json"), "w") as f:
        json.dump(report, f)
    """
)


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


@pytest.mark.slow
def test_two_rank_gloo_training_agrees(train_cache, tmp_path):
    script = tmp_path / "ddp_worker.py"
    script.write_text(WORKER)
    out = tmp_path / "ck"
    cmd = [sys.executable, "-m", "torch.distributed.run", "--nproc_per_node", "2", "--master_addr", "127.0.0.1",
           "--master_port", str(_free_port()), str(script), str(train_cache.folder), str(out)]
    proc = subprocess.run(cmd, capture_output=True, text=True, timeout=600)
    assert proc.returncode == 0, proc.stdout[-3000:] + proc.stderr[-3000:]
    ranks = [json.loads((out / f"rank{r}.json").read_text()) for r in (0, 1)]
    assert [r["world"] for r in ranks] == [2, 2] and ranks[0]["backend"] == "gloo"
    assert list(ranks[0]["weights_by_step"]) == ["1", "2", "3"]
    assert ranks[0]["weights_by_step"] == ranks[1]["weights_by_step"]  # identical after every step
    assert len(set(ranks[0]["weights_by_step"].values())) == 3  # and they did change
    assert ranks[0]["history"][0]["val_accuracy"] == ranks[1]["history"][0]["val_accuracy"]
    assert ranks[0]["history"][0]["train_loss"] == pytest.approx(ranks[1]["history"][0]["train_loss"])
    # 22 clips in batches of 4 = 6 batches, 3 per rank: 3 optimiser steps each
    assert ranks[0]["history"][0]["step"] == 3
    assert (out / "model.safetensors").exists() and json.loads((out / "metrics.json").read_text())["completed"]
