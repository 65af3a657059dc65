"""The JSON shapes of `/api/v1` (and the objects the HTML templates render): one definition for both.

Units follow the atlas (pipelines/atlas/schema.py): seconds for times, Whisper encoder frames (20 ms) for
frame indices, SAE latent units for activations.
"""

from __future__ import annotations

from typing import Any, Literal

from pydantic import BaseModel, Field

from pipelines.atlas.schema import LabelType


class ErrorDetail(BaseModel):
    """Every 4xx/503 answer: one line that says what is wrong and what to do."""

    detail: str


class Word(BaseModel):
    word: str
    start: float
    end: float


class Phone(BaseModel):
    """An approximate phone interval: a run of 20 ms frames with the same phone annotation."""

    phone: str
    start: float
    end: float


class RunnerUp(BaseModel):
    """A hypothesis that explains the feature almost as well as its label."""

    label: str
    type: LabelType
    score: float = Field(description="balanced accuracy on held-out frames (0.5 = chance)")
    precision: float
    recall: float


class FeatureSummary(BaseModel):
    """One row of the feature list."""

    id: int
    density: float = Field(description="fraction of real frames where the feature fires")
    max_act: float
    label: str = Field(description="the best hypothesis in words, e.g. `phone = /s/` ('' when none)")
    label_score: float = Field(
        description="balanced accuracy of the label as a predictor of the feature firing, on held-out "
        "clips (0.5 = chance); from an atlas without scored labels, a 0..1 confidence"
    )
    label_type: Literal["", LabelType] = Field(
        description="the label's feature type; '' for a dead feature or an atlas without scored labels"
    )
    label_precision: float | None = Field(
        description="share of the feature's active held-out frames where the label holds"
    )
    label_recall: float | None = Field(
        description="share of the held-out frames with the label where the feature fires"
    )
    language_vs_speaker: float | None = Field(
        description="language features: best language minus best speaker score (> 0: language explains "
        "the feature better than any one voice)"
    )
    stability: float | None = Field(
        description="best decoder cosine in an SAE trained with another seed (>= 0.7: stable)"
    )
    runner_ups: list[RunnerUp] = Field(description="the next best hypotheses, best first")
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


class ParallelVersion(BaseModel):
    """One language version of a parallel sentence: the feature's activation over the whole clip."""

    clip_id: int
    clip_key: str
    language: str
    duration: float = Field(description="clip length (s)")
    peak: float = Field(description="the feature's max activation on the clip")
    seconds_per_point: float = Field(description="time each trace point covers (the max over its frames)")
    trace: list[float] = Field(description="activation over the clip, at most 150 points")


class ParallelGroup(BaseModel):
    """A parallel-sentence group (the same sentence in several languages) where the feature fires."""

    group: str = Field(description="the manifest's parallel group key")
    rank: int = Field(description="0 = the group where the feature fires hardest")
    peak: float = Field(description="max activation over the group's clips")
    similarity: float | None = Field(
        description="how evenly it fires across the group's languages: (sum of per-language peaks / max "
        "peak - 1) / (languages - 1); 1 = equally in every version, 0 = in one only"
    )
    versions: list[ParallelVersion] = Field(description="every clip of the group, by language")


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
    cross_lingual: float | None = Field(
        default=None,
        description="0..1 mean over the parallel groups where it fires of their `similarity`: 1 = fires "
        "equally on the same sentence in every language, 0 = in one language only (null: not measured or "
        "fires in no parallel group)",
    )
    parallel: list[ParallelGroup] = Field(
        default_factory=list, description="its strongest parallel-sentence groups, strongest first"
    )


class ClipFeature(BaseModel):
    """A feature that has this clip among its examples: where in the clip and how strongly."""

    feature_id: int
    label: str
    label_type: Literal["", LabelType] = Field(default="", description="the feature's type ('' untyped)")
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
    phones: list[Phone] = Field(
        default_factory=list,
        description="approximate phone intervals (the frames' phone annotations; empty when not annotated)",
    )
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


class Taxonomy(BaseModel):
    """How many features of each type the SAE has, beside two controls: a random SAE of the same width and k,
    and the annotations shuffled across clips (what chance alignment explains)."""

    counts: dict[str, int] = Field(description="live features per type, every type (unexplained too)")
    control_counts: dict[str, dict[str, int]] = Field(
        description="`random_sae` and `shuffled`: live features per type, every type"
    )
    explained_share: dict[str, float] = Field(
        description="`sae`, `random_sae`, `shuffled`: share of live features some hypothesis explains"
    )
    threshold: float = Field(description="lowest label score of an explained feature")
    heldout_frames: int = Field(description="frames the labels are scored on (clips the SAE never saw)")
    heldout_clips: int
    stable_share: float | None = Field(
        description="share of live features with stability >= 0.7 (null without another-seed SAE)"
    )
    best: dict[str, list[FeatureSummary]] = Field(
        description="per explained type, its best-scored features, best first"
    )


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


class TranscriptMeasures(BaseModel):
    """A steered (or SAE-reconstructed) transcript judged against the baseline transcript of the same clip:
    `/api/v1/steer` answers it as `measures` of its `reconstructed` and `steered` transcripts
    (pipelines/steering/measures.py). A flipped language token alone is no success: the text can loop."""

    text_language: str = Field(
        description="language the text reads as (py3langid over Whisper's languages); '' when the text is "
        "empty or too short to tell"
    )
    text_language_probability: float = Field(description="py3langid's probability of `text_language`, 0..1")
    degenerate: bool = Field(
        description="a repetition loop or nothing: empty, gzip compression ratio > 2.4, or one word n-gram "
        "(n <= 4) repeated >= 3 times covering at least half the words"
    )
    cer_vs_baseline: float = Field(
        description="character error rate against the baseline transcript (normalised text; can exceed 1)"
    )
    length_ratio: float = Field(
        description="normalised characters of this transcript / of the baseline (baseline counted as >= 1)"
    )
    token_flipped: bool = Field(description="Whisper's detected language token differs from the baseline's")
    target: str | None = Field(description="the language the steering asked for (null: none asked)")
    target_probability: float | None = Field(
        description="py3langid's probability that the text is in `target`, 0..1 (null without a target)"
    )
    succeeded_toward_target: bool | None = Field(
        description="the text reads as `target` and is not degenerate (null when no target was asked)"
    )


class SpanFeature(BaseModel):
    """A feature active in a selected span: how much of the span's activation is its own."""

    id: int
    label: str
    label_type: Literal["", LabelType] = Field(description="the feature's type ('' untyped)")
    activation: float = Field(description="sum of its activation over the span's frames (SAE latent units)")
    share: float = Field(description="its share of the span's summed activation over all features")
    peak: float = Field(description="its largest activation on one frame of the span")
    frames: int = Field(description="frames of the span where it fires")
    trace: list[float] = Field(description="its activation over the span, max over `frames_per_point` frames")


class Span(BaseModel):
    """A selected moment: its frames and the features active in it, by share of the activation."""

    clip_id: int | None = Field(description="the atlas clip (null for an uploaded clip)")
    start: float = Field(description="seconds, the first frame's start")
    end: float = Field(description="seconds, the last frame's end")
    start_frame: int
    end_frame: int = Field(description="exclusive")
    total: float = Field(description="summed activation of all features over the span")
    n_active: int = Field(description="features active in the span (the list may show fewer)")
    frames_per_point: int = Field(description="encoder frames per trace point")
    features: list[SpanFeature] = Field(description="largest share first")


class SimilarMoment(BaseModel):
    """A corpus window whose pooled SAE codes are like the query span's."""

    window_id: int
    clip_id: int
    clip_key: str
    language: str
    category: str
    source: str
    licence: str
    start: float = Field(description="window start (s)")
    end: float = Field(description="window end (s)")
    score: float = Field(description="cosine of the idf-weighted pooled codes (1 = the same mix of features)")
    words: list[Word] = Field(description="aligned words overlapping the window")


class SimilarMoments(BaseModel):
    """The best corpus windows for a span (one per clip, the query's own moment left out)."""

    query: Span
    results: list[SimilarMoment]
    method: str = Field(description="how windows are compared and found")
    took_ms: float = Field(description="time of the search itself (span codes to ranked windows)")
    filename: str | None = Field(default=None, description="uploads: the file's name")
    duration: float | None = Field(default=None, description="uploads: seconds analysed")
    truncated: bool | None = Field(default=None, description="uploads: cut to one Whisper window")


class MapPoint(BaseModel):
    id: int
    x: float = Field(description="0..1")
    y: float = Field(description="0..1")
    label: str
    label_type: Literal["", LabelType]
    top_language: str
    density: float


class FeatureMapPoints(BaseModel):
    """Every live feature placed by a 2-D UMAP of its decoder direction: close features write alike."""

    explanation: str
    settings: dict[str, object] = Field(description="UMAP's settings (n_neighbors, min_dist, seed, ...)")
    points: list[MapPoint]


class SteeringPreset(BaseModel):
    """A named steering recipe (`whisper-atlas calibrate`, pipelines/steering/presets.py) and its strength
    curve measured on the SAE's training clips. POST /api/v1/steer takes `{"preset": id, "strength": s}`."""

    id: str
    description: str
    method: str = Field(description="sae (features), dom, gradient or random; features for explicit ones")
    spec: dict[str, Any] = Field(description="SteeringSpec fields without strength")
    default_strength: float = Field(description="The curve's strength with the best `score`")
    curve: dict[str, list[float]] = Field(
        description="Per strength (`strength`, 0 first): token_flip_rate, success_rate, loop_rate, cer "
        "toward a language; hallucination_rate, gated_hallucination_rate, speech_changed_rate, speech_cer, "
        "silencing_gain for silencing"
    )
    score: str = Field(description="The curve column the default strength maximises")
    clips: int = Field(description="Training clips the curve was measured on")
    chosen_by: dict[str, Any] = Field(default_factory=dict, description="How its features were chosen")


class SteeringPresets(BaseModel):
    """The run's steering presets and the comparison of feature rankings behind the language presets."""

    presets: list[SteeringPreset]
    rank: str | None = Field(None, description="The feature ranking the language presets use")
    rank_comparison: dict[str, Any] = Field(
        default_factory=dict, description="Each ranking's pooled curve on training clips toward es and fr"
    )
