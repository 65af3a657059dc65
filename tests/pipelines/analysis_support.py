"""Shared helpers of the analysis, atlas and export tests."""

from __future__ import annotations

import torch

from pipelines.sae.base import SparseAutoencoder
from pipelines.sae.config import SAEConfig
from pipelines.sae.registry import build_sae


def tiny_sae(d_in: int, d_sae: int, k: int, seed: int = 0) -> SparseAutoencoder:
    """A real TopK SAE with random weights (random unit decoder rows, small random encoder bias)."""
    sae = build_sae(SAEConfig(d_in=d_in, d_sae=d_sae, k=k))
    gen = torch.Generator().manual_seed(seed)
    sae.reset_parameters(gen)
    with torch.no_grad():
        sae.b_enc.copy_(torch.randn(d_sae, generator=gen) * 0.1)
    return sae.eval()
