"""CPU latency of one 5 s clip: fp32 eager (the reference) against faster variants, with top-1 agreement.

    python bench/latency.py                 # table; writes bench/results/latency.json
    python bench/latency.py --json          # the JSON on stdout instead of the table
    python bench/latency.py --quick         # fewer repetitions, only fp32 / bf16 / bf16-autocast (`make bench`)
    python bench/latency.py --compile       # also torch.compile (adds minutes of compilation on 2 cores)

Model: a wav2vec2-base-sized ASiT (random-initialised backbone, the real compute) whose attention pooling and head
were trained on synthetic soundscapes, so that "top-1 agreement" compares real decisions rather than noise. It is
built once through the package's own pipeline (``synth.make_soundscapes`` → ``data.preprocess`` →
``train.train(mode="head")``, the cached-embedding fast path) and kept in ``.cache/asit-bench/`` (or pass
``--checkpoint DIR``). ``--train-clips-per-class`` (default 40: 880 clips, ~12 min once on 2 cores) sets how much
it learns from; with 10 (the default until 2026-12-01) the head overfit 160 training clips (validation accuracy
0.44, val loss 2.92 against chance's 3.09), and fp32's own decisions flipped under white noise 50 dB below the
clips (``fp32_stability`` 0.982): such a model's near-ties say nothing about a precision. With 40 the validation
accuracy is 0.60 and fp32 keeps every decision under that noise; ``fp32_stability`` shows it for every run.

Agreement set: ``--agreement-clips`` (default 110) held-out synthetic clips rendered with a dataset seed the
training data never used, five per class. For each variant: top-1 agreement with fp32, the largest absolute
difference of any class probability, and accuracy against the true labels.

Variants (each only on what this machine can run; a variant that cannot is recorded with the reason):

- ``fp32``: eager float32, ``inference.classify_batch(..., precision="fp32")``: the reference.
- ``bf16``: ``predict``'s default on CPUs with native bf16 (``classify_batch(..., precision="bf16")``): the cached
  copy of :mod:`asit_helpers.fast_inference` (bf16 linear weights; the conv front end and the positional conv, its
  weight norm folded, as matrix products) run under autocast (norms, residual stream, pooling, head in float32).
- ``bf16-prev``: the previous default: bf16 linear/conv weights only (oneDNN convolutions, weight norm recomputed
  per call), under autocast.
- ``bf16-unfused``: the ``bf16`` copy with the original transformer layers under autocast instead of its fused
  layers (one q/k/v product, bias and GELU fused into oneDNN's products): what the fusion buys.
- ``bf16-pure``: the whole backbone in bf16 (weights and activations, residual stream included).
- ``bf16-autocast``: ``torch.autocast("cpu", torch.bfloat16)`` around the fp32 model (re-casts weights per call).
- ``int8-dynamic``: ``torch.ao.quantization.quantize_dynamic`` on every ``nn.Linear`` (int8 weights, activations
  quantised per call; the conv front end stays fp32). Deprecated in torch 2.10+, still present in 2.13.
- ``bf16-front32``: the ``bf16`` copy with its conv front end in float32 (the rest as ``bf16``): what the front
  end's chain of six bf16 products costs in agreement, and what float32 there costs in time.
- ``bf16-compile`` (``--compile``): the ``bf16`` copy's backbone under ``torch.compile`` (inductor; under compile
  the copy traces plain ``F.linear`` + GELU instead of oneDNN's fused op, which inductor cannot lower).

Two checks beside the agreement, so that a reader can judge what "agreement >= 0.99" on this model means:

- ``fp32_stability``: fp32 on the agreement clips with white noise ``--noise-db`` (default -50 dB) below each
  clip's own level added: how many of fp32's own decisions a change of the input that moves its logits about as
  much as bf16 does (compare ``logit_rel_err``, the relative error of the centred logits) flips. Each variant's
  ``agreement_on_stable`` counts only the clips whose fp32 decision survived the noise.
- ``trained_model``: the ``bf16`` path against fp32 on a TRAINED model (``--trained-checkpoint``; default the
  tiny-fb that ``bench/train.py`` trains by its own recipe for its partial-mode part, ``.cache/asit-bench/
  partial-init-tiny-fb``, used only when it exists): its agreement, largest probability difference and margins.
  It is small (not the base-sized compute), so it is reported beside the random model's figure, never instead:
  the ``best`` block is always chosen on the base-sized agreement model.

Floor: ``floor_s`` = the FLOPs of one clip (counted with ``FlopCounterMode``) / the best large bf16
matrix-product rate measured in this run; the result's ``best`` block puts the fastest variant with top-1 agreement
>= 0.99 beside it (``p50_over_floor``, and its speed-up over fp32), at batch 1 and batch 8.

Timing: the variants take turns round-robin, so load from other processes hits them alike and the ratios stay
fair; each turn is ``--burst`` calls (default 2) of which the last is timed, so that a timed call follows one of its
own variant's, as every call but the first does in a process that predicts repeatedly (with ``--burst 1`` each timed
call follows eight other models' calls, the state no user's process is in: on 2026-12-01 the profile below timed
the bf16 path alone at 0.201 s per clip in the same run whose interleaved p50 was 0.263 s). p50/p95 over the rounds,
at batch 1 and batch 8. ``--profile``
(default on) breaks the fastest qualifying variant's batch-1 time down by module, next to each module's counted
FLOPs and the time those FLOPs would take at this machine's measured bf16 matrix-product rate.
"""

from __future__ import annotations

import argparse
import copy
import re
import sys
import time
import warnings
from pathlib import Path
from typing import Callable

sys.path.insert(0, str(Path(__file__).resolve().parent))
from _common import RESULTS, ROOT, latency_stats, machine_info, write_json  # noqa: E402

import numpy as np  # noqa: E402
import torch  # noqa: E402
from torch import nn  # noqa: E402

from asit_helpers.inference import bf16_copy, classify_batch  # noqa: E402
from asit_helpers.runtime import cpu_supports_bf16  # noqa: E402
from asit_helpers.model import AsitForAudioClassification, load_model  # noqa: E402

CLIP_S = 5.0
SR = 16000
TARGET_P50_S = 0.12
MIN_AGREEMENT = 0.99
BENCH_CACHE = ROOT / ".cache" / "asit-bench"  # holds the agreement model, agreement-base-random-<clips per class>
DEFAULT_TRAINED_DIR = BENCH_CACHE / "partial-init-tiny-fb"  # bench/train.py's init backbone
AGREEMENT_SEED = 20261124  # training data uses dataset seed 0: these clips are never seen in training


# -- the model and the clips ----------------------------------------------------------------------------------------

def build_agreement_model(out: Path, clips_per_class: int, epochs: int) -> dict:
    """Train pooling + head of a base-random ASiT on synthetic soundscapes with the package's own pipeline."""
    from asit_helpers.data import preprocess
    from asit_helpers.synth import make_soundscapes
    from asit_helpers.train import train

    work = out.with_name(out.name + "-data")
    t0 = time.perf_counter()
    make_soundscapes(work / "synth", clips_per_class=clips_per_class, seed=0, progress=False)
    preprocess(work / "synth", work / "cache", workers=1, seed=0, progress=False)
    result = train(work / "cache", out, preset="base-random", mode="head", epochs=epochs, augment=None,
                   overwrite=True, device="cpu", progress=False, batch_size=32, lr_head=3e-3)
    best = max(result.history, key=lambda h: h.get("val_macro_f1", 0.0))
    return {"built_s": round(time.perf_counter() - t0, 1), "clips_per_class": clips_per_class, "epochs": epochs,
            "val_accuracy": best.get("val_accuracy"), "val_macro_f1": best.get("val_macro_f1")}


def agreement_clips(model: AsitForAudioClassification, n: int) -> tuple[torch.Tensor, np.ndarray]:
    """``n`` held-out synthetic clips, normalised as predict does: input_values `(n, 80000)`, true label ids `(n,)`."""
    from asit_helpers.synth import SYNTH_CLASSES, clip_seed, render_clip

    label2id = {str(k): int(v) for k, v in model.config.label2id.items()}
    names = [c.name for c in SYNTH_CLASSES if c.name in label2id]
    if not names:
        raise SystemExit(f"the model's labels {sorted(label2id)[:5]}... are not synthetic classes: use a model "
                         "trained on synth.make_soundscapes (or drop --checkpoint)")
    clips, labels = [], []
    for i in range(n):
        cls = i % len(names)
        audio, _ = render_clip(names[cls], clip_seed(AGREEMENT_SEED, cls, i // len(names)), seconds=CLIP_S)
        clips.append(audio)
        labels.append(label2id[names[cls]])
    batch = model.feature_extractor()(clips, sampling_rate=SR, return_tensors="pt")
    return batch["input_values"], np.asarray(labels)


# -- the variants ---------------------------------------------------------------------------------------------------

Forward = Callable[[torch.Tensor], torch.Tensor]  # input_values (B, S) -> logits (B, C)


def make_variants(
    model: AsitForAudioClassification, want_compile: bool
) -> tuple[dict[str, Forward], dict[str, str], dict[str, nn.Module]]:
    """Name → forward function; name → why a variant was skipped or what to know about it; name → the model whose
    backbone the variant runs (for the profile's hooks)."""
    variants: dict[str, Forward] = {}
    notes: dict[str, str] = {}
    runners: dict[str, nn.Module] = {"fp32": model, "bf16-autocast": model}
    variants["fp32"] = lambda x: classify_batch(model, x, None, precision="fp32").logits

    if cpu_supports_bf16():
        from asit_helpers.fast_inference import build_fast_copy

        variants["bf16"] = lambda x: classify_batch(model, x, None, precision="bf16").logits
        runners["bf16"] = runners["bf16-compile"] = bf16_copy(model)
        prev = build_fast_copy(model, rearrange=False)

        def prev_bf16(x):  # the fast path before issue 13: bf16 weights, oneDNN convolutions, autocast
            with torch.autocast("cpu", dtype=torch.bfloat16):
                hidden, mask = prev.encode(x)
            return model.classify_hidden(hidden.float(), mask).logits

        variants["bf16-prev"] = prev_bf16
        runners["bf16-prev"] = prev
        unfused = build_fast_copy(model, fuse_layers=False)

        def unfused_bf16(x):  # the fast copy with the original transformer layers under autocast (issue 13 lever)
            with torch.autocast("cpu", dtype=torch.bfloat16):
                hidden, mask = unfused.encode(x)
            return model.classify_hidden(hidden.float(), mask).logits

        variants["bf16-unfused"] = unfused_bf16
        runners["bf16-unfused"] = unfused
        from asit_helpers.fast_inference import MatmulFeatureEncoder

        front32 = build_fast_copy(model)
        front32.backbone.feature_extractor = MatmulFeatureEncoder(model.backbone.feature_extractor, torch.float32)

        def front32_bf16(x):  # the bf16 copy with a float32 conv front end (the issue-13 diagnosis in numbers)
            with torch.autocast("cpu", dtype=torch.bfloat16):
                hidden, mask = front32.encode(x)
            return model.classify_hidden(hidden.float(), mask).logits

        variants["bf16-front32"] = front32_bf16
        runners["bf16-front32"] = front32

        with torch.inference_mode(False), torch.no_grad():
            pure = copy.deepcopy(model).to(torch.bfloat16).eval()

        def pure_bf16(x):  # every weight and activation in bf16, residual stream included
            hidden, mask = pure.encode(x.to(torch.bfloat16))
            return model.classify_hidden(hidden.float(), mask).logits

        variants["bf16-pure"] = pure_bf16
        runners["bf16-pure"] = pure

        def autocast(x):
            with torch.autocast("cpu", dtype=torch.bfloat16):
                return model(x).logits.float()

        variants["bf16-autocast"] = autocast
    else:
        notes["bf16"] = notes["bf16-autocast"] = "skipped: this CPU has no native bf16 (AVX512-BF16 / AMX)"

    try:
        with warnings.catch_warnings(record=True) as caught:
            warnings.simplefilter("always")
            from torch.ao.quantization import quantize_dynamic

            qmodel = quantize_dynamic(copy.deepcopy(model), {nn.Linear}, dtype=torch.qint8)
        variants["int8-dynamic"] = lambda x: qmodel(x).logits
        runners["int8-dynamic"] = qmodel
        if "bf16" in variants:
            # int8 linears for the transformer, bf16 for the conv front end (which int8 dynamic quantisation
            # leaves in fp32): Wav2Vec2Model.forward's eval-mode steps, spelled out for this experiment only
            conv = bf16_copy(model).backbone.feature_extractor
            qbb = qmodel.backbone

            def hybrid(x):
                with torch.autocast("cpu", dtype=torch.bfloat16):
                    feats = conv(x).float().transpose(1, 2)  # (B, T, 512)
                hidden, _ = qbb.feature_projection(feats)
                hidden = qbb.encoder(hidden).last_hidden_state  # (B, T, 768)
                mask = torch.ones(hidden.shape[:2], dtype=torch.bool)
                return model.classify_hidden(hidden, mask).logits

            variants["int8+bf16-conv"] = hybrid
            runners["int8+bf16-conv"] = qmodel
            notes["int8+bf16-conv"] = "the conv front end from the bf16 copy: the profile's conv row misses it"
        if any("deprecated" in str(w.message) for w in caught):
            notes["int8-dynamic"] = "torch.ao.quantization.quantize_dynamic is deprecated (torchao is its successor)"
    except Exception as exc:  # removed in a later torch: record it, measure the rest
        notes["int8-dynamic"] = f"skipped: {type(exc).__name__}: {exc}"[:300]

    if want_compile and "bf16" in variants:
        fast = bf16_copy(model)
        compiled = torch.compile(fast.backbone)

        def compiled_forward(x):
            # the same autocast the eager bf16 path runs under (the copy keeps some weights in float32)
            with torch.autocast("cpu", dtype=torch.bfloat16):
                hidden = compiled(x).last_hidden_state
            mask = torch.ones(hidden.shape[:2], dtype=torch.bool)
            return model.classify_hidden(hidden.float(), mask).logits

        variants["bf16-compile"] = compiled_forward
    return variants, notes, runners


# -- measuring ------------------------------------------------------------------------------------------------------

@torch.inference_mode()
def interleaved_times(variants: dict[str, Forward], x: torch.Tensor, reps: int, warmup: int,
                      burst: int = 1) -> dict[str, list[float]]:
    """Per-call wall times, the variants taking turns round by round, so slow spells of a shared machine hit all
    alike. Each turn is ``burst`` calls of which only the last is timed: with ``burst=1`` every timed call follows
    the other variants' calls (their memory in the caches and the allocator); with 2 it follows one of its own, as
    each call does in a process that predicts repeatedly."""
    for fn in variants.values():
        for _ in range(warmup):
            fn(x)
    times: dict[str, list[float]] = {name: [] for name in variants}
    for _ in range(reps):
        for name, fn in variants.items():
            for _ in range(burst - 1):
                fn(x)
            t0 = time.perf_counter()
            fn(x)
            times[name].append(time.perf_counter() - t0)
    return times


@torch.inference_mode()
def probabilities(fn: Forward, x: torch.Tensor, batch: int = 8) -> np.ndarray:
    return np.concatenate([torch.softmax(fn(x[i : i + batch]).float(), -1).numpy() for i in range(0, len(x), batch)])


def with_noise(x: torch.Tensor, db: float, seed: int = 0) -> torch.Tensor:
    """``x`` plus white noise ``db`` below each clip's own level (-60 dB: inaudible under any clip)."""
    g = torch.Generator().manual_seed(seed)
    return x + 10 ** (db / 20) * x.std(dim=1, keepdim=True) * torch.randn(x.shape, generator=g)


def logit_error(probs: np.ndarray, ref: np.ndarray) -> float:
    """Median over clips of the relative error of the centred log-probabilities (= centred logits) against ``ref``."""
    def centred(p):
        lp = np.log(np.clip(p, 1e-30, None))
        return lp - lp.mean(axis=1, keepdims=True)
    c, c_ref = centred(probs), centred(ref)
    return float(np.median(np.linalg.norm(c - c_ref, axis=1) / np.linalg.norm(c_ref, axis=1)))


def top2_margins(probs: np.ndarray) -> np.ndarray:
    """Per clip: the top-1 minus the top-2 probability."""
    ranked = np.sort(probs, axis=1)
    return ranked[:, -1] - ranked[:, -2]


def trained_model_check(path: Path, n: int) -> dict:
    """The bf16 path against fp32 on a trained model: agreement, largest probability difference, fp32 margins."""
    trained = load_model(path)
    x, y = agreement_clips(trained, n)
    p32 = probabilities(lambda a: classify_batch(trained, a, None, precision="fp32").logits, x)
    p16 = probabilities(lambda a: classify_batch(trained, a, None, precision="bf16").logits, x)
    margin = top2_margins(p32)
    flips = np.flatnonzero(p16.argmax(1) != p32.argmax(1))
    return {"path": str(path), "backbone": trained.config.backbone_config.model_type,
            "hidden_size": int(trained.config.backbone_config.hidden_size),
            "layers": int(trained.config.backbone_config.num_hidden_layers), "clips": int(n),
            "accuracy_fp32": round(float((p32.argmax(1) == y).mean()), 4),
            "agreement_bf16": round(float(1 - len(flips) / n), 4),
            "max_prob_diff_bf16": round(float(np.abs(p16 - p32).max()), 5),
            "flips": [{"clip": int(i), "fp32_margin": round(float(margin[i]), 4)} for i in flips],
            "fp32_margins": {"median": round(float(np.median(margin)), 4), "below_0.02": int((margin < 0.02).sum()),
                             "below_0.05": int((margin < 0.05).sum())}}


def matmul_gflops(dtype: torch.dtype, n: int = 2048, reps: int = 5, passes: int = 3) -> float:
    """This machine's large matrix-product rate right now (it moves with the load of a shared machine): the best
    of ``passes`` timings of ``reps`` products, so a floor computed from it is never inflated by one slow spell."""
    a, b = torch.randn(n, n).to(dtype), torch.randn(n, n).to(dtype)
    a @ b
    best = 0.0
    for _ in range(passes):
        t0 = time.perf_counter()
        for _ in range(reps):
            a @ b
        best = max(best, 2 * n**3 * reps / (time.perf_counter() - t0) / 1e9)
    return best


PROFILE_GROUPS = ("conv feature encoder", "feature projection", "positional conv", "transformer layers (12)",
                  "pooling + head")


def count_flops(model: AsitForAudioClassification, x: torch.Tensor) -> dict[str, int]:
    """FLOPs of one forward pass of the fp32 model on ``x``, by module group (:data:`PROFILE_GROUPS`).

    Counted under no_grad, since FlopCounterMode breaks weight-norm parametrizations under inference_mode
    (torch 2.13). Keys of the counter are dotted module paths, each counting its children."""
    from torch.utils.flop_counter import FlopCounterMode

    suffixes = {".backbone.feature_extractor": "conv feature encoder",
                ".backbone.feature_projection": "feature projection",
                ".backbone.encoder.pos_conv_embed": "positional conv",
                ".pooling": "pooling + head", ".classifier": "pooling + head"}
    flops = {g: 0 for g in PROFILE_GROUPS}
    with torch.inference_mode(False), torch.no_grad(), FlopCounterMode(display=False) as counter:
        model(x.clone())
    for name, counts in counter.get_flop_counts().items():
        tail = name[name.find("."):] if "." in name else ""
        key = next((g for suf, g in suffixes.items() if tail == suf), None) or (
            "transformer layers (12)" if re.search(r"\.encoder\.layers\.\d+$", name) else None)
        if key:
            flops[key] += sum(counts.values())
    return flops


@torch.inference_mode()
def module_profile(model: AsitForAudioClassification, runner: nn.Module, fn: Forward, x: torch.Tensor, reps: int,
                   gflops_bf16: float) -> dict:
    """Where one batch-1 forward's time goes, by module, against the FLOP floor of each module (its counted FLOPs
    at ``gflops_bf16``, the best large bf16 matrix-product rate measured in this run).

    ``runner`` is the model whose backbone ``fn`` runs (the bf16 copy, the quantised copy, ...); its modules get
    timing hooks. Under torch.compile the hooks see nothing and the time shows up as "other".
    """
    bb = runner.backbone
    groups = {
        "conv feature encoder": [bb.feature_extractor],
        "feature projection": [bb.feature_projection],
        "positional conv": [bb.encoder.pos_conv_embed],
        "transformer layers (12)": list(bb.encoder.layers),
        # the bf16 path runs the fp32 model's pooling + head; the others their runner's: hook both (deduplicated)
        "pooling + head": list({id(m): m for m in (model.pooling, model.classifier, runner.pooling,
                                                   runner.classifier)}.values()),
    }
    spent = {g: 0.0 for g in groups}
    starts: dict[int, float] = {}
    handles = []
    for g, mods in groups.items():
        for m in mods:
            handles.append(m.register_forward_pre_hook(lambda mod, inp: starts.__setitem__(id(mod), time.perf_counter())))
            handles.append(m.register_forward_hook(
                lambda mod, inp, out, g=g: spent.__setitem__(g, spent[g] + time.perf_counter() - starts[id(mod)])))
    total = 0.0
    fn(x)
    for g in spent:
        spent[g] = 0.0
    for _ in range(reps):
        t0 = time.perf_counter()
        fn(x)
        total += time.perf_counter() - t0
    for h in handles:
        h.remove()
    flops = count_flops(model, x)
    rows = []
    for g in groups:
        t = spent[g] / reps
        floor = flops[g] / (gflops_bf16 * 1e9) if gflops_bf16 else None
        rows.append({"module": g, "ms": round(t * 1e3, 2), "share": round(t / (total / reps), 3),
                     "gflop": round(flops[g] / 1e9, 2),
                     "floor_ms_at_measured_bf16": round(floor * 1e3, 2) if floor is not None else None})
    other = total / reps - sum(spent.values()) / reps
    rows.append({"module": "other (normalisation, masks, python)", "ms": round(other * 1e3, 2),
                 "share": round(other / (total / reps), 3), "gflop": None, "floor_ms_at_measured_bf16": None})
    return {"total_ms": round(total / reps * 1e3, 2), "reps": reps, "rows": rows,
            "total_gflop": round(sum(flops.values()) / 1e9, 2)}


# -- main -----------------------------------------------------------------------------------------------------------

def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--json", action="store_true", help="print the result JSON instead of the table")
    ap.add_argument("--quick", action="store_true",
                    help="fewer repetitions and only fp32, bf16, bf16-autocast unless --variants (make bench)")
    ap.add_argument("--checkpoint", type=Path, default=None, help="a model trained on synthetic soundscapes")
    ap.add_argument("--agreement-clips", type=int, default=110)
    ap.add_argument("--reps", type=int, default=None, help="batch-1 rounds (default 20, quick 12)")
    ap.add_argument("--reps-batch8", type=int, default=None, help="batch-8 rounds (default 6, quick 3)")
    ap.add_argument("--burst", type=int, default=2,
                    help="calls per variant per turn, the last one timed (default 2: each timed call follows one "
                         "of its own, as in a process that predicts repeatedly; 1: every call follows the others')")
    ap.add_argument("--compile", action="store_true", help="also measure torch.compile (slow to compile)")
    ap.add_argument("--no-profile", action="store_true")
    ap.add_argument("--variants", nargs="+", default=None, help="measure only these (fp32 always)")
    ap.add_argument("--noise-db", type=float, default=-50.0,
                    help="level of the noise (below each clip's) for fp32's own stability check (-50 dB moves this "
                         "model's fp32 logits about as much as bf16 does: compare the logit_rel_err figures)")
    ap.add_argument("--trained-checkpoint", type=Path, default=None,
                    help="a TRAINED synthetic-set model for the agreement check beside the random one (default: "
                         "bench/train.py's tiny-fb init, when it exists)")
    ap.add_argument("--train-clips-per-class", type=int, default=40,
                    help="synthetic clips per class the agreement model is trained on (once, then cached)")
    ap.add_argument("--train-epochs", type=int, default=40)
    ap.add_argument("--out", type=Path, default=RESULTS / "latency.json")
    args = ap.parse_args(argv)
    if args.burst < 1:
        ap.error(f"--burst must be 1 or more calls per turn, got {args.burst}")
    reps = args.reps or (12 if args.quick else 20)
    reps8 = args.reps_batch8 or (3 if args.quick else 6)
    log = (lambda *a: print(*a, file=sys.stderr, flush=True)) if args.json else (lambda *a: print(*a, flush=True))

    started = time.perf_counter()
    model_info: dict = {}
    path = args.checkpoint or BENCH_CACHE / f"agreement-base-random-{args.train_clips_per_class}"
    if args.checkpoint is None and not (path / "model.safetensors").exists():
        log(f"building the agreement model in {path} (once; synthetic soundscapes, head training) ...")
        model_info = build_agreement_model(path, args.train_clips_per_class, args.train_epochs)
    model = load_model(path)
    metrics_file = path / "metrics.json"
    if metrics_file.exists():  # how well the head learned (val split of its training data)
        import json

        saved = json.loads(metrics_file.read_text())
        best = saved.get("best") or {}
        model_info.update({"val_accuracy": best.get("val_accuracy"), "val_macro_f1": best.get("val_macro_f1"),
                           "best_epoch": saved.get("best_epoch")})
    model_info.update({"path": str(path), "backbone": "wav2vec2-base-sized, random-initialised (base-random)",
                       "trained": "attention pooling + head on synthetic soundscapes (train.train mode='head')"})
    x_agree, y_true = agreement_clips(model, args.agreement_clips)
    variants, notes, runners = make_variants(model, args.compile)
    if args.variants is None and args.quick:  # make bench's time budget: the default path against its references
        args.variants = ["bf16", "bf16-prev", "bf16-autocast"]
    if args.variants:
        variants = {k: v for k, v in variants.items() if k == "fp32" or k in args.variants}
        notes = {k: v for k, v in notes.items() if k in args.variants}
    log(f"variants: {', '.join(variants)}; agreement clips: {len(y_true)}; rounds: {reps} (batch 1), {reps8} (batch 8)")

    # agreement (and, for compile, the compilation) first: it also warms every variant up
    probs = {}
    for name, fn in variants.items():
        t0 = time.perf_counter()
        probs[name] = probabilities(fn, x_agree)
        log(f"  {name}: agreement pass {time.perf_counter() - t0:.1f} s")
    ref = probs["fp32"]
    ref_margin = top2_margins(ref)  # fp32's top-1 minus top-2 probability, per clip
    # fp32's own decisions under an inaudible change of the input: which of them are coin tosses
    noisy = probabilities(variants["fp32"], with_noise(x_agree, args.noise_db))
    stable = noisy.argmax(1) == ref.argmax(1)
    stability = {"noise_db": args.noise_db, "agreement": round(float(stable.mean()), 4),
                 "logit_rel_err": round(logit_error(noisy, ref), 5),
                 "flips": [{"clip": int(i), "fp32_margin": round(float(ref_margin[i]), 4)}
                           for i in np.flatnonzero(~stable)], "stable_clips": int(stable.sum())}
    log(f"  fp32 + noise at {args.noise_db:g} dB: agreement with fp32 {stability['agreement']}")

    x1, x8 = x_agree[:1], x_agree[:8]
    gflops = {"fp32": matmul_gflops(torch.float32)}
    if cpu_supports_bf16():
        gflops["bf16"] = matmul_gflops(torch.bfloat16)
    t1 = interleaved_times(variants, x1, reps, warmup=2, burst=args.burst)
    t8 = interleaved_times(variants, x8, reps8, warmup=1, burst=args.burst)
    gflops_after = {k: matmul_gflops(torch.float32 if k == "fp32" else torch.bfloat16) for k in gflops}

    rows = []
    for name in variants:
        p = probs[name]
        row = {"name": name, **latency_stats(t1[name], 1, CLIP_S),
               "batch8": latency_stats(t8[name], 8, CLIP_S),
               "agreement": round(float((p.argmax(1) == ref.argmax(1)).mean()), 4),
               "max_prob_diff": round(float(np.abs(p - ref).max()), 5),
               "logit_rel_err": round(logit_error(p, ref), 5),
               "accuracy": round(float((p.argmax(1) == y_true).mean()), 4),
               "agreement_on_stable": round(float((p.argmax(1) == ref.argmax(1))[stable].mean()), 4),
               # the clips whose decision changed, with fp32's own top-2 margin: near-ties flip first
               "flips": [{"clip": int(i), "fp32_margin": round(float(ref_margin[i]), 4)}
                         for i in np.flatnonzero(p.argmax(1) != ref.argmax(1))]}
        row["speedup_vs_fp32"] = round(float(np.median(t1["fp32"]) / np.median(t1[name])), 2)
        if name in notes:
            row["note"] = notes[name]
        rows.append(row)
    skipped = [{"name": n, "note": why} for n, why in notes.items() if n not in variants]

    # the floor uses the best matrix-product rate seen in this run (before or after): a shared machine's rate
    # moves with the load, and a floor must not be inflated by a slow spell
    best_rate = max(gflops.get("bf16", gflops["fp32"]), gflops_after.get("bf16", gflops_after["fp32"]))
    qualifying = [r for r in rows if r["agreement"] >= MIN_AGREEMENT]
    best = min(qualifying, key=lambda r: r["p50_s"])
    flops_per_clip = sum(count_flops(model, x1).values())
    floor_s = flops_per_clip / (best_rate * 1e9)
    best_block = {
        "name": best["name"], "p50_s": best["p50_s"], "speedup_vs_fp32": best["speedup_vs_fp32"],
        "agreement": best["agreement"], "gflop_per_clip": round(flops_per_clip / 1e9, 2),
        "bf16_matmul_gflops": round(best_rate, 1), "floor_s": round(floor_s, 5),
        "p50_over_floor": round(best["p50_s"] / floor_s, 3),
        "batch8": {"p50_s": best["batch8"]["p50_s"], "floor_s": round(8 * floor_s, 5),
                   "p50_over_floor": round(best["batch8"]["p50_s"] / (8 * floor_s), 3),
                   "speedup_vs_fp32": round(float(np.median(t8["fp32"]) / np.median(t8[best["name"]])), 2)},
    }
    best_block["goals"] = {"speedup_at_least_2.5x": bool(best["speedup_vs_fp32"] >= 2.5),
                           "p50_at_most_1.1x_floor": bool(best["p50_s"] <= 1.1 * floor_s)}
    result = {
        "machine": machine_info(),
        "settings": {"clip_s": CLIP_S, "reps_batch1": reps, "reps_batch8": reps8, "burst": args.burst,
                     "agreement_clips": int(len(y_true)), "min_agreement": MIN_AGREEMENT,
                     "matmul_gflops_before": {k: round(v, 1) for k, v in gflops.items()},
                     "matmul_gflops_after": {k: round(v, 1) for k, v in gflops_after.items()},
                     "cpu_bf16_native": cpu_supports_bf16()},
        "model": model_info,
        "variants": rows,
        "skipped": skipped,
        "fp32_margins": {"below_0.01": int((ref_margin < 0.01).sum()), "below_0.02": int((ref_margin < 0.02).sum()),
                         "below_0.05": int((ref_margin < 0.05).sum()), "clips": int(len(ref_margin))},
        "fp32_stability": stability,
        "best_qualifying": best["name"],
        "best": best_block,
        "target": {"p50_s": TARGET_P50_S, "met": bool(best["p50_s"] <= TARGET_P50_S)},
        "predict_default": "bf16" if cpu_supports_bf16() else "fp32",
    }
    trained_path = args.trained_checkpoint or DEFAULT_TRAINED_DIR
    if "bf16" in variants and (trained_path / "model.safetensors").exists():
        result["trained_model"] = trained_model_check(trained_path, args.agreement_clips)
    else:
        result["trained_model"] = {"skipped": f"no trained checkpoint at {trained_path} (python bench/train.py "
                                              "builds it) or no bf16 variant"}
    if not args.no_profile:  # the best qualifying variant, and predict's default when that is another one
        for name in dict.fromkeys([best["name"], result["predict_default"]]):
            if name in variants:
                key = "profile" if name == best["name"] else f"profile_{name}"
                result[key] = module_profile(model, runners[name], variants[name], x1, max(3, reps // 3), best_rate)
                result[key]["variant"] = name
    result["elapsed_s"] = round(time.perf_counter() - started, 1)
    write_json(args.out, result)

    if args.json:
        print(json_dumps(result))
        return 0
    m = result["machine"]
    print(f"\n{m['cpu']}, {m['torch_threads']} threads, load {m.get('load_avg_1_5_15')}, torch {m['torch']}; "
          f"matmul GFLOP/s {result['settings']['matmul_gflops_before']} -> {result['settings']['matmul_gflops_after']}")
    print(f"{'variant':15s} {'p50 s':>8s} {'p95 s':>8s} {'clips/s':>8s} {'RTF':>7s} {'b8 p50':>8s} {'b8 clips/s':>10s} "
          f"{'x fp32':>7s} {'agree':>6s} {'maxΔp':>7s} {'acc':>6s}")
    for r in rows:
        print(f"{r['name']:15s} {r['p50_s']:8.3f} {r['p95_s']:8.3f} {r['clips_per_s']:8.2f} {r['rtf']:7.4f} "
              f"{r['batch8']['p50_s']:8.3f} {r['batch8']['clips_per_s']:10.2f} {r['speedup_vs_fp32']:7.2f} "
              f"{r['agreement']:6.3f} {r['max_prob_diff']:7.4f} {r['accuracy']:6.3f}")
    for s in skipped:
        print(f"{s['name']}: {s['note']}")
    print(f"best with >= {MIN_AGREEMENT:.0%} agreement: {best['name']} p50 {best['p50_s']:.3f} s, "
          f"{best['speedup_vs_fp32']:.2f}x fp32; floor {floor_s:.3f} s ({flops_per_clip / 1e9:.1f} GFLOP at "
          f"{best_rate:.0f} GFLOP/s bf16): p50 = {best_block['p50_over_floor']:.2f}x floor "
          f"(batch 8: {best_block['batch8']['p50_over_floor']:.2f}x floor, "
          f"{best_block['batch8']['speedup_vs_fp32']:.2f}x fp32)")
    st = result["fp32_stability"]
    print(f"fp32 with noise at {st['noise_db']:g} dB agrees with fp32 on {st['agreement']:.3f} "
          f"({len(st['flips'])} flips, logit error {st['logit_rel_err']:.4f}; the variants': "
          + ", ".join(f"{r['name']} {r['logit_rel_err']:.4f}" for r in rows) + f"); agreement on the "
          f"{st['stable_clips']} clips the noise leaves alone: "
          + ", ".join(f"{r['name']} {r['agreement_on_stable']:.3f}" for r in rows))
    tm = result["trained_model"]
    if "skipped" in tm:
        print(f"trained model: {tm['skipped']}")
    else:
        print(f"trained model ({tm['backbone']}, {tm['layers']} layers of {tm['hidden_size']}): bf16 agrees with "
              f"fp32 on {tm['agreement_bf16']:.3f} of {tm['clips']} clips, max dp {tm['max_prob_diff_bf16']:.4f}")
    for key in [k for k in result if k.startswith("profile")]:
        prof = result[key]
        print(f"profile of {prof['variant']} at batch 1: {prof['total_ms']:.1f} ms, {prof['total_gflop']} GFLOP counted")
        for r in prof["rows"]:
            floor = "" if r["floor_ms_at_measured_bf16"] is None else f"  floor {r['floor_ms_at_measured_bf16']:.1f} ms"
            gf = "" if r["gflop"] is None else f"  {r['gflop']:.2f} GFLOP"
            print(f"  {r['module']:38s} {r['ms']:8.1f} ms {r['share']:6.1%}{gf}{floor}")
    print(f"saved {args.out}  ({result['elapsed_s']:.0f} s)")
    return 0


def json_dumps(obj) -> str:
    import json

    return json.dumps(obj, indent=1)


if __name__ == "__main__":
    sys.exit(main())
