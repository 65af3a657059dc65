"""A 2-D map of the dictionary: UMAP (McInnes, Healy & Melville 2018, umap-learn) of the live features' unit
decoder directions under the cosine metric, seeded so that a rebuild draws the same map.

Features that write similar directions into the residual stream land close together. Coordinates are
rescaled into the unit square (both axes by the same factor, centred), so a view saved in a URL stays
meaningful across rebuilds of the same map. On the default SAE (1,024 latents) the embedding takes ~2 s
once numba has compiled UMAP's kernels (~15 s in a fresh process on 2 cores).
"""

from __future__ import annotations

import time
from typing import Annotated, NamedTuple

import numpy as np
from pydantic import Field, PositiveInt

from pipelines.config import config
from pipelines.errors import AtlasError


class MapConfigError(AtlasError, ValueError):
    """An out-of-range map setting."""


@config(MapConfigError, frozen=True)
class MapConfig:
    """UMAP's settings for the feature map."""

    n_neighbors: Annotated[int, Field(ge=2)] = 15
    """Neighbourhood size: larger keeps more of the global layout, smaller more local detail."""
    min_dist: Annotated[float, Field(ge=0, le=1)] = 0.1
    """How tightly points may pack in the embedding."""
    seed: int = 0
    """UMAP's random state (the map is deterministic given it)."""
    n_epochs: PositiveInt = 300
    """Optimisation epochs of the layout."""


class FeatureMap(NamedTuple):
    feature: np.ndarray
    """int32 (K,) the live features, ascending."""
    xy_K2: np.ndarray
    """float32 positions in the unit square."""
    seconds: float


def unit_square(xy_K2: np.ndarray) -> np.ndarray:
    """Points moved and scaled (one factor for both axes) to fit [0, 1] x [0, 1], centred."""
    if len(xy_K2) == 0:
        return xy_K2.astype(np.float32)
    lo, hi = xy_K2.min(0), xy_K2.max(0)
    span = float((hi - lo).max())
    scaled = (xy_K2 - (lo + hi) / 2) / (span if span > 0 else 1.0) + 0.5
    return scaled.astype(np.float32)


def feature_map(W_dec_FD: np.ndarray, live_F: np.ndarray, cfg: MapConfig = MapConfig()) -> FeatureMap:
    """The map of the features flagged in `live_F` from their decoder rows (too few for UMAP: a line)."""
    started = time.perf_counter()
    ids = np.flatnonzero(live_F).astype(np.int32)
    rows = np.asarray(W_dec_FD, np.float32)[ids]
    unit = rows / np.maximum(np.linalg.norm(rows, axis=1, keepdims=True), 1e-12)
    if len(ids) <= 3:
        xy = np.stack([np.arange(len(ids), dtype=np.float32), np.zeros(len(ids), np.float32)], 1)
    else:
        import umap  # umap-learn: numba and scikit-learn load only when a map is drawn

        reducer = umap.UMAP(
            n_neighbors=min(cfg.n_neighbors, len(ids) - 1),
            min_dist=cfg.min_dist,
            n_epochs=cfg.n_epochs,
            metric="cosine",
            random_state=cfg.seed,
            n_jobs=1,  # what a fixed random_state implies anyway; said here so umap does not warn
        )
        xy = reducer.fit_transform(unit)
    return FeatureMap(ids, unit_square(np.asarray(xy, np.float64)), time.perf_counter() - started)
