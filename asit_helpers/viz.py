"""Every plot ASiT draws. Each function takes data or a Prediction / evaluation report and returns a
matplotlib Figure (or Axes), so notebooks, ``make demo`` and tests draw the same pictures.

Colours and line styles are chosen to read in light and dark notebook themes.
"""

from __future__ import annotations

import matplotlib

matplotlib.use(matplotlib.get_backend() if matplotlib.get_backend() else "Agg")

import matplotlib.pyplot as plt  # noqa: E402
import numpy as np  # noqa: E402

# ---- data plots (clips per class/split, durations, waveforms, spectrograms, players) ------------------------

# ---- training and evaluation plots (learning curves, confusion heatmap) ------------------------------------

# ---- prediction and attention plots (waveform + log-mel + attention over time, top-k bars, profiles) -------
