"""Issue 11 item 7: can a live session reuse the conv front end's frames over the overlap of consecutive windows?

Consecutive live windows (5 s, every 0.5 s hop) share 4.5 s of audio. The conv front end is local (frame i sees
samples ``[i * stride, i * stride + receptive_field)``), so with a hop that is a whole number of strides the new
window's first frames are the old window's last ones -- *if nothing in the front end depends on the whole window*.
Two things do, and this script measures how much each changes the answer:

- the feature extractor's per-window normalisation (``do_normalize``: zero mean, unit variance over the window,
  every ASiT preset): the stored frames were computed from differently scaled and shifted samples;
- wav2vec2-base's first conv layer's GroupNorm (``feat_extract_norm="group"``): statistics over the window's time
  axis, so even the same samples give other frames in another window.

For each model: the logits of the window computed whole vs. with the previous window's frames stitched in front of
the new hop's frames (``stitched``), over 5 consecutive windows of a synthetic recording; the same-samples check
(two windows' overlapping frames from identical, unnormalised input); and the front end's share of one forward
pass at predict's precision (what reuse could save at most).

    python bench/frontend_reuse.py [CHECKPOINT ...] [--out bench/results/frontend_reuse.json]
"""

from __future__ import annotations

import argparse
import time

import numpy as np
import torch

import asit_helpers  # noqa: F401  before _common: PYTHONPATH picks the code measured
from _common import RESULTS, machine_info, write_json

SR = 16000


@torch.inference_mode()
def stitched_vs_whole(model, audio: np.ndarray, hop: int, windows: int = 6) -> dict:
    """Max/median |logit difference| and top-1 agreement of stitched front-end frames against the whole window."""
    cfg = model.config
    size, stride = int(cfg.clip_seconds * SR), cfg.frame_stride
    k = hop // stride
    extractor, front = model.feature_extractor(), model.backbone.feature_extractor
    replace: dict = {}
    hook = front.register_forward_hook(lambda module, args, out: replace.get("frames", out))
    diffs, agree, previous = [], [], None
    try:
        for w in range(windows):
            x = extractor([audio[w * hop : w * hop + size]], sampling_rate=SR, return_tensors="pt")["input_values"]
            replace.clear()
            frames = front(x)
            whole = model(x).logits
            if previous is not None:
                new = front(x[:, (frames.shape[-1] - k) * stride :])[..., :k]  # the hop's frames, this window's norm
                replace["frames"] = torch.cat([previous[..., k:], new], dim=-1)
                stitched = model(x).logits
                replace.clear()
                diffs.append(float((stitched - whole).abs().max()))
                agree.append(bool(stitched.argmax() == whole.argmax()))
            previous = frames
    finally:
        hook.remove()
    return {"max_abs_logit_diff": round(max(diffs), 6), "median_abs_logit_diff": round(float(np.median(diffs)), 6),
            "top1_agree": f"{sum(agree)}/{len(agree)}"}


@torch.inference_mode()
def same_samples(model, hop: int) -> dict:
    """Overlapping frames of two windows cut from the same unnormalised samples (the conv arithmetic alone)."""
    cfg = model.config
    size, k = int(cfg.clip_seconds * SR), hop // cfg.frame_stride
    x = torch.from_numpy(np.random.default_rng(0).standard_normal(size + hop).astype(np.float32))[None]
    a, b = model.backbone.feature_extractor(x[:, :size]), model.backbone.feature_extractor(x[:, hop:])
    return {"overlap_max_abs_diff": round(float((a[..., k:] - b[..., :-k]).abs().max()), 6),
            "frame_scale": round(float(a.abs().max()), 4)}


def front_end_share(model, reps: int = 5) -> dict:
    """Seconds of the front end and of the whole forward pass at predict's precision (p50 of ``reps``)."""
    from asit_helpers.inference import bf16_copy, classify_batch
    from asit_helpers.runtime import resolve_precision

    precision = resolve_precision("auto", model.device).precision
    x = torch.randn(1, int(model.config.clip_seconds * SR))
    runner = bf16_copy(model) if precision == "bf16" else model  # built outside inference mode, as predict does

    def timed(fn):
        with torch.inference_mode():
            fn()
            out = []
            for _ in range(reps):
                t = time.perf_counter()
                fn()
                out.append(time.perf_counter() - t)
        return float(np.median(out))

    with torch.autocast("cpu", dtype=torch.bfloat16, enabled=precision == "bf16"):
        front = timed(lambda: runner.backbone.feature_extractor(x))
    whole = timed(lambda: classify_batch(model, x, precision=precision))
    return {"precision": precision, "front_end_s": round(front, 4), "forward_s": round(whole, 4),
            "front_end_share": round(front / whole, 3)}


def main() -> None:
    from asit_helpers import AsitForAudioClassification
    from asit_helpers.model import load_model
    from asit_helpers.synth import render_recording

    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("checkpoints", nargs="*", help="trained checkpoints to measure as well as base-random")
    ap.add_argument("--hop", type=float, default=0.5)
    ap.add_argument("--out", default=str(RESULTS / "frontend_reuse.json"))
    args = ap.parse_args()
    hop = int(args.hop * SR)
    audio, _ = render_recording([("dog", 1.0), ("siren", 4.0), ("rain", 6.5)], 10.0, seed=4)
    torch.manual_seed(0)
    models = {c: load_model(c) for c in args.checkpoints}
    models["base-random"] = AsitForAudioClassification.from_backbone("base-random", labels=[f"c{i}" for i in range(22)])
    rows = []
    for name, model in models.items():
        model.eval()
        if hop % model.config.frame_stride:
            raise SystemExit(f"--hop {args.hop} is not a whole number of {name}'s {model.config.frame_stride}-sample "
                             "frame stride")
        row = {"model": name, "feat_extract_norm": getattr(model.config.backbone_config, "feat_extract_norm", None),
               "do_normalize": model.config.do_normalize, **stitched_vs_whole(model, audio, hop),
               **same_samples(model, hop), **front_end_share(model)}
        rows.append(row)
        print(row, flush=True)
    write_json(args.out, {"machine": machine_info(), "hop_s": args.hop, "models": rows})


if __name__ == "__main__":
    main()
