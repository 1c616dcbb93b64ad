"""ASiT helpers: audio event classification with a Wav2Vec2 backbone and learnable attention pooling.

    from asit_helpers import load_audio, AsitForAudioClassification, predict
"""
from .audio import SAMPLE_RATE, AudioError, fix_length, load_audio
from .inference import Prediction, predict
from .model import AsitConfig, AsitForAudioClassification, load_model

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
]
