"""Save and load SAEs in SAELens' folder format: `cfg.json` + `sae_weights.safetensors`.

Weights use SAELens' names and shapes (W_enc [d_in, d_sae], b_enc [d_sae], W_dec [d_sae, d_in], b_dec [d_in],
and `threshold` [d_sae] for JumpReLU). The input normalisation used in training is folded into the weights
before saving, so `normalize_activations` is "none" and the SAE reads raw encoder outputs. Checked against
sae-lens 6.54.12 (`SAE.load_from_disk` gives the same encode/decode: tests/pipelines/test_sae_saelens.py).
TopK SAEs are saved as "topk" (rescale_acts_by_decoder_norm false: decoder rows already have unit norm),
BatchTopK as "jumprelu" with its learnt threshold (what SAELens does with its own BatchTopK), ReLU as
"standard". Our own SAE settings ride along in `metadata["whisper_atlas_sae"]`.

The folder is written whole and swapped in at once (pipelines/durable.py), so weights and config always
belong together: a reader that finds the folder swapped while it read reads it again.
"""

from __future__ import annotations

import json
import os
import shutil
from pathlib import Path
from typing import Mapping

import torch
from safetensors.torch import load_file, save_file

from pipelines import durable
from pipelines.errors import AtlasError, missing_stage
from pipelines.sae.base import SparseAutoencoder
from pipelines.sae.config import SAEConfig
from pipelines.sae.registry import ARCH_FROM_SAELENS, build_sae

CFG_NAME = "cfg.json"
WEIGHTS_NAME = "sae_weights.safetensors"
SAELENS_FORMAT_VERSION = "6.54.12"
"""The SAELens release whose format we write and were checked against (must be >= 6.0 for its loader)."""
CONTEXT_SIZE = 1500
"""Frames in one Whisper encoder window (30 s at 20 ms per frame): SAELens' `context_size`."""


class SAEFormatError(AtlasError):
    """An SAE folder we cannot read."""


def hook_name_for(layer: int, n_layers: int) -> str:
    """Module whose output the SAE reads, in transformers' WhisperEncoder naming.

    Layer L is hidden_states[L]: 0 = the embeddings (the input of encoder.layers.0), 1..N-1 = output of
    encoder.layers[L-1], N = after the final layer norm (what the decoder reads).
    """
    if layer == n_layers:
        return "encoder.layer_norm"
    if layer == 0:
        return "encoder.layers.0.input"
    return f"encoder.layers.{layer - 1}"


def saelens_cfg(sae: SparseAutoencoder, metadata: dict) -> dict:
    cfg: dict = {
        "architecture": sae.saelens_architecture,
        "d_in": sae.d_in,
        "d_sae": sae.d_sae,
        "dtype": "float32",
        "device": "cpu",
        "apply_b_dec_to_input": True,
        "normalize_activations": "none",
        "reshape_activations": "none",
    }
    if sae.saelens_architecture == "topk":
        cfg.update(k=sae.cfg.k, rescale_acts_by_decoder_norm=False)
    cfg["metadata"] = {
        "context_size": CONTEXT_SIZE,
        "sae_lens_version": SAELENS_FORMAT_VERSION,
        "sae_lens_training_version": None,
        **metadata,
        "whisper_atlas_sae": sae.cfg.to_dict(),
    }
    return cfg


def save_sae(
    sae: SparseAutoencoder, folder: Path, metadata: dict, extra_files: Mapping[str, str] | None = None
) -> None:
    """Write the SAELens folder as one: `metadata` needs at least `model_name` and `hook_name`; the SAE must
    already have its input scale folded in.

    A new `<folder>.tmp-<pid>/` gets the weights, cfg.json, `extra_files` (name -> text, e.g. metrics.json)
    and the old folder's other files (a training checkpoint; not its leftover `*.tmp*` files), is synced,
    and then replaces the old folder in one swap. Leftovers of crashed saves beside it are removed first.
    """
    folder = Path(folder)
    folder.parent.mkdir(parents=True, exist_ok=True)
    durable.remove_leftovers(folder)
    built = durable.sibling(folder, "tmp")
    built.mkdir()
    try:
        extra = dict(extra_files or {})
        _carry_over(folder, built, skip={WEIGHTS_NAME, CFG_NAME, *extra})
        save_file(
            {name: t.float().cpu() for name, t in sae.inference_state().items()}, str(built / WEIGHTS_NAME)
        )
        (built / CFG_NAME).write_text(json.dumps(saelens_cfg(sae, metadata), indent=1))
        for name, text in extra.items():
            (built / name).write_text(text)
        durable.swap_folder(built, folder)
    except BaseException:
        shutil.rmtree(built, ignore_errors=True)
        raise


def _carry_over(old: Path, new: Path, skip: set[str]) -> None:
    """Hard-link (or copy) the plain files of `old` not in `skip` into `new`, leaving `*.tmp*` files out."""
    if not old.is_dir():
        return
    for path in old.iterdir():
        if path.name in skip or ".tmp" in path.name or not path.is_file() or path.is_symlink():
            continue
        try:
            os.link(path, new / path.name)
        except OSError:  # a file system without hard links
            shutil.copy2(path, new / path.name)


def read_cfg(folder: Path) -> dict:
    if not (folder / CFG_NAME).exists() or not (folder / WEIGHTS_NAME).exists():
        raise missing_stage("SAE", folder, "train")
    return json.loads((folder / CFG_NAME).read_text())


def _read_folder(folder: Path, attempts: int = 3) -> tuple[dict, dict[str, torch.Tensor]]:
    """cfg.json and the weights of one version of the folder: read again when it was swapped meanwhile."""
    for _ in range(attempts):
        before = _folder_inode(folder)
        cfg = read_cfg(folder)
        weights = load_file(str(folder / WEIGHTS_NAME))
        if _folder_inode(folder) == before:
            return cfg, weights
    raise SAEFormatError(f"the SAE in {folder} kept changing while it was read: retry once training ends")


def _folder_inode(folder: Path) -> int | None:
    try:
        return os.stat(folder).st_ino
    except OSError:
        return None


def load_sae(folder: Path, device: str | torch.device | None = None) -> SparseAutoencoder:
    """Read an SAELens folder (ours or SAELens' own topk/jumprelu/standard) into an eval-mode SAE."""
    cfg, weights = _read_folder(Path(folder))
    architecture = cfg.get("architecture", "standard")
    if architecture not in ARCH_FROM_SAELENS:
        raise SAEFormatError(
            f"SAE architecture {architecture!r} is not supported: use topk, jumprelu or standard"
        )
    if cfg.get("normalize_activations", "none") != "none" or cfg.get("reshape_activations", "none") != "none":
        raise SAEFormatError(
            "SAE expects normalized or reshaped inputs: fold the normalisation into its weights first"
        )
    ours = cfg.get("metadata", {}).get("whisper_atlas_sae")
    if ours:
        sae_cfg = SAEConfig(**ours)
    else:  # a folder SAELens (or another tool) wrote: k is unused by jumprelu/standard
        arch = ARCH_FROM_SAELENS[architecture]
        k = int(cfg.get("k", min(32, cfg["d_sae"])))
        sae_cfg = SAEConfig(d_in=cfg["d_in"], d_sae=cfg["d_sae"], arch=arch, k=k)
    state = {name: t.float() for name, t in weights.items()}
    if not cfg.get("apply_b_dec_to_input", True):  # fold: (x - b_dec) @ W_enc + (b_enc + b_dec @ W_enc)
        state["b_enc"] = state["b_enc"] + state["b_dec"] @ state["W_enc"]
    if cfg.get("rescale_acts_by_decoder_norm", False):  # fold decoder norms as SAELens does on save
        norms_F = state["W_dec"].norm(dim=-1).clamp_min(1e-8)
        state["W_dec"] = state["W_dec"] / norms_F[:, None]
        state["W_enc"] = state["W_enc"] * norms_F
        state["b_enc"] = state["b_enc"] * norms_F
    sae = build_sae(sae_cfg)
    try:
        sae.load_state_dict(state)
    except RuntimeError as exc:
        raise SAEFormatError(
            f"SAE weights in {folder} do not match cfg.json: {str(exc).splitlines()[0]}"
        ) from exc
    return sae.to(device or "cpu").eval()
