"""Architecture name -> SAE class, and back from SAELens' architecture names."""

from __future__ import annotations

from pipelines.sae.base import SparseAutoencoder
from pipelines.sae.batchtopk import BatchTopKSAE
from pipelines.sae.config import Arch, SAEConfig
from pipelines.sae.relu import ReLUSAE
from pipelines.sae.topk import TopKSAE

SAE_CLASSES: dict[str, type[SparseAutoencoder]] = {
    "topk": TopKSAE,
    "batchtopk": BatchTopKSAE,
    "relu": ReLUSAE,
}

ARCH_FROM_SAELENS: dict[str, Arch] = {
    "topk": "topk",
    "jumprelu": "batchtopk",  # a JumpReLU's per-latent thresholds load into BatchTopK's threshold buffer
    "batchtopk": "batchtopk",
    "standard": "relu",
}


def build_sae(cfg: SAEConfig) -> SparseAutoencoder:
    return SAE_CLASSES[cfg.arch](cfg)
