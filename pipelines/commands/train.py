"""`whisper-atlas train`: train the run's SAE on its activation shards, then check it with Whisper spliced;
`whisper-atlas stream`: train one while the encoder runs over a corpus, storing no activations.

`train` writes data/runs/<run>/sae/ (SAELens cfg.json + sae_weights.safetensors, checkpoint.pt,
metrics.json), and by default its seed-stability twin (the next seed, the same split) in
data/runs/<run>/sae-stability/; `--distributed N` trains each on N processes (DDP under torchrun,
`pipelines.sae.ddp`). `stream` writes the same SAE folder (`pipelines.sae.stream`). Width, k and batch
default to the model size's row of `pipelines.model.sizes`.
"""

from __future__ import annotations

from pathlib import Path
from typing import Annotated, Literal, Optional

import typer

from pipelines.paths import DEFAULT_CORPUS, DEFAULT_RUN, corpus_dir
from pipelines.sae.config import STREAM_BUFFER_FRAMES, Arch, SAEConfig, TrainConfig

StreamWindow = Literal["recording", "solo"]


def register(app: typer.Typer) -> None:
    @app.command("train")
    def train_command(
        run: Annotated[str, typer.Option(help="Run whose activations to train on.")] = DEFAULT_RUN,
        arch: Annotated[Arch, typer.Option(help="SAE architecture.")] = SAEConfig.arch,
        d_sae: Annotated[Optional[int], typer.Option(help=_BY_SIZE.format("Number of latents"))] = None,
        k: Annotated[
            Optional[int],
            typer.Option(help=_BY_SIZE.format("Active latents per frame (mean for BatchTopK)")),
        ] = None,
        epochs: Annotated[int, typer.Option(help="Passes over the training frames.")] = TrainConfig.epochs,
        lr: Annotated[
            Optional[float], typer.Option(help="Adam learning rate (default 2e-3 x sqrt(4096/d_sae)).")
        ] = TrainConfig.lr,
        batch_size: Annotated[Optional[int], typer.Option(help=_BY_SIZE.format("Frames per step"))] = None,
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
        distributed: Annotated[
            int,
            typer.Option(
                help="Train on N processes with DistributedDataParallel (torchrun on this machine; gloo on "
                "CPU, NCCL with one GPU each); 0 or 1: one process.",
                min=0,
            ),
        ] = 0,
    ) -> None:
        """Train the SAE (SAELens folder + metrics.json in data/runs/<run>/sae/)."""
        from pipelines.activations import read_meta
        from pipelines.errors import missing_stage
        from pipelines.paths import RunPaths
        from pipelines.sae.train import train_sae

        paths = RunPaths.named(run)
        meta = read_meta(paths.activations)
        if meta is None:
            raise missing_stage("activations", paths.activations, "extract")
        sae_cfg, cfg = _configs(meta.d_model, arch, d_sae, k, epochs, lr, batch_size, seed)
        bundle = _load_model(meta.model, device) if eval_clips > 0 else None
        hook = _hook_name(meta.layer, bundle)
        metadata = {"hook_name": hook} if hook else None

        def trained(config: TrainConfig, folder: Path, name: str) -> dict:
            if distributed > 1:
                from pipelines.sae.ddp import launch

                typer.echo(f"train SAE {name}on {distributed} processes (torchrun, DDP)")
                return launch(
                    run, sae_cfg, config, distributed, folder=folder, metadata=metadata, resume=resume
                )
            with _bar() as bar:
                return train_sae(
                    paths,
                    sae_cfg,
                    config,
                    resume=resume,
                    device=device,
                    progress=_progress(bar, f"train SAE {name}", epochs),
                    metadata=metadata,
                    folder=folder,
                )

        metrics = trained(cfg, paths.sae, "")
        if stability:
            twin = TrainConfig(**{**cfg.to_dict(), "seed": seed + 1, "split_seed": seed})
            trained(twin, paths.stability_sae, "stability twin, ")
        if bundle is not None:
            metrics = _spliced(paths, meta.corpus, meta.layer, bundle, eval_clips)
        _report(metrics)
        if stability:
            _report_stability(paths)

    @app.command("stream")
    def stream_command(
        run: Annotated[str, typer.Option(help="Run whose sae/ folder to write.")] = DEFAULT_RUN,
        corpus: Annotated[
            str, typer.Option(help="Corpus to stream (data/corpora/<corpus>/).")
        ] = DEFAULT_CORPUS,
        hf_dataset: Annotated[
            Optional[str],
            typer.Option(help="Stream a Hugging Face dataset instead of the corpus (needs the hf extra)."),
        ] = None,
        hf_config: Annotated[Optional[str], typer.Option(help="Its config (language), if any.")] = None,
        hf_split: Annotated[str, typer.Option(help="Its split.")] = "train",
        hf_data_dir: Annotated[
            Optional[str], typer.Option(help="Local files for a packaged loader such as audiofolder.")
        ] = None,
        limit: Annotated[int, typer.Option(help="Examples to stream from the dataset.")] = 1000,
        model: Annotated[
            str, typer.Option(help="bundled:whisper-base, a transformers folder, or a hub id.")
        ] = "bundled:whisper-base",
        layer: Annotated[
            Optional[int], typer.Option(help="Encoder layer 0..N (default N: the final output).")
        ] = None,
        window: Annotated[
            StreamWindow, typer.Option(help="How corpus clips fill encoder windows (as in extract).")
        ] = "recording",
        extract_batch: Annotated[
            Optional[int], typer.Option(help=_BY_SIZE.format("Windows per encoder call"))
        ] = None,
        buffer_frames: Annotated[
            int, typer.Option(help="Frames the in-memory shuffle buffer holds (float16).", min=1)
        ] = STREAM_BUFFER_FRAMES,
        arch: Annotated[Arch, typer.Option(help="SAE architecture.")] = SAEConfig.arch,
        d_sae: Annotated[Optional[int], typer.Option(help=_BY_SIZE.format("Number of latents"))] = None,
        k: Annotated[Optional[int], typer.Option(help=_BY_SIZE.format("Active latents per frame"))] = None,
        epochs: Annotated[
            int, typer.Option(help="Passes over the stream (each runs the encoder again).")
        ] = 1,
        lr: Annotated[Optional[float], typer.Option(help="Adam learning rate.")] = TrainConfig.lr,
        batch_size: Annotated[Optional[int], typer.Option(help=_BY_SIZE.format("Frames per step"))] = None,
        seed: Annotated[int, typer.Option(help="Seed of initialisation, split and shuffles.")] = 0,
        eval_clips: Annotated[
            int, typer.Option(help="Speech clips per held-out set for the spliced check (0 skips it).")
        ] = 40,
        device: Annotated[Optional[str], typer.Option(help="cpu, cuda, cuda:N (default: auto).")] = None,
    ) -> None:
        """Train the SAE while Whisper's encoder runs over the corpus: no activation is written."""
        from pipelines.model.loader import load_whisper
        from pipelines.paths import RunPaths
        from pipelines.sae.stream import train_streaming
        from pipelines.streaming import CorpusSource, DatasetSource

        bundle = load_whisper(model, device=device)
        paths = RunPaths.named(run)
        sae_cfg, cfg = _configs(bundle.d_model, arch, d_sae, k, epochs, lr, batch_size, seed)
        source: CorpusSource | DatasetSource
        if hf_dataset:
            source = DatasetSource(
                hf_dataset,
                bundle,
                hf_config,
                hf_split,
                limit,
                hf_data_dir,
                layer,
                extract_batch,
                cfg.heldout_fraction,
                seed,
            )
        else:
            source = CorpusSource(
                corpus_dir(corpus), bundle, layer, extract_batch, window, cfg.heldout_fraction, seed
            )
        hook = _hook_name(source.info["layer"], bundle)
        with _bar() as bar:
            metrics = train_streaming(
                paths.sae,
                sae_cfg,
                cfg,
                source,
                buffer_frames=buffer_frames,
                device=bundle.device,
                progress=_progress(bar, "stream SAE ", epochs),
                metadata={"hook_name": hook},
            )
        for failure in source.failed:
            typer.echo(f"  skipped {failure}")
        streamed = metrics["streamed"]
        typer.echo(
            f"streamed {metrics['train_frames']:,} training frames per pass through a buffer of "
            f"{streamed['buffer_frames']:,} (at most {streamed['max_buffer_frames']:,} held); "
            f"no activations written; {metrics['stream_seconds']:.1f} s"
        )
        if eval_clips > 0 and not hf_dataset:
            metrics = _spliced(paths, corpus, source.info["layer"], bundle, eval_clips)
        _report(metrics)


_BY_SIZE = "{} (default: by model size, docs/SCALING.md)."


def _configs(
    d_model: int,
    arch: Arch,
    d_sae: int | None,
    k: int | None,
    epochs: int,
    lr: float | None,
    batch_size: int | None,
    seed: int,
) -> tuple[SAEConfig, TrainConfig]:
    """The SAE and training configs, with the model size's width, k and batch where none is given."""
    from pipelines.model.sizes import size_for_width

    size = size_for_width(d_model)
    sae_cfg = SAEConfig(d_in=d_model, d_sae=d_sae or size.d_sae, arch=arch, k=k or size.k)
    cfg = TrainConfig(epochs=epochs, lr=lr, batch_size=batch_size or size.train_batch, seed=seed)
    return sae_cfg, cfg


def _bar():
    from rich.progress import (
        BarColumn,
        MofNCompleteColumn,
        Progress,
        TextColumn,
        TimeElapsedColumn,
        TimeRemainingColumn,
    )

    return Progress(
        TextColumn("{task.fields[epoch]}"),
        BarColumn(),
        MofNCompleteColumn(),
        TextColumn("frames"),
        TimeElapsedColumn(),
        TimeRemainingColumn(),
    )


def _progress(bar, name: str, epochs: int):
    """A trainer's progress callback drawing on `bar`."""
    task = bar.add_task("train", total=None, epoch=name)

    def progress(done: int, total: int, info: dict) -> None:
        bar.update(task, completed=done, total=total, epoch=f"{name}epoch {info['epoch']}/{epochs}")

    return progress


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


def _spliced(paths, corpus: str, layer: int, bundle, eval_clips: int) -> dict:
    """Run the spliced check on each held-out set and merge it into metrics.json's `fidelity`."""
    from pipelines.corpus.manifest import read_manifest
    from pipelines.sae.fidelity import spliced_fidelity
    from pipelines.sae.saelens import load_sae
    from pipelines.sae.train import read_metrics, write_metrics

    metrics = read_metrics(paths)
    folder = Path(corpus) if Path(corpus).is_dir() else corpus_dir(corpus)
    clips = read_manifest(folder)
    typer.echo(f"spliced check on up to {eval_clips} speech clips of each held-out set ...")
    sae = load_sae(paths.sae, bundle.device)
    results = spliced_fidelity(
        bundle, sae, clips, folder, layer, metrics.get("split", {}), max_clips=eval_clips
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
