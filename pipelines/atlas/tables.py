"""Small Arrow helpers of the atlas build: list columns, share tables, activation and density histograms, and
the byte format of a clip's frame codes."""

from __future__ import annotations

import zlib

import numpy as np
import pyarrow as pa

DENSITY_BIN_WIDTH = 0.25
"""Width of a density-histogram bin, in log10 units."""


def list_array(values: np.ndarray, lengths: np.ndarray) -> pa.Array:
    """A list column from the concatenated `values` and the length of each row (no Python loop per row)."""
    offsets = np.zeros(len(lengths) + 1, np.int32)
    np.cumsum(lengths, out=offsets[1:])
    return pa.ListArray.from_arrays(pa.array(offsets), pa.array(np.ascontiguousarray(values)))


def density_histogram_table(density: np.ndarray) -> pa.Table:
    """Histogram of log10(density) over live features (density > 0), in fixed 0.25-wide bins up to 0."""
    live = np.log10(density[density > 0])
    first = np.floor(live.min() / DENSITY_BIN_WIDTH) * DENSITY_BIN_WIDTH if live.size else 0.0
    n_bins = max(1, int(round(-first / DENSITY_BIN_WIDTH))) if live.size else 0
    edges = first + DENSITY_BIN_WIDTH * np.arange(n_bins + 1)
    counts = np.histogram(live, bins=edges)[0] if live.size else np.zeros(0, np.int64)
    lo = edges[:-1]
    return pa.table(
        {
            "bin": np.arange(len(lo), dtype=np.int32),
            "log10_lo": lo,
            "log10_hi": lo + DENSITY_BIN_WIDTH,
            "n_features": counts.astype(np.int32),
        }
    )


def share_table(
    name_column: str,
    names: list[str],
    features: np.ndarray,
    act_share_FK: np.ndarray,
    frame_share_K: np.ndarray,
    fire_rate_FK: np.ndarray,
) -> pa.Table:
    """Rows (feature, group) of a language or category table, feature-major, selectivity derived."""
    n_f, n_k = act_share_FK.shape
    frame_share = np.broadcast_to(frame_share_K, (n_f, n_k))
    return pa.table(
        {
            "feature_id": np.repeat(features, n_k).astype(np.int32),
            name_column: np.tile(np.array(names, dtype=str), n_f),
            "act_share": act_share_FK.ravel().astype(np.float32),
            "frame_share": frame_share.ravel().astype(np.float32),
            "selectivity": (act_share_FK / np.maximum(frame_share, 1e-30)).ravel().astype(np.float32),
            "fire_rate": fire_rate_FK.ravel().astype(np.float32),
        }
    )


def histogram_columns(counts_FG: np.ndarray, edges: np.ndarray) -> dict[str, pa.Array]:
    """Each feature's grid histogram trimmed to the bins between its first and last non-empty one."""
    nonzero = counts_FG > 0
    has = nonzero.any(1)
    n_grid = counts_FG.shape[1]
    lo = np.where(has, nonzero.argmax(1), 0)
    hi = np.where(has, n_grid - 1 - nonzero[:, ::-1].argmax(1), -1)
    bins = np.arange(n_grid + 1)[None, :]
    in_counts = (bins[:, :-1] >= lo[:, None]) & (bins[:, :-1] <= hi[:, None])
    in_edges = (bins >= lo[:, None]) & (bins <= hi[:, None] + 1) & np.asarray(has)[:, None]
    return {
        "hist_edges": list_array(
            np.broadcast_to(edges, in_edges.shape)[in_edges].astype(np.float32), in_edges.sum(1)
        ),
        "hist_counts": list_array(counts_FG[in_counts].astype(np.int64), in_counts.sum(1)),
    }


CODES_ZLIB_LEVEL = 1
"""zlib level of the frame-code blobs (level 6 saves 3% more for 50% more build time)."""


def encode_codes(features_TK: np.ndarray, acts_TK: np.ndarray) -> tuple[bytes, bytes]:
    """A clip's frame codes as `schema.frame_codes` stores them: zlib of the uint16 latent ids delta-coded
    along each frame (ascending ids: small steps), and zlib of the float16 activations. Compressed here
    because DuckDB's own (ZSTD) compresses a whole column vector at once, and reading one clip's blob then
    decompressed every clip's (~35 ms instead of ~2 ms)."""
    steps_TK = np.diff(features_TK.astype(np.int32), axis=1, prepend=0).astype("<u2")
    return (
        zlib.compress(steps_TK.tobytes(), CODES_ZLIB_LEVEL),
        zlib.compress(acts_TK.astype("<f2").tobytes(), CODES_ZLIB_LEVEL),
    )


def decode_codes(features: bytes, acts: bytes, n_frames: int, k: int) -> tuple[np.ndarray, np.ndarray]:
    """(features_TK uint16, acts_TK float32) from `encode_codes`' bytes; ValueError when they do not hold
    n_frames x k pairs."""
    steps = np.frombuffer(zlib.decompress(features), "<u2")
    values = np.frombuffer(zlib.decompress(acts), "<f2")
    if steps.size != n_frames * k or values.size != n_frames * k:
        raise ValueError(f"frame codes of {steps.size} and {values.size} values, not {n_frames} x {k}")
    features_TK = np.cumsum(steps.reshape(n_frames, k).astype(np.int32), axis=1).astype(np.uint16)
    return features_TK, values.reshape(n_frames, k).astype(np.float32)
