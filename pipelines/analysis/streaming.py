"""Bounded-memory accumulators for the analysis pass: each is fed one chunk of whole clips at a time.

Memory depends on the number of features F and the configured sizes only, never on the corpus size:

- `TopExamples`: the k strongest clips per feature, one example per clip (a clip's peak frame), as a running
  (F, k) buffer merged per chunk with `torch.topk` over [buffer | this chunk's per-clip peaks].
- `GridReservoir`: per (feature, bin of a fixed log activation grid) a uniform sample of r clip peaks, by
  bottom-r priority sampling (reservoir sampling with a hash of (feature, clip) as the random key, so the
  result does not depend on chunking: it equals keeping the r smallest keys per cell over the whole corpus),
  plus the exact number of clip peaks seen per cell. Quantile examples are drawn from it at the end
  (`quantile_examples`): stratified by cell, exact counts as weights.
- co-occurrence of features on the same frames (for Jaccard co-active partners), two ways by size:
  `DenseCoactive`, an exact F x F int32 count (64 MB at 4,096 features; used up to
  `AnalysisConfig.coactive_dense_max_features`), else `CoactiveCounter`, per feature Misra-Gries counters
  (mergeable heavy-hitter summaries, Agarwal et al. 2012): F x m memory; a partner's count is
  underestimated by at most (pairs of the feature) / (m + 1), exact when a feature has at most m partners.
  Both count pairs among each frame's `coactive_max_latents` strongest latents (all of them for TopK k=32).
- Histograms and language/category masses are fixed-size bincounts.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
import torch

_EMPTY = np.iinfo(np.int64).max


def hash_priority(feature: np.ndarray, clip: np.ndarray, seed: int) -> np.ndarray:
    """A deterministic pseudo-random int64 key in [0, 2^63) per (feature, clip) (a PCG-style mix)."""
    x = feature.astype(np.uint64) * np.uint64(0x9E3779B97F4A7C15) ^ clip.astype(np.uint64) * np.uint64(
        0xC2B2AE3D27D4EB4F
    )
    x = x + np.uint64(seed) * np.uint64(0x165667B19E3779F9)
    for shift in (33, 29, 32):
        x = (x ^ (x >> np.uint64(shift))) * np.uint64(0x5851F42D4C957F2D)
    return (x >> np.uint64(1)).astype(np.int64)


def grid_bin(values: torch.Tensor, edges: torch.Tensor) -> torch.Tensor:
    """Bin index of each value on the fixed log grid; values beyond it fall into the first/last bin."""
    return (torch.bucketize(values, edges[1:-1], right=True)).to(torch.int64)


def rank_in_group(group_sorted: np.ndarray) -> np.ndarray:
    """Position of each element within its run of equal values (input sorted by group)."""
    n = len(group_sorted)
    if n == 0:
        return np.zeros(0, np.int64)
    starts = np.flatnonzero(np.r_[True, group_sorted[1:] != group_sorted[:-1]])
    run_start = np.repeat(starts, np.diff(np.r_[starts, n]))
    return np.arange(n) - run_start


class TopExamples:
    """The k strongest clip peaks per feature; feed each clip exactly once (one example per clip)."""

    def __init__(self, n_features: int, k: int):
        self.value_FK = torch.zeros(n_features, k)
        self.clip_FK = torch.full((n_features, k), -1, dtype=torch.int32)
        self.frame_FK = torch.zeros(n_features, k, dtype=torch.int32)

    def update(self, peak_CF: torch.Tensor, frame_CF: torch.Tensor, clip_rows_C: torch.Tensor) -> None:
        """Merge the per-clip peaks (value and frame of each feature's max in each clip) of one chunk."""
        k = self.value_FK.shape[1]
        values = torch.cat([self.value_FK, peak_CF.T], dim=1)
        clips = torch.cat(
            [self.clip_FK, clip_rows_C.to(torch.int32)[None, :].expand(peak_CF.shape[1], -1)], 1
        )
        frames = torch.cat([self.frame_FK, frame_CF.T.to(torch.int32)], dim=1)
        self.value_FK, pick = torch.topk(values, k, dim=1)
        self.clip_FK = torch.gather(clips, 1, pick)
        self.frame_FK = torch.gather(frames, 1, pick)


class GridReservoir:
    """A uniform sample of r clip peaks per (feature, log-grid bin), and the exact peak count per cell."""

    def __init__(self, n_features: int, n_grid: int, r: int, seed: int):
        self.n_grid, self.r, self.seed = n_grid, r, seed
        n_cells = n_features * n_grid
        self.priority = np.full((n_cells, r), _EMPTY, np.int64)
        self.clip = np.full((n_cells, r), -1, np.int32)
        self.frame = np.zeros((n_cells, r), np.int32)
        self.value = np.zeros((n_cells, r), np.float32)
        self.seen = np.zeros(n_cells, np.int64)

    def update(
        self, feature: np.ndarray, grid: np.ndarray, clip: np.ndarray, frame: np.ndarray, value: np.ndarray
    ) -> None:
        """Offer clip peaks (one per (feature, clip), value > 0) with their grid bins."""
        cell = feature.astype(np.int64) * self.n_grid + grid
        self.seen += np.bincount(cell, minlength=len(self.seen))
        touched = np.unique(cell)
        old = self.priority[touched] != _EMPTY
        all_cell = np.concatenate([np.repeat(touched, self.r)[old.ravel()], cell])
        all_prio = np.concatenate([self.priority[touched][old], hash_priority(feature, clip, self.seed)])
        all_clip = np.concatenate([self.clip[touched][old], clip])
        all_frame = np.concatenate([self.frame[touched][old], frame])
        all_value = np.concatenate([self.value[touched][old], value])
        order = np.lexsort((all_prio, all_cell))
        keep = order[rank_in_group(all_cell[order]) < self.r]
        slot = rank_in_group(all_cell[keep])
        self.priority[touched] = _EMPTY
        self.clip[touched] = -1
        for dest, src in (
            (self.priority, all_prio),
            (self.clip, all_clip),
            (self.frame, all_frame),
            (self.value, all_value),
        ):
            dest[all_cell[keep], slot] = src[keep]


def _frame_pairs(active_BT: torch.Tensor, valid_BT: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    """(a, b) latent ids of every pair of valid slots in the same frame (each unordered pair once)."""
    t = active_BT.shape[1]
    i, j = torch.triu_indices(t, t, offset=1)
    ok = valid_BT[:, i] & valid_BT[:, j]
    return active_BT[:, i][ok], active_BT[:, j][ok]


def _top_jaccard(
    partner: np.ndarray, together: np.ndarray, row_count: np.ndarray, fire_count: np.ndarray, n: int
) -> tuple[np.ndarray, np.ndarray]:
    """Top-n partners per row by Jaccard |f & g| / (|f| + |g| - |f & g|); `partner` < 0 marks empty slots.

    `row_count` is |f| of each row's feature, `fire_count` |g| of every feature."""
    held = partner >= 0
    safe = np.where(held, partner, 0)
    union = row_count[:, None] + fire_count[safe] - together
    score = np.where(held & (together > 0), together / np.maximum(union, 1), -1.0)
    n = min(n, score.shape[1])
    top = np.argsort(-score, axis=1, kind="stable")[:, :n]
    top_score = np.take_along_axis(score, top, 1)
    top_partner = np.where(top_score >= 0, np.take_along_axis(partner, top, 1), -1)
    return top_partner.astype(np.int32), np.maximum(top_score, 0).astype(np.float32)


class DenseCoactive:
    """Exact co-firing frame counts for every pair of features (F x F int32)."""

    def __init__(self, n_features: int, block: int = 1024):
        self.n_features, self.block = n_features, block
        self.count = torch.zeros(n_features * n_features, dtype=torch.int32)

    def update(self, active_BT: torch.Tensor, valid_BT: torch.Tensor) -> None:
        t = active_BT.shape[1]
        i, j = torch.triu_indices(t, t, offset=1)
        for start in range(0, active_BT.shape[0], self.block):
            ids, valid = active_BT[start : start + self.block], valid_BT[start : start + self.block]
            a, b = ids[:, i], ids[:, j]
            keys = torch.minimum(a, b) * self.n_features + torch.maximum(a, b)
            # invalid slots still hold real latent ids: they add 0 instead of being filtered out (faster)
            self.count.index_add_(0, keys.view(-1), (valid[:, i] & valid[:, j]).view(-1).to(torch.int32))

    def jaccard(self, fire_count: np.ndarray, n: int) -> tuple[np.ndarray, np.ndarray]:
        """Top-n partners per feature by Jaccard of firing frames (-1 pads)."""
        upper = self.count.view(self.n_features, self.n_features)
        partners, scores = [], []
        ids = np.arange(self.n_features)
        for start in range(0, self.n_features, self.block):
            rows = slice(start, start + self.block)
            together = (upper[rows] + upper[:, rows].T).numpy().astype(np.int64)
            partner = np.broadcast_to(ids, together.shape).copy()
            partner[np.arange(together.shape[0]), ids[rows]] = -1
            p, sc = _top_jaccard(partner, together, fire_count[rows], fire_count, n)
            partners.append(p)
            scores.append(sc)
        return np.concatenate(partners), np.concatenate(scores)


class CoactiveCounter:
    """Misra-Gries counters of co-firing partners per feature (m counters each)."""

    def __init__(self, n_features: int, m: int):
        self.n_features, self.m = n_features, m
        self.partner = np.full((n_features, m), -1, np.int64)
        self.count = np.zeros((n_features, m), np.int64)

    def update(self, active_BT: torch.Tensor, valid_BT: torch.Tensor) -> None:
        """Count co-firing pairs among each frame's active latent ids (`valid` masks padding slots)."""
        a, b = (x.numpy().astype(np.int64) for x in _frame_pairs(active_BT, valid_BT))
        lo, hi = np.minimum(a, b), np.maximum(a, b)
        keys, counts = np.unique(lo * self.n_features + hi, return_counts=True)
        f, g = keys // self.n_features, keys % self.n_features
        self._merge(np.concatenate([f, g]), np.concatenate([g, f]), np.concatenate([counts, counts]))

    def _merge(self, f: np.ndarray, g: np.ndarray, c: np.ndarray) -> None:
        touched = np.unique(f)
        held = self.partner[touched] >= 0
        f_all = np.concatenate([np.repeat(touched, self.m)[held.ravel()], f])
        g_all = np.concatenate([self.partner[touched][held], g])
        c_all = np.concatenate([self.count[touched][held], c])
        keys, inverse = np.unique(f_all * self.n_features + g_all, return_inverse=True)
        summed = np.bincount(inverse, weights=c_all).astype(np.int64)
        f_u, g_u = keys // self.n_features, keys % self.n_features
        order = np.lexsort((-summed, f_u))
        f_s, g_s, c_s = f_u[order], g_u[order], summed[order]
        rank = rank_in_group(f_s)
        cut = np.zeros(self.n_features, np.int64)
        at_m = rank == self.m
        cut[f_s[at_m]] = c_s[at_m]
        c_s = c_s - cut[f_s]
        keep = (rank < self.m) & (c_s > 0)
        self.partner[touched] = -1
        self.count[touched] = 0
        self.partner[f_s[keep], rank[keep]] = g_s[keep]
        self.count[f_s[keep], rank[keep]] = c_s[keep]

    def jaccard(self, fire_count: np.ndarray, n: int) -> tuple[np.ndarray, np.ndarray]:
        """Top-n partners per feature by Jaccard of firing frames (-1 pads)."""
        return _top_jaccard(self.partner, self.count, fire_count, fire_count, n)


def coactive_counter(
    n_features: int, dense_max_features: int, counters: int
) -> DenseCoactive | CoactiveCounter:
    """The exact dense counter when F x F int32 is affordable, else Misra-Gries summaries."""
    if n_features <= dense_max_features:
        return DenseCoactive(n_features)
    return CoactiveCounter(n_features, counters)


@dataclass
class QuantileDraws:
    """Quantile examples: one row per draw, sorted by (feature, bin descending, value descending)."""

    feature: np.ndarray
    bin: np.ndarray
    upper: np.ndarray
    """Upper activation edge of the draw's bin."""
    clip: np.ndarray
    frame: np.ndarray
    value: np.ndarray


def quantile_examples(
    res: GridReservoir,
    edges: np.ndarray,
    n_bins: int,
    per_bin: int,
    seed: int,
    exclude: tuple[np.ndarray, np.ndarray] | None = None,
) -> QuantileDraws:
    """Draw `per_bin` clip peaks per activation bin of each feature from the reservoir.

    A feature's bins split the grid cells between its weakest and strongest clip peak into `n_bins` runs of
    (nearly) equal width in log activation. Within a bin, a kept peak of cell c stands for seen[c] / kept[c]
    peaks, so draws are weighted by that (Efraimidis-Spirakis keys u^(1/w), u from a hash): each draw is then
    a sample of the clip peaks of the bin, with cells in proportion to their true counts. `exclude`
    (feature, clip) pairs, e.g. the top examples, are not drawn again.
    """
    kept = res.priority != _EMPTY
    n_kept = kept.sum(1)
    if exclude is not None:
        n_clips = int(max(res.clip.max(), exclude[1].max(initial=0))) + 1
        shown = np.isin(
            (np.arange(len(kept)) // res.n_grid)[:, None].astype(np.int64) * n_clips + res.clip,
            exclude[0].astype(np.int64) * n_clips + exclude[1],
        )
        kept &= ~shown
    cell, slot = np.nonzero(kept)
    feature, grid = cell // res.n_grid, cell % res.n_grid
    seen = res.seen.reshape(-1, res.n_grid)
    live = seen > 0
    lo_cell = np.where(live.any(1), live.argmax(1), 0)
    hi_cell = res.n_grid - 1 - np.where(live.any(1), live[:, ::-1].argmax(1), 0)
    span = hi_cell - lo_cell + 1
    bins = np.minimum(n_bins, span)
    bin_ = (grid - lo_cell[feature]) * bins[feature] // span[feature]
    weight = res.seen[cell] / n_kept[cell]
    u = (hash_priority(feature, res.clip[cell, slot], seed + 1) + 1) / 2.0**63
    log_key = np.log(u) / weight
    order = np.lexsort((-log_key, -bin_, feature))
    group = feature[order] * (n_bins + 1) + bin_[order]
    pick = order[rank_in_group(group) < per_bin]
    value = res.value[cell[pick], slot[pick]]
    f_p, b_p = feature[pick], bin_[pick]
    final = np.lexsort((-value, -b_p, f_p))
    pick, f_p, b_p, value = pick[final], f_p[final], b_p[final], value[final]
    last_cell = lo_cell[f_p] + ((b_p + 1) * span[f_p] + bins[f_p] - 1) // bins[f_p] - 1
    return QuantileDraws(
        feature=f_p.astype(np.int32),
        bin=b_p.astype(np.int32),
        upper=edges[last_cell + 1].astype(np.float32),
        clip=res.clip[cell[pick], slot[pick]],
        frame=res.frame[cell[pick], slot[pick]],
        value=value,
    )


def decoder_neighbours(W_dec_FD: torch.Tensor, n: int, block: int = 1024) -> tuple[np.ndarray, np.ndarray]:
    """Top-n other features per feature by cosine of decoder rows, computed in row blocks of the (F, F)."""
    unit = torch.nn.functional.normalize(W_dec_FD.detach().float(), dim=1)
    n_features = unit.shape[0]
    n = min(n, n_features - 1)
    idx = np.zeros((n_features, n), np.int32)
    cos = np.zeros((n_features, n), np.float32)
    for start in range(0, n_features, block):
        sims = unit[start : start + block] @ unit.T
        rows = torch.arange(sims.shape[0])
        sims[rows, rows + start] = -float("inf")
        top = torch.topk(sims, n, dim=1)
        idx[start : start + block] = top.indices.numpy()
        cos[start : start + block] = top.values.numpy()
    return idx, cos
