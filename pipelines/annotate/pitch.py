"""Pitch per encoder frame: Praat's F0 (Boersma 1993, autocorrelation; through `praat-parselmouth`) in bands.

Praat's `To Pitch` with a 10 ms time step and its defaults (floor 75 Hz, ceiling 600 Hz) is the standard
phonetics measurement; each encoder frame takes the pitch frame nearest its centre, (t + 0.5) * 20 ms, and
is unvoiced where Praat found no pitch there, outside Praat's analysed span (the clip's first and last
half window), or in a clip too short for Praat's 40 ms window. Non-speech (tones, music) gets its F0 too:
the bands describe the sound, not whether it is speech.
"""

from __future__ import annotations

import numpy as np
import parselmouth

from pipelines.constants import FRAME_SECONDS, SAMPLE_RATE

PITCH_VALUES = ["unvoiced", "< 120 Hz", "120-200 Hz", "200-300 Hz", ">= 300 Hz"]
PITCH_EDGES_HZ = (120.0, 200.0, 300.0)
"""Where one voiced band ends and the next begins (an F0 on an edge belongs to the band above)."""
TIME_STEP_S = 0.01


def f0_hz(audio: np.ndarray, n_frames: int) -> np.ndarray:
    """(T,) Praat's F0 at each encoder frame's centre in Hz, 0 where unvoiced."""
    f0_T = np.zeros(n_frames)
    try:
        pitch = parselmouth.Sound(audio.astype(np.float64), sampling_frequency=SAMPLE_RATE).to_pitch(
            time_step=TIME_STEP_S
        )
    except parselmouth.PraatError:  # shorter than Praat's analysis window
        return f0_T
    f0_P = pitch.selected_array["frequency"]
    centres_T = (np.arange(n_frames) + 0.5) * FRAME_SECONDS
    nearest_T = np.round((centres_T - pitch.x1) / pitch.dx).astype(int)
    inside = (nearest_T >= 0) & (nearest_T < len(f0_P))
    f0_T[inside] = f0_P[nearest_T[inside]]
    return f0_T


def pitch_codes(audio: np.ndarray, n_frames: int) -> np.ndarray:
    """int32 (T,) band of each frame's F0 (`PITCH_VALUES`; 0 is unvoiced)."""
    f0_T = f0_hz(audio, n_frames)
    voiced_band_T = 1 + np.searchsorted(PITCH_EDGES_HZ, f0_T, side="right")
    return np.where(f0_T > 0, voiced_band_T, 0).astype(np.int32)
