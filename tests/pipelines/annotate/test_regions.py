"""Positional attributes measured from speech regions: since onset, utterance edges, boundaries."""

from __future__ import annotations

import numpy as np

from pipelines.annotate.regions import (
    BOUNDARY_VALUES,
    SINCE_ONSET_VALUES,
    UTTERANCE_EDGE_VALUES,
    boundary_codes,
    since_onset_codes,
    speech_runs,
    utterance_edge_codes,
)


def names(values: list[str], codes_T: np.ndarray) -> list[str]:
    return [values[c] if c >= 0 else "-" for c in codes_T]


def mask(n: int, *spans: tuple[int, int]) -> np.ndarray:
    speech_T = np.zeros(n, dtype=bool)
    for start, stop in spans:
        speech_T[start:stop] = True
    return speech_T


def test_speech_runs() -> None:
    starts, stops = speech_runs(mask(10, (0, 2), (5, 10)))
    assert starts.tolist() == [0, 5] and stops.tolist() == [2, 10]


def test_since_onset_bands() -> None:
    codes_T = since_onset_codes(mask(70, (3, 63)))
    assert names(SINCE_ONSET_VALUES, codes_T[:3]) == ["-"] * 3
    assert set(names(SINCE_ONSET_VALUES, codes_T[3:8])) == {"0-100 ms"}  # frames 0-4 after the onset
    assert set(names(SINCE_ONSET_VALUES, codes_T[8:18])) == {"100-300 ms"}
    assert set(names(SINCE_ONSET_VALUES, codes_T[18:53])) == {"0.3-1 s"}
    assert set(names(SINCE_ONSET_VALUES, codes_T[53:63])) == {"> 1 s"}
    assert names(SINCE_ONSET_VALUES, codes_T[63:]) == ["-"] * 7


def test_utterance_edges() -> None:
    codes_T = utterance_edge_codes(mask(30, (2, 22), (24, 30)))
    assert names(UTTERANCE_EDGE_VALUES, codes_T[:7]) == ["-", "-"] + ["first 100 ms"] * 5
    assert set(names(UTTERANCE_EDGE_VALUES, codes_T[7:17])) == {"-"}
    assert names(UTTERANCE_EDGE_VALUES, codes_T[17:24]) == ["last 100 ms"] * 5 + ["-", "-"]
    # a 6-frame region: each frame goes to its nearer end, the middle pair split evenly
    assert names(UTTERANCE_EDGE_VALUES, codes_T[24:]) == ["first 100 ms"] * 3 + ["last 100 ms"] * 3


def test_boundaries_are_the_frames_within_40_ms() -> None:
    codes_T = boundary_codes(mask(30, (10, 20)))
    expected = ["-"] * 8 + ["onset"] * 4 + ["-"] * 6 + ["offset"] * 4 + ["-"] * 8
    assert names(BOUNDARY_VALUES, codes_T) == expected
    # a 3-frame region: onset and offset reach overlap, the nearer one wins (a tie goes to the onset)
    assert names(BOUNDARY_VALUES, boundary_codes(mask(9, (3, 6)))) == ["-"] + ["onset"] * 4 + [
        "offset"
    ] * 3 + ["-"]
    assert set(boundary_codes(np.zeros(5, dtype=bool))) == {-1}
