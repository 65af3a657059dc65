"""Annotations of real corpus audio: every frame extraction stores of the small test corpus (or the default).

Frames and windows are planned as `extract --window recording` plans them; words are each clip's reference
transcript spread evenly over its middle 80% (a stand-in for Whisper's alignment, which needs the model).
"""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest

from pipelines.annotate.annotate import annotate_frames
from pipelines.annotate.frames import FrameAnnotations
from pipelines.constants import SAMPLE_RATE, SAMPLES_PER_FRAME
from pipelines.corpus.manifest import MANIFEST_NAME, SPEECH, Clip, read_manifest
from pipelines.recordings import plan_recordings

pytestmark = pytest.mark.integration


def spread_transcript(clip: Clip) -> list[tuple[str, float, float]]:
    tokens = clip.transcript.split()
    step = 0.8 * clip.duration / max(len(tokens), 1)
    return [
        (w, 0.1 * clip.duration + i * step, 0.1 * clip.duration + (i + 1) * step)
        for i, w in enumerate(tokens)
    ]


@pytest.fixture(scope="module")
def annotated(repo_data_dir: Path) -> tuple[list[Clip], FrameAnnotations]:
    corpus = next(
        (
            c
            for c in (repo_data_dir / "corpora" / n for n in ("test-small", "default"))
            if (c / MANIFEST_NAME).is_file()
        ),
        None,
    )
    if corpus is None:
        pytest.skip("no corpus: run `whisper-atlas corpus build --corpus test-small --size small`")
    clips = read_manifest(corpus)
    windows = [list(r.rows) for r in plan_recordings(clips)]
    rows = [r for window in windows for r in window]
    n_frames = [-(-int(round(clips[r].duration * SAMPLE_RATE)) // SAMPLES_PER_FRAME) for r in rows]
    clip_row = np.repeat(rows, n_frames)
    frame = np.concatenate([np.arange(n) for n in n_frames])
    annotations = annotate_frames(
        corpus, clips, clip_row, frame, windows, [spread_transcript(c) for c in clips]
    )
    return clips, annotations


def test_vad_and_pitch_separate_speech_from_other_sounds(
    annotated: tuple[list[Clip], FrameAnnotations],
) -> None:
    clips, annotations = annotated
    speech_clip = np.array([clips[r].category == SPEECH for r in annotations.clip_row])
    other = ~speech_clip & np.array([clips[r].category != "laughter" for r in annotations.clip_row])
    vad_speech = annotations.codes["vad"] == annotations.vocab["vad"].index("speech")
    assert vad_speech[speech_clip].mean() > 0.7
    assert vad_speech[other].mean() < 0.05
    voiced = annotations.codes["pitch"] != annotations.vocab["pitch"].index("unvoiced")
    assert voiced[speech_clip & vad_speech].mean() > 0.4
    assert (annotations.codes["since_onset"] >= 0).sum() == vad_speech.sum()


def test_words_have_phones_in_every_language(annotated: tuple[list[Clip], FrameAnnotations]) -> None:
    clips, annotations = annotated
    has_word = annotations.codes["word"] >= 0
    assert has_word.mean() > 0.3
    assert (annotations.codes["phone"][has_word] >= 0).mean() > 0.95
    languages = {clips[r].language for r in np.unique(annotations.clip_row) if clips[r].transcript}
    phone_languages = {name.split(":")[0] for name in annotations.vocab["language_phone"]}
    assert languages <= phone_languages
