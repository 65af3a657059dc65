"""Explore by example at build time: frame codes, the similar-moment index and the feature map, on real
activation shards encoded by a real (small, random) TopK SAE and written to an atlas by the real writer.

The clips are sequences of a few "sound" prototypes plus noise, so clips share features the way speech
does; clip `DUPLICATE` is clip `ORIGINAL` stored a second time (the same activations under another row).
"""

from __future__ import annotations

import json

import numpy as np
import pyarrow as pa
import pytest
import torch

from pipelines.activations import ActivationsMeta, append_shard, load_all
from pipelines.analysis.feature_map import feature_map
from pipelines.analysis.frame_codes import span_sums
from pipelines.analysis.similar import SimilarConfig, feature_idf, query_vector, window_grid
from pipelines.atlas.explore import explore_inputs, explore_tables
from pipelines.atlas.reader import AtlasReader
from pipelines.atlas.search import search, search_exhaustive
from pipelines.atlas.writer import write_atlas
from pipelines.paths import RunPaths
from pipelines.sae.saelens import save_sae
from tests.fixtures.tiny_sae import tiny_sae

D_MODEL, D_SAE, K = 64, 96, 8
N_CLIPS = 14
ORIGINAL, DUPLICATE = 3, 11
CFG = SimilarConfig()


def clip_activations(rng: np.random.Generator) -> list[np.ndarray]:
    """Each clip: 40-160 frames, runs of 6-20 frames of one of 10 prototypes plus noise."""
    prototypes = rng.standard_normal((10, D_MODEL)) * 2.0
    clips = []
    for _ in range(N_CLIPS):
        n = int(rng.integers(40, 160))
        runs = np.repeat(rng.integers(0, 10, n), rng.integers(6, 20, n))[:n]
        clips.append((prototypes[runs] + 0.6 * rng.standard_normal((n, D_MODEL))).astype(np.float16))
    clips[DUPLICATE] = clips[ORIGINAL].copy()
    return clips


@pytest.fixture(scope="module")
def built(tmp_path_factory: pytest.TempPathFactory):
    root = tmp_path_factory.mktemp("explore")
    run = RunPaths(root / "runs" / "explore")
    clips = clip_activations(np.random.default_rng(0))
    meta = ActivationsMeta(model="synthetic", layer=6, d_model=D_MODEL, corpus="synthetic")
    for part in (range(0, 6), range(6, N_CLIPS)):  # two shards, as extraction writes them
        index = [np.stack([np.full(len(clips[i]), i), np.arange(len(clips[i]))], 1) for i in part]
        append_shard(run.activations, meta, np.concatenate([clips[i] for i in part]), np.concatenate(index))
    sae = tiny_sae(D_MODEL, D_SAE, K, seed=3)
    save_sae(sae, run.sae, {"model_name": "synthetic", "hook_name": "encoder.layer_norm"})
    acts, index = load_all(run.activations)
    with torch.no_grad():
        latents = sae.encode(torch.from_numpy(acts.astype(np.float32))).numpy()
    density = (latents > 0).mean(0)  # what the analysis stores as features.density
    inputs = explore_inputs(run, density, np.array([len(c) for c in clips]))
    tables, info = explore_tables(inputs, density)
    run_rows = pa.table({"key": ["explore"], "value": [json.dumps(info)]})
    path = write_atlas(run.root / "atlas.duckdb", {**tables, "run": run_rows})
    with AtlasReader.open(path) as reader:
        yield {
            "reader": reader,
            "latents": latents,
            "index": index,
            "density": density,
            "info": info,
            "sae": sae,
        }


def test_frame_codes_keep_every_active_latent_and_span_sums_are_exact(built) -> None:
    reader, latents, index = built["reader"], built["latents"], built["index"]
    assert built["info"]["frame_codes"]["k"] == K and built["info"]["frame_codes"]["dropped_share"] < 1e-6
    rng = np.random.default_rng(1)
    for clip in range(N_CLIPS):
        features_TK, acts_TK = reader.frame_codes(clip)
        rows = np.flatnonzero(index[:, 0] == clip)
        assert len(features_TK) == len(rows)
        for _ in range(3):
            a = int(rng.integers(0, len(rows) - 2))
            b = int(rng.integers(a + 1, len(rows) + 1))
            expected_F = latents[rows[a:b]].sum(0)
            got_F = span_sums(features_TK[a:b], acts_TK[a:b], D_SAE)
            np.testing.assert_array_equal(got_F > 0, expected_F > 0)  # the same features, none missing
            np.testing.assert_allclose(got_F, expected_F, rtol=1e-3, atol=1e-3)  # float16 storage


def test_windows_cover_each_clip_and_end_at_its_end() -> None:
    starts, ends = window_grid(100, 32, 16)
    assert starts[0] == 0 and ends[-1] == 100 and np.all(ends - starts == 32)
    assert np.all(np.diff(starts) <= 16)
    assert window_grid(20, 32, 16)[0].tolist() == [0] and window_grid(20, 32, 16)[1].tolist() == [20]


def _query(built, clip: int, a: int, b: int) -> np.ndarray:
    features_TK, acts_TK = built["reader"].frame_codes(clip)
    return query_vector(span_sums(features_TK[a:b], acts_TK[a:b], D_SAE), feature_idf(built["density"]))


def test_the_planted_duplicate_ranks_first(built) -> None:
    reader = built["reader"]
    n = len(reader.frame_codes(ORIGINAL)[0])
    for a in (0, 16, n - 32):  # windows of the index, its last one too
        q = _query(built, ORIGINAL, a, a + 32)
        found = search(reader, q, CFG, 5, exclude_clip=ORIGINAL, exclude=(a, a + 32))
        assert found[0].clip == DUPLICATE and (found[0].start_frame, found[0].end_frame) == (a, a + 32)
        best = float(np.linalg.norm(np.sort(q)[-CFG.sketch_features :]))  # q . its own unit sketch
        assert found[0].score == pytest.approx(best, rel=1e-5)
        assert found[1].score < found[0].score - 1e-3
        assert all(m.clip != ORIGINAL or m.end_frame <= a or m.start_frame >= a + 32 for m in found)
    q = _query(built, DUPLICATE, 10, 50)  # a span off the window grid still finds its twin first
    assert search(reader, q, CFG, 3, exclude_clip=DUPLICATE, exclude=(10, 50))[0].clip == ORIGINAL


def test_the_index_finds_what_scoring_every_window_finds(built) -> None:
    reader, rng = built["reader"], np.random.default_rng(2)
    for _ in range(10):
        clip = int(rng.integers(N_CLIPS))
        n = len(reader.frame_codes(clip)[0])
        a = int(rng.integers(0, n - 10))
        b = int(min(n, a + rng.integers(8, 60)))
        q = _query(built, clip, a, b)
        fast = search(reader, q, CFG, 5, clip, (a, b))
        slow = search_exhaustive(reader, q, 5, clip, (a, b))
        assert [m.window for m in fast] == [m.window for m in slow]
        np.testing.assert_allclose([m.score for m in fast], [m.score for m in slow], rtol=1e-5)


def test_the_map_has_one_point_per_live_feature(built) -> None:
    table = built["reader"].table("feature_map")  # this atlas has no `features` rows to join
    live = np.flatnonzero(built["density"] > 0)
    assert 0 < len(live) < D_SAE  # some latents never fire on these clips: they are left off the map
    assert table.column("feature_id").to_pylist() == live.tolist()
    xy = np.stack([table.column("x").to_numpy(), table.column("y").to_numpy()], 1)
    assert np.all((xy >= 0) & (xy <= 1)) and len(np.unique(xy.round(4), axis=0)) > len(live) // 2
    assert built["info"]["map"]["n_points"] == len(live)
    again = feature_map(built["sae"].W_dec.detach().numpy(), built["density"] > 0)  # seeded: the same map
    np.testing.assert_array_equal(again.xy_K2, xy.astype(np.float32))
