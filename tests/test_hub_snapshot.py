"""The real checkpoint path, offline: ``from_backbone("base")`` on a replica of the Hub snapshot of wav2vec2-base.

The Hub is unreachable here, so the test builds what ``huggingface_hub`` leaves on a student's disk after the
first download, in a temporary ``HF_HOME``:

    hub/models--facebook--wav2vec2-base/refs/main            (the commit hash)
    hub/models--facebook--wav2vec2-base/snapshots/<hash>/config.json, preprocessor_config.json, pytorch_model.bin

with the published config (``architectures: [Wav2Vec2ForPreTraining]``, full size), the pretraining-only weights
(quantizer, ``project_q``, ``project_hid``), the positional convolution stored under the old weight-norm names
``weight_g`` / ``weight_v``, and ``return_attention_mask: false``. Weights are randomly initialised (only their
layout is the real one). The load runs in a child Python with ``HF_HUB_OFFLINE=1`` (``huggingface_hub`` reads
``HF_HOME`` when imported), so its output is exactly what a student sees.

Run directly (``python tests/test_hub_snapshot.py HF_HOME``) this file is that child.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]
REPO = "facebook/wav2vec2-base"
COMMIT = "0b5b8e868dd84f03fd87d01f9c4ff0f080fecfe8"  # a stand-in hash: the layout matters, not its value

#: facebook/wav2vec2-base's config.json as published (the fields the Hub file has).
CONFIG = {
    "activation_dropout": 0.0, "apply_spec_augment": True, "architectures": ["Wav2Vec2ForPreTraining"],
    "attention_dropout": 0.1, "bos_token_id": 1, "codevector_dim": 256, "contrastive_logits_temperature": 0.1,
    "conv_bias": False, "conv_dim": [512] * 7, "conv_kernel": [10, 3, 3, 3, 3, 2, 2], "conv_stride": [5, 2, 2, 2, 2, 2, 2],
    "ctc_loss_reduction": "sum", "ctc_zero_infinity": False, "diversity_loss_weight": 0.1,
    "do_stable_layer_norm": False, "eos_token_id": 2, "feat_extract_activation": "gelu", "feat_extract_norm": "group",
    "feat_proj_dropout": 0.1, "feat_quantizer_dropout": 0.0, "final_dropout": 0.0, "freeze_feat_extract_train": True,
    "gradient_checkpointing": True, "hidden_act": "gelu", "hidden_dropout": 0.1, "hidden_size": 768,
    "initializer_range": 0.02, "intermediate_size": 3072, "layer_norm_eps": 1e-05, "layerdrop": 0.05,
    "mask_channel_length": 10, "mask_channel_min_space": 1, "mask_channel_other": 0.0, "mask_channel_prob": 0.0,
    "mask_channel_selection": "static", "mask_feature_length": 10, "mask_feature_prob": 0.0, "mask_time_length": 10,
    "mask_time_min_space": 1, "mask_time_other": 0.0, "mask_time_prob": 0.05, "mask_time_selection": "static",
    "model_type": "wav2vec2", "no_mask_channel_overlap": False, "no_mask_time_overlap": False,
    "num_attention_heads": 12, "num_codevector_groups": 2, "num_codevectors_per_group": 320,
    "num_conv_pos_embedding_groups": 16, "num_conv_pos_embeddings": 128, "num_feat_extract_layers": 7,
    "num_hidden_layers": 12, "num_negatives": 100, "pad_token_id": 0, "proj_codevector_dim": 256,
    "transformers_version": "4.7.0.dev0", "vocab_size": 32,
}
PREPROCESSOR = {
    "do_normalize": True, "feature_extractor_type": "Wav2Vec2FeatureExtractor", "feature_size": 1,
    "padding_side": "right", "padding_value": 0.0, "return_attention_mask": False, "sampling_rate": 16000,
}
PRETRAINING_ONLY = ("quantizer.", "project_q.", "project_hid.")


def build_snapshot(hf_home: Path) -> dict:
    """Write the replica under ``hf_home`` and return the state dict it stored (checkpoint key → tensor)."""
    import torch
    from transformers import Wav2Vec2Config, Wav2Vec2ForPreTraining

    torch.manual_seed(0)
    model = Wav2Vec2ForPreTraining(Wav2Vec2Config(**CONFIG))
    state = {}
    for key, value in model.state_dict().items():
        # torch's parametrized weight norm names → the names fairseq's conversion wrote in 2021
        key = key.replace("parametrizations.weight.original0", "weight_g").replace("parametrizations.weight.original1", "weight_v")
        state[key] = value.detach().clone().contiguous()
    assert any(k.endswith("pos_conv_embed.conv.weight_g") for k in state)
    repo = hf_home / "hub" / ("models--" + REPO.replace("/", "--"))
    snapshot = repo / "snapshots" / COMMIT
    snapshot.mkdir(parents=True)
    (repo / "refs").mkdir()
    (repo / "refs" / "main").write_text(COMMIT)
    (snapshot / "config.json").write_text(json.dumps(CONFIG, indent=2))
    (snapshot / "preprocessor_config.json").write_text(json.dumps(PREPROCESSOR, indent=2))
    torch.save(state, snapshot / "pytorch_model.bin")
    return state


def child(hf_home: Path) -> None:
    """In a fresh process with HF_HOME/HF_HUB_OFFLINE set: load, compare every tensor, train one step, predict."""
    import numpy as np
    import torch

    from asit_helpers import AsitForAudioClassification, predict

    expected = torch.load(next((hf_home / "hub").rglob("pytorch_model.bin")), weights_only=True)
    model = AsitForAudioClassification.from_backbone("base", labels=["dog", "siren"])
    print("---- loaded ----", flush=True)
    loaded = model.backbone.state_dict()
    renamed = {
        "encoder.pos_conv_embed.conv.weight_g": "encoder.pos_conv_embed.conv.parametrizations.weight.original0",
        "encoder.pos_conv_embed.conv.weight_v": "encoder.pos_conv_embed.conv.parametrizations.weight.original1",
    }
    compared, differ = 0, []
    for key, value in expected.items():
        if key.startswith(PRETRAINING_ONLY):
            continue
        name = key.removeprefix("wav2vec2.")
        name = renamed.get(name, name)
        if name not in loaded:  # old-style weight norm in this torch/transformers: same names as the file
            differ.append(f"{name} not in the backbone")
        elif not torch.equal(loaded[name], value):
            differ.append(name)
        compared += 1
    conv = model.backbone.encoder.pos_conv_embed.conv
    effective = torch._weight_norm(expected["wav2vec2.encoder.pos_conv_embed.conv.weight_v"],
                                   expected["wav2vec2.encoder.pos_conv_embed.conv.weight_g"], dim=2)
    result = {
        "compared": compared, "backbone_tensors": len(loaded), "differ": differ,
        "pos_conv_weight_equal": bool(torch.allclose(conv.weight, effective, atol=1e-6, rtol=0)),
        "do_normalize": model.config.do_normalize, "masks_input": model.config.backbone_masks_input,
    }

    # one training step on the real compute (1 s clips), then predict on 2 s of audio
    rng = np.random.default_rng(0)
    audio = torch.from_numpy(rng.normal(0, 0.1, size=(2, 16000)).astype(np.float32))
    model.freeze_feature_encoder()
    model.train()
    optimizer = torch.optim.AdamW([p for p in model.parameters() if p.requires_grad], lr=1e-4)
    before = model.classifier.weight.detach().clone()
    out = model(audio, labels=torch.tensor([0, 1]))
    out.loss.backward()
    optimizer.step()
    result["train_loss"] = float(out.loss.detach())
    result["head_changed"] = not torch.equal(before, model.classifier.weight)
    prediction = predict(model.eval(), rng.normal(0, 0.1, size=32000).astype(np.float32))
    result["prediction"] = {"label": prediction.label, "top": [label for label, _ in prediction.top_k]}
    print("RESULT " + json.dumps(result), flush=True)


@pytest.fixture(scope="module")
def hub_load(tmp_path_factory):
    """Build the replica, run the child, return (its stdout+stderr up to the load, the result dict)."""
    hf_home = tmp_path_factory.mktemp("hf_home")
    build_snapshot(hf_home)
    env = {k: v for k, v in os.environ.items() if not k.startswith(("HF_", "HUGGINGFACE_", "TRANSFORMERS_"))}
    env.update(HF_HOME=str(hf_home), HF_HUB_OFFLINE="1", PYTHONPATH=str(ROOT), PYTHONWARNINGS="default")
    proc = subprocess.run([sys.executable, __file__, str(hf_home)], env=env, capture_output=True, text=True, timeout=600)
    output = proc.stdout + proc.stderr
    assert proc.returncode == 0, output
    result = json.loads(next(line for line in output.splitlines() if line.startswith("RESULT "))[7:])
    return output.split("---- loaded ----")[0], result


@pytest.mark.slow
def test_every_backbone_weight_loads_exactly(hub_load):
    _, result = hub_load
    assert result["differ"] == []
    assert result["compared"] == result["backbone_tensors"]  # nothing of the backbone left at its random init
    assert result["pos_conv_weight_equal"]  # the weight-norm convolution computes the stored g·v/|v|
    assert result["do_normalize"] is True and result["masks_input"] is False  # group norm: no mask to the encoder


@pytest.mark.slow
def test_training_one_step_and_predict_work(hub_load):
    _, result = hub_load
    assert result["head_changed"] and result["train_loss"] > 0
    assert result["prediction"]["label"] in ("dog", "siren")
    assert sorted(result["prediction"]["top"]) == ["dog", "siren"]


@pytest.mark.slow
def test_a_student_sees_one_line_about_the_dropped_weights(hub_load):
    output, _ = hub_load
    lines = [line for line in output.splitlines() if line.strip()]
    assert len(lines) == 1, output
    line = lines[0]
    assert REPO in line and "pretraining" in line
    for part in ("quantizer", "project_q", "project_hid"):
        assert part in line
    assert "newly initialized" not in output and "UNEXPECTED" not in output and "Traceback" not in output


if __name__ == "__main__":
    child(Path(sys.argv[1]))
