"""The atlas file: schema round trip, the synthetic atlas, and the atomic swap under a concurrent reader."""

from __future__ import annotations

import json
import multiprocessing as mp
from pathlib import Path

import duckdb
import numpy as np
import pyarrow as pa
import pytest
import sqlalchemy as sa

from pipelines.annotate.frames import FrameAnnotations
from pipelines.atlas import schema
from pipelines.atlas.build import phone_table
from pipelines.atlas.tables import density_histogram_table
from pipelines.atlas.writer import write_atlas
from pipelines.audio import decode_audio
from tests.fixtures.synthetic_atlas import write_synthetic_atlas


@pytest.fixture(scope="module")
def synthetic(tmp_path_factory: pytest.TempPathFactory) -> Path:
    path = tmp_path_factory.mktemp("atlas") / "atlas.duckdb"
    return write_synthetic_atlas(path, n_features=96, n_clips=14, seed=1)


def read_all(path: Path) -> dict[str, list[dict]]:
    """Every row of every schema table, read through the SQLAlchemy tables on a read-only engine."""
    engine = sa.create_engine(f"duckdb:///{path}", connect_args={"read_only": True})
    try:
        with engine.connect() as con:
            return {
                name: [dict(r._mapping) for r in con.execute(sa.select(table))]
                for name, table in schema.metadata.tables.items()
            }
    finally:
        engine.dispose()


def test_schema_round_trip_of_every_table(synthetic: Path):
    rows = read_all(synthetic)
    assert set(rows) == set(schema.metadata.tables)
    for name, table_rows in rows.items():
        assert table_rows, f"table {name} is empty"
    features = rows["features"]
    assert [f["id"] for f in features] == list(range(96))
    live = [f for f in features if f["density"] > 0]
    assert all(f["label"] and f["label_source"] == "auto" for f in live)
    assert all(len(f["hist_edges"]) == len(f["hist_counts"]) + 1 for f in live)
    assert all(f["id"] not in f["neighbours"] for f in features)
    examples = rows["examples"]
    keys = [(e["feature_id"], e["kind"] != "top", e["rank"]) for e in examples]
    assert keys == sorted(keys), "examples are sorted by feature, then top before quantile, then rank"
    clips = {c["id"]: c for c in rows["clips"]}
    for e in examples:
        assert len(e["acts"]) == e["end_frame"] - e["start_frame"]
        assert e["start_frame"] <= e["peak_frame"] < e["end_frame"] <= clips[e["clip_id"]]["n_frames"]
    for m in rows["clip_mels"]:
        assert len(m["mel"]) == m["n_mels"] * m["n_frames"]
        assert m["n_frames"] == 2 * clips[m["clip_id"]]["n_frames"]
    run = {r["key"]: json.loads(r["value"]) for r in rows["run"]}
    assert run["schema_version"] == schema.SCHEMA_VERSION
    assert {"model", "layer", "sae", "metrics", "corpus", "n_features"} <= set(run)
    assert sum(h["n_features"] for h in rows["density_histogram"]) == len(live)


def test_scored_labels_are_stored_with_nan_as_null(synthetic: Path):
    rows = read_all(synthetic)
    run = {r["key"]: json.loads(r["value"]) for r in rows["run"]}
    features = rows["features"]
    live = [f for f in features if f["density"] > 0]
    summary = run["interpretation"]
    assert {"threshold", "heldout_frames", "heldout_clips", "control_counts", "explained_share"} <= set(
        summary
    )
    assert summary["counts"] == {t: sum(f["label_type"] == t for f in live) for t in schema.LABEL_TYPES}
    assert all(f["label_type"] == "" and f["label_precision"] is None for f in features if f["density"] == 0)
    assert all(f["label_type"] in schema.LABEL_TYPES and f["label_recall"] is not None for f in live)
    language = [f for f in live if f["label_type"] == "language"]
    assert language and all(f["language_vs_speaker"] is not None for f in language)
    assert all(f["language_vs_speaker"] is None for f in features if f["label_type"] != "language")
    runner_ups = [json.loads(f["runner_ups"]) for f in live]
    assert any(runner_ups) and all(
        r["label"] and r["type"] in schema.LABEL_TYPES for rs in runner_ups for r in rs
    )


def test_an_analysis_without_interpretation_still_builds(tmp_path: Path):
    path = write_synthetic_atlas(tmp_path / "atlas.duckdb", n_features=24, n_clips=6, interpretation=False)
    rows = read_all(path)
    assert "interpretation" not in {r["key"] for r in rows["run"]}
    assert all(f["label"] for f in rows["features"] if f["density"] > 0)
    for f in rows["features"]:
        assert f["label_type"] == "" and f["runner_ups"] == "[]"
        assert f["label_precision"] is f["label_recall"] is f["language_vs_speaker"] is f["stability"] is None


def test_an_analysis_without_annotations_or_parallel_traces_still_builds(tmp_path: Path):
    path = write_synthetic_atlas(
        tmp_path / "atlas.duckdb", n_features=24, n_clips=6, annotations=False, parallel=False
    )
    rows = read_all(path)
    assert rows["clip_phones"] == [] and rows["feature_parallel"] == []
    assert all(f["cross_lingual"] is None for f in rows["features"])


def test_phone_intervals_are_runs_of_equal_phone_codes():
    vocab = {"phone": ["a", "s", "t"], "word": ["casa", "tu"]}
    #        clip 0: frames 0..7                  clip 1: frames 0..3 stored out of order, frame 2 missing
    clip_row = [0, 0, 0, 0, 0, 0, 0, 0, 1, 1, 1]
    frame = [0, 1, 2, 3, 4, 5, 6, 7, 3, 0, 1]
    phone = [-1, 1, 1, 0, 0, 0, 0, 2, 0, 2, 2]
    word = [-1, 0, 0, 0, 0, 1, 1, 1, 1, 1, 1]  # the same phone across a word boundary is two intervals
    annotations = FrameAnnotations(clip_row, frame, {"phone": phone, "word": word}, vocab)
    table = phone_table(annotations).to_pylist()
    got = [(r["clip_id"], r["idx"], r["phone"], round(r["start"], 3), round(r["end"], 3)) for r in table]
    assert got == [
        (0, 0, "s", 0.02, 0.06),
        (0, 1, "a", 0.06, 0.1),
        (0, 2, "a", 0.1, 0.14),
        (0, 3, "t", 0.14, 0.16),
        (1, 0, "t", 0.0, 0.04),
        (1, 1, "a", 0.06, 0.08),
    ]
    assert phone_table(None).num_rows == 0


def test_parallel_traces_are_stored_per_feature_rank_and_clip(synthetic: Path):
    rows = read_all(synthetic)
    parallel = rows["feature_parallel"]
    keys = [(r["feature_id"], r["rank"]) for r in parallel]
    assert keys and keys == sorted(keys), "sorted by feature, then group rank"
    assert len({(r["feature_id"], r["rank"], r["clip_id"]) for r in parallel}) == len(parallel)
    clips = {c["id"]: c for c in rows["clips"]}
    for r in parallel:
        trace = np.frombuffer(r["trace"], "<f2")
        assert r["group_key"] == clips[r["clip_id"]]["group_key"] != ""
        assert len(trace) == -(-clips[r["clip_id"]]["n_frames"] // r["frames_per_point"])
        assert float(trace.max()) == pytest.approx(r["peak"], rel=1e-3)
    with_rows = {r["feature_id"] for r in parallel}
    for f in rows["features"]:
        assert (f["cross_lingual"] is not None) == (f["id"] in with_rows)


def test_synthetic_clips_point_at_real_audio(synthetic: Path):
    con = duckdb.connect(str(synthetic), read_only=True)
    try:
        clips = con.execute("SELECT audio_path, duration FROM clips").fetchall()
    finally:
        con.close()
    for path, duration in clips[:4] + clips[-2:]:
        audio = decode_audio(Path(path))
        assert len(audio) / 16000 == pytest.approx(duration, abs=0.01)


def test_density_histogram_bins_cover_live_features():
    table = density_histogram_table(np.array([0.0, 1e-3, 0.01, 0.5, 1.0]))
    assert sum(table.column("n_features").to_pylist()) == 4
    assert table.column("log10_lo").to_pylist()[0] == -3.0
    assert table.column("log10_hi").to_pylist()[-1] == 0.0
    assert density_histogram_table(np.zeros(3)).num_rows == 0


def _reader(path: str, ready, go, out) -> None:
    """Hold a read-only connection on the old atlas across the swap, then report what it sees."""
    con = duckdb.connect(path, read_only=True)
    before = con.execute("SELECT count(*) FROM features").fetchone()[0]
    ready.set()
    go.wait(60)
    after = con.execute("SELECT count(*) FROM features").fetchone()[0]
    con.close()
    out.put((before, after))


def test_swap_keeps_an_open_reader_working_and_new_readers_see_the_new_atlas(tmp_path: Path):
    path = tmp_path / "atlas.duckdb"
    write_synthetic_atlas(path, n_features=32, n_clips=8)
    ctx = mp.get_context("spawn")
    ready, go, out = ctx.Event(), ctx.Event(), ctx.Queue()
    reader = ctx.Process(target=_reader, args=(str(path), ready, go, out))
    reader.start()
    try:
        assert ready.wait(60)
        write_synthetic_atlas(path, n_features=48, n_clips=8)
        go.set()
        before, after = out.get(timeout=60)
    finally:
        reader.join(60)
    assert (before, after) == (32, 32), "the open reader keeps reading the old atlas"
    con = duckdb.connect(str(path), read_only=True)
    assert con.execute("SELECT count(*) FROM features").fetchone()[0] == 48
    con.close()


def test_failed_build_leaves_the_old_atlas_intact(tmp_path: Path):
    path = tmp_path / "atlas.duckdb"
    write_synthetic_atlas(path, n_features=16, n_clips=6)
    before = path.read_bytes()
    bad = pa.table({"id": [0], "density": [0.5]})  # lacks most columns
    with pytest.raises(ValueError, match="lacks columns"):
        write_atlas(path, {"features": bad})
    with pytest.raises(KeyError, match="unknown atlas table"):
        write_atlas(path, {"no_such_table": bad})
    assert path.read_bytes() == before
    assert sorted(p.name for p in tmp_path.iterdir()) == ["atlas.duckdb", "atlas_audio"]
    assert len(read_all(path)["features"]) == 16


def test_derived_tables_are_never_copied_from_the_input(synthetic: Path, tmp_path: Path):
    """A copy through `write_atlas` without a renderer has no stored pages (they would be stale), whatever
    its input held; every write gets a new build id."""
    tables = {name: rows for name, rows in read_tables(synthetic).items()}
    assert tables["feature_pages"].num_rows == 96
    copy = write_atlas(tmp_path / "copy.duckdb", tables)
    copied = read_all(copy)
    run = {r["key"]: json.loads(r["value"]) for r in copied["run"]}
    original = {r["key"]: json.loads(r["value"]) for r in read_all(synthetic)["run"]}
    assert copied["feature_pages"] == [] and "pages" not in run and "pages" in original
    assert run["build_id"] != original["build_id"] and run["model"] == original["model"]


def read_tables(path: Path) -> dict[str, pa.Table]:
    with duckdb.connect(str(path), read_only=True) as con:
        return {name: con.sql(f'SELECT * FROM "{name}"').to_arrow_table() for name in schema.metadata.tables}
