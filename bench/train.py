"""Training speed: the cached-embedding fast path vs running the backbone every epoch, and ASiT's training step vs
Hugging Face ``Wav2Vec2ForSequenceClassification`` with the same backbone config.

    python bench/train.py                          # 2,000 clips, tiny preset, CPU → bench/results/train.json
    python bench/train.py --quick                  # 220 clips, fewer steps (make bench)
    python bench/train.py --json --skip-epochs --skip-steps   # only partial mode: cached vs uncached
    python bench/train.py --device cuda --bf16 --preset base-random --clips 2000   # on a GPU (adds MFU)

Part 1 — seconds per epoch of ``head``-mode training (backbone frozen) on ``--clips`` synthetic soundscapes
(5 s, 22 classes; made with ``synth`` + ``preprocess`` once into ``--data`` and reused):
  * ``cached``: ``train(mode="head", fast=True)``: the backbone runs once (``encode_s``, reported separately),
    then every epoch runs only pooling + head on float16 hidden states from disk;
  * ``backbone``: ``train(mode="head", fast=False, augment=None)``: the frozen backbone runs every epoch.
  Both epochs include validation on the cache's ``val`` split, as in real training.

Part 1b (``--partial-*``, ``--top-layers``, ``--views``) — partial mode (the top ``--top-layers`` transformer layers
+ pooling + head train) on ``--partial-clips`` clips of the ``--partial-preset`` backbone, three runs on the same
clips in one process: ``head_cached_epoch_s`` (``mode="head"``, cached), ``partial_cached_epoch_s``
(``mode="partial"``, the frozen layers' output cached once with ``--views`` augmented views per training clip) and
``partial_uncached_epoch_s`` (``fast=False``: the frozen layers run every epoch on freshly augmented audio); then
the test accuracy of the cached and the uncached partial runs (same seed, epochs and augmentation settings).
So that accuracy means something, all three runs start from a backbone that has learned (``--init``; by default
tiny-fb trained once by its own recipe on a disjoint synthetic set, dataset seed 1, kept in
``.cache/asit-bench/``), each with a fresh pooling + head; the head-mode run's test accuracy is the frozen
backbone's baseline. ``--no-init`` starts from random weights (which do not learn in a few epochs).
``--json`` prints everything as one JSON object (progress goes to stderr).

Part 2 — one training step (forward + backward + AdamW, feature encoder frozen, the rest trainable) on a batch
of ``--batch`` random 5 s clips, for ASiT (attention pooling) and for ``Wav2Vec2ForSequenceClassification``
built from the same backbone config and the same backbone weights; timed alternately (ABAB...) in one process
so both see the same machine load; median of ``--steps`` steps; ratio = ASiT clips/s ÷ HF clips/s. With
``--bf16`` the step runs under bf16 autocast. FLOPs per step are counted with ``FlopCounterMode``; MFU is
reported when ``--peak-tflops`` is known (given, or an H100 detected: 989.4 dense bf16).
"""

from __future__ import annotations

import argparse
import json
import math
import shutil
import statistics
import sys
import tempfile
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))
from _common import RESULTS, ROOT, machine_info, write_json  # noqa: E402

import torch  # noqa: E402

SR = 16000
CLIP_S = 5.0
NUM_LABELS = 22


# ---- part 1: cached embeddings vs the backbone every epoch ----------------------------------------------------


def make_cache(data_dir: Path, clips: int, seed: int = 0, tag: str = ""):
    """Synthetic soundscapes (``clips`` rounded up to a multiple of 22) → a preprocessed cache (reused)."""
    from asit_helpers.data import AudioCache, preprocess
    from asit_helpers.synth import make_soundscapes

    per_class = math.ceil(clips / NUM_LABELS)
    audio, cache_dir = data_dir / f"synth{tag}_{per_class}", data_dir / f"cache{tag}_{per_class}"
    if not (cache_dir / "cache.json").exists():
        make_soundscapes(audio, clips_per_class=per_class, seed=seed, progress=False)
        preprocess(audio, cache_dir, workers=2, seed=seed, progress=False)
    return AudioCache.open(cache_dir)


def bench_epochs(cache, preset: str, epochs: int, batch: int, device: str) -> dict:
    from asit_helpers.batches import EmbeddingStore
    from asit_helpers.model import AsitForAudioClassification
    from asit_helpers.train import train

    work = Path(tempfile.mkdtemp(prefix="asit_bench_train_"))
    try:
        common = dict(preset=preset, mode="head", epochs=epochs, batch_size=batch, augment=None, device=device,
                      progress=False, save_every=10**9)
        # the one-time encoding, timed on its own (train then finds the store and reuses it)
        torch.manual_seed(0)
        model = AsitForAudioClassification.from_backbone(preset, labels=cache.labels).to(device)
        t0 = time.perf_counter()
        EmbeddingStore.build(model, cache, work / "emb", batch_size=batch, progress=False)
        encode_s = time.perf_counter() - t0
        del model
        cached = train(cache, work / "cached", fast=True, embeddings_dir=work / "emb", **common)
        backbone = train(cache, work / "backbone", fast=False, **common)
    finally:
        shutil.rmtree(work, ignore_errors=True)
    c = statistics.median(h["seconds"] for h in cached.history)
    b = statistics.median(h["seconds"] for h in backbone.history)
    return {
        "clips": len(cache),
        "train_clips": int(len(cache.indices("train"))),
        "val_clips": int(len(cache.indices("val"))),
        "epochs": epochs,
        "encode_once_s": round(encode_s, 2),
        "cached_epoch_s": round(c, 3),
        "backbone_epoch_s": round(b, 3),
        "speedup_per_epoch": round(b / c, 1),
        "cached_epochs_s": [round(h["seconds"], 3) for h in cached.history],
        "backbone_epochs_s": [round(h["seconds"], 3) for h in backbone.history],
        "break_even_epochs": round(encode_s / max(b - c, 1e-9), 2),
    }


# ---- part 1b: partial mode on cached activations vs the frozen layers every epoch -------------------------------


def build_init(data_dir: Path, out: Path, preset: str, clips: int, epochs: int) -> dict:
    """A backbone that has learned something, for partial mode to start from (as a user's pretrained wav2vec2
    would be): ``preset`` trained by its own recipe (``TrainArgs.for_preset``; tiny-fb: full mode, front end
    trained) on synthetic clips of a DISJOINT dataset seed (1; the benchmark's clips use seed 0), kept in ``out``."""
    from asit_helpers.train import train

    cache = make_cache(data_dir, clips, seed=1, tag="init")
    t0 = time.perf_counter()
    result = train(cache, out, preset=preset, epochs=epochs, overwrite=True, device="cpu", progress=False,
                   save_every=10**9)
    return {"built_s": round(time.perf_counter() - t0, 1), "clips": len(cache), "epochs": epochs,
            "dataset_seed": 1, "val_accuracy": result.best_metrics.get("val_accuracy")}


def _fresh_head_on(init: Path, preset: str, labels, seed: int):
    """The init checkpoint's backbone under a NEW pooling layer and head (seeded): only the backbone carries over."""
    from asit_helpers.model import AsitForAudioClassification, load_model

    torch.manual_seed(seed)
    model = AsitForAudioClassification.from_backbone(preset, labels=labels)
    model.backbone.load_state_dict(load_model(init).backbone.state_dict(), strict=True)
    return model


def bench_partial(cache, preset: str, epochs: int, batch: int, device: str, top_layers: int, views: int,
                  seed: int = 0, init: Path | None = None) -> dict:
    """Seconds per epoch of head-mode (cached), partial-mode cached and partial-mode uncached training on the same
    clips, and the test accuracy of cached vs uncached partial training (same seed, same epochs, same augmentation
    settings: the cached run reads ``views`` augmented views per clip cached once, the uncached one augments every
    epoch afresh). With ``init``, every run starts from that checkpoint's backbone with a fresh pooling + head
    (the head-mode run's accuracy is then the frozen backbone's baseline)."""
    from asit_helpers.batches import Augment, EmbeddingStore
    from asit_helpers.evaluate import evaluate
    from asit_helpers.train import TrainArgs, train

    work = Path(tempfile.mkdtemp(prefix="asit_bench_partial_"))
    start = (lambda: {"model": _fresh_head_on(init, preset, cache.labels, seed)}) if init else dict
    try:
        recipe = TrainArgs.for_preset(preset).to_dict()
        common = dict(preset=preset, epochs=epochs, batch_size=batch, grad_accum=1, device=device, progress=False,
                      save_every=10**9, seed=seed, lr_head=recipe["lr_head"], lr_backbone=recipe["lr_backbone"],
                      freeze_feature_encoder=True)
        partial = dict(common, mode="partial", top_layers=top_layers, augment=Augment())
        t0 = time.perf_counter()
        head = train(cache, work / "head", mode="head", fast=True, augment=None, embeddings_dir=work / "emb_head",
                     **common, **start())
        head_total = time.perf_counter() - t0
        t0 = time.perf_counter()
        cached = train(cache, work / "cached", fast=True, cached_views=views, embeddings_dir=work / "emb_partial",
                       **partial, **start())
        cached_total = time.perf_counter() - t0
        t0 = time.perf_counter()
        uncached = train(cache, work / "uncached", fast=False, **partial, **start())
        uncached_total = time.perf_counter() - t0
        acc = {name: evaluate(r.model, cache, "test", progress=False, precision="fp32").accuracy
               for name, r in (("cached", cached), ("uncached", uncached), ("head", head))}
        store = EmbeddingStore(work / "emb_partial")
        store_mb = sum(f.stat().st_size for f in (work / "emb_partial").iterdir()) / 2**20
    finally:
        shutil.rmtree(work, ignore_errors=True)
    med = lambda r: statistics.median(h["seconds"] for h in r.history)  # noqa: E731
    head_s, cached_s, uncached_s = med(head), med(cached), med(uncached)
    return {
        "preset": preset, "top_layers": top_layers, "cached_views": views, "epochs": epochs, "batch": batch,
        "cached_layer": store.layer, "store_mb": round(store_mb, 1),
        "head_cached_epoch_s": round(head_s, 3),
        "partial_cached_epoch_s": round(cached_s, 3),
        "partial_uncached_epoch_s": round(uncached_s, 3),
        "partial_cached_over_head": round(cached_s / head_s, 2),
        "partial_uncached_over_cached": round(uncached_s / cached_s, 1),
        # whole calls: encoding once (clean clips + views) plus every epoch, validation and saving
        "head_cached_total_s": round(head_total, 1),
        "partial_cached_total_s": round(cached_total, 1),
        "partial_uncached_total_s": round(uncached_total, 1),
        "test_accuracy_head_cached": round(float(acc["head"]), 4),
        "test_accuracy_partial_cached": round(float(acc["cached"]), 4),
        "test_accuracy_partial_uncached": round(float(acc["uncached"]), 4),
        "accuracy_cost_points": round(100 * float(acc["uncached"] - acc["cached"]), 2),
        "test_clips": int(len(cache.indices("test"))),
        "history_cached": [{k: h[k] for k in ("epoch", "val_accuracy", "seconds") if k in h} for h in cached.history],
        "history_uncached": [{k: h[k] for k in ("epoch", "val_accuracy", "seconds") if k in h}
                             for h in uncached.history],
    }


# ---- part 2: a training step, ASiT vs HF Wav2Vec2ForSequenceClassification ------------------------------------


def build_pair(preset: str, device: torch.device):
    from transformers import Wav2Vec2Config, Wav2Vec2ForSequenceClassification

    from asit_helpers.model import TINY_BACKBONE, TINY_FB_BACKBONE, AsitForAudioClassification

    cfg = {"tiny": lambda: Wav2Vec2Config(**TINY_BACKBONE), "tiny-fb": lambda: Wav2Vec2Config(**TINY_FB_BACKBONE),
           "base-random": Wav2Vec2Config}[preset]()
    torch.manual_seed(0)
    asit = AsitForAudioClassification.from_backbone(cfg, labels=[f"c{i}" for i in range(NUM_LABELS)])
    backbone = {k: v for k, v in cfg.to_dict().items() if k not in ("id2label", "label2id", "num_labels")}
    hf_cfg = Wav2Vec2Config(**backbone, num_labels=NUM_LABELS)
    hf = Wav2Vec2ForSequenceClassification(hf_cfg)
    missing, unexpected = hf.wav2vec2.load_state_dict(asit.backbone.state_dict(), strict=False)
    assert not missing and not unexpected, (missing, unexpected)
    asit.freeze_feature_encoder()
    hf.freeze_feature_encoder()
    return {"asit": asit.to(device).train(), "hf": hf.to(device).train()}


def _step_fn(name, model, opt, x, mask, y, bf16: bool, device):
    def step():
        with torch.autocast(device.type, dtype=torch.bfloat16, enabled=bf16):
            if name == "asit":
                logits = model(x, attention_mask=mask).logits
            else:
                # the tiny preset's layer-norm front end takes the mask; base-sized group norm does not (as HF advises)
                kw = {"attention_mask": mask} if model.config.feat_extract_norm == "layer" else {}
                logits = model(x, **kw).logits
        loss = torch.nn.functional.cross_entropy(logits.float(), y)
        loss.backward()
        opt.step()
        opt.zero_grad(set_to_none=True)

    return step


def _sync(device):
    if device.type == "cuda":
        torch.cuda.synchronize(device)


def bench_steps(preset: str, batch: int, steps: int, warmup: int, device: torch.device, bf16: bool,
                peak_tflops: float | None) -> dict:
    from torch.utils.flop_counter import FlopCounterMode

    models = build_pair(preset, device)
    g = torch.Generator().manual_seed(0)
    x = (torch.randn(batch, int(SR * CLIP_S), generator=g) * 0.1).to(device)
    mask = torch.ones_like(x, dtype=torch.long)
    y = torch.randint(0, NUM_LABELS, (batch,), generator=g).to(device)
    fns, flops = {}, {}
    for name, model in models.items():
        opt = torch.optim.AdamW([p for p in model.parameters() if p.requires_grad], lr=1e-5)
        fns[name] = _step_fn(name, model, opt, x, mask, y, bf16, device)
        with FlopCounterMode(display=False) as counter:
            fns[name]()
        flops[name] = counter.get_total_flops()
    for _ in range(warmup):
        for fn in fns.values():
            fn()
    times = {name: [] for name in fns}
    for _ in range(steps):  # alternate, so both models see the same load
        for name, fn in fns.items():
            _sync(device)
            t0 = time.perf_counter()
            fn()
            _sync(device)
            times[name].append(time.perf_counter() - t0)
    out = {"batch": batch, "steps": steps, "bf16": bf16, "device": str(device)}
    for name in fns:
        med = statistics.median(times[name])
        row = {
            "step_s_median": round(med, 4),
            "clips_per_s": round(batch / med, 2),
            "gflops_per_step": round(flops[name] / 1e9, 2),
            "trainable_params": sum(p.numel() for p in models[name].parameters() if p.requires_grad),
        }
        if peak_tflops:
            row["mfu"] = round(flops[name] / med / (peak_tflops * 1e12), 4)
        out[name] = row
    out["ratio_asit_over_hf_clips_per_s"] = round(out["asit"]["clips_per_s"] / out["hf"]["clips_per_s"], 3)
    if peak_tflops:
        out["peak_tflops"] = peak_tflops
    return out


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--clips", type=int, default=2000, help="clips in the epoch benchmark (rounded up to 22 classes)")
    ap.add_argument("--preset", default="tiny", choices=["tiny", "tiny-fb", "base-random"], help="backbone")
    ap.add_argument("--epochs", type=int, default=2)
    ap.add_argument("--batch", type=int, default=16, help="batch size (both parts)")
    ap.add_argument("--steps", type=int, default=10, help="timed training steps per model (part 2)")
    ap.add_argument("--warmup", type=int, default=2)
    ap.add_argument("--device", default="cuda" if torch.cuda.is_available() else "cpu", choices=["cpu", "cuda"])
    ap.add_argument("--bf16", action="store_true", help="bf16 autocast in the step benchmark (GPU)")
    ap.add_argument("--peak-tflops", type=float, default=None,
                    help="device peak for MFU (default: 989.4 on an H100, none elsewhere)")
    ap.add_argument("--skip-epochs", action="store_true", help="only the step benchmark")
    ap.add_argument("--skip-partial", action="store_true", help="no partial-mode (cached vs uncached) part")
    ap.add_argument("--skip-steps", action="store_true", help="no ASiT vs HF step part")
    ap.add_argument("--partial-clips", type=int, default=880, help="clips in the partial-mode part (22 classes)")
    ap.add_argument("--partial-preset", default="tiny-fb", choices=["tiny", "tiny-fb", "base-random"])
    ap.add_argument("--partial-epochs", type=int, default=8)
    ap.add_argument("--top-layers", type=int, default=1,
                    help="transformer layers trained in partial mode (default 1 of tiny-fb's 2; base's recipe trains "
                         "2 of 12)")
    ap.add_argument("--init", type=Path, default=None,
                    help="checkpoint whose backbone partial mode starts from (default: built once into "
                         ".cache/asit-bench/partial-init-PRESET by the preset's recipe on a disjoint synthetic set)")
    ap.add_argument("--init-clips", type=int, default=440, help="clips the default init backbone is trained on")
    ap.add_argument("--init-epochs", type=int, default=20, help="epochs of the default init backbone's recipe")
    ap.add_argument("--no-init", action="store_true", help="partial mode on the random-initialised backbone")
    ap.add_argument("--views", type=int, default=4, help="augmented views per clip cached for partial mode")
    ap.add_argument("--json", action="store_true", help="print the result as one JSON object (progress on stderr)")
    ap.add_argument("--quick", action="store_true", help="small settings for make bench: 220 clips, 4 steps")
    ap.add_argument("--data", type=Path, default=Path(tempfile.gettempdir()) / "asit_bench_data")
    ap.add_argument("--out", type=Path, default=RESULTS / "train.json")
    args = ap.parse_args(argv)
    if args.quick:
        args.clips, args.steps, args.warmup, args.batch, args.epochs = 220, 4, 1, 8, 2
        args.partial_clips, args.partial_epochs = 220, 2
    device = torch.device(args.device)
    peak = args.peak_tflops
    if peak is None and device.type == "cuda" and "H100" in torch.cuda.get_device_name(0):
        peak = 989.4

    if args.json:  # one JSON object on stdout: everything else goes to stderr
        import contextlib

        with contextlib.redirect_stdout(sys.stderr):
            result = run(args, device, peak)
        print(json.dumps(result, indent=1))
        return 0
    run(args, device, peak)
    return 0


def run(args, device: torch.device, peak: float | None) -> dict:
    result = {"machine": machine_info(), "preset": args.preset}
    if not args.skip_partial:
        init, init_info = None, None
        if not args.no_init:
            init = args.init or ROOT / ".cache" / "asit-bench" / f"partial-init-{args.partial_preset}"
            if args.init is None and not (init / "model.safetensors").exists():
                print(f"building the init backbone in {init} (once) ...")
                init_info = build_init(args.data, init, args.partial_preset, args.init_clips, args.init_epochs)
            init_info = {"path": str(init), **(init_info or {}),
                         "what": "the backbone of a checkpoint trained by the preset's own recipe on a disjoint "
                                 "synthetic set (dataset seed 1); pooling + head fresh in every run"}
        cache = make_cache(args.data, args.partial_clips)
        part = bench_partial(cache, args.partial_preset, args.partial_epochs, args.batch, args.device,
                             args.top_layers, args.views, init=init)
        part["init"] = init_info or "random-initialised backbone (--no-init)"
        result["partial"] = part
        for key in ("partial_cached_epoch_s", "partial_uncached_epoch_s", "head_cached_epoch_s",
                    "partial_cached_over_head", "test_accuracy_partial_cached", "test_accuracy_partial_uncached",
                    "test_accuracy_head_cached", "accuracy_cost_points"):
            result[key] = part[key]
        print(f"partial mode ({part['preset']}, top {part['top_layers']} layers, {len(cache)} clips, "
              f"{part['epochs']} epochs): cached {part['partial_cached_epoch_s']:.2f} s/epoch "
              f"({part['partial_cached_over_head']}x head-mode cached {part['head_cached_epoch_s']:.2f} s), "
              f"uncached {part['partial_uncached_epoch_s']:.2f} s/epoch; test accuracy cached "
              f"{part['test_accuracy_partial_cached']:.3f} vs uncached {part['test_accuracy_partial_uncached']:.3f}")
    if not args.skip_epochs:
        cache = make_cache(args.data, args.clips)
        ep = bench_epochs(cache, args.preset, args.epochs, args.batch, args.device)
        result["epochs"] = ep
        print(f"head-mode epoch on {ep['clips']} clips ({ep['train_clips']} train + {ep['val_clips']} val), "
              f"{args.preset}, {args.device}:")
        print(f"  cached embeddings : {ep['cached_epoch_s']:8.2f} s/epoch  (+ {ep['encode_once_s']:.1f} s once "
              f"to encode all clips)")
        print(f"  backbone each time: {ep['backbone_epoch_s']:8.2f} s/epoch")
        print(f"  speed-up per epoch: {ep['speedup_per_epoch']}x; the encoding pays off after "
              f"{ep['break_even_epochs']} epochs")
    if args.skip_steps:
        write_json(args.out, result)
        print(f"saved {args.out}")
        return result
    st = bench_steps(args.preset, args.batch, args.steps, args.warmup, device, args.bf16, peak)
    result["step"] = st
    print(f"training step, batch {st['batch']} x 5 s, {args.preset}, {st['device']}"
          f"{', bf16' if st['bf16'] else ''} (median of {st['steps']}):")
    for name, label in (("asit", "ASiT (attention pooling)"), ("hf", "HF Wav2Vec2ForSequenceClassification")):
        r = st[name]
        mfu = f", MFU {r['mfu']:.1%}" if "mfu" in r else ""
        print(f"  {label:38s} {r['clips_per_s']:8.2f} clips/s  {r['step_s_median']:.3f} s/step  "
              f"{r['gflops_per_step']} GFLOP/step{mfu}")
    print(f"  ratio ASiT / HF: {st['ratio_asit_over_hf_clips_per_s']}")
    write_json(args.out, result)
    print(f"saved {args.out}")
    return result


if __name__ == "__main__":
    sys.exit(main())
