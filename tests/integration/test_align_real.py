"""The fast path against the reference path on the real bundled Whisper base and real corpus speech.

The first clips with a reference transcript of each corpus language are packed into shared windows as
`analyze` packs them, then timed twice: by `align_packed` (CTranslate2: forced alignment of the references,
greedy decode for the hypothesis) and by `transcribe_packed` (transformers' generate with word timestamps).
Where transformers' transcript equals the reference (normalised), both time the same words, so their
boundaries must agree (median <= 0.1 s, issue 9); benchmarks/align_bench.py measures the same on more clips.
"""

from __future__ import annotations

import statistics
from pathlib import Path

import pytest

from pipelines.analysis.clips import (
    WINDOW_SAMPLES,
    ClipWords,
    align_packed,
    transcribe_packed,
    transcription_windows,
)
from pipelines.audio import decode_audio
from pipelines.corpus.manifest import SPEECH, Clip, read_manifest
from pipelines.model.align import boundary_differences, load_fast, reference_tokens
from pipelines.model.loader import load_whisper
from pipelines.sae.evaluate import normalise_text

pytestmark = pytest.mark.integration

PER_LANGUAGE = 3
MAX_SECONDS = 10.0
MAX_NEW_TOKENS = 96


def text_of(words: ClipWords) -> str:
    return "".join(w for w, _, _ in words).strip()


@pytest.fixture(scope="module")
def timed(corpus: Path) -> list[tuple[Clip, ClipWords, ClipWords, ClipWords]]:
    """(clip, transformers' words, CTranslate2's decoded words, forced-aligned reference words) per clip."""
    base = load_whisper("bundled:whisper-base", device="cpu")
    fast = load_fast(base)
    by_language: dict[str, list[Clip]] = {}
    for clip in read_manifest(corpus):
        if clip.category == SPEECH and clip.transcript and clip.duration <= MAX_SECONDS:
            by_language.setdefault(clip.language, []).append(clip)
    rows = []
    for language, clips in by_language.items():
        clips = clips[:PER_LANGUAGE]
        audios = [decode_audio(corpus / c.path)[:WINDOW_SAMPLES] for c in clips]
        for window in transcription_windows([c.duration for c in clips]):
            batch = [audios[i] for i in window]
            refs = [reference_tokens(fast, clips[i].transcript) for i in window]
            theirs = transcribe_packed(base, batch, language, MAX_NEW_TOKENS)
            (ours,) = align_packed(fast, [batch], language, MAX_NEW_TOKENS, [refs])
            rows += [(clips[i], t, heard, spoken) for i, t, (heard, spoken) in zip(window, theirs, ours)]
    return rows


def test_forced_alignment_times_exactly_the_reference_words(timed) -> None:
    assert len(timed) >= 12
    for clip, _, _, spoken in timed:
        assert [w.strip() for w, _, _ in spoken] == clip.transcript.split(), clip.id
        assert all(start <= end for _, start, end in spoken)


def test_boundaries_match_whispers_own_word_timestamps(timed) -> None:
    exact = [
        (spoken, theirs)
        for clip, theirs, _, spoken in timed
        if normalise_text(text_of(theirs)) == normalise_text(clip.transcript) and len(theirs) == len(spoken)
    ]
    assert len(exact) >= 5, f"only {len(exact)} clips transcribed exactly"
    diffs = [d for spoken, theirs in exact for d in boundary_differences(spoken, theirs)]
    median = statistics.median(diffs)
    print(f"{len(exact)} clips, {len(diffs)} boundaries: median {median:.3f} s, max {max(diffs):.3f} s")
    # 0.30 s (one token) while transcribe_encoded reads transformers' token_timestamps as token starts:
    # since transformers 4.50 they are token ends (openai-whisper's reading, as pipelines.model.align's).
    assert median <= 0.1, f"median {median:.3f} s"


def test_ct2_decodes_what_transformers_decodes(timed) -> None:
    same = sum(text_of(heard) == text_of(theirs) for _, theirs, heard, _ in timed)
    assert same >= 0.8 * len(timed), f"{same}/{len(timed)} hypotheses equal"
