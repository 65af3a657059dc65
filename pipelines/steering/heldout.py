"""Steering judged on clips held out from every choice: each method beside its controls, and silencing beside
Whisper's no-speech gate.

The clips are the SAE's evaluation sets (new speaker, or known speaker with a new sentence: `pipelines.sae.
split`), which neither the SAE, nor `whisper-atlas calibrate`'s gradients, selectivities, rankings and
default strengths ever saw.

- `compare_methods`: toward a language, on held-out speech clips of every other corpus language, the three
  SAE rankings, the difference of means, the language gradient and a random direction (a different seed per
  clip) at the same strengths; `pipelines.steering.sweep.language_curve` per method.
- `compare_silencing`: on held-out non-speech clips, the hallucination rate with no steering, with Whisper's
  gate (no_speech_prob > 0.6 and avg_logprob < -1 drops the text) and with the `suppress_hallucination` preset
  (with and without the gate), beside random directions of the same norm on the same frames; on held-out
  speech clips, how many transcripts the preset changed.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

from pipelines.corpus.manifest import SPEECH, Clip
from pipelines.errors import AtlasError
from pipelines.paths import RunPaths
from pipelines.steering.resources import SteeringResources
from pipelines.steering.spec import FeatureStrength, SteeringSpec
from pipelines.steering.sweep import decode_sweep, encode_clips, language_curve, silence_curve

METHODS: dict[str, dict[str, Any]] = {
    "sae_effect": {"method": "sae", "rank": "effect"},
    "sae_attribution": {"method": "sae", "rank": "attribution"},
    "sae_selectivity": {"method": "sae", "rank": "selectivity"},
    "difference_of_means": {"method": "dom"},
    "gradient": {"method": "gradient"},
    "random_direction": {"method": "random"},
}
"""Each method's spec fields toward a language (n_features 10 for the SAE ones)."""


def heldout_clips(run: RunPaths, clips: list[Clip]) -> list[Clip]:
    """The SAE's evaluation clips (speaker- and group-held-out), in manifest order."""
    from pipelines.sae.split import read_split

    split = read_split(run.sae)
    if split is None:
        raise AtlasError(f"{run.sae} records no split: retrain with `whisper-atlas train`")
    return [clips[row] for row in split.evaluation]


def _per_language(clips: list[Clip], per_language: int, skip: str) -> list[Clip]:
    """Up to `per_language` speech clips of each language other than `skip`."""
    chosen: dict[str, list[Clip]] = {}
    for clip in clips:
        if clip.category == SPEECH and clip.language and clip.language != skip:
            group = chosen.setdefault(clip.language, [])
            if len(group) < per_language:
                group.append(clip)
    return [c for group in chosen.values() for c in group]


def compare_methods(
    res: SteeringResources,
    corpus: Path,
    heldout: list[Clip],
    target: str,
    strengths: list[float],
    per_language: int = 2,
) -> dict[str, Any]:
    """Each method's curve toward `target` on held-out clips of the other languages (module doc)."""
    sources = _per_language(heldout, per_language, target)
    encoded = encode_clips(res, corpus, sources)
    out: dict[str, Any] = {"target": target, "clips": [c.id for c in sources], "methods": {}}
    for name, fields in METHODS.items():
        if fields.get("rank") == "attribution" and res.atlas.effects is None:
            continue
        curves = []
        for i, clip in enumerate(encoded):  # one clip at a time: the random control's seed is per clip

            def spec_at(s: float, i: int = i) -> SteeringSpec:
                return SteeringSpec(toward_language=target, strength=s, seed=i, n_features=10, **fields)

            curves.append(decode_sweep(res, [clip], spec_at, strengths)[0])
        out["methods"][name] = language_curve(curves, strengths, target)
    return out


def compare_silencing(
    res: SteeringResources,
    corpus: Path,
    heldout: list[Clip],
    strengths: list[float],
    speech_clips: int = 12,
) -> dict[str, Any]:
    """The silencing preset against no steering, Whisper's gate and random directions (module doc)."""
    preset = res.presets.get("suppress_hallucination")
    if preset is None:
        raise AtlasError("the atlas has no suppress_hallucination preset: run `whisper-atlas calibrate`")
    ids = [f["id"] for f in preset.spec["features"]]
    nonspeech = encode_clips(res, corpus, [c for c in heldout if c.category != SPEECH])
    speech = encode_clips(res, corpus, [c for c in heldout if c.category == SPEECH][:speech_clips])

    def preset_at(s: float) -> SteeringSpec:
        features = [FeatureStrength(id=f, strength=s) for f in ids]
        return SteeringSpec(features=features, mode="add", frames=preset.spec.get("frames", "all"))

    def random_at(s: float) -> SteeringSpec:  # random features of the same count: the same added norm
        import numpy as np

        rng = np.random.default_rng(len(ids))
        others = rng.choice(res.sae.d_sae, len(ids), replace=False)
        features = [FeatureStrength(id=int(f), strength=s) for f in others]
        return SteeringSpec(features=features, mode="add", frames=preset.spec.get("frames", "all"))

    quiet = silence_curve(decode_sweep(res, nonspeech, preset_at, strengths), strengths)
    control = silence_curve(decode_sweep(res, nonspeech, random_at, strengths), strengths)
    kept = silence_curve(decode_sweep(res, speech, preset_at, strengths), strengths)
    return {
        "nonspeech_clips": [c.clip.id for c in nonspeech],
        "speech_clips": [c.clip.id for c in speech],
        "strength": quiet["strength"],
        "no_steering": quiet["hallucination_rate"][0],
        "whisper_gate": quiet["gated_hallucination_rate"][0],
        "preset": quiet["hallucination_rate"],
        "preset_and_gate": quiet["gated_hallucination_rate"],
        "random_features": control["hallucination_rate"],
        "speech_changed_rate": kept["changed_rate"],
        "speech_cer": kept["cer"],
        "default_strength": preset.default_strength,
    }
