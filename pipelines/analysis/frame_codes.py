"""Every corpus frame's SAE code, kept whole: what span selection sums and the similar-moment index pools.

The code of a frame is its active latents as (feature, activation) pairs. A TopK SAE activates exactly k
latents per frame, so keeping k pairs per frame keeps every non-zero latent and a sum over any span of
frames is the SAE's own sum (values are stored as float16, the activation shards' own precision: 3
significant digits). For an SAE without a fixed k (ReLU, JumpReLU) the k strongest pairs are kept and
`FrameCodes.dropped_share` says how much activation mass fell outside them (0 for TopK).

The shards hold each clip's frames contiguous and in order (`pipelines.activations`), so the codes are kept
in that order: clip `clip_rows[c]` owns rows `offsets[c]:offsets[c + 1]`, row i being its frame i.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import Callable

import numpy as np
import torch

from pipelines.analysis.scan import LatentEncoder, encode_chunk, iter_chunks
from pipelines.errors import AtlasError

CHUNK_FRAMES = 8192
"""Frames encoded per step (whole clips): 8,192 x 1,024 latents is 32 MB of float32."""


@dataclass
class FrameCodes:
    """The k strongest latents of every frame (N frames in clip order, K pairs each)."""

    clip_rows: np.ndarray
    """int32 (C,) manifest rows, ascending."""
    offsets: np.ndarray
    """int64 (C + 1,) first row of each clip's frames."""
    features_NK: np.ndarray
    """uint16 latent ids, ascending within a frame."""
    values_NK: np.ndarray
    """float16 activations (0 pads a frame with fewer than K active latents)."""
    n_features: int
    dropped_share: float = 0.0
    """Share of the total activation mass outside the kept pairs (0: the sums are exact)."""

    @property
    def k(self) -> int:
        return int(self.features_NK.shape[1])

    def clip(self, c: int) -> tuple[np.ndarray, np.ndarray]:
        """(features_TK, values_TK) of the c-th clip (position c in `clip_rows`)."""
        a, b = self.offsets[c], self.offsets[c + 1]
        return self.features_NK[a:b], self.values_NK[a:b]


def span_sums(features_TK: np.ndarray, values_TK: np.ndarray, n_features: int) -> np.ndarray:
    """(F,) float64 sum of each latent over the frames given (a span of one clip's codes)."""
    return np.bincount(
        features_TK.ravel().astype(np.int64),
        weights=values_TK.ravel().astype(np.float64),
        minlength=n_features,
    )


def top_codes(latents_NF: torch.Tensor, k: int) -> tuple[np.ndarray, np.ndarray, float, float]:
    """The k strongest latents of each frame, ids ascending: (features_NK uint16, values_NK float16, kept
    mass, total mass)."""
    values_NK, features_NK = latents_NF.topk(min(k, latents_NF.shape[1]), dim=1)
    values_NK = values_NK.clamp_min(0)
    order = features_NK.argsort(dim=1)
    features_NK, values_NK = features_NK.gather(1, order), values_NK.gather(1, order)
    kept, total = float(values_NK.double().sum()), float(latents_NF.clamp_min(0).double().sum())
    return features_NK.numpy().astype(np.uint16), values_NK.numpy().astype(np.float16), kept, total


def encode_frame_codes(
    folder: Path, sae: LatentEncoder, k: int, advance: Callable[[int], None] = lambda n: None
) -> FrameCodes:
    """Encode every real frame of the activation shards in `folder` with `sae` and keep `k` pairs each."""
    n_features = int(sae.W_dec.shape[0])
    if n_features > np.iinfo(np.uint16).max + 1:
        raise AtlasError(
            f"frame codes store latent ids as uint16: an SAE of {n_features} latents is too wide"
        )
    rows: list[np.ndarray] = []
    lengths: list[np.ndarray] = []
    features: list[np.ndarray] = []
    values: list[np.ndarray] = []
    kept = total = 0.0
    for chunk in iter_chunks(folder, CHUNK_FRAMES):
        clip_lengths = np.diff(chunk.bounds)
        first = np.repeat(chunk.bounds[:-1], clip_lengths)
        if not np.array_equal(chunk.frames, np.arange(len(chunk.frames)) - first):
            raise AtlasError(f"{folder}: a clip's frames are not stored in order from frame 0: extract again")
        f_NK, v_NK, k_mass, t_mass = top_codes(encode_chunk(sae, chunk.acts_ND), k)
        rows.append(chunk.clip_rows)
        lengths.append(clip_lengths)
        features.append(f_NK)
        values.append(v_NK)
        kept, total = kept + k_mass, total + t_mass
        advance(len(chunk.frames))
    width = min(k, n_features)
    if not rows:
        empty = np.zeros(0, np.int32)
        return FrameCodes(
            empty,
            np.zeros(1, np.int64),
            np.zeros((0, width), np.uint16),
            np.zeros((0, width), np.float16),
            n_features,
        )
    clip_rows = np.concatenate(rows).astype(np.int32)
    clip_lengths = np.concatenate(lengths)
    order = np.argsort(clip_rows, kind="stable")  # shards hold clips in extraction order
    starts = np.r_[0, np.cumsum(clip_lengths)][:-1]
    take = np.concatenate([np.arange(starts[i], starts[i] + clip_lengths[i]) for i in order])
    return FrameCodes(
        clip_rows=clip_rows[order],
        offsets=np.r_[0, np.cumsum(clip_lengths[order])].astype(np.int64),
        features_NK=np.concatenate(features)[take],
        values_NK=np.concatenate(values)[take],
        n_features=n_features,
        dropped_share=(1.0 - kept / total) if total > 0 else 0.0,
    )
