"""What the lessons (``notebooks/01_…`` → ``06_…``) call from their cells. The runner that executes them
headless (``asit demo``, ``make demo``, the tests) is :mod:`asit_helpers.suite`.

* The repository slug and branch the Colab badges and the Colab install line point at (:data:`REPO`,
  :data:`BRANCH`; a test checks every notebook against them).
* The switches a notebook reads after its ``parameters`` cell: :func:`offline_requested` (``ASIT_OFFLINE=1`` or
  ``CI`` → synthetic soundscapes and the tiny-fb preset) and :func:`smoke_requested` (``CI`` → training cut to
  seconds).
* :class:`Workspace`: the folders the notebooks hand work to each other through (data, cache, checkpoints,
  figures, reports).
* :data:`SKIP_TAG`: the tag of cells that need a person (a credential upload, a file picker).
* Standing alone: Colab gives each notebook opened from its badge a fresh runtime, so a notebook may find nothing
  of what the earlier ones made. :func:`ensure_data` and :func:`ensure_checkpoint` then rebuild it (fetch the data,
  decode the cache, train the quick recipe) and say so; with ``USE_DRIVE`` the workspace is on Google Drive and
  they find it there.
* :func:`explained`: expected failures (no network, no Hub, Kaggle) as two lines instead of a traceback
  (:mod:`asit_helpers.messages`, shared with the CLI).
"""

from __future__ import annotations

import json
import os
import tempfile
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Callable, Iterator

from . import messages
from .colab import in_colab, workspace_root
from .files import json_default
from .messages import Explanation, LessonStop

__all__ = [
    "REPO",
    "BRANCH",
    "NOTEBOOKS",
    "SKIP_TAG",
    "INSTALL_SPEC",
    "colab_url",
    "github_url",
    "badge_row",
    "in_colab",
    "offline_requested",
    "smoke_requested",
    "Workspace",
    "workspace",
    "checkout_root",
    "LessonStop",
    "explained",
    "fetch_source",
    "ensure_data",
    "ensure_checkpoint",
    "check_backbone",
    "training_settings",
    "frame_facts",
    "describe_frames",
    "about_this_run",
    "pick_examples",
    "snr_table",
    "imbalanced_view",
    "show_tree",
    "describe_manifest",
]

#: GitHub ``owner/name`` of the project: the Colab badges, the "view on GitHub" links and the Colab install line.
REPO = "asit-audio/asit"
BRANCH = "main"
#: The lessons, in the order they hand work to each other.
NOTEBOOKS = (
    "01_download_data.ipynb",
    "02_preprocess.ipynb",
    "03_train.ipynb",
    "04_evaluate.ipynb",
    "05_attention.ipynb",
    "06_demo_widget.ipynb",
    "07_teach.ipynb",
)
#: Cells with this tag need a person (a credential upload, a file picker) and are skipped when run headless.
SKIP_TAG = "skip-ci"
#: What a notebook's Colab setup cell pip-installs: the package from GitHub. torch is not pinned by the package
#: (``torch>=2.2``), so Colab's own CUDA build satisfies it and is never reinstalled.
INSTALL_SPEC = f"asit-helpers @ git+https://github.com/{REPO}@{BRANCH}"

#: Notebook 03's recipe for the offline default (synthetic soundscapes, CPU): the "tiny-fb" preset (a learnable
#: 25 ms / 10 ms filterbank front end, 20 ms frames) trained from scratch, front end included, 30 epochs on the 60
#: clips per class notebook 01 makes; the preset's recipe adds the rest (mixup 0.2; the first conv starts as a
#: filterbank). Measured by `make demo` on a fresh clone (2026-12-01, shared machine at load 8-10): 8 min 4 s of
#: training, test accuracy 0.968, macro-F1 0.967, 0.98 of the pooling weight inside the true event window vs 0.24
#: by chance (:data:`OFFLINE_MEASURED`). Before the filterbank start and mixup, on the quiet machine (2026-11-24):
#: 3 min 15 s, 0.952. (12 epochs on 30 clips per class gave 0.53.)
OFFLINE_TRAINING = dict(preset="tiny-fb", mode="full", freeze_feature_encoder=False, epochs=30, batch_size=16,
                        lr_head=5e-3, lr_backbone=5e-3)
#: CI smoke runs (``SMOKE``): the cached-embedding fast path for two epochs; checks that the suite runs end to
#: end, not that the model learns.
SMOKE_TRAINING = dict(mode="head", epochs=2)
#: What notebooks 04-06 train when opened alone, with no checkpoint from 03 and none given in ``CHECKPOINT``, on
#: real data: wav2vec2-base frozen, only the pooling and head trained on its cached frames (one backbone pass over
#: the data, then seconds per epoch). Weaker than 03's fine-tuned default; offline they train 03's offline recipe.
QUICK_TRAINING = dict(preset="base", mode="head", epochs=10)
#: The dataset notebooks 02-06 fetch when opened alone (notebook 01's default).
DEFAULT_DATASET = "esc22"

_TRUE = {"1", "true", "yes", "on"}


def colab_url(name: str) -> str:
    """Open-in-Colab link of ``notebooks/<name>``."""
    return f"https://colab.research.google.com/github/{REPO}/blob/{BRANCH}/notebooks/{name}"


def github_url(name: str) -> str:
    return f"https://github.com/{REPO}/blob/{BRANCH}/notebooks/{name}"


def badge_row(name: str) -> str:
    """The markdown badge row at the top of ``notebooks/<name>``."""
    return (
        f"[![Open In Colab](https://colab.research.google.com/assets/colab-badge.svg)]({colab_url(name)}) "
        f"[![View on GitHub](https://img.shields.io/badge/view%20on-GitHub-181717?logo=github)]({github_url(name)})"
    )


def offline_requested(offline: bool = False) -> bool:
    """The offline default (synthetic soundscapes, the tiny-fb preset) when asked for in the notebook, by
    ``ASIT_OFFLINE=1``, or in CI (``CI`` set: CI machines have no Kaggle credentials or GPU)."""
    env = os.environ
    return bool(offline) or env.get("ASIT_OFFLINE", "").lower() in _TRUE or bool(env.get("CI"))


def smoke_requested(smoke: bool = False) -> bool:
    """Cut training and evaluation to seconds (``CI`` set, or ``ASIT_SMOKE=1``): checks that everything runs,
    not that it learns."""
    env = os.environ
    return bool(smoke) or env.get("ASIT_SMOKE", "").lower() in _TRUE or bool(env.get("CI"))


@dataclass(frozen=True)
class Workspace:
    """The folders the notebooks share (each notebook reads what the one before it wrote).

    ``root/data/source`` (01: downloaded or synthesised audio) → ``root/data/cache`` (02: decoded 16 kHz clips)
    → ``root/checkpoints/<run>`` (03) → ``root/reports`` (04) ; every figure lands in ``root/figures``.
    """

    root: Path

    @property
    def source(self) -> Path:
        return self.root / "data" / "source"

    @property
    def cache(self) -> Path:
        return self.root / "data" / "cache"

    @property
    def checkpoints(self) -> Path:
        return self.root / "checkpoints"

    @property
    def figures(self) -> Path:
        return self.root / "figures"

    @property
    def reports(self) -> Path:
        return self.root / "reports"

    def checkpoint(self, run: str) -> Path:
        return self.checkpoints / run

    def save(self, fig, name: str) -> None:
        """Save ``fig`` as ``figures/<name>.png``. (Returns nothing, so a cell ending in ``ws.save(...)`` shows
        the figure once, through the inline backend, not twice.)"""
        from .viz import save_figure

        save_figure(fig, self.figures / f"{name}.png")

    def write_json(self, name: str, data: dict) -> Path:
        """``reports/<name>.json``, written atomically."""
        path = self.reports / f"{name}.json"
        path.parent.mkdir(parents=True, exist_ok=True)
        fd, tmp = tempfile.mkstemp(suffix=".tmp", dir=path.parent)
        with os.fdopen(fd, "w", encoding="utf-8") as f:
            json.dump(data, f, indent=1, default=json_default)
        os.replace(tmp, path)
        return path

    def read_json(self, name: str) -> dict:
        path = self.reports / f"{name}.json"
        if not path.exists():
            raise FileNotFoundError(f"{path}: not found; run the notebook that writes it first")
        return json.loads(path.read_text(encoding="utf-8"))


def checkout_root() -> Path | None:
    """The checkout this package runs from (editable install), or None for an installed wheel."""
    root = Path(__file__).resolve().parent.parent
    return root if (root / "notebooks").is_dir() and (root / "pyproject.toml").is_file() else None


def workspace(work_dir: str | os.PathLike | None = None, use_drive: bool = False) -> Workspace:
    """The shared workspace: ``work_dir`` if given; else in Colab ``/content/asit`` (``MyDrive/asit`` with
    ``use_drive``, see :func:`asit_helpers.colab.workspace_root`), ``outputs/`` in a checkout, ``./asit-work``
    anywhere else."""
    root = workspace_root(work_dir, use_drive)
    if root is None:
        root = checkout_root() / "outputs" if checkout_root() is not None else Path.cwd() / "asit-work"
    root = root.expanduser().resolve()
    root.mkdir(parents=True, exist_ok=True)
    return Workspace(root)


# ---- expected failures, in two lines ---------------------------------------------------------------------------


@contextmanager
def explained(action: str, repo: str | None = None) -> Iterator[None]:
    """Run a cell's step; an expected failure (:func:`asit_helpers.messages.brief`) becomes a :class:`LessonStop`
    (two lines: what failed, what to do), anything else stays a normal traceback.

    Args:
        action: what the step does, as a verb phrase ("download ESC-50 from GitHub").
        repo: the Hub repository it loads, if any.
    """
    try:
        yield
    except LessonStop:
        raise
    except Exception as exc:
        explanation = messages.brief(exc, action=action, repo=repo)
        if explanation is None:
            raise
        raise LessonStop(explanation) from None


# ---- standing alone: rebuild what an earlier notebook would have made -----------------------------------------------


def fetch_source(ws: Workspace, dataset: str = DEFAULT_DATASET, *, offline: bool, smoke: bool = False,
                 clips_per_class: int = 60) -> Path:
    """Notebook 01's step: download ``dataset`` (offline: synthesise soundscapes) under ``ws.source`` and record
    where in ``reports/source.json``, which notebook 02 reads. Downloads are cached: a second call fetches nothing.

    Raises:
        LessonStop: no network, or Kaggle credentials missing or refused (two lines saying what to do).
    """
    from . import sources
    from .synth import make_soundscapes

    if offline:
        source_dir = ws.source / "synth"
        make_soundscapes(source_dir, clips_per_class=6 if smoke else clips_per_class, seed=0)
    else:
        where = "from Kaggle" if "/" in dataset else "from GitHub"
        with explained(f"download {dataset} {where}"):
            source_dir = sources.download(dataset, ws.source)
    ws.write_json("source", {"source": str(source_dir), "dataset": "synthetic" if offline else dataset})
    return source_dir


def _source_ready(ws: Workspace) -> bool:
    path = ws.reports / "source.json"
    return path.exists() and Path(json.loads(path.read_text(encoding="utf-8"))["source"]).is_dir()


def _cache_ready(ws: Workspace) -> bool:
    return (ws.cache / "cache.json").exists()


def _where(ws: Workspace) -> str:
    return f"this workspace ({ws.root})"


def ensure_data(ws: Workspace, upto: str = "cache", *, offline: bool, smoke: bool = False,
                dataset: str = DEFAULT_DATASET, say: Callable[[str], None] = print) -> None:
    """Make sure the workspace holds notebook 01's audio (``upto="source"``) and, with ``upto="cache"``, notebook
    02's cache; whatever is missing (a notebook opened alone in a fresh runtime) is rebuilt now, and it says so.
    """
    if upto not in ("source", "cache"):
        raise ValueError(f"upto must be 'source' or 'cache', got {upto!r}")
    if upto == "cache" and _cache_ready(ws):
        return
    import time

    started = time.perf_counter()
    if not _source_ready(ws):
        what = "synthesising the soundscapes" if offline else f"downloading {dataset}"
        say(f"No audio from notebook 01 in {_where(ws)}: {what} now, as notebook 01 does.")
        fetch_source(ws, dataset, offline=offline, smoke=smoke)
    if upto == "cache":
        from .data import preprocess

        say(f"No cache from notebook 02 in {_where(ws)}: decoding it now, as notebook 02 does.")
        source = json.loads((ws.reports / "source.json").read_text(encoding="utf-8"))["source"]
        preprocess(source, ws.cache, workers=2, seed=0, progress=False)
    say(f"Data ready in {time.perf_counter() - started:.0f} s.")


def _checkpoint_or_stop(path: str | os.PathLike) -> str:
    if not (Path(path) / "config.json").is_file():
        raise LessonStop(Explanation(
            f"CHECKPOINT = {str(path)!r} is not a checkpoint folder (no config.json in it).",
            "Point CHECKPOINT at a folder notebook 03 or `asit train` wrote (under checkpoints/), or set it to None.",
        ))
    return str(path)


def ensure_checkpoint(ws: Workspace, checkpoint: str | os.PathLike | None = None, *, offline: bool,
                      smoke: bool = False, say: Callable[[str], None] = print) -> str:
    """The checkpoint notebooks 04-06 use, and the cache they test it on (:func:`ensure_data`).

    ``checkpoint`` if given; else the one notebook 03 recorded in ``reports/run.json``; else (a notebook opened
    alone) the quick recipe is trained now (:data:`OFFLINE_TRAINING` offline, :data:`QUICK_TRAINING` on real
    data; :data:`SMOKE_TRAINING` on top with ``smoke``) and recorded there too, so the next notebook reuses it.
    """
    ensure_data(ws, "cache", offline=offline, smoke=smoke, say=say)
    if checkpoint is not None:
        return _checkpoint_or_stop(checkpoint)
    run = ws.reports / "run.json"
    if run.exists():
        recorded = json.loads(run.read_text(encoding="utf-8"))["checkpoint"]
        if (Path(recorded) / "config.json").is_file():
            return recorded
    from .train import train

    settings = dict(OFFLINE_TRAINING if offline else QUICK_TRAINING)
    settings.update(SMOKE_TRAINING if smoke else {})
    # mode and epochs may be left to the preset's own recipe (train.PRESETS): name them only when set here
    shown = [str(settings[k]) + (" epochs" if k == "epochs" else "") for k in ("preset", "mode", "epochs") if k in settings]
    name = "quick-" + "-".join(str(settings[k]) for k in ("preset", "mode", "epochs") if k in settings)
    say(f"No checkpoint from notebook 03 in {_where(ws)} and CHECKPOINT is not set: training the quick recipe "
        f"now ({', '.join(shown)}). To skip this, run 03 with "
        "USE_DRIVE = True first, or set CHECKPOINT.")
    check_backbone(settings["preset"], offline=offline)
    with explained("train the quick recipe", repo=_hub_repo(settings["preset"])):
        result = train(ws.cache, ws.checkpoint(name), resume=True, **settings)
    ws.write_json("run", {"checkpoint": str(result.checkpoint), "settings": settings, "quick_recipe": True})
    say(f"Quick recipe trained in {result.seconds:.0f} s -> {result.checkpoint}")
    return str(result.checkpoint)


def _hub_repo(preset: str) -> str | None:
    """The Hub repository a preset loads its backbone from, or None (random init or a local folder)."""
    from .model import BASE_CHECKPOINT, PRESETS

    if preset == "base":
        return BASE_CHECKPOINT
    if preset in PRESETS or Path(preset).exists():
        return None
    return preset


def check_backbone(preset: str, *, offline: bool) -> None:
    """Before a long wait, fail in two lines (:class:`LessonStop`) if ``preset``'s backbone must come from a
    Hugging Face Hub this runtime cannot reach (rather than after ~35 s of retried requests); the same check
    ``train`` makes (:func:`asit_helpers.runtime.require_hub_model`), said for a notebook."""
    from .messages import ExpectedError, HubUnavailableError
    from .runtime import require_hub_model

    repo = None if offline else _hub_repo(preset)
    if repo is None:
        return
    try:
        require_hub_model(repo)
    except HubUnavailableError:
        raise LessonStop(messages.brief_hub_unavailable(repo)) from None
    except ExpectedError as exc:  # e.g. no such model on the Hub
        raise LessonStop(Explanation(str(exc).splitlines()[0].removeprefix("error: "),
                                     'Set PRESET to a Hub id (e.g. "facebook/wav2vec2-base"), "base", or '
                                     'OFFLINE = True.')) from None


# ---- what a lesson says about its own run (issue 20): the settings it trains with, the model's frames, the data --


#: What the offline recipe scored when it was measured (the figures in :data:`OFFLINE_TRAINING`'s comment), for
#: the "you should see about" line of the offline box; a run lands near them, not on them.
OFFLINE_MEASURED = dict(accuracy=0.968, macro_f1=0.967, attention_in_event=0.98, chance=0.24,
                        how="`make demo` on a fresh clone, the same 1,320-clip cache, 2026-12-01")
#: The parameters cell's names of the settings that ``training_settings`` reports on.
_PARAMETER_NAMES = {"preset": "PRESET", "pooling": "POOLING", "mode": "MODE", "epochs": "EPOCHS",
                    "batch_size": "BATCH_SIZE"}


def training_settings(*, offline: bool, smoke: bool, **chosen) -> tuple[dict, list[str]]:
    """Notebook 03's training settings, and one sentence for every value the run chose instead of you.

    ``chosen`` holds the parameters cell's values (``preset``, ``pooling``, ``mode``, ``epochs``, ``batch_size``);
    ``None`` means "the recipe". The recipe is the preset's own (``train.PRESETS``), except for the offline preset,
    which the lessons train with the shorter demo recipe whose results were measured (:data:`OFFLINE_TRAINING`).
    Offline, a preset that needs the Hub becomes the offline preset; every value you set yourself is kept.
    Smoke runs cut training to :data:`SMOKE_TRAINING` and say so.
    """
    from .train import PRESETS, TrainArgs

    settings = dict(chosen)
    notes = []
    if offline and not PRESETS.get(settings.get("preset"), PRESETS["base"]).offline:
        notes.append(f"OFFLINE: PRESET {settings.get('preset')!r} needs the Hugging Face Hub, so this run trains "
                     f"{OFFLINE_TRAINING['preset']!r} (a tiny wav2vec2 trained from scratch) instead")
        settings["preset"] = OFFLINE_TRAINING["preset"]
    if settings["preset"] == OFFLINE_TRAINING["preset"]:
        recipe, source = {k: v for k, v in OFFLINE_TRAINING.items() if k != "preset"}, "the offline demo recipe"
    else:
        recipe, source = TrainArgs.for_preset(settings["preset"]).to_dict(), f"the {settings['preset']!r} recipe"
        recipe = {k: v for k, v in recipe.items() if k in _PARAMETER_NAMES and k != "preset"}
    for key, value in recipe.items():
        if settings.get(key) is None:
            settings[key] = value
            if key in _PARAMETER_NAMES:
                notes.append(f"{_PARAMETER_NAMES[key]} = None: {value!r}, {source}")
    # what train() will still take from the preset's own recipe: said, because it changes how the curves read
    # (mixup: training accuracy is measured on mixed clips)
    extra = {k: v for k, v in PRESETS.get(settings["preset"], PRESETS["base"]).recipe.items() if k not in settings}
    if extra:
        notes.append(f"also from the {settings['preset']!r} preset's recipe: "
                     + ", ".join(f"{k}={v!r}" for k, v in extra.items()))
    if smoke:
        for key, value in SMOKE_TRAINING.items():
            if settings.get(key) != value:
                notes.append(f"SMOKE: {_PARAMETER_NAMES.get(key, key)} {settings.get(key)!r} -> {value!r} "
                             "(seconds-long run: it checks that everything runs, not that the model learns)")
                settings[key] = value
    return settings, notes


def _backbone_config(model_or_preset):
    from .model import TINY_BACKBONE, TINY_FB_BACKBONE, BASE_CHECKPOINT

    if hasattr(model_or_preset, "config"):
        return model_or_preset.config.backbone_config
    if hasattr(model_or_preset, "backbone_config"):
        return model_or_preset.backbone_config
    from transformers import AutoConfig, Wav2Vec2Config

    tables = {"tiny": TINY_BACKBONE, "tiny-fb": TINY_FB_BACKBONE, "base-random": {}}
    if model_or_preset in tables:
        return Wav2Vec2Config(**tables[model_or_preset])
    return AutoConfig.from_pretrained(BASE_CHECKPOINT if model_or_preset == "base" else str(model_or_preset))


def frame_facts(model_or_preset, seconds: float = 5.0, sr: int = 16000) -> dict:
    """What a backbone makes of a clip, computed from its configuration (a loaded model, an ``AsitConfig`` or a
    preset name): convolutions, samples between frames (hop), samples one frame's convolutions see (receptive
    field), frames per ``seconds`` of audio, the first frame's centre, the frame vector's size, transformer layers.
    """
    cfg = _backbone_config(model_or_preset)
    kernels, strides = [int(k) for k in cfg.conv_kernel], [int(s) for s in cfg.conv_stride]
    field, hop, length = 1, 1, int(round(seconds * sr))
    for k, s in zip(kernels, strides):
        field += (k - 1) * hop
        hop *= s
        length = (length - k) // s + 1  # the convolution's output length (no padding), as the backbone computes it
    return {"convolutions": len(kernels), "kernels": kernels, "strides": strides, "hop_samples": hop,
            "hop_ms": 1000 * hop / sr, "field_samples": field, "field_ms": 1000 * field / sr, "seconds": seconds,
            "frames": length, "first_centre_ms": 1000 * field / 2 / sr, "hidden_size": int(cfg.hidden_size),
            "transformer_layers": int(cfg.num_hidden_layers)}


def describe_frames(model_or_preset, seconds: float = 5.0) -> str:
    """:func:`frame_facts` as the sentences notebook 03 prints."""
    f = frame_facts(model_or_preset, seconds)
    return (
        f"{f['convolutions']} convolutions (kernels {f['kernels']}, strides {f['strides']}) read the waveform and "
        f"emit one {f['hidden_size']}-number frame every {f['hop_samples']} samples = {f['hop_ms']:g} ms;\n"
        f"each frame's convolutions see {f['field_samples']} samples = {f['field_ms']:g} ms of audio (the receptive "
        f"field), so neighbouring frames overlap by {f['field_ms'] - f['hop_ms']:g} ms;\n"
        f"a {f['seconds']:g} s clip becomes {f['frames']} frames; frame t is centred at "
        f"t x {f['hop_ms']:g} ms + {f['first_centre_ms']:g} ms;\n"
        f"then {f['transformer_layers']} transformer layers let every frame look at every other one: after them a "
        "frame's vector can carry evidence from anywhere in the clip."
    )


def about_this_run(offline: bool, *, demo: bool = False):
    """The short box at the top of notebooks 03-06: what the data and the backbone of this run are, and what to
    expect from them (published figures quoted as published, with their source). Returns IPython Markdown."""
    from IPython.display import Markdown

    m = OFFLINE_MEASURED
    if offline:
        text = (
            "**What this run is: the offline demo.** The clips are *synthetic*: 22 procedurally generated event "
            "types, each mixed once, louder than the background, into steady noise (white, pink, brown or muffled, "
            "some with slow level swells; no second sound, no loud distractor). The "
            f"backbone is `{OFFLINE_TRAINING['preset']}`, a miniature wav2vec2 trained from scratch on these clips "
            "(its first convolution starts as a filterbank, the rest at random), not the pretrained `facebook/wav2vec2-base`. The event is always the one changing, "
            "loud part of a steady clip, and each class comes from one generator, so the task is easy: high "
            "accuracy and attention inside the event are expected here, and say little about real recordings."
            f"\n\n**You should see about** (measured with the offline recipe, {m['how']}): test accuracy "
            f"{m['accuracy']:.2f}, macro-F1 {m['macro_f1']:.2f} (chance {1 / 22:.2f}), {m['attention_in_event']:.2f} of "
            f"the pooling weight inside the true event window (chance {m['chance']:.2f}). A `SMOKE` run trains for "
            "seconds and stays near chance: it checks that the lesson runs, not that the model learns."
        )
        if demo:
            text += (
                "\n\n**This model has only heard synthetic sounds.** Real ones (your voice, a clap, a real dog) "
                "get one of its 22 labels anyway, often with a high score: a softmax always picks a class, and "
                "its score is not a calibrated probability. Treat its answers on the microphone as a lesson in "
                "what a model does outside its training data, not as a classifier."
            )
    else:
        text = (
            "**What this run is: the real path.** ESC-22 (22 classes of ESC-50's real 5 s recordings, split by "
            "ESC-50's official folds) with the pretrained `facebook/wav2vec2-base` (speech, 960 h of LibriSpeech). "
            "What to expect, from published figures (on all 50 ESC-50 classes, so not directly comparable, and not "
            "ASiT's measurements): a frozen wav2vec2-base with a linear probe scores about 42-56 % (HEAR 2021, "
            "ARCH and X-ARES benchmark reports); fine-tuning reaches about 71 %; models pretrained on AudioSet do "
            "far better (AST 95.6 %, Gong et al. 2021; BEATs 98.1 %, Chen et al. 2022). ESC-22 has fewer classes "
            "(chance 1/22), so expect more than those figures but well below the synthetic demo."
        )
    return Markdown("> " + text.replace("\n", "\n> "))


def pick_examples(clips, n: int = 4) -> list[tuple[int, str]]:
    """Rows of ``clips`` (a DataFrame with ``label``, ``predicted`` and, for synthetic data, ``event_onset_s`` /
    ``event_offset_s``) worth plotting, each with the reason it was picked: the most confident mistake (if the
    model made any), a texture (a clip of the class with the longest events), the shortest event, then clips of
    other classes. One clip per class.
    """
    import numpy as np

    picked: list[tuple[int, str]] = []
    used: set[str] = set()

    def add(row, why):
        if row is not None and len(picked) < n and clips.loc[row, "label"] not in used:
            picked.append((row, why))
            used.add(clips.loc[row, "label"])

    wrong = clips[clips["label"] != clips["predicted"]]
    if len(wrong):
        by_score = wrong.sort_values("score", ascending=False) if "score" in wrong else wrong
        add(by_score.index[0], "a mistake")
    if "event_onset_s" in clips and np.isfinite(clips["event_onset_s"].to_numpy(dtype=float)).any():
        duration = (clips["event_offset_s"] - clips["event_onset_s"]).astype(float)
        longest = duration.groupby(clips["label"]).mean().idxmax()
        add(duration[clips["label"] == longest].idxmax(), f"a texture ({longest}: the longest events)")
        add(duration[~clips["label"].isin(used)].idxmin(), "the shortest event")
    for row in clips.index:
        add(row, "correct" if clips.loc[row, "label"] == clips.loc[row, "predicted"] else "a mistake")
    return picked


def snr_table(report):
    """``report.by_snr`` for reading: SNR levels as "3.1 to 8.0 dB", clips right out of clips, and how much one
    clip moves the accuracy at that level (differences smaller than a clip or two are noise, not a trend)."""
    table = report.by_snr.copy()
    table["snr_db"] = [f"{lo:.1f} dB" if lo == hi else f"{name} dB"
                       for name, lo, hi in zip(table["snr_db"], table["snr_db_low"], table["snr_db_high"])]
    table = table.drop(columns=["snr_db_low", "snr_db_high"])
    table["right"] = (table["accuracy"] * table["n"]).round().astype(int).astype(str) + " of " + table["n"].astype(str)
    table["one clip"] = 1 / table["n"]
    return table.set_index("snr_db").round(3)


def imbalanced_view(report, *, small: int = 1):
    """Accuracy and macro-F1 on the whole split and on an imbalanced subset of the same predictions: every clip of
    the better-recognised half of the classes, and only ``small`` clip(s) of each other class, its mistakes first.
    On balanced data the two scores agree; on the subset accuracy follows the big classes while macro-F1 still
    counts every class once. (The subset is built to show the difference, not to measure the model.)"""
    import numpy as np
    import pandas as pd

    from .evaluate import classification_metrics

    clips = report.clips
    recall = report.per_class["recall"].sort_values(ascending=False)
    big = set(recall.index[: (len(recall) + 1) // 2])
    keep = clips[clips["label"].isin(big)]
    others = clips[~clips["label"].isin(big)]
    rest = others.assign(_right=others["label"] == others["predicted"]).sort_values("_right", kind="stable")
    rest = rest.groupby("label", group_keys=False).head(small).drop(columns="_right")
    ids = {name: i for i, name in enumerate(report.labels)}
    rows = {}
    for name, part in (("whole split (balanced)", clips), ("imbalanced subset", pd.concat([keep, rest]))):
        m = classification_metrics(part["label"].map(ids).to_numpy(), part["predicted"].map(ids).to_numpy(),
                                   report.labels)
        counts = part["label"].value_counts()
        rows[name] = {"clips": len(part), "clips per class": f"{counts.min()}-{counts.max()}",
                      "accuracy": m["accuracy"], "macro_f1": m["macro_f1"]}
    return pd.DataFrame(rows).T.assign(accuracy=lambda d: d["accuracy"].astype(float).round(3),
                                        macro_f1=lambda d: d["macro_f1"].astype(float).round(3))


def show_tree(root, *, files_per_folder: int = 1, folders_per_level: int = 2) -> str:
    """The layout of a dataset folder, abbreviated: every top-level folder, then a few folders per level and a
    few files per folder, each shortened part saying how much it leaves out (``Category/class/clip.wav`` trees
    read at a glance)."""
    from pathlib import Path

    root = Path(root)
    lines = [f"{root.name}/"]

    def walk(folder: Path, depth: int) -> None:
        entries = sorted(folder.iterdir(), key=lambda p: (p.is_file(), p.name))
        dirs, files = [p for p in entries if p.is_dir()], [p for p in entries if p.is_file()]
        pad = "    " * depth
        shown = len(dirs) if depth == 1 else folders_per_level
        for d in dirs[:shown]:
            count = sum(1 for p in d.rglob("*") if p.is_file())
            lines.append(f"{pad}{d.name}/  ({count} files)")
            walk(d, depth + 1)
        if len(dirs) > shown:
            lines.append(f"{pad}... and {len(dirs) - shown} more: {', '.join(d.name for d in dirs[shown:])}")
        for f in files[:files_per_folder]:
            lines.append(f"{pad}{f.name}")
        if len(files) > files_per_folder:
            lines.append(f"{pad}... and {len(files) - files_per_folder} more files")

    walk(root, 1)
    return "\n".join(lines)


#: What each manifest column records (notebook 01 prints the ones a manifest has).
MANIFEST_COLUMNS = {
    "path": "where the audio file is",
    "rel_path": "the same path, relative to the dataset folder",
    "label": "the class (the folder name, or the dataset's metadata)",
    "category": "the class's category (the folder above it)",
    "group": "clips cut from one recording share a group; a split never separates a group",
    "fold": "the dataset's own fold (ESC-50: 1-5), used for the split when present",
    "event_onset_s": "synthetic only: when the event starts (s)",
    "event_offset_s": "synthetic only: when it ends (s)",
    "snr_db": "synthetic only: the event's level over the background (dB)",
    "duration_s": "the file's duration (s)",
    "split": "train, val or test",
}


def describe_manifest(manifest):
    """One row per manifest column: what it records and the first clip's value."""
    import pandas as pd

    first = manifest.iloc[0]
    return pd.DataFrame({"records": [MANIFEST_COLUMNS.get(c, "") for c in manifest.columns],
                         "first clip": [first[c] for c in manifest.columns]}, index=manifest.columns)


@dataclass
class DistractorCheck:
    """What :func:`distractor_check` measured: the same clips without and with one loud distractor sound.

    Attributes:
        table: rows "plain: in the event", "distractors: in the event", "distractors: on the distractors";
            columns the four localisers (``evaluate.LOCALISERS``: share of weight), ``accuracy`` and ``clips``.
        reports: ``{"plain": EvalReport, "distractors": EvalReport}``.
        cache: the distractor set's cache folder (for plotting one of its clips).
    """

    table: Any
    reports: dict
    cache: Path

    def example(self, model) -> dict:
        """One distractor clip for a plot, ``{"why", "samples", "pred", "events", "distractors"}``: a clip whose
        loudest frame is on the distractor (the case that tells the detectors apart), correctly classified if any
        is."""
        import numpy as np

        from .cache import AudioCache
        from .inference import predict
        from .synth import parse_spans

        clips = self.reports["distractors"].clips
        fooled = clips[clips["distractor_loudest_frame"] > 0.5]
        pool = fooled if len(fooled) else clips
        row = pool.sort_values("correct", ascending=False, kind="stable").iloc[0]
        cache = AudioCache.open(self.cache)
        samples = np.asarray(cache.audio(int(row["index"])))[: int(row["length"])]
        why = "its loudest frame is on the distractor" if len(fooled) else "a distractor clip"
        return {"why": f"{why}: true {row['label']}, predicted {row['predicted']}", "samples": samples,
                "pred": predict(model, samples), "events": [(row["event_onset_s"], row["event_offset_s"])],
                "distractors": [tuple(span) for span in parse_spans(row["distractors"])]}

    def reading(self) -> str:
        """Three sentences written from this run's numbers."""
        t = self.table
        plain, inside, on = (t.loc[r] for r in t.index)
        beats = [name for name in ("energy", "loudest_frame") if inside["attention"] > inside[name]]
        return (
            f"Plain clips: attention {plain['attention']:.2f} in the event, energy {plain['energy']:.2f}, the loudest "
            f"frame {plain['loudest_frame']:.2f} (chance {plain['uniform']:.2f}): here loudness alone localises "
            f"{'as well as' if plain['loudest_frame'] >= plain['attention'] else 'nearly as well as'} attention.\n"
            f"Same clips with one loud distractor: the loudest frame lands on the distractor in "
            f"{on['loudest_frame']:.0%} of clips; attention keeps {inside['attention']:.2f} in the event and puts "
            f"{on['attention']:.2f} on the distractor (energy: {inside['energy']:.2f} and {on['energy']:.2f}).\n"
            + (f"So on this model attention beats {' and '.join(n.replace('_', ' ') for n in beats)} once loudness "
               "points elsewhere: it localises more than loudness." if beats else
               "So on this model attention does not beat the energy detectors: its localisation may be loudness.")
            + f" Accuracy: {plain['accuracy']:.2f} plain, {inside['accuracy']:.2f} with distractors.")


def distractor_check(ws: Workspace, model, *, clips_per_class: int = 5, seed: int = 7, smoke: bool = False
                     ) -> DistractorCheck:
    """Localisation on the same synthetic clips without and with one loud non-target sound each (``asit synth
    --distractors 1``: a noise burst, clatter or thump 0-10 dB above the event, outside it): attention against the
    energy detectors where they must part. ``seed`` differs from the training data's (0). Resumable: generated and
    decoded once into ``ws.root/data/localisation_*``. Needs a model trained on the synthetic classes."""
    import pandas as pd

    from .data import preprocess
    from .evaluate import LOCALISERS, evaluate
    from .synth import make_soundscapes

    labels = [model.config.id2label[i] for i in range(model.config.num_labels)]
    reports, rows, cache_dir = {}, {}, None
    for name, distractors in (("plain", 0), ("distractors", 1)):
        folder = ws.root / "data" / f"localisation_{name}"
        make_soundscapes(folder / "source", clips_per_class=1 if smoke else clips_per_class, seed=seed,
                         classes=labels, distractors=distractors, progress=False)
        cache_dir = folder / "cache"
        preprocess(folder / "source", cache_dir, workers=1, progress=False)
        report = reports[name] = evaluate(model, cache_dir, split=None, progress=False)
        places = [("in the event", report.localisation)]
        if distractors:
            places.append(("on the distractors", report.localisation_on_distractors))
        for where, loc in places:
            rows[f"{name}: {where}"] = {**{k: loc[k] for k in LOCALISERS}, "accuracy": report.accuracy,
                                        "clips": len(report.clips)}
    return DistractorCheck(pd.DataFrame.from_dict(rows, orient="index"), reports, cache_dir)
