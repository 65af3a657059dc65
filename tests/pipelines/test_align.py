"""The CTranslate2 fast path on the tiny random Whisper: forced alignment gives the reference's own words,
timed inside the audio; decoding respects its budget; the analysis stores reference words where a clip has
a transcript and Whisper's hypothesis for every clip. (Agreement with transformers' word timestamps needs a
real model: tests/integration/test_align_real.py.)"""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest

from pipelines.analysis.clips import (
    GAP_S,
    _stale,
    align_packed,
    describe_clips,
    split_words,
    transcription_windows,
)
from pipelines.analysis.result import ClipText
from pipelines.audio import SAMPLE_RATE, write_flac
from pipelines.constants import FRAME_SECONDS
from pipelines.corpus.manifest import Clip
from pipelines.model.align import (
    align_words,
    boundary_differences,
    ct2_max_length,
    decode_tokens,
    detect_languages,
    load_fast,
    reference_tokens,
    token_times,
)
from pipelines.model.encoder import encode, features_for, real_frames
from pipelines.model.transcribe import LANGUAGES, language_logits, transcribe_encoded
from tests.fixtures.tiny_whisper import tiny_whisper

REFERENCE = "Hello world, how are   you today?"


@pytest.fixture(scope="module")
def fast():
    return load_fast(tiny_whisper())


def noise(seconds: float, seed: int = 0) -> np.ndarray:
    return 0.1 * np.random.default_rng(seed).standard_normal(int(seconds * SAMPLE_RATE)).astype(np.float32)


def test_reference_tokens_decode_to_the_reference(fast) -> None:
    tokens = reference_tokens(fast, REFERENCE)
    assert fast.bundle.processor.tokenizer.decode(tokens) == " Hello world, how are you today?"


def test_forced_alignment_times_every_reference_word_inside_the_audio(fast) -> None:
    audios = [noise(1.5), noise(3.0, seed=1)]
    encoder_BTD = encode(fast.bundle, features_for(fast.bundle, audios))
    frames = [real_frames(len(a)) for a in audios]
    tokens = [reference_tokens(fast, REFERENCE), reference_tokens(fast, "Hola")]
    times = token_times(fast, encoder_BTD, tokens, ["en", "es"], frames)
    for t, s, n in zip(tokens, times, frames):
        assert s.shape == (len(t) + 1,)
        assert np.all(np.diff(s) >= 0) and s[0] >= 0 and s[-1] <= n * FRAME_SECONDS
    words = align_words(fast, encoder_BTD, tokens, ["en", "es"], frames)
    assert [w.word.strip() for w in words[0]] == REFERENCE.split()
    assert [w.word for w in words[1]] == [" Hola"]
    assert align_words(fast, encoder_BTD[:1], [[]], ["en"], frames[:1]) == [[]]


def test_decoding_stops_at_each_windows_budget(fast) -> None:
    encoder_BTD = encode(fast.bundle, features_for(fast.bundle, [noise(1.0), noise(2.0, seed=1)]))
    decoded = decode_tokens(fast, encoder_BTD, "en", [2, 5])
    assert [lang for lang, _ in decoded] == ["en", "en"]
    assert len(decoded[0][1]) <= 2 and len(decoded[1][1]) <= 5
    detected = decode_tokens(fast, encoder_BTD, None, [3, 3])
    assert all(len(lang) >= 2 and len(tokens) <= 3 for lang, tokens in detected)


def test_max_length_gives_the_asked_steps_under_ctranslate2s_rule() -> None:
    # whisper.cc decodes min(max_length // 2, max_length - (prompt - 1)) steps.
    for steps in (1, 2, 3, 96, 224):
        length = ct2_max_length(steps, 4)
        assert min(length // 2, length - 3) == steps
    assert ct2_max_length(96, 4) == 192  # not 96 + 4, which decodes 50


def test_decoding_goes_past_the_224_token_cap_as_transformers_does(fast) -> None:
    encoder_BTD = encode(fast.bundle, features_for(fast.bundle, [noise(1.0), noise(2.0, seed=1)]))
    decoded = decode_tokens(fast, encoder_BTD, "en", [250, 5])
    reference = transcribe_encoded(fast.bundle, encoder_BTD, language="en", max_new_tokens=250)
    assert [tokens for _, tokens in decoded] == [reference[0].tokens, reference[1].tokens[:5]]
    assert len(decoded[0][1]) == 250  # the random model never ends: the whole budget, in two calls


def test_language_id_reads_encoder_outputs_as_transformers_does(fast) -> None:
    encoder_BTD = encode(fast.bundle, features_for(fast.bundle, [noise(1.0), noise(2.0, seed=1)]))
    expected = [LANGUAGES[int(i)] for i in language_logits(fast.bundle, encoder_BTD).argmax(-1)]
    assert detect_languages(fast, encoder_BTD) == expected


def test_packed_alignment_gives_each_clip_its_own_reference_words(fast) -> None:
    audios = [noise(1.0), noise(2.0, seed=1), noise(1.5, seed=2)]
    texts = ["One two.", "Three, four five", "six"]
    refs = [reference_tokens(fast, t) for t in texts]
    (per_clip,) = align_packed(fast, [audios], "en", 4, [refs])
    assert [[w.strip() for w, _, _ in spoken] for _, spoken in per_clip] == [t.split() for t in texts]
    for (_, spoken), audio in zip(per_clip, audios):
        share = len(audio) / SAMPLE_RATE + GAP_S / 2
        assert all(-GAP_S / 2 <= start <= end <= share for _, start, end in spoken)
    (without,) = align_packed(fast, [audios], "en", 4)
    assert all(heard == spoken for heard, spoken in without)  # no references: Whisper's words twice


def test_fast_path_gives_words_to_the_clip_holding_their_middle() -> None:
    starts = [0.0, 3.0]  # clips of 2 s and any length, GAP_S apart
    words = [(" one", 0.1, 1.9), (" two", 1.9, 3.4)]  # " two" starts as the first clip's speech ends
    assert [[w for w, _, _ in clip] for clip in split_words(words, starts, by_middle=True)] == [
        [" one"],
        [" two"],
    ]
    assert split_words(words, starts)[1] == []  # by start it would be the first clip's


def test_windows_hold_at_most_max_tokens() -> None:
    assert transcription_windows([2.0] * 4, tokens=[5, 5, 5, 5], max_tokens=10) == [[0, 1], [2, 3]]
    assert transcription_windows([2.0] * 4, tokens=[20, 1, 1, 1], max_tokens=10) == [[0], [1, 2, 3]]


def test_cached_words_that_are_not_the_reference_are_stale() -> None:
    entry = ClipText("a", "en", "hello world", [("Hello", 0.0, 0.5), ("world.", 0.5, 1.0)])
    assert not _stale(entry, "en", "Hello  world.")
    assert _stale(entry, "en", "Hello, world.")
    assert not _stale(entry, "en", "")  # no reference: Whisper's words stay
    assert _stale(entry, "es", "")


def test_boundary_differences_pair_words() -> None:
    ours = [("a", 0.0, 0.5), ("b", 0.5, 1.0)]
    assert boundary_differences(ours, [("a", 0.1, 0.5), ("b", 0.5, 0.8)]) == pytest.approx([0.1, 0, 0, 0.2])
    with pytest.raises(ValueError, match="not the same words"):
        boundary_differences(ours, ours[:1])


def test_analysis_stores_reference_words_and_every_hypothesis(fast, tmp_path: Path) -> None:
    specs = [("speech", "en", "Good morning."), ("speech", "en", ""), ("noise", "", "")]
    clips = []
    for i, (category, language, transcript) in enumerate(specs):
        write_flac(tmp_path / f"c{i}.flac", noise(1.0 + i, seed=i))
        clips.append(Clip(f"c{i}", f"c{i}.flac", 1.0 + i, category, language, transcript))
    _, text = describe_clips(
        fast.bundle, tmp_path, clips, [0, 1, 2], {}, set(), lambda *a: None, max_new_tokens=4, aligner="ct2"
    )
    assert [w for w, _, _ in text[0].words] == ["Good", "morning."]
    assert all(t.hypothesis for t in text)  # Whisper's own transcript, beside the reference words
    assert text[1].hypothesis == "".join(f" {w}" for w, _, _ in text[1].words).strip()  # Whisper's words
    assert text[2].words == []  # non-speech: hypothesis only
    _, whisper = describe_clips(
        fast.bundle, tmp_path, clips, [0], {}, set(), lambda *a: None, 4, aligner="transformers"
    )
    assert whisper[0].hypothesis == "".join(f" {w}" for w, _, _ in whisper[0].words).strip()
