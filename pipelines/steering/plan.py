"""Resolving a steering spec against one clip into a plan: the edit to apply to its real frames, and what
it uses.

Explicit features are added along their decoder directions, clamped or scaled (pipelines.steering.directions).
Toward a language, method `sae` takes the N features that score highest by `rank` (see spec.Rank: the
first-order effect of adding each unit decoder direction, from the training clips' calibrated gradients or,
with selection `clip`, this clip's own gradient; the atlas's attribution; or the language selectivity) and
adds their score-weighted unit decoder directions. The dense directions: `dom` the difference of the run's
per-language mean activations (contrastive activation addition, Rimsky et al. 2024), `gradient` the
calibrated language-logit gradient itself, `random` a seeded random direction (the control). Language
directions are unit-normalised and scaled by strength x the clip's mean frame norm. `frames` then keeps the
edit to speech, non-speech or active frames, or to clips the SAE reads as non-speech: their calibrated
non-speech features carry at least the calibrated share of the clip's activation (`nonspeech_clip`).
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Callable

import torch

from pipelines.steering.directions import (
    active_frames,
    add_directions,
    clamp_latents,
    feature_units,
    language_gradient,
    mean_frame_norm,
    only_on,
    random_direction,
    scale_latents,
    unit_rows,
)
from pipelines.steering.resources import SteeringResources
from pipelines.steering.spec import SteeringError, SteeringSpec


@dataclass
class UsedFeature:
    """A feature (or direction) actually applied, for the response and the UI."""

    id: int | None
    """SAE latent, or None for a non-SAE direction (difference of means, gradient, random)."""
    strength: float
    """In the spec's unit (see `scale`)."""
    label: str = ""
    effect: float | None = None
    """Its score under the spec's `rank`, when chosen toward a language."""
    label_type: str = ""
    """The atlas's type for the feature (phonetic, lexical, ...: `schema.LABEL_TYPES`), '' when untyped."""


@dataclass
class SteeringPlan:
    """A resolved spec: a function editing real frames, and what it uses."""

    edit: Callable[[torch.Tensor], torch.Tensor]
    features_used: list[UsedFeature]
    source_language: str | None = None
    target_language: str | None = None
    selection: str | None = None
    nonspeech_share: float | None = None
    """With frames 'nonspeech_clip': the share of the clip's activation its non-speech features carry."""
    nonspeech_threshold: float | None = None
    """... and the calibrated share from which a clip reads as non-speech (and is edited)."""


def plan_steering(
    res: SteeringResources,
    spec: SteeringSpec,
    h_TD: torch.Tensor,
    final_BTD: torch.Tensor,
    n_frames: int,
    speech_T: torch.Tensor | None = None,
) -> SteeringPlan:
    """Resolve `spec` against this clip: `h_TD` its real frames at the SAE layer, `final_BTD` the final
    encoder output (for the detected language and clip gradients), `speech_T` its VAD decision per frame
    (needed by frames 'speech' and 'nonspeech')."""
    plan = (
        _feature_plan(res, spec, h_TD)
        if spec.features
        else _language_plan(res, spec, h_TD, final_BTD, n_frames)
    )
    if spec.frames == "all":
        return plan
    if spec.frames == "active":
        ids_K = torch.tensor([f.id for f in plan.features_used], device=h_TD.device)
        mask_of: Callable[[torch.Tensor], torch.Tensor] = lambda h: active_frames(res.sae, h, ids_K)  # noqa: E731
    elif spec.frames == "nonspeech_clip":
        cal = res.calibration
        if cal is None or cal.nonspeech_share_threshold is None:
            raise SteeringError("frames 'nonspeech_clip' needs a calibration: run `whisper-atlas calibrate`")
        plan.nonspeech_share = cal.nonspeech_share(res.sae, h_TD)
        plan.nonspeech_threshold = cal.nonspeech_share_threshold
        whole_clip = torch.full((h_TD.shape[0],), plan.nonspeech_share >= plan.nonspeech_threshold)
        mask_of = lambda h: whole_clip  # noqa: E731
    else:
        if speech_T is None:
            raise SteeringError(f"frames {spec.frames!r} needs the clip's voice activity")
        mask_T = speech_T.bool() if spec.frames == "speech" else ~speech_T.bool()
        mask_of = lambda h: mask_T  # noqa: E731
    edit = plan.edit
    plan.edit = lambda h: only_on(edit(h), h, mask_of(h))
    return plan


def _language_plan(
    res: SteeringResources, spec: SteeringSpec, h_TD: torch.Tensor, final_BTD: torch.Tensor, n_frames: int
) -> SteeringPlan:
    """A unit direction toward `spec.toward_language`, scaled by strength x the clip's mean frame norm."""
    from pipelines.model.transcribe import LANGUAGES, language_logits

    target, source = spec.toward_language, spec.source_language
    assert target is not None  # the spec has features or a target language
    for code in (target, source):
        if code is not None and code not in LANGUAGES:
            raise SteeringError(f"unknown language {code!r}: use a Whisper language code such as en, es, fr")
    selection = _selection(res, spec)
    if source is None and selection != "clip":
        source = LANGUAGES[int(language_logits(res.bundle, final_BTD[:1])[0].argmax())]
    calibrated = res.calibration is not None and {source, target} <= set(res.calibration.languages)
    if spec.selection == "auto" and selection == "atlas" and _reads_calibration(spec) and not calibrated:
        selection = "clip"  # a language the training clips do not have: this clip's own gradient
    grad_D = None
    if selection == "clip":  # the gradient pass also detects the source language
        source, grad_D = language_gradient(res.bundle, final_BTD, n_frames, target, source)
    assert source is not None  # given, detected, or found by the gradient pass
    if source == target:
        raise SteeringError(f"the clip is already {target!r}: pick another target or set source_language")
    direction_D, used = _language_direction(res, spec, source, target, grad_D)
    direction_D = direction_D.to(dtype=h_TD.dtype, device=h_TD.device)
    coef = torch.tensor([spec.strength * mean_frame_norm(h_TD)], dtype=h_TD.dtype, device=h_TD.device)
    unit_1D = unit_rows(direction_D[None, :])
    return SteeringPlan(lambda h: add_directions(h, unit_1D, coef), used, source, target, selection)


def _language_direction(
    res: SteeringResources, spec: SteeringSpec, source: str, target: str, grad_D: torch.Tensor | None
) -> tuple[torch.Tensor, list[UsedFeature]]:
    """The spec's method's direction from `source` toward `target` and what it is made of."""
    if spec.method == "sae":
        return _language_feature_direction(res, spec, source, target, grad_D)
    if spec.method == "dom":
        if res.dom is None:
            raise SteeringError(
                "difference of means needs this run's activations: run `whisper-atlas extract`"
            )
        label = f"mean({target}) - mean({source})"
        return torch.as_tensor(res.dom().direction(source, target)), [UsedFeature(None, spec.strength, label)]
    if spec.method == "gradient":
        if grad_D is None:
            assert res.calibration is not None
            grad_D = torch.as_tensor(res.calibration.gradient(source, target))
        label = f"gradient of logit({target}) - logit({source})"
        return grad_D, [UsedFeature(None, spec.strength, label)]
    direction = random_direction(res.sae.W_dec.shape[1], spec.seed)
    return direction, [UsedFeature(None, spec.strength, f"random direction (seed {spec.seed})")]


def _feature_plan(res: SteeringResources, spec: SteeringSpec, h_TD: torch.Tensor) -> SteeringPlan:
    """The spec's explicit features added along their decoder rows, clamped or scaled, in its unit."""
    sae = res.sae
    ids = [f.id for f in spec.features]
    bad = [i for i in ids if i >= sae.d_sae]
    if bad:
        raise SteeringError(f"unknown feature ids {bad}: this SAE has features 0..{sae.d_sae - 1}")
    ids_K = torch.tensor(ids, device=h_TD.device)
    strengths_K = torch.tensor([f.strength for f in spec.features], dtype=h_TD.dtype, device=h_TD.device)
    used = [_used(res, f.id, f.strength) for f in spec.features]
    if spec.mode == "scale":
        return SteeringPlan(lambda h: scale_latents(sae, h, ids_K, strengths_K), used)
    units_K = feature_units(sae, ids_K, spec.scale, mean_frame_norm(h_TD), res.atlas.typical_act_F)
    values_K = strengths_K * units_K
    if spec.mode == "clamp":
        return SteeringPlan(lambda h: clamp_latents(sae, h, ids_K, values_K), used)
    directions_KD = sae.W_dec[ids_K]
    return SteeringPlan(lambda h: add_directions(h, directions_KD, values_K), used)


def _used(res: SteeringResources, feature: int, strength: float, effect: float | None = None) -> UsedFeature:
    """An SAE feature as applied, with its atlas label and type."""
    return UsedFeature(
        feature, strength, res.labels.get(feature, ""), effect, res.atlas.label_types.get(feature, "")
    )


def _reads_calibration(spec: SteeringSpec) -> bool:
    """The method reads the training-clip gradients (rank effect, or the gradient direction)."""
    return spec.method == "gradient" or (spec.method == "sae" and spec.rank == "effect")


def _selection(res: SteeringResources, spec: SteeringSpec) -> str | None:
    """Where the scores come from: `atlas` (the atlas's tables and the training-clip calibration) or this
    `clip`'s gradient; None for methods that need neither (dom, random)."""
    if spec.method in ("dom", "random"):
        return None
    ranked_by_gradient = spec.method == "gradient" or spec.rank == "effect"
    stored = res.atlas.effects is not None if spec.rank == "attribution" else res.calibration is not None
    selection = spec.selection
    if selection == "auto":
        selection = "atlas" if stored else "clip"
    if selection == "clip" and spec.method == "sae" and not ranked_by_gradient:
        raise SteeringError(f"rank {spec.rank!r} reads the atlas: use selection 'atlas'")
    if selection == "atlas" and not stored:
        what = "language effects" if spec.rank == "attribution" else "steering calibration"
        raise SteeringError(f"this run has no {what}: run `whisper-atlas calibrate`, or use selection 'clip'")
    if selection == "clip" and res.layer is not None and res.layer != res.bundle.n_layers:
        raise SteeringError("selection 'clip' needs an SAE on the final encoder output; use 'atlas'")
    return selection


def _language_feature_direction(
    res: SteeringResources, spec: SteeringSpec, source: str, target: str, grad_D: torch.Tensor | None
) -> tuple[torch.Tensor, list[UsedFeature]]:
    """Score-weighted sum of the unit decoder directions of the N features that score highest for `target`
    over `source` under `spec.rank` (with `grad_D`, this clip's gradient, for rank effect)."""
    W_dec = res.sae.W_dec.detach()
    units_FD = unit_rows(W_dec)
    if spec.rank == "attribution":
        assert res.atlas.effects is not None
        score_F = torch.as_tensor(res.atlas.effects.delta(source, target), device=W_dec.device)
    elif spec.rank == "selectivity":
        assert res.calibration is not None
        score_F = torch.as_tensor(res.calibration.selectivity(target), device=W_dec.device)
    else:
        if grad_D is None:
            assert res.calibration is not None
            grad_D = torch.as_tensor(res.calibration.gradient(source, target))
        score_F = units_FD @ grad_D.to(W_dec.device, W_dec.dtype)
    top_scores, top_ids = score_F.to(W_dec.dtype).topk(min(spec.n_features, res.sae.d_sae))
    keep = top_scores > 0
    if not bool(keep.any()):
        raise SteeringError(f"no feature raises {target!r} over {source!r} in this SAE")
    top_scores, top_ids = top_scores[keep], top_ids[keep]
    weights_K = top_scores / top_scores.sum()
    used = [
        _used(res, int(i), float(w) * spec.strength, float(sc))
        for i, w, sc in zip(top_ids, weights_K, top_scores)
    ]
    return weights_K @ units_FD[top_ids], used
