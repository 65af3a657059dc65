"""Words per frame follow `word_at`: the word whose span holds the frame's centre, the first on overlap."""

from __future__ import annotations

from pipelines.analysis.words import word_at
from pipelines.annotate.words import word_index


def test_word_index_matches_word_at() -> None:
    words = [("Hola,", 0.1, 0.5), ("mundo", 0.5, 0.9), ("¿otra?", 0.85, 1.2), ("...", 1.3, 1.4)]
    index_T = word_index(words, 80)
    for t in range(80):
        expected = word_at(words, t)
        got = "" if index_T[t] < 0 else word_at([words[index_T[t]]], t)
        assert got == expected, t
    assert index_T[4] == -1 and index_T[5] == 0  # centre 0.09 s before the word, 0.11 s inside it
    assert index_T[42] == 1  # centre 0.85 s: both "mundo" and "¿otra?" hold it, the first listed wins
