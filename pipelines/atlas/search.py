"""Similar-moment search over an atlas: the index path and the exhaustive reference it is measured against.

`search` reads the postings of the query's strongest features (bounded by `SimilarConfig`), keeps the best
candidates by their partial dot product and scores them exactly against their sketches
(`pipelines.analysis.similar` explains the vectors); `search_exhaustive` scores every window from all the
postings. Both return the best window of each clip, the query's own moment left out.
"""

from __future__ import annotations

import numpy as np
import pyarrow as pa

from pipelines.analysis.similar import Match, SimilarConfig, best_per_clip, partial_scores, strongest
from pipelines.atlas.reader import AtlasReader


def search(
    reader: AtlasReader,
    q_F: np.ndarray,
    cfg: SimilarConfig,
    limit: int,
    exclude_clip: int | None = None,
    exclude: tuple[int, int] = (0, 0),
) -> list[Match]:
    """The `limit` best clips' windows for the unit query `q_F`, through the inverted index."""
    top = strongest(q_F, cfg.query_features)
    if len(top) == 0:
        return []
    found = reader.window_candidates(top.tolist(), cfg.postings_per_feature)
    if found.num_rows == 0:
        return []
    windows, _ = partial_scores(
        q_F,
        found.column("window_id").to_numpy(),
        found.column("feature_id").to_numpy(),
        found.column("weight").to_numpy(),
    )
    sketches = reader.window_sketches(windows[: cfg.rescored].tolist())
    return best_per_clip(_scored(sketches, q_F), limit, exclude_clip, exclude)


def search_exhaustive(
    reader: AtlasReader,
    q_F: np.ndarray,
    limit: int,
    exclude_clip: int | None = None,
    exclude: tuple[int, int] = (0, 0),
) -> list[Match]:
    """As `search`, scoring every window that shares a feature with the query (all of its postings)."""
    nonzero = np.flatnonzero(q_F > 0)
    if len(nonzero) == 0:
        return []
    table = reader.window_scores(nonzero.tolist(), q_F[nonzero].astype(np.float64).tolist())
    matches = [
        Match(int(w), int(c), int(s), int(e), float(score))
        for w, c, s, e, score in zip(
            *(table.column(name).to_numpy() for name in ("window_id", "clip_id", "start_frame", "end_frame")),
            table.column("score").to_numpy(),
        )
    ]
    return best_per_clip(matches, limit, exclude_clip, exclude)


def _scored(sketches: pa.Table, q_F: np.ndarray) -> list[Match]:
    """Each sketch row's exact cosine with the query (its lists flattened once, summed per row)."""
    features = sketches.column("features").combine_chunks()
    weights = sketches.column("weights").combine_chunks()
    offsets = features.offsets.to_numpy()
    ids = features.values.to_numpy().astype(np.int64)
    products = q_F[ids] * weights.values.to_numpy()
    cumulative = np.r_[0.0, np.cumsum(products, dtype=np.float64)]
    scores = cumulative[offsets[1:]] - cumulative[offsets[:-1]]
    columns = (
        sketches.column(name).to_numpy() for name in ("window_id", "clip_id", "start_frame", "end_frame")
    )
    return [
        Match(int(w), int(c), int(s), int(e), float(score)) for w, c, s, e, score in zip(*columns, scores)
    ]
