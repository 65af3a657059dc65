"""Extraction throughput: the naive per-clip loop vs packed windows, on the same clips, in one run.

Naive: every clip alone in a padded 30 s window, batch 1 (what a first implementation does). Packed:
`pipelines.model.packing` with each clip keeping `context` frames of its own padding. Both include log-mel
computation and exclude audio decoding (done once up front). Rounds alternate naive/packed so that the slow
phases of a shared machine hit both; the ratio is taken per round and the median reported.

Also printed: fidelity of packed vs naive frames (per-frame cosine similarity and relative L2 error, final
layer by default), and the encoder's achieved FLOP/s as a fraction of this machine's fp32 matmul throughput
(a large torch matmul measured in the same run).

    .venv/bin/python benchmarks/extract_bench.py [--clips 60] [--contexts 300,500] [--rounds 2] [--sae FOLDER]
"""

from __future__ import annotations

import argparse
import random
import statistics
import sys
import time
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import torch

from pipelines.audio import decode_audio
from pipelines.corpus.manifest import MANIFEST_NAME, read_manifest
from pipelines.model.encoder import FRAMES_PER_WINDOW, encode, features_for, real_frames
from pipelines.model.loader import WhisperBundle, load_whisper
from pipelines.model.packing import PackConfig, block_features, build_batch, packed_layout, plan_windows
from pipelines.paths import corpus_dir


@dataclass
class Timing:
    seconds: float
    windows: int
    acts: list[torch.Tensor]


def naive(bundle: WhisperBundle, audios: list[np.ndarray], layer: int) -> Timing:
    start = time.perf_counter()
    acts = [encode(bundle, features_for(bundle, [a]), layer)[0, : real_frames(len(a))] for a in audios]
    return Timing(time.perf_counter() - start, len(audios), acts)


def packed(bundle: WhisperBundle, audios: list[np.ndarray], layer: int, context: int, batch: int) -> Timing:
    start = time.perf_counter()
    config = PackConfig(context_frames=context)
    n_real = [real_frames(len(a)) for a in audios]
    windows = plan_windows(n_real, config)
    acts: list = [None] * len(audios)
    for first in range(0, len(windows), batch):
        chunk = windows[first : first + batch]
        mels = {p.item: block_features(bundle, audios[p.item], p.block) for w in chunk for p in w}
        layout = build_batch(chunk, mels)
        with packed_layout(bundle, layout):
            out_BTD = encode(bundle, layout.features_BMT, layer)
        for row, window in enumerate(chunk):
            for p in window:
                acts[p.item] = out_BTD[row, p.offset : p.offset + n_real[p.item]]
    return Timing(time.perf_counter() - start, len(windows), acts)


def encoder_flops_per_window(bundle: WhisperBundle, layer: int) -> float:
    """Multiply-adds x 2 of the convolutions and `layer` transformer blocks over one 30 s window."""
    cfg = bundle.model.config
    T, D, F = FRAMES_PER_WINDOW, cfg.d_model, cfg.encoder_ffn_dim
    convs = 2 * (2 * T) * cfg.num_mel_bins * 3 * D + 2 * T * D * 3 * D
    block = 2 * T * D * D * 4 + 2 * T * D * F * 2 + 2 * T * T * D * 2  # q,k,v,o; fc1,fc2; scores, mix
    return float(convs + min(layer, cfg.encoder_layers) * block)


def matmul_flops_per_s(n: int = 2048, repeats: int = 5) -> float:
    a, b = torch.randn(n, n), torch.randn(n, n)
    a @ b
    times = []
    for _ in range(repeats):
        start = time.perf_counter()
        a @ b
        times.append(time.perf_counter() - start)
    return 2 * n**3 / min(times)


def fidelity(reference: list[torch.Tensor], other: list[torch.Tensor]) -> dict[str, float]:
    ref, oth = torch.cat(reference), torch.cat(other)
    cos = torch.nn.functional.cosine_similarity(ref, oth, dim=-1)
    rel = (ref - oth).norm(dim=-1) / ref.norm(dim=-1)
    return {
        "cos_mean": cos.mean().item(),
        "cos_p1": cos.quantile(0.01).item(),
        "cos_min": cos.min().item(),
        "rel_l2_mean": rel.mean().item(),
    }


def latent_agreement(
    sae_folder: str, reference: list[torch.Tensor], other: list[torch.Tensor]
) -> dict[str, float]:
    """How alike an SAE's codes of the two paths are: Jaccard of active latents, same strongest latent."""
    from pipelines.sae import load_sae

    sae = load_sae(Path(sae_folder), device="cpu")
    with torch.no_grad():
        ref, oth = sae.encode(torch.cat(reference)), sae.encode(torch.cat(other))
    a, b = ref > 0, oth > 0
    jaccard = (a & b).sum(-1) / (a | b).sum(-1).clamp(min=1)
    same_top = ref.argmax(-1) == oth.argmax(-1)
    return {"jaccard_mean": jaccard.float().mean().item(), "top1_same": same_top.float().mean().item()}


def main() -> int:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--corpus", default="default")
    parser.add_argument("--model", default="bundled:whisper-base")
    parser.add_argument("--layer", type=int, default=None, help="default: the final output")
    parser.add_argument("--clips", type=int, default=60, help="clips sampled from the corpus (<= 30 s each)")
    parser.add_argument("--contexts", default="300", help="comma-separated packing contexts (frames)")
    parser.add_argument("--batch-size", type=int, default=1, help="windows per encoder call, packed path")
    parser.add_argument("--rounds", type=int, default=2)
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--sae", default=None, help="an SAE folder: also compare the two paths' latent codes")
    args = parser.parse_args()

    folder = corpus_dir(args.corpus)
    if not (folder / MANIFEST_NAME).is_file():
        print(f"no corpus at {folder}: build it first with `whisper-atlas corpus build` (nothing measured)")
        return 2
    clips = [c for c in read_manifest(folder) if c.duration <= 30]
    random.Random(args.seed).shuffle(clips)
    clips = clips[: args.clips]
    audios = [decode_audio(folder / c.path) for c in clips]
    bundle = load_whisper(args.model)
    layer = bundle.n_layers if args.layer is None else args.layer
    contexts = [int(c) for c in args.contexts.split(",")]
    frames = sum(real_frames(len(a)) for a in audios)
    seconds = sum(len(a) for a in audios) / 16000
    print(
        f"{len(clips)} clips, {seconds:.0f} s of audio, {frames} real frames; "
        f"model {bundle.name}, layer {layer}"
    )
    print(f"torch {torch.__version__}, {torch.get_num_threads()} threads, device {bundle.device}")

    peak = matmul_flops_per_s()
    flops = encoder_flops_per_window(bundle, layer)
    encode(bundle, features_for(bundle, audios[:1]), layer)  # warm-up
    runs: dict[str, list[Timing]] = {"naive": [], **{f"packed@{c}": [] for c in contexts}}
    with torch.inference_mode():
        for _ in range(args.rounds):
            runs["naive"].append(naive(bundle, audios, layer))
            for c in contexts:
                runs[f"packed@{c}"].append(packed(bundle, audios, layer, c, args.batch_size))
    peak = max(peak, matmul_flops_per_s())  # measured again after the runs: the best of both

    print(f"fp32 matmul (2048^3): {peak / 1e9:.0f} GFLOP/s; encoder: {flops / 1e9:.1f} GFLOP per window")
    print(f"{'path':<12} {'windows':>7} {'s (median)':>10} {'frames/s':>9} {'ratio':>6} {'of peak':>8}")
    base = runs["naive"]
    for name, timings in runs.items():
        secs = statistics.median(t.seconds for t in timings)
        ratio = statistics.median(b.seconds / t.seconds for b, t in zip(base, timings))
        util = timings[0].windows * flops / secs / peak
        row = f"{name:<12} {timings[0].windows:>7} {secs:>10.2f} {frames / secs:>9.0f}"
        print(f"{row} {ratio:>5.2f}x {util:>7.0%}")
    speech = [i for i, c in enumerate(clips) if c.category == "speech"]
    other = [i for i, c in enumerate(clips) if c.category != "speech"]
    for c in contexts:
        acts = runs[f"packed@{c}"][0].acts
        for label, subset in (("all", range(len(clips))), ("speech", speech), ("non-speech", other)):
            if not subset:
                continue
            fid = fidelity([base[0].acts[i] for i in subset], [acts[i] for i in subset])
            print(
                f"fidelity packed@{c} vs naive, {label} ({len(subset)} clips), per real frame: cosine mean "
                f"{fid['cos_mean']:.4f}, 1st percentile {fid['cos_p1']:.4f}, min {fid['cos_min']:.4f}; "
                f"relative L2 error mean {fid['rel_l2_mean']:.3f}"
            )
            if args.sae:
                agree = latent_agreement(
                    args.sae, [base[0].acts[i] for i in subset], [acts[i] for i in subset]
                )
                print(
                    f"  SAE codes, {label}: active-latent Jaccard {agree['jaccard_mean']:.3f}, "
                    f"same strongest latent {agree['top1_same']:.1%}"
                )
    return 0


if __name__ == "__main__":
    sys.exit(main())
