"""Expected failures of every subcommand end in a short explanation (asit_helpers.messages), never a traceback."""

from __future__ import annotations

import pytest

from asit_helpers import messages
from asit_helpers.cli import main


def run(capsys, *argv) -> tuple[int, str]:
    code = main([str(a) for a in argv])
    captured = capsys.readouterr()
    return code, captured.out + captured.err


def test_train_without_the_hub_says_what_to_do(train_cache, tmp_path, monkeypatch, capsys):
    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    monkeypatch.setenv("HF_HOME", str(tmp_path / "empty-hf-home"))
    code, text = run(capsys, "train", train_cache.folder, "--out", tmp_path / "k", "--preset", "base")
    assert code == 2
    assert "Traceback" not in text
    assert "facebook/wav2vec2-base" in text and "HF_HUB_OFFLINE=1" in text
    assert f"--preset {messages.OFFLINE_PRESET}" in text and "hf download facebook/wav2vec2-base" in text
    assert not (tmp_path / "k" / "model.safetensors").exists()


@pytest.mark.parametrize("command", ["predict", "evaluate", "serve"])
def test_not_a_checkpoint(command, train_cache, tmp_path, capsys, wav_file):
    extra = {"predict": [wav_file], "evaluate": [train_cache.folder], "serve": []}[command]
    code, text = run(capsys, command, tmp_path / "nope", *extra)
    assert code == 2 and "does not exist" in text and "asit train" in text
    code, text = run(capsys, command, train_cache.folder, *extra)  # a cache is not a checkpoint
    assert code == 2 and "not a checkpoint directory" in text


def test_missing_cache(tiny_checkpoint, tmp_path, capsys):
    for argv in (["train", tmp_path / "no-cache", "--out", tmp_path / "k"], ["evaluate", tiny_checkpoint, tmp_path]):
        code, text = run(capsys, *argv)
        assert code == 2 and "asit preprocess" in text and "Traceback" not in text


def test_bad_class_map(tmp_path, capsys):
    from asit_helpers.synth import make_soundscapes

    make_soundscapes(tmp_path / "d", clips_per_class=1, classes=["dog", "siren"], seconds=1.0, progress=False)
    bad = tmp_path / "map.yaml"
    bad.write_text("keep: [dog\n")
    code, text = run(capsys, "preprocess", tmp_path / "d", "--out", tmp_path / "c", "--classes", bad)
    assert code == 2 and "class map" in text and "keep / merge / rename" in text


def test_explain_recognises_hub_failures_and_leaves_bugs_alone(monkeypatch):
    monkeypatch.delenv("HF_HUB_OFFLINE", raising=False)
    cause = ConnectionError("[Errno -2] Name or service not known")
    try:
        try:
            raise cause
        except ConnectionError as inner:
            raise OSError("We couldn't connect to 'https://huggingface.co' to load the files") from inner
    except OSError as exc:
        text = messages.explain(exc, model_id="facebook/wav2vec2-base")
    assert "could not be reached" in text and "hf download facebook/wav2vec2-base" in text
    assert messages.explain(KeyError("a bug")) is None
    assert messages.explain(ValueError("bad input")) == "error: bad input"


def test_train_flags_are_generated_from_train_args():
    """Every TrainArgs field has a flag whose help comes from the field and shows its default(s)."""
    from dataclasses import fields

    from asit_helpers.cli import build_parser
    from asit_helpers.train import TrainArgs

    train_parser = build_parser()._subparsers._group_actions[0].choices["train"]
    flags = {a.dest: a for a in train_parser._actions if not (a.help or "").startswith("deprecated")}
    for f in fields(TrainArgs):
        assert f.name in flags, f"--{f.name.replace('_', '-')} missing"
        assert f.metadata["help"] in flags[f.name].help and "(default " in flags[f.name].help
    assert "tiny-fb: 60" in flags["epochs"].help  # the offline preset's recipe is shown beside the default
    assert "tiny" not in flags["preset"].metavar.replace("tiny-fb", "")  # the test fixture is not offered


def test_a_preset_alone_trains_its_recipe(monkeypatch, train_cache, tmp_path, capsys):
    import asit_helpers.train as train_module
    from asit_helpers.train import PRESETS, TrainArgs

    seen = {}

    def fake_train(cache, out, **kwargs):
        seen.update(kwargs)
        raise ValueError("stop here")

    monkeypatch.setattr(train_module, "train", fake_train)
    code, text = run(capsys, "train", train_cache.folder, "--out", tmp_path / "k", "--preset", "tiny-fb")
    settings = {k: v for k, v in seen.items() if k not in ("model", "resume", "overwrite", "device", "copy_to")}
    assert settings == {"preset": "tiny-fb"}  # nothing else: the recipe decides
    args = TrainArgs.for_preset(**settings)
    assert all(getattr(args, k) == v for k, v in PRESETS["tiny-fb"].recipe.items())
    assert "preset tiny-fb: pooling=attention" in text and "epochs=60" in text
    run(capsys, "train", train_cache.folder, "--out", tmp_path / "k", "--preset", "tiny-fb", "--epochs", "3",
        "--no-augment", "--model-kwargs", '{"num_heads": 2}')
    assert seen["epochs"] == 3 and seen["augment"] is None and seen["model_kwargs"] == {"num_heads": 2}
    assert "mode" not in seen  # one flag overrides one field


def test_test_fixture_and_measurement_presets_are_refused(monkeypatch, train_cache, tmp_path, capsys):
    import asit_helpers.train as train_module

    monkeypatch.setattr(train_module, "train", lambda *a, **k: (_ for _ in ()).throw(ValueError("stopped")))
    code, text = run(capsys, "train", train_cache.folder, "--out", tmp_path / "k", "--preset", "tiny")
    assert code == 2 and "test fixture" in text and "--preset tiny-fb" in text
    code, text = run(capsys, "train", train_cache.folder, "--out", tmp_path / "k", "--preset", "base-random")
    assert code == 2 and "speed measurements" in text and "stopped" not in text


def test_deprecated_flags_still_work(monkeypatch, train_cache, tmp_path, capsys):
    import asit_helpers.train as train_module

    seen = {}
    monkeypatch.setattr(train_module, "train", lambda *a, **k: seen.update(k) or (_ for _ in ()).throw(ValueError("x")))
    _, text = run(capsys, "train", train_cache.folder, "--out", tmp_path / "k", "--preset", "tiny-fb",
                  "--train-feature-encoder", "--mixed-precision", "no")
    assert seen["freeze_feature_encoder"] is False and seen["precision"] == "fp32" and "deprecated" in text


def test_predict_words_a_taught_no_event_answer_as_the_models_own(tiny_checkpoint, wav_file, tmp_path, capsys,
                                                                  monkeypatch):
    """The energy gate's "no event" keeps the model's guess as a guess; a taught model's own background answer is
    the model saying nothing it was taught is there (not "no event is only the model's guess")."""
    import dataclasses

    import asit_helpers.inference as inference
    from asit_helpers.model import load_model

    model = load_model(tiny_checkpoint)
    model.config.no_event_label = model.config.id2label[0]
    model.save_pretrained(tmp_path / "taught")
    real = inference.predict
    for label, reason, expected in [
        (model.config.id2label[0], "the taught background answer", "nothing it was taught is there"),
        (model.config.id2label[1], "silence: the loudest 250 ms is at -90 dB", "is only the model's guess"),
    ]:
        monkeypatch.setattr(inference, "predict", lambda *a, _l=label, _r=reason, **k: dataclasses.replace(
            real(*a, **k), label=_l, no_event=True, no_event_reason=_r))
        rc, out = run(capsys, "predict", str(tmp_path / "taught"), str(wav_file))
        assert rc == 0 and expected in out, out
