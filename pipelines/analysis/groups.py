"""The two ways the analysis splits the corpus: by language (speech clips only) and by category.

`ClipGroups` says which group each clip (manifest row) is in; the scan turns it into `GroupTotals`, the
frames of each group and each feature's activation mass and firing frames in it, which the labels, the
saved `AnalysisMeta` / `FeatureTable` and, through them, `build` read.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from pipelines.corpus.manifest import CATEGORIES, SPEECH, Clip


@dataclass(frozen=True)
class ClipGroups:
    """Named groups of the corpus's clips."""

    names: list[str]
    clip_group: np.ndarray
    """(n_clips,) index into `names` per manifest row; -1 for a clip in no group (no language: non-speech)."""


@dataclass
class GroupTotals:
    """What the scan counts per group of one `ClipGroups` (F features, K groups)."""

    names: list[str]
    frames_K: np.ndarray
    """(K,) real frames of the group's clips."""
    mass_FK: np.ndarray
    """(F, K) float64 sum of each feature's activations over the group's frames."""
    fires_FK: np.ndarray
    """(F, K) frames of the group where the feature fired."""

    @classmethod
    def zeros(cls, names: list[str], n_features: int) -> GroupTotals:
        k = len(names)
        return cls(
            names,
            np.zeros(k, np.int64),
            np.zeros((n_features, k), np.float64),
            np.zeros((n_features, k), np.int64),
        )

    def add(self, group_N: np.ndarray, row: np.ndarray, feature: np.ndarray, value: np.ndarray) -> None:
        """Count frames of groups `group_N` (-1: none) and the latents that fired there: `value` (float64)
        of `feature` on frame `row`. Frames in no group land in an extra slot that is dropped (cheaper than
        filtering them out)."""
        n_features, k = self.mass_FK.shape
        slot_N = np.where(group_N < 0, k, group_N)
        self.frames_K += np.bincount(slot_N, minlength=k + 1)[:k]
        slot = feature * (k + 1) + slot_N[row]
        size = n_features * (k + 1)
        self.mass_FK += np.bincount(slot, weights=value, minlength=size).reshape(n_features, k + 1)[:, :k]
        self.fires_FK += np.bincount(slot, minlength=size).reshape(n_features, k + 1)[:, :k]


def corpus_groups(clips: list[Clip]) -> tuple[ClipGroups, ClipGroups]:
    """The clips by language (the corpus's speech languages, sorted) and by category (known ones first)."""
    languages = sorted({c.language for c in clips if c.category == SPEECH and c.language})
    categories = list(CATEGORIES) + sorted({c.category for c in clips} - set(CATEGORIES))
    clip_language = np.array(
        [languages.index(c.language) if c.category == SPEECH and c.language else -1 for c in clips]
    )
    clip_category = np.array([categories.index(c.category) for c in clips])
    return ClipGroups(languages, clip_language), ClipGroups(categories, clip_category)
