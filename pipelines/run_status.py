"""What a run holds: stages done, the SAE's quality metrics, the atlas. Backs `whisper-atlas status`."""

from __future__ import annotations

import json
import time
from typing import Any

from rich.console import Console
from rich.table import Table

from pipelines.paths import RunPaths
from pipelines.stages import StageLog

METRIC_KEYS = ("fvu", "fvu_heldout", "l0", "dead_fraction", "window")
FIDELITY_KEYS = (
    "clips",
    "fvu",
    "eval_clips",
    "divergence_median",
    "divergence_interval",
    "loop_share",
    "spliced_cer_median",
    "original_cer_median",
    "lid_agreement",
)
"""Shown per held-out set (`speaker`: new voices, `group`: known voices, new sentences)."""


def run_status(run: str) -> dict[str, Any]:
    paths = RunPaths.named(run)
    metrics_path = paths.sae / "metrics.json"
    metrics = json.loads(metrics_path.read_text()) if metrics_path.exists() else {}
    return {
        "run": run,
        "root": str(paths.root),
        "stages": {name: vars(record) for name, record in StageLog(paths).records.items()},
        "metrics": {key: metrics.get(key) for key in METRIC_KEYS},
        "fidelity": {
            name: {key: values.get(key) for key in FIDELITY_KEYS}
            for name, values in metrics.get("fidelity", {}).items()
        },
        "split": {
            key: metrics.get("split", {}).get(key) for key in ("held_out_speakers", "unsplit_languages")
        },
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
    shown = [_fmt(k, v) for k, v in metrics.items() if v is not None]
    console.print("SAE: " + ("  ".join(shown) if shown else "not trained yet"))
    for name, values in status["fidelity"].items():
        console.print(
            f"  held out by {name}: " + "  ".join(_fmt(k, v) for k, v in values.items() if v is not None)
        )
    atlas = status["atlas"]
    size = f"{atlas['bytes'] / 1e6:.1f} MB" if atlas["exists"] else "not built yet"
    console.print(f"atlas: {atlas['path']} ({size})")


def _fmt(key: str, value: Any) -> str:
    if isinstance(value, list):
        return f"{key} [{', '.join(f'{v:.3g}' for v in value)}]"
    return f"{key} {value:.4g}" if isinstance(value, float) else f"{key} {value}"
