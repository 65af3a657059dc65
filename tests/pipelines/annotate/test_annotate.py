"""`annotate_frames` and `annotate_run` end to end on a tiny hand-built corpus and activation shards."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest

from pipelines.activations import ActivationsMeta, append_shard
from pipelines.annotate.annotate import annotate_frames, annotate_run
from pipelines.annotate.attributes import ATTRIBUTE_TYPES, ATTRIBUTES
from pipelines.annotate.frames import FrameAnnotations
from pipelines.audio import write_flac
from pipelines.corpus.manifest import Clip, read_manifest, write_manifest
from pipelines.paths import RunPaths
from tests.pipelines.annotate.conftest import silence, sine, vowels

WINDOWS = [[0, 1], [2]]
WORDS = [[("Casa", 0.2, 0.72)], [], []]
"""Clip 0's one word covers frames 10-35 (centres 0.21-0.71 s)."""


@pytest.fixture(scope="module")
def corpus(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """Two Spanish clips of one speaker (joined in one window) and a noise clip alone."""
    folder = tmp_path_factory.mktemp("corpus")
    audios = [
        np.concatenate([silence(0.2), vowels(0.6), silence(0.2)]),
        vowels(0.6, f0=220.0),
        sine(0.4, 0.3),
    ]
    clips = []
    for row, (audio, category) in enumerate(zip(audios, ["speech", "speech", "noise"])):
        write_flac(folder / f"audio/{row}.flac", audio)
        speech = category == "speech"
        clips.append(
            Clip(
                id=f"clip-{row}",
                path=f"audio/{row}.flac",
                duration=len(audio) / 16000,
                category=category,
                language="es" if speech else "",
                speaker="voice-1" if speech else "",
                source="hand-built",
            )
        )
    write_manifest(folder, clips)
    return folder


def all_frames(n_frames: list[int]) -> tuple[np.ndarray, np.ndarray]:
    rows = np.concatenate([np.full(n, row) for row, n in enumerate(n_frames)])
    return rows, np.concatenate([np.arange(n) for n in n_frames])


def value(annotations: FrameAnnotations, name: str, index: int) -> str:
    code = annotations.codes[name][index]
    return annotations.vocab[name][code] if code >= 0 else "-"


def test_every_attribute_on_known_frames(corpus: Path) -> None:
    clips = read_manifest(corpus)
    clip_row, frame = all_frames([50, 30, 20])
    done: list[int] = []
    timings: dict[str, float] = {}
    annotations = annotate_frames(
        corpus, clips, clip_row, frame, WINDOWS, WORDS, done.append, timings=timings
    )
    assert list(annotations.codes) == list(ATTRIBUTES) == list(ATTRIBUTE_TYPES)
    assert sum(done) == annotations.n_frames == 100
    assert {"decode", "vad", "pitch", "words_phones"} <= set(timings)
    np.testing.assert_array_equal(annotations.frame, frame)

    first, second, noise = 0, 50, 80  # the first frame of each clip
    assert [value(annotations, "language", i) for i in (first, second, noise)] == ["es", "es", "-"]
    assert [value(annotations, "speaker", i) for i in (first, second, noise)] == ["voice-1", "voice-1", "-"]
    assert annotations.vocab["category"] == ["noise", "speech"]
    assert value(annotations, "source", noise) == "hand-built"
    # clip 1 follows clip 0 (1 s, 50 frames) and a 0.5 s gap in their window: it starts at frame 75
    assert value(annotations, "window_position", second) == "0.5-2 s"
    assert value(annotations, "window_position", second + 25) == "2-10 s"
    assert value(annotations, "window_position", noise) == "0-0.5 s"

    words = [value(annotations, "word", i) for i in range(50)]
    assert words == ["-"] * 10 + ["casa"] * 26 + ["-"] * 14
    phones = [value(annotations, "phone", i) for i in range(10, 36)]
    assert phones == ["k"] * 5 + ["a"] * 8 + ["s"] * 5 + ["a"] * 8
    assert value(annotations, "language_phone", 25) == "es:/s/"
    assert value(annotations, "phone", second) == "-"

    assert value(annotations, "vad", 30) == "speech" and value(annotations, "vad", 2) == "non-speech"
    assert (
        value(annotations, "pitch", 30) == "120-200 Hz"
        and value(annotations, "pitch", second + 15) == "200-300 Hz"
    )
    assert value(annotations, "loudness", 2) == "< -60 dB"


def test_run_frames_from_shards_and_a_subset(corpus: Path, tmp_path: Path) -> None:
    clips = read_manifest(corpus)
    run = RunPaths(tmp_path / "run")
    meta = ActivationsMeta(model="m", layer=0, d_model=4, corpus="tiny", window="recording")
    clip_row, frame = all_frames([50, 30, 20])
    for rows, windows in (([0, 1], [WINDOWS[0]]), ([2], [WINDOWS[1]])):
        in_shard = np.isin(clip_row, rows)
        index_N2 = np.stack([clip_row[in_shard], frame[in_shard]], axis=1)
        append_shard(run.activations, meta, np.zeros((len(index_N2), 4)), index_N2, windows)
    from_run = annotate_run(run, corpus, WORDS)
    direct = annotate_frames(corpus, clips, clip_row, frame, WINDOWS, WORDS)
    assert from_run.vocab == direct.vocab
    for name in ATTRIBUTES:
        np.testing.assert_array_equal(from_run.codes[name], direct.codes[name])

    # clip 1's frames alone are still placed after clip 0 in their window
    subset = annotate_frames(corpus, clips, clip_row[50:80], frame[50:80], WINDOWS, WORDS)
    np.testing.assert_array_equal(subset.codes["window_position"], direct.codes["window_position"][50:80])


def test_clip_words_must_cover_the_manifest(corpus: Path) -> None:
    with pytest.raises(ValueError, match="clip_words"):
        annotate_frames(corpus, read_manifest(corpus), np.zeros(1), np.zeros(1), [], [])
