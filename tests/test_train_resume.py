"""A training run killed (SIGKILL; TerminateProcess on Windows) mid-epoch and resumed ends where an uninterrupted
run ends: same history, same weights."""

from __future__ import annotations

import json
import subprocess
import sys
import textwrap
import time

import pytest
import torch
from safetensors.torch import load_file

from asit_helpers.train import train

# full mode with augmentation, dropout and mixup: every kind of randomness a resume must replay
KW = dict(preset="tiny", mode="full", epochs=2, batch_size=4, save_every=3, mixup_alpha=0.2, lr_head=3e-3, lr_backbone=1e-3)

WORKER = textwrap.dedent(
    """
    import json, sys, time
    from pathlib import Path
    from asit_helpers.data import AudioCache
    from asit_helpers.train import train

    cache_dir, out, hang_at, marker, kw = sys.argv[1], sys.argv[2], int(sys.argv[3]), Path(sys.argv[4]), json.loads(sys.argv[5])

    def hang(info):
        # stand-in for a Colab disconnect: stop making progress mid-epoch and wait to be killed
        if info["step"] == hang_at:
            tmp = marker.with_suffix(".tmp")  # renamed into place: the test polls for the file and reads it at once
            tmp.write_text(json.dumps({k: v for k, v in info.items() if k != "model"}))
            tmp.replace(marker)
            time.sleep(600)

    train(AudioCache.open(cache_dir), out, callbacks=[hang], progress=False, **kw)
    """
)


@pytest.mark.slow
def test_sigkill_mid_epoch_then_resume_matches_uninterrupted(train_cache, tmp_path):
    # 22 training clips / 4 per batch = 6 steps per epoch; states at step 3, 6 (epoch end) and 9; killed at 11
    out, marker = tmp_path / "killed", tmp_path / "hanging.json"
    script = tmp_path / "worker.py"
    script.write_text(WORKER)
    proc = subprocess.Popen(
        [sys.executable, str(script), str(train_cache.folder), str(out), "11", str(marker), json.dumps(KW)],
        stdout=subprocess.PIPE, stderr=subprocess.STDOUT,
    )
    try:
        while not marker.exists():
            if proc.poll() is not None:
                pytest.fail("training worker exited before the kill point:\n" + proc.stdout.read().decode()[-3000:])
            time.sleep(0.2)
        assert json.loads(marker.read_text())["epoch"] == 1  # second epoch, mid-way
    finally:
        proc.kill()  # SIGKILL on POSIX: no handler, no clean-up, nothing flushed
        proc.wait(timeout=60)
    states = sorted(p.name for p in (out / "resume").iterdir())
    assert states == ["state-00000009"], states  # the last complete state; older ones were removed
    assert not json.loads((out / "metrics.json").read_text())["completed"]

    resumed = train(train_cache, out, resume=True, progress=False, **KW)
    assert resumed.resumed_from == 9
    reference = train(train_cache, tmp_path / "straight", progress=False, **KW)

    assert len(resumed.history) == len(reference.history) == 2
    for a, b in zip(resumed.history, reference.history):
        for key in ("step", "train_loss", "train_accuracy", "val_loss", "val_accuracy", "val_macro_f1"):
            assert a[key] == pytest.approx(b[key], rel=1e-5, abs=1e-6), key
    assert resumed.best_epoch == reference.best_epoch
    wa, wb = load_file(str(out / "model.safetensors")), load_file(str(tmp_path / "straight" / "model.safetensors"))
    assert wa.keys() == wb.keys()
    for name in wa:
        torch.testing.assert_close(wa[name], wb[name], rtol=1e-5, atol=1e-6, msg=name)
    assert json.loads((out / "metrics.json").read_text())["completed"]
    assert not (out / "resume").exists()


def test_resume_replays_the_rng_even_when_accelerate_cannot_restore_it(train_cache, tmp_path):
    """Accelerate's ``load_state`` only logs (info level) when it cannot read its RNG file back (numpy < 1.25
    under torch >= 2.6: ``weights_only`` refuses numpy's uint32 dtype) and trains on with the RNGs as they are.
    The resume state's own ``rng_states_0.safetensors`` restores them: with Accelerate's file gone, the resumed
    run still draws the interrupted run's dropout and SpecAugment masks and ends with its weights."""
    kw = dict(preset="tiny", mode="full", epochs=1, batch_size=4, save_every=2, lr_head=3e-3, lr_backbone=1e-3,
              progress=False)

    class Interrupt(Exception):
        pass

    def stop(info):
        if info["step"] == 3:  # after the state of step 2 was written
            raise Interrupt

    with pytest.raises(Interrupt):
        train(train_cache, tmp_path / "cut", callbacks=[stop], **kw)
    state = tmp_path / "cut" / "resume" / "state-00000002"
    assert (state / "rng_states_0.safetensors").exists()
    for accelerate_rng in state.glob("random_states_*.pkl"):
        accelerate_rng.unlink()
    resumed = train(train_cache, tmp_path / "cut", resume=True, **kw)
    assert resumed.resumed_from == 2
    train(train_cache, tmp_path / "whole", **kw)
    wa, wb = load_file(str(tmp_path / "cut" / "model.safetensors")), load_file(str(tmp_path / "whole" / "model.safetensors"))
    assert all(torch.equal(wa[k], wb[k]) for k in wb)


def test_rng_states_round_trip(tmp_path):
    import random

    import numpy as np

    from asit_helpers.train import load_rng_states, save_rng_states

    random.gauss(0, 1)  # Python's and numpy's cached Gaussian halves are part of the state too
    np.random.standard_normal()
    save_rng_states(tmp_path / "rng.safetensors")
    first = (torch.rand(5), np.random.rand(3), np.random.standard_normal(), random.random(), random.gauss(0, 1))
    torch.manual_seed(123), np.random.seed(123), random.seed(123)
    load_rng_states(tmp_path / "rng.safetensors")
    again = (torch.rand(5), np.random.rand(3), np.random.standard_normal(), random.random(), random.gauss(0, 1))
    assert torch.equal(first[0], again[0]) and np.array_equal(first[1], again[1]) and first[2:] == again[2:]
