"""Synthetic activations for the SAE tests: frames that really are sparse sums of dictionary atoms."""

from __future__ import annotations

import numpy as np
import pytest
import torch

from pipelines.activations import ActivationsMeta, append_shard
from pipelines.paths import RunPaths


def sparse_frames(
    n_clips: int = 30,
    frames_per_clip: int = 40,
    d_in: int = 32,
    n_atoms: int = 48,
    active: int = 3,
    seed: int = 0,
) -> tuple[np.ndarray, np.ndarray]:
    """(acts_ND float32, index_N2 int32): each frame = offset + sum of `active` atoms x positive weights.

    Norms are ~30 with a large shared offset, like Whisper's final encoder output (frame norms ~33).
    """
    rng = np.random.default_rng(seed)
    atoms_AD = rng.standard_normal((n_atoms, d_in))
    atoms_AD /= np.linalg.norm(atoms_AD, axis=1, keepdims=True)
    offset_D = rng.standard_normal(d_in) * 4
    n = n_clips * frames_per_clip
    acts_ND = np.tile(offset_D, (n, 1)) + 0.05 * rng.standard_normal((n, d_in))
    for row in range(n):
        chosen = rng.choice(n_atoms, size=active, replace=False)
        acts_ND[row] += (rng.exponential(6.0, size=active) + 2.0) @ atoms_AD[chosen]
    clip_rows = np.repeat(np.arange(n_clips), frames_per_clip)
    frame_in_clip = np.tile(np.arange(frames_per_clip), n_clips)
    return acts_ND.astype(np.float32), np.stack([clip_rows, frame_in_clip], axis=1).astype(np.int32)


def write_run(name: str = "default", shards: int = 2, **kwargs) -> RunPaths:
    """Write sparse_frames(**kwargs) as activation shards (whole clips per shard) of run `name`."""
    acts_ND, index_N2 = sparse_frames(**kwargs)
    run = RunPaths.named(name)
    meta = ActivationsMeta(
        model="synthetic", layer=2, d_model=acts_ND.shape[1], corpus="synthetic", fingerprint="t"
    )
    clips = np.unique(index_N2[:, 0])
    for part in np.array_split(clips, shards):
        rows = np.isin(index_N2[:, 0], part)
        append_shard(run.activations, meta, acts_ND[rows], index_N2[rows])
    return run


@pytest.fixture
def one_thread():
    """Tiny models run many small ops: on a shared 2-core machine one torch thread is much faster."""
    before = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(before)
