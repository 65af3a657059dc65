"""Per-frame costs by Whisper size on this machine: the measured numbers behind docs/SCALING.md.

Only whisper-base's weights are here (bundled), so every size's encoder is built from its architecture with
random weights: a forward costs the same FLOPs whatever the weights, and the bundled base is timed beside its
random twin in the same run to show it (ratio ~1). Per size, one 30 s window (1,500 frames) through the
encoder to its final output, medians of a few repeats, as a ratio to base. Also the CPU work that stays on
the CPU when a GPU runs the encoder (audio decoding per audio second, log-mel per window), SAE steps at each
size's default width, k and batch (`pipelines.model.sizes`), and the bytes a stored frame takes.

    .venv/bin/python benchmarks/scale_bench.py [--sizes tiny,base,small,medium,large-v3] [--threads 2]
"""

from __future__ import annotations

import argparse
import json
import statistics
import time

import numpy as np
import torch
from transformers import WhisperConfig
from transformers.models.whisper.modeling_whisper import WhisperEncoder

from pipelines.audio import decode_audio
from pipelines.constants import FRAMES_PER_WINDOW, SAMPLE_RATE, WINDOW_SAMPLES
from pipelines.corpus.manifest import read_manifest
from pipelines.model.sizes import SIZES, ModelSize
from pipelines.paths import RunPaths, corpus_dir
from pipelines.sae.config import SAEConfig, TrainConfig
from pipelines.sae.train import SAEStepper, initial_sae


def random_encoder(size: ModelSize) -> WhisperEncoder:
    """The size's encoder architecture (OpenAI's published shapes), random weights, eval mode, float32."""
    mels = 128 if size.name == "large-v3" else 80
    config = WhisperConfig(
        num_mel_bins=mels,
        d_model=size.d_model,
        encoder_layers=size.encoder_layers,
        encoder_attention_heads=size.d_model // 64,
        encoder_ffn_dim=4 * size.d_model,
        max_source_positions=FRAMES_PER_WINDOW,
    )
    return WhisperEncoder(config).eval()


@torch.inference_mode()
def seconds_per_window(encoder: torch.nn.Module, mels: int, repeats: int) -> float:
    features = torch.randn(1, mels, 2 * FRAMES_PER_WINDOW)
    encoder(features)  # warm-up (allocations, kernels)
    times = []
    for _ in range(repeats):
        start = time.perf_counter()
        encoder(features)
        times.append(time.perf_counter() - start)
    return statistics.median(times)


def encoder_params(encoder: torch.nn.Module) -> int:
    return sum(p.numel() for p in encoder.parameters())


def sae_frames_per_s(size: ModelSize, steps: int) -> float:
    """Frames/s of the shared training step at the size's default width, k and batch (random frames)."""
    sae_cfg = SAEConfig(d_in=size.d_model, d_sae=size.d_sae, k=size.k)
    cfg = TrainConfig(batch_size=size.train_batch)
    frames_ND = torch.randn(4 * size.train_batch, size.d_model) + 2.0
    sae = initial_sae(sae_cfg, torch.Generator().manual_seed(0), 1.0, lambda g: frames_ND[:1024])
    stepper = SAEStepper(sae, cfg, torch.device("cpu"), scale=1.0, total_steps=10 * steps, dead_window=10**6)
    batches = frames_ND.split(size.train_batch)
    stepper.train_step(batches[0])
    start = time.perf_counter()
    for i in range(steps):
        stepper.train_step(batches[i % len(batches)])
    return steps * size.train_batch / (time.perf_counter() - start)


def cpu_side(clips: int) -> dict:
    """Audio decoding s per audio second (default corpus FLAC) and log-mel s per window (80 and 128 bins)."""
    from transformers import WhisperFeatureExtractor

    folder = corpus_dir()
    out: dict = {}
    if (folder / "manifest.jsonl").exists():
        rows = read_manifest(folder)[:clips]
        start = time.perf_counter()
        audio_s = sum(len(decode_audio(folder / clip.path)) for clip in rows) / SAMPLE_RATE
        out["decode_s_per_audio_s"] = (time.perf_counter() - start) / audio_s
    window = np.random.default_rng(0).standard_normal(WINDOW_SAMPLES).astype(np.float32) * 0.1
    for mels in (80, 128):
        extractor = WhisperFeatureExtractor(feature_size=mels)
        extractor([window], sampling_rate=SAMPLE_RATE, return_tensors="pt")
        start = time.perf_counter()
        for _ in range(5):
            extractor([window], sampling_rate=SAMPLE_RATE, return_tensors="pt")
        out[f"logmel{mels}_s_per_window"] = (time.perf_counter() - start) / 5
    return out


def stored_bytes() -> dict:
    """Bytes per real frame of the default run's activations, and the share of stored gap/padding frames."""
    folder = RunPaths.named().activations
    meta_path = folder / "meta.json"
    if not meta_path.exists():
        return {}
    meta = json.loads(meta_path.read_text())
    real = sum(s["n_frames"] for s in meta["shards"])
    rest = sum(np.load(p, mmap_mode="r").shape[0] for p in folder.glob("*.rest.npy"))
    total = sum(p.stat().st_size for p in folder.iterdir())
    windows = sum(len(s["windows"]) for s in meta["shards"])
    return {
        "model": meta["model"],
        "real_frames": real,
        "rest_per_real_frame": rest / real,
        "bytes_per_real_frame": total / real,
        "windows": windows,
        "window_fill": real / (windows * FRAMES_PER_WINDOW),
    }


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--sizes", default=",".join(s.name for s in SIZES))
    parser.add_argument("--threads", type=int, default=2)
    parser.add_argument("--repeats", type=int, default=3)
    parser.add_argument("--sae-steps", type=int, default=20)
    args = parser.parse_args()
    torch.set_num_threads(args.threads)
    chosen = [s for s in SIZES if s.name in args.sizes.split(",")]
    print(f"torch {torch.__version__}, {args.threads} threads; one 30 s window = {FRAMES_PER_WINDOW} frames")

    from pipelines.model.loader import load_whisper

    base = next(s for s in SIZES if s.name == "base")
    bundled = load_whisper("bundled:whisper-base", device="cpu").model.model.encoder
    twin = random_encoder(base)
    real_s, twin_s = (seconds_per_window(e, 80, args.repeats) for e in (bundled, twin))
    print(f"bundled base {real_s:.3f} s/window, random base {twin_s:.3f}: ratio {real_s / twin_s:.2f}")
    del bundled

    results = {}
    for size in chosen:
        encoder = twin if size is base else random_encoder(size)
        mels = 128 if size.name == "large-v3" else 80
        repeats = args.repeats if size.encoder_layers <= 12 else 1
        s = seconds_per_window(encoder, mels, repeats)
        results[size.name] = {
            "encoder_params_m": encoder_params(encoder) / 1e6,
            "s_per_window": s,
            "ms_per_frame": 1000 * s / FRAMES_PER_WINDOW,
            "sae_frames_per_s": sae_frames_per_s(size, args.sae_steps),
        }
        del encoder
    base_s = results.get("base", {}).get("s_per_window", twin_s)
    print("| size | encoder params | s / window | ms / frame | x base | SAE frames/s (d_sae, k, batch) |")
    print("| --- | --- | --- | --- | --- | --- |")
    for size in chosen:
        r = results[size.name]
        print(
            f"| {size.name} | {r['encoder_params_m']:.0f}M | {r['s_per_window']:.2f} "
            f"| {r['ms_per_frame']:.2f} "
            f"| {r['s_per_window'] / base_s:.1f} | {r['sae_frames_per_s']:,.0f} "
            f"({size.d_sae}, {size.k}, {size.train_batch}) |"
        )
    print("CPU side per window / audio second:", json.dumps(cpu_side(40)))
    print("stored activations:", json.dumps(stored_bytes()))
    print(f"(threads {args.threads}; GFLOP estimate per base window = 2 x params x frames: "
          f"{2 * results.get('base', {}).get('encoder_params_m', 20) * 1e6 * FRAMES_PER_WINDOW / 1e9:.0f} "
          f"+ attention; load: see `uptime` beside the run)")  # fmt: skip


if __name__ == "__main__":
    main()
