"""`whisper-atlas serve`: the web explorer and JSON API over the atlas of one run (uvicorn, one process)."""

from __future__ import annotations

from pathlib import Path
from typing import Annotated, Optional

import typer

from pipelines.paths import DEFAULT_RUN


def serve(
    host: Annotated[str, typer.Option(help="Interface to listen on.")] = "127.0.0.1",
    port: Annotated[int, typer.Option(min=1, max=65535, help="TCP port.")] = 8000,
    atlas: Annotated[
        Optional[Path], typer.Option(help="Atlas file (default: data/runs/<run>/atlas.duckdb).")
    ] = None,
    run: Annotated[str, typer.Option(help="Run whose atlas to serve.")] = DEFAULT_RUN,
    log_level: Annotated[str, typer.Option(help="uvicorn log level.")] = "info",
) -> None:
    """Serve the atlas in the browser (pages) and as JSON (/api/v1); starts even before an atlas exists."""
    import uvicorn

    from backend.app import create_app
    from backend.settings import Settings

    settings = Settings(host=host, port=port, atlas=atlas, run=run)
    typer.echo(f"Whisper Atlas on http://{settings.host}:{settings.port}/  (atlas: {settings.atlas_path})")
    uvicorn.run(create_app(settings), host=settings.host, port=settings.port, log_level=log_level)


def register(app: typer.Typer) -> None:
    app.command("serve")(serve)
