"""Short explanations of the failures a user is expected to meet, for people rather than for debuggers.

Each explanation says what failed, why (when we know), and what to do next, in a few lines and without a
traceback. The ``asit`` command line prints them (:func:`explain` turns an exception into one) and the notebooks
show the same text, so a student reads the same advice wherever the failure happens.

    try:
        train(cache, "checkpoints/demo", preset="base")
    except Exception as exc:
        text = explain(exc)          # None: not an expected failure (a bug): let the traceback show
        if text is None:
            raise
        print(text)

Failures that are bugs (anything :func:`explain` does not recognise) keep their traceback: hiding those would
hide the information needed to fix them.

In a notebook the same failures are two lines, what failed and what to do (:func:`brief` → :class:`Explanation`),
raised as a :class:`LessonStop`, which IPython shows as just those two lines: a student meets no chained
traceback, and "Run all" still stops at that cell.
"""

from __future__ import annotations

import os
import re
from dataclasses import dataclass
from pathlib import Path

#: The preset that trains without the Hub (random-initialised, learns from scratch on a CPU).
OFFLINE_PRESET = "tiny-fb"


class ExpectedError(Exception):
    """A failure with a message written for people (``str(exc)`` is the whole explanation)."""


class HubUnavailableError(ExpectedError, OSError):
    """A model could not be fetched from the Hugging Face Hub and is not in the local cache."""


class OutOfMemoryError(ExpectedError, MemoryError):
    """A training step ran out of memory; the resume state was saved before this was raised."""


def hub_unavailable(model_id: str | None, *, offline: bool, detail: str = "") -> str:
    """The Hub can't be reached (or ``HF_HUB_OFFLINE=1``) and ``model_id`` is not cached."""
    name = model_id or "the model"
    why = ("HF_HUB_OFFLINE=1 is set (no Hub look-ups) and it is not in the local cache"
           if offline else "the Hugging Face Hub could not be reached and it is not in the local cache")
    lines = [
        f"error: could not load {name}: {why}.",
        f"  offline, train the preset that needs no download: --preset {OFFLINE_PRESET}",
        f"  or download it once where the Hub is reachable: hf download {name if model_id else 'MODEL_ID'}"
        " (then copy ~/.cache/huggingface here, or point HF_HOME at it)",
    ]
    if detail:
        lines.append(f"  ({_one_line(detail)})")
    return "\n".join(lines)


def not_a_checkpoint(path: str | Path, detail: str = "") -> str:
    """``path`` is not a checkpoint directory (what ``asit train --out`` writes)."""
    path = Path(path)
    what = "does not exist" if not path.exists() else "is not a checkpoint directory (no config.json)"
    return "\n".join([
        f"error: {path} {what}.",
        "  a checkpoint is the folder `asit train CACHE --out DIR` writes (config.json, model.safetensors, ...)",
        *([f"  ({_one_line(detail)})"] if detail else []),
    ])


def missing_cache(path: str | Path, detail: str = "") -> str:
    """``path`` is not a finished clip cache (what ``asit preprocess DATA --out CACHE`` writes)."""
    path = Path(path)
    what = "does not exist" if not path.exists() else "is not a finished ASiT cache"
    return "\n".join([
        f"error: {path} {what}.",
        f"  make one with: asit preprocess DATA_DIR --out {path}   (it resumes if it was interrupted)",
        *([f"  ({_one_line(detail)})"] if detail else []),
    ])


def bad_class_map(source: str | Path | None, detail: str) -> str:
    """A class map (``asit preprocess --classes``) that can't be read or used."""
    where = f" {source}" if source else ""
    return "\n".join([
        f"error: the class map{where} can't be used: {_one_line(detail)}",
        "  a class map is YAML/JSON: a list of class names, or keys keep / merge / rename / min_clips / top_n",
    ])


def no_network(what: str, detail: str = "") -> str:
    """A download (dataset, model) failed because the network is unreachable."""
    return "\n".join([
        f"error: could not reach {what}: no network connection (or it is blocked here).",
        "  offline you can still run: asit synth DATA && asit preprocess DATA --out CACHE && "
        f"asit train CACHE --out DIR --preset {OFFLINE_PRESET}",
        *([f"  ({_one_line(detail)})"] if detail else []),
    ])


def out_of_memory(*, batch_size: int, device: str, memory: str, resume: str | None, grad_accum: int = 1,
                  preset: str | None = None) -> str:
    """A training step ran out of memory: what was in use, that nothing is lost, and the usual cures."""
    lines = [f"error: out of memory on {device} at batch size {batch_size} ({memory})."]
    if resume:
        lines.append(f"  the run is saved ({resume}): the same command with --resume continues it once memory is "
                     "free (close other notebooks or restart the runtime), with --gradient-checkpointing if you like")
    smaller = f"a smaller preset than {preset}" if preset else "a smaller preset"
    lines.append(f"  or start over with less memory (--overwrite): --batch-size {max(1, batch_size // 2)} --grad-accum {grad_accum * 2} "
                 f"(the same effective batch), --gradient-checkpointing, or {smaller}")
    return "\n".join(lines)


def explain(exc: BaseException, *, model_id: str | None = None) -> str | None:
    """The explanation for an expected failure, or None for anything else (a bug: keep its traceback).

    Args:
        exc: the exception.
        model_id: the Hub model that was being loaded, if any (named in the Hub message).
    """
    from .audio import AudioError

    if isinstance(exc, ExpectedError):
        return str(exc)
    if _is_hub_failure(exc):
        return hub_unavailable(model_id or _model_id_in(exc), offline=hub_offline(), detail=_root_message(exc))
    if _is_out_of_memory(exc):
        return f"error: out of memory: {_one_line(str(exc))}\n  try a smaller --batch-size"
    if _is_connection_error(exc):
        return no_network("the download server", _root_message(exc))
    cache_error = _class("asit_helpers.cache", "CacheError")
    if cache_error is not None and isinstance(exc, cache_error):
        return f"error: {exc}"
    if isinstance(exc, ValueError) and str(exc).startswith(("class map", "unknown class-map")):
        return bad_class_map(None, str(exc))
    if isinstance(exc, (AudioError, FileNotFoundError, FileExistsError, NotADirectoryError, ValueError,
                        PermissionError)):
        return f"error: {exc}"
    credentials = _class("asit_helpers.sources", "KaggleCredentialsError")
    if credentials is not None and isinstance(exc, credentials):
        return f"error: {exc}"
    return None


def hub_offline() -> bool:
    """Whether ``HF_HUB_OFFLINE`` (or transformers' ``TRANSFORMERS_OFFLINE``) switches the Hub off."""
    on = {"1", "true", "yes", "on"}
    return any(os.environ.get(name, "").strip().lower() in on for name in ("HF_HUB_OFFLINE", "TRANSFORMERS_OFFLINE"))


# -- recognising failures -----------------------------------------------------------------------------------------


def _chain(exc: BaseException):
    seen = set()
    while exc is not None and id(exc) not in seen:
        seen.add(id(exc))
        yield exc
        exc = exc.__cause__ or exc.__context__


def _class(module: str, name: str):
    import sys

    return getattr(sys.modules.get(module), name, None)


def _is_connection_error(exc: BaseException) -> bool:
    names = {"ConnectError", "ConnectionError", "ConnectTimeout", "ConnectTimeoutError", "NewConnectionError",
             "MaxRetryError", "NameResolutionError", "URLError", "gaierror"}
    return any(type(e).__name__ in names or isinstance(e, ConnectionError) for e in _chain(exc))


def _is_hub_failure(exc: BaseException) -> bool:
    hub_names = {"LocalEntryNotFoundError", "OfflineModeIsEnabled"}
    for e in _chain(exc):
        if type(e).__name__ in hub_names:
            return True
        if isinstance(e, OSError) and "huggingface.co" in str(e) and "connect" in str(e):
            return True
    return False


def _is_out_of_memory(exc: BaseException) -> bool:
    import torch

    return isinstance(exc, (torch.OutOfMemoryError, MemoryError)) or "out of memory" in str(exc).lower() and \
        isinstance(exc, RuntimeError)


def _model_id_in(exc: BaseException) -> str | None:
    for e in _chain(exc):
        found = re.search(r"['\"]([\w.-]+/[\w.-]+)['\"]", str(e))
        if found and "huggingface.co" not in found.group(1):
            return found.group(1)
    return None


def _root_message(exc: BaseException) -> str:
    *_, root = _chain(exc)
    return f"{type(root).__name__}: {root}"


def _one_line(text: str, limit: int = 200) -> str:
    text = " ".join(str(text).split())
    return text if len(text) <= limit else text[: limit - 1] + "…"


# -- the notebooks' two-line form ---------------------------------------------------------------------------------

#: How a notebook user gets round a missing network or Hub.
NOTEBOOK_OFFLINE = "set OFFLINE = True in the parameters cell (synthetic data and the tiny-fb preset, no downloads)"


@dataclass(frozen=True)
class Explanation:
    """What failed (one line) and what to do about it (one line)."""

    what: str
    todo: str

    def __str__(self) -> str:
        return f"{self.what}\n{self.todo}"


class LessonStop(ExpectedError):
    """An expected failure in a notebook cell, shown as its two lines and nothing else.

    IPython renders an exception through its ``_render_traceback_`` when it has one.
    """

    def __init__(self, explanation: Explanation):
        self.explanation = explanation
        super().__init__(str(explanation))

    def _render_traceback_(self) -> list[str]:
        return [self.explanation.what, self.explanation.todo]


def brief_no_network(action: str, reason: str = "", offline: str = NOTEBOOK_OFFLINE) -> Explanation:
    detail = f" ({reason})" if reason else ""
    return Explanation(f"No network: could not {action}{detail}.",
                       f"Check the internet connection and run the cell again, or {offline}.")


def brief_hub_unavailable(repo: str, offline: str = NOTEBOOK_OFFLINE) -> Explanation:
    return Explanation(
        f"The Hugging Face Hub is unreachable, and {repo} is not in the local cache.",
        f"Run again when the Hub is reachable, pre-download it where it is (`hf download {repo}`, then copy that "
        f"HF_HOME here), or {offline}.",
    )


def _network_reason(exc: BaseException) -> str:
    import socket

    for e in _chain(exc):
        e = getattr(e, "reason", None) if isinstance(getattr(e, "reason", None), BaseException) else e
        if isinstance(e, socket.gaierror):
            return "the name server could not be reached"
        if isinstance(e, ConnectionRefusedError):
            return "connection refused"
        if isinstance(e, TimeoutError) or "Timeout" in type(e).__name__:
            return "timed out"
    return ""


def brief(exc: BaseException, *, action: str, repo: str | None = None,
          offline: str = NOTEBOOK_OFFLINE) -> Explanation | None:
    """:func:`explain`'s two-line form for a notebook, or None (a bug: keep its traceback).

    Args:
        exc: what was raised.
        action: what was being done, as a verb phrase ("download ESC-50 from GitHub").
        repo: the Hub repository being loaded, if any.
        offline: the way round a missing network or Hub, for this reader.
    """
    credentials = _class("asit_helpers.sources", "KaggleCredentialsError")
    for e in _chain(exc):
        if isinstance(e, LessonStop):
            return e.explanation
        if credentials is not None and isinstance(e, credentials):
            return Explanation(e.what, e.todo)
    if _is_hub_failure(exc) or any(isinstance(e, HubUnavailableError) for e in _chain(exc)):
        return brief_hub_unavailable(repo or _model_id_in(exc) or "the model", offline)
    if _is_connection_error(exc) or any(isinstance(e, TimeoutError) for e in _chain(exc)):
        return brief_no_network(action, _network_reason(exc), offline)
    return None
