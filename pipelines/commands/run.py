"""`whisper-atlas demo` (the whole pipeline, then serve) and `whisper-atlas status` (what a run holds)."""

from __future__ import annotations

import json
from typing import Annotated, Optional

import typer

from pipelines.paths import DEFAULT_CORPUS, DEFAULT_HOST, DEFAULT_PORT, DEFAULT_RUN


def register(app: typer.Typer) -> None:
    @app.command("demo")
    def demo_command(
        size: Annotated[str, typer.Option(help="Corpus size: small, default or large.")] = "default",
        corpus: Annotated[str, typer.Option(help="Corpus name.")] = DEFAULT_CORPUS,
        run: Annotated[str, typer.Option(help="Run name.")] = DEFAULT_RUN,
        model: Annotated[Optional[str], typer.Option(help="Whisper model (default: bundled base).")] = None,
        layer: Annotated[Optional[int], typer.Option(help="Encoder layer (default: final output).")] = None,
        serve: Annotated[bool, typer.Option(help="Serve the atlas when it is built.")] = True,
        host: Annotated[str, typer.Option(help="Interface to serve on.")] = DEFAULT_HOST,
        port: Annotated[int, typer.Option(help="Port to serve on.")] = DEFAULT_PORT,
    ) -> None:
        """Build the atlas end to end (corpus, extract, train, analyze, build), skipping what is current."""
        import time

        from rich.console import Console

        from pipelines.demo import demo_stages, run_stages
        from pipelines.paths import RunPaths
        from pipelines.stages import StageLog

        console = Console()
        started = time.time()
        paths = RunPaths.named(run)
        run_stages(app, demo_stages(corpus, size, run, model, layer), StageLog(paths), console)
        console.print(f"[bold green]atlas ready[/] at {paths.atlas} ({time.time() - started:.0f} s)")
        if serve:
            app(["serve", "--run", run, "--host", host, "--port", str(port)], standalone_mode=False)

    @app.command("status")
    def status_command(
        run: Annotated[str, typer.Option(help="Run name.")] = DEFAULT_RUN,
        as_json: Annotated[bool, typer.Option("--json", help="Print JSON instead of a table.")] = False,
    ) -> None:
        """Stages done (with their inputs' fingerprints), the SAE's metrics, the atlas path and size."""
        from pipelines.run_status import render_status, run_status

        status = run_status(run)
        if as_json:
            typer.echo(json.dumps(status, indent=1, default=str))
        else:
            render_status(status)
