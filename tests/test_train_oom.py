"""Out of memory during a training step is a message, not a traceback, and loses nothing (issue 18)."""

from __future__ import annotations

import pytest
import torch
from safetensors.torch import load_file

import asit_helpers.train as train_module
from asit_helpers.cli import main
from asit_helpers.messages import OutOfMemoryError, explain
from asit_helpers.train import train

KW = dict(preset="tiny", mode="full", epochs=1, batch_size=4, save_every=100, lr_head=3e-3, lr_backbone=1e-3,
          progress=False)


def _failing_step(monkeypatch, at_call: int, error: Exception):
    """Make the ``at_call``-th training step raise ``error`` before it runs (as an allocation failure would)."""
    real, calls = train_module._train_step, {"n": 0}

    def step(*args, **kwargs):
        calls["n"] += 1
        if calls["n"] == at_call:
            raise error
        return real(*args, **kwargs)

    monkeypatch.setattr(train_module, "_train_step", step)


@pytest.mark.parametrize("error", [
    torch.OutOfMemoryError("CUDA out of memory. Tried to allocate 2.00 GiB (GPU 0; 14.75 GiB total capacity)"),
    RuntimeError("[enforce fail at alloc_cpu.cpp:117] data. DefaultCPUAllocator: can't allocate memory: you tried "
                 "to allocate 4294967296 bytes"),
], ids=["cuda", "cpu"])
def test_out_of_memory_saves_the_run_and_explains(train_cache, tmp_path, monkeypatch, error):
    out = tmp_path / "ck"
    _failing_step(monkeypatch, at_call=4, error=error)
    with pytest.raises(OutOfMemoryError) as caught:
        train(train_cache, out, **KW)
    text = explain(caught.value)
    print("\n" + text)
    assert "out of memory" in text and "batch size 4" in text and "GB" in text
    assert "--batch-size 2 --grad-accum 2" in text and "--gradient-checkpointing" in text and "--resume" in text
    assert (out / "resume" / "state-00000003" / "trainer_state.json").exists()  # the 3 steps before are saved

    # resuming (with gradient checkpointing, which changes memory, not results) ends where a run without the
    # failure ends, weight for weight
    monkeypatch.undo()
    resumed = train(train_cache, out, resume=True, gradient_checkpointing=True, **KW)
    assert resumed.resumed_from == 3
    straight = train(train_cache, tmp_path / "straight", **KW)
    a, b = load_file(out / "model.safetensors"), load_file(tmp_path / "straight" / "model.safetensors")
    assert all(torch.equal(a[k], b[k]) for k in b)
    assert resumed.history[-1]["val_loss"] == pytest.approx(straight.history[-1]["val_loss"], abs=1e-6)


def test_cli_out_of_memory_is_a_message(train_cache, tmp_path, monkeypatch, capsys):
    _failing_step(monkeypatch, at_call=2, error=torch.OutOfMemoryError("CUDA out of memory."))
    code = main(["train", str(train_cache.folder), "--out", str(tmp_path / "ck"), "--preset", "tiny-fb",
                 "--mode", "head", "--epochs", "1", "--batch-size", "8"])
    err = capsys.readouterr().err
    print("\n" + err)
    assert code == 2 and "Traceback" not in err
    assert "out of memory" in err and "batch size 8" in err and "--batch-size 4 --grad-accum 2" in err
