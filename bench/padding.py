"""How much zero padding changes a group-norm backbone's answer (issue 17, item 3).

wav2vec2-base's front end uses group norm and its encoder takes no attention mask, so a short clip padded beside
a 5 s clip in one batch is a different input from the clip alone (what ``predict`` sees). On a random-initialised
base-size model (``from_backbone("base-random")``: wav2vec2-base's architecture and compute, group norm) this
script classifies short synthetic clips alone and padded to 5 s (the clip's sample mask passed, as a padded batch
does) and reports the change in class probabilities, top-1 flips and the cosine between the pooled embeddings.

    python bench/padding.py [--clips 12] [--lengths 1.3 2.5 4.0]
"""

from __future__ import annotations

import argparse

import numpy as np
import torch

from _common import RESULTS, machine_info, write_json


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--clips", type=int, default=12, help="clips per length")
    parser.add_argument("--lengths", type=float, nargs="+", default=[1.3, 2.5, 4.0], help="seconds")
    parser.add_argument("--seed", type=int, default=0)
    args = parser.parse_args()

    from asit_helpers.model import AsitForAudioClassification
    from asit_helpers.synth import SYNTH_CLASSES, clip_seed, render_clip

    labels = [c.name for c in SYNTH_CLASSES]
    torch.manual_seed(args.seed)
    model = AsitForAudioClassification.from_backbone("base-random", labels=labels).eval()
    assert not model.config.backbone_masks_input
    extractor = model.feature_extractor()
    rows = []
    for seconds in args.lengths:
        for i in range(args.clips):
            spec = SYNTH_CLASSES[i % len(SYNTH_CLASSES)]
            clip, _ = render_clip(spec.name, clip_seed(args.seed + 99, i, int(seconds * 10)), seconds=seconds)
            partner, _ = render_clip(spec.name, clip_seed(args.seed + 98, i, 0), seconds=5.0)
            with torch.inference_mode():
                alone = extractor([clip], sampling_rate=16000, return_tensors="pt")
                out_alone = model(alone["input_values"], attention_mask=alone["attention_mask"])
                both = extractor([clip, partner], sampling_rate=16000, padding=True, return_attention_mask=True,
                                 return_tensors="pt")
                out_pad = model(both["input_values"], attention_mask=both["attention_mask"])
            p_alone = torch.softmax(out_alone.logits[0], -1).numpy()
            p_pad = torch.softmax(out_pad.logits[0], -1).numpy()
            e_alone, e_pad = out_alone.pooled[0], out_pad.pooled[0]
            rows.append({
                "seconds": seconds,
                "max_abs_dp": float(np.abs(p_alone - p_pad).max()),
                "top1_flip": bool(p_alone.argmax() != p_pad.argmax()),
                "top1_alone": float(p_alone.max()),
                "same_class_padded": float(p_pad[p_alone.argmax()]),
                "max_abs_dlogit": float((out_alone.logits[0] - out_pad.logits[0]).abs().max()),
                "embedding_cosine": float(torch.nn.functional.cosine_similarity(e_alone, e_pad, dim=0)),
            })
    summary = []
    for seconds in args.lengths:
        r = [x for x in rows if x["seconds"] == seconds]
        summary.append({
            "seconds": seconds,
            "clips": len(r),
            "top1_flips": sum(x["top1_flip"] for x in r),
            "mean_max_abs_dp": round(float(np.mean([x["max_abs_dp"] for x in r])), 4),
            "max_abs_dp": round(float(np.max([x["max_abs_dp"] for x in r])), 4),
            "mean_max_abs_dlogit": round(float(np.mean([x["max_abs_dlogit"] for x in r])), 4),
            "mean_embedding_cosine": round(float(np.mean([x["embedding_cosine"] for x in r])), 4),
        })
        s = summary[-1]
        print(f"{seconds:.1f} s clip padded to 5 s beside a 5 s clip: top-1 flips {s['top1_flips']}/{s['clips']}, "
              f"max |dp| mean {s['mean_max_abs_dp']} (worst {s['max_abs_dp']}), max |dlogit| mean "
              f"{s['mean_max_abs_dlogit']}, pooled-embedding cosine {s['mean_embedding_cosine']}")
    worst = max(rows, key=lambda x: x["max_abs_dp"])
    print(f"worst clip: top-1 {worst['top1_alone']:.3f} alone -> {worst['same_class_padded']:.3f} padded "
          f"({worst['seconds']} s)")
    path = write_json(RESULTS / "padding.json", {"summary": summary, "clips": rows, "machine": machine_info()})
    print(f"saved {path}")


if __name__ == "__main__":
    main()
