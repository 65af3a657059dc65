"""Sparse autoencoders on Whisper encoder frames: architectures, trainer, SAELens format, spliced evaluation.

Public API: `SparseAutoencoder`, `SAEOutput`, `SAEConfig`, `TrainConfig`, `build_sae`, `load_sae`, `save_sae`.
"""

from pipelines.sae.base import SAEOutput, SparseAutoencoder
from pipelines.sae.config import SAEConfig, TrainConfig
from pipelines.sae.registry import build_sae
from pipelines.sae.saelens import load_sae, save_sae

__all__ = ["SAEOutput", "SparseAutoencoder", "SAEConfig", "TrainConfig", "build_sae", "load_sae", "save_sae"]
