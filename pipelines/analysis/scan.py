"""The streaming pass: encode every real frame once with the SAE and accumulate per-feature statistics.

Frames come from the activation shards in chunks of whole clips (`iter_chunks`), so per-clip peaks are
exact and each clip is offered to the top-k buffer once. All state is bounded by the number of features
(see `pipelines.analysis.streaming`); time is linear in frames. A second, cheap pass (`read_windows`)
re-encodes only the clips that hold chosen examples to store the activations around each peak.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import Callable, Iterator, Protocol

import numpy as np
import torch

from pipelines.activations import iter_shards
from pipelines.analysis.config import AnalysisConfig
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
    """Everything the streaming pass accumulated (F features, G grid bins, L languages, K categories)."""

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
    lang_frames: np.ndarray
    """(L,) frames per language."""
    lang_mass: np.ndarray
    """(F, L) activation mass per language."""
    lang_fires: np.ndarray
    cat_frames: np.ndarray
    cat_mass: np.ndarray
    cat_fires: np.ndarray
    top: TopExamples
    reservoir: GridReservoir
    coactive: DenseCoactive | CoactiveCounter


def scan_activations(
    folder: Path,
    sae: LatentEncoder,
    clip_language: np.ndarray,
    n_languages: int,
    clip_category: np.ndarray,
    n_categories: int,
    cfg: AnalysisConfig,
    advance: Callable[[int], None] = lambda n: None,
) -> ScanResult:
    """One pass over every real frame of the shards in `folder`.

    `clip_language` / `clip_category` map a manifest row to a language / category slot (language -1 for
    non-speech). `advance(n_frames)` reports progress.
    """
    n_features = sae.W_dec.shape[0]
    G = cfg.n_grid
    edges = torch.from_numpy(cfg.grid_edges()).float()
    L1 = n_languages + 1  # one extra slot collects frames without a language
    res = ScanResult(
        n_frames=0,
        clip_frames=np.zeros(len(clip_language), np.int64),
        fire_count=np.zeros(n_features, np.int64),
        act_sum=np.zeros(n_features, np.float64),
        max_act=np.zeros(n_features, np.float32),
        hist_counts=np.zeros((n_features, G), np.int64),
        lang_frames=np.zeros(L1, np.int64),
        lang_mass=np.zeros((n_features, L1), np.float64),
        lang_fires=np.zeros((n_features, L1), np.int64),
        cat_frames=np.zeros(n_categories, np.int64),
        cat_mass=np.zeros((n_features, n_categories), np.float64),
        cat_fires=np.zeros((n_features, n_categories), np.int64),
        top=TopExamples(n_features, cfg.top_k),
        reservoir=GridReservoir(n_features, G, cfg.reservoir, cfg.seed),
        coactive=coactive_counter(n_features, cfg.coactive_dense_max_features, cfg.coactive_counters),
    )
    t = min(cfg.coactive_max_latents, n_features)
    for chunk in iter_chunks(folder, cfg.chunk_frames):
        latents_NF = encode_chunk(sae, chunk.acts_ND)
        n = latents_NF.shape[0]
        lengths = np.diff(chunk.bounds)
        lang_N = np.repeat(
            np.where(clip_language[chunk.clip_rows] < 0, n_languages, clip_language[chunk.clip_rows]), lengths
        )
        cat_N = np.repeat(clip_category[chunk.clip_rows], lengths)
        res.n_frames += n
        res.clip_frames[chunk.clip_rows] += lengths
        res.lang_frames += np.bincount(lang_N, minlength=L1)
        res.cat_frames += np.bincount(cat_N, minlength=n_categories)

        rows, feats = (latents_NF > 0).nonzero(as_tuple=True)
        vals = latents_NF[rows, feats]
        f = feats.numpy()
        v = vals.double().numpy()
        res.fire_count += np.bincount(f, minlength=n_features)
        res.act_sum += np.bincount(f, weights=v, minlength=n_features)
        res.hist_counts += np.bincount(
            f * G + grid_bin(vals, edges).numpy(), minlength=n_features * G
        ).reshape(-1, G)
        for groups, n_slots, mass, fires in (
            (lang_N, L1, res.lang_mass, res.lang_fires),
            (cat_N, n_categories, res.cat_mass, res.cat_fires),
        ):
            slot = f * n_slots + groups[rows.numpy()]
            mass += np.bincount(slot, weights=v, minlength=n_features * n_slots).reshape(-1, n_slots)
            fires += np.bincount(slot, minlength=n_features * n_slots).reshape(-1, n_slots)

        peak_CF, frame_CF = clip_peaks(latents_NF, chunk)
        np.maximum(res.max_act, peak_CF.max(0).values.numpy(), out=res.max_act)
        clip_rows_C = torch.from_numpy(chunk.clip_rows.astype(np.int64))
        res.top.update(peak_CF, frame_CF, clip_rows_C)
        c_idx, f_idx = (peak_CF > 0).nonzero(as_tuple=True)
        peak_vals = peak_CF[c_idx, f_idx]
        res.reservoir.update(
            f_idx.numpy(),
            grid_bin(peak_vals, edges).numpy(),
            chunk.clip_rows[c_idx.numpy()],
            frame_CF[c_idx, f_idx].numpy(),
            peak_vals.numpy(),
        )
        top_vals, top_ids = torch.topk(latents_NF, t, dim=1)
        res.coactive.update(top_ids, top_vals > 0)
        advance(n)
    res.lang_frames = res.lang_frames[:n_languages]
    res.lang_mass = res.lang_mass[:, :n_languages]
    res.lang_fires = res.lang_fires[:, :n_languages]
    return res


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
