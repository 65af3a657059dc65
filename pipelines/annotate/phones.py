"""Phones per encoder frame: each word's pronunciation by gruut, spread over the word's aligned span.

gruut (Hansen, `rhasspy/gruut`) phonemizes offline in every corpus language (en, es, fr, it, ru, cs, nl;
English ships with gruut, the others in `gruut-lang-*` packs): a lexicon lookup, its grapheme-to-phoneme
CRF model for words the lexicon lacks, and its own number expansion ("3" is "three"). Each word is
phonemized alone in its clip's language, once per (language, word). Stress marks are dropped, so a phone
is one IPA segment ("a", "t͡ʃ", "oʊ", "eː") whatever its stress. A word gruut gives no phones for (or a
language it lacks) has no phone (-1).

Phone times are approximate: there is no phone-level alignment, only word times, so a word's span is
divided among its phones in proportion to typical durations, vowels (and diphthongs) `VOWEL_WEIGHT` times
a consonant, the ratio of mean vowel to consonant durations in read speech (about 1.5-1.7, e.g. TIMIT).
A frame takes the phone whose share holds its centre.

gruut's packaged lexicons (`lexicon.db`, SQLite) have no index on the word column, so its own lookup scans
the table for every word (about 30 ms for Spanish's 600k entries); each language's lexicon is copied into
memory and indexed once (about 0.2 s) and handed to gruut's own phonemizer in place of the file.
"""

from __future__ import annotations

import sqlite3
from functools import lru_cache

import gruut
import gruut_ipa
import numpy as np
from gruut.lang import DelayedSqlitePhonemizer
from gruut.phonemize import SqlitePhonemizer
from gruut.text_processor import TextProcessor

VOWEL_WEIGHT = 1.6
"""A vowel's expected duration, in consonant durations."""
STRESS_MARKS = "ˈˌ"


class Phonemizer:
    """Word -> phones with gruut, a text processor per language, cached per (language, word)."""

    def __init__(self) -> None:
        self._processors: dict[str, TextProcessor | None] = {}
        self._phones: dict[tuple[str, str], tuple[str, ...]] = {}

    def phones(self, language: str, word: str) -> tuple[str, ...]:
        """The IPA phones of `word` (normalised) in `language` (ISO 639-1); () when gruut has none."""
        key = (language, word)
        if key not in self._phones:
            self._phones[key] = self._phonemize(language, word)
        return self._phones[key]

    def _phonemize(self, language: str, word: str) -> tuple[str, ...]:
        processor = self._processor(language)
        if processor is None or not word:
            return ()
        try:
            graph, root = processor(word, lang=language, pos=False)
            sentences = processor.sentences(
                graph, root, major_breaks=False, minor_breaks=False, punctuations=False, pos=False
            )
            phones = [
                p.strip(STRESS_MARKS) for sentence in sentences for w in sentence for p in w.phonemes or []
            ]
        except Exception:  # gruut's number, date and currency parsers fail on some odd tokens: no phones
            return ()
        return tuple(p for p in phones if p)

    def _processor(self, language: str) -> TextProcessor | None:
        if language not in self._processors:
            processor = None
            if language and gruut.is_language_supported(language):
                processor = TextProcessor(default_lang=language)
                _index_lexicon(processor.get_settings(language).lookup_phonemes)
            self._processors[language] = processor
        return self._processors[language]


def _index_lexicon(lookup: object) -> None:
    """Give gruut's lazily opened lexicon an indexed in-memory copy of its database (see the docstring)."""
    if not isinstance(lookup, DelayedSqlitePhonemizer) or lookup.phonemizer is not None:
        return
    source = sqlite3.connect(f"file:{lookup.db_path}?mode=ro", uri=True)
    memory = sqlite3.connect(":memory:")
    source.backup(memory)
    source.close()
    memory.execute("CREATE INDEX IF NOT EXISTS word_phonemes_word ON word_phonemes (word)")
    lookup.phonemizer = SqlitePhonemizer(db_conn=memory, **lookup.phonemizer_args)


def phone_index(phones: tuple[str, ...], start: float, end: float, times: np.ndarray) -> np.ndarray:
    """int (K,): which of `phones` holds each of `times` (seconds in the word's [start, end))."""
    weights = np.array([VOWEL_WEIGHT if is_vowel(p) else 1.0 for p in phones])
    bounds = start + (end - start) * np.cumsum(weights)[:-1] / weights.sum()
    return np.searchsorted(bounds, times, side="right")


@lru_cache(maxsize=None)
def is_vowel(phone: str) -> bool:
    """Whether an IPA phone is a vowel, diphthong or schwa (gruut-ipa's classes; rhotic ɚ ɝ included)."""
    phoneme = gruut_ipa.Phoneme(phone)
    return bool(phoneme.vowel or phoneme.dipthong or phoneme.schwa) or phone[:1] in "ɚɝ"
