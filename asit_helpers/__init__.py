"""ASiT helpers: audio event classification with a Wav2Vec2 backbone and learnable attention pooling.

    from asit_helpers import load_audio, AsitForAudioClassification, predict
"""
import multiprocessing as _mp

from .audio import SAMPLE_RATE, AudioError, fix_length, load_audio

_LAZY = {
    "Prediction": ".inference",
    "predict": ".inference",
    "AsitConfig": ".model",
    "AsitForAudioClassification": ".model",
    "load_model": ".model",
    "serve_in_notebook": ".colab",
}

if _mp.parent_process() is None:
    # A normal process: import the model now, which also registers ASiT with AutoConfig/AutoModel* (so
    # `pipeline("audio-classification", model=DIR)` works right after `import asit_helpers`).
    from .inference import Prediction, predict
    from .model import AsitConfig, AsitForAudioClassification, load_model
# In a spawned worker process (e.g. the preprocessing decoders) the names above load on first use instead:
# importing torch + transformers costs seconds per worker that decoding audio never needs.


def __getattr__(name: str):
    if name in _LAZY:
        import importlib

        return getattr(importlib.import_module(_LAZY[name], __name__), name)
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")

__version__ = "0.1.0"
__all__ = [
    "SAMPLE_RATE",
    "AudioError",
    "fix_length",
    "load_audio",
    "Prediction",
    "predict",
    "AsitConfig",
    "AsitForAudioClassification",
    "load_model",
    "serve_in_notebook",
]
