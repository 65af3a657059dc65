"""Steering measured over many clips and strengths: preset curves, and methods compared with controls.

A sweep encodes each clip once (alone in its window, as the server encodes an upload), decodes its baseline
and its steered states at every strength in one batch with Whisper's decoding (`transcribe_encoded`:
temperature fallback, no-speech gate), and aggregates per strength:

- toward a language L: `token_flip_rate` (the language token changed), `success_rate` (the text reads as L
  and does not loop, `TranscriptMeasures.succeeded_toward`), `loop_rate`, `cer` (mean CER vs baseline),
  `target_score` (mean probability that the text is in L, 0 for a loop: success graded, so that few clips
  can still tell two steers apart);
- for silencing non-speech: `hallucination_rate` (the text is not empty), `gated_hallucination_rate` (not
  empty and not dropped by Whisper's no-speech gate), `changed_rate` (text differs from the baseline) and
  `cer`, each on the clips given (callers pass non-speech and speech clips separately).

Strength 0 is measured too (the baseline itself), so every curve starts from what Whisper does unsteered.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Callable

import numpy as np
import torch

from pipelines.sae.evaluate import normalise_text
from pipelines.steering.measures import measure
from pipelines.steering.plan import plan_steering
from pipelines.steering.resources import SteeringResources
from pipelines.steering.run import EncodedClip, encode_clip
from pipelines.steering.spec import SteeringError, SteeringSpec

if TYPE_CHECKING:
    from pipelines.corpus.manifest import Clip
    from pipelines.model.transcribe import Transcription

SWEEP_TOKENS = 32
"""Decoder budget per transcript in sweeps: the corpus clips are a few seconds long (their transcripts well
under 32 tokens), and a looping decode, re-decoded at every fallback temperature, costs the whole budget."""


@dataclass
class SweepClip:
    """A corpus clip encoded once, with its VAD decision per frame."""

    clip: Clip
    encoded: EncodedClip
    speech_T: torch.Tensor


def encode_clips(res: SteeringResources, corpus: Path, clips: list[Clip]) -> list[SweepClip]:
    """Decode and encode each clip (alone in its window) and find its speech frames."""
    from pipelines.annotate.vad import speech_frames
    from pipelines.audio import decode_audio

    audios = [decode_audio(corpus / c.path) for c in clips]
    encoded = [encode_clip(res.bundle, a, res.layer) for a in audios]
    speech = speech_frames(audios, [e.n_frames for e in encoded])
    return [SweepClip(c, e, torch.as_tensor(s)) for c, e, s in zip(clips, encoded, speech)]


def _steered_states(res: SteeringResources, clip: SweepClip, spec: SteeringSpec) -> torch.Tensor:
    """(1500, D) final encoder states of `clip` steered by `spec` (SAE at the final output), from the clip's
    corpus language unless the spec names a source."""
    enc = clip.encoded
    n = enc.n_frames
    if spec.toward_language and spec.source_language is None:  # steer from the clip's known language
        spec = spec.model_copy(update={"source_language": clip.clip.language})
    plan = plan_steering(res, spec, enc.site_TD, enc.final_BTD, n, clip.speech_T)
    state = enc.final_BTD[0].clone()
    state[:n] = plan.edit(enc.site_TD)
    return state


def decode_sweep(
    res: SteeringResources,
    clips: list[SweepClip],
    spec_at: Callable[[float], SteeringSpec],
    strengths: list[float],
) -> list[list[Transcription]]:
    """Per clip, its transcripts at each strength (index 0: the baseline, strength 0 by definition)."""
    from pipelines.model.transcribe import transcribe_encoded

    if res.layer is not None and res.layer != res.bundle.n_layers:
        raise SteeringError("sweeps edit the final encoder output: the SAE must read it")
    out = []
    with torch.no_grad():
        for clip in clips:
            enc = clip.encoded
            states = [enc.final_BTD[0]] + [_steered_states(res, clip, spec_at(s)) for s in strengths]
            out.append(
                transcribe_encoded(
                    res.bundle,
                    torch.stack(states),
                    max_new_tokens=SWEEP_TOKENS,
                    n_frames=[enc.n_frames] * len(states),
                    first_row_is_reference=True,
                )
            )
    return out


def language_curve(
    transcripts: list[list[Transcription]], strengths: list[float], target: str
) -> dict[str, list[float]]:
    """Rates per strength (strength 0 first) of steering toward `target` (see the module doc)."""
    curve: dict[str, list[float]] = {"strength": [0.0, *strengths]}
    rows = [
        [measure(ts[0].text, ts[0].language, t.text, t.language, target) for t in ts] for ts in transcripts
    ]
    for k in range(len(strengths) + 1):
        at = [r[k] for r in rows]
        curve.setdefault("token_flip_rate", []).append(_mean([m.token_flipped for m in at]))
        curve.setdefault("success_rate", []).append(_mean([m.succeeded_toward(target) for m in at]))
        curve.setdefault("loop_rate", []).append(_mean([m.degenerate for m in at]))
        curve.setdefault("cer", []).append(_mean([min(m.cer_vs_baseline, 1.0) for m in at]))
        curve.setdefault("target_score", []).append(
            _mean([0.0 if m.degenerate else m.target_probability or 0.0 for m in at])
        )
    return curve


def silence_curve(transcripts: list[list[Transcription]], strengths: list[float]) -> dict[str, list[float]]:
    """Per strength (0 first): how often text is written, with and without Whisper's gate, and how much it
    changed from the baseline (see the module doc)."""
    from pipelines.sae.evaluate import cer

    curve: dict[str, list[float]] = {"strength": [0.0, *strengths]}
    for k in range(len(strengths) + 1):
        at = [(ts[0], ts[k]) for ts in transcripts]
        curve.setdefault("hallucination_rate", []).append(_mean([has_text(t) for _, t in at]))
        curve.setdefault("gated_hallucination_rate", []).append(
            _mean([has_text(t) and not t.no_speech_gated for _, t in at])
        )
        curve.setdefault("changed_rate", []).append(
            _mean([normalise_text(t.text) != normalise_text(b.text) for b, t in at])
        )
        curve.setdefault("cer", []).append(_mean([min(cer(b.text, t.text), 1.0) for b, t in at]))
    return curve


def has_text(t: Transcription) -> bool:
    """The decoder wrote something: at least one letter or digit after normalisation."""
    return any(ch.isalnum() for ch in normalise_text(t.text))


def _mean(values: list[bool] | list[float]) -> float:
    return round(float(np.mean(values)), 4) if values else 0.0
