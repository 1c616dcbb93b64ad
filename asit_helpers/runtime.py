"""The one home for device and precision decisions: training, ``evaluate``, ``predict`` and ``asit serve`` ask
:func:`resolve_precision`, and ``asit env`` reports what it decided (:func:`environment`).

One vocabulary everywhere: ``"auto"``, ``"fp32"``, ``"bf16"``, ``"fp16"`` (``--precision`` on every subcommand).

``"auto"`` picks, per device:

- **CUDA**: bf16 only where the GPU has it natively (compute capability >= 8.0: A100, H100, RTX 30xx/40xx,
  L4). ``torch.cuda.is_bf16_supported()`` with its default ``including_emulation=True`` also says True on a
  Tesla T4 (7.5), where bf16 is emulated through float32 without tensor cores; so the capability decides. GPUs
  with fp16 tensor cores (capability >= 7.0: T4, V100) get fp16 (training: Accelerate's fp16 autocast with its
  gradient scaler). Older GPUs get fp32.
- **CPU, inference**: bf16 where the CPU multiplies bf16 natively (AVX512-BF16 or AMX), else fp32 (oneDNN
  emulates bf16 through float32 and is slower than float32 there).
- **CPU, training**: fp32 (Accelerate's CPU autocast is opt-in: ``--precision bf16``).

An explicit choice is honoured, with a warning where it will be slow or emulated (bf16 on a T4). fp16 on a CPU
has no fast kernels and no gradient scaler: it falls back to fp32 with a warning.
"""

from __future__ import annotations

import platform
import sys
import warnings
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any

import torch

#: What ``--precision`` / ``precision=`` accept everywhere.
PRECISIONS = ("auto", "fp32", "bf16", "fp16")
#: Accelerate's name for each resolved precision.
ACCELERATE_MIXED_PRECISION = {"fp32": "no", "bf16": "bf16", "fp16": "fp16"}
TORCH_DTYPES = {"fp32": torch.float32, "bf16": torch.bfloat16, "fp16": torch.float16}


@dataclass(frozen=True)
class PrecisionChoice:
    """What :func:`resolve_precision` decided, and why (saved in ``training_args.json`` and reports).

    Attributes:
        precision: ``"fp32"``, ``"bf16"`` or ``"fp16"``.
        requested: what was asked for (``"auto"`` or one of the above).
        device: the torch device type (``"cpu"``, ``"cuda"``, ...).
        device_name: e.g. ``"Tesla T4 (compute capability 7.5)"`` or ``"CPU (x86_64, native bf16)"``.
        reason: one line for people: ``"Tesla T4 (compute capability 7.5): no native bf16 -> fp16"``.
        warning: set when an explicit choice was honoured against the device's advice (or replaced).
    """

    precision: str
    requested: str
    device: str
    device_name: str
    reason: str
    warning: str | None = None

    @property
    def mixed_precision(self) -> str:
        """Accelerate's ``mixed_precision`` (``"no"``, ``"bf16"``, ``"fp16"``)."""
        return ACCELERATE_MIXED_PRECISION[self.precision]

    @property
    def dtype(self) -> torch.dtype:
        return TORCH_DTYPES[self.precision]

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)


def check_precision(precision: str) -> str:
    """``precision`` if it is one of :data:`PRECISIONS`, else a ``ValueError`` naming them."""
    if precision not in PRECISIONS:
        raise ValueError(f"precision must be one of {PRECISIONS}, got {precision!r}")
    return precision


def cpu_supports_bf16() -> bool:
    """Whether this CPU multiplies bf16 matrices natively (AVX512-BF16 or AMX tiles), detected at run time.

    The probes are private torch functions (torch >= 2.1); if they are missing or fail, the answer is False: the
    safe fallback is float32.
    """
    for name in ("_is_avx512_bf16_supported", "_is_amx_tile_supported"):
        probe = getattr(torch.cpu, name, None)
        try:
            if probe is not None and bool(probe()):
                return True
        except Exception:  # a probe that breaks on an odd platform means "unknown", i.e. fall back to fp32
            continue
    return False


def cuda_native_bf16(index: int = 0) -> bool:
    """Whether CUDA device ``index`` has bf16 in hardware (compute capability >= 8.0); emulation does not count."""
    if getattr(torch.version, "hip", None):  # ROCm GPUs that run torch have bf16
        return bool(torch.cuda.is_bf16_supported(including_emulation=False))
    return torch.cuda.get_device_capability(index) >= (8, 0)


def cuda_fp16_tensor_cores(index: int = 0) -> bool:
    """Whether CUDA device ``index`` has fp16 tensor cores (compute capability >= 7.0: V100, T4 and newer)."""
    return bool(getattr(torch.version, "hip", None)) or torch.cuda.get_device_capability(index) >= (7, 0)


def resolve_device(device: str | torch.device | None = None) -> torch.device:
    """``device``, or CUDA when available, else the CPU."""
    if device is not None:
        return torch.device(device)
    return torch.device("cuda" if torch.cuda.is_available() else "cpu")


def describe_device(device: str | torch.device | None = None) -> str:
    """A person's name for ``device``: ``"Tesla T4 (compute capability 7.5)"``, ``"CPU (x86_64, native bf16)"``."""
    device = resolve_device(device)
    if device.type == "cuda":
        index = device.index if device.index is not None else torch.cuda.current_device()
        major, minor = torch.cuda.get_device_capability(index)
        return f"{torch.cuda.get_device_name(index)} (compute capability {major}.{minor})"
    if device.type == "cpu":
        native = "native bf16" if cpu_supports_bf16() else "no native bf16"
        return f"CPU ({platform.machine() or 'unknown'}, {native})"
    return device.type.upper()


def resolve_precision(
    precision: str = "auto", device: str | torch.device | None = None, *, training: bool = False, warn: bool = True
) -> PrecisionChoice:
    """Decide the precision for ``device`` (see the module docstring for the rules).

    Args:
        precision: ``"auto"``, ``"fp32"``, ``"bf16"`` or ``"fp16"``.
        device: a torch device (default: CUDA when available, else CPU).
        training: training rather than inference (on a CPU ``auto`` is then fp32).
        warn: emit :attr:`PrecisionChoice.warning` as a ``UserWarning`` too.

    Raises:
        ValueError: an unknown precision name.
    """
    check_precision(precision)
    device = resolve_device(device)
    name = describe_device(device)
    choice = _decide(precision, device, name, training)
    if warn and choice.warning:
        warnings.warn(choice.warning, stacklevel=2)
    return choice


def _decide(requested: str, device: torch.device, name: str, training: bool) -> PrecisionChoice:
    def made(precision: str, reason: str, warning: str | None = None) -> PrecisionChoice:
        return PrecisionChoice(precision, requested, device.type, name, reason, warning)

    if device.type == "cuda":
        index = device.index if device.index is not None else torch.cuda.current_device()
        bf16, fp16 = cuda_native_bf16(index), cuda_fp16_tensor_cores(index)
        if requested == "auto":
            if bf16:
                return made("bf16", f"{name}: native bf16 -> bf16")
            if fp16:
                return made("fp16", f"{name}: no native bf16 -> fp16")
            return made("fp32", f"{name}: neither native bf16 nor fp16 tensor cores -> fp32")
        if requested == "bf16" and not bf16:
            return made("bf16", f"{name}: bf16 as asked", f"{name} has no native bf16: bf16 runs emulated through "
                        "float32 without tensor cores (slow); --precision auto picks "
                        f"{'fp16' if fp16 else 'fp32'} here")
        return made(requested, f"{name}: {requested} as asked")

    if device.type == "cpu":
        native = cpu_supports_bf16()
        if requested == "auto":
            if training:
                return made("fp32", f"{name}: training on a CPU -> fp32 (--precision bf16 to use CPU autocast)")
            if native:
                return made("bf16", f"{name}: native bf16 matrix units -> bf16")
            return made("fp32", f"{name}: no native bf16 -> fp32")
        if requested == "fp16":
            return made("fp32", f"{name}: fp16 asked, fp32 used", "fp16 has no fast CPU kernels (and no gradient "
                        "scaler on a CPU): running fp32 instead; use bf16 or fp32 on a CPU")
        if requested == "bf16" and not native:
            return made("bf16", f"{name}: bf16 as asked", "this CPU has no native bf16 (AVX512-BF16/AMX): bf16 is "
                        "emulated and slower than fp32 here")
        return made(requested, f"{name}: {requested} as asked")

    if requested in ("auto", "fp32"):
        return made("fp32", f"{name}: fp32")
    return made(requested, f"{name}: {requested} as asked")


# -- `asit env` --------------------------------------------------------------------------------------------------

_PACKAGES = ("torch", "transformers", "numpy", "accelerate", "ipywidgets", "anywidget", "flask", "pandas",
             "soundfile", "datasets")


def _version(package: str) -> str | None:
    from importlib import metadata

    try:
        return metadata.version(package)
    except metadata.PackageNotFoundError:
        return None


def hub_status() -> dict[str, Any]:
    """Whether the Hugging Face Hub is switched off (``HF_HUB_OFFLINE``) and where its cache lives."""
    from huggingface_hub import constants

    from .messages import hub_offline

    return {"offline": hub_offline(), "cache": str(constants.HF_HUB_CACHE), "endpoint": constants.ENDPOINT}


def hub_reachable(timeout: float = 3.0) -> bool:
    """Whether the Hub's endpoint answers within ``timeout`` seconds (one try, no retries)."""
    import urllib.error
    import urllib.request

    from huggingface_hub import constants

    try:
        urllib.request.urlopen(constants.ENDPOINT, timeout=timeout).close()  # noqa: S310 - a fixed https URL
        return True
    except urllib.error.HTTPError:
        return True  # it answered
    except (OSError, ValueError):
        return False


def require_hub_model(model_id: str, timeout: float = 5.0) -> None:
    """Fail fast, with :func:`~asit_helpers.messages.hub_unavailable`'s explanation, when ``model_id`` is neither
    a local folder, nor in the Hub cache, nor reachable: transformers would otherwise retry for a minute and end
    in a traceback.

    Raises:
        HubUnavailableError: offline (``HF_HUB_OFFLINE=1``) or the Hub unreachable, and the model not cached.
    """
    import huggingface_hub

    from .messages import ExpectedError, HubUnavailableError, hub_offline, hub_unavailable

    if Path(model_id).is_dir():
        return
    cached = huggingface_hub.try_to_load_from_cache(model_id, "config.json")
    if isinstance(cached, str):
        return
    if hub_offline():
        raise HubUnavailableError(hub_unavailable(model_id, offline=True))
    try:
        huggingface_hub.model_info(model_id, timeout=timeout)
    except huggingface_hub.errors.RepositoryNotFoundError:
        raise ExpectedError(f"error: {model_id}: no such model on the Hugging Face Hub, and no such local folder") \
            from None
    except Exception as exc:  # noqa: BLE001 - what failed is reported; a missing repo is also "can't load"
        raise HubUnavailableError(hub_unavailable(model_id, offline=False, detail=f"{type(exc).__name__}: {exc}")) \
            from None


def environment() -> dict[str, Any]:
    """What ``asit env`` prints: Python, OS, package versions, the device and what ``auto`` precision picks."""
    from . import __version__
    from .colab import in_colab

    device = resolve_device()
    info: dict[str, Any] = {
        "asit_helpers": __version__,
        "python": sys.version.split()[0],
        "platform": platform.platform(),
        "packages": {name: _version(name) for name in _PACKAGES},
        "device": device.type,
        "device_name": describe_device(device),
        "cuda_available": torch.cuda.is_available(),
        "torch_cuda": torch.version.cuda,
        "precision": {
            "inference": resolve_precision("auto", device, warn=False).to_dict(),
            "training": resolve_precision("auto", device, training=True, warn=False).to_dict(),
        },
        "colab": in_colab(),
        "hub": hub_status(),
    }
    info["hub"]["reachable"] = False if info["hub"]["offline"] else hub_reachable()
    if device.type == "cuda":
        free, total = torch.cuda.mem_get_info()
        info["gpu_memory_gb"] = {"free": round(free / 2**30, 2), "total": round(total / 2**30, 2)}
        info["cuda_capability"] = ".".join(map(str, torch.cuda.get_device_capability()))
    return info


def format_environment(info: dict[str, Any], short: bool = False) -> str:
    """``asit env``'s text (``short``: the three lines notebooks print in their setup output)."""
    inference, training = info["precision"]["inference"], info["precision"]["training"]
    hub = info["hub"]
    state = ("offline (HF_HUB_OFFLINE=1)" if hub["offline"]
             else "reachable" if hub.get("reachable") else f"unreachable ({hub['endpoint']})")
    hub_line = f"Hub: {state}, cache {hub['cache']}"
    packages = ", ".join(f"{k} {v}" for k, v in info["packages"].items() if v and k in ("torch", "transformers"))
    if short:
        return (f"ASiT {info['asit_helpers']} · Python {info['python']} · {packages}\n"
                f"device: {info['device_name']} · precision auto: inference {inference['precision']}, "
                f"training {training['precision']}\n"
                f"{'Colab' if info['colab'] else 'not Colab'} · {hub_line}")
    lines = [
        f"asit_helpers: {info['asit_helpers']}",
        f"Python: {info['python']}",
        f"OS: {info['platform']}",
        *[f"{name}: {version or 'not installed'}" for name, version in info["packages"].items()],
        f"device: {info['device']} — {info['device_name']}",
        f"CUDA: {'available' if info['cuda_available'] else 'not available'} (torch built for CUDA "
        f"{info['torch_cuda'] or 'none'})",
    ]
    if "gpu_memory_gb" in info:
        lines.append(f"GPU memory: {info['gpu_memory_gb']['free']} GB free of {info['gpu_memory_gb']['total']} GB")
    lines += [
        f"precision auto (inference): {inference['precision']} — {inference['reason']}",
        f"precision auto (training): {training['precision']} — {training['reason']}",
        f"Colab: {'yes' if info['colab'] else 'no'}",
        hub_line,
    ]
    return "\n".join(lines)

