"""Loudness per encoder frame: the RMS level of the frame's 320 samples, in dB relative to full scale.

The bands split the default corpus's frames sensibly: speech frames have a median of -21.5 dBFS (quartiles
-33 and -16.5), its silences and digital-silence clips fall under -60, and music, noise and tones sit mostly
between -40 and -10. A full-scale sine has an RMS of -3 dBFS.
"""

from __future__ import annotations

import numpy as np

from pipelines.annotate.framing import framed

LOUDNESS_VALUES = ["< -60 dB", "-60..-40 dB", "-40..-25 dB", "-25..-15 dB", ">= -15 dB"]
LOUDNESS_EDGES_DB = (-60.0, -40.0, -25.0, -15.0)
"""Where one band ends and the next begins (a level on an edge belongs to the band above)."""
FLOOR_DB = -200.0
"""The level of a frame of exact zeros."""


def rms_db(audio: np.ndarray, n_frames: int) -> np.ndarray:
    """(T,) float64 RMS level of each encoder frame in dBFS (zero past the audio's end)."""
    samples_TS = framed(audio, n_frames).astype(np.float64)
    rms_T = np.sqrt(np.mean(samples_TS**2, axis=1))
    return np.maximum(20.0 * np.log10(np.maximum(rms_T, 1e-300)), FLOOR_DB)


def loudness_codes(audio: np.ndarray, n_frames: int) -> np.ndarray:
    """int32 (T,) band of each frame's RMS level (`LOUDNESS_VALUES`)."""
    return np.searchsorted(LOUDNESS_EDGES_DB, rms_db(audio, n_frames), side="right").astype(np.int32)
