"""Analysis scaling: peak memory and time of the streaming pass at N and 4N frames with the same SAE.

Target: memory bounded by features x k, independent of corpus size; time linear in frames.
Each size runs in a fresh subprocess on synthetic activation shards (random frames, clips of 1-15 s) and a
random TopK SAE; memory is the peak anonymous RSS (sampled every 2 ms, page-cache pages of the memory-mapped
shards excluded) above the process's RSS just before the pass. Timed: the streaming pass plus the example
windows pass (`scan_activations` + `read_windows`), i.e. everything in `analyze` that grows with the corpus
except the per-clip transcription, which is per clip by construction.

    .venv/bin/python benchmarks/analysis_bench.py [--frames 40000] [--features 4096] [--k 32]
"""

from __future__ import annotations

import argparse
import json
import subprocess
import sys
import tempfile
import threading
import time
from pathlib import Path

import numpy as np
import torch

from pipelines.activations import ActivationsMeta, append_shard
from pipelines.analysis.analyze import _choose_examples
from pipelines.analysis.config import AnalysisConfig
from pipelines.analysis.groups import ClipGroups
from pipelines.analysis.scan import read_windows, scan_activations
from pipelines.sae.config import SAEConfig
from pipelines.sae.registry import build_sae

D_MODEL = 512
SHARD_FRAMES = 50_000


def rss_anon_mb() -> float:
    for line in Path("/proc/self/status").read_text().splitlines():
        if line.startswith("RssAnon:"):
            return int(line.split()[1]) / 1024
    raise RuntimeError("no RssAnon in /proc/self/status (Linux only)")


class PeakSampler(threading.Thread):
    def __init__(self) -> None:
        super().__init__(daemon=True)
        self.peak = rss_anon_mb()
        self.stop = threading.Event()

    def run(self) -> None:
        while not self.stop.is_set():
            self.peak = max(self.peak, rss_anon_mb())
            time.sleep(0.002)


def write_shards(folder: Path, n_frames: int, seed: int) -> tuple[int, int]:
    """Random frames in clips of 50-750 frames, written shard by shard; returns (clips, frames)."""
    rng = np.random.default_rng(seed)
    meta = ActivationsMeta(model="bench", layer=6, d_model=D_MODEL, corpus="bench")
    row = written = 0
    while written < n_frames:
        lengths = []
        while sum(lengths) < min(SHARD_FRAMES, n_frames - written):
            lengths.append(int(rng.integers(50, 750)))
        acts = (rng.standard_normal((sum(lengths), D_MODEL)) * 1.5).astype(np.float16)
        index = np.concatenate(
            [np.stack([np.full(n, row + i), np.arange(n)], 1) for i, n in enumerate(lengths)]
        )
        append_shard(folder, meta, acts, index)
        row += len(lengths)
        written += sum(lengths)
    return row, written


def worker(n_frames: int, n_features: int, k: int) -> dict:
    torch.manual_seed(0)
    sae = build_sae(SAEConfig(d_in=D_MODEL, d_sae=n_features, k=k)).eval()
    cfg = AnalysisConfig()
    with tempfile.TemporaryDirectory() as tmp:
        folder = Path(tmp)
        n_clips, n_written = write_shards(folder, n_frames, seed=1)
        languages = ClipGroups([f"l{i}" for i in range(5)], np.arange(n_clips) % 5)
        categories = ClipGroups(["speech"], np.zeros(n_clips, int))
        with torch.no_grad():  # warm up the kernels outside the measurement
            sae.encode(torch.zeros(8, D_MODEL))
        base = rss_anon_mb()
        sampler = PeakSampler()
        sampler.start()
        start = time.perf_counter()
        with torch.no_grad():
            scan = scan_activations(folder, sae, languages, categories, cfg)
            examples = _choose_examples(scan, cfg)
            read_windows(folder, sae, examples.feature, examples.clip, examples.start, examples.end, cfg)
        seconds = time.perf_counter() - start
        sampler.stop.set()
        sampler.join()
    return {"frames": n_written, "clips": n_clips, "seconds": seconds, "peak_mb": sampler.peak - base}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--frames", type=int, default=40_000, help="N (the larger run has 4N)")
    parser.add_argument("--features", type=int, default=4096)
    parser.add_argument("--k", type=int, default=32)
    parser.add_argument("--worker", action="store_true", help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.worker:
        print(json.dumps(worker(args.frames, args.features, args.k)))
        return
    results = []
    for n in (args.frames, 4 * args.frames):
        cmd = [
            sys.executable,
            __file__,
            "--worker",
            f"--frames={n}",
            f"--features={args.features}",
            f"--k={args.k}",
        ]
        out = subprocess.run(cmd, check=True, capture_output=True, text=True).stdout
        results.append(json.loads(out.strip().splitlines()[-1]))
        r = results[-1]
        print(
            f"{r['frames']:>8} frames ({r['clips']} clips): {r['seconds']:6.1f} s "
            f"({r['frames'] / r['seconds']:,.0f} frames/s), peak extra memory {r['peak_mb']:6.1f} MB"
        )
    small, large = results
    print(f"frames ratio {large['frames'] / small['frames']:.2f}")
    print(f"time ratio   {large['seconds'] / small['seconds']:.2f}   (linear: about the frames ratio)")
    print(f"memory ratio {large['peak_mb'] / max(small['peak_mb'], 1e-9):.2f}   (flat: about 1)")


if __name__ == "__main__":
    main()
