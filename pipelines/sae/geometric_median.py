"""Geometric median by Weiszfeld's algorithm: the point minimising the summed Euclidean distance to samples.

Used to initialise b_dec (the SAE's origin), as in OpenAI's TopK SAEs and SAELens: unlike the mean it is not
dragged by outlying frames.
"""

from __future__ import annotations

import torch
from torch import Tensor


@torch.no_grad()
def geometric_median(points_ND: Tensor, max_iter: int = 100, tol: float = 1e-6, eps: float = 1e-8) -> Tensor:
    """Weiszfeld iterations from the mean; stops when the median moves less than `tol` (relative)."""
    points_ND = points_ND.double()
    median_D = points_ND.mean(0)
    for _ in range(max_iter):
        weights_N = 1.0 / (points_ND - median_D).norm(dim=-1).clamp_min(eps)
        new_D = (weights_N[:, None] * points_ND).sum(0) / weights_N.sum()
        moved = (new_D - median_D).norm() / median_D.norm().clamp_min(eps)
        median_D = new_D
        if moved < tol:
            break
    return median_D.float()
