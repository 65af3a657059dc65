"""`whisper-atlas extract`: encoder activations of every corpus clip at one layer, real frames only."""

from __future__ import annotations

from typing import Annotated, Optional

import typer

from pipelines.commands.engine_options import (
    AddressOption,
    EngineOption,
    NumCpusOption,
    WorkersOption,
    ray_config,
)
from pipelines.model.pack_config import PackConfig
from pipelines.paths import DEFAULT_CORPUS, DEFAULT_RUN
from pipelines.recordings import WindowMode


def register(app: typer.Typer) -> None:
    @app.command("extract")
    def extract_command(
        run: Annotated[str, typer.Option(help="Run name (data/runs/<run>/).")] = DEFAULT_RUN,
        corpus: Annotated[str, typer.Option(help="Corpus name (data/corpora/<corpus>/).")] = DEFAULT_CORPUS,
        model: Annotated[
            str, typer.Option(help="bundled:whisper-base, a transformers folder, or a hub id.")
        ] = "bundled:whisper-base",
        layer: Annotated[
            Optional[int], typer.Option(help="Encoder layer 0..N (default N: the final output).")
        ] = None,
        batch_size: Annotated[
            Optional[int],
            typer.Option(help="Windows per encoder call (default: by model size and device, SCALING.md)."),
        ] = None,
        window: Annotated[
            WindowMode,
            typer.Option(
                help="How clips fill encoder windows. recording: a speaker's clips joined into recordings of "
                "up to 30 s (exact Whisper computation, mostly speech); solo: every clip alone in a padded "
                "30 s window (exact, as the server, ~2x the windows); packed: clips share windows, each "
                "keeping --pack-context frames of padding (approximate: per-frame cosine to solo 0.985)."
            ),
        ] = "recording",
        pack_context: Annotated[
            int, typer.Option(help="Padding frames (20 ms) each packed clip keeps (--window packed).")
        ] = PackConfig.context_frames,
        engine: EngineOption = "local",
        address: AddressOption = None,
        num_cpus: NumCpusOption = None,
        workers: WorkersOption = None,
    ) -> None:
        """Run Whisper's encoder over the corpus and store float16 activations of real frames (resumable).

        With --engine ray, Ray Data decodes the audio and an actor pool runs the encoder (a GPU per actor
        when the cluster has GPUs); the shards, meta.json and resumption are the local engine's."""
        import functools
        from contextlib import nullcontext

        from rich.console import Console
        from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn, TimeRemainingColumn

        from pipelines.engines.cluster import ray_session
        from pipelines.engines.ray_extract import RayExtraction
        from pipelines.extract import extract
        from pipelines.model.loader import load_whisper
        from pipelines.paths import RunPaths, corpus_dir

        console = Console()
        paths = RunPaths.named(run)
        cluster = ray_config(engine, address, num_cpus, workers)
        columns = (TextColumn("extract"), BarColumn(), MofNCompleteColumn(), TimeRemainingColumn())
        with ray_session(cluster) if cluster else nullcontext():
            # On Ray the actors encode; this process plans and writes (the model on CPU for its shape).
            bundle = load_whisper(model, device="cpu" if cluster else None)
            chunks = RayExtraction(functools.partial(load_whisper, model), cluster) if cluster else None
            with Progress(*columns, console=console) as progress:
                task = progress.add_task("clips", total=None)

                def update(finished: int, total: int) -> None:
                    progress.update(task, completed=finished, total=total)

                report = extract(
                    corpus_dir(corpus),
                    paths,
                    bundle,
                    layer,
                    batch_size,
                    window,
                    context_frames=pack_context,
                    on_progress=update,
                    engine=chunks,
                )
        if report.restarted:
            console.print("inputs changed (model, layer, corpus or windows): previous activations discarded")
        for failure in report.failed:
            console.print(f"  skipped {failure}", markup=False, highlight=False)
        mode = f"packed (context {pack_context})" if window == "packed" else f"{window} windows"
        console.print(
            f"layer {report.layer}, {mode}: {report.clips_done} clips encoded, "
            f"{report.clips_skipped} already done, {report.frames:,} frames in {report.windows} windows, "
            f"{report.seconds:.1f} s "
            f"({report.frames_per_s:,.0f} frames/s) -> {paths.activations}"
        )
