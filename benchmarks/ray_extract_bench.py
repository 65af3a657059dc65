"""Extraction throughput: `--engine ray` (Ray Data, a pool of encoder actors) vs the local engine, same clips.

Both run `pipelines.extract.extract` on the same corpus, model and settings into fresh folders under a
temporary directory, in rounds that alternate which goes first so a shared machine's slow phases
hit both; each round's ratio is ray frames/s over local frames/s and the median is reported. The Ray time
counts everything a user waits for once the cluster is up (actors starting and loading the model, decoding,
encoding, shipping results, writing shards); the cluster's own start is timed apart. Every Ray run's shards
are checked equal to the local run's, array for array.

On one machine Ray can only add overhead unless the encoder leaves cores idle: the number to read is what
the engine costs over the local one, which is what a cluster's extra nodes must pay back.

    .venv/bin/python benchmarks/ray_extract_bench.py [--corpus test-small] [--rounds 2] [--num-cpus 2]
"""

from __future__ import annotations

import argparse
import statistics
import tempfile
import time
from functools import partial
from pathlib import Path

import numpy as np

from pipelines.engines.cluster import RayConfig, ray_session
from pipelines.engines.ray_extract import RayExtraction
from pipelines.extract import ExtractReport, extract
from pipelines.model.loader import load_whisper
from pipelines.paths import RunPaths, corpus_dir


def same_shards(a: RunPaths, b: RunPaths) -> bool:
    names = sorted(p.name for p in a.activations.glob("shard_*.npy"))
    if names != sorted(p.name for p in b.activations.glob("shard_*.npy")):
        return False
    return all(np.array_equal(np.load(a.activations / n), np.load(b.activations / n)) for n in names)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--corpus", default="test-small")
    parser.add_argument("--model", default="bundled:whisper-base")
    parser.add_argument("--rounds", type=int, default=2)
    parser.add_argument("--num-cpus", type=int, default=2, help="CPUs of the local Ray cluster")
    parser.add_argument("--workers", type=int, default=None, help="encoder actors (default: one per CPU)")
    args = parser.parse_args()

    corpus = corpus_dir(args.corpus)
    bundle = load_whisper(args.model, device="cpu")
    cluster = RayConfig(num_cpus=args.num_cpus, workers=args.workers)
    started = time.perf_counter()
    with ray_session(cluster), tempfile.TemporaryDirectory(prefix="ray-bench-") as tmp:
        print(f"Ray cluster up in {time.perf_counter() - started:.1f} s ({args.num_cpus} CPUs)")
        engine = RayExtraction(partial(load_whisper, args.model), cluster)
        ratios = []
        for round_ in range(args.rounds):
            runs = {name: RunPaths(Path(tmp) / f"{name}-{round_}") for name in ("local", "ray")}
            engines = {"local": None, "ray": engine}
            order = ["local", "ray"] if round_ % 2 == 0 else ["ray", "local"]
            reports: dict[str, ExtractReport] = {
                name: extract(corpus, runs[name], bundle, None, None, engine=engines[name]) for name in order
            }
            local, ray = reports["local"], reports["ray"]
            ratios.append(ray.frames_per_s / local.frames_per_s)
            equal = same_shards(runs["local"], runs["ray"])
            print(
                f"round {round_}: {local.frames:,} frames, {local.windows} windows; "
                f"local {local.seconds:.1f} s ({local.frames_per_s:,.0f} frames/s), "
                f"ray {ray.seconds:.1f} s ({ray.frames_per_s:,.0f} frames/s); "
                f"ray/local {ratios[-1]:.2f}; shards equal: {equal}"
            )
    print(f"median ray/local frames/s over {args.rounds} rounds: {statistics.median(ratios):.2f}")


if __name__ == "__main__":
    main()
