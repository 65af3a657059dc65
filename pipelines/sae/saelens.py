"""Save and load SAEs in SAELens' folder format: `cfg.json` + `sae_weights.safetensors`.

Weights use SAELens' names and shapes (W_enc [d_in, d_sae], b_enc [d_sae], W_dec [d_sae, d_in], b_dec [d_in],
and `threshold` [d_sae] for JumpReLU). The input normalisation used in training is folded into the weights
before saving, so `normalize_activations` is "none" and the SAE reads raw encoder outputs. Checked against
sae-lens 6.54.12 (`SAE.load_from_disk` gives the same encode/decode: tests/pipelines/test_sae_saelens.py).
TopK SAEs are saved as "topk" (rescale_acts_by_decoder_norm false: decoder rows already have unit norm),
BatchTopK as "jumprelu" with its learnt threshold (what SAELens does with its own BatchTopK), ReLU as
"standard". Our own SAE settings ride along in `metadata["whisper_atlas_sae"]`.
"""

from __future__ import annotations

import json
import os
from pathlib import Path

import torch
from safetensors.torch import load_file, save_file

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


def save_sae(sae: SparseAutoencoder, folder: Path, metadata: dict) -> None:
    """Write the folder (weights first, cfg.json last, each replaced atomically): `metadata` needs at least
    `model_name` and `hook_name`; the SAE must already have its input scale folded in."""
    folder.mkdir(parents=True, exist_ok=True)
    weights_tmp = folder / (WEIGHTS_NAME + ".tmp")
    save_file({name: t.float().cpu() for name, t in sae.inference_state().items()}, str(weights_tmp))
    os.replace(weights_tmp, folder / WEIGHTS_NAME)
    cfg_tmp = folder / (CFG_NAME + ".tmp")
    cfg_tmp.write_text(json.dumps(saelens_cfg(sae, metadata), indent=1))
    os.replace(cfg_tmp, folder / CFG_NAME)


def read_cfg(folder: Path) -> dict:
    if not (folder / CFG_NAME).exists() or not (folder / WEIGHTS_NAME).exists():
        raise missing_stage("SAE", folder, "train")
    return json.loads((folder / CFG_NAME).read_text())


def load_sae(folder: Path, device: str | torch.device | None = None) -> SparseAutoencoder:
    """Read an SAELens folder (ours or SAELens' own topk/jumprelu/standard) into an eval-mode SAE."""
    cfg = read_cfg(Path(folder))
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
    state = {name: t.float() for name, t in load_file(str(Path(folder) / WEIGHTS_NAME)).items()}
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
