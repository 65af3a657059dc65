"""Configuration of the analysis pass (`whisper-atlas analyze`)."""

from __future__ import annotations

from typing import TYPE_CHECKING, Literal

from pydantic import NonNegativeInt, PositiveInt

from pipelines.config import config
from pipelines.errors import AtlasError

if TYPE_CHECKING:
    import numpy as np


class AnalysisConfigError(AtlasError, ValueError):
    """An out-of-range analysis setting (the CLI prints it as one line, like every AtlasError)."""


@config(AnalysisConfigError, frozen=True)
class AnalysisConfig:
    """What the analysis computes per feature and how much memory it may hold while streaming."""

    top_k: PositiveInt = 24
    """Top examples kept per feature (at most one per clip)."""
    quantile_bins: PositiveInt = 8
    """Activation bins (equal width in log activation, between the feature's weakest and strongest clip
    peaks) that quantile examples are drawn from."""
    quantile_per_bin: PositiveInt = 2
    """Quantile examples drawn per bin."""
    window_frames: PositiveInt = 75
    """Frames of context stored around each example's peak (75 x 20 ms = 1.5 s)."""
    chunk_frames: PositiveInt = 4096
    """Frames encoded per step; chunks hold whole clips, so a clip longer than this is its own chunk."""
    hist_decades: tuple[float, float] = (-3.0, 4.0)
    """log10 range of the fixed activation grid (values outside land in the end bins)."""
    hist_bins_per_decade: PositiveInt = 8
    """Resolution of the fixed log activation grid shared by histograms and quantile reservoirs."""
    reservoir: PositiveInt = 2
    """Clip peaks kept per (feature, grid bin) by reservoir sampling; quantile examples come from these."""
    n_neighbours: PositiveInt = 8
    """Decoder-cosine neighbours and co-active features kept per feature."""
    coactive_dense_max_features: NonNegativeInt = 8192
    """Up to this many features co-occurrence is counted exactly in an F x F int32 table (256 MB at 8,192);
    above it, with Misra-Gries counters (F x `coactive_counters`)."""
    coactive_counters: PositiveInt = 256
    """Misra-Gries counters per feature for co-occurrence (exact when a feature has fewer partners)."""
    coactive_max_latents: PositiveInt = 32
    """Co-occurrence counts pairs among at most this many strongest latents of each frame."""
    effect_windows_per_language: NonNegativeInt = 4
    """Encoder windows (speaker recordings, ~20 s of speech each) of the SAE's training clips per corpus
    language used to estimate each feature's effect on the language logits."""
    effect_languages: tuple[str, ...] = ("en", "es", "fr", "de")
    """Languages whose logit effects are stored, besides the corpus's own languages."""
    max_new_tokens: PositiveInt = 96
    """Decoder budget per clip transcript (a wrong or looping decode stops there)."""
    aligner: Literal["ct2", "transformers"] = "ct2"
    """Word times: `ct2` (the default) forced-aligns the reference transcript where a speech clip has one
    and decodes every clip with CTranslate2 (batched greedy decode, its tokens aligned for word times; forced
    alignment ~18x and decoding ~2.4x faster than transformers' generate, benchmarks/align_bench.py);
    `transformers` times Whisper's own words with transformers' generate and word timestamps (the
    reference implementation the fast path is tested against)."""
    transcribe_all: bool = False
    """Also decode Whisper's own transcript of windows whose reference words are forced-aligned (off: those
    clips show their reference only, and `analyze` decodes just the clips that have none)."""
    seed: int = 0
    """Seed of the reservoir priorities and of the quantile draws (the analysis is deterministic)."""

    def __post_init__(self) -> None:
        lo, hi = self.hist_decades
        if not lo < hi:
            raise ValueError(f"hist_decades must be increasing (got {self.hist_decades})")

    @property
    def n_grid(self) -> int:
        """Bins of the fixed log activation grid."""
        lo, hi = self.hist_decades
        return int(round((hi - lo) * self.hist_bins_per_decade))

    def grid_edges(self) -> np.ndarray:
        """(n_grid + 1,) edges of the log grid; the first and last bins also hold values beyond them."""
        import numpy as np  # here, so the CLI reads this config's defaults without loading numpy

        lo, hi = self.hist_decades
        return np.logspace(lo, hi, self.n_grid + 1)
