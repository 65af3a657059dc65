"""Packing clips into shared transcription windows and handing each clip back its own words."""

from __future__ import annotations

import numpy as np
import pytest

from pipelines.analysis.clips import GAP_S, WINDOW_S, split_words, transcribe_packed, transcription_windows
from tests.fixtures.tiny_whisper import tiny_whisper


def test_windows_fill_30_s_in_order_with_gaps() -> None:
    durations = [4.0, 5.0, 9.0, 10.0, 12.0, 29.5, 30.0]
    windows = transcription_windows(durations)
    assert [i for w in windows for i in w] == list(range(len(durations)))
    for window in windows:
        assert sum(durations[i] for i in window) + GAP_S * (len(window) - 1) <= WINDOW_S
    assert windows == [[0, 1, 2], [3, 4], [5], [6]]  # 4 + 5 + 9 + 10 + three 1 s gaps is past 30


def test_no_clips_no_windows() -> None:
    assert transcription_windows([]) == []


def test_words_go_to_the_clip_they_start_in_with_clip_relative_times() -> None:
    starts = [0.0, 3.0, 7.5]  # clips of 2.0, 3.5 and any seconds, GAP_S apart
    words = [
        (" one", 0.1, 0.6),
        (" two", 1.6, 2.6),  # runs into the gap: still the first clip's
        (" three", 2.45, 3.4),  # starts just before the middle of the gap: the first clip's
        (" four", 2.55, 3.2),  # just after it: the second clip's
        (" five", 7.2, 7.9),
    ]
    per_clip = split_words(words, starts)
    assert [[w for w, _, _ in clip] for clip in per_clip] == [
        [" one", " two", " three"],
        [" four"],
        [" five"],
    ]
    assert per_clip[1][0][1:] == pytest.approx((-0.45, 0.2))
    assert per_clip[2][0][1:] == pytest.approx((-0.3, 0.4))


def test_packed_transcription_returns_one_list_per_clip() -> None:
    bundle = tiny_whisper()
    rng = np.random.default_rng(0)
    audios = [0.1 * rng.standard_normal(16000 * s).astype(np.float32) for s in (1, 2, 3)]
    per_clip = transcribe_packed(bundle, audios, "en", max_new_tokens=4)
    assert len(per_clip) == 3
    for clip, audio in zip(per_clip, audios):
        assert all(-GAP_S / 2 <= start <= len(audio) / 16000 + GAP_S / 2 for _, start, _ in clip)
