"""Automatic provisional labels: a short description per feature from its statistics, with a 0..1 score.

A label is a conjunction of claims, each with a support in 0..1:

- category: the category with the largest share of the feature's *rate-normalised* activation
  (activation mass per frame of the category, so a small category is not drowned by speech). Support: that
  share. A non-speech winner names the label ("music", "silence"); without a majority (> 0.5) the two
  leading categories are named ("music / noise"). Categories (and languages) where the feature fired on
  fewer than min(20 frames, 10% of its firing frames) are left out, so a handful of frames in a tiny
  category cannot dominate a per-frame rate.
- language (speech winners only): the language with the largest rate-normalised share among corpus
  languages; claimed when the share is a majority, > 0.5 ("es speech"). Support: the share.
- word (speech winners only): the most common aligned word under the peaks of the top examples; claimed
  when it is under >= 30% of them ("es speech · 'buenos'"). Support: that fraction.

`label_score` is the smallest support among the claims made (a label is as good as its weakest claim),
halved when the label says only "speech" (true of most features, so it tells little). Dead features get an
empty label and score 0. This is provisional: the source is 'auto' and a person can replace it.
"""

from __future__ import annotations

import re
import unicodedata
from collections import Counter
from typing import NamedTuple

import numpy as np

from pipelines.analysis.groups import GroupTotals
from pipelines.atlas.schema import FRAME_SECONDS
from pipelines.corpus.manifest import SPEECH

LANGUAGE_CLAIM = 0.5
WORD_CLAIM = 0.3
BROAD_FACTOR = 0.5
N_TOP_WORDS = 5
MIN_GROUP_FIRES = 20
MIN_GROUP_SHARE = 0.1

_EDGE_PUNCTUATION = re.compile(r"^[\W_]+|[\W_]+$")


def normalise_word(word: str) -> str:
    """Lower case, NFC, punctuation stripped from both ends ("¿Hola," -> "hola")."""
    return _EDGE_PUNCTUATION.sub("", unicodedata.normalize("NFC", word).lower())


def word_at(words: list[tuple[str, float, float]], frame: int) -> str:
    """The aligned word spoken at an encoder frame ('' when none)."""
    t = (frame + 0.5) * FRAME_SECONDS
    for word, start, end in words:
        if start <= t < end:
            return normalise_word(word)
    return ""


def rate_shares(mass_FK: np.ndarray, fires_FK: np.ndarray, frames_K: np.ndarray) -> np.ndarray:
    """(F, K) share of each group in the feature's activation per frame of the group (rows sum to 1 or 0),
    over the groups where it fired often enough (see the module docstring)."""
    enough = fires_FK >= np.minimum(MIN_GROUP_FIRES, MIN_GROUP_SHARE * fires_FK.sum(1, keepdims=True))
    rate = np.where(enough & (fires_FK > 0), mass_FK / np.maximum(frames_K, 1)[None, :], 0.0)
    return rate / np.maximum(rate.sum(1, keepdims=True), 1e-30)


class ExampleWords(NamedTuple):
    """Per feature, the words under its top examples' peaks."""

    words: list[list[str]]
    """The most common words (at most `N_TOP_WORDS`, each under >= 2 peaks), most common first."""
    support: np.ndarray
    """(F,) share of the top examples whose peak falls on the most common word."""


def top_example_words(
    feature: np.ndarray,
    clip: np.ndarray,
    peak: np.ndarray,
    clip_words: list[list[tuple[str, float, float]]],
    n: int,
) -> ExampleWords:
    """Per feature: the most common words under its top examples' peaks, and the top word's share of them."""
    counters: list[Counter[str]] = [Counter() for _ in range(n)]
    n_examples = np.bincount(feature, minlength=n)
    for f, c, p in zip(feature, clip, peak):
        word = word_at(clip_words[c], int(p))
        if word:
            counters[f][word] += 1
    top_words = [[w for w, k in counter.most_common(N_TOP_WORDS) if k >= 2] for counter in counters]
    support = np.array(
        [
            counter.most_common(1)[0][1] / n_examples[f] if counter else 0.0
            for f, counter in enumerate(counters)
        ]
    )
    return ExampleWords(top_words, support)


def auto_labels(
    fire_count: np.ndarray, categories: GroupTotals, languages: GroupTotals, words: ExampleWords
) -> tuple[list[str], np.ndarray]:
    """(label, score) per feature, by the rules in the module docstring."""
    cat_share = rate_shares(categories.mass_FK, categories.fires_FK, categories.frames_K)
    lang_share = rate_shares(languages.mass_FK, languages.fires_FK, languages.frames_K)
    labels, scores = [], np.zeros(len(fire_count), np.float32)
    for f in range(len(fire_count)):
        if fire_count[f] == 0:
            labels.append("")
            continue
        order = np.argsort(-cat_share[f], kind="stable")
        best = categories.names[order[0]]
        support = [float(cat_share[f, order[0]])]
        if best != SPEECH:
            second = categories.names[order[1]] if len(order) > 1 else ""
            labels.append(best if support[0] > 0.5 or not second else f"{best} / {second}")
            scores[f] = support[0]
            continue
        label = SPEECH
        if lang_share.shape[1] and lang_share[f].max() > LANGUAGE_CLAIM:
            label = f"{languages.names[int(lang_share[f].argmax())]} speech"
            support.append(float(lang_share[f].max()))
        if words.words[f] and words.support[f] >= WORD_CLAIM:
            label += f" · '{words.words[f][0]}'"
            support.append(float(words.support[f]))
        labels.append(label)
        scores[f] = min(support) * (BROAD_FACTOR if len(support) == 1 else 1.0)
    return labels, scores
