"""Which aligned word each encoder frame falls in: the rule of `pipelines.analysis.words.word_at`, per clip.

A frame belongs to the word whose [start, end) holds its centre, (t + 0.5) * 20 ms; where aligned words
overlap the first listed wins, as in `word_at`. Words are normalised with `normalise_word`.
"""

from __future__ import annotations

import numpy as np

from pipelines.constants import FRAME_SECONDS

Word = tuple[str, float, float]
"""(word, start s, end s), relative to the clip's start."""


def frame_centres(n_frames: int) -> np.ndarray:
    """(T,) seconds from the clip's start to each encoder frame's centre."""
    return (np.arange(n_frames) + 0.5) * FRAME_SECONDS


def word_index(words: list[Word], n_frames: int) -> np.ndarray:
    """int32 (T,): the index in `words` of the word under each frame's centre, -1 where none is."""
    centres_T = frame_centres(n_frames)
    index_T = np.full(n_frames, -1, dtype=np.int32)
    for i in reversed(range(len(words))):  # earlier words overwrite later ones: the first match wins
        _, start, end = words[i]
        index_T[np.searchsorted(centres_T, start, "left") : np.searchsorted(centres_T, end, "left")] = i
    return index_T
