"""Configuration of the analysis pass (`whisper-atlas analyze`)."""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from pipelines.errors import AtlasError


class AnalysisConfigError(AtlasError, ValueError):
    """An out-of-range analysis setting (the CLI prints it as one line, like every AtlasError)."""


@dataclass(frozen=True)
class AnalysisConfig:
    """What the analysis computes per feature and how much memory it may hold while streaming."""

    top_k: int = 24
    """Top examples kept per feature (at most one per clip)."""
    quantile_bins: int = 8
    """Activation bins (equal width in log activation, between the feature's weakest and strongest clip
    peaks) that quantile examples are drawn from."""
    quantile_per_bin: int = 2
    """Quantile examples drawn per bin."""
    window_frames: int = 75
    """Frames of context stored around each example's peak (75 x 20 ms = 1.5 s)."""
    chunk_frames: int = 4096
    """Frames encoded per step; chunks hold whole clips, so a clip longer than this is its own chunk."""
    hist_decades: tuple[float, float] = (-3.0, 4.0)
    """log10 range of the fixed activation grid (values outside land in the end bins)."""
    hist_bins_per_decade: int = 8
    """Resolution of the fixed log activation grid shared by histograms and quantile reservoirs."""
    reservoir: int = 2
    """Clip peaks kept per (feature, grid bin) by reservoir sampling; quantile examples come from these."""
    n_neighbours: int = 8
    """Decoder-cosine neighbours and co-active features kept per feature."""
    coactive_dense_max_features: int = 8192
    """Up to this many features co-occurrence is counted exactly in an F x F int32 table (256 MB at 8,192);
    above it, with Misra-Gries counters (F x `coactive_counters`)."""
    coactive_counters: int = 256
    """Misra-Gries counters per feature for co-occurrence (exact when a feature has fewer partners)."""
    coactive_max_latents: int = 32
    """Co-occurrence counts pairs among at most this many strongest latents of each frame."""
    effect_clips_per_language: int = 8
    """Speech clips per corpus language used to estimate each feature's effect on the language logits."""
    effect_languages: tuple[str, ...] = ("en", "es", "fr", "de")
    """Languages whose logit effects are stored, besides the corpus's own languages."""
    max_new_tokens: int = 96
    """Decoder budget per clip transcript (a wrong or looping decode stops there)."""
    seed: int = 0
    """Seed of the reservoir priorities and of the quantile draws (the analysis is deterministic)."""

    def __post_init__(self) -> None:
        positive = (
            *("top_k", "quantile_bins", "quantile_per_bin", "window_frames", "chunk_frames"),
            *("hist_bins_per_decade", "reservoir", "n_neighbours", "coactive_counters"),
            *("coactive_max_latents", "max_new_tokens"),
        )
        for name in positive:
            if getattr(self, name) < 1:
                raise AnalysisConfigError(f"AnalysisConfig.{name} must be >= 1, got {getattr(self, name)}")
        if self.effect_clips_per_language < 0:
            raise AnalysisConfigError("AnalysisConfig.effect_clips_per_language must be >= 0")
        lo, hi = self.hist_decades
        if not lo < hi:
            raise AnalysisConfigError(
                f"AnalysisConfig.hist_decades must be increasing, got {self.hist_decades}"
            )

    @property
    def n_grid(self) -> int:
        """Bins of the fixed log activation grid."""
        lo, hi = self.hist_decades
        return int(round((hi - lo) * self.hist_bins_per_decade))

    def grid_edges(self) -> np.ndarray:
        """(n_grid + 1,) edges of the log grid; the first and last bins also hold values beyond them."""
        lo, hi = self.hist_decades
        return np.logspace(lo, hi, self.n_grid + 1)
