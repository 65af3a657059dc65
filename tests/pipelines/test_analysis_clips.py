"""Clips described window by window: each clip's share of its window, its own words back, and the stored
encoder states giving what encoding the joined clips again gives (the plain reference)."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest

from pipelines.activations import read_meta
from pipelines.analysis.clips import ClipWindow, describe_clips, run_windows, shares, split_words
from pipelines.audio import SAMPLE_RATE, write_flac
from pipelines.corpus.manifest import Clip, write_manifest
from pipelines.extract import extract
from pipelines.paths import RunPaths
from tests.fixtures.tiny_whisper import tiny_whisper


def test_each_clip_owns_its_window_up_to_the_middle_of_each_gap() -> None:
    assert shares([0.0, 3.0, 7.5], [2.0, 3.5, 1.0]) == [
        (float("-inf"), 2.5),
        (2.5, 7.0),
        (7.0, float("inf")),
    ]


def test_words_go_to_the_clip_they_start_in_with_clip_relative_times() -> None:
    starts, durations = [0.0, 3.0, 7.5], [2.0, 3.5, 1.0]  # gaps of 1.0 and 1.0 s
    words = [
        (" one", 0.1, 0.6),
        (" two", 1.6, 2.6),  # runs into the gap: still the first clip's
        (" three", 2.45, 3.4),  # starts just before the middle of the gap: the first clip's
        (" four", 2.55, 3.2),  # just after it: the second clip's
        (" five", 7.2, 7.9),
    ]
    per_clip = split_words(words, starts, durations)
    assert [[w for w, _, _ in clip] for clip in per_clip] == [
        [" one", " two", " three"],
        [" four"],
        [" five"],
    ]
    assert per_clip[0][2][1:] == pytest.approx((2.45, 2.5))  # kept inside its share
    assert per_clip[1][0][1:] == pytest.approx((-0.45, 0.2))
    assert per_clip[2][0][1:] == pytest.approx((-0.3, 0.4))


def test_words_go_by_their_middle_when_asked() -> None:
    words = [(" one", 0.1, 1.9), (" two", 1.9, 3.4)]  # " two" starts as the first clip's speech ends
    by_middle = split_words(words, [0.0, 3.0], [2.0, 1.0], by_middle=True)
    assert [[w for w, _, _ in clip] for clip in by_middle] == [[" one"], [" two"]]
    assert split_words(words, [0.0, 3.0], [2.0, 1.0])[1] == []


@pytest.fixture(scope="module")
def tiny():
    return tiny_whisper()


def speaker_corpus(folder: Path) -> tuple[Path, list[Clip]]:
    """Two speakers' short clips (joined into recordings by extraction) and a sound."""
    rng = np.random.default_rng(0)
    specs = [("a", "en", 1.2), ("a", "en", 2.0), ("b", "es", 1.5), ("", "", 0.8), ("b", "es", 0.7)]
    clips = []
    for i, (speaker, language, seconds) in enumerate(specs):
        write_flac(
            folder / f"c{i}.flac", 0.1 * rng.standard_normal(int(seconds * SAMPLE_RATE)).astype(np.float32)
        )
        category = "speech" if speaker else "noise"
        clips.append(Clip(f"c{i}", f"c{i}.flac", seconds, category, language, "", speaker=speaker))
    write_manifest(folder, clips)
    return folder, clips


def test_stored_windows_describe_clips_as_encoding_them_again_does(tiny, data_root) -> None:
    corpus, clips = speaker_corpus(data_root / "corpora" / "spk")
    run = RunPaths.named("clips")
    extract(corpus, run, tiny, None, 2, "recording")
    meta = read_meta(run.activations)
    stored = list(run_windows(run.activations, meta))
    assert [w.rows for w in stored] == [[0, 1], [2, 4], [3]]
    assert all(w.states_TD is not None for w in stored)
    hidden: list[tuple[np.ndarray, list[int]]] = []
    effect = {(0, 1)}
    kwargs = dict(
        effect_windows=effect, on_hidden=lambda h, n: hidden.append((h.numpy(), n)), aligner="transformers"
    )
    _, from_states = describe_clips(tiny, corpus, clips, stored, {}, 4, **kwargs)
    _, from_audio = describe_clips(tiny, corpus, clips, [ClipWindow(w.rows) for w in stored], {}, 4, **kwargs)
    assert [t.hypothesis for t in from_states] == [t.hypothesis for t in from_audio]
    assert [t.language for t in from_states] == ["en", "en", "es", "", "es"]
    for (stored_h, stored_n), (encoded_h, encoded_n) in zip(hidden[:1], hidden[1:]):
        assert stored_n == encoded_n == [stored[0].offsets[1] + 100]  # 2.0 s = 100 frames after its offset
        np.testing.assert_allclose(stored_h, encoded_h, atol=2e-2, rtol=1e-2)
