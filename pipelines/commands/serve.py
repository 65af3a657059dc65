"""`whisper-atlas serve`: the web explorer and JSON API over the atlas of one run (uvicorn, one process).

The pipelines package never imports the backend: uvicorn loads the app factory `backend.app:create_app` by
name, and the options reach the server's settings as `WHISPER_ATLAS_*` environment variables (the one way
`backend.settings.Settings` is configured from outside).
"""

from __future__ import annotations

import os
from pathlib import Path
from typing import Annotated, Optional

import typer

from pipelines.paths import DEFAULT_HOST, DEFAULT_PORT, DEFAULT_RUN, RunPaths

APP_FACTORY = "backend.app:create_app"


def serve(
    host: Annotated[str, typer.Option(help="Interface to listen on.")] = DEFAULT_HOST,
    port: Annotated[int, typer.Option(min=1, max=65535, help="TCP port.")] = DEFAULT_PORT,
    atlas: Annotated[
        Optional[Path], typer.Option(help="Atlas file (default: data/runs/<run>/atlas.duckdb).")
    ] = None,
    run: Annotated[str, typer.Option(help="Run whose atlas to serve.")] = DEFAULT_RUN,
    log_level: Annotated[str, typer.Option(help="uvicorn log level.")] = "info",
) -> None:
    """Serve the atlas in the browser (pages) and as JSON (/api/v1); starts even before an atlas exists."""
    import uvicorn

    os.environ.update(WHISPER_ATLAS_HOST=host, WHISPER_ATLAS_PORT=str(port), WHISPER_ATLAS_RUN=run)
    if atlas is not None:
        os.environ["WHISPER_ATLAS_ATLAS"] = str(atlas.expanduser().resolve())
    shown = atlas or RunPaths.named(run).atlas
    typer.echo(f"Whisper Atlas on http://{host}:{port}/  (atlas: {shown})")
    uvicorn.run(APP_FACTORY, factory=True, host=host, port=port, log_level=log_level)


def register(app: typer.Typer) -> None:
    app.command("serve")(serve)
