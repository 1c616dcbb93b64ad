"""The one device + precision resolver (issue 18): GPUs faked by patching ``torch.cuda``, CPUs by the bf16 probe."""

from __future__ import annotations

import json
import subprocess
import sys

import pytest
import torch

from asit_helpers import runtime
from asit_helpers.runtime import resolve_precision

#: (name, compute capability, what auto picks)
GPUS = [
    ("Tesla T4", (7, 5), "fp16"),
    ("Tesla V100-SXM2-16GB", (7, 0), "fp16"),
    ("NVIDIA A100-SXM4-40GB", (8, 0), "bf16"),
    ("NVIDIA H100 80GB HBM3", (9, 0), "bf16"),
    ("Tesla K80", (3, 7), "fp32"),
]


@pytest.fixture
def fake_gpu(monkeypatch):
    """``fake_gpu(name, capability)``: torch.cuda answers as that GPU would, including the bf16 claim that
    ``is_bf16_supported()`` makes by emulation on a T4."""

    def install(name: str, capability: tuple[int, int]):
        monkeypatch.setattr(torch.cuda, "is_available", lambda: True)
        monkeypatch.setattr(torch.cuda, "device_count", lambda: 1)
        monkeypatch.setattr(torch.cuda, "current_device", lambda: 0)
        monkeypatch.setattr(torch.cuda, "get_device_name", lambda index=0: name)
        monkeypatch.setattr(torch.cuda, "get_device_capability", lambda index=0: capability)
        monkeypatch.setattr(torch.cuda, "is_bf16_supported",
                            lambda including_emulation=True: including_emulation or capability >= (8, 0))
        monkeypatch.setattr(torch.version, "hip", None)

    return install


@pytest.mark.parametrize("name,capability,expected", GPUS)
def test_auto_on_gpus(fake_gpu, name, capability, expected):
    fake_gpu(name, capability)
    for training in (False, True):
        choice = resolve_precision("auto", training=training)  # default device: CUDA, as it is "available"
        assert choice.device == "cuda" and choice.precision == expected and choice.warning is None
        assert name in choice.reason and f"{capability[0]}.{capability[1]}" in choice.reason
    assert choice.mixed_precision == {"fp16": "fp16", "bf16": "bf16", "fp32": "no"}[expected]


def test_t4_reason_reads_as_the_issue_asks(fake_gpu):
    fake_gpu("Tesla T4", (7, 5))
    assert torch.cuda.is_bf16_supported()  # the emulation claim the resolver must not believe
    assert resolve_precision("auto", "cuda").reason == "Tesla T4 (compute capability 7.5): no native bf16 -> fp16"


def test_explicit_bf16_on_a_t4_is_honoured_with_a_warning(fake_gpu):
    fake_gpu("Tesla T4", (7, 5))
    with pytest.warns(UserWarning, match="no native bf16"):
        choice = resolve_precision("bf16", "cuda")
    assert choice.precision == "bf16" and choice.requested == "bf16" and "fp16" in choice.warning


def test_explicit_choices_on_an_a100_pass_without_warnings(fake_gpu, recwarn):
    fake_gpu("NVIDIA A100-SXM4-40GB", (8, 0))
    assert [resolve_precision(p, "cuda").precision for p in ("fp32", "bf16", "fp16")] == ["fp32", "bf16", "fp16"]
    assert not [w for w in recwarn if issubclass(w.category, UserWarning)]


@pytest.mark.parametrize("native", [True, False])
def test_cpu_rules(monkeypatch, native):
    monkeypatch.setattr(runtime, "cpu_supports_bf16", lambda: native)
    inference = resolve_precision("auto", "cpu")
    assert inference.precision == ("bf16" if native else "fp32")
    assert resolve_precision("auto", "cpu", training=True).precision == "fp32"
    assert resolve_precision("fp32", "cpu").precision == "fp32"
    with pytest.warns(UserWarning, match="fp16 has no fast CPU kernels"):
        assert resolve_precision("fp16", "cpu").precision == "fp32"
    if not native:
        with pytest.warns(UserWarning, match="emulated"):
            assert resolve_precision("bf16", "cpu").precision == "bf16"


def test_no_gpu_means_cpu(monkeypatch):
    monkeypatch.setattr(torch.cuda, "is_available", lambda: False)
    assert runtime.resolve_device(None).type == "cpu"
    assert resolve_precision("auto").device == "cpu"


def test_unknown_precision_is_refused():
    with pytest.raises(ValueError, match="precision must be one of"):
        resolve_precision("no")


def test_device_table_for_the_note(fake_gpu, monkeypatch, capsys):
    """Prints the table the issue's note shows (run with -s)."""
    rows = []
    for name, capability, _ in GPUS:
        fake_gpu(name, capability)
        c, t = resolve_precision("auto", "cuda"), resolve_precision("auto", "cuda", training=True)
        rows.append(f"| {name} | {capability[0]}.{capability[1]} | {c.precision} | {t.precision} | {c.reason} |")
    monkeypatch.undo()
    for native in (True, False):
        monkeypatch.setattr(runtime, "cpu_supports_bf16", lambda native=native: native)
        c, t = resolve_precision("auto", "cpu"), resolve_precision("auto", "cpu", training=True)
        rows.append(f"| CPU {'with' if native else 'without'} AVX512-BF16/AMX | - | {c.precision} | {t.precision} "
                    f"| {c.reason}; {t.reason} |")
    print("\n| device | capability | auto (inference) | auto (training) | reason |\n|---|---|---|---|---|")
    print("\n".join(rows))
    assert len(rows) == len(GPUS) + 2


def test_environment_describes_this_machine():
    info = runtime.environment()
    assert info["python"] == sys.version.split()[0]
    assert info["packages"]["torch"] and info["packages"]["transformers"]
    assert info["precision"]["inference"]["precision"] in ("fp32", "bf16", "fp16")
    assert set(info["hub"]) >= {"offline", "cache", "reachable"}
    text = runtime.format_environment(info)
    assert "precision auto (inference)" in text and info["device_name"] in text
    assert len(runtime.format_environment(info, short=True).splitlines()) == 3


@pytest.mark.slow  # a CLI subprocess
def test_cli_env_json(tmp_path):
    out = subprocess.run([sys.executable, "-m", "asit_helpers.cli", "env", "--json"], capture_output=True, text=True,
                         timeout=180, env={**__import__("os").environ, "HF_HUB_OFFLINE": "1"})
    assert out.returncode == 0, out.stderr
    info = json.loads(out.stdout)
    assert info["hub"]["offline"] is True and info["hub"]["reachable"] is False
    assert info["precision"]["training"]["reason"]
