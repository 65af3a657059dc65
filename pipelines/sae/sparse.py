"""The sparse training path shared by TopK and BatchTopK: gradients that touch only the active latents.

A TopK step needs every pre-activation once (one dense `B x D x F` matmul, without autograd) to choose the
active (frame, latent) pairs. After that the code is sparse: the decoder is an `embedding_bag` over the chosen
decoder rows (as in sparsify's sparse decoder) and the encoder gradient is a sparse-times-dense product over
the chosen pairs. A plain autograd step instead runs three dense matmuls (forward, two backward) plus a dense
decode; this path runs one. `tests/pipelines/test_sae_arch.py` checks its gradients against dense autograd.
"""

from __future__ import annotations

from typing import NamedTuple

import torch
import torch.nn.functional as F
from torch import Tensor


class Pairs(NamedTuple):
    """Active (frame, latent) pairs of a batch, grouped by frame (CSR order)."""

    crow_B1: Tensor
    """int64 (B + 1,): pairs of frame b are [crow[b], crow[b + 1])."""
    latents_N: Tensor
    """int64 (N,): the latent of each pair."""
    pre_N: Tensor
    """float (N,): its pre-activation (no autograd)."""

    @classmethod
    def from_topk(cls, values_BK: Tensor, indices_BK: Tensor) -> "Pairs":
        batch, k = indices_BK.shape
        crow_B1 = torch.arange(0, batch * k + 1, k, device=indices_BK.device)
        return cls(crow_B1, indices_BK.reshape(-1), values_BK.reshape(-1))

    @classmethod
    def from_flat(cls, values_N: Tensor, flat_N: Tensor, batch: int, d_sae: int) -> "Pairs":
        """From indices into the flattened (B, F) matrix (BatchTopK's batch-wide selection)."""
        flat_N, order = flat_N.sort()
        rows_N = flat_N // d_sae
        counts_B = torch.bincount(rows_N, minlength=batch)
        crow_B1 = torch.cat([counts_B.new_zeros(1), counts_B.cumsum(0)])
        return cls(crow_B1, flat_N % d_sae, values_N[order])

    def then(self, other: "Pairs") -> "Pairs":
        """These frames' pairs followed by `other`'s as further frames (one sparse pass serves both)."""
        return Pairs(
            torch.cat([self.crow_B1, other.crow_B1[1:] + self.crow_B1[-1]]),
            torch.cat([self.latents_N, other.latents_N]),
            torch.cat([self.pre_N, other.pre_N]),
        )

    @property
    def offsets_B(self) -> Tensor:
        return self.crow_B1[:-1]


class _PairPreActivations(torch.autograd.Function):
    """pre_n = (x[row_n] - b_dec) . W_enc[:, latent_n] + b_enc[latent_n] at the chosen pairs only.

    The forward returns the values the dense pass already computed; the backward builds the gradients of
    W_enc (a sparse (F, B) x dense (B, D) product over the N pairs), b_enc and b_dec (through the centred
    input) without any B x F dense work.
    """

    @staticmethod
    def forward(ctx, pre_N, sae_in_BD, crow_B1, latents_N, W_enc, b_enc, b_dec):  # type: ignore[override]
        ctx.save_for_backward(sae_in_BD, crow_B1, latents_N, W_enc)
        return pre_N.clone()

    @staticmethod
    def backward(ctx, grad_N):  # type: ignore[override]
        sae_in_BD, crow_B1, latents_N, W_enc = ctx.saved_tensors
        d_sae = W_enc.shape[1]
        rows_N = torch.repeat_interleave(torch.arange(len(crow_B1) - 1, device=grad_N.device), crow_B1.diff())
        grad_FB = torch.sparse_coo_tensor(
            torch.stack([latents_N, rows_N]), grad_N, (d_sae, sae_in_BD.shape[0]), check_invariants=False
        )
        grad_W_enc = torch.sparse.mm(grad_FB, sae_in_BD).T  # (D, F) view of (F, D): W_enc's own layout
        grad_b_enc = grad_N.new_zeros(d_sae).index_add_(0, latents_N, grad_N)
        grad_b_dec = -(W_enc @ grad_b_enc)  # d pre / d b_dec = -W_enc[:, latent]
        return None, None, None, None, grad_W_enc, grad_b_enc, grad_b_dec


def pair_values(pairs: Pairs, sae_in_BD: Tensor, W_enc: Tensor, b_enc: Tensor, b_dec: Tensor) -> Tensor:
    """The pairs' ReLU'd activations, differentiable w.r.t. W_enc, b_enc and b_dec."""
    pre_N = _PairPreActivations.apply(
        pairs.pre_N, sae_in_BD, pairs.crow_B1, pairs.latents_N, W_enc, b_enc, b_dec
    )
    return pre_N.relu()


def decode_pairs(pairs: Pairs, values_N: Tensor, W_dec: Tensor) -> Tensor:
    """sum over a frame's pairs of value x W_dec[latent]: (B, D), without the bias."""
    return F.embedding_bag(pairs.latents_N, W_dec, pairs.offsets_B, mode="sum", per_sample_weights=values_N)
