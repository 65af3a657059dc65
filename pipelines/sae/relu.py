"""ReLU SAE with an L1 penalty (Bricken et al. 2023; Anthropic's April 2024 training update).

Loss = mean over frames of ||x - x_hat||^2 + l1_coefficient x sum|z| (decoder rows have unit norm, so the
usual |z| x ||W_dec row|| is |z|). Dense autograd: at ReLU densities early in training a sparse path would
not pay. Saved as SAELens' "standard" architecture.
"""

from __future__ import annotations

from torch import Tensor

from pipelines.sae.base import SparseAutoencoder, StepOutput


class ReLUSAE(SparseAutoencoder):
    saelens_architecture = "standard"

    def activate(self, pre_BF: Tensor) -> Tensor:
        return pre_BF.relu()

    def training_step(
        self, x_BD: Tensor, dead_F: Tensor | None, k_aux: int, auxk_coefficient: float
    ) -> StepOutput:
        latents_BF = self.encode(x_BD)
        x_hat_BD = self.decode(latents_BF)
        loss = (x_hat_BD - x_BD).pow(2).sum(-1).mean() + self.cfg.l1_coefficient * latents_BF.sum(-1).mean()
        active_BF = latents_BF.detach() > 0
        fired = active_BF.any(0).nonzero().squeeze(1)
        return StepOutput(loss, x_hat_BD.detach(), fired, active_BF.sum())
