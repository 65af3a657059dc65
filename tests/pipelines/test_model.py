"""The model API on the tiny random Whisper: features, layer numbering, edits, language ID, decoding."""

from __future__ import annotations

import numpy as np
import pytest
import torch

from pipelines.errors import AtlasError
from pipelines.model.encoder import (
    FRAMES_PER_WINDOW,
    edit_layer,
    encode,
    features_for,
    real_frames,
)
from pipelines.model.transcribe import (
    LANGUAGES,
    group_words,
    is_repetitive,
    language_logits,
    transcribe,
    transcribe_encoded,
)

SR = 16000


@pytest.fixture(scope="module")
def tiny():
    from tests.fixtures.tiny_whisper import tiny_whisper

    return tiny_whisper()


@pytest.fixture(scope="module")
def audios() -> list[np.ndarray]:
    rng = np.random.default_rng(0)
    t = np.arange(int(1.5 * SR)) / SR
    tone = (0.3 * np.sin(2 * np.pi * 220 * t)).astype(np.float32)
    return [tone, (0.05 * rng.standard_normal(int(0.7 * SR))).astype(np.float32)]


@pytest.fixture(scope="module")
def feats(tiny, audios) -> torch.Tensor:
    return features_for(tiny, audios)


def random_direction(d: int, seed: int = 1) -> torch.Tensor:
    return torch.randn(d, generator=torch.Generator().manual_seed(seed))


def test_real_frames() -> None:
    assert [real_frames(n) for n in (0, 1, 320, 321, SR)] == [0, 1, 1, 2, 50]
    assert real_frames(30 * SR) == FRAMES_PER_WINDOW
    assert real_frames(45 * SR) == FRAMES_PER_WINDOW


def test_features_shape(tiny, feats) -> None:
    assert feats.shape == (2, 80, 3000)
    assert feats.dtype == torch.float32 and feats.device == tiny.device


def test_bundle_properties(tiny) -> None:
    assert (tiny.n_layers, tiny.d_model) == (2, 64)
    assert not tiny.model.training
    with tiny.autocast():  # a no-op on CPU
        pass


def test_layer_numbering_matches_output_hidden_states(tiny, feats) -> None:
    with torch.no_grad():
        hidden = tiny.model.model.encoder(feats, output_hidden_states=True).hidden_states
    assert len(hidden) == tiny.n_layers + 1
    for layer in range(tiny.n_layers + 1):
        out = encode(tiny, feats, layer)
        assert out.shape == (2, FRAMES_PER_WINDOW, tiny.d_model) and out.dtype == torch.float32
        torch.testing.assert_close(out, hidden[layer], rtol=0, atol=0)
    torch.testing.assert_close(encode(tiny, feats), hidden[-1], rtol=0, atol=0)


def test_encode_rejects_bad_layer(tiny, feats) -> None:
    for layer in (-1, tiny.n_layers + 1):
        with pytest.raises(ValueError, match="layer must be in 0..2"):
            encode(tiny, feats, layer)


def test_early_layers_skip_later_blocks(tiny, feats) -> None:
    calls = []
    handle = tiny.model.model.encoder.layers[1].register_forward_hook(lambda *a: calls.append(1))
    try:
        encode(tiny, feats, 1)
        assert calls == []
        encode(tiny, feats, 2)
        assert calls == [1]
    finally:
        handle.remove()


@pytest.mark.parametrize("layer", [0, 1, 2])
def test_edit_identity_changes_nothing(tiny, feats, layer) -> None:
    base = encode(tiny, feats)
    with edit_layer(tiny, layer, lambda x: x):
        edited = encode(tiny, feats)
        inner = encode(tiny, feats, layer)
    torch.testing.assert_close(edited, base, rtol=0, atol=0)
    torch.testing.assert_close(inner, encode(tiny, feats, layer), rtol=0, atol=0)


@pytest.mark.parametrize("layer", [0, 1, 2])
def test_edit_propagates_and_is_removed(tiny, feats, layer) -> None:
    base = encode(tiny, feats)
    shift = random_direction(tiny.d_model)
    with edit_layer(tiny, layer, lambda x: x + shift):
        at_layer = encode(tiny, feats, layer)
        final = encode(tiny, feats)
        with torch.no_grad():
            recorded = tiny.model.model.encoder(feats, output_hidden_states=True).hidden_states[layer]
    torch.testing.assert_close(at_layer - encode(tiny, feats, layer), shift.expand_as(at_layer))
    torch.testing.assert_close(recorded, at_layer)
    assert (final - base).abs().max() > 1e-3
    torch.testing.assert_close(encode(tiny, feats), base, rtol=0, atol=0)  # hook gone


def test_edit_reaches_the_decoder(tiny, audios) -> None:
    base = transcribe(tiny, audios[0], language="en", max_new_tokens=6)
    with edit_layer(tiny, 1, lambda x: x):
        same = transcribe(tiny, audios[0], language="en", max_new_tokens=6)
    with edit_layer(tiny, tiny.n_layers, lambda x: x + 50 * random_direction(tiny.d_model)):
        steered = transcribe(tiny, audios[0], language="en", max_new_tokens=6)
    assert same.tokens == base.tokens and same.language_probs == base.language_probs
    assert steered.language_probs != base.language_probs


def test_languages_match_tokenizer(tiny) -> None:
    tokens = tiny.processor.tokenizer.convert_ids_to_tokens(list(range(50259, 50358)))
    assert len(LANGUAGES) == 99 and tokens == [f"<|{code}|>" for code in LANGUAGES]


def test_language_logits_differentiable(tiny, feats) -> None:
    hidden = encode(tiny, feats).requires_grad_(True)
    logits = language_logits(tiny, hidden)
    assert logits.shape == (2, len(LANGUAGES))
    (logits[:, LANGUAGES.index("es")] - logits[:, LANGUAGES.index("en")]).sum().backward()
    assert hidden.grad is not None and hidden.grad.abs().sum() > 0


def test_transcribe_encoded_batch(tiny, feats) -> None:
    hidden = encode(tiny, feats)
    results = transcribe_encoded(tiny, hidden, max_new_tokens=5)
    assert len(results) == 2
    for result in results:
        assert len(result.tokens) <= 5
        assert result.language in LANGUAGES and result.language == next(iter(result.language_probs))
        probs = list(result.language_probs.values())
        assert probs == sorted(probs, reverse=True) and sum(probs) == pytest.approx(1, abs=1e-4)
        assert all(t < 50257 for t in result.tokens)
    forced = transcribe_encoded(tiny, hidden, language="ru", max_new_tokens=3)
    assert [r.language for r in forced] == ["ru", "ru"]
    assert forced[0].language_probs == results[0].language_probs  # detection does not depend on forcing


def test_transcribe_encoded_rows_are_independent(tiny, feats) -> None:
    hidden = encode(tiny, feats)
    batched = transcribe_encoded(tiny, hidden, language="en", max_new_tokens=6)
    alone = transcribe_encoded(tiny, hidden[1:], language="en", max_new_tokens=6)
    assert batched[1].tokens == alone[0].tokens


def test_unknown_language(tiny, feats) -> None:
    with pytest.raises(AtlasError, match="unknown language 'xx'"):
        transcribe_encoded(tiny, encode(tiny, feats), language="xx")


def test_word_timestamps_within_the_clip(tiny, audios) -> None:
    result = transcribe(tiny, audios[0], language="en", max_new_tokens=8, word_timestamps=True)
    assert result.words
    assert "".join(w.word for w in result.words).strip() == result.text
    seconds = len(audios[0]) / SR
    for word in result.words:
        assert 0 <= word.start <= word.end <= seconds + 0.02


def test_group_words(tiny) -> None:
    tokenizer = tiny.processor.tokenizer
    tokens = tokenizer(" Hello world, again", add_special_tokens=False).input_ids
    times = np.linspace(0, 1, len(tokens) + 1)
    words = group_words(tokenizer, tokens, times, "en")
    assert [w.word for w in words] == [" Hello", " world,", " again"]
    assert words[0].start == 0 and words[-1].end == 1
    assert all(a.end == b.start for a, b in zip(words, words[1:]))
    zh = tokenizer("你好世界", add_special_tokens=False).input_ids
    chars = group_words(tokenizer, zh, np.linspace(0, 1, len(zh) + 1), "zh")
    assert "".join(w.word for w in chars) == "你好世界" and all("\ufffd" not in w.word for w in chars)


def test_is_repetitive() -> None:
    assert is_repetitive("") and is_repetitive("   ")
    assert is_repetitive("ha " * 60)
    assert not is_repetitive("Press four to place an outgoing call.")


def test_rows_stop_once_they_outrun_the_reference_row() -> None:
    from pipelines.model.transcribe import PROMPT_LENGTH, OutrunFirstRow

    eos, stop = 9, OutrunFirstRow(eos=9, factor=1.5, extra=8)
    prompt = [1] * PROMPT_LENGTH

    def ids(*rows: list[int]) -> torch.Tensor:
        return torch.tensor([prompt + row for row in rows])

    assert not stop(ids([5] * 20, [5] * 20), None).any()  # the reference has not ended: no limit yet
    reference = [5, 5, 5, 5, eos] + [eos] * 8  # ended after 4 tokens: the limit is 1.5 x 4 + 8 = 14
    assert not stop(ids(reference, [5] * 13), None).any()
    assert stop(ids(reference + [eos], [5] * 14), None).all()
