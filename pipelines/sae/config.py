"""Configuration of an SAE (its shape and sparsity rule) and of one training run.

Defaults: 4,096 latents with k 32 (8x whisper-base's 512-wide output; TopK as in Gao et al. 2024, "Scaling
and evaluating sparse autoencoders"), batch 256 and 8 epochs, measured on the ~96k frames of whisper-base's
final encoder output that the default corpus gives (the `lr` field records that sweep); from common
practice (sparsify, SAELens): AuxK weight 1/32, k_aux = d_in / 2, Adam with warm-up and a late linear decay.
"""

from __future__ import annotations

import math
from dataclasses import asdict
from typing import Annotated, Literal, get_args

from pydantic import Field, NonNegativeFloat, NonNegativeInt, PositiveFloat, PositiveInt

from pipelines.config import config
from pipelines.errors import AtlasError

Arch = Literal["topk", "batchtopk", "relu"]
ARCHS: tuple[str, ...] = get_args(Arch)

STREAM_BUFFER_FRAMES = 262_144
"""Frames the shuffle buffer of online training holds by default (`pipelines.sae.stream`; float16: 256 MiB
at whisper-base's width, 384 MiB at small's)."""


class SAEConfigError(AtlasError):
    """An SAE or training setting is out of range."""


@config(SAEConfigError)
class SAEConfig:
    """The shape and sparsity rule of one SAE; saved inside cfg.json so `load_sae` can rebuild it."""

    d_in: PositiveInt
    """Width of the activations it reads (the encoder's d_model: 512 for whisper-base)."""
    d_sae: PositiveInt = 1024
    """Number of latents (dictionary size). 1,024 by the sweep in benchmarks/RESULTS.md: on ~150k frames of
    some 35 voices wider dictionaries fit the training voices better and new voices worse."""
    arch: Arch = "topk"
    """`topk`: exactly k latents per frame; `batchtopk`: k per frame on average over a batch, a learned
    threshold at inference; `relu`: ReLU with an L1 penalty (SAELens' `standard`)."""
    k: int = 64
    """Active latents per frame (TopK) or on average per frame (BatchTopK), 1..d_sae; unused by ReLU. 64 by
    the sweep: the spliced transcript change on new voices is 0.06-0.12 (two seeds) against 0.11 at 32;
    128 reaches 0.054 but keeps an eighth of the dictionary on per frame."""
    l1_coefficient: NonNegativeFloat = 5.0
    """ReLU only: weight of sum|z| against the summed squared error, with inputs scaled to E||x||^2 = d_in
    and unit-norm decoder rows (Anthropic's April 2024 convention)."""

    def __post_init__(self) -> None:
        if self.arch != "relu" and not 1 <= self.k <= self.d_sae:
            raise ValueError(f"k must be in 1..d_sae={self.d_sae} for {self.arch} (got {self.k})")

    def to_dict(self) -> dict:
        return asdict(self)


@config(SAEConfigError)
class TrainConfig:
    """How one SAE is trained; every field is recorded in metrics.json."""

    epochs: PositiveInt = 4
    """Passes over the training frames (reshuffled each epoch); 4 by the sweep (see benchmarks/RESULTS.md)."""
    batch_size: PositiveInt = 256
    """Frames per optimiser step."""
    lr: PositiveFloat | None = None
    """Adam learning rate; None picks 2e-3 x sqrt(4096 / d_sae). Measured on the default corpus's 82k train
    frames (d_sae 4,096, k 32, 8 epochs; FVU train / held out, dead fraction): 1e-3 0.079 / 0.119, 0.2%;
    2e-3 0.075 / 0.109, 4.8%; 4e-3 0.100 / 0.120, 41% (latents die faster than AuxK revives them).
    Short runs like these want more than sparsify's 2e-4 x sqrt(2^14 / d_sae), meant for ~100x more steps."""
    seed: int = 0
    """Seeds initialisation, the held-out split and the shuffles: equal seeds give equal SAEs."""
    split_seed: int | None = None
    """Seeds the held-out split instead of `seed`, so an SAE with another `seed` (the seed-stability twin)
    trains on the same clips."""
    warmup_steps: NonNegativeInt = 100
    """Linear learning-rate warm-up from 0 over this many steps (capped at a tenth of the run)."""
    decay_fraction: Annotated[float, Field(ge=0, le=1)] = 0.2
    """The last fraction of steps decays the learning rate linearly to 0."""
    auxk_coefficient: NonNegativeFloat = 1 / 32
    """Weight of the AuxK loss (dead latents reconstruct the residual), OpenAI's 1/32; TopK/BatchTopK only."""
    k_aux: PositiveInt | None = None
    """Dead latents used by AuxK; None = d_in // 2."""
    dead_window_frames: PositiveInt | None = None
    """A latent is dead when it has not fired for this many frames; None = min(one epoch, 1M frames)."""
    heldout_fraction: Annotated[float, Field(ge=0, lt=1)] = 0.15
    """Share of each category's sentence groups held out (`pipelines.sae.split`; with one speaker per
    language held out where there are two or more) to measure FVU and spliced CER on new audio."""
    median_sample: PositiveInt = 4096
    """Frames sampled to estimate the geometric median that initialises b_dec."""
    adam_betas: tuple[float, float] = (0.9, 0.999)
    """Adam's moment decay rates (a JSON list is read as a tuple)."""
    threads: PositiveInt | None = None
    """torch CPU threads while training; None leaves torch's setting alone."""

    def resolved_lr(self, d_sae: int) -> float:
        return self.lr if self.lr is not None else 2e-3 * math.sqrt(4096 / d_sae)

    def to_dict(self) -> dict:
        return asdict(self)
