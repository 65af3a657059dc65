"""Silero VAD on hand-built audio, and the smoothing of its decisions."""

from __future__ import annotations

from typing import Callable

import numpy as np

from pipelines.annotate.framing import frame_count
from pipelines.annotate.regions import speech_runs
from pipelines.annotate.vad import smooth, speech_frames
from tests.pipelines.annotate.conftest import silence


def test_vowels_between_silences_are_one_speech_region(
    vowel_between_silences: Callable[[], np.ndarray],
) -> None:
    audio = vowel_between_silences()
    (speech_T,) = speech_frames([audio], [frame_count(audio)])
    starts, stops = speech_runs(speech_T)
    assert len(starts) == 1
    assert 24 <= starts[0] <= 28  # the vowels start at frame 25; Silero scores 32 ms chunks
    assert 74 <= stops[0] <= 82  # they end at frame 75; Silero lets go of speech up to ~100 ms late


def test_silence_is_non_speech_and_batches_match_single_clips(
    vowel_between_silences: Callable[[], np.ndarray],
) -> None:
    audios = [silence(1.0), vowel_between_silences(), silence(0.01)]
    n_frames = [frame_count(a) for a in audios]
    batched = speech_frames(audios, n_frames)
    assert [len(s) for s in batched] == n_frames
    assert not batched[0].any() and not batched[2].any()
    np.testing.assert_array_equal(batched[1], speech_frames([audios[1]], [n_frames[1]])[0])


def test_smooth_fills_short_pauses_and_drops_clicks() -> None:
    raw_T = np.zeros(40, dtype=bool)
    raw_T[2:12] = True  # speech, a 5-frame (100 ms) pause, speech
    raw_T[17:25] = True
    raw_T[31:35] = True  # a 6-frame pause, then 4 frames (80 ms) alone: a click
    speech_T = smooth(raw_T)
    np.testing.assert_array_equal(np.flatnonzero(speech_T), np.arange(2, 25))
