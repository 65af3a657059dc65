"""The fast path against the reference path on the real bundled Whisper base and real corpus speech.

The first clips with a reference transcript of each corpus language are joined into speaker recordings as
`extract` joins them, encoded once, then timed twice by `WindowTranscriber` as `analyze` times them:
`ct2` (CTranslate2: forced alignment of the references, and with `transcribe_all` greedy decode for the
hypothesis) and `transformers` (generate with word timestamps, the reference implementation).
Where transformers' transcript equals the reference (normalised), both time the same words, so their
boundaries must agree (median <= 0.1 s, issue 9); benchmarks/align_bench.py measures the same on more clips.
"""

from __future__ import annotations

import statistics
from pathlib import Path

import pytest

from pipelines.analysis.clips import ClipWindow, ClipWords, WindowTranscriber, _prepare
from pipelines.audio import decode_audio
from pipelines.constants import WINDOW_SAMPLES
from pipelines.corpus.manifest import SPEECH, Clip, read_manifest
from pipelines.model.align import boundary_differences
from pipelines.model.encoder import encode, features_for
from pipelines.model.loader import load_whisper
from pipelines.recordings import join, plan_recordings
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
    ours = WindowTranscriber(base, "ct2", MAX_NEW_TOKENS, transcribe_all=True)
    theirs = WindowTranscriber(base, "transformers", MAX_NEW_TOKENS, transcribe_all=True)
    by_language: dict[str, list[Clip]] = {}
    for clip in read_manifest(corpus):
        if clip.category == SPEECH and clip.transcript and clip.duration <= MAX_SECONDS:
            by_language.setdefault(clip.language, []).append(clip)
    rows = []
    for language, clips in by_language.items():
        clips = clips[:PER_LANGUAGE]
        audios = [decode_audio(corpus / c.path)[:WINDOW_SAMPLES] for c in clips]
        for recording in plan_recordings(clips):
            window = list(recording.rows)
            batch = [audios[i] for i in window]
            pending = _prepare(ClipWindow(window), batch, stale=True, effects=False)
            states = encode(base, features_for(base, [join(batch)[0]]))
            members = [[clips[i] for i in window]]
            (reference,) = theirs(states, [pending], members, language)
            (fast,) = ours(states, [pending], members, language)
            rows += [
                (clips[i], their, heard, spoken)
                for i, (their, _), (heard, spoken) in zip(window, reference, fast)
            ]
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
