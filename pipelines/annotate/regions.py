"""Speech regions of a clip (runs of VAD speech frames) and the positional attributes measured from them.

A region is a maximal run of speech frames; its onset is the start of its first frame and its offset the end
of its last. A clip that starts in speech has an onset at frame 0: in its encoder window it follows silence
(the window's start, or the 0.5 s gap `pipelines.recordings.join` leaves between clips).
"""

from __future__ import annotations

import numpy as np

from pipelines.constants import FRAME_SECONDS

SINCE_ONSET_VALUES = ["0-100 ms", "100-300 ms", "0.3-1 s", "> 1 s"]
SINCE_ONSET_EDGES_S = (0.1, 0.3, 1.0)
"""Where one `since_onset` band ends and the next begins (time from the onset to the frame's start)."""
UTTERANCE_EDGE_VALUES = ["first 100 ms", "last 100 ms"]
EDGE_SECONDS = 0.1
"""The span at each end of a region that counts as its edge (5 frames)."""
BOUNDARY_VALUES = ["onset", "offset"]
BOUNDARY_SECONDS = 0.04
"""A frame whose centre is this close to an onset or offset is at that boundary (4 frames around it)."""


def speech_runs(speech_T: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """(starts, stops) of the runs of True in `speech_T` (stops exclusive), as int arrays."""
    padded = np.concatenate([[False], np.asarray(speech_T, dtype=bool), [False]])
    changes = np.flatnonzero(padded[1:] != padded[:-1])
    return changes[0::2], changes[1::2]


def since_onset_codes(speech_T: np.ndarray) -> np.ndarray:
    """int32 (T,): band of the time from the frame's region onset to the frame's start; -1 off speech."""
    codes_T = np.full(len(speech_T), -1, dtype=np.int32)
    edges = np.round(np.array(SINCE_ONSET_EDGES_S) / FRAME_SECONDS).astype(int)
    for start, stop in zip(*speech_runs(speech_T)):
        codes_T[start:stop] = np.searchsorted(edges, np.arange(stop - start), side="right")
    return codes_T


def utterance_edge_codes(speech_T: np.ndarray) -> np.ndarray:
    """int32 (T,): first / last 100 ms of each region (a frame in both goes to the nearer end); else -1."""
    codes_T = np.full(len(speech_T), -1, dtype=np.int32)
    width = int(round(EDGE_SECONDS / FRAME_SECONDS))
    for start, stop in zip(*speech_runs(speech_T)):
        from_start = np.arange(stop - start)
        from_stop = from_start[::-1]
        region = codes_T[start:stop]
        region[(from_stop < width) & (from_stop < from_start)] = 1
        region[(from_start < width) & (from_start <= from_stop)] = 0
    return codes_T


def boundary_codes(speech_T: np.ndarray) -> np.ndarray:
    """int32 (T,): frames whose centre is within 40 ms of an onset (0) or offset (1), the nearer; else -1."""
    starts, stops = speech_runs(speech_T)
    centres_T = np.arange(len(speech_T)) + 0.5  # in frames
    reach = BOUNDARY_SECONDS / FRAME_SECONDS
    to_onset_T = _distance_to_nearest(centres_T, starts)
    to_offset_T = _distance_to_nearest(centres_T, stops)
    codes_T = np.full(len(speech_T), -1, dtype=np.int32)
    codes_T[(to_offset_T <= reach) & (to_offset_T < to_onset_T)] = 1
    codes_T[(to_onset_T <= reach) & (to_onset_T <= to_offset_T)] = 0
    return codes_T


def _distance_to_nearest(points_T: np.ndarray, marks: np.ndarray) -> np.ndarray:
    if len(marks) == 0:
        return np.full(len(points_T), np.inf)
    return np.abs(points_T[:, None] - marks[None, :]).min(axis=1)
