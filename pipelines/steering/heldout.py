"""Steering judged on clips held out from every choice: each method beside its controls, and silencing beside
Whisper's no-speech gate.

The clips are those the run never trained on (`heldout_clips`): on its own corpus its SAE's evaluation sets
(new speaker, or known speaker with a new sentence: `pipelines.sae.split`); on a larger corpus that holds
its own (the tests score the small test run on the default corpus), every other clip too. Neither the SAE
nor `whisper-atlas calibrate`'s gradients, selectivities, rankings and default strengths ever saw them.

- `compare_methods`: toward a language, on held-out speech clips of every other corpus language, the three
  SAE rankings, the difference of means, the language gradient and a random direction (a different seed per
  clip) at the same strengths; `pipelines.steering.sweep.language_curve` per method.
- `compare_silencing`: on held-out non-speech clips, the hallucination rate with no steering, with Whisper's
  gate (no_speech_prob > 0.6 and avg_logprob < -1 drops the text) and with the `suppress_hallucination` preset
  (with and without the gate), beside as many random features applied the same way; on held-out speech
  clips of every language, how many transcripts the preset changed (and each transcript, to read). Since
  the preset acts only on clips the SAE reads as non-speech, that reading is also scored on its own, as a
  gate that drops a clip's text (`sae_reading_gate`), beside the same gate from Silero VAD finding no speech
  frame (`vad_gate`): the share of non-speech clips still with text, and of speech clips dropped.
"""

from __future__ import annotations

from dataclasses import replace
from pathlib import Path
from typing import TYPE_CHECKING, Any, Callable

from pipelines.corpus.manifest import SPEECH, Clip, round_robin
from pipelines.errors import AtlasError
from pipelines.paths import RunPaths
from pipelines.steering.resources import SteeringResources
from pipelines.steering.spec import SteeringSpec
from pipelines.steering.sweep import SweepClip, decode_sweep, encode_clips, language_curve, silence_curve

if TYPE_CHECKING:
    from pipelines.model.transcribe import Transcription

METHODS: dict[str, dict[str, Any]] = {
    "sae_effect": {"method": "sae", "rank": "effect"},
    "sae_attribution": {"method": "sae", "rank": "attribution"},
    "sae_selectivity": {"method": "sae", "rank": "selectivity"},
    "difference_of_means": {"method": "dom"},
    "gradient": {"method": "gradient"},
    "random_direction": {"method": "random"},
}
"""Each method's spec fields toward a language (n_features 10 for the SAE ones)."""


def heldout_clips(run: RunPaths, pool: list[Clip]) -> list[Clip]:
    """The clips of `pool` that the run's SAE and calibration never read (all but its training clips, by
    id): those of speakers it never trained on first, each group in `pool` order. `pool` is the run's own
    corpus (its evaluation clips) or a larger corpus that contains it."""
    from pipelines.activations import read_meta
    from pipelines.sae.split import read_split
    from pipelines.sae.train import run_clips

    split = read_split(run.sae)
    if split is None:
        raise AtlasError(f"{run.sae} records no split: retrain with `whisper-atlas train`")
    meta = read_meta(run.activations)
    if meta is None:
        raise AtlasError(f"{run.activations} holds no activations: run `whisper-atlas extract`")
    own = run_clips(meta)
    trained = [own[row] for row in split.train]
    ids, speakers = {c.id for c in trained}, {c.speaker for c in trained if c.speaker}
    unseen = [c for c in pool if c.id not in ids]
    return sorted(unseen, key=lambda c: c.speaker in speakers)


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
    methods: tuple[str, ...] = tuple(METHODS),
) -> dict[str, Any]:
    """Each of `methods`' curve toward `target` on held-out clips of the other languages (module doc)."""
    sources = _per_language(heldout, per_language, target)
    encoded = encode_clips(res, corpus, sources)
    out: dict[str, Any] = {"target": target, "clips": [c.id for c in sources], "methods": {}}
    for name in methods:
        fields = METHODS[name]
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
    nonspeech_clips: int = 24,
    speech_clips: int = 14,
) -> dict[str, Any]:
    """The silencing preset against no steering, Whisper's gate and random features (module doc), on up to
    `nonspeech_clips` held-out non-speech clips (taken in turn from each category) and `speech_clips`
    speech clips (in turn from each language)."""
    import numpy as np

    preset = res.presets.get("suppress_hallucination")
    if preset is None:
        raise AtlasError("the atlas has no suppress_hallucination preset: run `whisper-atlas calibrate`")
    quiet_clips = round_robin([c for c in heldout if c.category != SPEECH], lambda c: c.category)
    voiced = round_robin([c for c in heldout if c.category == SPEECH], lambda c: c.language)
    nonspeech = encode_clips(res, corpus, quiet_clips[:nonspeech_clips])
    speech = encode_clips(res, corpus, voiced[:speech_clips])
    ids = [f["id"] for f in preset.spec["features"]]
    others = np.random.default_rng(len(ids)).choice(res.sae.d_sae, len(ids), replace=False)
    control = replace(preset, spec={**preset.spec, "features": [{"id": int(f)} for f in others]})

    quiet_runs = decode_sweep(res, nonspeech, preset.steering_spec, strengths)
    quiet = silence_curve(quiet_runs, strengths)
    random = silence_curve(decode_sweep(res, nonspeech, control.steering_spec, strengths), strengths)
    speech_runs = decode_sweep(res, speech, preset.steering_spec, strengths)
    kept = silence_curve(speech_runs, strengths)
    baselines = [run[0] for run in quiet_runs]
    return {
        "nonspeech_clips": [c.clip.id for c in nonspeech],
        "speech_clips": [c.clip.id for c in speech],
        "strength": quiet["strength"],
        "no_steering": quiet["hallucination_rate"][0],
        "whisper_gate": quiet["gated_hallucination_rate"][0],
        "preset": quiet["hallucination_rate"],
        "preset_and_gate": quiet["gated_hallucination_rate"],
        "random_features": random["hallucination_rate"],
        "random_features_and_gate": random["gated_hallucination_rate"],
        "speech_changed_rate": kept["changed_rate"],
        "speech_cer": kept["cer"],
        "sae_reading_gate": _clip_gates(res, nonspeech, speech, baselines, _reads_as_nonspeech),
        "vad_gate": _clip_gates(res, nonspeech, speech, baselines, lambda _, c: not bool(c.speech_T.any())),
        "default_strength": preset.default_strength,
        "transcripts": {
            "nonspeech": _texts(nonspeech, quiet_runs),
            "speech": _texts(speech, speech_runs),
        },
    }


def _reads_as_nonspeech(res: SteeringResources, clip: SweepClip) -> bool:
    """The SAE reads the clip as non-speech: the condition of frames 'nonspeech_clip'."""
    cal = res.calibration
    if cal is None or cal.nonspeech_share_threshold is None:
        raise AtlasError("the calibration predates non-speech clips: run `whisper-atlas calibrate`")
    return cal.nonspeech_share(res.sae, clip.encoded.site_TD) >= cal.nonspeech_share_threshold


def _clip_gates(
    res: SteeringResources,
    nonspeech: list[SweepClip],
    speech: list[SweepClip],
    baselines: list[Transcription],
    drops: Callable[[SteeringResources, SweepClip], bool],
) -> dict[str, float]:
    """A gate that drops a clip's whole text when `drops` says so: the share of non-speech clips whose
    (unsteered) text survives it, and of speech clips it drops."""
    import numpy as np

    from pipelines.steering.sweep import has_text

    kept = [has_text(t) and not drops(res, c) for c, t in zip(nonspeech, baselines)]
    dropped = [drops(res, c) for c in speech]
    return {
        "hallucination_rate": round(float(np.mean(kept)), 4) if kept else 0.0,
        "speech_dropped_rate": round(float(np.mean(dropped)), 4) if dropped else 0.0,
    }


def _texts(clips: list[SweepClip], runs: list[list[Transcription]]) -> dict[str, list[dict[str, Any]]]:
    """Per clip id, its transcript at each strength (0 first) with what the gate reads."""
    return {
        c.clip.id: [
            {"text": t.text, "no_speech_prob": round(t.no_speech_prob, 3), "gated": t.no_speech_gated}
            for t in ts
        ]
        for c, ts in zip(clips, runs)
    }
