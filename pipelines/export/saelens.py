"""SAELens export: a copy of the run's checkpoint folder (`cfg.json` + `sae_weights.safetensors`).

The checkpoint is already in SAELens' format (`pipelines.sae.saelens`), with the input normalisation folded
into the weights, so `SAE.load_from_disk(folder)` in SAELens reads the copy as is.
"""

from __future__ import annotations

import shutil
from pathlib import Path

from pipelines.sae.saelens import CFG_NAME, WEIGHTS_NAME, read_cfg

EXTRA_FILES = ("metrics.json",)
"""Copied too when present (SAELens ignores them)."""


def export_saelens(sae_folder: Path, out: Path) -> Path:
    """Copy the checkpoint in `sae_folder` into `out` (created); returns `out`."""
    read_cfg(sae_folder)  # raises MissingStageError when there is no checkpoint
    out.mkdir(parents=True, exist_ok=True)
    for name in (WEIGHTS_NAME, CFG_NAME, *EXTRA_FILES):
        if (sae_folder / name).exists():
            shutil.copy2(sae_folder / name, out / name)
    return out
