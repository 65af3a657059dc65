"""The streaming pass: encode every real frame once with the SAE and accumulate per-feature statistics.

Frames come from the activation shards in chunks of whole clips (`iter_chunks`), so per-clip peaks are
exact and each clip is offered to the top-k buffer once. All state is bounded by the number of features
(see `pipelines.analysis.streaming`); time is linear in frames. A second, cheap pass (`read_windows`)
re-encodes only the clips that hold chosen examples to store the activations around each peak.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import Callable, Iterator, NamedTuple, Protocol

import numpy as np
import torch

from pipelines.activations import iter_shards
from pipelines.analysis.config import AnalysisConfig
from pipelines.analysis.groups import ClipGroups, GroupTotals
from pipelines.analysis.streaming import (
    CoactiveCounter,
    DenseCoactive,
    GridReservoir,
    TopExamples,
    coactive_counter,
    grid_bin,
)


class LatentEncoder(Protocol):
    """What the analysis needs from an SAE (`pipelines.sae.SparseAutoencoder` satisfies it)."""

    @property
    def W_dec(self) -> torch.Tensor: ...

    def encode(self, x_BD: torch.Tensor) -> torch.Tensor: ...


@dataclass
class Chunk:
    """Consecutive whole clips of one shard."""

    acts_ND: np.ndarray
    clip_rows: np.ndarray
    """(C,) manifest rows of the clips, in order."""
    bounds: np.ndarray
    """(C + 1,) offsets of each clip's frames in `acts_ND`."""
    frames: np.ndarray
    """(N,) encoder frame of each row within its clip."""


def iter_chunks(folder: Path, chunk_frames: int, wanted: np.ndarray | None = None) -> Iterator[Chunk]:
    """Chunks of about `chunk_frames` frames, each of whole clips (optionally only the `wanted` clip rows)."""
    for acts, index in iter_shards(folder):
        rows = np.asarray(index[:, 0])
        starts = np.flatnonzero(np.r_[True, rows[1:] != rows[:-1]])
        ends = np.r_[starts[1:], len(rows)]
        keep = np.ones(len(starts), bool) if wanted is None else np.isin(rows[starts], wanted)
        starts, ends = starts[keep], ends[keep]
        group_start = 0
        while group_start < len(starts):
            group_end = group_start + 1
            while group_end < len(starts) and ends[group_end] - starts[group_start] <= chunk_frames:
                group_end += 1
            s, e = starts[group_start:group_end], ends[group_start:group_end]
            if np.array_equal(s[1:], e[:-1]):  # consecutive clips: one slice of the memory map
                take: slice | np.ndarray = slice(s[0], e[-1])
            else:
                take = np.concatenate([np.arange(a, b) for a, b in zip(s, e)])
            yield Chunk(
                acts_ND=np.asarray(acts[take]),
                clip_rows=rows[s],
                bounds=np.r_[0, np.cumsum(e - s)],
                frames=np.asarray(index[take, 1]),
            )
            group_start = group_end


@torch.no_grad()
def encode_chunk(sae: LatentEncoder, acts_ND: np.ndarray) -> torch.Tensor:
    """(N, F) float32 latents on the CPU."""
    device = sae.W_dec.device
    x_ND = torch.from_numpy(acts_ND.astype(np.float32)).to(device)
    return sae.encode(x_ND).float().cpu()


@dataclass
class ScanResult:
    """Everything the streaming pass accumulated (F features, G grid bins)."""

    n_frames: int
    clip_frames: np.ndarray
    """(n_clips,) real frames of each manifest row found in the shards."""
    fire_count: np.ndarray
    """(F,) frames where the latent is > 0."""
    act_sum: np.ndarray
    """(F,) float64 sum of activations over firing frames."""
    max_act: np.ndarray
    hist_counts: np.ndarray
    """(F, G) firing frames per log-grid bin."""
    languages: GroupTotals
    categories: GroupTotals
    top: TopExamples
    reservoir: GridReservoir
    coactive: DenseCoactive | CoactiveCounter


class Firing(NamedTuple):
    """The (frame, feature) pairs of a chunk where the latent is > 0 (P pairs)."""

    row_P: np.ndarray
    """Row of the frame in the chunk."""
    feature_P: np.ndarray
    value_P: np.ndarray
    """float64 activation."""


def scan_activations(
    folder: Path,
    sae: LatentEncoder,
    languages: ClipGroups,
    categories: ClipGroups,
    cfg: AnalysisConfig,
    advance: Callable[[int], None] = lambda n: None,
) -> ScanResult:
    """One pass over every real frame of the shards in `folder`, with frames counted per group of the clips'
    `languages` and `categories`. `advance(n_frames)` reports progress."""
    n_features = sae.W_dec.shape[0]
    res = ScanResult(
        n_frames=0,
        clip_frames=np.zeros(len(languages.clip_group), np.int64),
        fire_count=np.zeros(n_features, np.int64),
        act_sum=np.zeros(n_features, np.float64),
        max_act=np.zeros(n_features, np.float32),
        hist_counts=np.zeros((n_features, cfg.n_grid), np.int64),
        languages=GroupTotals.zeros(languages.names, n_features),
        categories=GroupTotals.zeros(categories.names, n_features),
        top=TopExamples(n_features, cfg.top_k),
        reservoir=GridReservoir(n_features, cfg.n_grid, cfg.reservoir, cfg.seed),
        coactive=coactive_counter(n_features, cfg.coactive_dense_max_features, cfg.coactive_counters),
    )
    edges = torch.from_numpy(cfg.grid_edges()).float()
    n_coactive = min(cfg.coactive_max_latents, n_features)
    for chunk in iter_chunks(folder, cfg.chunk_frames):
        latents_NF = encode_chunk(sae, chunk.acts_ND)
        lengths = np.diff(chunk.bounds)
        res.n_frames += latents_NF.shape[0]
        res.clip_frames[chunk.clip_rows] += lengths
        firing = _count_firing(res, latents_NF, edges)
        for groups, totals in ((languages, res.languages), (categories, res.categories)):
            totals.add(np.repeat(groups.clip_group[chunk.clip_rows], lengths), *firing)
        _offer_clip_peaks(res, latents_NF, chunk, edges)
        top_vals, top_ids = torch.topk(latents_NF, n_coactive, dim=1)
        res.coactive.update(top_ids, top_vals > 0)
        advance(latents_NF.shape[0])
    return res


def _count_firing(res: ScanResult, latents_NF: torch.Tensor, edges: torch.Tensor) -> Firing:
    """Add a chunk's firing latents to the per-feature counts, sums and log-grid histograms."""
    rows, feats = (latents_NF > 0).nonzero(as_tuple=True)
    vals = latents_NF[rows, feats]
    f, v = feats.numpy(), vals.double().numpy()
    n_features, n_grid = res.hist_counts.shape
    res.fire_count += np.bincount(f, minlength=n_features)
    res.act_sum += np.bincount(f, weights=v, minlength=n_features)
    cell = f * n_grid + grid_bin(vals, edges).numpy()
    res.hist_counts += np.bincount(cell, minlength=n_features * n_grid).reshape(-1, n_grid)
    return Firing(rows.numpy(), f, v)


def _offer_clip_peaks(res: ScanResult, latents_NF: torch.Tensor, chunk: Chunk, edges: torch.Tensor) -> None:
    """Offer each clip's peak per feature to the max, the top-k buffer and the quantile reservoir."""
    peak_CF, frame_CF = clip_peaks(latents_NF, chunk)
    np.maximum(res.max_act, peak_CF.max(0).values.numpy(), out=res.max_act)
    res.top.update(peak_CF, frame_CF, torch.from_numpy(chunk.clip_rows.astype(np.int64)))
    c_idx, f_idx = (peak_CF > 0).nonzero(as_tuple=True)
    peak_vals = peak_CF[c_idx, f_idx]
    res.reservoir.update(
        f_idx.numpy(),
        grid_bin(peak_vals, edges).numpy(),
        chunk.clip_rows[c_idx.numpy()],
        frame_CF[c_idx, f_idx].numpy(),
        peak_vals.numpy(),
    )


def clip_peaks(latents_NF: torch.Tensor, chunk: Chunk) -> tuple[torch.Tensor, torch.Tensor]:
    """(C, F) max activation of each feature in each clip, and the clip frame where it first occurs."""
    frames = torch.from_numpy(chunk.frames.astype(np.int64))
    peaks, where = [], []
    for a, b in zip(chunk.bounds[:-1], chunk.bounds[1:]):
        value, arg = latents_NF[a:b].max(0)
        peaks.append(value)
        where.append(frames[a + arg])
    return torch.stack(peaks), torch.stack(where)


def window_bounds(peak: np.ndarray, n_frames: np.ndarray, window: int) -> tuple[np.ndarray, np.ndarray]:
    """[start, end) of a `window`-frame window centred on each peak, shifted to fit inside its clip."""
    start = np.clip(peak - window // 2, 0, np.maximum(n_frames - window, 0))
    return start, np.minimum(start + window, n_frames)


def read_windows(
    folder: Path,
    sae: LatentEncoder,
    feature: np.ndarray,
    clip: np.ndarray,
    start: np.ndarray,
    end: np.ndarray,
    cfg: AnalysisConfig,
    advance: Callable[[int], None] = lambda n: None,
) -> np.ndarray:
    """Per-frame activations of `feature[i]` over frames [start[i], end[i]) of clip row `clip[i]`.

    Returns the windows concatenated (float32, lengths end - start, in the order given). Only the clips
    that hold an example are read and encoded.
    """
    lengths = end - start
    offsets = np.r_[0, np.cumsum(lengths)]
    out = np.zeros(offsets[-1], np.float32)
    by_clip = np.argsort(clip, kind="stable")
    clip_sorted = clip[by_clip]
    for chunk in iter_chunks(folder, cfg.chunk_frames, wanted=np.unique(clip)):
        latents_NF = encode_chunk(sae, chunk.acts_ND)
        for c, (a, b) in enumerate(zip(chunk.bounds[:-1], chunk.bounds[1:])):
            lo, hi = (
                np.searchsorted(clip_sorted, chunk.clip_rows[c], side="left"),
                np.searchsorted(clip_sorted, chunk.clip_rows[c], side="right"),
            )
            idx = by_clip[lo:hi]
            frame_row = np.full(int(chunk.frames[a:b].max()) + 1, -1)
            frame_row[chunk.frames[a:b]] = np.arange(a, b)
            rows = np.concatenate([frame_row[start[i] : end[i]] for i in idx])
            feats = np.repeat(feature[idx], lengths[idx])
            dest = np.concatenate([np.arange(offsets[i], offsets[i + 1]) for i in idx])
            out[dest] = latents_NF[torch.from_numpy(rows), torch.from_numpy(feats.astype(np.int64))].numpy()
        advance(len(chunk.clip_rows))
    return out
