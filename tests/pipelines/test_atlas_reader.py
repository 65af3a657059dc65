"""The atlas reader: every table and query through the SQLAlchemy-built statements, on a file written by the
real writer, and the lock-down that keeps a shared atlas file from reaching out."""

from __future__ import annotations

import shutil
from pathlib import Path

import duckdb
import numpy as np
import pytest

from pipelines.analysis.taxonomy import TYPES
from pipelines.atlas import queries, schema
from pipelines.atlas.reader import AtlasFileError, AtlasReader, FeatureFilter, feature_row
from tests.fixtures.synthetic_atlas import write_synthetic_atlas

N_FEATURES = 96


@pytest.fixture(scope="module")
def atlas(tmp_path_factory: pytest.TempPathFactory) -> Path:
    path = tmp_path_factory.mktemp("atlas") / "atlas.duckdb"
    return write_synthetic_atlas(path, n_features=N_FEATURES, n_clips=14, seed=2)


@pytest.fixture(scope="module")
def reader(atlas: Path):
    with AtlasReader.open(atlas) as opened:
        yield opened


def plain(atlas: Path, sql: str, *params: object) -> list[tuple]:
    with duckdb.connect(str(atlas), read_only=True) as con:
        return con.execute(sql, list(params)).fetchall()


def test_every_fixed_statement_builds_from_the_schema() -> None:
    for name in queries._STATEMENTS:
        assert queries.compiled(name).sql.strip(), name


def test_every_table_reads_with_the_schema_columns(reader: AtlasReader, atlas: Path) -> None:
    for name, table in schema.metadata.tables.items():
        got = reader.table(name)
        assert got.column_names == [c.name for c in table.columns], name
        ((count,),) = plain(atlas, f'SELECT count(*) FROM "{name}"')
        assert got.num_rows == count, name


def test_whole_atlas_reads_match_plain_sql(reader: AtlasReader, atlas: Path) -> None:
    run = reader.run_metadata()
    assert run["schema_version"] == schema.SCHEMA_VERSION and run["n_features"] == N_FEATURES
    assert [c["id"] for c in reader.clips()] == [
        r[0] for r in plain(atlas, "SELECT id FROM clips ORDER BY id")
    ]
    ids, labels, density = reader.feature_index()
    assert ids.tolist() == list(range(N_FEATURES)) and len(labels) == len(density) == N_FEATURES
    words = reader.clip_words()
    assert sum(map(len, words.values())) == plain(atlas, "SELECT count(*) FROM clip_words")[0][0]
    assert len(reader.density_histogram()) == plain(atlas, "SELECT count(*) FROM density_histogram")[0][0]


def test_feature_block_holds_exactly_its_range(reader: AtlasReader, atlas: Path) -> None:
    block = reader.feature_block(10, 41)
    assert block.features.column("id").to_pylist() == list(range(10, 42))
    ((n_examples,),) = plain(atlas, "SELECT count(*) FROM examples WHERE feature_id BETWEEN 10 AND 41")
    assert block.examples.num_rows == n_examples
    feature_ids = block.examples.column("feature_id").to_numpy()
    assert (np.diff(feature_ids) >= 0).all()


def test_feature_list_filters_and_counts(reader: AtlasReader, atlas: Path) -> None:
    total, rows = reader.list_features(FeatureFilter(sort="density_desc", limit=5))
    ((live,),) = plain(atlas, "SELECT count(*) FROM features WHERE density > 0")
    assert total == live and len(rows) == 5
    assert [r["density"] for r in rows] == sorted((r["density"] for r in rows), reverse=True)
    total, rows = reader.list_features(FeatureFilter(q="7", include_dead=True))
    assert rows[0]["id"] == 7  # an exact id comes first


def test_steering_reads(reader: AtlasReader, atlas: Path) -> None:
    typical = reader.typical_activations(N_FEATURES)
    assert typical is not None and typical.shape == (N_FEATURES,)
    mean_acts = dict(plain(atlas, "SELECT id, mean_act FROM features"))
    assert np.allclose(typical, [mean_acts[i] for i in range(N_FEATURES)])
    assert reader.typical_activations(4) is not None and reader.typical_activations(4).shape == (4,)
    labelled = plain(atlas, "SELECT count(*) FROM features WHERE label <> ''")[0][0]
    assert len(reader.feature_labels()) == labelled


def _tampered(atlas: Path, tmp_path: Path, *statements: str) -> Path:
    copy = tmp_path / "tampered.duckdb"
    shutil.copy(atlas, copy)
    with duckdb.connect(str(copy)) as con:
        for statement in statements:
            con.execute(statement)
    return copy


def test_an_atlas_with_a_file_reading_view_is_refused(atlas: Path, tmp_path: Path) -> None:
    secret = tmp_path / "secret.txt"
    secret.write_text("server secret")
    hostile = _tampered(
        atlas,
        tmp_path,
        "DROP TABLE run",
        f"CREATE VIEW run AS SELECT 'schema_version' AS key, content AS value FROM read_text('{secret}')",
    )
    with pytest.raises(AtlasFileError, match="views or macros"):
        AtlasReader.open(hostile)


def test_an_atlas_with_a_macro_is_refused(atlas: Path, tmp_path: Path) -> None:
    hostile = _tampered(atlas, tmp_path, "CREATE MACRO plus_one(x) AS x + 1")
    with pytest.raises(AtlasFileError, match="views or macros"):
        AtlasReader.open(hostile)


def test_queries_cannot_reach_files_or_change_settings(reader: AtlasReader, tmp_path: Path) -> None:
    (tmp_path / "x.txt").write_text("x")
    with pytest.raises(duckdb.Error):
        reader.cursor().execute(f"SELECT * FROM read_text('{tmp_path / 'x.txt'}')").fetchall()
    with pytest.raises(duckdb.Error):
        reader.cursor().execute("SET enable_external_access = true")


def test_other_schema_versions_and_broken_files_are_refused(atlas: Path, tmp_path: Path) -> None:
    old = _tampered(atlas, tmp_path, "UPDATE run SET value = '0' WHERE key = 'schema_version'")
    with pytest.raises(AtlasFileError, match="schema version 0"):
        AtlasReader.open(old)
    half = tmp_path / "half.duckdb"
    half.write_bytes(atlas.read_bytes()[: atlas.stat().st_size // 3])
    with pytest.raises(AtlasFileError):
        AtlasReader.open(half)


def test_an_atlas_of_the_previous_schema_is_told_to_rebuild(atlas: Path, tmp_path: Path) -> None:
    old = _tampered(  # what a version-4 build wrote: no frame codes, similar-moment index or feature map
        atlas,
        tmp_path,
        "DROP TABLE frame_codes",
        "DROP TABLE similar_windows",
        "DROP TABLE window_postings",
        "DROP TABLE feature_map",
        "UPDATE run SET value = '4' WHERE key = 'schema_version'",
    )
    with pytest.raises(AtlasFileError, match="schema version 4, this code reads 5: rebuild it"):
        AtlasReader.open(old)


def test_phone_intervals_read_back(reader: AtlasReader, atlas: Path) -> None:
    phones = reader.clip_phones()
    rows = plain(atlas, 'SELECT clip_id, phone, start, "end" FROM clip_phones ORDER BY clip_id, idx')
    assert rows and [(c, *p) for c, ps in sorted(phones.items()) for p in ps] == rows
    for intervals in phones.values():
        starts = [s for _, s, _ in intervals]
        assert starts == sorted(starts) and all(e > s for _, s, e in intervals)


def test_feature_block_holds_its_parallel_rows(reader: AtlasReader, atlas: Path) -> None:
    block = reader.feature_block(10, 41)
    query = "SELECT feature_id, rank, clip_id FROM feature_parallel WHERE feature_id BETWEEN 10 AND 41"
    expected = plain(atlas, query + " ORDER BY feature_id, rank, clip_id")
    got = block.parallel.select(["feature_id", "rank", "clip_id"]).to_pylist()
    assert expected and [tuple(r.values()) for r in got] == expected
    for row in block.parallel.to_pylist():
        trace = np.frombuffer(row["trace"], "<f2")
        assert 0 < len(trace) <= 150 and float(trace.max()) == pytest.approx(row["peak"], rel=1e-3)
    scores = block.features.column("cross_lingual").to_pylist()
    with_rows = {r[0] for r in expected}
    assert all((s is not None) == (f in with_rows) for f, s in zip(range(10, 42), scores))
    assert all(0.0 <= s <= 1.0 for s in scores if s is not None)


def test_clip_top_features_carry_the_type(reader: AtlasReader, atlas: Path) -> None:
    rows = reader.clip_top_features(0, 40)
    types = dict(plain(atlas, "SELECT id, label_type FROM features"))
    assert rows and all(row[7] == types[row[0]] for row in rows)


def test_label_types_are_the_analysis_types() -> None:
    assert schema.LABEL_TYPES == TYPES


def test_taxonomy_reads_match_plain_sql(reader: AtlasReader, atlas: Path) -> None:
    live = "FROM features WHERE density > 0 AND label_type <> ''"
    assert reader.type_counts() == dict(plain(atlas, f"SELECT label_type, count(*) {live} GROUP BY 1"))
    best = reader.best_of_types(3)
    kinds = {k for (k,) in plain(atlas, f"SELECT DISTINCT label_type {live} AND label_type <> 'unexplained'")}
    assert set(best) == kinds
    for kind, rows in best.items():
        expected = plain(
            atlas, f"SELECT id {live} AND label_type = ? ORDER BY label_score DESC, id LIMIT 3", kind
        )
        assert [r["id"] for r in rows] == [i for (i,) in expected]
        assert all(isinstance(r["runner_ups"], list) for r in rows)


def test_feature_list_filters_by_type(reader: AtlasReader, atlas: Path) -> None:
    total, rows = reader.list_features(FeatureFilter(label_type="lexical", sort="label_score", limit=500))
    ((n,),) = plain(atlas, "SELECT count(*) FROM features WHERE density > 0 AND label_type = 'lexical'")
    assert total == len(rows) == n > 0 and {r["label_type"] for r in rows} == {"lexical"}
    assert [r["label_score"] for r in rows] == sorted((r["label_score"] for r in rows), reverse=True)


def test_feature_rows_decode_json_and_nulls() -> None:
    row = feature_row(
        {"id": 1, "stability": float("nan"), "label_recall": 0.5, "runner_ups": '[{"label": "x"}]'}
    )
    assert row == {"id": 1, "stability": None, "label_recall": 0.5, "runner_ups": [{"label": "x"}]}


def test_stored_pages_read_back(reader: AtlasReader) -> None:
    import gzip

    assert reader.stored_page_count() == N_FEATURES
    pages = reader.stored_pages([0, 7, N_FEATURES + 3])
    assert sorted(pages) == [0, 7]
    assert gzip.decompress(pages[7]).decode().startswith("<!doctype html>")
    assert 'Feature <span class="num">#7</span>' in gzip.decompress(pages[7]).decode()
