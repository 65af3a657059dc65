"""gruut's phones in every corpus language, spread over a word's span by typical duration."""

from __future__ import annotations

import numpy as np
import pytest

from pipelines.annotate.phones import VOWEL_WEIGHT, Phonemizer, is_vowel, phone_index


@pytest.fixture(scope="module")
def phonemizer() -> Phonemizer:
    return Phonemizer()


@pytest.mark.parametrize(
    "language, word, phones",
    [
        ("es", "casa", ("k", "a", "s", "a")),
        ("en", "hello", ("h", "ɛ", "l", "oʊ")),
        ("fr", "bonjour", ("b", "ɔ̃", "ʒ", "u", "ʁ")),
        ("it", "ciao", ("t͡ʃ", "a", "o")),
        ("ru", "привет", ("p", "rʲ", "i", "vʲ", "eː", "t")),
        ("cs", "ahoj", ("a", "ɦ", "o", "j")),
        ("nl", "hallo", ("h", "ɑ", "l", "o")),
    ],
)
def test_every_corpus_language(
    phonemizer: Phonemizer, language: str, word: str, phones: tuple[str, ...]
) -> None:
    assert phonemizer.phones(language, word) == phones  # stress marks dropped ("ˈoʊ" is "oʊ")


def test_numbers_unknown_languages_and_symbols(phonemizer: Phonemizer) -> None:
    assert phonemizer.phones("en", "3") == ("θ", "ɹ", "i")
    assert phonemizer.phones("xx", "casa") == ()
    assert phonemizer.phones("en", "—") == ()
    assert phonemizer.phones("", "casa") == ()


def test_vowels() -> None:
    assert all(is_vowel(p) for p in ("a", "oʊ", "ə", "ɚ", "eː", "ɔ̃"))
    assert not any(is_vowel(p) for p in ("k", "t͡ʃ", "rʲ", "ɾ"))


def test_phones_spread_in_order_with_longer_vowels() -> None:
    start, end = 1.0, 1.0 + 0.02 * 26  # "casa": k a s a share 1 + 1.6 + 1 + 1.6 = 5.2 units
    times = start + 0.01 + 0.02 * np.arange(26)
    index = phone_index(("k", "a", "s", "a"), start, end, times)
    assert np.all(np.diff(index) >= 0) and index[0] == 0 and index[-1] == 3
    counts = np.bincount(index)
    assert counts.tolist() == [5, 8, 5, 8]  # each unit is 5 frames; a vowel 1.6 units
    assert VOWEL_WEIGHT == 1.6
