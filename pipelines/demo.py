"""`whisper-atlas demo`: every stage from corpus to atlas, each skipped when its inputs have not changed.

A stage here is just the stage's own CLI command (so `demo` and the individual commands cannot drift apart)
plus the files it reads and writes. Its fingerprint hashes the command line and the identity (size, mtime)
of its input files; when `stages.json` holds the same fingerprint and the outputs exist, the stage is
skipped. Because each stage's outputs are the next stage's inputs, a change anywhere reruns what follows.
"""

from __future__ import annotations

import time
from dataclasses import dataclass
from pathlib import Path

import typer
from rich.console import Console

from pipelines.corpus.manifest import MANIFEST_NAME
from pipelines.errors import AtlasError
from pipelines.paths import RunPaths, corpus_dir
from pipelines.stages import StageLog, fingerprint


@dataclass(frozen=True)
class Stage:
    name: str
    argv: list[str]
    inputs: list[Path]
    outputs: list[Path]

    def fingerprint(self) -> str:
        return fingerprint(argv=self.argv, inputs=self.inputs)


def demo_stages(corpus: str, size: str, run: str, model: str | None, layer: int | None) -> list[Stage]:
    """The pipeline on `corpus`, in order, as CLI invocations with their inputs and outputs."""
    paths = RunPaths.named(run)
    manifest = corpus_dir(corpus) / MANIFEST_NAME
    weights = paths.sae / "sae_weights.safetensors"
    presets = paths.root / "steering" / "presets.json"
    model_args = ["--model", model] if model else []
    layer_args = ["--layer", str(layer)] if layer is not None else []
    return [
        Stage("corpus", ["corpus", "build", "--corpus", corpus, "--size", size], [], [manifest]),
        Stage(
            "extract",
            ["extract", "--run", run, "--corpus", corpus, *model_args, *layer_args],
            [manifest],
            [paths.activations / "meta.json"],
        ),
        Stage("train", ["train", "--run", run], [paths.activations / "meta.json"], [weights]),
        Stage(
            "analyze", ["analyze", "--run", run, "--corpus", corpus], [weights, manifest], [paths.analysis]
        ),
        Stage(
            "calibrate",
            ["calibrate", "--run", run, "--corpus", corpus],
            [weights, paths.analysis / "meta.json"],
            [presets],
        ),
        Stage("build", ["build", "--run", run, "--corpus", corpus], [paths.analysis, presets], [paths.atlas]),
    ]


def run_stages(app: typer.Typer, stages: list[Stage], log: StageLog, console: Console) -> None:
    """Run each stage that is not current; stop with an AtlasError at the first failure."""
    for number, stage in enumerate(stages, 1):
        fp = stage.fingerprint()
        title = f"[{number}/{len(stages)}] {stage.name}"
        if log.is_current(stage.name, fp) and all(p.exists() for p in stage.outputs):
            console.print(f"[bold]{title}[/]: up to date, skipped")
            continue
        console.rule(f"[bold]{title}[/]: whisper-atlas {' '.join(stage.argv)}")
        started = time.time()
        code = app(stage.argv, standalone_mode=False)
        if code:
            raise AtlasError(f"stage {stage.name} failed (exit {code}); fix the error above and rerun `demo`")
        # Inputs may be rewritten by the stage itself (e.g. a rebuilt corpus), so fingerprint afterwards.
        log.record(stage.name, stage.fingerprint(), started)
        console.print(f"{stage.name} done in {time.time() - started:.0f} s")
