"""`whisper-atlas build` (the atlas from a saved analysis) and `whisper-atlas export` (SAELens, Neuronpedia,
Parquet)."""

from __future__ import annotations

from enum import Enum
from pathlib import Path
from typing import Annotated

import typer


class ExportKind(str, Enum):
    saelens = "saelens"
    neuronpedia = "neuronpedia"
    parquet = "parquet"


def register(app: typer.Typer) -> None:
    @app.command("build")
    def build_command(
        run: Annotated[str, typer.Option(help="Run whose analysis to lay out.")] = "default",
        corpus: Annotated[str, typer.Option(help="Corpus the run was made from.")] = "default",
    ) -> None:
        """Write data/runs/<run>/atlas.duckdb from the analysis (a new file, swapped in atomically)."""
        import time

        from pipelines.atlas.build import build_atlas
        from pipelines.paths import RunPaths, corpus_dir

        started = time.time()
        paths = RunPaths.named(run)
        path = build_atlas(paths, corpus_dir(corpus))
        size_mb = path.stat().st_size / 1e6
        typer.echo(f"atlas written: {path} ({size_mb:.1f} MB, {time.time() - started:.1f} s)")

    @app.command("export")
    def export_command(
        kind: Annotated[ExportKind, typer.Argument(help="saelens, neuronpedia or parquet.")],
        out: Annotated[Path, typer.Argument(help="Folder to write into (created).")],
        run: Annotated[str, typer.Option(help="Run to export.")] = "default",
    ) -> None:
        """Export the run's SAE (SAELens folder) or atlas (Neuronpedia jsonl.gz, Parquet tables)."""
        from pipelines.paths import RunPaths

        paths = RunPaths.named(run)
        if kind is ExportKind.saelens:
            from pipelines.export.saelens import export_saelens

            written = export_saelens(paths.sae, out)
        elif kind is ExportKind.neuronpedia:
            from pipelines.export.neuronpedia import export_neuronpedia

            written = export_neuronpedia(paths.atlas, paths.sae, out)
        else:
            from pipelines.export.parquet import export_parquet

            export_parquet(paths.atlas, out)
            written = out
        typer.echo(f"{kind.value} export written: {written}")
