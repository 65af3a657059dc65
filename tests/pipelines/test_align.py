"""The CTranslate2 fast path on the tiny random Whisper: forced alignment gives the reference's own words,
timed inside the audio; decoding respects its budget; the analysis stores reference words where a clip has
a transcript and Whisper's hypothesis for every clip. (Agreement with transformers' word timestamps needs a
real model: tests/integration/test_align_real.py.)"""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest

from pipelines.analysis.clips import ClipWindow, WindowTranscriber, _prepare, _stale, describe_clips
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
from pipelines.model.transcribe import GREEDY, LANGUAGES, language_logits, transcribe_encoded
from pipelines.recordings import join
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
    reference = transcribe_encoded(
        fast.bundle, encoder_BTD, language="en", max_new_tokens=250, decoding=GREEDY
    )
    assert [tokens for _, tokens in decoded] == [reference[0].tokens, reference[1].tokens[:5]]
    assert len(decoded[0][1]) == 250  # the random model never ends: the whole budget, in two calls


def test_language_id_reads_encoder_outputs_as_transformers_does(fast) -> None:
    encoder_BTD = encode(fast.bundle, features_for(fast.bundle, [noise(1.0), noise(2.0, seed=1)]))
    expected = [LANGUAGES[int(i)] for i in language_logits(fast.bundle, encoder_BTD).argmax(-1)]
    assert detect_languages(fast, encoder_BTD) == expected


def test_window_alignment_gives_each_clip_its_own_reference_words(fast) -> None:
    audios = [noise(1.0), noise(2.0, seed=1), noise(1.5, seed=2)]
    clips = [
        Clip(f"c{i}", "", len(a) / SAMPLE_RATE, "speech", "en", t)
        for i, (a, t) in enumerate(zip(audios, ["One two.", "Three, four five", "six"]))
    ]
    pending = _prepare(ClipWindow([0, 1, 2]), audios, stale=True, effects=False)
    states = encode(fast.bundle, features_for(fast.bundle, [join(audios)[0]]))
    transcriber = WindowTranscriber(fast.bundle, "ct2", 4, transcribe_all=False)
    (per_clip,) = transcriber(states, [pending], [clips], "en")
    assert [[w.strip() for w, _, _ in spoken] for _, spoken in per_clip] == [
        c.transcript.split() for c in clips
    ]
    assert all(heard == [] for heard, _ in per_clip)  # aligned, not decoded
    for (_, spoken), audio in zip(per_clip, audios):
        assert all(-0.25 - 0.02 <= s <= e <= len(audio) / SAMPLE_RATE + 0.25 + 0.02 for _, s, e in spoken)
    (decoded,) = WindowTranscriber(fast.bundle, "ct2", 4, transcribe_all=True)(
        states, [pending], [clips], "en"
    )
    assert any(heard for heard, _ in decoded)  # Whisper's own words beside the reference
    assert [s for _, s in decoded] == [s for _, s in per_clip]


def test_a_window_without_every_reference_or_past_the_context_is_decoded(fast) -> None:
    transcriber = WindowTranscriber(fast.bundle, "ct2", 4, transcribe_all=False)
    with_refs = [Clip("a", "", 1.0, "speech", "en", "one"), Clip("b", "", 1.0, "speech", "en", "two")]
    assert transcriber.references(with_refs) is not None
    assert transcriber.references([with_refs[0], Clip("c", "", 1.0, "speech", "en", "")]) is None
    long = Clip("d", "", 29.0, "speech", "en", " ".join(["word"] * 500))
    assert transcriber.references([long]) is None


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


def test_analysis_stores_reference_words_and_decodes_the_rest(fast, tmp_path: Path) -> None:
    specs = [("speech", "en", "Good morning."), ("speech", "en", ""), ("noise", "", "")]
    clips = []
    for i, (category, language, transcript) in enumerate(specs):
        write_flac(tmp_path / f"c{i}.flac", noise(1.0 + i, seed=i))
        clips.append(Clip(f"c{i}", f"c{i}.flac", 1.0 + i, category, language, transcript))
    windows = [ClipWindow([0]), ClipWindow([1]), ClipWindow([2])]
    _, text = describe_clips(fast.bundle, tmp_path, clips, windows, {}, 4, aligner="ct2")
    assert [w for w, _, _ in text[0].words] == ["Good", "morning."]
    assert text[0].hypothesis == ""  # forced-aligned, not decoded
    assert text[1].hypothesis and text[2].hypothesis  # no reference: Whisper's own transcript
    assert text[1].hypothesis == "".join(f" {w}" for w, _, _ in text[1].words).strip()  # Whisper's words
    assert text[2].words == []  # non-speech: hypothesis only
    _, every = describe_clips(fast.bundle, tmp_path, clips, windows[:1], {}, 4, transcribe_all=True)
    assert every[0].hypothesis and every[0].words == text[0].words
    _, whisper = describe_clips(fast.bundle, tmp_path, clips, windows[:1], {}, 4, aligner="transformers")
    assert whisper[0].hypothesis == "".join(f" {w}" for w, _, _ in whisper[0].words).strip()
