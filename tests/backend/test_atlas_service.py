"""Equivalence: the block-cached service against plain per-feature queries, on both sides of block edges."""

from __future__ import annotations

import math
from pathlib import Path

import duckdb
import pytest

from backend.services.provider import AtlasProvider
from pipelines.atlas.reader import FeatureFilter as FilterSpec
from pipelines.atlas.schema import FRAME_SECONDS
from tests.backend.conftest import BLOCK, N_FEATURES, settings_for


@pytest.fixture(scope="module")
def service(atlas_path: Path):
    return AtlasProvider(settings_for(atlas_path)).current()


@pytest.fixture(scope="module")
def con(atlas_path: Path):
    with duckdb.connect(str(atlas_path), read_only=True) as connection:
        yield connection


def rows(con, sql: str, *params) -> list[dict]:
    cursor = con.execute(sql, list(params))
    names = [d[0] for d in cursor.description]
    return [dict(zip(names, r)) for r in cursor.fetchall()]


def close(a: float, b: float) -> bool:
    return math.isclose(a, b, rel_tol=1e-6, abs_tol=1e-9)


@pytest.mark.parametrize("feature_id", [0, 1, BLOCK - 1, BLOCK, BLOCK + 1, 2 * BLOCK + 17, N_FEATURES - 1])
def test_feature_matches_plain_queries(service, con, feature_id: int) -> None:
    got = service.feature(feature_id)
    (row,) = rows(con, "SELECT * FROM features WHERE id = ?", feature_id)
    assert (
        got.label == row["label"]
        and close(got.density, row["density"])
        and close(got.max_act, row["max_act"])
    )
    assert got.activation_histogram.counts == row["hist_counts"]
    assert [n.id for n in got.neighbours] == [i for i in row["neighbours"] if i != feature_id]

    examples = rows(con, "SELECT * FROM examples WHERE feature_id = ? ORDER BY kind DESC, rank", feature_id)
    mine = got.top_examples + got.quantile_examples
    assert len(mine) == len(examples)
    for ex, ref in zip(mine, examples):
        assert (ex.kind, ex.rank, ex.clip_id, ex.start_frame, ex.end_frame, ex.peak_frame) == (
            ref["kind"],
            ref["rank"],
            ref["clip_id"],
            ref["start_frame"],
            ref["end_frame"],
            ref["peak_frame"],
        )
        assert all(close(a, b) for a, b in zip(ex.acts, ref["acts"])) and len(ex.acts) == len(ref["acts"])
        start, end = ref["start_frame"] * FRAME_SECONDS, ref["end_frame"] * FRAME_SECONDS
        words = rows(
            con,
            'SELECT word FROM clip_words WHERE clip_id = ? AND "end" > ? AND start < ? ORDER BY idx',
            ref["clip_id"],
            start,
            end,
        )
        assert [w.word for w in ex.words] == [w["word"] for w in words]

    languages = rows(
        con, "SELECT * FROM feature_languages WHERE feature_id = ? ORDER BY act_share DESC", feature_id
    )
    assert [s.name for s in got.languages] == [r["language"] for r in languages]
    effects = rows(
        con, "SELECT * FROM feature_language_effects WHERE feature_id = ? ORDER BY effect DESC", feature_id
    )
    assert [e.language for e in got.language_effects] == [r["language"] for r in effects]


@pytest.mark.parametrize(
    "spec",
    [
        FilterSpec(),
        FilterSpec(include_dead=True, sort="density_asc", limit=500),
        FilterSpec(language="fr", min_density=0.001, sort="label_score", limit=500),
        FilterSpec(label_type="phonetic", sort="label_score", limit=500),
        FilterSpec(
            category="speech", max_density=0.01, min_score=0.3, min_selectivity=1.5, limit=500, offset=3
        ),
    ],
)
def test_feature_list_matches_plain_python(service, con, spec: FilterSpec) -> None:
    every = rows(con, "SELECT * FROM features ORDER BY id")
    keep = [
        f
        for f in every
        if (spec.include_dead or f["density"] > 0)
        and (not spec.language or f["top_language"] == spec.language)
        and (not spec.category or f["top_category"] == spec.category)
        and (not spec.label_type or f["label_type"] == spec.label_type)
        and spec.min_density <= f["density"] <= spec.max_density
        and f["label_score"] >= spec.min_score
        and f["top_language_selectivity"] >= spec.min_selectivity
    ]
    key = {
        "id": lambda f: f["id"],
        "density_asc": lambda f: (f["density"], f["id"]),
        "label_score": lambda f: (-f["label_score"], f["id"]),
    }[spec.sort]
    keep.sort(key=key)
    page = service.list_features(spec)
    assert page.total == len(keep)
    assert [i.id for i in page.items] == [f["id"] for f in keep[spec.offset : spec.offset + spec.limit]]


def test_queries_in_any_order_share_one_cursor_per_thread(atlas_path: Path) -> None:
    """Every query reads its result completely, or DuckDB refuses the thread's next one (regression)."""
    service = AtlasProvider(settings_for(atlas_path)).current()
    service.mel(0)
    service.list_features(FilterSpec(q="speech"))
    service.clip_detail(1)
    assert service.feature(N_FEATURES - 1).id == N_FEATURES - 1  # loads a new block after all of those
