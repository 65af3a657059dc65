"""The steering request: what to steer, how strongly, and its limits, validated on construction.

A spec names explicit SAE features (`features`) or a target language (`toward_language`, whose direction
`method` picks: `sae` features, ranked as `rank` says; or a dense direction: `dom` a difference of means,
`gradient` the language-logit gradient of training clips, `random` a seeded random direction, the control).

Modes: `add` a direction on the chosen frames; `clamp` a latent to a value; `scale` multiplies the chosen
features' own activations by strength (so it acts only where they fire; strength 1 changes nothing).
`frames` restricts any edit to speech frames, non-speech frames (Silero VAD), the frames where the chosen
features fire (`active`), or to clips the SAE reads as non-speech (`nonspeech_clip`: every frame of a clip
whose non-speech features carry at least the calibrated share of its activation, no frame of any other).

Units of strength (`scale`):
- `frame_norm` (default): strength 1 adds a vector as long as this clip's mean frame norm (feature
  directions are unit-normalised first). The strength at which the detected language flips is measured by
  `test_toward_language_flips_held_out_english_clips` in tests/pipelines/test_steering.py.
- `feature_act`: strength 1 adds the feature's typical activation (atlas `features.mean_act`) times its
  decoder row, i.e. one ordinary firing of the feature.
In clamp mode the clamped latent value is strength x the same unit (strength 0 = ablate the feature).

Every invalid input, from the API's JSON or a direct construction, raises `SteeringError` with one readable
message (pydantic's validation errors are translated), so the CLI prints one line and the API answers 422.
"""

from __future__ import annotations

import json
import math
from typing import Any, Literal, Self

from pydantic import (
    BaseModel,
    ConfigDict,
    Field,
    ValidationError,
    ValidationInfo,
    field_validator,
    model_validator,
)
from pydantic_core import ErrorDetails

from pipelines.errors import AtlasError

Mode = Literal["add", "clamp", "scale"]
Method = Literal["sae", "dom", "gradient", "random"]
Rank = Literal["effect", "attribution", "selectivity"]
"""How method `sae` ranks features toward a language:
- `effect`: the first-order effect of ADDING the feature's unit decoder direction on logit(target) -
  logit(source), unit(W_dec[f]) . sum_t d(logit diff)/dh_t, averaged over training clips of the source;
- `attribution`: the atlas's attribution, whose existing activity pushes toward the target
  (a_f,t W_dec[f] . gradient, `feature_language_effects`);
- `selectivity`: the atlas's language selectivity of the target (share of activation / share of frames)."""
Frames = Literal["all", "speech", "nonspeech", "active", "nonspeech_clip"]
Scale = Literal["frame_norm", "feature_act"]
Selection = Literal["auto", "atlas", "clip"]

MAX_ABS_STRENGTH = 20.0
"""Beyond this the decoder only loops or goes silent; larger values are a typo, not an experiment."""

MAX_NEW_TOKENS = 128
"""Hard cap on decoded tokens: a steered decoder can loop to Whisper's 448-token limit (tens of seconds)."""

INT_RANGES = {"n_features": (1, 256), "max_new_tokens": (1, MAX_NEW_TOKENS), "seed": (0, 2**31 - 1)}
"""Inclusive bounds of the spec's integer fields."""

FEATURES_SHAPE = 'spec.features must be a list of {"id": int, "strength": float}'

MAX_SPEC_CHARS = 64 * 1024
"""Longest spec text parsed (a spec of 256 features is ~10 kB)."""
MAX_SPEC_DEPTH = 8
"""Deepest nesting of JSON arrays and objects in a spec (a valid one nests 3 deep): deeper text is refused
before parsing, as Python's parser would recurse once per level."""


class SteeringError(AtlasError):
    """A steering request that cannot be carried out (bad spec, missing atlas data, unknown feature)."""


def _finite_strength(value: object, what: str) -> float:
    """`value` as a strength: a real number (not a bool), finite, within +-MAX_ABS_STRENGTH."""
    if isinstance(value, bool) or not isinstance(value, (int, float)) or not math.isfinite(value):
        raise ValueError(f"{what}: strength must be a finite number, got {value!r}")
    if abs(value) > MAX_ABS_STRENGTH:
        raise ValueError(f"{what}: |strength| must be <= {MAX_ABS_STRENGTH}, got {value}")
    return value


class _SpecModel(BaseModel):
    """Unknown keys refused; construction from invalid values raises SteeringError (one readable message)."""

    model_config = ConfigDict(extra="forbid")

    def __init__(self, **data: Any) -> None:
        try:
            super().__init__(**data)
        except ValidationError as exc:
            raise SteeringError(type(self)._describe(exc.errors())) from None

    @classmethod
    def _describe(cls, errors: list[ErrorDetails]) -> str:
        return "; ".join(_error_text(e) for e in errors)


def _error_text(error: ErrorDetails) -> str:
    """One pydantic error as a sentence: a validator's own message, or the field and what it must be."""
    ctx = error.get("ctx", {})
    if error["type"] == "value_error":
        return str(ctx["error"])
    name = ".".join(str(part) for part in error["loc"]) or "spec"
    if error["type"] == "literal_error":
        return f"{name} must be {ctx['expected']}, got {error['input']!r}"
    return f"{name}: {error['msg']}"


class FeatureStrength(_SpecModel):
    """One feature to steer with."""

    id: int
    """SAE latent index."""
    strength: float
    """Multiple of the `scale` unit; negative pushes against the feature."""

    @field_validator("id", mode="before")
    @classmethod
    def _non_negative_int(cls, value: object) -> object:
        if isinstance(value, bool) or not isinstance(value, int) or value < 0:
            raise ValueError(f"feature ids are non-negative integers, got {value!r}")
        return value

    @field_validator("strength", mode="before")
    @classmethod
    def _strength(cls, value: object, info: ValidationInfo) -> float:
        return _finite_strength(value, f"feature {info.data.get('id', '?')}")

    @classmethod
    def _describe(cls, errors: list[ErrorDetails]) -> str:
        """Validator messages as they are; a missing, extra or non-object entry is a shape error."""
        texts = [_error_text(e) for e in errors if e["type"] == "value_error"]
        return "; ".join(texts) if len(texts) == len(errors) else FEATURES_SHAPE


class SteeringSpec(_SpecModel):
    """What to steer: explicit features, or a target language (then `method` picks the direction)."""

    features: list[FeatureStrength] = Field(default_factory=list)
    """Explicit features and strengths (method `sae` only)."""
    mode: Mode = "add"
    """`add` the decoder direction, `clamp` the latent to strength x unit (SAE error term kept), or `scale`
    the feature's own activation by strength (explicit features only)."""
    frames: Frames = "all"
    """Frames the edit touches: all real frames, speech or non-speech ones (Silero VAD), `active`: where a
    chosen feature fires (SAE features only), or `nonspeech_clip`: all of them in a clip the SAE reads as
    non-speech, none otherwise (needs `whisper-atlas calibrate`)."""
    rank: Rank = "effect"
    """How method `sae` ranks features toward a language (see `Rank`)."""
    seed: int = 0
    """Seed of method `random`'s direction."""
    toward_language: str | None = None
    """Target language code (e.g. `es`): steer from the clip's language toward it."""
    source_language: str | None = None
    """Language to steer away from; default: the language Whisper detects in the clip."""
    method: Method = "sae"
    """For `toward_language`: `sae` features, `dom` (difference of means), `gradient`, `random`."""
    scale: Scale = "frame_norm"
    """Unit of strength: the clip's mean frame norm, or the feature's typical activation (see module doc)."""
    strength: float = 0.5
    """Strength of the language direction (`toward_language`), in units of the clip's mean frame norm."""
    n_features: int = 10
    """How many features `toward_language` with method `sae` adds."""
    selection: Selection = "auto"
    """Where language effects come from: the atlas table, this clip's gradients, or `auto` (atlas if any)."""
    max_new_tokens: int = 64
    """Decoder budget per transcript (capped at MAX_NEW_TOKENS)."""

    @field_validator("strength", mode="before")
    @classmethod
    def _strength(cls, value: object) -> float:
        return _finite_strength(value, "strength")

    @field_validator("n_features", "max_new_tokens", "seed", mode="before")
    @classmethod
    def _int_in_range(cls, value: object, info: ValidationInfo) -> object:
        name = info.field_name
        lo, hi = INT_RANGES[str(name)]
        if isinstance(value, bool) or not isinstance(value, int):
            raise ValueError(f"{name} must be an integer, got {value!r}")
        if not lo <= value <= hi:
            raise ValueError(f"{name} must be in {lo}..{hi}, got {value}")
        return value

    @field_validator("toward_language", "source_language", mode="before")
    @classmethod
    def _language_code(cls, value: object, info: ValidationInfo) -> object:
        if value is not None and not isinstance(value, str):
            raise ValueError(f"{info.field_name} must be a language code like 'es', got {value!r}")
        return value

    @model_validator(mode="after")
    def _consistent(self) -> Self:
        """The rules between fields: one kind of target, and the modes and methods that fit it."""
        if not self.features and not self.toward_language:
            raise ValueError("nothing to steer: give at least one feature or a target language")
        if self.features and self.toward_language:
            raise ValueError("give either features or a target language, not both")
        if self.method != "sae" and not self.toward_language:
            raise ValueError(f"method {self.method!r} needs a target language (toward_language)")
        if self.toward_language and self.mode != "add":
            raise ValueError("toward_language adds a direction: use mode 'add'")
        if self.frames == "active" and self.method != "sae":
            raise ValueError(f"frames 'active' needs SAE features; method {self.method!r} has none")
        if self.mode == "scale" and any(f.strength < 0 for f in self.features):
            raise ValueError("mode 'scale' multiplies activations: strengths must be >= 0")
        if len({f.id for f in self.features}) != len(self.features):
            raise ValueError("each feature may appear once")
        return self

    @classmethod
    def _describe(cls, errors: list[ErrorDetails]) -> str:
        """Unknown keys in one sentence, a malformed feature list as its shape, then each other error."""
        unknown = [e for e in errors if e["type"] == "extra_forbidden" and len(e["loc"]) == 1]
        texts = [f"unknown spec keys: {sorted(str(e['loc'][0]) for e in unknown)}"] if unknown else []
        for e in errors:
            if e["loc"][:1] == ("features",) and e["type"] != "value_error":
                texts.append(FEATURES_SHAPE)
            elif e not in unknown:
                texts.append(_error_text(e))
        return "; ".join(dict.fromkeys(texts))

    @classmethod
    def from_json(cls, text: str) -> SteeringSpec:
        """Parse the API's `spec` form field; bad JSON and bad values raise SteeringError.

        A null value means the field's default, except for `features`, which must be a list."""
        if isinstance(text, str) and len(text) > MAX_SPEC_CHARS:
            raise SteeringError(f"spec is too long ({len(text):,} characters; at most {MAX_SPEC_CHARS:,})")
        if isinstance(text, str) and nesting_depth(text) > MAX_SPEC_DEPTH:
            raise SteeringError(f"spec is nested too deeply (more than {MAX_SPEC_DEPTH} levels)")
        try:
            raw = json.loads(text)
        except (json.JSONDecodeError, TypeError) as exc:
            raise SteeringError(f"spec is not valid JSON ({exc})") from exc
        if not isinstance(raw, dict):
            raise SteeringError("spec must be a JSON object")
        return cls(**{k: v for k, v in raw.items() if v is not None or k == "features"})


def nesting_depth(text: str) -> int:
    """Deepest nesting of `[`/`{` in JSON text, brackets inside strings aside (a linear scan, no parse)."""
    depth = deepest = 0
    in_string = escaped = False
    for char in text:
        if in_string:
            if escaped:
                escaped = False
            elif char == "\\":
                escaped = True
            elif char == '"':
                in_string = False
        elif char == '"':
            in_string = True
        elif char in "[{":
            depth += 1
            deepest = max(deepest, depth)
        elif char in "]}":
            depth -= 1
    return deepest
