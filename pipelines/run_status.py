"""What a run holds: stages done, the SAE's quality metrics, the atlas. Backs `whisper-atlas status`."""

from __future__ import annotations

import json
import time
from typing import Any

from rich.console import Console
from rich.table import Table

from pipelines.paths import RunPaths
from pipelines.stages import StageLog

METRIC_KEYS = ("fvu", "fvu_heldout", "l0", "dead_fraction", "spliced_cer", "original_cer", "lid_agreement")


def run_status(run: str) -> dict[str, Any]:
    paths = RunPaths.named(run)
    metrics_path = paths.sae / "metrics.json"
    metrics = json.loads(metrics_path.read_text()) if metrics_path.exists() else {}
    return {
        "run": run,
        "root": str(paths.root),
        "stages": {name: vars(record) for name, record in StageLog(paths).records.items()},
        "metrics": {key: metrics.get(key) for key in METRIC_KEYS},
        "atlas": {
            "path": str(paths.atlas),
            "exists": paths.atlas.exists(),
            "bytes": paths.atlas.stat().st_size if paths.atlas.exists() else 0,
        },
    }


def render_status(status: dict[str, Any], console: Console | None = None) -> None:
    console = console or Console()
    stages = Table(title=f"run {status['run']} ({status['root']})")
    for column in ("stage", "finished", "seconds", "inputs fingerprint"):
        stages.add_column(column)
    for name, record in status["stages"].items():
        finished = time.strftime("%Y-%m-%d %H:%M", time.localtime(record["finished_at"]))
        stages.add_row(name, finished, f"{record['seconds']:.0f}", record["fingerprint"])
    if not status["stages"]:
        stages.add_row("(none yet)", "", "", "run `whisper-atlas demo`")
    console.print(stages)
    metrics = status["metrics"]
    shown = [
        f"{k} {v:.4g}" if isinstance(v, float) else f"{k} {v}" for k, v in metrics.items() if v is not None
    ]
    console.print("SAE: " + ("  ".join(shown) if shown else "not trained yet"))
    atlas = status["atlas"]
    size = f"{atlas['bytes'] / 1e6:.1f} MB" if atlas["exists"] else "not built yet"
    console.print(f"atlas: {atlas['path']} ({size})")
