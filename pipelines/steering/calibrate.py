"""`whisper-atlas calibrate`: what steering learns from the SAE's training clips, and the presets it offers.

Only clips the SAE trained on are read here (the split in the SAE's metrics.json), so the clips that tests
and figures score (the held-out speaker and sentence-group sets) never choose a feature or a strength:

1. Gradients: for up to `GRADIENT_CLIPS` training speech clips per corpus language (spread over speakers),
   sum_t d log p(L) / d h_t for every corpus language L; for up to `SILENCE_GRADIENT_CLIPS` training
   non-speech clips (taken in turn from each non-speech category), sum_t d log p(no-speech token) / d h_t
   at the first decoder step, the probability Whisper's gate reads (the first `SILENCE_CLIPS` of them also
   give the silencing curve).
2. Selectivities on training frames only: per language and for non-speech, the share of a feature's
   activation on those frames over their share of frames. The non-speech-selective features then read a
   clip as non-speech when they carry at least `nonspeech_share_threshold` of its activation: the 99th
   percentile of that share over `SHARE_CLIPS` training speech clips, each encoded alone as steering does.
3. Presets, each with its strength curve on training clips (`pipelines.steering.sweep`):
   - `toward_<L>` for each corpus language: SAE features toward L. The three ways of ranking features
     (spec.Rank) are compared toward every corpus language, pooled (`CURVE_CLIPS` clips per target); the
     rank with the best pooled success rate (text reads as L, no loop) is used by every `toward_<L>`
     preset, and the comparison is kept in presets.json. A tie (a few clips give coarse rates) goes to the
     best mean `target_score` over the strengths: the probability that the steered text is in L, 0 for a
     loop.
   - `suppress_hallucination`: the non-speech-selective features whose added direction most raises the
     no-speech probability, added on every frame of a clip the SAE reads as non-speech and on no other
     (`frames` 'nonspeech_clip'), so that Whisper's own gate drops the invented text and speech is left
     alone; it is meant to run with the gate. (Added on the frames Silero VAD calls non-speech instead, the
     pauses of speech clips took the edit too: any strength that silenced also changed speech.)
   Each preset's default strength is the strength of its curve's best score (success rate for a language;
   for silencing, `silencing_gain`: how many fewer non-speech clips keep text with the preset plus the gate
   than with the gate alone, counted only where the mean CER on training speech stays within
   `SPEECH_CER_BUDGET`).

Written to runs/<run>/steering/: calibration.npz (resources.save_calibration) and presets.json (this module's
`pipelines.steering.presets`), each atomically; `whisper-atlas build` copies the presets into the atlas.
"""

from __future__ import annotations

import time
from pathlib import Path
from typing import Any

import numpy as np
import torch

from pipelines.corpus.manifest import SPEECH, Clip, round_robin
from pipelines.errors import AtlasError
from pipelines.paths import RunPaths
from pipelines.steering.presets import PRESETS_NAME, Preset, save_presets
from pipelines.steering.resources import CALIBRATION_NAME, Calibration, SteeringResources, save_calibration
from pipelines.steering.spec import FeatureStrength, SteeringSpec
from pipelines.steering.sweep import SweepClip, decode_sweep, encode_clips, language_curve, silence_curve

GRADIENT_CLIPS = 4
"""Training speech clips per language whose gradients are averaged."""
SILENCE_GRADIENT_CLIPS = 16
"""Training non-speech clips whose silence gradients are averaged (a gradient is cheap; 4 clips' ranking of
features correlated 0.97 with 16 clips' on the default run, but swapped 2-3 of the top 8)."""
SILENCE_CLIPS = 12
"""The first of those (one per non-speech category in turn) on which the silencing curve is measured."""
SHARE_CLIPS = 100
"""Training speech clips (in turn from each language) whose non-speech feature shares set the threshold."""
CURVE_CLIPS = 2
"""Training speech clips (of other languages) per `toward_<L>` curve."""
SPEECH_CURVE_CLIPS = 7
"""Training speech clips (one per language in turn) on which the silencing preset's changes are measured."""
STRENGTHS = (0.3, 0.6, 1.0)
"""Language-direction strengths swept (units of the clip's mean frame norm; the feasibility run flipped the
language token at 0.36-0.5 and looped beyond ~1.5x that)."""
SILENCE_STRENGTHS = (0.1, 0.25, 0.5, 1.0)
"""Strengths of the silencing preset (units of the frame norm per chosen feature, in non-speech clips only).
Added to every frame of a clip, 0.5 and above changes any transcript (speech CER 0.7-1.0 on the default
run's training clips), so the clip condition, not the strength, is what keeps speech."""
SPEECH_CER_BUDGET = 0.02
"""The silencing preset's default strength may change at most this mean CER of training speech transcripts:
it must keep speech, not just silence everything."""
N_FEATURES = 10
SILENCE_FEATURES = 8


def calibration_resources(run: RunPaths) -> SteeringResources:
    """The run's model and SAE with the analysis's attribution effects: what calibration reads. Not the
    atlas, which `build` writes after this stage (and which may be of an older schema until then)."""
    import json

    from pipelines.model.loader import load_whisper
    from pipelines.sae import load_sae
    from pipelines.steering.resources import AtlasSteeringData, LanguageEffects, run_model_and_layer

    model, layer = run_model_and_layer(run)
    bundle = load_whisper(model or "bundled:whisper-base")
    sae = load_sae(run.sae, device=bundle.device).eval().requires_grad_(False)
    effects = None
    meta_path, features_path = run.analysis / "meta.json", run.analysis / "features.npz"
    if meta_path.exists() and features_path.exists():
        languages = json.loads(meta_path.read_text()).get("effect_languages", [])
        with np.load(features_path) as z:
            effect_FL = z["effects"]
        if languages and effect_FL.shape == (sae.d_sae, len(languages)):
            effects = LanguageEffects(languages, effect_FL)
    return SteeringResources(bundle, sae, layer, AtlasSteeringData(effects=effects))


def calibrate(run: RunPaths, res: SteeringResources, corpus: Path, clips: list[Clip]) -> dict[str, Any]:
    """Compute the calibration and the presets of `run` (module doc) and write them; returns a summary."""
    from pipelines.sae.split import read_split

    started = time.time()
    if res.layer is not None and res.layer != res.bundle.n_layers:
        note = f"no presets: the SAE reads layer {res.layer}, steering's sweeps edit the final encoder output"
        save_presets(run.root / "steering" / PRESETS_NAME, [], {"note": note, "rank_comparison": {}})
        return {"presets": [], "rank_comparison": {}, "rank": None, "seconds": 0.0, "note": note}
    split = read_split(run.sae)
    if split is None:
        raise AtlasError(f"{run.sae} records no train/evaluation split: retrain with `whisper-atlas train`")
    train = set(split.train)
    speech = _by_language({r: c for r, c in enumerate(clips) if r in train and c.category == SPEECH})
    languages = sorted(lang for lang in speech if lang)
    if len(languages) < 2:
        raise AtlasError("calibration needs training speech clips in at least two languages")
    nonspeech = round_robin(
        [c for r, c in enumerate(clips) if r in train and c.category != SPEECH], lambda c: c.category
    )[:SILENCE_GRADIENT_CLIPS]
    gradient_clips = {lang: encode_clips(res, corpus, speech[lang][:GRADIENT_CLIPS]) for lang in languages}
    silence_clips = encode_clips(res, corpus, nonspeech)
    sel_FL, nonspeech_F = _training_selectivity(run, res, clips, train, languages)
    res.calibration = Calibration(
        languages,
        np.stack([_language_gradients(res, gradient_clips[lang], languages) for lang in languages]),
        sel_FL,
        nonspeech_F,
        _silence_gradient(res, silence_clips),
    )
    share_clips = round_robin([c for lang in languages for c in speech[lang]], lambda c: c.language)
    res.calibration.nonspeech_share_threshold = _nonspeech_share_threshold(
        res, corpus, share_clips[:SHARE_CLIPS]
    )
    save_calibration(run.root / "steering" / CALIBRATION_NAME, res.calibration)
    curve_clips = {
        target: [gradient_clips[lang][i % len(gradient_clips[lang])] for i, lang in enumerate(others)]
        for target in languages
        for others in [[lang for lang in languages if lang != target][:CURVE_CLIPS]]
    }
    ranks = _compare_ranks(res, curve_clips)
    best_rank = max(ranks, key=lambda r: (ranks[r]["best_success_rate"], ranks[r]["mean_target_score"]))
    presets = [_language_preset(res, target, curve_clips[target], best_rank, ranks) for target in languages]
    speech_clips = [gradient_clips[lang][0] for lang in languages][:SPEECH_CURVE_CLIPS]
    if silence_clips:
        presets.append(_silence_preset(res, silence_clips[:SILENCE_CLIPS], speech_clips))
    used = {
        "gradient": [c.clip.id for group in gradient_clips.values() for c in group],
        "silence": [c.clip.id for c in silence_clips],
        "nonspeech_share": [c.id for c in share_clips[:SHARE_CLIPS]],
    }  # every clip calibration read: all training clips (tests check it)
    notes = {
        "rank_comparison": ranks,
        "rank": best_rank,
        "clips": used,
        "seconds": round(time.time() - started, 1),
    }
    save_presets(run.root / "steering" / PRESETS_NAME, presets, notes)
    return {"presets": [p.id for p in presets], **notes}


def _by_language(clips: dict[int, Clip]) -> dict[str, list[Clip]]:
    """Clips per language, round-robin over speakers so a few clips cover several voices."""
    languages: dict[str, list[Clip]] = {}
    for _, clip in sorted(clips.items()):
        languages.setdefault(clip.language or "", []).append(clip)
    return {lang: round_robin(group, lambda c: c.speaker or "") for lang, group in languages.items()}


def _language_gradients(res: SteeringResources, clips: list[SweepClip], languages: list[str]) -> np.ndarray:
    """(L, D): mean over `clips` of sum_t d log p(L) / d h_t for each language."""
    from pipelines.analysis.effects import LanguageEffectEstimate

    estimate = LanguageEffectEstimate(res.bundle, res.sae, languages)
    total = np.zeros((len(languages), res.sae.W_dec.shape[1]), np.float64)
    for clip in clips:
        (grad_LTD,) = estimate.grad_real_frames(clip.encoded.final_BTD, [clip.encoded.n_frames])
        total += grad_LTD.sum(1).double().numpy()
    return (total / max(len(clips), 1)).astype(np.float32)


def _silence_gradient(res: SteeringResources, clips: list[SweepClip]) -> np.ndarray:
    """(D,): mean over `clips` of sum_t d log p(no-speech token) / d h_t."""
    from pipelines.steering.directions import silence_gradient

    total = np.zeros(res.sae.W_dec.shape[1], np.float64)
    for clip in clips:
        total += silence_gradient(res.bundle, clip.encoded.final_BTD, clip.encoded.n_frames).double().numpy()
    return (total / max(len(clips), 1)).astype(np.float32)


def _training_selectivity(
    run: RunPaths, res: SteeringResources, clips: list[Clip], train: set[int], languages: list[str]
) -> tuple[np.ndarray, np.ndarray]:
    """((F, L), (F,)): selectivity for each language and for non-speech, over training frames only."""
    from pipelines.activations import iter_shards

    group = np.array(
        [
            (languages.index(c.language) if c.category == SPEECH and c.language in languages else -1)
            if row in train
            else -2
            for row, c in enumerate(clips)
        ]
    )  # a language's index; -1 non-speech; -2 not a training clip
    n_groups = len(languages) + 1
    mass_FG = np.zeros((res.sae.d_sae, n_groups), np.float64)
    frames_G = np.zeros(n_groups, np.float64)
    with torch.no_grad():
        for acts_ND, index_N2 in iter_shards(run.activations):
            g_N = group[index_N2[:, 0]]
            keep = g_N >= -1
            if not keep.any():
                continue
            column_N = np.where(g_N[keep] == -1, len(languages), g_N[keep])
            latents_NF = res.sae.encode(torch.as_tensor(np.asarray(acts_ND[keep], np.float32))).double()
            onehot_NG = torch.zeros(len(column_N), n_groups, dtype=torch.float64)
            onehot_NG[torch.arange(len(column_N)), torch.as_tensor(column_N)] = 1
            mass_FG += (latents_NF.T @ onehot_NG).numpy()
            frames_G += onehot_NG.sum(0).numpy()
    share_FG = mass_FG / np.maximum(mass_FG.sum(1, keepdims=True), 1e-30)
    sel_FG = (share_FG / np.maximum(frames_G / max(frames_G.sum(), 1), 1e-30)).astype(np.float32)
    return sel_FG[:, : len(languages)], sel_FG[:, len(languages)]


def _nonspeech_share_threshold(res: SteeringResources, corpus: Path, speech: list[Clip]) -> float:
    """The 99th percentile, over training speech clips each encoded alone, of the share of the clip's SAE
    activation that the non-speech features carry: about 1 speech clip in 100 reads as non-speech."""
    from pipelines.audio import decode_audio
    from pipelines.steering.run import encode_clip

    cal = res.calibration
    assert cal is not None
    if len(cal.nonspeech_features()) == 0 or not speech:
        raise AtlasError("no non-speech feature or no training speech clip: cannot tell non-speech clips")
    shares = []
    with torch.no_grad():
        for clip in speech:
            site_TD = encode_clip(res.bundle, decode_audio(corpus / clip.path), res.layer).site_TD
            shares.append(cal.nonspeech_share(res.sae, site_TD))
    return round(float(np.quantile(shares, 0.99)), 4)


def _toward(target: str, rank: str) -> dict[str, Any]:
    return {"toward_language": target, "method": "sae", "rank": rank, "n_features": N_FEATURES}


def _compare_ranks(res: SteeringResources, curve_clips: dict[str, list[SweepClip]]) -> dict[str, Any]:
    """Each rank's curve toward every target, pooled, on training clips. (Compared toward es and fr only, 4
    clips in all, the default run's rankings tied at 1 of 4 and the tie-break chose the ranking that did worst
    on held-out clips.)"""
    targets = list(curve_clips)
    out: dict[str, Any] = {}
    for rank in ("effect", "attribution", "selectivity"):
        if rank == "attribution" and res.atlas.effects is None:
            continue
        per_target = {}
        for t in targets:
            sweep = decode_sweep(
                res, curve_clips[t], lambda s: SteeringSpec(**_toward(t, rank), strength=s), list(STRENGTHS)
            )
            per_target[t] = language_curve(sweep, list(STRENGTHS), t)
        curves = list(per_target.values())
        pooled = {k: [float(np.mean(v)) for v in zip(*(c[k] for c in curves))] for k in curves[0]}
        best = int(np.argmax(pooled["success_rate"]))
        out[rank] = {
            "targets": targets,
            "curve": pooled,
            "best_success_rate": pooled["success_rate"][best],
            "best_strength": pooled["strength"][best],
            "loop_rate_at_best": pooled["loop_rate"][best],
            "mean_target_score": round(float(np.mean(pooled["target_score"][1:])), 4),
            "per_target": per_target,
        }
    return out


def _best_strength(curve: dict[str, list[float]], score: list[float], fallback: float) -> float:
    """The strength (not 0) of the highest score; `fallback` when no strength scores above zero."""
    best = int(np.argmax(score[1:])) + 1
    return curve["strength"][best] if score[best] > 0 else fallback


def _language_preset(
    res: SteeringResources, target: str, clips: list[SweepClip], rank: str, ranks: dict[str, Any]
) -> Preset:
    spec = _toward(target, rank)
    curve = ranks.get(rank, {}).get("per_target", {}).get(target)  # measured by the comparison already
    if curve is None:
        sweep = decode_sweep(res, clips, lambda s: SteeringSpec(**spec, strength=s), list(STRENGTHS))
        curve = language_curve(sweep, list(STRENGTHS), target)
    strength = _best_strength(curve, curve["success_rate"], STRENGTHS[1])
    return Preset(
        f"toward_{target}",
        f"Steer the transcript toward {target}: the {N_FEATURES} SAE features ranked by {rank} from the "
        "clip's detected language, added on every frame.",
        spec,
        strength,
        curve,
        "success_rate",
        len(clips),
        {"rank": rank, "clip_languages": [c.clip.language for c in clips]},
    )


def silencing_gain(gated: list[float], speech_cer: list[float]) -> list[float]:
    """Per strength (0 first): how much less often text survives the preset plus Whisper's gate than the gate
    alone (`gated[0]`); -1 where the mean speech CER exceeds `SPEECH_CER_BUDGET`, so it is never chosen."""
    return [round(gated[0] - g, 4) if cer <= SPEECH_CER_BUDGET else -1.0 for g, cer in zip(gated, speech_cer)]


def _silence_preset(res: SteeringResources, nonspeech: list[SweepClip], speech: list[SweepClip]) -> Preset:
    """Features that fire on non-speech and whose added direction most raises the no-speech probability."""
    from pipelines.steering.directions import unit_rows

    assert res.calibration is not None
    cal = res.calibration
    effect_F = (unit_rows(res.sae.W_dec.detach()) @ torch.as_tensor(cal.silence_grad_D)).numpy()
    candidates = cal.nonspeech_features()
    chosen = candidates[np.argsort(-effect_F[candidates])][:SILENCE_FEATURES]
    chosen = chosen[effect_F[chosen] > 0]
    if len(chosen) == 0:
        raise AtlasError("no non-speech feature raises the no-speech probability: no silencing preset")
    spec = {
        "features": [{"id": int(f), "strength": 1.0} for f in chosen],
        "mode": "add",
        "frames": "nonspeech_clip",
    }

    def spec_at(s: float) -> SteeringSpec:
        features = [FeatureStrength(id=int(f), strength=s) for f in chosen]
        return SteeringSpec(features=features, mode="add", frames="nonspeech_clip")

    strengths = list(SILENCE_STRENGTHS)
    quiet = silence_curve(decode_sweep(res, nonspeech, spec_at, strengths), strengths)
    kept = silence_curve(decode_sweep(res, speech, spec_at, strengths), strengths)
    curve = {
        "strength": quiet["strength"],
        "hallucination_rate": quiet["hallucination_rate"],
        "gated_hallucination_rate": quiet["gated_hallucination_rate"],
        "speech_changed_rate": kept["changed_rate"],
        "speech_cer": kept["cer"],
    }
    gain = silencing_gain(curve["gated_hallucination_rate"], curve["speech_cer"])
    curve["silencing_gain"] = gain
    strength = _best_strength(curve, gain, SILENCE_STRENGTHS[0])
    return Preset(
        "suppress_hallucination",
        "Silence the text Whisper invents on music, noise and other non-speech: non-speech features whose "
        "direction raises the no-speech probability, added only to clips the SAE reads as non-speech (its "
        "non-speech features carry most of their activation), so that Whisper's gate (no-speech > 0.6, "
        "log p < -1) drops the text and speech is left alone.",
        spec,
        strength,
        curve,
        "silencing_gain",
        len(nonspeech),
        {
            "features": [int(f) for f in chosen],
            "effect_on_log_p_no_speech": [round(float(effect_F[f]), 4) for f in chosen],
            "nonspeech_selectivity": [round(float(cal.nonspeech_selectivity_F[f]), 3) for f in chosen],
            "speech_clips": len(speech),
            "speech_cer_budget": SPEECH_CER_BUDGET,
            "nonspeech_share_threshold": cal.nonspeech_share_threshold,
            "nonspeech_features": len(candidates),
        },
    )
