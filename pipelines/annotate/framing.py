"""A clip's samples cut into encoder frames: frame t holds samples [320 t, 320 (t + 1))."""

from __future__ import annotations

import numpy as np

from pipelines.constants import SAMPLES_PER_FRAME


def frame_count(audio: np.ndarray) -> int:
    """Encoder frames that hold any of `audio` (the last one may be partial), not capped at one window."""
    return -(-len(audio) // SAMPLES_PER_FRAME)


def framed(audio: np.ndarray, n_frames: int) -> np.ndarray:
    """(T, 320) float32 samples of the first `n_frames` frames, zero past the audio's end."""
    padded = np.zeros(n_frames * SAMPLES_PER_FRAME, dtype=np.float32)
    kept = audio[: len(padded)]
    padded[: len(kept)] = kept
    return padded.reshape(n_frames, SAMPLES_PER_FRAME)
