"""The atlas schema: the one source of truth for `atlas.duckdb`, as SQLAlchemy Core tables.

The build stage creates these tables through duckdb_engine (`metadata.create_all`) and bulk-loads them with
DuckDB; the server reads them through the same `Table` objects. Integer primary keys carry
`autoincrement=False` (duckdb_engine would otherwise ask DuckDB for a SERIAL type it lacks). Rows of every
per-feature table are written sorted by `feature_id` so a feature page reads one contiguous range.

Units: times are seconds; frames are Whisper encoder positions (20 ms each); activations are in the SAE's
latent units (after normalisation is folded into the weights, i.e. for the raw encoder output).

What the tables hold (written by `pipelines.atlas.build` from `pipelines.analysis`; see its docs for methods)
- `run`: one JSON value per key. Keys: `schema_version` (int), `model` (str), `layer` (int), `site` (str),
  `n_features` (int), `sae` (the SAELens cfg.json), `metrics` (the SAE's metrics.json: fvu, fvu_heldout, l0,
  dead_fraction, ...), `corpus` ({name, n_clips, n_frames, minutes, minutes_by_language,
  minutes_by_category, clips_by_category}), `languages` and `categories` (the columns of the two share
  tables), `effect_languages`, `analysis` ({config, notes, timings, effect_clips, transcriber}), `built_at`,
  and `interpretation` when the analysis scored its labels (`pipelines.analysis.result.Interpretation`'s
  summary: threshold, heldout_frames, heldout_clips, counts, control_counts {random_sae, shuffled},
  explained_share {sae, random_sae, shuffled}, stable_share).
  `steering` when `whisper-atlas calibrate` ran: its presets.json (`pipelines.steering.calibrate`: each
  preset's id, description, spec, default strength and strength curve on training clips, and the comparison
  of feature rankings).
- `clips`: every manifest clip, `id` = its manifest row (the activations index uses the same rows);
  `clip_mels`: its log-mel once, uint8 with the values 0 and 255 stand for; `clip_words`: its words with
  start/end seconds: Whisper's (speech decoded in the clip's language, other clips in the detected one), or
  with `AnalysisConfig.aligner = "ct2"` the reference transcript's where a speech clip has one;
  `clip_phones`: approximate phone intervals, the runs of frames (20 ms) with the same `phone` annotation
  (`pipelines.annotate`: gruut's pronunciation spread over each word) within one word; empty when the
  analysis has no frame annotations.
- `features`: one row per SAE latent (dead ones included: density 0, empty label and lists). The histogram
  is over firing frames on a fixed log-spaced grid (8 bins per decade), trimmed to the non-empty range
  (`hist_edges` has one more entry than `hist_counts`; the end bins also hold values beyond the grid).
  With a scored interpretation, `label` is the best hypothesis, `label_score` its balanced accuracy on
  held-out frames (0.5 = chance) and `label_type` its type (`LABEL_TYPES`); from an analysis without one,
  `label_type` is '' and the interpretation's other columns are NULL (so are the ones it left NaN).
  `cross_lingual`: how evenly the feature fires across the language versions of parallel-sentence groups
  (`pipelines.analysis.parallel`: 1 = equally in every version, 0 = in one only; NULL when it fires in no
  parallel group or the analysis did not measure it).
- `feature_parallel`: per feature, its strongest parallel groups (`rank` 0 first) and on every clip of each
  its activation trace: float16 max-pooled over runs of `frames_per_point` frames; empty without them.
- `examples`: `top` = the strongest clips (one example per clip, its peak frame), rank 0 strongest;
  `quantile` = clip peaks (of clips not among its top examples) drawn from activation bins equal in log
  activation between the feature's weakest and strongest clip peak, strongest bin first; column `quantile`
  = upper edge of the bin / max_act (1.0 for top). `acts` are the feature's activations on frames
  [start_frame, end_frame) (a 1.5 s window at most).
- `feature_languages` / `feature_categories` (live features only, every corpus language/category):
  act_share = share of the feature's activation mass on that group's frames; frame_share = the group's
  share of all frames; selectivity = act_share / frame_share (1 = no preference); fire_rate = fraction of
  the group's frames where the feature fires.
- `feature_language_effects` (live features x `effect_languages`; empty when the SAE is not at the final
  encoder output): mean over 8 speech clips per language of sum_t a_f,t (W_dec[f] . d log p(L) / d h_t).
- `density_histogram`: live features per 0.25-wide bin of log10(density), for the overview page.
- `feature_pages`: every feature's web page, rendered once when the file is written (gzip-compressed HTML,
  exactly what the server would render for it): derived from the tables above by `write_atlas`'s `derive`
  step (the build passes the web layer's renderer), never given. `run` then holds `pages` ({identity,
  examples_shown}: the page code that rendered them; the server uses them only when its own is the same).
  Empty when the writer was given no renderer: the server then renders each page when it is asked for.

- `frame_codes` (explore by example: `pipelines.analysis.frame_codes`): per clip, every frame's SAE code as
  its `k` strongest (latent, activation) pairs; for a TopK SAE of that k these are all of its non-zero
  latents, so a span's sums are the SAE's own (activations stored as float16, the shards' precision).
  `run.explore.frame_codes.dropped_share` is the activation mass left out (0 for TopK). One row per clip
  (two zlib blobs, `pipelines.atlas.tables.encode_codes`) rather than one per pair: the 10.8M pairs of the
  default corpus take ~29 MB as blobs, ~70 MB as rows.
- `similar_windows` / `window_postings` (`pipelines.analysis.similar`): every clip cut into windows with
  their sketches (the strongest entries of the idf-weighted pooled codes, unit norm), and the inverted
  index of those sketches by feature, each feature's postings by weight (`rank` 0 strongest). The postings
  have no primary key (an index over them would outweigh them): their rows are sorted by (feature_id,
  rank), which DuckDB's zone maps use. `run.explore.similar` holds the settings it was built with.
- `feature_map` (`pipelines.analysis.feature_map`): each live feature's position in a 2-D UMAP of the unit
  decoder directions, in the unit square; `run.explore.map` holds UMAP's settings.

`run` also holds `build_id`: a random id the writer gives every file it writes, the served version's id (cache
keys, and the `?v=` of the URLs in pages, which must be known before the file is finished).
"""

from __future__ import annotations

from typing import Literal, get_args

import sqlalchemy as sa

from pipelines.constants import FRAME_SECONDS as FRAME_SECONDS  # re-exported: 20 ms per encoder position

SCHEMA_VERSION = 5
"""5: `frame_codes`, `similar_windows`, `window_postings`, `feature_map` and `run.explore` (explore by
example); 4: `clip_phones`, `feature_parallel` and `features.cross_lingual`; 3: the features' scored-label
columns (`label_type` ... `runner_ups`) and `run.interpretation`; 2: `feature_pages` and `run.build_id` (1:
neither).
"""

LabelType = Literal[
    "language",
    "speaker",
    "phonetic",
    "lexical",
    "positional",
    "acoustic",
    "boundary",
    "non-speech",
    "unexplained",
]
"""A feature type: the values of `features.label_type` besides '' (`pipelines.analysis.taxonomy.TYPES`)."""
LABEL_TYPES: tuple[LabelType, ...] = get_args(LabelType)
UNEXPLAINED: LabelType = "unexplained"

metadata = sa.MetaData()

run = sa.Table(
    "run",
    metadata,
    sa.Column("key", sa.String, primary_key=True),
    sa.Column("value", sa.String, nullable=False, comment="JSON-encoded value"),
    comment="Run metadata as key/value JSON: model, layer, sae, metrics, corpus summary, schema_version.",
)

clips = sa.Table(
    "clips",
    metadata,
    sa.Column("id", sa.Integer, primary_key=True, autoincrement=False, comment="dense row id 0..n-1"),
    sa.Column("key", sa.String, nullable=False, unique=True, comment="the manifest's clip id"),
    sa.Column("category", sa.String, nullable=False),
    sa.Column("language", sa.String, nullable=False),
    sa.Column("transcript", sa.String, nullable=False, comment="reference transcript ('' when unknown)"),
    sa.Column("hypothesis", sa.String, nullable=False, comment="Whisper's own transcript"),
    sa.Column("source", sa.String, nullable=False),
    sa.Column("licence", sa.String, nullable=False),
    sa.Column("group_key", sa.String, nullable=False, comment="parallel-sentence group ('' when none)"),
    sa.Column("speaker", sa.String, nullable=False),
    sa.Column("duration", sa.Double, nullable=False),
    sa.Column("n_frames", sa.Integer, nullable=False, comment="real encoder frames (no padding)"),
    sa.Column("audio_path", sa.String, nullable=False, comment="absolute path of the 16 kHz FLAC"),
)

clip_mels = sa.Table(
    "clip_mels",
    metadata,
    sa.Column("clip_id", sa.Integer, primary_key=True, autoincrement=False),
    sa.Column("n_mels", sa.Integer, nullable=False),
    sa.Column("n_frames", sa.Integer, nullable=False, comment="mel frames (10 ms each, 2 per encoder frame)"),
    sa.Column(
        "mel", sa.LargeBinary, nullable=False, comment="uint8 (n_mels, n_frames), row-major, low bins first"
    ),
    sa.Column("vmin", sa.Float, nullable=False, comment="log-mel value that 0 maps to"),
    sa.Column("vmax", sa.Float, nullable=False, comment="log-mel value that 255 maps to"),
)

clip_words = sa.Table(
    "clip_words",
    metadata,
    sa.Column("clip_id", sa.Integer, primary_key=True, autoincrement=False),
    sa.Column("idx", sa.Integer, primary_key=True, autoincrement=False),
    sa.Column("word", sa.String, nullable=False),
    sa.Column("start", sa.Float, nullable=False),
    sa.Column("end", sa.Float, nullable=False),
    comment="Word alignment (cross-attention alignment heads) of Whisper's or the reference transcript.",
)

clip_phones = sa.Table(
    "clip_phones",
    metadata,
    sa.Column("clip_id", sa.Integer, primary_key=True, autoincrement=False),
    sa.Column("idx", sa.Integer, primary_key=True, autoincrement=False),
    sa.Column("phone", sa.String, nullable=False, comment="IPA phone"),
    sa.Column("start", sa.Float, nullable=False),
    sa.Column("end", sa.Float, nullable=False),
    comment="Approximate phone intervals: runs of frames with the same phone annotation (20 ms steps).",
)

features = sa.Table(
    "features",
    metadata,
    sa.Column("id", sa.Integer, primary_key=True, autoincrement=False),
    sa.Column(
        "density", sa.Double, nullable=False, comment="fraction of real frames where the latent is > 0"
    ),
    sa.Column("max_act", sa.Float, nullable=False),
    sa.Column("mean_act", sa.Float, nullable=False, comment="mean over frames where it fires"),
    sa.Column("label", sa.String, nullable=False, comment="short description ('' when none)"),
    sa.Column(
        "label_score",
        sa.Float,
        nullable=False,
        comment="balanced accuracy of the label on held-out frames (0.5 = chance); older: 0..1 confidence",
    ),
    sa.Column("label_type", sa.String, nullable=False, comment="one of LABEL_TYPES; '' when not typed"),
    sa.Column(
        "label_precision", sa.Float, comment="share of its active held-out frames where the label holds"
    ),
    sa.Column("label_recall", sa.Float, comment="share of the held-out frames with the label where it fires"),
    sa.Column(
        "language_vs_speaker",
        sa.Float,
        comment="best language minus best speaker score, language features only (> 0: language wins)",
    ),
    sa.Column("stability", sa.Float, comment="best decoder cosine in an SAE trained with another seed"),
    sa.Column(
        "runner_ups",
        sa.String,
        nullable=False,
        comment="JSON list of the next best hypotheses: {label, type, score, precision, recall}",
    ),
    sa.Column("label_source", sa.String, nullable=False, comment="'auto' (from the analysis) or 'human'"),
    sa.Column("top_language", sa.String, nullable=False, comment="language with the highest selectivity"),
    sa.Column("top_language_selectivity", sa.Float, nullable=False),
    sa.Column("top_category", sa.String, nullable=False, comment="category with the highest selectivity"),
    sa.Column("top_category_selectivity", sa.Float, nullable=False),
    sa.Column("speech_fraction", sa.Float, nullable=False, comment="share of activation mass on speech"),
    sa.Column("top_words", sa.ARRAY(sa.String), nullable=False, comment="aligned words at its top examples"),
    sa.Column(
        "hist_edges", sa.ARRAY(sa.Float), nullable=False, comment="activation histogram bin edges (log grid)"
    ),
    sa.Column("hist_counts", sa.ARRAY(sa.BigInteger), nullable=False, comment="frames per bin (firing only)"),
    sa.Column("neighbours", sa.ARRAY(sa.Integer), nullable=False, comment="most similar by decoder cosine"),
    sa.Column("neighbour_cos", sa.ARRAY(sa.Float), nullable=False),
    sa.Column(
        "coactive", sa.ARRAY(sa.Integer), nullable=False, comment="most often active on the same frames"
    ),
    sa.Column("coactive_score", sa.ARRAY(sa.Float), nullable=False, comment="Jaccard of firing frames"),
    sa.Column(
        "cross_lingual",
        sa.Float,
        comment="0..1 how evenly it fires across the languages of parallel sentences (1 = equally in all)",
    ),
)

feature_parallel = sa.Table(
    "feature_parallel",
    metadata,
    sa.Column("feature_id", sa.Integer, primary_key=True, autoincrement=False),
    sa.Column(
        "rank", sa.Integer, primary_key=True, autoincrement=False, comment="0 = the group it fires hardest on"
    ),
    sa.Column("clip_id", sa.Integer, primary_key=True, autoincrement=False),
    sa.Column("group_key", sa.String, nullable=False),
    sa.Column("frames_per_point", sa.Integer, nullable=False, comment="encoder frames per trace point"),
    sa.Column("peak", sa.Float, nullable=False, comment="the feature's max activation on the clip"),
    sa.Column(
        "trace",
        sa.LargeBinary,
        nullable=False,
        comment="float16 little-endian: max activation over each run of frames_per_point frames",
    ),
    comment="Each feature's activation over the language versions of its strongest parallel groups.",
)

examples = sa.Table(
    "examples",
    metadata,
    sa.Column("feature_id", sa.Integer, primary_key=True, autoincrement=False),
    sa.Column("kind", sa.String, primary_key=True, comment="'top' or 'quantile'"),
    sa.Column("rank", sa.Integer, primary_key=True, autoincrement=False, comment="0 = strongest in its kind"),
    sa.Column(
        "quantile", sa.Float, nullable=False, comment="upper edge of its activation bin / max_act (top: 1.0)"
    ),
    sa.Column("clip_id", sa.Integer, nullable=False),
    sa.Column("start_frame", sa.Integer, nullable=False, comment="window start (encoder frames)"),
    sa.Column("end_frame", sa.Integer, nullable=False, comment="window end, exclusive"),
    sa.Column("peak_frame", sa.Integer, nullable=False),
    sa.Column("peak_act", sa.Float, nullable=False),
    sa.Column("acts", sa.ARRAY(sa.Float), nullable=False, comment="activation per frame of the window"),
)

feature_languages = sa.Table(
    "feature_languages",
    metadata,
    sa.Column("feature_id", sa.Integer, primary_key=True, autoincrement=False),
    sa.Column("language", sa.String, primary_key=True),
    sa.Column("act_share", sa.Float, nullable=False, comment="share of the feature's activation mass"),
    sa.Column("frame_share", sa.Float, nullable=False, comment="the language's share of all frames"),
    sa.Column("selectivity", sa.Float, nullable=False, comment="act_share / frame_share"),
    sa.Column("fire_rate", sa.Float, nullable=False, comment="fraction of the language's frames it fires on"),
)

feature_categories = sa.Table(
    "feature_categories",
    metadata,
    sa.Column("feature_id", sa.Integer, primary_key=True, autoincrement=False),
    sa.Column("category", sa.String, primary_key=True),
    sa.Column("act_share", sa.Float, nullable=False),
    sa.Column("frame_share", sa.Float, nullable=False),
    sa.Column("selectivity", sa.Float, nullable=False),
    sa.Column("fire_rate", sa.Float, nullable=False),
)

feature_language_effects = sa.Table(
    "feature_language_effects",
    metadata,
    sa.Column("feature_id", sa.Integer, primary_key=True, autoincrement=False),
    sa.Column("language", sa.String, primary_key=True),
    sa.Column(
        "effect",
        sa.Float,
        nullable=False,
        comment="first-order contribution of the feature to log p(language): mean over clips of "
        "sum_t a_t * (W_dec[f] . d log p / d h_t); differences between languages equal logit differences",
    ),
)

density_histogram = sa.Table(
    "density_histogram",
    metadata,
    sa.Column("bin", sa.Integer, primary_key=True, autoincrement=False),
    sa.Column("log10_lo", sa.Float, nullable=False),
    sa.Column("log10_hi", sa.Float, nullable=False),
    sa.Column("n_features", sa.Integer, nullable=False),
    comment="Histogram of log10(feature density) over live features, for the overview page.",
)

feature_pages = sa.Table(
    "feature_pages",
    metadata,
    sa.Column("feature_id", sa.Integer, primary_key=True, autoincrement=False),
    sa.Column("page", sa.LargeBinary, nullable=False, comment="the whole HTML page, gzip-compressed"),
    comment="Every feature's page, pre-rendered when the file was written (see `run.pages`).",
)

frame_codes = sa.Table(
    "frame_codes",
    metadata,
    sa.Column("clip_id", sa.Integer, primary_key=True, autoincrement=False),
    sa.Column("n_frames", sa.Integer, nullable=False, comment="encoder frames (the clip's n_frames)"),
    sa.Column("k", sa.Integer, nullable=False, comment="(latent, activation) pairs per frame"),
    sa.Column(
        "feature_ids",
        sa.LargeBinary,
        nullable=False,
        comment="zlib of uint16 LE (n_frames, k) row-major: latent ids ascending in a frame, delta-coded",
    ),
    sa.Column(
        "acts",
        sa.LargeBinary,
        nullable=False,
        comment="zlib of float16 LE (n_frames, k): the activations of those latents (0 pads)",
    ),
    comment="Every frame's SAE code: its k strongest latents (all of them for a TopK SAE of that k).",
)

similar_windows = sa.Table(
    "similar_windows",
    metadata,
    sa.Column("window_id", sa.Integer, primary_key=True, autoincrement=False, comment="by clip, then start"),
    sa.Column("clip_id", sa.Integer, nullable=False),
    sa.Column("start_frame", sa.Integer, nullable=False),
    sa.Column("end_frame", sa.Integer, nullable=False, comment="exclusive"),
    sa.Column("features", sa.ARRAY(sa.Integer), nullable=False, comment="sketch ids, strongest first"),
    sa.Column("weights", sa.ARRAY(sa.Float), nullable=False, comment="sketch weights (unit norm)"),
    comment="Corpus windows and their sketches, what similar-moment search scores a span against.",
)

window_postings = sa.Table(
    "window_postings",
    metadata,
    sa.Column("feature_id", sa.Integer, nullable=False),
    sa.Column("rank", sa.Integer, nullable=False, comment="0 = the feature's strongest window"),
    sa.Column("window_id", sa.Integer, nullable=False),
    sa.Column("weight", sa.Float, nullable=False, comment="the feature's weight in the window's sketch"),
    comment="Inverted index of the window sketches, sorted by (feature_id, rank); no key (see above).",
)

feature_map = sa.Table(
    "feature_map",
    metadata,
    sa.Column("feature_id", sa.Integer, primary_key=True, autoincrement=False),
    sa.Column("x", sa.Float, nullable=False, comment="0..1"),
    sa.Column("y", sa.Float, nullable=False, comment="0..1"),
    comment="Live features in a 2-D UMAP of their unit decoder directions (cosine).",
)

DERIVED_TABLES = frozenset({"feature_pages"})
"""Tables the writer derives from the others (never taken from its input: a copy would go stale)."""
