"""TopK SAE: exactly k latents per frame (Gao et al. 2024, "Scaling and evaluating sparse autoencoders").

Training uses the sparse path of `pipelines.sae.sparse` (one dense matmul per step) and the AuxK loss: the
top `k_aux` pre-activations among dead latents reconstruct the residual x - x_hat, weighted by 1/32 and
scaled down while fewer than k_aux latents are dead (as in sparsify and SAELens).
"""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import Tensor

from pipelines.sae.base import SAEOutput, SparseAutoencoder, StepOutput
from pipelines.sae.sparse import Pairs, decode_pairs, pair_values


class TopKSAE(SparseAutoencoder):
    saelens_architecture = "topk"

    def _topk(self, pre_BF: Tensor) -> tuple[Tensor, Tensor]:
        values_BK, indices_BK = pre_BF.topk(self.cfg.k, dim=-1, sorted=False)
        return values_BK.relu(), indices_BK

    def activate(self, pre_BF: Tensor) -> Tensor:
        values_BK, indices_BK = self._topk(pre_BF)
        return torch.zeros_like(pre_BF).scatter_(-1, indices_BK, values_BK)

    def forward(self, x_BD: Tensor) -> SAEOutput:
        """As the base class, but decodes only the k active rows (B x k x D instead of B x F x D)."""
        values_BK, indices_BK = self._topk(self.pre_activations(x_BD))
        latents_BF = torch.zeros(len(x_BD), self.d_sae, dtype=x_BD.dtype, device=x_BD.device)
        latents_BF.scatter_(-1, indices_BK, values_BK)
        x_hat_BD = (
            F.embedding_bag(indices_BK, self.W_dec, mode="sum", per_sample_weights=values_BK) + self.b_dec
        )
        return SAEOutput(x_hat_BD, latents_BF)

    def select(self, pre_BF: Tensor) -> Pairs:
        """The active (frame, latent) pairs of a training batch."""
        return Pairs.from_topk(*self._topk(pre_BF))

    def training_step(
        self, x_BD: Tensor, dead_F: Tensor | None, k_aux: int, auxk_coefficient: float
    ) -> StepOutput:
        """Reconstruction loss plus AuxK; the AuxK pairs ride along as B extra frames in the same sparse pass
        (one encoder-gradient product and one embedding_bag instead of two of each)."""
        batch = len(x_BD)
        with torch.no_grad():
            sae_in_BD = x_BD - self.b_dec
            pre_BF = torch.addmm(self.b_enc, sae_in_BD, self.W_enc)
            pairs = self.select(pre_BF)
            n_main = len(pairs.latents_N)
            aux = (
                self._aux_pairs(pre_BF, dead_F, k_aux)
                if dead_F is not None and auxk_coefficient > 0
                else None
            )
            if aux is not None:
                pairs, sae_in_BD = pairs.then(aux[0]), torch.cat([sae_in_BD, sae_in_BD])
        values_N = pair_values(pairs, sae_in_BD, self.W_enc, self.b_enc, self.b_dec)
        decoded_BD = decode_pairs(pairs, values_N, self.W_dec)
        x_hat_BD = decoded_BD[:batch] + self.b_dec
        err_BD = x_hat_BD - x_BD
        loss = err_BD.pow(2).sum(-1).mean()
        if aux is not None:
            # AuxK: the dead latents' reconstruction should explain the residual x - x_hat (bias excluded)
            aux_loss = (decoded_BD[batch:] + err_BD.detach()).pow(2).sum(-1).mean()
            loss = loss + auxk_coefficient * aux[1] * aux_loss
        active_N = values_N.detach()[:n_main] > 0
        return StepOutput(loss, x_hat_BD.detach(), pairs.latents_N[:n_main][active_N], active_N.sum())

    @staticmethod
    def _aux_pairs(pre_BF: Tensor, dead_F: Tensor, k_aux: int) -> tuple[Pairs, float] | None:
        """Top-k_aux dead latents per frame and the loss scale min(n_dead / k_aux, 1); None if none dead."""
        dead_idx = dead_F.nonzero().squeeze(1)
        n_dead = dead_idx.numel()
        if n_dead == 0:
            return None
        values_BK, which_BK = pre_BF[:, dead_idx].topk(min(k_aux, n_dead), dim=-1, sorted=False)
        return Pairs.from_topk(values_BK, dead_idx[which_BK]), min(n_dead / k_aux, 1.0)
