"""`whisper-atlas calibrate`: steering's gradients, selectivities and presets from training clips."""

from __future__ import annotations

from typing import Annotated

import typer

from pipelines.paths import DEFAULT_RUN


def register(app: typer.Typer) -> None:
    @app.command("calibrate")
    def calibrate_command(
        run: Annotated[str, typer.Option(help="Run name (data/runs/<run>/).")] = DEFAULT_RUN,
        corpus: Annotated[
            str | None, typer.Option(help="Corpus name; must be the run's (default: the run's own).")
        ] = None,
    ) -> None:
        """Learn steering's directions from training clips only and measure each preset's strength curve."""
        from rich.console import Console

        from pipelines.activations import read_meta
        from pipelines.errors import AtlasError, MissingStageError
        from pipelines.paths import RunPaths
        from pipelines.sae.train import run_clips, run_corpus
        from pipelines.steering.calibrate import calibrate, calibration_resources

        console = Console()
        paths = RunPaths.named(run)
        if not (paths.sae / "cfg.json").exists():
            raise MissingStageError(f"no SAE in {paths.sae}: run `whisper-atlas train` first")
        meta = read_meta(paths.activations)
        if meta is None:
            raise MissingStageError(
                f"no activations in {paths.activations}: run `whisper-atlas extract` first"
            )
        if corpus is not None and corpus != meta.corpus:  # the split's rows index the run's own manifest
            raise AtlasError(f"run {run!r} was extracted from corpus {meta.corpus!r}, not {corpus!r}")
        clips = run_clips(meta)
        res = calibration_resources(paths)
        summary = calibrate(paths, res, run_corpus(meta), clips)
        ranks = ", ".join(
            f"{rank} {r['best_success_rate']:.2f} at {r['best_strength']}"
            for rank, r in summary["rank_comparison"].items()
        )
        console.print(f"feature ranking by success on training clips: {ranks}; using {summary['rank']}")
        console.print(
            f"{len(summary['presets'])} presets ({', '.join(summary['presets'])}) in {summary['seconds']} s "
            f"-> {paths.root / 'steering'}"
        )
