"""The atlas queries as SQLAlchemy Core statements over `pipelines.atlas.schema`, compiled for DuckDB.

`AtlasReader` (pipelines/atlas/reader.py) runs them; this module only builds them. Fixed statements are
compiled once per process (`compiled(name)`); the feature list's is built per request from a
`FeatureFilter`. A statement that names a column the schema no longer has fails when it is built, so the
reader's tests catch a rename before anything runs.
"""

from __future__ import annotations

import functools
import re
from dataclasses import dataclass
from typing import Any, Callable, Literal, cast

import duckdb_engine
import sqlalchemy as sa
from sqlalchemy.sql.compiler import SQLCompiler

from pipelines.atlas.schema import (
    UNEXPLAINED,
    clip_mels,
    clip_phones,
    clip_words,
    clips,
    density_histogram,
    examples,
    feature_categories,
    feature_language_effects,
    feature_languages,
    feature_map,
    feature_pages,
    feature_parallel,
    features,
    frame_codes,
    run,
    similar_windows,
    window_postings,
)

_DIALECT = duckdb_engine.Dialect(paramstyle="numeric_dollar")
"""Statements compile to DuckDB SQL with `$1, $2, ...` placeholders."""

SortKey = Literal["id", "density_desc", "density_asc", "label_score", "selectivity", "max_act"]
ORDER_BY: dict[str, tuple[sa.ColumnElement, ...]] = {
    "id": (features.c.id,),
    "density_desc": (features.c.density.desc(), features.c.id),
    "density_asc": (features.c.density.asc(), features.c.id),
    "label_score": (features.c.label_score.desc(), features.c.id),
    "selectivity": (features.c.top_language_selectivity.desc(), features.c.id),
    "max_act": (features.c.max_act.desc(), features.c.id),
}
"""The feature list's sort orders (the only ordering a request can choose)."""

SUMMARY_COLUMNS = (
    "id",
    "density",
    "max_act",
    "label",
    "label_score",
    "top_language",
    "top_language_selectivity",
    "top_category",
    "top_category_selectivity",
    "label_type",
    "label_precision",
    "label_recall",
    "language_vs_speaker",
    "stability",
    "runner_ups",
)
"""The `features` columns of a feature-list row."""


@dataclass(frozen=True)
class FeatureFilter:
    """A feature-list query; the defaults filter nothing."""

    q: str = ""
    """A feature id (exact match listed first) or text found in the label or the top words."""
    language: str = ""
    """Top language, '' for any."""
    category: str = ""
    """Top category, '' for any."""
    label_type: str = ""
    """Feature type (`schema.LABEL_TYPES`), '' for any."""
    min_density: float = 0.0
    max_density: float = 1.0
    min_score: float = 0.0
    """Lowest label score."""
    min_selectivity: float = 0.0
    """Lowest selectivity of the top language."""
    include_dead: bool = False
    """List features that never fire (density 0) too."""
    sort: SortKey = "id"
    limit: int = 50
    offset: int = 0


@functools.cache
def compiled(name: str) -> Compiled:
    """The fixed statement `name`, compiled once per process."""
    return compile_statement(_STATEMENTS[name]())


@dataclass(frozen=True)
class Compiled:
    """SQL text with `$n` placeholders, the parameter names in placeholder order, and the values bound at
    build time (literals in the statement); named parameters are supplied per call."""

    sql: str
    order: tuple[str, ...]
    bound: dict[str, object]

    def values(self, params: dict[str, object]) -> list[object]:
        return [params[name] if name in params else self.bound[name] for name in self.order]


def compile_statement(statement: sa.ClauseElement) -> Compiled:
    sql = cast(SQLCompiler, statement.compile(dialect=_DIALECT))
    return Compiled(str(sql), tuple(sql.positiontup or ()), dict(sql.params))


def _in_block(column: sa.ColumnElement) -> sa.ColumnElement[bool]:
    return column.between(sa.bindparam("lo"), sa.bindparam("hi"))


def _block_features() -> sa.Select:
    return sa.select(features).where(_in_block(features.c.id)).order_by(features.c.id)


def _block_examples() -> sa.Select:
    c = examples.c
    return sa.select(examples).where(_in_block(c.feature_id)).order_by(c.feature_id, c.kind.desc(), c.rank)


def _block_shares(table: sa.Table, order: sa.ColumnElement) -> sa.Select:
    return sa.select(table).where(_in_block(table.c.feature_id)).order_by(table.c.feature_id, order.desc())


def _block_parallel() -> sa.Select:
    c = feature_parallel.c
    return (
        sa.select(feature_parallel).where(_in_block(c.feature_id)).order_by(c.feature_id, c.rank, c.clip_id)
    )


def _clip_top_features() -> sa.Select:
    """Each feature's strongest example on one clip (with the feature's type), strongest features first."""
    rowid: sa.ColumnClause = sa.literal_column("rowid")
    best = (
        sa.select(sa.func.arg_max(rowid, examples.c.peak_act).label("row"))
        .where(examples.c.clip_id == sa.bindparam("clip_id"))
        .group_by(examples.c.feature_id)
        .order_by(sa.func.max(examples.c.peak_act).desc(), examples.c.feature_id)
        .limit(sa.bindparam("limit"))
        .scalar_subquery()
    )
    c = examples.c
    return (
        sa.select(
            c.feature_id,
            c.kind,
            c.start_frame,
            c.end_frame,
            c.peak_frame,
            c.peak_act,
            c.acts,
            features.c.label_type,
        )
        .select_from(examples.join(features, features.c.id == c.feature_id))
        .where(sa.literal_column("examples.rowid").in_(best))
        .order_by(c.peak_act.desc(), c.feature_id)
    )


def _type_counts() -> sa.Select:
    """Live features per type (typed ones only: an atlas without scored labels has none)."""
    c = features.c
    return (
        sa.select(c.label_type, sa.func.count())
        .where(c.density > 0, c.label_type != "")
        .group_by(c.label_type)
        .order_by(c.label_type)
    )


def _best_of_types() -> sa.Select:
    """The `per_type` best-scored live features of every explained type, as feature-list rows, by type and
    score (an unexplained feature's label is only its best guess)."""
    c = features.c
    rank = sa.func.row_number().over(partition_by=c.label_type, order_by=(c.label_score.desc(), c.id))
    ranked = (
        sa.select(*(c[name] for name in SUMMARY_COLUMNS), rank.label("type_rank"))
        .where(c.density > 0, c.label_type != "", c.label_type != UNEXPLAINED)
        .subquery()
    )
    return (
        sa.select(*(ranked.c[name] for name in SUMMARY_COLUMNS))
        .where(ranked.c.type_rank <= sa.bindparam("per_type"))
        .order_by(ranked.c.label_type, ranked.c.type_rank)
    )


def _window_candidates() -> sa.Select:
    """The first `max_rank` postings of each of the `features` (a list): the candidate windows of a query."""
    c = window_postings.c
    return sa.select(c.window_id, c.feature_id, c.weight).where(
        c.feature_id == sa.any_(sa.bindparam("features")), c.rank < sa.bindparam("max_rank")
    )


def _window_scores() -> sa.Select:
    """Every window's dot product with a query (`features`, `weights`: two lists), from all the postings: the
    exhaustive reference the index is measured against."""
    query = sa.select(
        sa.func.unnest(sa.bindparam("features")).label("feature_id"),
        sa.func.unnest(sa.bindparam("weights")).label("weight"),
    ).subquery("query")
    c, w = window_postings.c, similar_windows.c
    scores = (
        sa.select(c.window_id, sa.func.sum(c.weight * query.c.weight).label("score"))
        .join_from(window_postings, query, c.feature_id == query.c.feature_id)
        .group_by(c.window_id)
        .subquery("scores")
    )
    return sa.select(w.window_id, w.clip_id, w.start_frame, w.end_frame, scores.c.score).join_from(
        similar_windows, scores, w.window_id == scores.c.window_id
    )


def _feature_map() -> sa.Select:
    c = features.c
    return (
        sa.select(
            feature_map.c.feature_id,
            feature_map.c.x,
            feature_map.c.y,
            c.label,
            c.label_type,
            c.top_language,
            c.density,
        )
        .join_from(feature_map, features, features.c.id == feature_map.c.feature_id)
        .order_by(feature_map.c.feature_id)
    )


def _below(column: sa.ColumnElement) -> sa.ColumnElement[bool]:
    return column < sa.bindparam("d_sae")


_STATEMENTS: dict[str, Callable[[], Any]] = {
    "schema_version": lambda: sa.select(run.c.value).where(run.c.key == "schema_version"),
    "run": lambda: sa.select(run.c.key, run.c.value).order_by(run.c.key),
    "clips": lambda: sa.select(clips).order_by(clips.c.id),
    "clip_words": lambda: sa.select(
        clip_words.c.clip_id, clip_words.c.word, clip_words.c.start, clip_words.c.end
    ).order_by(clip_words.c.clip_id, clip_words.c.idx),
    "clip_phones": lambda: sa.select(
        clip_phones.c.clip_id, clip_phones.c.phone, clip_phones.c.start, clip_phones.c.end
    ).order_by(clip_phones.c.clip_id, clip_phones.c.idx),
    "feature_index": lambda: sa.select(features.c.id, features.c.label, features.c.density).order_by(
        features.c.id
    ),
    "stored_page_count": lambda: sa.select(sa.func.count()).select_from(feature_pages),
    "density_histogram": lambda: sa.select(
        density_histogram.c.log10_lo, density_histogram.c.log10_hi, density_histogram.c.n_features
    ).order_by(density_histogram.c.bin),
    "block_features": _block_features,
    "block_examples": _block_examples,
    "block_languages": lambda: _block_shares(feature_languages, feature_languages.c.act_share),
    "block_categories": lambda: _block_shares(feature_categories, feature_categories.c.act_share),
    "block_effects": lambda: _block_shares(feature_language_effects, feature_language_effects.c.effect),
    "block_parallel": _block_parallel,
    "clip_top_features": _clip_top_features,
    "type_counts": _type_counts,
    "best_of_types": _best_of_types,
    "clip_mel": lambda: sa.select(clip_mels.c.n_mels, clip_mels.c.n_frames, clip_mels.c.mel).where(
        clip_mels.c.clip_id == sa.bindparam("clip_id")
    ),
    "labelled_features": lambda: sa.select(features.c.id, features.c.label).where(features.c.label != ""),
    "typed_features": lambda: sa.select(features.c.id, features.c.label_type).where(
        features.c.label_type != ""
    ),
    "typical_activations": lambda: sa.select(features.c.id, features.c.mean_act).where(_below(features.c.id)),
    "language_effects": lambda: sa.select(
        feature_language_effects.c.feature_id,
        feature_language_effects.c.language,
        feature_language_effects.c.effect,
    ).where(_below(feature_language_effects.c.feature_id)),
    "frame_codes": lambda: sa.select(
        frame_codes.c.n_frames, frame_codes.c.k, frame_codes.c.feature_ids, frame_codes.c.acts
    ).where(frame_codes.c.clip_id == sa.bindparam("clip_id")),
    "window_candidates": _window_candidates,
    "window_sketches": lambda: sa.select(similar_windows).where(
        similar_windows.c.window_id == sa.any_(sa.bindparam("ids"))
    ),
    "window_scores": _window_scores,
    "feature_map": _feature_map,
    "user_views": lambda: sa.text(
        "SELECT view_name FROM duckdb_views() WHERE database_name = 'atlas' AND NOT internal"
    ),
    "user_macros": lambda: sa.text(
        "SELECT function_name FROM duckdb_functions() WHERE database_name = 'atlas' "
        "AND function_type IN ('macro', 'table_macro')"
    ),
}


@dataclass(frozen=True)
class _ListShape:
    """What decides the SQL text of a feature-list query (the values are parameters): one compile each."""

    include_dead: bool
    search: bool
    exact_id: bool
    language: bool
    category: bool
    label_type: bool
    sort: SortKey


def _condition(shape: _ListShape) -> sa.ColumnElement[bool]:
    c = features.c
    where: list[sa.ColumnElement[bool]] = []
    if not shape.include_dead:
        where.append(c.density > 0)
    if shape.search:
        text = sa.func.lower(c.label.concat(" ").concat(sa.func.array_to_string(c.top_words, " ")))
        found = sa.func.contains(text, sa.bindparam("needle"))
        where.append(sa.or_(found, c.id == sa.bindparam("exact_id")) if shape.exact_id else found)
    if shape.language:
        where.append(c.top_language == sa.bindparam("language"))
    if shape.category:
        where.append(c.top_category == sa.bindparam("category"))
    if shape.label_type:
        where.append(c.label_type == sa.bindparam("label_type"))
    where += [
        c.density >= sa.bindparam("min_density"),
        c.density <= sa.bindparam("max_density"),
        c.label_score >= sa.bindparam("min_score"),
        c.top_language_selectivity >= sa.bindparam("min_selectivity"),
    ]
    return sa.and_(sa.true(), *where)


@functools.cache
def _feature_list_statements(shape: _ListShape) -> tuple[Compiled, Compiled]:
    condition = _condition(shape)
    order = ORDER_BY[shape.sort]
    if shape.exact_id:
        order = ((features.c.id == sa.bindparam("exact_id")).desc(), *order)
    page = (
        sa.select(*(features.c[name] for name in SUMMARY_COLUMNS))
        .where(condition)
        .order_by(*order)
        .limit(sa.bindparam("limit"))
        .offset(sa.bindparam("offset"))
    )
    count = sa.select(sa.func.count()).select_from(features).where(condition)
    return compile_statement(count), compile_statement(page)


def feature_list(spec: FeatureFilter) -> tuple[Compiled, Compiled, dict[str, object]]:
    """(count of matches, the requested page of summary rows, their parameters) for the feature list.

    The search text matches the label or top words (case-insensitive); text that is a whole number also
    matches that feature id, which is listed first."""
    needle = spec.q.strip().lower()
    exact_id = int(needle) if re.fullmatch(r"[0-9]{1,9}", needle) else None
    shape = _ListShape(
        spec.include_dead,
        bool(needle),
        exact_id is not None,
        bool(spec.language),
        bool(spec.category),
        bool(spec.label_type),
        spec.sort,
    )
    params: dict[str, object] = {
        "needle": needle,
        "exact_id": exact_id,
        "language": spec.language,
        "category": spec.category,
        "label_type": spec.label_type,
        "min_density": spec.min_density,
        "max_density": spec.max_density,
        "min_score": spec.min_score,
        "min_selectivity": spec.min_selectivity,
        "limit": spec.limit,
        "offset": spec.offset,
    }
    count, page = _feature_list_statements(shape)
    return count, page, params


PAGE_BATCHES = (1, 2, 4, 8, 16, 32, 64, 128)
"""Sizes of the stored-page lookups: a batch is padded (its last id repeated) to the next one, so a handful of
statements serve every batch."""


@functools.cache
def stored_pages(size: int) -> Compiled:
    """`size` stored pages by feature id: `feature_id IN ($1, ..., $size)`, parameters `id0`, `id1`, ...

    DuckDB filters the scan with the list (its optimizer turns it into a mark join), so one query of 32 pages
    costs ~3x one page's; a list parameter (`= ANY($1)`) or a join with `unnest` measured the same."""
    if size not in PAGE_BATCHES:
        raise ValueError(f"stored-page batches come in sizes {PAGE_BATCHES}, not {size}")
    c = feature_pages.c
    ids: list[sa.BindParameter[int]] = [sa.bindparam(f"id{i}") for i in range(size)]
    return compile_statement(sa.select(c.feature_id, c.page).where(c.feature_id.in_(ids)))


def whole_table(table: sa.Table) -> Compiled:
    return compile_statement(sa.select(table))
