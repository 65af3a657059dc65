"""Configuration of an SAE (its shape and sparsity rule) and of one training run.

Defaults follow the measured feasibility run (facts/steering-feasibility.md: 4,096 latents, k 32, batch 256,
8 epochs on ~96k frames of whisper-base's final encoder output) and common practice (sparsify, SAELens:
AuxK weight 1/32, k_aux = d_in / 2, Adam with warm-up and a late linear decay).
"""

from __future__ import annotations

import math
from dataclasses import asdict, dataclass
from typing import Literal, get_args

from pipelines.errors import AtlasError

Arch = Literal["topk", "batchtopk", "relu"]
ARCHS: tuple[str, ...] = get_args(Arch)


class SAEConfigError(AtlasError):
    """An SAE or training setting is out of range."""


@dataclass
class SAEConfig:
    """The shape and sparsity rule of one SAE; saved inside cfg.json so `load_sae` can rebuild it."""

    d_in: int
    """Width of the activations it reads (the encoder's d_model: 512 for whisper-base)."""
    d_sae: int = 4096
    """Number of latents (dictionary size)."""
    arch: Arch = "topk"
    """`topk`: exactly k latents per frame; `batchtopk`: k per frame on average over a batch, a learned
    threshold at inference; `relu`: ReLU with an L1 penalty (SAELens' `standard`)."""
    k: int = 32
    """Active latents per frame (TopK) or on average per frame (BatchTopK); unused by ReLU."""
    l1_coefficient: float = 5.0
    """ReLU only: weight of sum|z| against the summed squared error, with inputs scaled to E||x||^2 = d_in
    and unit-norm decoder rows (Anthropic's April 2024 convention)."""

    def __post_init__(self) -> None:
        if self.arch not in ARCHS:
            raise SAEConfigError(f"unknown SAE architecture {self.arch!r}: choose one of {', '.join(ARCHS)}")
        if self.d_in < 1 or self.d_sae < 1:
            raise SAEConfigError(f"d_in and d_sae must be positive (got {self.d_in}, {self.d_sae})")
        if self.arch != "relu" and not 1 <= self.k <= self.d_sae:
            raise SAEConfigError(f"k must be between 1 and d_sae={self.d_sae} (got {self.k})")
        if self.l1_coefficient < 0:
            raise SAEConfigError(f"l1_coefficient must be >= 0 (got {self.l1_coefficient})")

    def to_dict(self) -> dict:
        return asdict(self)


@dataclass
class TrainConfig:
    """How one SAE is trained; every field is recorded in metrics.json."""

    epochs: int = 8
    """Passes over the training frames (reshuffled each epoch)."""
    batch_size: int = 256
    """Frames per optimiser step."""
    lr: float | None = None
    """Adam learning rate; None picks 2e-3 x sqrt(4096 / d_sae). Measured on the default corpus's 82k train
    frames (d_sae 4,096, k 32, 8 epochs; FVU train / held out, dead fraction): 1e-3 0.079 / 0.119, 0.2%;
    2e-3 0.075 / 0.109, 4.8%; 4e-3 0.100 / 0.120, 41% (latents die faster than AuxK revives them).
    Short runs like these want more than sparsify's 2e-4 x sqrt(2^14 / d_sae), meant for ~100x more steps."""
    seed: int = 0
    """Seeds initialisation, the held-out split and the shuffles: equal seeds give equal SAEs."""
    warmup_steps: int = 100
    """Linear learning-rate warm-up from 0 over this many steps (capped at a tenth of the run)."""
    decay_fraction: float = 0.2
    """The last fraction of steps decays the learning rate linearly to 0."""
    auxk_coefficient: float = 1 / 32
    """Weight of the AuxK loss (dead latents reconstruct the residual), OpenAI's 1/32; TopK/BatchTopK only."""
    k_aux: int | None = None
    """Dead latents used by AuxK; None = d_in // 2."""
    dead_window_frames: int | None = None
    """A latent is dead when it has not fired for this many frames; None = min(one epoch, 1M frames)."""
    heldout_fraction: float = 0.1
    """Share of whole clips held out (never trained on) to measure held-out FVU and spliced CER."""
    median_sample: int = 4096
    """Frames sampled to estimate the geometric median that initialises b_dec."""
    adam_betas: tuple[float, float] = (0.9, 0.999)
    """Adam's moment decay rates."""
    threads: int | None = None
    """torch CPU threads while training; None leaves torch's setting alone."""

    def __post_init__(self) -> None:
        checks = [
            (self.epochs >= 1, f"epochs must be >= 1 (got {self.epochs})"),
            (self.batch_size >= 1, f"batch_size must be >= 1 (got {self.batch_size})"),
            (self.lr is None or self.lr > 0, f"lr must be > 0 (got {self.lr})"),
            (self.warmup_steps >= 0, f"warmup_steps must be >= 0 (got {self.warmup_steps})"),
            (0 <= self.decay_fraction <= 1, f"decay_fraction must be in [0, 1] (got {self.decay_fraction})"),
            (self.auxk_coefficient >= 0, f"auxk_coefficient must be >= 0 (got {self.auxk_coefficient})"),
            (self.k_aux is None or self.k_aux >= 1, f"k_aux must be >= 1 (got {self.k_aux})"),
            (
                self.dead_window_frames is None or self.dead_window_frames >= 1,
                f"dead_window_frames must be >= 1 (got {self.dead_window_frames})",
            ),
            (
                0 <= self.heldout_fraction < 1,
                f"heldout_fraction must be in [0, 1) (got {self.heldout_fraction})",
            ),
            (self.median_sample >= 1, f"median_sample must be >= 1 (got {self.median_sample})"),
            (self.threads is None or self.threads >= 1, f"threads must be >= 1 (got {self.threads})"),
        ]
        for ok, message in checks:
            if not ok:
                raise SAEConfigError(message)
        self.adam_betas = (float(self.adam_betas[0]), float(self.adam_betas[1]))  # JSON gives lists

    def resolved_lr(self, d_sae: int) -> float:
        return self.lr if self.lr is not None else 2e-3 * math.sqrt(4096 / d_sae)

    def to_dict(self) -> dict:
        return asdict(self)
