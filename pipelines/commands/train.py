"""`whisper-atlas train`: train the run's SAE on its activation shards, then check it with Whisper spliced.

Writes data/runs/<run>/sae/ (SAELens cfg.json + sae_weights.safetensors, checkpoint.pt, metrics.json), and
by default its seed-stability twin (the next seed, the same split) in data/runs/<run>/sae-stability/.
"""

from __future__ import annotations

from pathlib import Path
from typing import Annotated, Optional

import typer

from pipelines.paths import DEFAULT_RUN, corpus_dir
from pipelines.sae.config import Arch, SAEConfig, TrainConfig


def register(app: typer.Typer) -> None:
    @app.command("train")
    def train_command(
        run: Annotated[str, typer.Option(help="Run whose activations to train on.")] = DEFAULT_RUN,
        arch: Annotated[Arch, typer.Option(help="SAE architecture.")] = SAEConfig.arch,
        d_sae: Annotated[int, typer.Option(help="Number of latents.")] = SAEConfig.d_sae,
        k: Annotated[
            int, typer.Option(help="Active latents per frame (TopK; mean for BatchTopK).")
        ] = SAEConfig.k,
        epochs: Annotated[int, typer.Option(help="Passes over the training frames.")] = TrainConfig.epochs,
        lr: Annotated[
            Optional[float], typer.Option(help="Adam learning rate (default 2e-3 x sqrt(4096/d_sae)).")
        ] = TrainConfig.lr,
        batch_size: Annotated[int, typer.Option(help="Frames per step.")] = TrainConfig.batch_size,
        seed: Annotated[
            int, typer.Option(help="Seed of initialisation, split and shuffles.")
        ] = TrainConfig.seed,
        resume: Annotated[
            bool, typer.Option(help="Continue from the last epoch checkpoint if it matches.")
        ] = True,
        eval_clips: Annotated[
            int, typer.Option(help="Speech clips per held-out set for the spliced check (0 skips it).")
        ] = 40,
        stability: Annotated[
            bool,
            typer.Option(
                help="Also train the seed-stability twin (seed + 1, same split) into sae-stability/; "
                "analyze reports each feature's best decoder cosine in it."
            ),
        ] = True,
        device: Annotated[Optional[str], typer.Option(help="cpu, cuda, cuda:N (default: auto).")] = None,
    ) -> None:
        """Train the SAE (SAELens folder + metrics.json in data/runs/<run>/sae/)."""
        from rich.progress import (
            BarColumn,
            MofNCompleteColumn,
            Progress,
            TextColumn,
            TimeElapsedColumn,
            TimeRemainingColumn,
        )

        from pipelines.activations import read_meta
        from pipelines.errors import missing_stage
        from pipelines.paths import RunPaths
        from pipelines.sae.train import train_sae

        paths = RunPaths.named(run)
        meta = read_meta(paths.activations)
        if meta is None:
            raise missing_stage("activations", paths.activations, "extract")
        sae_cfg = SAEConfig(d_in=meta.d_model, d_sae=d_sae, arch=arch, k=k)
        cfg = TrainConfig(epochs=epochs, lr=lr, batch_size=batch_size, seed=seed)
        bundle = _load_model(meta.model, device) if eval_clips > 0 else None
        hook = _hook_name(meta.layer, bundle)
        with Progress(
            TextColumn("train SAE {task.fields[epoch]}"),
            BarColumn(),
            MofNCompleteColumn(),
            TextColumn("frames"),
            TimeElapsedColumn(),
            TimeRemainingColumn(),
        ) as bar:

            def trained(config: TrainConfig, folder: Path, name: str) -> dict:
                task = bar.add_task("train", total=None, epoch="")

                def progress(done: int, total: int, info: dict) -> None:
                    bar.update(
                        task, completed=done, total=total, epoch=f"{name}epoch {info['epoch']}/{epochs}"
                    )

                return train_sae(
                    paths,
                    sae_cfg,
                    config,
                    resume=resume,
                    device=device,
                    progress=progress,
                    metadata={"hook_name": hook} if hook else None,
                    folder=folder,
                )

            metrics = trained(cfg, paths.sae, "")
            if stability:
                twin = TrainConfig(**{**cfg.to_dict(), "seed": seed + 1, "split_seed": seed})
                trained(twin, paths.stability_sae, "stability twin, ")
        if bundle is not None:
            metrics = _spliced(paths, meta, bundle, eval_clips)
        _report(metrics)
        if stability:
            _report_stability(paths)


def _report_stability(paths) -> None:
    import numpy as np

    from pipelines.analysis.interpret import STABLE_COSINE, decoder_stability
    from pipelines.sae.saelens import load_sae

    best = decoder_stability(load_sae(paths.sae).W_dec, load_sae(paths.stability_sae).W_dec)
    typer.echo(
        f"  seed stability: {(best >= STABLE_COSINE).mean():.1%} of features have a decoder cosine >= "
        f"{STABLE_COSINE} in the twin trained with the next seed (median {float(np.median(best)):.3f})"
    )


def _load_model(spec: str, device: str | None):
    from pipelines.model.loader import load_whisper

    return load_whisper(spec, device=device)


def _hook_name(layer: int, bundle) -> str | None:
    from pipelines.sae.saelens import hook_name_for

    return hook_name_for(layer, bundle.n_layers) if bundle is not None else None


def _spliced(paths, meta, bundle, eval_clips: int) -> dict:
    """Run the spliced check on each held-out set and merge it into metrics.json's `fidelity`."""
    from pipelines.sae.fidelity import spliced_fidelity
    from pipelines.sae.saelens import load_sae
    from pipelines.sae.train import read_metrics, run_clips, write_metrics

    metrics = read_metrics(paths)
    clips = run_clips(meta)
    folder = Path(meta.corpus) if Path(meta.corpus).is_dir() else corpus_dir(meta.corpus)
    typer.echo(f"spliced check on up to {eval_clips} speech clips of each held-out set ...")
    sae = load_sae(paths.sae, bundle.device)
    results = spliced_fidelity(
        bundle, sae, clips, folder, meta.layer, metrics.get("split", {}), max_clips=eval_clips
    )
    for name, result in results.items():
        metrics.setdefault("fidelity", {}).setdefault(name, {}).update(result)
    write_metrics(paths, metrics)
    return metrics


def _report(metrics: dict) -> None:
    def fmt(value) -> str:
        return f"{value:.4g}" if isinstance(value, float) else str(value)

    keys = ["fvu", "fvu_heldout", "l0", "dead_fraction", "frames_per_s", "train_seconds"]
    typer.echo("  ".join(f"{key} {fmt(metrics.get(key))}" for key in keys))
    for name, fidelity in metrics.get("fidelity", {}).items():
        shown = [
            "clips",
            "fvu",
            "eval_clips",
            "divergence_median",
            "loop_share",
            "spliced_cer",
            "original_cer",
        ]
        typer.echo(f"  held out by {name}: " + "  ".join(f"{k} {fmt(fidelity.get(k))}" for k in shown))
