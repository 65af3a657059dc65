"""Similar-moment search: the inverted index against scoring every window, on a real atlas and on a corpus
10x larger made from it, interleaved in one run.

The 1x corpus is the atlas's own frame codes (`frame_codes`, every frame's k latents), re-indexed by the
build code (`pipelines.atlas.explore.explore_tables`); the 10x corpus holds each clip ten times, the copies
perturbed (each activation times a log-normal factor, sigma 0.3, and 10% of the pairs dropped), so its
windows are as many and as alike as a 10x corpus of the same sounds. Both are written to DuckDB files by the
real writer. Queries are random spans (0.3-1.5 s) of random clips. Per corpus it times
- `search` (index: the postings of the query's strongest features, then an exact re-score of the best
  candidates against their sketches) and
- `search_exhaustive` (brute force: every window's score from all the postings, the reference),
and prints medians, p90, recall@10 of the index against brute force, the brute/index ratio, and how each
grows from 1x to 10x. With `--http` it also times `GET /api/v1/similar` end to end on the atlas itself
(span codes read, search, JSON) through the real app. `--quality` compares, on the real corpus, how often the
10 best windows of a speech query share its word and its language with the index's weighting (sqrt, idf)
and with the plain cosine of the pooled codes.

    python benchmarks/similar_bench.py [--atlas data/runs/default/atlas.duckdb] [--queries 100] [--http]
        [--quality]
"""

from __future__ import annotations

import argparse
import json
import statistics
import sys
import tempfile
import time
from pathlib import Path

import numpy as np
import pyarrow as pa

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

from pipelines.analysis.feature_map import FeatureMap  # noqa: E402
from pipelines.analysis.frame_codes import FrameCodes, span_sums  # noqa: E402
from pipelines.analysis.similar import SimilarConfig, feature_idf, query_vector  # noqa: E402
from pipelines.atlas.explore import ExploreInputs, explore_tables  # noqa: E402
from pipelines.atlas.reader import AtlasReader  # noqa: E402
from pipelines.atlas.search import search, search_exhaustive  # noqa: E402
from pipelines.atlas.writer import write_atlas  # noqa: E402
from pipelines.constants import FRAME_SECONDS  # noqa: E402

LIMIT = 10


def read_codes(reader: AtlasReader, n_features: int) -> FrameCodes:
    """Every clip's frame codes from the atlas, as the build made them."""
    rows, features, acts = [], [], []
    for clip in range(len(reader.clips())):
        codes = reader.frame_codes(clip)
        if codes is not None and len(codes[0]):
            rows.append(clip)
            features.append(codes[0])
            acts.append(codes[1].astype(np.float16))
    lengths = np.array([len(f) for f in features])
    return FrameCodes(
        np.array(rows, np.int32),
        np.r_[0, np.cumsum(lengths)].astype(np.int64),
        np.concatenate(features),
        np.concatenate(acts),
        n_features,
    )


def replicate(codes: FrameCodes, times: int, rng: np.random.Generator) -> FrameCodes:
    """`times` copies of every clip (the first unchanged), the others' activations perturbed."""
    values = [codes.values_NK]
    for _ in range(times - 1):
        noisy = codes.values_NK.astype(np.float32) * rng.lognormal(0.0, 0.3, codes.values_NK.shape)
        noisy[rng.random(noisy.shape) < 0.1] = 0.0
        values.append(noisy.astype(np.float16))
    lengths = np.diff(codes.offsets)
    n_clips = len(codes.clip_rows)
    return FrameCodes(
        np.arange(n_clips * times, dtype=np.int32),
        np.r_[0, np.cumsum(np.tile(lengths, times))].astype(np.int64),
        np.tile(codes.features_NK, (times, 1)),
        np.concatenate(values),
        codes.n_features,
    )


def index_file(codes: FrameCodes, density_F: np.ndarray, path: Path) -> tuple[Path, dict]:
    """An atlas file holding the explore tables of `codes` (no map), written by the real writer."""
    empty = FeatureMap(np.zeros(0, np.int32), np.zeros((0, 2), np.float32), 0.0)
    started = time.perf_counter()
    tables, info = explore_tables(ExploreInputs(codes, empty), density_F)
    seconds = time.perf_counter() - started
    run = pa.table({"key": ["explore"], "value": [json.dumps(info)]})
    write_atlas(path, {**tables, "run": run})
    return path, {**info["similar"], "index_s": round(seconds, 1), "mb": round(path.stat().st_size / 1e6, 1)}


def queries(codes: FrameCodes, n: int, rng: np.random.Generator) -> list[tuple[int, int, int]]:
    """(clip row, first frame, end frame) of random spans of 0.3-1.5 s."""
    found = []
    while len(found) < n:
        c = int(rng.integers(len(codes.clip_rows)))
        length = int(codes.offsets[c + 1] - codes.offsets[c])
        width = int(rng.integers(15, 76))
        if length <= width:
            continue
        a = int(rng.integers(0, length - width))
        found.append((c, a, a + width))
    return found


def timed(run, *args):
    t0 = time.perf_counter()
    out = run(*args)
    return out, (time.perf_counter() - t0) * 1000


def measure(path: Path, codes: FrameCodes, spans: list, idf_F: np.ndarray, cfg: SimilarConfig) -> dict:
    """Interleaved index and brute-force timings of the same queries on one file, and the index's recall."""
    index_ms, brute_ms, recall = [], [], []
    with AtlasReader.open(path) as reader:
        for c, a, b in spans:
            f_TK, v_TK = codes.clip(c)
            q_F = query_vector(span_sums(f_TK[a:b], v_TK[a:b].astype(np.float32), codes.n_features), idf_F)
            clip = int(codes.clip_rows[c])
            fast, t_fast = timed(search, reader, q_F, cfg, LIMIT, clip, (a, b))
            slow, t_slow = timed(search_exhaustive, reader, q_F, LIMIT, clip, (a, b))
            index_ms.append(t_fast)
            brute_ms.append(t_slow)
            truth = {m.window for m in slow}
            recall.append(len(truth & {m.window for m in fast}) / max(len(truth), 1))
    p90 = lambda xs: float(np.percentile(xs, 90))  # noqa: E731
    return {
        "index_ms": statistics.median(index_ms),
        "index_p90": p90(index_ms),
        "brute_ms": statistics.median(brute_ms),
        "brute_p90": p90(brute_ms),
        "recall": float(np.mean(recall)),
    }


def http_latency(atlas: Path, spans: list, codes: FrameCodes) -> tuple[float, float]:
    """Median and p90 of GET /api/v1/similar through the real app (TestClient, no network)."""
    from fastapi.testclient import TestClient

    from backend.app import create_app
    from backend.settings import Settings

    times = []
    settings = Settings(atlas=atlas, data_dir=atlas.parent, prerender_share=0.0)
    with TestClient(create_app(settings)) as client:
        client.get("/api/v1/similar", params={"clip": 0, "start": 0, "end": 0.5})  # opens the atlas
        for c, a, b in spans:
            params = {"clip": int(codes.clip_rows[c]), "start": a * FRAME_SECONDS, "end": b * FRAME_SECONDS}
            t0 = time.perf_counter()
            response = client.get("/api/v1/similar", params=params)
            times.append((time.perf_counter() - t0) * 1000)
            assert response.status_code == 200, response.text
    return statistics.median(times), float(np.percentile(times, 90))


def quality(reader: AtlasReader, codes: FrameCodes, idf_F: np.ndarray, cfg: SimilarConfig, n: int) -> None:
    """Same word / same language among the 10 best windows (other clips) of speech queries: the index's
    weighting against the plain cosine of the pooled codes, both over full window vectors."""
    clips = reader.clips()
    words = reader.clip_words()
    from pipelines.analysis.similar import weighted, window_grid

    meta, plain, tfidf = [], [], []
    for c, row in enumerate(codes.clip_rows):
        f_TK, v_TK = codes.clip(c)
        starts, ends = window_grid(len(f_TK), cfg.window_frames, cfg.hop_frames)
        for s, e in zip(starts, ends):
            sums = span_sums(f_TK[s:e], v_TK[s:e].astype(np.float32), codes.n_features)
            t = (s + e) / 2 * FRAME_SECONDS
            word = next(
                (w.lower().strip(".,?!¿¡") for w, a, b in words.get(int(row), []) if a <= t <= b), None
            )
            meta.append((int(row), clips[int(row)]["language"], word))
            plain.append(sums)
            tfidf.append(weighted(sums, idf_F))
    rng = np.random.default_rng(1)
    speech = [i for i, m in enumerate(meta) if m[2]]
    chosen = rng.choice(speech, min(n, len(speech)), replace=False)
    clip_of = np.array([m[0] for m in meta])
    for name, vectors in (("plain cosine", plain), ("sqrt x idf (the index)", tfidf)):
        X = np.array(vectors, np.float32)
        X /= np.maximum(np.linalg.norm(X, axis=1, keepdims=True), 1e-12)
        same_word = same_language = 0
        for q in chosen:
            scores = X @ X[q]
            scores[clip_of == meta[q][0]] = -1
            top = np.argsort(-scores)[:10]
            same_word += sum(meta[t][2] == meta[q][2] for t in top)
            same_language += sum(meta[t][1] == meta[q][1] for t in top)
        total = 10 * len(chosen)
        print(f"  {name:24s} same word {same_word / total:6.1%}   same language {same_language / total:6.1%}")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--atlas", type=Path, default=ROOT / "data" / "runs" / "default" / "atlas.duckdb")
    parser.add_argument("--queries", type=int, default=100)
    parser.add_argument("--times", type=int, default=10, help="copies of the corpus in the large one")
    parser.add_argument("--http", action="store_true", help="also time GET /api/v1/similar end to end")
    parser.add_argument("--quality", action="store_true", help="also compare the weighting with plain cosine")
    args = parser.parse_args()
    rng = np.random.default_rng(0)
    with AtlasReader.open(args.atlas) as reader:
        ids, _, density_F = reader.feature_index()
        codes = read_codes(reader, len(ids))
        cfg = SimilarConfig()
        idf_F = feature_idf(density_F)
        if args.quality:
            print("quality (300 speech queries, full window vectors):")
            quality(reader, codes, idf_F, cfg, 300)
    big = replicate(codes, args.times, rng)
    spans = queries(codes, args.queries, rng)  # the same spans on both corpora (their first copy)
    print(
        f"corpus: {len(codes.clip_rows)} clips, {codes.offsets[-1]:,} frames, k {codes.k}, "
        f"{len(ids)} features"
    )
    with tempfile.TemporaryDirectory() as tmp:
        small_path, small_info = index_file(codes, density_F, Path(tmp) / "x1.duckdb")
        big_path, big_info = index_file(big, density_F, Path(tmp) / f"x{args.times}.duckdb")
        for name, info in (("1x", small_info), (f"{args.times}x", big_info)):
            print(
                f"{name:>4}: {info['n_windows']:,} windows, {info['n_postings']:,} postings, "
                f"index built in {info['index_s']} s, file {info['mb']} MB"
            )
        results = {}
        for name, path, corpus in (("1x", small_path, codes), (f"{args.times}x", big_path, big)):
            measure(path, corpus, spans[:5], idf_F, cfg)  # warm the file and the statements
            results[name] = measure(path, corpus, spans, idf_F, cfg)
    print(
        f"\n{'corpus':>6} {'index ms':>9} {'p90':>7} {'brute ms':>9} {'p90':>7} {'brute/index':>12} "
        f"{'recall@10':>10}"
    )
    for name, r in results.items():
        print(
            f"{name:>6} {r['index_ms']:9.2f} {r['index_p90']:7.2f} {r['brute_ms']:9.2f} "
            f"{r['brute_p90']:7.2f} "
            f"{r['brute_ms'] / r['index_ms']:11.1f}x {r['recall']:10.3f}"
        )
    small, large = results["1x"], results[f"{args.times}x"]
    print(
        f"\ngrowth from 1x to {args.times}x: index {large['index_ms'] / small['index_ms']:.2f}x, "
        f"brute force {large['brute_ms'] / small['brute_ms']:.2f}x (corpus {args.times}x)"
    )
    if args.http:
        median, p90 = http_latency(args.atlas, spans, codes)
        print(
            f"GET /api/v1/similar on {args.atlas.parent.name} (span read + search + JSON): "
            f"median {median:.1f} ms, "
            f"p90 {p90:.1f} ms"
        )


if __name__ == "__main__":
    main()
