"""Resolving a steering spec against one clip into a plan: the edit to apply to its real frames, and what
it uses.

Explicit features are added along their decoder directions or clamped (pipelines.steering.directions).
Toward a language, method `sae` takes the N features whose effect on logit(target) - logit(source) is
largest (from the atlas's `feature_language_effects`, or this clip's gradient of `language_logits`) and adds
their effect-weighted unit decoder directions; method `dom` adds the difference of the run's per-language
mean activations (the baseline of earlier Whisper steering work and of contrastive activation addition,
Rimsky et al. 2024). Language directions are unit-normalised and scaled by strength x the clip's mean frame
norm.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Callable

import torch

from pipelines.steering.directions import (
    add_directions,
    clamp_latents,
    feature_units,
    language_gradient,
    mean_frame_norm,
    unit_rows,
)
from pipelines.steering.resources import SteeringResources
from pipelines.steering.spec import SteeringError, SteeringSpec


@dataclass
class UsedFeature:
    """A feature (or direction) actually applied, for the response and the UI."""

    id: int | None
    """SAE latent, or None for a non-SAE direction (difference of means)."""
    strength: float
    """In the spec's unit (see `scale`)."""
    label: str = ""
    effect: float | None = None
    """Its score on logit(target) - logit(source), when chosen by language effect."""


@dataclass
class SteeringPlan:
    """A resolved spec: a function editing real frames, and what it uses."""

    edit: Callable[[torch.Tensor], torch.Tensor]
    features_used: list[UsedFeature]
    source_language: str | None = None
    target_language: str | None = None
    selection: str | None = None


def plan_steering(
    res: SteeringResources, spec: SteeringSpec, h_TD: torch.Tensor, final_BTD: torch.Tensor, n_frames: int
) -> SteeringPlan:
    """Resolve `spec` against this clip: `h_TD` its real frames at the SAE layer, `final_BTD` the final
    encoder output (for the detected language and clip gradients)."""
    if spec.features:
        return _feature_plan(res, spec, h_TD)

    from pipelines.model.transcribe import LANGUAGES, language_logits

    target, source = spec.toward_language, spec.source_language
    assert target is not None  # the spec has features or a target language
    for code in (target, source):
        if code is not None and code not in LANGUAGES:
            raise SteeringError(f"unknown language {code!r}: use a Whisper language code such as en, es, fr")
    selection = None if spec.method == "dom" else _selection(res, spec)
    grad_D = None
    if selection == "clip":  # the gradient pass also detects the source language
        source, grad_D = language_gradient(res.bundle, final_BTD, n_frames, target, source)
    elif source is None:
        source = LANGUAGES[int(language_logits(res.bundle, final_BTD[:1])[0].argmax())]
    if source == target:
        raise SteeringError(f"the clip is already {target!r}: pick another target or set source_language")
    if spec.method == "dom":
        if res.dom is None:
            raise SteeringError(
                "difference of means needs this run's activations: run `whisper-atlas extract`"
            )
        direction_D = torch.as_tensor(res.dom().direction(source, target))
        used = [UsedFeature(None, spec.strength, f"mean({target}) - mean({source})")]
    else:
        direction_D, used = _language_feature_direction(res, spec, source, target, grad_D)
    direction_D = direction_D.to(dtype=h_TD.dtype, device=h_TD.device)
    coef = torch.tensor([spec.strength * mean_frame_norm(h_TD)], dtype=h_TD.dtype, device=h_TD.device)
    unit_1D = unit_rows(direction_D[None, :])
    return SteeringPlan(lambda h: add_directions(h, unit_1D, coef), used, source, target, selection)


def _feature_plan(res: SteeringResources, spec: SteeringSpec, h_TD: torch.Tensor) -> SteeringPlan:
    """The spec's explicit features, added along their decoder rows or clamped, in the spec's unit."""
    sae = res.sae
    ids = [f.id for f in spec.features]
    bad = [i for i in ids if i >= sae.d_sae]
    if bad:
        raise SteeringError(f"unknown feature ids {bad}: this SAE has features 0..{sae.d_sae - 1}")
    ids_K = torch.tensor(ids, device=h_TD.device)
    strengths_K = torch.tensor([f.strength for f in spec.features], dtype=h_TD.dtype, device=h_TD.device)
    units_K = feature_units(sae, ids_K, spec.scale, mean_frame_norm(h_TD), res.atlas.typical_act_F)
    values_K = strengths_K * units_K
    used = [UsedFeature(f.id, f.strength, res.labels.get(f.id, "")) for f in spec.features]
    if spec.mode == "clamp":
        return SteeringPlan(lambda h: clamp_latents(sae, h, ids_K, values_K), used)
    directions_KD = sae.W_dec[ids_K]
    return SteeringPlan(lambda h: add_directions(h, directions_KD, values_K), used)


def _selection(res: SteeringResources, spec: SteeringSpec) -> str:
    """Where the language effects of method `sae` come from: the atlas, or this clip's gradients."""
    selection = spec.selection
    if selection == "auto":
        selection = "atlas" if res.atlas.effects is not None else "clip"
    if selection == "atlas" and res.atlas.effects is None:
        raise SteeringError("the atlas has no language effects: build it, or use selection 'clip'")
    if selection == "clip" and res.layer is not None and res.layer != res.bundle.n_layers:
        raise SteeringError("selection 'clip' needs an SAE on the final encoder output; use 'atlas'")
    return selection


def _language_feature_direction(
    res: SteeringResources, spec: SteeringSpec, source: str, target: str, grad_D: torch.Tensor | None
) -> tuple[torch.Tensor, list[UsedFeature]]:
    """Effect-weighted sum of the unit decoder directions of the N features pushing target over source,
    scored by the atlas's language effects, or by this clip's gradient `grad_D` when given."""
    W_dec = res.sae.W_dec.detach()
    if grad_D is None:
        assert res.atlas.effects is not None
        score_F = torch.as_tensor(res.atlas.effects.delta(source, target), device=W_dec.device)
    else:
        score_F = unit_rows(W_dec) @ grad_D.to(W_dec.dtype)
    top_scores, top_ids = score_F.to(W_dec.dtype).topk(min(spec.n_features, res.sae.d_sae))
    keep = top_scores > 0
    if not bool(keep.any()):
        raise SteeringError(f"no feature raises {target!r} over {source!r} in this SAE")
    top_scores, top_ids = top_scores[keep], top_ids[keep]
    weights_K = top_scores / top_scores.sum()
    used = [
        UsedFeature(int(i), float(w) * spec.strength, res.labels.get(int(i), ""), float(s))
        for i, w, s in zip(top_ids, weights_K, top_scores)
    ]
    return weights_K @ unit_rows(W_dec[top_ids]), used
