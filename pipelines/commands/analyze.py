"""`whisper-atlas analyze`: per-feature statistics, examples, transcripts and labels (pipelines.analysis)."""

from __future__ import annotations

from typing import Annotated, Optional

import typer

from pipelines.analysis.config import AnalysisConfig
from pipelines.commands.engine_options import (
    AddressOption,
    EngineOption,
    NumCpusOption,
    WorkersOption,
    ray_config,
)
from pipelines.paths import DEFAULT_CORPUS, DEFAULT_RUN


def register(app: typer.Typer) -> None:
    @app.command("analyze")
    def analyze_command(
        run: Annotated[str, typer.Option(help="Run whose activations and SAE to analyse.")] = DEFAULT_RUN,
        corpus: Annotated[
            str, typer.Option(help="Corpus the activations were extracted from.")
        ] = DEFAULT_CORPUS,
        model: Annotated[
            Optional[str], typer.Option(help="Whisper model for transcripts (default: the extraction's).")
        ] = None,
        top_k: Annotated[
            int, typer.Option(help="Top examples per feature (one per clip).")
        ] = AnalysisConfig.top_k,
        quantiles: Annotated[
            int, typer.Option(help="Activation bins for quantile examples.")
        ] = AnalysisConfig.quantile_bins,
        window_frames: Annotated[
            int, typer.Option(help="Frames of context per example (20 ms each).")
        ] = AnalysisConfig.window_frames,
        device: Annotated[Optional[str], typer.Option(help="cpu, cuda, cuda:N (default: auto).")] = None,
        engine: EngineOption = "local",
        address: AddressOption = None,
        num_cpus: NumCpusOption = None,
        workers: WorkersOption = None,
    ) -> None:
        """Encode every frame once with the SAE and save what the atlas shows about each feature.

        With --engine ray, the windows' transcription and alignment (the heaviest step) run on a pool of Ray
        actors, each holding the model; the result is the local engine's."""
        import functools
        import time
        from contextlib import nullcontext

        from rich.console import Console

        from pipelines.activations import read_meta
        from pipelines.analysis.analyze import analyze
        from pipelines.engines.cluster import ray_session
        from pipelines.engines.ray_transcribe import RayTranscription
        from pipelines.errors import missing_stage
        from pipelines.model.loader import load_whisper
        from pipelines.paths import RunPaths, corpus_dir
        from pipelines.sae.saelens import load_sae

        console = Console()
        started = time.time()
        paths = RunPaths.named(run)
        meta = read_meta(paths.activations)
        if meta is None:
            raise missing_stage("activations", paths.activations, "extract")
        cfg = AnalysisConfig(top_k=top_k, quantile_bins=quantiles, window_frames=window_frames)
        cluster = ray_config(engine, address, num_cpus, workers)
        with ray_session(cluster) if cluster else nullcontext():
            spec = model or meta.model
            bundle = load_whisper(spec, device=device)
            sae = load_sae(paths.sae, device=bundle.device)
            load = functools.partial(load_whisper, spec, device=device)
            transcribe = RayTranscription(load, cluster, cfg) if cluster else None
            result = analyze(paths, corpus_dir(corpus), bundle, sae, cfg, transcribe)
        live = int((result.features.fire_count > 0).sum())
        console.print(
            f"analysed {result.meta.n_features} features ({live} live) over {result.meta.n_frames} frames "
            f"in {time.time() - started:.0f} s -> {paths.analysis}"
        )
        if transcribe is not None:
            console.print(
                f"transcription: {transcribe.batches} batches of windows on {transcribe.actors} Ray actors"
            )
        for note in result.meta.notes:
            console.print(f"[yellow]note:[/yellow] {note}")
