"""Where a frame sits in the 30 s encoder window Whisper computed it in.

Whisper's encoder sees every frame at an absolute position (its sinusoidal position embedding), so features
can track the place in the window rather than anything in the audio. Extraction puts a speaker's clips
one after another in one window (`pipelines.recordings.join`, listed in meta.json as `shards[].windows`),
so a clip's frame t sits at the clip's offset + t; a clip alone (solo windows, or packed blocks, which
meta.json lists as windows of one clip) starts its window, and one longer than 30 s goes on in the next
window at position 0.
"""

from __future__ import annotations

import numpy as np

from pipelines.constants import FRAME_SECONDS, FRAMES_PER_WINDOW
from pipelines.recordings import join

WINDOW_POSITION_VALUES = ["0-0.5 s", "0.5-2 s", "2-10 s", "10-30 s"]
WINDOW_POSITION_EDGES_S = (0.5, 2.0, 10.0)
"""Where one band ends and the next begins (the start of the frame, from the window's start)."""


def joined_offsets(audios: list[np.ndarray]) -> list[int]:
    """Each clip's first encoder frame in the window that joins `audios` in this order (as extraction did)."""
    return join(audios)[1]


def window_position_codes(offset: int, frames: np.ndarray) -> np.ndarray:
    """int32 band of each of a clip's `frames` in its window, the clip starting at encoder frame `offset`."""
    edges = np.round(np.array(WINDOW_POSITION_EDGES_S) / FRAME_SECONDS).astype(int)
    position = (offset + np.asarray(frames)) % FRAMES_PER_WINDOW
    return np.searchsorted(edges, position, side="right").astype(np.int32)
