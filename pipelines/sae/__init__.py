"""Sparse autoencoders on Whisper encoder frames: architectures, trainer, SAELens format, spliced evaluation.

Public API: `SparseAutoencoder`, `SAEOutput`, `SAEConfig`, `TrainConfig`, `build_sae`, `load_sae`, `save_sae`.
They load on first use (PEP 562), so the CLI reads `SAEConfig`'s defaults without importing torch.
"""

from __future__ import annotations

import importlib
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    from pipelines.sae.base import SAEOutput, SparseAutoencoder
    from pipelines.sae.config import SAEConfig, TrainConfig
    from pipelines.sae.registry import build_sae
    from pipelines.sae.saelens import load_sae, save_sae

_MODULE_OF = {
    "SAEOutput": "base",
    "SparseAutoencoder": "base",
    "SAEConfig": "config",
    "TrainConfig": "config",
    "build_sae": "registry",
    "load_sae": "saelens",
    "save_sae": "saelens",
}

__all__ = ["SAEOutput", "SparseAutoencoder", "SAEConfig", "TrainConfig", "build_sae", "load_sae", "save_sae"]


def __getattr__(name: str) -> Any:
    if name not in _MODULE_OF:
        raise AttributeError(f"module {__name__!r} has no attribute {name!r}")
    return getattr(importlib.import_module(f"{__name__}.{_MODULE_OF[name]}"), name)
