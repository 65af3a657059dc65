"""BatchTopK SAE: k latents per frame on average, chosen over the whole batch (Bussmann et al. 2024).

Training keeps the batch's top B x k pre-activations. Inference cannot see a batch, so a threshold is learnt
alongside: an exponential moving average of the smallest selected activation per batch; at inference a latent
is active when its pre-activation exceeds it. That is a JumpReLU with one shared threshold, which is how
SAELens saves BatchTopK SAEs too (architecture "jumprelu", `threshold` of shape [d_sae]).
"""

from __future__ import annotations

import torch
from torch import Tensor

from pipelines.sae.base import SparseAutoencoder
from pipelines.sae.config import SAEConfig
from pipelines.sae.sparse import Pairs
from pipelines.sae.topk import TopKSAE

THRESHOLD_LR = 0.01
"""EMA rate of the inference threshold (SAELens' `topk_threshold_lr`)."""


class BatchTopKSAE(TopKSAE):
    saelens_architecture = "jumprelu"
    threshold: Tensor
    """(F,) the inference threshold (one shared value, stored per latent as SAELens' JumpReLU expects)."""

    def __init__(self, cfg: SAEConfig) -> None:
        super().__init__(cfg)
        self.register_buffer("threshold", torch.zeros(cfg.d_sae))

    forward = SparseAutoencoder.forward  # inference uses the threshold, not TopK's k-row decode

    def activate(self, pre_BF: Tensor) -> Tensor:
        return pre_BF.relu() * (pre_BF > self.threshold)

    def select(self, pre_BF: Tensor) -> Pairs:
        batch, d_sae = pre_BF.shape
        values_N, flat_N = pre_BF.flatten().topk(batch * self.cfg.k, sorted=False)
        if self.training:
            self._update_threshold(values_N)
        return Pairs.from_flat(values_N, flat_N, batch, d_sae)

    @torch.no_grad()
    def _update_threshold(self, values_N: Tensor) -> None:
        positive_N = values_N[values_N > 0]
        if positive_N.numel() == 0:
            return
        smallest = positive_N.min()
        if bool((self.threshold == 0).all()):  # first batch: start at its value instead of creeping up from 0
            self.threshold.fill_(smallest)
        else:
            self.threshold.mul_(1 - THRESHOLD_LR).add_(THRESHOLD_LR * smallest)

    @torch.no_grad()
    def fold_input_scale(self, scale: float) -> None:
        super().fold_input_scale(scale)
        self.threshold.div_(scale)
