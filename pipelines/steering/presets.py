"""Steering presets: named recipes with their measured strength curves, and requests that name one.

`whisper-atlas calibrate` (pipelines.steering.calibrate) measures and writes them to runs/<run>/steering/
presets.json (this module owns the file); `whisper-atlas build` copies the file into the atlas (`run` key
`steering`), from where the API lists them and steering resolves `{"preset": id, "strength": s}`.
"""

from __future__ import annotations

import json
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

from pipelines import durable
from pipelines.steering.spec import MAX_SPEC_CHARS, MAX_SPEC_DEPTH, SteeringError, SteeringSpec, nesting_depth

PRESETS_NAME = "presets.json"
PRESET_KEYS = {"preset", "strength", "max_new_tokens"}
"""The keys a preset request may have."""


@dataclass
class Preset:
    """A named steering recipe and its measured strength curve."""

    id: str
    description: str
    spec: dict[str, Any]
    """SteeringSpec fields without `strength` (the strength is the user's or `default_strength`)."""
    default_strength: float
    curve: dict[str, list[float]]
    """Per strength (0 first): the rates of `pipelines.steering.sweep`."""
    score: str
    """The curve's column `default_strength` maximises."""
    clips: int
    chosen_by: dict[str, Any] = field(default_factory=dict)
    """How the features were chosen, with the numbers behind the choice."""

    def steering_spec(self, strength: float | None = None) -> SteeringSpec:
        value = self.default_strength if strength is None else strength
        if self.spec.get("features"):
            features = [{**f, "strength": value} for f in self.spec["features"]]
            return SteeringSpec(**{**self.spec, "features": features})
        return SteeringSpec(**self.spec, strength=value)


def save_presets(path: Path, presets: list[Preset], notes: dict[str, Any]) -> None:
    """Write presets.json beside its name, then rename it into place."""
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = durable.sibling(path, "tmp")
    tmp.write_text(json.dumps({"presets": [asdict(p) for p in presets], **notes}, indent=1))
    durable.replace(tmp, path)


def presets_from(steering: dict[str, Any] | None) -> dict[str, Preset]:
    """Preset id -> preset, from presets.json's content (the atlas's `run.steering`); {} without one."""
    return {p["id"]: Preset(**p) for p in (steering or {}).get("presets", [])}


def parse_request(text: str) -> SteeringSpec | dict[str, Any]:
    """A spec's JSON text, validated: a SteeringSpec, or a preset request `{"preset": id, "strength"?: s,
    "max_new_tokens"?: n}` (a dict, resolved against the run's presets by `resolve`)."""
    raw = None
    if isinstance(text, str) and len(text) <= MAX_SPEC_CHARS and nesting_depth(text) <= MAX_SPEC_DEPTH:
        try:
            raw = json.loads(text)
        except json.JSONDecodeError:
            pass  # from_json below says what is wrong with it
    if not (isinstance(raw, dict) and "preset" in raw):
        return SteeringSpec.from_json(text)
    unknown = set(raw) - PRESET_KEYS
    if unknown:
        raise SteeringError(f"a preset request takes only {sorted(PRESET_KEYS)}; got {sorted(unknown)}")
    if not isinstance(raw["preset"], str):
        raise SteeringError(f"preset must be a preset id such as 'toward_es', got {raw['preset']!r}")
    SteeringSpec(toward_language="en", **{k: v for k, v in raw.items() if k != "preset"})  # checks the values
    return raw


def resolve(request: SteeringSpec | dict[str, Any], presets: dict[str, Preset]) -> SteeringSpec:
    """The spec a parsed request stands for: itself, or the named preset at its default or given strength."""
    if isinstance(request, SteeringSpec):
        return request
    name = request["preset"]
    if name not in presets:
        have = ", ".join(sorted(presets)) or "none: run `whisper-atlas calibrate`, then `whisper-atlas build`"
        raise SteeringError(f"unknown preset {name!r} (have: {have})")
    spec = presets[name].steering_spec(request.get("strength"))
    if "max_new_tokens" in request:
        spec = SteeringSpec(**{**spec.model_dump(), "max_new_tokens": request["max_new_tokens"]})
    return spec
