"""The sweep behind the default SAE settings: width, k, epochs and learning rate, judged on new voices.

For each setting and seed, trains an SAE on a run's activations (the trainer's own split: held out by
speaker and by sentence group, seeded, so every seed is also another split) and measures it on both held-out
sets: FVU, and the spliced check (median CER of the spliced transcript against the untouched one, share of
clips above 0.5). Prints one row per setting and seed, then the spread (min-max over seeds) per setting.
Targets (issue 9): median divergence <= 0.05 on the speaker-held-out clips, loops on at most 1 clip in 8.

    .venv/bin/python benchmarks/sae_sweep.py --run default --widths 1024 2048 4096 --ks 32 --seeds 0 1 2

Each SAE trains in a scratch run whose activations link to the source run's (nothing of the source run is
written). Results go to <run>/sweep.json as well.
"""

from __future__ import annotations

import argparse
import itertools
import json
import shutil
import statistics
import time
from pathlib import Path

from pipelines.activations import read_meta
from pipelines.model.loader import load_whisper
from pipelines.paths import RunPaths, corpus_dir
from pipelines.sae.config import SAEConfig, TrainConfig
from pipelines.sae.fidelity import spliced_fidelity
from pipelines.sae.saelens import load_sae
from pipelines.sae.train import run_clips, train_sae


def one(source: RunPaths, sae_cfg: SAEConfig, cfg: TrainConfig, bundle, eval_clips: int) -> dict:
    scratch = RunPaths.named(f".sweep-{source.root.name}")
    shutil.rmtree(scratch.root, ignore_errors=True)
    scratch.root.mkdir(parents=True)
    (scratch.root / "activations").symlink_to(source.activations.resolve())
    started = time.perf_counter()
    metrics = train_sae(scratch, sae_cfg, cfg, resume=False)
    train_s = time.perf_counter() - started
    meta = read_meta(source.activations)
    corpus = Path(meta.corpus) if Path(meta.corpus).is_dir() else corpus_dir(meta.corpus)
    started = time.perf_counter()
    fidelity = spliced_fidelity(
        bundle,
        load_sae(scratch.sae, bundle.device),
        run_clips(meta),
        corpus,
        meta.layer,
        metrics["split"],
        max_clips=eval_clips,
    )
    row = {
        "d_sae": sae_cfg.d_sae,
        "k": sae_cfg.k,
        "epochs": cfg.epochs,
        "lr": metrics["lr"],
        "seed": cfg.seed,
        "fvu_train": metrics["fvu"],
        "dead_fraction": metrics["dead_fraction"],
        "train_s": train_s,
        "eval_s": time.perf_counter() - started,
    }
    for name, result in fidelity.items():
        row[f"{name}_clips"] = result["eval_clips"]
        row[f"{name}_fvu"] = metrics["fidelity"][name]["fvu"]
        row[f"{name}_divergence"] = result["divergence_median"]
        row[f"{name}_loops"] = result["loop_share"]
        row[f"{name}_lid"] = result["lid_agreement"]
    shutil.rmtree(scratch.root, ignore_errors=True)
    return row


def fmt(value) -> str:
    return f"{value:.3f}" if isinstance(value, float) else str(value)


def main() -> None:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--run", default="default")
    parser.add_argument("--widths", type=int, nargs="+", default=[1024, 2048, 4096])
    parser.add_argument("--ks", type=int, nargs="+", default=[32])
    parser.add_argument("--epochs", type=int, nargs="+", default=[TrainConfig.epochs])
    parser.add_argument("--lrs", type=float, nargs="+", default=[None])
    parser.add_argument("--seeds", type=int, nargs="+", default=[0, 1, 2])
    parser.add_argument("--eval-clips", type=int, default=40)
    parser.add_argument("--threads", type=int, default=2)
    args = parser.parse_args()

    source = RunPaths.named(args.run)
    meta = read_meta(source.activations)
    if meta is None:
        raise SystemExit(
            f"no activations in {source.activations}: run `whisper-atlas extract --run {args.run}`"
        )
    bundle = load_whisper(meta.model)
    rows = []
    for d_sae, k, epochs, lr, seed in itertools.product(
        args.widths, args.ks, args.epochs, args.lrs, args.seeds
    ):
        sae_cfg = SAEConfig(d_in=meta.d_model, d_sae=d_sae, k=k)
        cfg = TrainConfig(epochs=epochs, lr=lr, seed=seed, threads=args.threads)
        row = one(source, sae_cfg, cfg, bundle, args.eval_clips)
        rows.append(row)
        print("  ".join(f"{key} {fmt(value)}" for key, value in row.items()), flush=True)
    (source.root / "sweep.json").write_text(json.dumps(rows, indent=1))
    print(f"\nwindow mode {meta.window}, {meta.n_frames:,} frames; spread over seeds (min-max):")
    for setting, group in itertools.groupby(rows, key=lambda r: (r["d_sae"], r["k"], r["epochs"], r["lr"])):
        group = list(group)
        cells = []
        for key in ("speaker_fvu", "speaker_divergence", "speaker_loops", "group_fvu", "group_divergence"):
            values = [r[key] for r in group if r[key] is not None]
            if values:
                cells.append(f"{key} {statistics.median(values):.3f} [{min(values):.3f}, {max(values):.3f}]")
        print(
            f"d_sae {setting[0]} k {setting[1]} epochs {setting[2]} lr {setting[3]:.2g}: " + "  ".join(cells)
        )


if __name__ == "__main__":
    main()
