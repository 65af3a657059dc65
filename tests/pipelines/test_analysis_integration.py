"""The default run's analysis and atlas of real Whisper base features (integration: needs the demo)."""

from __future__ import annotations

import json

import duckdb
import numpy as np
import pytest

from pipelines.analysis.result import KIND_TOP, AnalysisResult
from pipelines.paths import RunPaths

pytestmark = pytest.mark.integration


@pytest.fixture(scope="module")
def run(repo_data_dir) -> RunPaths:
    paths = RunPaths(repo_data_dir / "runs" / "default")
    if not paths.atlas.exists() or not (paths.analysis / "meta.json").exists():
        pytest.skip(
            "the default run has no analysis/atlas yet: run `whisper-atlas demo` (or analyze + build)"
        )
    return paths


def test_default_atlas_is_small_and_complete(run: RunPaths):
    assert run.atlas.stat().st_size < 100e6, "the default atlas should stay tens of MB"
    con = duckdb.connect(str(run.atlas), read_only=True)
    try:
        n_features = con.execute("SELECT count(*) FROM features").fetchone()[0]
        live = con.execute("SELECT count(*) FROM features WHERE density > 0").fetchone()[0]
        labelled = con.execute("SELECT count(*) FROM features WHERE density > 0 AND label <> ''").fetchone()[
            0
        ]
        info = {k: json.loads(v) for k, v in con.execute("SELECT key, value FROM run").fetchall()}
        mels = con.execute("SELECT count(*) FROM clip_mels").fetchone()[0]
        words = con.execute("SELECT count(DISTINCT clip_id) FROM clip_words").fetchone()[0]
    finally:
        con.close()
    assert n_features == info["n_features"] and live > 0.9 * n_features
    assert labelled == live
    assert mels == info["corpus"]["n_clips"]
    assert words > 0.5 * info["corpus"]["n_clips"]


def test_every_corpus_language_has_selective_features(run: RunPaths):
    """Each language of the corpus has features that fire far more on it than its share of frames."""
    con = duckdb.connect(str(run.atlas), read_only=True)
    try:
        best = dict(
            con.execute(
                "SELECT language, max(selectivity) FROM feature_languages "
                "JOIN features ON features.id = feature_id WHERE density > 1e-4 GROUP BY language"
            ).fetchall()
        )
    finally:
        con.close()
    assert best and all(value > 2.0 for value in best.values()), best


def test_top_examples_follow_the_one_per_clip_rule(run: RunPaths):
    result = AnalysisResult.load(run.analysis)
    ex = result.examples
    top = ex.kind == KIND_TOP
    keys = ex.feature[top].astype(np.int64) * (ex.clip.max() + 1) + ex.clip[top]
    assert len(np.unique(keys)) == top.sum()
    f, value = ex.feature[top], ex.peak_act[top]
    same = f[1:] == f[:-1]
    assert np.all(value[1:][same] <= value[:-1][same]), "top examples are ranked strongest first"
