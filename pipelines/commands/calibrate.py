"""`whisper-atlas calibrate`: steering's gradients, selectivities and presets from training clips."""

from __future__ import annotations

from typing import Annotated

import typer

from pipelines.paths import DEFAULT_CORPUS, DEFAULT_RUN


def register(app: typer.Typer) -> None:
    @app.command("calibrate")
    def calibrate_command(
        run: Annotated[str, typer.Option(help="Run name (data/runs/<run>/).")] = DEFAULT_RUN,
        corpus: Annotated[str, typer.Option(help="Corpus name (data/corpora/<corpus>/).")] = DEFAULT_CORPUS,
    ) -> None:
        """Learn steering's directions from training clips only and measure each preset's strength curve."""
        from rich.console import Console

        from pipelines.corpus.manifest import read_manifest
        from pipelines.errors import MissingStageError
        from pipelines.paths import RunPaths, corpus_dir
        from pipelines.steering.calibrate import calibrate, calibration_resources

        console = Console()
        paths = RunPaths.named(run)
        if not (paths.sae / "cfg.json").exists():
            raise MissingStageError(f"no SAE in {paths.sae}: run `whisper-atlas train` first")
        res = calibration_resources(paths)
        folder = corpus_dir(corpus)
        summary = calibrate(paths, res, folder, read_manifest(folder))
        ranks = ", ".join(
            f"{rank} {r['best_success_rate']:.2f} at {r['best_strength']}"
            for rank, r in summary["rank_comparison"].items()
        )
        console.print(f"feature ranking by success on training clips: {ranks}; using {summary['rank']}")
        console.print(
            f"{len(summary['presets'])} presets ({', '.join(summary['presets'])}) in {summary['seconds']} s "
            f"-> {paths.root / 'steering'}"
        )
