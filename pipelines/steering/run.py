"""One steering request: encode the clip once, plan the edit, decode three states in one batch.

The encoder runs ONCE per request; baseline, SAE-reconstructed and steered states are decoded in ONE batched
`transcribe_encoded` call. With an SAE on an intermediate layer the two edits are applied there and flow
through the remaining encoder layers in one batched pass. The result's JSON (`SteerResult.to_dict`) is the
answer of both the CLI and the API, with a word-level diff of the baseline and steered transcripts. The
reconstructed and steered transcripts each carry `measures` (pipelines.steering.measures): the language their
text reads as, a loop flag, CER against the baseline, and whether they succeeded toward the target language.
"""

from __future__ import annotations

import difflib
from dataclasses import asdict, dataclass
from typing import TYPE_CHECKING

import numpy as np
import torch

from pipelines.steering.directions import mean_frame_norm, reconstruct
from pipelines.steering.measures import TranscriptMeasures, measure
from pipelines.steering.plan import SteeringPlan, plan_steering
from pipelines.steering.resources import SteeringResources
from pipelines.steering.spec import MAX_NEW_TOKENS, SteeringSpec

if TYPE_CHECKING:  # the model stack loads with the model, not with this module
    from pipelines.model.loader import WhisperBundle
    from pipelines.model.transcribe import Transcription

TOP_LANGUAGES = 8
"""Language probabilities reported per transcript (the rest of Whisper's 99 are near zero)."""


@dataclass
class EncodedClip:
    """One clip through the encoder once: what live analysis and steering both start from."""

    audio: np.ndarray
    input_features_BMT: torch.Tensor
    """(1, 80, 3000) log-mel."""
    final_BTD: torch.Tensor
    """(1, 1500, D) final encoder output."""
    site_TD: torch.Tensor
    """(T, D) real frames at the SAE's layer (a view of `final_BTD` when that is the final output)."""
    n_frames: int


def encode_clip(bundle: WhisperBundle, audio: np.ndarray, layer: int | None = None) -> EncodedClip:
    """Run the encoder once, keeping the final output and the real frames at `layer` (None = final)."""
    from pipelines.model.encoder import edit_layer, encode, features_for, real_frames

    n = real_frames(len(audio))
    feats_BMT = features_for(bundle, [audio])
    if layer is None or layer == bundle.n_layers:
        with torch.no_grad():
            final = encode(bundle, feats_BMT)
        return EncodedClip(audio, feats_BMT, final, final[0, :n], n)
    captured: list[torch.Tensor] = []

    def capture(out_BTD: torch.Tensor) -> torch.Tensor:
        captured.append(out_BTD[0, :n].detach().to(torch.float32, copy=True))

        return out_BTD

    with torch.no_grad(), edit_layer(bundle, layer, capture):
        final = encode(bundle, feats_BMT)
    return EncodedClip(audio, feats_BMT, final, captured[0], n)


def transcription_dict(t: Transcription) -> dict:
    """JSON view of a `Transcription`: text, language, top language probabilities, degeneracy flag, and
    Whisper's decoding figures (no-speech probability, average log probability, temperature kept, gate)."""
    probs = list(t.language_probs.items())[:TOP_LANGUAGES]
    return {
        "text": t.text,
        "language": t.language,
        "language_probs": {k: round(v, 4) for k, v in probs},
        "repetitive": t.repetitive,
        "no_speech_prob": round(t.no_speech_prob, 4),
        "avg_logprob": round(t.avg_logprob, 4),
        "temperature": t.temperature,
        "no_speech_gated": t.no_speech_gated,
    }


@dataclass
class SteerResult:
    baseline: Transcription
    """Transcription of the untouched encoder output."""
    reconstructed: Transcription
    """Transcription with the real frames replaced by the SAE reconstruction (no error term)."""
    steered: Transcription
    spec: SteeringSpec
    plan: SteeringPlan
    frame_norm: float
    n_frames: int
    hidden_3TD: torch.Tensor
    """Final encoder states decoded, in order baseline / reconstructed / steered (real frames only)."""

    def measures(self, name: str) -> TranscriptMeasures:
        """The `reconstructed` or `steered` transcript judged against the baseline, for the plan's target."""
        t = getattr(self, name)
        return measure(
            self.baseline.text, self.baseline.language, t.text, t.language, self.plan.target_language
        )

    def warnings(self) -> list[str]:
        out = []
        if self.steered.repetitive:
            out.append("the steered output degenerated (a repetition loop or nothing): lower the strength")
        if self.reconstructed.repetitive and not self.baseline.repetitive:
            out.append("the SAE reconstruction alone already degrades this clip")
        steered = self.measures("steered")
        target = self.plan.target_language
        if target and steered.token_flipped and not steered.succeeded_toward(target):
            out.append(
                f"the language token flipped, but the text does not read as {target} or loops: "
                "see the steered transcript's measures"
            )
        return out

    def to_dict(self) -> dict:
        """The JSON answer of the CLI and the API: three transcripts (the reconstructed and steered ones with
        their `measures` against the baseline), what was applied, a word diff."""
        return {
            "baseline": transcription_dict(self.baseline),
            **{
                name: {**transcription_dict(getattr(self, name)), "measures": self.measures(name).to_dict()}
                for name in ("reconstructed", "steered")
            },
            "features_used": [asdict(f) for f in self.plan.features_used],
            "source_language": self.plan.source_language,
            "target_language": self.plan.target_language,
            "selection": self.plan.selection,
            "mode": self.spec.mode,
            "method": self.spec.method,
            "rank": self.spec.rank if self.spec.method == "sae" and self.spec.toward_language else None,
            "frames": self.spec.frames,
            "nonspeech_share": _rounded(self.plan.nonspeech_share),
            "nonspeech_threshold": _rounded(self.plan.nonspeech_threshold),
            "scale": self.spec.scale,
            "frame_norm": round(self.frame_norm, 4),
            "diff": word_diff(self.baseline.text, self.steered.text),
            "warnings": self.warnings(),
        }


def steer(res: SteeringResources, audio: np.ndarray, spec: SteeringSpec) -> SteerResult:
    """Transcribe `audio` as is, through the SAE, and steered by `spec`, encoding once."""
    from pipelines.model.transcribe import WHISPER_DECODING, transcribe_encoded

    clip = encode_clip(res.bundle, audio, res.layer)
    n = clip.n_frames
    speech_T = None
    if spec.frames in ("speech", "nonspeech"):
        from pipelines.annotate.vad import speech_frames

        speech_T = torch.as_tensor(speech_frames([audio], [n])[0])
    with torch.no_grad():
        plan = plan_steering(res, spec, clip.site_TD, clip.final_BTD, n, speech_T)
        hidden_3TD = _edited_states(res, clip, plan)
        tokens = min(spec.max_new_tokens, MAX_NEW_TOKENS)
        baseline, reconstructed, steered = transcribe_encoded(
            res.bundle,
            hidden_3TD,
            max_new_tokens=tokens,
            n_frames=[n, n, n],
            first_row_is_reference=True,
            decoding=res.decoding or WHISPER_DECODING,
        )
    frame_norm = mean_frame_norm(clip.site_TD)
    return SteerResult(baseline, reconstructed, steered, spec, plan, frame_norm, n, hidden_3TD[:, :n])


def _edited_states(res: SteeringResources, clip: EncodedClip, plan: SteeringPlan) -> torch.Tensor:
    """(3, 1500, D) final encoder states: untouched, SAE-reconstructed and steered at the SAE's layer."""
    from pipelines.model.encoder import edit_layer, encode

    n = clip.n_frames
    site_edits = [lambda h: reconstruct(res.sae, h), plan.edit]
    if res.layer is None or res.layer == res.bundle.n_layers:
        states = [clip.final_BTD[0]]
        for edit in site_edits:
            state = clip.final_BTD[0].clone()
            state[:n] = edit(clip.site_TD)
            states.append(state)
        return torch.stack(states)

    def edit_items(out_BTD: torch.Tensor) -> torch.Tensor:  # the edit flows through the remaining layers
        out = out_BTD.clone()
        with torch.autocast(out.device.type, enabled=False):  # the SAE in float32, as planned
            for b, edit in enumerate(site_edits):
                out[b, :n] = edit(out_BTD[b, :n].float()).to(out.dtype)
        return out

    with edit_layer(res.bundle, res.layer, edit_items):
        edited = encode(res.bundle, clip.input_features_BMT.expand(2, -1, -1))
    return torch.cat([clip.final_BTD, edited])


def _rounded(value: float | None) -> float | None:
    return None if value is None else round(value, 4)


def word_diff(before: str, after: str) -> list[dict[str, str]]:
    """Word-level diff: a list of {"op": "equal"|"delete"|"insert", "text": ...} (a replace is both)."""
    a, b = before.split(), after.split()
    ops: list[dict[str, str]] = []
    for tag, i1, i2, j1, j2 in difflib.SequenceMatcher(a=a, b=b, autojunk=False).get_opcodes():
        if tag == "equal":
            ops.append({"op": "equal", "text": " ".join(a[i1:i2])})
        if tag in ("delete", "replace"):
            ops.append({"op": "delete", "text": " ".join(a[i1:i2])})
        if tag in ("insert", "replace"):
            ops.append({"op": "insert", "text": " ".join(b[j1:j2])})
    return ops
