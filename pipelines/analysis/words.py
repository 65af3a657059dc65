"""Words under features' peaks: the aligned word at an encoder frame, and the commonest words under each
feature's top examples (shown on feature pages beside the scored label, `pipelines.analysis.interpret`).
"""

from __future__ import annotations

import re
import unicodedata
from collections import Counter
from typing import NamedTuple

import numpy as np

from pipelines.atlas.schema import FRAME_SECONDS

N_TOP_WORDS = 5

_EDGE_PUNCTUATION = re.compile(r"^[\W_]+|[\W_]+$")


def normalise_word(word: str) -> str:
    """Lower case, NFC, punctuation stripped from both ends ("¿Hola," -> "hola")."""
    return _EDGE_PUNCTUATION.sub("", unicodedata.normalize("NFC", word).lower())


def word_at(words: list[tuple[str, float, float]], frame: int) -> str:
    """The aligned word spoken at an encoder frame ('' when none)."""
    t = (frame + 0.5) * FRAME_SECONDS
    for word, start, end in words:
        if start <= t < end:
            return normalise_word(word)
    return ""


class ExampleWords(NamedTuple):
    """Per feature, the words under its top examples' peaks."""

    words: list[list[str]]
    """The most common words (at most `N_TOP_WORDS`, each under >= 2 peaks), most common first."""
    support: np.ndarray
    """(F,) share of the top examples whose peak falls on the most common word."""


def top_example_words(
    feature: np.ndarray,
    clip: np.ndarray,
    peak: np.ndarray,
    clip_words: list[list[tuple[str, float, float]]],
    n: int,
) -> ExampleWords:
    """Per feature: the most common words under its top examples' peaks, and the top word's share of them."""
    counters: list[Counter[str]] = [Counter() for _ in range(n)]
    n_examples = np.bincount(feature, minlength=n)
    for f, c, p in zip(feature, clip, peak):
        word = word_at(clip_words[c], int(p))
        if word:
            counters[f][word] += 1
    top_words = [[w for w, k in counter.most_common(N_TOP_WORDS) if k >= 2] for counter in counters]
    support = np.array(
        [
            counter.most_common(1)[0][1] / n_examples[f] if counter else 0.0
            for f, counter in enumerate(counters)
        ]
    )
    return ExampleWords(top_words, support)
