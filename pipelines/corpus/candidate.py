"""A clip a corpus builder may pick: its metadata, its length known up front, and how to load its audio.

Sources (Asterisk, Fish Fillets, non-speech) list candidates cheaply (no decoding); the builder selects some
with a seeded random order and only then decodes them. Selection helpers live here so every source draws the
same way: sorted by id first, then shuffled by a string-seeded generator (stable across runs and machines).
"""

from __future__ import annotations

import hashlib
import random
import re
import unicodedata
from dataclasses import dataclass, field
from typing import Callable, Hashable, Sequence, TypeVar

import numpy as np

from pipelines.corpus.manifest import Clip

T = TypeVar("T")

_UNSAFE = re.compile(r"[^A-Za-z0-9._-]+")

ADDED_KEY = "added"
"""`Clip.extra` key marking clips a user added (`folder`, `hf`): a rebuild of the corpus keeps them."""

LANGUAGE_ALIASES = {"cmn": "zh", "fil": "tl"}
"""Dataset language tags whose first part is not Whisper's code (FLEURS `cmn_hans_cn`, `fil_ph`)."""


@dataclass(eq=False)
class Candidate:
    """One clip before decoding."""

    id: str
    """The clip id it will get (URL-safe, unique in the corpus)."""
    load: Callable[[], np.ndarray]
    """Decodes or synthesizes the audio (float32 mono 16 kHz); picklable (a `functools.partial`)."""
    seconds: float
    """Length as declared by the file header or known from the recipe, used to filter before decoding."""
    category: str
    source: str
    licence: str
    language: str = ""
    transcript: str = ""
    group: str = ""
    speaker: str = ""
    extra: dict = field(default_factory=dict)

    def to_clip(self, path: str, duration: float) -> Clip:
        return Clip(
            id=self.id,
            path=path,
            duration=round(duration, 3),
            category=self.category,
            language=self.language,
            transcript=self.transcript,
            source=self.source,
            licence=self.licence,
            group=self.group,
            speaker=self.speaker,
            extra=self.extra,
        )


def slug(*parts: str) -> str:
    """A URL-safe id from free text (`en`, `followme/options`: `en-followme-options`).

    Accents are dropped (`é`: `e`); a part with nothing Latin left (`Привет`) becomes a short hash of itself,
    so distinct names stay distinct.
    """
    return "-".join(_slug_part(part) for part in parts if part)[:120] or "clip"


def _slug_part(part: str) -> str:
    latin = unicodedata.normalize("NFKD", part).encode("ascii", "ignore").decode()
    safe = _UNSAFE.sub("-", latin).strip("-.")
    return safe or hashlib.sha1(part.encode()).hexdigest()[:10]


def language_code(tag: str) -> str:
    """Whisper's language code from a locale or dataset tag (`pt-BR`: `pt`, `cmn_hans_cn`: `zh`)."""
    code = tag.strip().lower().replace("_", "-").split("-")[0]
    return LANGUAGE_ALIASES.get(code, code)


def shuffled(items: Sequence[T], seed: str, key: Callable[[T], str]) -> list[T]:
    """`items` sorted by `key`, then shuffled by a generator seeded with the string `seed`."""
    ordered = sorted(items, key=key)
    random.Random(seed).shuffle(ordered)
    return ordered


def spread(
    items: Sequence[T], n: int | None, seed: str, key: Callable[[T], str], by: Callable[[T], Hashable]
) -> list[T]:
    """Up to `n` items (all when None) drawn round-robin over the groups `by` makes, each group shuffled.

    Taking the first n of one fixed order means a smaller selection is always part of a larger one.
    """
    groups: dict[Hashable, list[T]] = {}
    for item in shuffled(items, seed, key):
        groups.setdefault(by(item), []).append(item)
    order = shuffled(list(groups), seed + ":groups", key=str)
    picked: list[T] = []
    while any(groups[g] for g in order) and (n is None or len(picked) < n):
        for g in order:
            if groups[g] and (n is None or len(picked) < n):
                picked.append(groups[g].pop(0))
    return picked


def parallel(by_language: dict[str, list[Candidate]], min_seconds: float = 0.0) -> list[list[Candidate]]:
    """Groups with one clip in every language given, each at least `min_seconds` long, sorted by group."""
    index = [{c.group: c for c in found} for found in by_language.values()]
    shared = set.intersection(*(set(i) for i in index)) if index else set()
    groups = [[i[g] for i in index] for g in sorted(shared)]
    return [group for group in groups if min(c.seconds for c in group) >= min_seconds]
