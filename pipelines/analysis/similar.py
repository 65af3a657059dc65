"""Similar moments: corpus windows compared with a span by the SAE codes pooled over each, and the inverted
index that finds the best ones without scoring every window.

Every clip is cut into windows of `window_frames` (0.64 s) every `hop_frames` (0.32 s). A window's vector is
its codes pooled, v_f = sqrt(sum_t a_t,f) * idf_f with idf_f = log(1 / density_f): the square root damps a
feature that fires hard on every frame, the idf one that fires everywhere (the tf-idf of text retrieval).
Kept as a sketch, its `sketch_features` strongest entries renormalised to unit length (they hold ~90% of
the vector's squared norm on the default corpus), its score against a query span is the cosine
q . s. On the default corpus, among the 10 best windows of 300 speech queries (other clips only), 24% share
the query's word and 85% its language with this weighting, against 3% and 32% for the plain cosine
(`benchmarks/similar_bench.py --quality`).

The index is the sketches' entries by feature, each feature's postings by weight, strongest first (an
impact-ordered inverted index). A query reads the postings of its `query_features` strongest features down
to rank `postings_per_feature`, keeps the `rescored` windows with the largest partial dot product over those
features, and scores them exactly against their sketches. What a query reads is bounded by those three
numbers, not by the corpus (benchmarks/similar_bench.py measures it against scoring every window); past
some size the recall of the exhaustive top 10 falls unless `postings_per_feature` grows with the corpus.
"""

from __future__ import annotations

from dataclasses import asdict, dataclass
from typing import NamedTuple

import numpy as np
from pydantic import PositiveInt

from pipelines.analysis.frame_codes import FrameCodes
from pipelines.config import config
from pipelines.errors import AtlasError


class SimilarConfigError(AtlasError, ValueError):
    """An out-of-range similar-moment setting."""


@config(SimilarConfigError, frozen=True)
class SimilarConfig:
    """How the corpus is cut into windows, how a window is sketched and how much a query reads."""

    window_frames: PositiveInt = 32
    """Frames per window (32 x 20 ms = 0.64 s: a word or two)."""
    hop_frames: PositiveInt = 16
    """Frames between window starts (windows overlap by half)."""
    sketch_features: PositiveInt = 32
    """Strongest entries of a window's vector kept (and indexed)."""
    query_features: PositiveInt = 12
    """Strongest features of a query whose postings find the candidates."""
    postings_per_feature: PositiveInt = 1024
    """Postings read per query feature (the strongest windows of that feature). On a corpus 10x the default
    one, 1,024 finds 99% of the exhaustive top 10 (256: 57%) for ~25% more time
    (benchmarks/similar_bench.py)."""
    rescored: PositiveInt = 1024
    """Candidates scored exactly against their sketches (by partial dot product over the query features)."""

    def __post_init__(self) -> None:
        if self.hop_frames > self.window_frames:
            raise ValueError(f"hop_frames must be <= window_frames (got {self.hop_frames})")

    def to_dict(self) -> dict[str, int]:
        return asdict(self)


def feature_idf(density_F: np.ndarray) -> np.ndarray:
    """(F,) float32 log(1 / density) per feature; 0 for features that never fire."""
    density = np.asarray(density_F, np.float64)
    return np.where(density > 0, -np.log(np.where(density > 0, density, 1.0)), 0.0).astype(np.float32)


def weighted(sums_F: np.ndarray, idf_F: np.ndarray) -> np.ndarray:
    """A pooled code as the index compares it: sqrt of the summed activations times the idf (see above)."""
    return np.sqrt(np.maximum(sums_F, 0.0)) * idf_F


def query_vector(sums_F: np.ndarray, idf_F: np.ndarray) -> np.ndarray:
    """(F,) float32 unit vector of a span's pooled codes (all of its entries), zeros when nothing fired."""
    v_F = weighted(np.asarray(sums_F, np.float64), idf_F.astype(np.float64))
    norm = float(np.linalg.norm(v_F))
    return (v_F / norm if norm > 0 else v_F).astype(np.float32)


def window_grid(n_frames: int, window: int, hop: int) -> tuple[np.ndarray, np.ndarray]:
    """[start, end) of a clip's windows: every `hop` frames, the last one ending at the clip's end (a clip
    shorter than a window is one window)."""
    if n_frames <= window:
        return np.zeros(1, np.int64), np.full(1, n_frames, np.int64)
    starts = np.arange(0, n_frames - window + 1, hop, dtype=np.int64)
    if starts[-1] + window < n_frames:
        starts = np.r_[starts, n_frames - window]
    return starts, starts + window


class WindowIndex(NamedTuple):
    """Every window of the corpus (W of them, by clip then start) with its sketch (S entries each)."""

    clip: np.ndarray
    """int32 (W,) manifest row."""
    start: np.ndarray
    """int32 (W,) first frame."""
    end: np.ndarray
    """int32 (W,) end frame, exclusive."""
    features_WS: np.ndarray
    """int32 sketch feature ids, strongest first (-1 pads a window with fewer firing features)."""
    weights_WS: np.ndarray
    """float32 unit-norm sketch weights (0 where padded)."""


def build_windows(codes: FrameCodes, idf_F: np.ndarray, cfg: SimilarConfig) -> WindowIndex:
    """The windows of every clip of `codes` and their sketches (pooled through per-clip cumulative sums)."""
    n_features, width = codes.n_features, min(cfg.sketch_features, codes.n_features)
    parts: list[tuple[np.ndarray, ...]] = []
    for c, row in enumerate(codes.clip_rows):
        f_TK, v_TK = codes.clip(c)
        n = len(f_TK)
        if n == 0:
            continue
        dense_TF = np.zeros((n, n_features), np.float32)
        np.add.at(dense_TF, (np.repeat(np.arange(n), f_TK.shape[1]), f_TK.ravel()), v_TK.ravel())
        cumsum_TF = np.vstack([np.zeros((1, n_features), np.float64), np.cumsum(dense_TF, 0, np.float64)])
        starts, ends = window_grid(n, cfg.window_frames, cfg.hop_frames)
        vectors = weighted(cumsum_TF[ends] - cumsum_TF[starts], idf_F)
        features_WS, weights_WS = sketch(vectors, width)
        parts.append((np.full(len(starts), row), starts, ends, features_WS, weights_WS))
    if not parts:
        empty = np.zeros(0, np.int32)
        return WindowIndex(
            empty, empty, empty, np.zeros((0, width), np.int32), np.zeros((0, width), np.float32)
        )
    clip, start, end, features, weights = (np.concatenate(column) for column in zip(*parts))
    return WindowIndex(clip.astype(np.int32), start.astype(np.int32), end.astype(np.int32), features, weights)


def sketch(vectors_WF: np.ndarray, width: int) -> tuple[np.ndarray, np.ndarray]:
    """Each row's `width` largest entries, strongest first, renormalised to unit length."""
    top_WS = np.argpartition(-vectors_WF, width - 1, axis=1)[:, :width]
    values_WS = np.take_along_axis(vectors_WF, top_WS, 1)
    order = np.argsort(-values_WS, axis=1, kind="stable")
    top_WS, values_WS = np.take_along_axis(top_WS, order, 1), np.take_along_axis(values_WS, order, 1)
    norm_W1 = np.linalg.norm(values_WS, axis=1, keepdims=True)
    weights_WS = np.divide(values_WS, norm_W1, out=np.zeros_like(values_WS), where=norm_W1 > 0)
    features_WS = np.where(weights_WS > 0, top_WS, -1).astype(np.int32)
    return features_WS, np.where(weights_WS > 0, weights_WS, 0).astype(np.float32)


class Postings(NamedTuple):
    """The sketches' entries by feature, each feature's by weight (strongest first): P rows."""

    feature: np.ndarray
    """int32 (P,)."""
    rank: np.ndarray
    """int32 (P,) 0 = the feature's strongest window."""
    window: np.ndarray
    """int32 (P,) window id (row of the `WindowIndex`)."""
    weight: np.ndarray
    """float32 (P,)."""


def postings(index: WindowIndex) -> Postings:
    """The inverted index of `index`'s sketches (padding left out)."""
    n_windows, width = index.features_WS.shape
    feature_P = index.features_WS.ravel()
    keep = feature_P >= 0
    feature_P = feature_P[keep]
    window_P = np.repeat(np.arange(n_windows, dtype=np.int32), width)[keep]
    weight_P = index.weights_WS.ravel()[keep]
    order = np.lexsort((window_P, -weight_P, feature_P))
    feature_P, window_P, weight_P = feature_P[order], window_P[order], weight_P[order]
    first = np.flatnonzero(np.r_[True, feature_P[1:] != feature_P[:-1]])
    rank_P = np.arange(len(feature_P)) - np.repeat(first, np.diff(np.r_[first, len(feature_P)]))
    return Postings(feature_P, rank_P.astype(np.int32), window_P, weight_P)


def strongest(q_F: np.ndarray, n: int) -> np.ndarray:
    """Ids of the `n` largest positive entries of a query vector, largest first."""
    positive = np.flatnonzero(q_F > 0)
    return positive[np.argsort(-q_F[positive], kind="stable")][:n]


def sketch_scores(q_F: np.ndarray, features_WS: np.ndarray, weights_WS: np.ndarray) -> np.ndarray:
    """(W,) cosine of the unit query with each unit sketch (padding scores nothing)."""
    return (np.where(features_WS >= 0, q_F[np.maximum(features_WS, 0)], 0.0) * weights_WS).sum(1)


def partial_scores(
    q_F: np.ndarray, window_P: np.ndarray, feature_P: np.ndarray, weight_P: np.ndarray
) -> tuple[np.ndarray, np.ndarray]:
    """(candidate windows, their dot product with the query over the postings read), best first."""
    windows, inverse = np.unique(window_P, return_inverse=True)
    partial = np.bincount(inverse, weights=q_F[feature_P] * weight_P, minlength=len(windows))
    order = np.argsort(-partial, kind="stable")
    return windows[order], partial[order]


@dataclass(frozen=True)
class Match:
    """A scored corpus window."""

    window: int
    clip: int
    start_frame: int
    end_frame: int
    score: float


def best_per_clip(
    matches: list[Match], limit: int, exclude_clip: int | None = None, exclude: tuple[int, int] = (0, 0)
) -> list[Match]:
    """The `limit` best matches, one per clip (its best window), leaving out windows of `exclude_clip` that
    overlap frames `exclude` (the query itself: "similar" should find other moments)."""
    chosen: dict[int, Match] = {}
    for m in sorted(matches, key=lambda m: (-m.score, m.window)):
        if m.clip == exclude_clip and m.start_frame < exclude[1] and m.end_frame > exclude[0]:
            continue
        if m.clip not in chosen and m.score > 0:
            chosen[m.clip] = m
            if len(chosen) == limit:
                break
    return list(chosen.values())
