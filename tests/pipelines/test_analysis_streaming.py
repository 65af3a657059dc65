"""The analysis' streaming accumulators equal brute force on small random data (equivalence tests)."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
import torch

from pipelines.activations import ActivationsMeta, append_shard
from pipelines.analysis.config import AnalysisConfig
from pipelines.analysis.groups import ClipGroups
from pipelines.analysis.scan import read_windows, scan_activations, window_bounds
from pipelines.analysis.streaming import (
    CoactiveCounter,
    DenseCoactive,
    hash_priority,
    quantile_examples,
)
from tests.fixtures.tiny_sae import tiny_sae

D, F, N_CLIPS = 16, 48, 30


@pytest.fixture(scope="module")
def corpus(tmp_path_factory: pytest.TempPathFactory):
    """Two shards of random activations over 30 clips, and the full latents computed in one go."""
    rng = np.random.default_rng(0)
    folder = tmp_path_factory.mktemp("acts")
    lengths = rng.integers(5, 60, N_CLIPS)
    meta = ActivationsMeta(model="test", layer=2, d_model=D, corpus="test")
    acts, index = [], []
    for row, n in enumerate(lengths):
        acts.append(rng.standard_normal((n, D)).astype(np.float16))
        index.append(np.stack([np.full(n, row), np.arange(n)], 1))
    half = 17
    append_shard(folder, meta, np.concatenate(acts[:half]), np.concatenate(index[:half]))
    append_shard(folder, meta, np.concatenate(acts[half:]), np.concatenate(index[half:]))
    sae = tiny_sae(D, F, k=6, seed=1)
    all_acts = np.concatenate(acts)
    all_index = np.concatenate(index)
    with torch.no_grad():
        latents = sae.encode(torch.from_numpy(all_acts.astype(np.float32))).numpy()
    language = np.where(np.arange(N_CLIPS) % 5 == 4, -1, np.arange(N_CLIPS) % 3)
    category = np.where(language < 0, 1 + np.arange(N_CLIPS) % 2, 0)
    return folder, sae, latents, all_index, lengths, language, category


CFG = AnalysisConfig(top_k=5, chunk_frames=90, reservoir=2, coactive_counters=F, hist_decades=(-2.0, 1.0))


@pytest.fixture(scope="module")
def scanned(corpus):
    folder, sae, _, _, _, language, category = corpus
    names = ["g0", "g1", "g2"]
    return scan_activations(folder, sae, ClipGroups(names, language), ClipGroups(names, category), CFG)


def clip_peaks_brute(latents: np.ndarray, index: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    peak = np.zeros((N_CLIPS, F), np.float32)
    frame = np.zeros((N_CLIPS, F), np.int64)
    for c in range(N_CLIPS):
        rows = np.flatnonzero(index[:, 0] == c)
        peak[c] = latents[rows].max(0)
        frame[c] = index[rows[latents[rows].argmax(0)], 1]
    return peak, frame


def test_frame_statistics_equal_brute_force(corpus, scanned):
    _, _, latents, index, lengths, language, category = corpus
    fires = latents > 0
    assert scanned.n_frames == len(latents)
    np.testing.assert_array_equal(scanned.clip_frames, lengths)
    np.testing.assert_array_equal(scanned.fire_count, fires.sum(0))
    np.testing.assert_allclose(scanned.act_sum, latents.sum(0), rtol=1e-5)
    np.testing.assert_allclose(scanned.max_act, latents.max(0), rtol=1e-6)
    edges = CFG.grid_edges()
    bins = np.clip(np.searchsorted(edges, latents, side="right") - 1, 0, CFG.n_grid - 1)
    for f in range(F):
        expected = np.bincount(bins[fires[:, f], f], minlength=CFG.n_grid)
        np.testing.assert_array_equal(scanned.hist_counts[f], expected)
    frame_lang = language[index[:, 0]]
    for lang in range(3):
        on = frame_lang == lang
        assert scanned.languages.frames_K[lang] == on.sum()
        np.testing.assert_allclose(scanned.languages.mass_FK[:, lang], latents[on].sum(0), rtol=1e-5)
        np.testing.assert_array_equal(scanned.languages.fires_FK[:, lang], fires[on].sum(0))
    frame_cat = category[index[:, 0]]
    for cat in range(3):
        np.testing.assert_allclose(
            scanned.categories.mass_FK[:, cat], latents[frame_cat == cat].sum(0), rtol=1e-5
        )


def test_top_examples_equal_brute_force_one_per_clip(corpus, scanned):
    _, _, latents, index, *_ = corpus
    peak, frame = clip_peaks_brute(latents, index)
    top = scanned.top
    for f in range(F):
        order = np.argsort(-peak[:, f], kind="stable")[: CFG.top_k]
        order = order[peak[order, f] > 0]
        got = top.clip_FK[f].numpy()
        got_values = top.value_FK[f].numpy()
        live = got_values > 0
        assert len(set(got[live])) == live.sum(), "a clip appears twice in one feature's top list"
        np.testing.assert_allclose(got_values[live], peak[order, f], rtol=1e-6)
        np.testing.assert_array_equal(got[live], order)
        np.testing.assert_array_equal(top.frame_FK[f].numpy()[live], frame[order, f])


def test_reservoir_equals_brute_force_bottom_r(corpus, scanned):
    _, _, latents, index, *_ = corpus
    peak, frame = clip_peaks_brute(latents, index)
    edges = CFG.grid_edges()
    res = scanned.reservoir
    c, f = np.nonzero(peak > 0)
    grid = np.clip(np.searchsorted(edges, peak[c, f], side="right") - 1, 0, CFG.n_grid - 1)
    cell = f * CFG.n_grid + grid
    prio = hash_priority(f, c, CFG.seed)
    np.testing.assert_array_equal(res.seen, np.bincount(cell, minlength=F * CFG.n_grid))
    for one in np.unique(cell):
        mine = np.flatnonzero(cell == one)
        expected = mine[np.argsort(prio[mine])[: CFG.reservoir]]
        kept = res.clip[one][res.clip[one] >= 0]
        assert sorted(kept) == sorted(c[expected])
        for slot, clip in enumerate(res.clip[one]):
            if clip >= 0:
                assert res.frame[one, slot] == frame[clip, f[mine[0]]]


def test_quantile_draws_lie_in_their_bins(corpus, scanned):
    _, _, latents, index, *_ = corpus
    peak, _ = clip_peaks_brute(latents, index)
    edges = CFG.grid_edges()
    draws = quantile_examples(scanned.reservoir, edges, n_bins=4, per_bin=2, seed=0)
    assert len(draws.feature) > 0
    np.testing.assert_allclose(draws.value, peak[draws.clip, draws.feature], rtol=1e-6)
    assert np.all((draws.value <= draws.upper * (1 + 1e-6)) | (draws.upper >= edges[-1]))
    for f in np.unique(draws.feature):
        mine = draws.feature == f
        counts = np.bincount(draws.bin[mine])
        assert counts.max() <= 2
        assert np.all(np.diff(draws.bin[mine]) <= 0), "bins are listed strongest first"
        assert len(set(zip(draws.clip[mine], draws.bin[mine]))) == mine.sum()
    again = quantile_examples(scanned.reservoir, edges, 4, 2, 0, exclude=(draws.feature, draws.clip))
    shown = set(zip(draws.feature.tolist(), draws.clip.tolist()))
    assert len(again.feature) > 0 and not shown & set(zip(again.feature.tolist(), again.clip.tolist()))


def brute_jaccard(fires: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    fires = fires.astype(np.int64)
    together = fires.T @ fires
    np.fill_diagonal(together, 0)
    union = fires.sum(0)[:, None] + fires.sum(0)[None, :] - together
    return together, together / np.maximum(union, 1)


def feed(counter, latents: np.ndarray, block: int = 50, t: int = 8) -> None:
    for start in range(0, len(latents), block):
        vals, ids = torch.topk(torch.from_numpy(latents[start : start + block]), t, dim=1)
        counter.update(ids, vals > 0)


def test_dense_coactive_equals_brute_force_jaccard(corpus, scanned):
    _, _, latents, *_ = corpus
    assert isinstance(scanned.coactive, DenseCoactive)
    together, jac = brute_jaccard(latents > 0)
    counts = scanned.coactive.count.view(F, F).numpy()
    np.testing.assert_array_equal(counts + counts.T, together)
    partners, score = scanned.coactive.jaccard(scanned.fire_count, 3)
    for f in range(F):
        expected = np.sort(jac[f])[::-1][:3]
        np.testing.assert_allclose(score[f][partners[f] >= 0], expected[expected > 0], rtol=1e-6)
        for g, sc in zip(partners[f], score[f]):
            if g >= 0:
                assert g != f and jac[f, g] == pytest.approx(sc)


def test_misra_gries_is_exact_with_enough_counters(corpus, scanned):
    _, _, latents, *_ = corpus
    co = CoactiveCounter(F, m=F)
    feed(co, latents, t=6)
    together, _ = brute_jaccard(latents > 0)
    for f in range(F):
        held = co.partner[f] >= 0
        assert dict(zip(co.partner[f][held], co.count[f][held])) == {
            g: together[f, g] for g in range(F) if together[f, g] > 0
        }
    dense = DenseCoactive(F, block=16)  # several row blocks
    feed(dense, latents, t=6)
    for a, b in zip(co.jaccard(scanned.fire_count, 4), dense.jaccard(scanned.fire_count, 4)):
        np.testing.assert_allclose(np.sort(a, 1), np.sort(b, 1), rtol=1e-6)


def test_misra_gries_bound_with_few_counters(corpus):
    _, _, latents, *_ = corpus
    co = CoactiveCounter(F, m=4)
    feed(co, latents)
    together, _ = brute_jaccard(latents > 0)
    pairs = together.sum(1)
    for f in range(F):
        est = np.zeros(F, np.int64)
        held = co.partner[f] >= 0
        est[co.partner[f][held]] = co.count[f][held]
        assert np.all(est <= together[f])
        assert np.all(together[f] - est <= pairs[f] / (co.m + 1) + 1e-9)


def test_windows_equal_brute_force(corpus):
    folder, sae, latents, index, lengths, *_ = corpus
    rng = np.random.default_rng(3)
    clip = rng.integers(0, N_CLIPS, 40)
    feature = rng.integers(0, F, 40)
    peak = (rng.random(40) * lengths[clip]).astype(np.int64)
    start, end = window_bounds(peak, lengths[clip], 11)
    assert np.all(end - start == np.minimum(11, lengths[clip]))
    assert np.all((start <= peak) & (peak < end))
    flat = read_windows(folder, sae, feature, clip, start, end, CFG)
    pos = 0
    for i in range(40):
        rows = np.flatnonzero(index[:, 0] == clip[i])[start[i] : end[i]]
        np.testing.assert_allclose(
            flat[pos : pos + len(rows)], latents[rows, feature[i]], rtol=1e-5, atol=1e-6
        )
        pos += len(rows)


def test_config_validates():
    with pytest.raises(ValueError, match="top_k"):
        AnalysisConfig(top_k=0)
    with pytest.raises(ValueError, match="hist_decades"):
        AnalysisConfig(hist_decades=(2.0, 1.0))


def test_hash_priority_is_deterministic_and_spread():
    f = np.arange(1000) % 7
    c = np.arange(1000)
    a, b = hash_priority(f, c, 0), hash_priority(f, c, 0)
    np.testing.assert_array_equal(a, b)
    assert a.min() >= 0
    assert len(np.unique(a)) == 1000
    assert 0.4 < np.mean(a > 2**62) < 0.6
    assert not np.array_equal(a, hash_priority(f, c, 1))


def test_scan_reads_nothing_without_shards(tmp_path: Path):
    sae = tiny_sae(D, F, k=2)
    with pytest.raises(FileNotFoundError, match="extract"):
        one = ClipGroups(["g0"], np.zeros(1, int))
        scan_activations(tmp_path, sae, one, one, CFG)
