"""`whisper-atlas`: the command line, one subcommand per pipeline stage plus `demo`, `status` and `serve`.

Each area registers its commands from `pipelines/commands/<area>.py` (a `register(app)` function) and keeps
heavy imports (torch, transformers) inside the command bodies so `--help` stays instant.
"""

from __future__ import annotations

import importlib

import typer
from typer.core import TyperGroup

from pipelines.errors import AtlasError


class AtlasGroup(TyperGroup):
    """Every command's user-facing errors print as one line (`error: ...`), exit status 1, no traceback."""

    def invoke(self, ctx):  # type: ignore[no-untyped-def]
        try:
            return super().invoke(ctx)
        except AtlasError as exc:
            typer.echo(f"error: {exc}", err=True)
            raise typer.Exit(1) from None


app = typer.Typer(
    cls=AtlasGroup,
    name="whisper-atlas",
    help="Build and browse an atlas of sparse-autoencoder features of Whisper's encoder.",
    no_args_is_help=True,
    pretty_exceptions_enable=False,
)

COMMAND_MODULES = (
    "corpus",
    "model",
    "extract",
    "train",
    "analyze",
    "calibrate",
    "build",
    "steer",
    "serve",
    "run",
)

for _name in COMMAND_MODULES:
    importlib.import_module(f"pipelines.commands.{_name}").register(app)


if __name__ == "__main__":
    app()
