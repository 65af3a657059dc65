"""`whisper-atlas steer FILE`: transcribe a clip as is, through the SAE, and steered (pipelines.steering)."""

from __future__ import annotations

import json
from enum import Enum
from pathlib import Path
from typing import Annotated, Optional

import typer

from pipelines.constants import SAMPLE_RATE, WINDOW_SECONDS


class MethodChoice(str, Enum):
    sae = "sae"
    dom = "dom"


class ModeChoice(str, Enum):
    add = "add"
    clamp = "clamp"


class ScaleChoice(str, Enum):
    frame_norm = "frame_norm"
    feature_act = "feature_act"


def parse_feature(text: str) -> dict:
    """`ID:STRENGTH` -> {"id": ID, "strength": STRENGTH}."""
    fid, sep, strength = text.partition(":")
    try:
        if not sep:
            raise ValueError
        return {"id": int(fid), "strength": float(strength)}
    except ValueError:
        raise typer.BadParameter(f"{text!r}: write features as ID:STRENGTH, e.g. 123:0.5") from None


def register(app: typer.Typer) -> None:
    @app.command("steer")
    def steer_command(
        file: Annotated[Path, typer.Argument(help="Audio clip (any format FFmpeg reads; first 30 s used).")],
        feature: Annotated[
            Optional[list[str]], typer.Option("--feature", "-f", help="ID:STRENGTH, repeatable.")
        ] = None,
        toward: Annotated[Optional[str], typer.Option(help="Steer toward this language (e.g. es).")] = None,
        source: Annotated[
            Optional[str], typer.Option(help="Language to steer away from (default: the detected one).")
        ] = None,
        method: Annotated[MethodChoice, typer.Option(help="Direction for --toward.")] = MethodChoice.sae,
        mode: Annotated[
            ModeChoice, typer.Option(help="Add the feature, or clamp its latent.")
        ] = ModeChoice.add,
        scale: Annotated[
            ScaleChoice,
            typer.Option(help="Unit of strength: the clip's mean frame norm or a typical firing."),
        ] = ScaleChoice.frame_norm,
        strength: Annotated[float, typer.Option(help="Strength of the --toward direction.")] = 0.5,
        n_features: Annotated[int, typer.Option(help="Features --toward --method sae adds.")] = 10,
        max_new_tokens: Annotated[int, typer.Option(help="Decoder budget per transcript.")] = 64,
        run: Annotated[str, typer.Option(help="Run whose SAE (and atlas) to use.")] = "default",
        model: Annotated[Optional[str], typer.Option(help="Whisper model (default: the run's).")] = None,
        device: Annotated[Optional[str], typer.Option(help="cpu, cuda, cuda:N (default: auto).")] = None,
        as_json: Annotated[bool, typer.Option("--json", help="Print the result as JSON.")] = False,
    ) -> None:
        """Transcribe FILE three ways (baseline, SAE-reconstructed, steered) from one encoder pass."""
        from pipelines.audio import decode_audio
        from pipelines.paths import RunPaths
        from pipelines.steering import FeatureStrength, SteeringSpec, load_steering_resources, steer

        spec = SteeringSpec(
            features=[FeatureStrength(**parse_feature(f)) for f in feature or []],
            mode=mode.value,
            toward_language=toward,
            source_language=source,
            method=method.value,
            scale=scale.value,
            strength=strength,
            n_features=n_features,
            max_new_tokens=max_new_tokens,
        )
        audio = decode_audio(file, max_seconds=WINDOW_SECONDS)
        resources = load_steering_resources(RunPaths.named(run), model=model, device=device)
        result = steer(resources, audio, spec)
        payload = {"file": str(file), "duration": round(len(audio) / SAMPLE_RATE, 3), **result.to_dict()}
        if as_json:
            typer.echo(json.dumps(payload, ensure_ascii=False, indent=1))
            return
        _print_result(payload)


def _print_result(payload: dict) -> None:
    from rich.console import Console
    from rich.table import Table

    console = Console()
    table = Table(title=f"{payload['file']} ({payload['duration']} s)", show_lines=True)
    for column in ("", "language (p)", "text"):
        table.add_column(column)
    for name in ("baseline", "reconstructed", "steered"):
        out = payload[name]
        p = out["language_probs"].get(out["language"], 0.0)
        flag = " [red](degenerate)[/red]" if out["repetitive"] else ""
        table.add_row(name, f"{out['language']} ({p:.2f})", out["text"] + flag)
    console.print(table)
    used = ", ".join(
        f"{'dom' if f['id'] is None else f['id']}:{f['strength']:.3g}"
        + (f" {f['label']}" if f["label"] else "")
        + (f" [{f['label_type']}]" if f["label_type"] else "")
        for f in payload["features_used"]
    )
    console.print(f"features used ({payload['mode']}, {payload['method']}, scale {payload['scale']}): {used}")
    for warning in payload["warnings"]:
        console.print(f"[yellow]warning:[/yellow] {warning}")
