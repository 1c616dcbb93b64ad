"""The Teach widget's Python side: recordings saved as WAV as they arrive, delete, train, restart-safe (no browser)."""

from __future__ import annotations

import io

import numpy as np
import pytest
import soundfile as sf

from asit_helpers.teach import NO_EVENT
from asit_helpers.teach_widget import TeachWidget, TeachWorkspace

SR = 16000


def _wav(x: np.ndarray) -> bytes:
    buf = io.BytesIO()
    sf.write(buf, x, SR, format="WAV")
    return buf.getvalue()


def _sound(kind: str, rng) -> np.ndarray:
    t = np.arange(int(1.2 * SR)) / SR
    if kind == "whistle":
        return (0.5 * np.sin(2 * np.pi * 2200 * t) + 0.01 * rng.standard_normal(t.size)).astype(np.float32)
    x = 0.01 * rng.standard_normal(t.size)
    x[rng.integers(0, t.size, 40)] = 0.9
    return x.astype(np.float32)


def test_recordings_are_saved_as_they_arrive_and_survive_a_restart(tmp_path):
    rng = np.random.default_rng(0)
    teacher = TeachWidget("tiny", tmp_path / "ws", steps=20, views=0, cv_folds=2)
    for name in ("whistle", "clicks"):
        teacher.add_class(name)
        for _ in range(3):
            teacher.add_bytes(name, _wav(_sound(name, rng)))
    teacher.add_bytes("background", _wav((0.02 * rng.standard_normal(6 * SR)).astype(np.float32)))
    assert sorted(p.name for p in (tmp_path / "ws" / "whistle").iterdir()) == ["001.wav", "002.wav", "003.wav"]
    teacher.delete("whistle", "002.wav")
    assert teacher.workspace.counts() == {"clicks": 3, "whistle": 2, "background": 1}
    assert (tmp_path / "ws" / ".deleted" / "whistle").is_dir()  # moved, not destroyed

    # a new widget on the same folder (a kernel restart) sees the same recordings; the next file does not overwrite
    again = TeachWidget("tiny", tmp_path / "ws", steps=20, views=0, cv_folds=2)
    assert again.workspace.counts() == {"clicks": 3, "whistle": 2, "background": 1}
    assert again.add_bytes("whistle", _wav(_sound("whistle", rng))).name == "004.wav"
    result = again.train()
    assert [result.model.config.id2label[i] for i in range(3)] == ["clicks", "whistle", NO_EVENT]
    assert (tmp_path / "ws" / "model" / "model.safetensors").is_file()
    assert again.progress.value == 1.0 and "model ready in" in again.status.value
    assert "cross-validated accuracy" in again.report.value
    assert again.try_box.children  # something to try the model with
    # the model folder is not taken for a class next time
    assert TeachWorkspace(tmp_path / "ws").classes() == ["clicks", "whistle"]


@pytest.mark.parametrize("data, expected", [
    (b"not audio", "could not use"),
    (None, "no sound"),
    ("short", "record at least 0.5 s"),
])
def test_bad_recordings_show_a_message_and_save_nothing(tmp_path, data, expected):
    teacher = TeachWidget("tiny", tmp_path / "ws")
    teacher.add_class("clap")
    if data is None:
        data = _wav(np.zeros(SR, np.float32))
    elif data == "short":
        data = _wav((0.3 * np.ones(int(0.3 * SR))).astype(np.float32))
    teacher._guard(teacher.add_bytes, "clap", data, "x.wav")
    assert expected in teacher.message_text
    assert teacher.workspace.counts()["clap"] == 0


def test_class_names_are_checked_and_train_explains_missing_examples(tmp_path):
    teacher = TeachWidget("tiny", tmp_path / "ws")
    teacher._guard(teacher.add_class, "../evil")
    assert "can't be a class name" in teacher.message_text
    teacher._guard(teacher.add_class, NO_EVENT)
    assert "taken" in teacher.message_text
    teacher.add_class("clap")
    teacher._guard(teacher.train)
    assert "no examples" in teacher.message_text or "at least" in teacher.message_text
    assert not teacher.train_button.disabled
