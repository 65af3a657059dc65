"""The JSON shapes of `/api/v1` (and the objects the HTML templates render): one definition for both.

Units follow the atlas (pipelines/atlas/schema.py): seconds for times, Whisper encoder frames (20 ms) for
frame indices, SAE latent units for activations.
"""

from __future__ import annotations

from typing import Literal

from pydantic import BaseModel, Field


class ErrorDetail(BaseModel):
    """Every 4xx/503 answer: one line that says what is wrong and what to do."""

    detail: str


class Word(BaseModel):
    word: str
    start: float
    end: float


class FeatureSummary(BaseModel):
    """One row of the feature list."""

    id: int
    density: float = Field(description="fraction of real frames where the feature fires")
    max_act: float
    label: str
    label_score: float
    top_language: str
    top_language_selectivity: float
    top_category: str
    top_category_selectivity: float

    @property
    def dead(self) -> bool:
        return self.density <= 0.0


class FeaturePage(BaseModel):
    """A page of the filtered, sorted feature list."""

    total: int
    limit: int
    offset: int
    items: list[FeatureSummary]


class Share(BaseModel):
    """How a feature's activation spreads over one language or category."""

    name: str
    act_share: float = Field(description="share of the feature's activation mass")
    frame_share: float = Field(description="share of all corpus frames (the baseline)")
    selectivity: float = Field(description="act_share / frame_share: above 1 means over-represented")
    fire_rate: float = Field(description="fraction of this language's/category's frames the feature fires on")


class LanguageEffect(BaseModel):
    language: str
    effect: float = Field(description="change of the language token's logit per unit of typical activation")


class Related(BaseModel):
    """Another feature linked from this one (decoder-cosine neighbour or co-active feature)."""

    id: int
    label: str
    score: float


class Example(BaseModel):
    """A window of a clip where the feature fired, with its activation on every frame of the window."""

    kind: Literal["top", "quantile"]
    rank: int
    quantile: float
    clip_id: int
    clip_key: str
    language: str
    category: str
    source: str
    licence: str
    start: float = Field(description="window start (s)")
    end: float = Field(description="window end (s)")
    start_frame: int
    end_frame: int
    peak_frame: int
    peak_act: float
    acts: list[float] = Field(description="activation per encoder frame of the window")
    words: list[Word] = Field(description="aligned words overlapping the window (times in clip seconds)")


class Histogram(BaseModel):
    edges: list[float]
    counts: list[int]


class FeatureDetail(FeatureSummary):
    """Everything the atlas knows about one feature."""

    mean_act: float
    label_source: str
    speech_fraction: float
    top_words: list[str]
    activation_histogram: Histogram
    languages: list[Share]
    categories: list[Share]
    language_effects: list[LanguageEffect]
    neighbours: list[Related]
    coactive: list[Related]
    top_examples: list[Example]
    quantile_examples: list[Example]
    prev_id: int | None = Field(description="previous live feature")
    next_id: int | None = Field(description="next live feature")


class ClipFeature(BaseModel):
    """A feature that has this clip among its examples: where in the clip and how strongly."""

    feature_id: int
    label: str
    kind: Literal["top", "quantile"]
    start: float
    end: float
    start_frame: int
    end_frame: int
    peak_frame: int
    peak_act: float
    acts: list[float]


class ClipDetail(BaseModel):
    id: int
    key: str
    category: str
    language: str
    transcript: str
    hypothesis: str
    source: str
    licence: str
    group_key: str
    speaker: str
    duration: float
    n_frames: int
    words: list[Word]
    features: list[ClipFeature] = Field(description="strongest first, one entry per feature")


class Count(BaseModel):
    name: str
    clips: int
    minutes: float


class DensityBin(BaseModel):
    log10_lo: float
    log10_hi: float
    n_features: int


class AtlasOverview(BaseModel):
    """The run behind the atlas: model, SAE, metrics and corpus composition."""

    version: str
    run: dict[str, object] = Field(
        description="run metadata as stored by the build (model, sae, metrics, ...)"
    )
    n_features: int
    n_live: int
    n_clips: int
    minutes: float
    languages: list[Count]
    categories: list[Count]
    density_histogram: list[DensityBin]


class Health(BaseModel):
    status: Literal["ok", "no_atlas"]
    atlas: str = Field(description="path of the atlas file")
    version: str | None = None
    detail: str | None = Field(default=None, description="what to do when there is no atlas")
    pages_cached: int = Field(default=0, description="rendered pages held in memory")
    stored_pages: bool = Field(
        default=False, description="feature pages are served as the build stored them in the atlas"
    )
    prerendering: bool = Field(
        default=False, description="feature pages are being rendered in the background"
    )
