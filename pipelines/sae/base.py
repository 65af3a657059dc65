"""The sparse autoencoder every architecture shares: parameters, encode/decode, decoder constraints, folding.

    z     = act((x - b_dec) @ W_enc + b_enc)          latents, (B, F)
    x_hat = z @ W_dec + b_dec                          reconstruction, (B, D)

(Bricken et al. 2023, "Towards Monosemanticity"; the parameter names and shapes are SAELens', so a saved SAE
loads there unchanged.) Decoder rows are kept at unit norm: the gradient component parallel to each row is
removed before a step and rows are renormalised after it (sparsify, dictionary_learning). Subclasses supply
the activation rule (`activate`) and a training step (`training_step`).
"""

from __future__ import annotations

from abc import ABC, abstractmethod
from typing import NamedTuple

import torch
from torch import Tensor, nn

from pipelines.sae.config import SAEConfig


class SAEOutput(NamedTuple):
    x_hat_BD: Tensor
    latents_BF: Tensor


class StepOutput(NamedTuple):
    """What one training step returns to the trainer."""

    loss: Tensor
    """Scalar to backpropagate."""
    x_hat_BD: Tensor
    """The reconstruction (detached), for running FVU."""
    fired_latents: Tensor
    """int64 indices of latents that fired in the batch (may repeat)."""
    n_active: Tensor
    """Active (frame, latent) pairs in the batch (L0 x B), a 0-d tensor (no device sync per step)."""


class SparseAutoencoder(nn.Module, ABC):
    """Base class; see the module docstring for the maths."""

    def __init__(self, cfg: SAEConfig) -> None:
        super().__init__()
        self.cfg = cfg
        # (D, F) as in SAELens, but stored latent-major (the transposed view of an (F, D) tensor), so that
        # each latent's encoder weights are contiguous: the sparse gradient (pipelines.sae.sparse) then
        # arrives in the parameter's own layout, with no transposing copy per step.
        self.W_enc = nn.Parameter(torch.empty(cfg.d_sae, cfg.d_in).T)
        self.b_enc = nn.Parameter(torch.zeros(cfg.d_sae))
        self.W_dec = nn.Parameter(torch.empty(cfg.d_sae, cfg.d_in))
        self.b_dec = nn.Parameter(torch.zeros(cfg.d_in))
        self.reset_parameters(torch.Generator().manual_seed(0))

    @property
    def d_in(self) -> int:
        return self.cfg.d_in

    @property
    def d_sae(self) -> int:
        return self.cfg.d_sae

    @torch.no_grad()
    def reset_parameters(self, generator: torch.Generator) -> None:
        """Random unit-norm decoder rows, the encoder tied to the decoder's transpose, zero biases."""
        W_dec_FD = torch.randn(self.d_sae, self.d_in, generator=generator)
        W_dec_FD /= W_dec_FD.norm(dim=-1, keepdim=True)
        self.W_dec.copy_(W_dec_FD)
        self.W_enc.copy_(W_dec_FD.T)
        self.b_enc.zero_()
        self.b_dec.zero_()

    # --- inference -------------------------------------------------------------------------------------

    def pre_activations(self, x_BD: Tensor) -> Tensor:
        return torch.addmm(self.b_enc, x_BD - self.b_dec, self.W_enc)

    @abstractmethod
    def activate(self, pre_BF: Tensor) -> Tensor:
        """The inference activation rule: pre-activations -> dense latents (zeros where inactive)."""

    def encode(self, x_BD: Tensor) -> Tensor:
        return self.activate(self.pre_activations(x_BD))

    def decode(self, latents_BF: Tensor) -> Tensor:
        return torch.addmm(self.b_dec, latents_BF, self.W_dec)

    def forward(self, x_BD: Tensor) -> SAEOutput:
        latents_BF = self.encode(x_BD)
        return SAEOutput(self.decode(latents_BF), latents_BF)

    # --- training --------------------------------------------------------------------------------------

    @abstractmethod
    def training_step(
        self, x_BD: Tensor, dead_F: Tensor | None, k_aux: int, auxk_coefficient: float
    ) -> StepOutput:
        """Loss and bookkeeping for one batch; `dead_F` (bool) marks latents that have not fired lately."""

    @torch.no_grad()
    def remove_parallel_grad(self) -> None:
        """Drop each decoder row's gradient component along the row, so a step barely changes its norm."""
        if self.W_dec.grad is None:
            return
        W_dec_FD, grad_FD = self.W_dec, self.W_dec.grad
        parallel_F = torch.linalg.vecdot(grad_FD, W_dec_FD)
        grad_FD.addcmul_(parallel_F[:, None], W_dec_FD, value=-1.0)

    @torch.no_grad()
    def normalise_decoder(self) -> None:
        self.W_dec.div_(self.W_dec.norm(dim=-1, keepdim=True).clamp_min(1e-12))

    @torch.no_grad()
    def fold_input_scale(self, scale: float) -> None:
        """Make an SAE trained on `scale * x` work on raw `x`, keeping unit-norm decoder rows.

        Pre-activations and latents shrink by `scale` (b_enc, b_dec and any threshold divide by it; every
        activation rule here is positively homogeneous), so x_hat = (latents @ W_dec + b_dec) comes out in
        the original units and each latent's value is the norm of its contribution to x_hat.
        SAELens' own fold instead scales W_enc and W_dec; both give the same x_hat.
        """
        self.b_enc.div_(scale)
        self.b_dec.div_(scale)

    def inference_state(self) -> dict[str, Tensor]:
        """Tensors saved in sae_weights.safetensors (SAELens names and shapes)."""
        return {name: tensor.detach().contiguous() for name, tensor in self.state_dict().items()}
