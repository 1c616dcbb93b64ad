"""GPU throughput: ASiT vs Hugging Face ``Wav2Vec2ForSequenceClassification``, bf16, SDPA attention, with MFU.

    python bench/gpu.py                                   # on a CUDA machine: wav2vec2-base-sized, writes bench/results/gpu.json
    python bench/gpu.py --device cpu --preset tiny --batch-infer 2 --batch-train 2 --iters 2 --out /tmp/gpu.json  # smoke

For each model, under the same settings (5 s clips at 16 kHz, random-initialised wav2vec2-base-sized backbone,
SDPA attention, bf16 autocast with float32 master weights, the conv feature encoder frozen for fine-tuning as
usual, AdamW):

- inference clips/s at ``--batch-infer`` (the ASiT forward goes through ``inference.classify_batch``, the code path
  ``predict`` uses on a GPU);
- fine-tune clips/s at ``--batch-train`` (forward + backward + AdamW step);
- FLOPs per step counted by ``torch.utils.flop_counter.FlopCounterMode`` (matrix products, convolutions and
  attention; elementwise work is not counted, as is usual for MFU), and MFU = counted FLOP/s / peak. The peak is
  ``--peak-tflops`` (default 989.4: H100 SXM dense bf16, datasheet); the script also measures a large bf16 matrix
  product on the device and reports MFU against that measured ceiling.

Timing: device-synchronised wall clock around each iteration after warm-up, median over ``--iters``; inputs are
random (never zeros) and rotate over four batches. A correctness check compares ASiT's bf16 logits with float32.
"""

from __future__ import annotations

import argparse
import copy
import statistics
import sys
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))
from _common import RESULTS, machine_info, write_json  # noqa: E402

import torch  # noqa: E402
from torch.utils.flop_counter import FlopCounterMode  # noqa: E402
from transformers import Wav2Vec2Config, Wav2Vec2ForSequenceClassification  # noqa: E402

from asit_helpers.inference import classify_batch  # noqa: E402
from asit_helpers.model import TINY_BACKBONE, AsitForAudioClassification  # noqa: E402

NUM_LABELS = 22
CLIP_S = 5.0
SR = 16000


def _sync(device: torch.device) -> None:
    if device.type == "cuda":
        torch.cuda.synchronize(device)


def _backbone_config(preset: str) -> Wav2Vec2Config:
    cfg = Wav2Vec2Config(**TINY_BACKBONE) if preset == "tiny" else Wav2Vec2Config()
    cfg._attn_implementation = "sdpa"  # the same attention kernel for both models
    cfg.layerdrop = 0.0  # LayerDrop skips random layers in training: the compute of a step would vary
    return cfg


def build_models(preset: str, device: torch.device) -> dict[str, torch.nn.Module]:
    """The two models with identical backbones (same config, same random weights)."""
    torch.manual_seed(0)
    labels = [f"class_{i}" for i in range(NUM_LABELS)]
    asit = AsitForAudioClassification.from_backbone(_backbone_config(preset), labels=labels)
    hf_cfg = copy.deepcopy(_backbone_config(preset))
    hf_cfg.num_labels = NUM_LABELS
    hf = Wav2Vec2ForSequenceClassification(hf_cfg)
    hf.wav2vec2.load_state_dict(asit.backbone.state_dict())
    return {"asit": asit.to(device), "hf_wav2vec2_seqcls": hf.to(device)}


def _attn_impl(model: torch.nn.Module) -> str:
    inner = model.backbone if hasattr(model, "backbone") else model.wav2vec2
    return str(getattr(inner.config, "_attn_implementation", "unknown"))


def _forward(name: str, model, x: torch.Tensor, device: torch.device):
    """Logits `(batch, NUM_LABELS)` of one bf16 forward pass."""
    if name == "asit":
        return classify_batch(model, x, None, precision="bf16").logits
    with torch.autocast(device.type, dtype=torch.bfloat16):
        return model(x).logits


def _time(fn, iters: int, warmup: int, device: torch.device) -> list[float]:
    for _ in range(warmup):
        fn()
    _sync(device)
    out = []
    for _ in range(iters):
        t0 = time.perf_counter()
        fn()
        _sync(device)
        out.append(time.perf_counter() - t0)
    return out


def count_flops(fn) -> int:
    with FlopCounterMode(display=False) as counter:
        fn()
    return int(counter.get_total_flops())


def training_flops(model, x: torch.Tensor, labels: torch.Tensor, device: torch.device) -> tuple[int, int]:
    """FLOPs of one training step = forward + 2 × forward of the trained part (the frozen conv feature encoder
    has no backward), from a counted forward pass. Returns ``(step_flops, counted_backward_flops)``.

    Why not count the backward pass directly: FlopCounterMode's formula for ``convolution_backward`` overcounts
    grouped convolutions (wav2vec2's positional conv has 16 groups; seen ~16x here), which would inflate MFU.
    The direct count is still returned for reference.
    """
    with torch.no_grad(), torch.autocast(device.type, dtype=torch.bfloat16), FlopCounterMode(display=False) as c:
        model(x, labels=labels)
    fwd = int(c.get_total_flops())
    frozen = sum(sum(v.values()) for k, v in c.get_flop_counts().items() if k.endswith(".feature_extractor")
                 and k.count(".") == 2)
    with torch.autocast(device.type, dtype=torch.bfloat16), FlopCounterMode(display=False) as c2:
        model(x, labels=labels).loss.backward()
    model.zero_grad(set_to_none=True)
    return fwd + 2 * (fwd - frozen), int(c2.get_total_flops())


def measure_matmul_tflops(device: torch.device, n: int) -> float:
    """The device's own bf16 ceiling: an n×n×n matrix product on random data, median of 10 after warm-up."""
    a = torch.randn(n, n, device=device, dtype=torch.bfloat16)
    b = torch.randn(n, n, device=device, dtype=torch.bfloat16)
    times = _time(lambda: a @ b, iters=10, warmup=3, device=device)
    return 2 * n**3 / statistics.median(times) / 1e12


def _throughput(batch: int, median_s: float, flops: float, peak_tflops: float, measured_tflops, device) -> dict:
    """One timed phase as JSON: clips/s, counted FLOPs per clip, achieved TFLOP/s, MFU (vs datasheet peak and vs the
    measured matmul rate), peak GPU memory."""
    achieved = flops / median_s / 1e12
    return {
        "batch": batch,
        "median_s": round(median_s, 5),
        "clips_per_s": round(batch / median_s, 1),
        "gflop_per_clip": round(flops / batch / 1e9, 2),
        "tflops_achieved": round(achieved, 1),
        "mfu_vs_peak": round(achieved / peak_tflops, 4),
        "mfu_vs_measured_matmul": round(achieved / measured_tflops, 4) if measured_tflops else None,
        "peak_mem_gib": round(torch.cuda.max_memory_allocated(device) / 2**30, 2) if device.type == "cuda" else None,
    }


def bench_model(name, model, args, device, peak_tflops, measured_tflops) -> dict:
    n_samples = int(CLIP_S * SR)
    gen = torch.Generator(device="cpu").manual_seed(1)
    infer_batches = [torch.randn(args.batch_infer, n_samples, generator=gen).to(device) for _ in range(4)]
    train_batches = [
        (torch.randn(args.batch_train, n_samples, generator=gen).to(device),
         torch.randint(0, NUM_LABELS, (args.batch_train,), generator=gen).to(device))
        for _ in range(4)
    ]
    row: dict = {"name": name, "attn_implementation": _attn_impl(model),
                 "params_m": round(sum(p.numel() for p in model.parameters()) / 1e6, 2)}

    # -- inference -------------------------------------------------------------------------------------------------
    model.eval()
    it = iter(range(10**9))

    def infer(grad_mode=torch.inference_mode):
        with grad_mode():
            return _forward(name, model, infer_batches[next(it) % 4], device)

    # counted under no_grad: FlopCounterMode under inference_mode breaks weight-norm parametrizations (torch 2.13)
    flops_inf = count_flops(lambda: infer(torch.no_grad))
    if device.type == "cuda":
        torch.cuda.reset_peak_memory_stats(device)
    t_inf = _time(infer, args.iters, args.warmup, device)
    med = statistics.median(t_inf)
    row["inference"] = _throughput(args.batch_infer, med, flops_inf, peak_tflops, measured_tflops, device)

    # -- fine-tuning -----------------------------------------------------------------------------------------------
    model.train()
    model.freeze_feature_encoder()
    params = [p for p in model.parameters() if p.requires_grad]
    opt = torch.optim.AdamW(params, lr=1e-5, fused=device.type == "cuda")

    def step():
        x, y = train_batches[next(it) % 4]
        with torch.autocast(device.type, dtype=torch.bfloat16):
            out = model(x, labels=y)
        out.loss.backward()
        opt.step()
        opt.zero_grad(set_to_none=True)
        return out.loss

    step()  # AdamW state exists before counting, so the count is a steady-state step
    flops_train, flops_train_counted = training_flops(model, *train_batches[0], device)
    if device.type == "cuda":
        torch.cuda.reset_peak_memory_stats(device)
    t_tr = _time(step, args.iters, args.warmup, device)
    med = statistics.median(t_tr)
    row["finetune"] = {
        **_throughput(args.batch_train, med, flops_train, peak_tflops, measured_tflops, device),
        "frozen": "conv feature encoder",
        "gflop_per_clip_flopcounter_direct": round(flops_train_counted / args.batch_train / 1e9, 2),
    }
    model.eval()
    return row


def check_bf16_logits(model: AsitForAudioClassification, device: torch.device, batch: int) -> dict:
    """ASiT's bf16 path vs its float32 path on fresh random clips: relative error of logits, top-1 agreement."""
    x = torch.randn(batch, int(CLIP_S * SR), generator=torch.Generator().manual_seed(7)).to(device)
    model.eval()
    with torch.inference_mode():
        ref = classify_batch(model, x, None, precision="fp32").logits.float()
        fast = classify_batch(model, x, None, precision="bf16").logits.float()
    assert torch.isfinite(fast).all(), "bf16 logits contain NaN/inf"
    return {
        "rel_err_logits": round(float((fast - ref).norm() / ref.norm()), 6),
        "top1_agreement": round(float((fast.argmax(-1) == ref.argmax(-1)).float().mean()), 4),
        "clips": batch,
        "note": "random-initialised model: its logit margins are small, so agreement here is a lower bound",
    }


def check_predict(model: AsitForAudioClassification, seconds: float = 30.0) -> dict:
    """``predict`` itself on this device: ``precision="auto"`` (what it picks here) against ``"fp32"``."""
    from asit_helpers.inference import predict

    audio = (torch.randn(int(seconds * SR), generator=torch.Generator().manual_seed(3)) * 0.1).numpy()
    fast, ref = predict(model, audio), predict(model, audio, precision="fp32")
    return {
        "auto_precision": fast.precision,
        "windows": len(fast.windows),
        "same_label": fast.label == ref.label,
        "window_top1_agreement": round(sum(a.label == b.label for a, b in zip(fast.windows, ref.windows)) / len(ref.windows), 4),
        "max_abs_prob_diff": round(float(abs(fast.probabilities - ref.probabilities).max()), 6),
    }


def bench_compiled(model: AsitForAudioClassification, args, device, peak_tflops, measured_tflops) -> dict:
    """ASiT inference with the backbone under ``torch.compile`` (bf16 autocast), same batch and timing."""
    n_samples = int(CLIP_S * SR)
    gen = torch.Generator(device="cpu").manual_seed(1)
    batches = [torch.randn(args.batch_infer, n_samples, generator=gen).to(device) for _ in range(4)]
    compiled = torch.compile(model.backbone)
    it = iter(range(10**9))

    def infer():
        with torch.inference_mode(), torch.autocast(device.type, dtype=torch.bfloat16):
            hidden = compiled(batches[next(it) % 4]).last_hidden_state
        mask = torch.ones(hidden.shape[:2], dtype=torch.bool, device=device)
        with torch.inference_mode():
            return model.classify_hidden(hidden.float(), mask).logits

    t0 = time.perf_counter()
    infer()
    _sync(device)
    compile_s = time.perf_counter() - t0
    with torch.no_grad(), torch.autocast(device.type, dtype=torch.bfloat16):
        flops = count_flops(lambda: model(batches[0]))
    med = statistics.median(_time(infer, args.iters, args.warmup, device))
    return {
        "name": "asit_backbone_torch_compile",
        "inference": {
            "batch": args.batch_infer, "median_s": round(med, 5), "clips_per_s": round(args.batch_infer / med, 1),
            "gflop_per_clip": round(flops / args.batch_infer / 1e9, 2),
            "tflops_achieved": round(flops / med / 1e12, 1),
            "mfu_vs_peak": round(flops / med / 1e12 / peak_tflops, 4),
            "mfu_vs_measured_matmul": round(flops / med / 1e12 / measured_tflops, 4) if measured_tflops else None,
            "compile_s": round(compile_s, 1),
        },
    }


def profile_inference(model: AsitForAudioClassification, batch: int, device: torch.device, top: int = 15) -> dict:
    """Where a bf16 ASiT inference batch spends its device time: the top kernels, and totals by kind."""
    from torch.profiler import ProfilerActivity, profile

    x = torch.randn(batch, int(CLIP_S * SR), generator=torch.Generator().manual_seed(5)).to(device)
    activity = ProfilerActivity.CUDA if device.type == "cuda" else ProfilerActivity.CPU
    with torch.inference_mode():
        for _ in range(3):
            classify_batch(model, x, None, precision="bf16")
        _sync(device)
        with profile(activities=[activity]) as prof:
            for _ in range(3):
                classify_batch(model, x, None, precision="bf16")
            _sync(device)
    attr = "device_time_total" if device.type == "cuda" else "self_cpu_time_total"
    events = [e for e in prof.key_averages() if getattr(e, attr, 0) > 0]
    if device.type == "cuda":  # kernels only: operator rows would count the same time twice
        events = [e for e in events if getattr(e, "device_type", None) is not None and "cuda" in str(e.device_type).lower()
                  and not e.key.startswith(("aten::", "cuda", "Memcpy", "Memset"))] or events
    total = sum(getattr(e, attr) for e in events) or 1.0
    kinds = {  # first match wins; kernel names differ by library version, so these are substrings
        "attention": ("flash", "fmha", "attention", "sdpa", "efficient"),  # before gemm: "cutlass" is in both
        "convolution": ("conv", "fprop", "dgrad", "wgrad", "implicit", "winograd", "fft"),
        "matmul (gemm)": ("gemm", "sm90", "cutlass", "xmma", "cublas", "nvjet", "addmm", "bmm", "::mm", "linear"),
        "normalisation": ("norm",),
        "elementwise / other": ("",),
    }
    by_kind = {k: 0.0 for k in kinds}
    for e in events:
        name = e.key.lower()
        kind = next(k for k, keys in kinds.items() if any(key in name for key in keys))
        by_kind[kind] += getattr(e, attr)
    events.sort(key=lambda e: -getattr(e, attr))
    return {
        "batch": batch, "iters": 3, "total_ms_per_iter": round(total / 3 / 1e3, 3),
        "by_kind_share": {k: round(v / total, 3) for k, v in by_kind.items()},
        "top_kernels": [{"name": e.key[:120], "ms_per_iter": round(getattr(e, attr) / 3 / 1e3, 3),
                         "share": round(getattr(e, attr) / total, 3)} for e in events[:top]],
    }


@torch.inference_mode()
def conv_layer_times(model: AsitForAudioClassification, batch: int, device: torch.device, iters: int = 10) -> list:
    """Median time of each convolution module of the backbone alone (bf16 autocast), on its real input shape."""
    bb = model.backbone
    x = torch.randn(batch, int(CLIP_S * SR), generator=torch.Generator().manual_seed(9)).to(device)
    rows = []
    with torch.autocast(device.type, dtype=torch.bfloat16):
        h = x[:, None]
        for i, layer in enumerate(bb.feature_extractor.conv_layers):
            med = statistics.median(_time(lambda: layer(h), iters, 3, device))
            rows.append({"module": f"conv_layers.{i}", "input": list(h.shape), "ms": round(med * 1e3, 3)})
            h = layer(h)
        hidden, _ = bb.feature_projection(h.transpose(1, 2).float())
        med = statistics.median(_time(lambda: bb.encoder.pos_conv_embed(hidden), iters, 3, device))
        rows.append({"module": "encoder.pos_conv_embed", "input": list(hidden.shape), "ms": round(med * 1e3, 3)})
        med = statistics.median(_time(lambda: bb.encoder.layers[0](hidden), iters, 3, device))
        rows.append({"module": "encoder.layers.0 (one of 12)", "input": list(hidden.shape), "ms": round(med * 1e3, 3)})
    return rows


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--device", default="cuda")
    ap.add_argument("--preset", choices=["base-random", "tiny"], default="base-random")
    ap.add_argument("--batch-infer", type=int, default=64)
    ap.add_argument("--batch-train", type=int, default=32)
    ap.add_argument("--iters", type=int, default=20)
    ap.add_argument("--warmup", type=int, default=5)
    ap.add_argument("--peak-tflops", type=float, default=989.4, help="dense bf16 peak (default: H100 SXM datasheet)")
    ap.add_argument("--matmul-n", type=int, default=8192, help="size of the matrix product that measures the ceiling")
    ap.add_argument("--compile", action="store_true", help="also time ASiT inference with torch.compile")
    ap.add_argument("--profile", action="store_true", help="also profile one bf16 inference batch by kernel")
    ap.add_argument("--cudnn-benchmark", action="store_true",
                    help="let cuDNN time its convolution algorithms and keep the fastest (torch.backends.cudnn.benchmark)")
    ap.add_argument("--out", type=Path, default=RESULTS / "gpu.json")
    args = ap.parse_args(argv)

    device = torch.device(args.device)
    if device.type == "cuda" and not torch.cuda.is_available():
        print("error: no CUDA device here; run with --device cpu --preset tiny for a smoke test", file=sys.stderr)
        return 2
    if device.type == "cuda":
        torch.backends.cudnn.benchmark = args.cudnn_benchmark
        torch.backends.cuda.matmul.allow_tf32 = True  # the fp32 pieces (loss, head) as a tuned setup would run them
    measured = measure_matmul_tflops(device, args.matmul_n) if device.type == "cuda" else None
    models = build_models(args.preset, device)
    check = check_bf16_logits(models["asit"], device, batch=min(16, args.batch_infer))
    pred_check = check_predict(models["asit"])
    rows = [bench_model(name, m, args, device, args.peak_tflops, measured) for name, m in models.items()]
    extra = []
    prof = profile_inference(models["asit"], args.batch_infer, device) if args.profile else None
    if prof is not None:
        prof["module_times"] = conv_layer_times(models["asit"], args.batch_infer, device)
    if args.compile:
        try:
            extra.append(bench_compiled(models["asit"], args, device, args.peak_tflops, measured))
        except Exception as exc:  # compile support varies by platform: record why, keep the eager figures
            extra.append({"name": "asit_backbone_torch_compile", "error": f"{type(exc).__name__}: {exc}"[:500]})

    result = {
        "machine": machine_info(),
        "settings": {
            "preset": args.preset, "clip_s": CLIP_S, "precision": "bf16 autocast, fp32 master weights",
            "attention": "sdpa", "optimizer": "AdamW", "iters": args.iters, "warmup": args.warmup,
            "cudnn_benchmark": bool(args.cudnn_benchmark),
            "peak_tflops_used": args.peak_tflops,
            "peak_source": "H100 SXM dense bf16 datasheet (989.4 TFLOP/s)" if args.peak_tflops == 989.4 else "--peak-tflops",
            "measured_bf16_matmul_tflops": round(measured, 1) if measured else None,
            "flop_counter": "torch.utils.flop_counter.FlopCounterMode (matmul, conv, attention) on the forward; "
                            "a training step = forward + 2 x forward of the trained part (conv feature encoder frozen)",
            "layerdrop": 0.0,
        },
        "asit_bf16_vs_fp32": check,
        "predict_auto_vs_fp32": pred_check,
        "variants": rows,
        "extra": extra,
        "profile": prof,
    }
    write_json(args.out, result)

    print(f"device: {result['machine'].get('gpu', result['machine']['cpu'])}  preset={args.preset}  "
          f"measured bf16 matmul: {result['settings']['measured_bf16_matmul_tflops']} TFLOP/s")
    print(f"asit bf16 vs fp32: {check}")
    print(f"{'model':22s} {'infer clips/s':>14s} {'MFU':>7s} {'train clips/s':>14s} {'MFU':>7s} {'GFLOP/clip inf/train':>22s}")
    for r in rows:
        i, f = r["inference"], r["finetune"]
        print(f"{r['name']:22s} {i['clips_per_s']:14.1f} {i['mfu_vs_peak']:7.1%} {f['clips_per_s']:14.1f} "
              f"{f['mfu_vs_peak']:7.1%} {i['gflop_per_clip']:>10.1f} / {f['gflop_per_clip']:<10.1f}")
    for r in extra:
        print(r["name"], r.get("inference", r.get("error")))
    print(f"predict auto vs fp32: {pred_check}")
    if prof:
        print(f"profile, ASiT bf16 inference at batch {prof['batch']}: {prof['total_ms_per_iter']} ms/iter; "
              f"by kind {prof['by_kind_share']}")
        for k in prof["top_kernels"][:10]:
            print(f"  {k['ms_per_iter']:8.3f} ms {k['share']:6.1%}  {k['name'][:90]}")
        print("  modules alone: " + ", ".join(f"{r['module']} {r['ms']:.2f} ms" for r in prof["module_times"]))
    print(f"saved {args.out}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
