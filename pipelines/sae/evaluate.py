"""Downstream check of an SAE: does Whisper still transcribe when the SAE's reconstruction replaces a layer?

For each speech clip with a reference transcript, the encoder runs twice: unmodified, and with the frames at
`layer` replaced by the SAE's reconstruction (real frames only; the 30 s window's padding is left alone), via
`pipelines.model.encoder.edit_layer`. Both are decoded greedily with the clip's true language forced, and
scored by character error rate (CER). Language identification (no language forced) is compared too. This is
the ASR analogue of the spliced-in language-model loss that SAE papers report (e.g. Gao et al. 2024,
"Scaling and evaluating sparse autoencoders").

CER = Levenshtein distance (rapidfuzz) between normalised reference and hypothesis / length of the normalised
reference, where normalising lowercases (NFKC), drops punctuation and symbols, and collapses whitespace.
"""

from __future__ import annotations

import statistics
import unicodedata
from pathlib import Path

import torch
from rapidfuzz.distance.Levenshtein import distance as levenshtein

from pipelines.constants import FRAMES_PER_WINDOW, WINDOW_SECONDS
from pipelines.corpus.manifest import SPEECH, Clip
from pipelines.sae.base import SparseAutoencoder

MAX_SECONDS = WINDOW_SECONDS
"""Longest clip checked: one encoder window."""


def normalise_text(text: str) -> str:
    kept = (
        " " if unicodedata.category(ch)[0] in "PSZ" else ch
        for ch in unicodedata.normalize("NFKC", text.lower())
    )
    return " ".join("".join(kept).split())


def cer(reference: str, hypothesis: str) -> float:
    ref, hyp = normalise_text(reference), normalise_text(hypothesis)
    return levenshtein(ref, hyp) / max(len(ref), 1)


def eligible_clips(clips: list[Clip], languages: list[str], limit: int) -> list[Clip]:
    """Speech clips with a transcript, a language Whisper knows, and at most one window of audio."""
    ok = [
        c
        for c in clips
        if c.category == SPEECH
        and c.transcript.strip()
        and c.language in languages
        and c.duration <= MAX_SECONDS
    ]
    return ok[:limit]


def splice(sae: SparseAutoencoder, mask_BT: torch.Tensor):
    """An edit for `edit_layer`: real frames (mask True) -> the SAE's reconstruction, padding untouched."""

    def edit(hidden_BTD: torch.Tensor) -> torch.Tensor:
        real_ND = hidden_BTD[mask_BT].to(sae.W_dec.device, torch.float32)
        with torch.no_grad():
            x_hat_ND = sae(real_ND).x_hat_BD
        out_BTD = hidden_BTD.clone()
        out_BTD[mask_BT] = x_hat_ND.to(hidden_BTD.device, hidden_BTD.dtype)
        return out_BTD

    return edit


@torch.no_grad()
def spliced_eval(
    bundle,
    sae: SparseAutoencoder,
    clips: list[Clip],
    corpus_dir: Path,
    layer: int,
    *,
    max_clips: int = 40,
    max_new_tokens: int = 96,
) -> dict:
    """CER with and without the SAE spliced in at `layer`, plus language-ID agreement (see module docstring).

    `clips` are candidates (e.g. the held-out clips); the first `max_clips` eligible ones are used.
    """
    from pipelines.audio import decode_audio
    from pipelines.model.encoder import edit_layer, encode, features_for, real_frames
    from pipelines.model.transcribe import LANGUAGES, language_logits, transcribe_encoded

    chosen = eligible_clips(clips, LANGUAGES, max_clips)
    per_clip = []
    for clip in chosen:
        audio = decode_audio(corpus_dir / clip.path, max_seconds=MAX_SECONDS)
        n_frames = max(real_frames(len(audio)), 1)
        feats = features_for(bundle, [audio])
        mask_BT = torch.zeros(1, FRAMES_PER_WINDOW, dtype=torch.bool, device=bundle.device)
        mask_BT[0, :n_frames] = True
        original = encode(bundle, feats)
        with edit_layer(bundle, layer, splice(sae, mask_BT)):
            spliced = encode(bundle, feats)
        hidden = torch.cat([original, spliced])
        texts = transcribe_encoded(
            bundle, hidden, language=clip.language, max_new_tokens=max_new_tokens, n_frames=[n_frames] * 2
        )
        lid = [LANGUAGES[int(i)] for i in language_logits(bundle, hidden).argmax(-1)]
        per_clip.append(
            {
                "clip": clip.id,
                "language": clip.language,
                "original_cer": cer(clip.transcript, texts[0].text),
                "spliced_cer": cer(clip.transcript, texts[1].text),
                "original_text": texts[0].text,
                "spliced_text": texts[1].text,
                "original_lid": lid[0],
                "spliced_lid": lid[1],
            }
        )
    return summarise(per_clip)


def summarise(per_clip: list[dict]) -> dict:
    if not per_clip:
        return {
            "eval_clips": 0,
            "spliced_cer": None,
            "original_cer": None,
            "lid_agreement": None,
            "per_clip": [],
        }

    def column(key: str) -> list:
        return [row[key] for row in per_clip]

    n = len(per_clip)
    return {
        "eval_clips": n,
        "original_cer": statistics.fmean(column("original_cer")),
        "spliced_cer": statistics.fmean(column("spliced_cer")),
        "original_cer_median": statistics.median(column("original_cer")),
        "spliced_cer_median": statistics.median(column("spliced_cer")),
        "lid_agreement": sum(r["original_lid"] == r["spliced_lid"] for r in per_clip) / n,
        "lid_accuracy_original": sum(r["original_lid"] == r["language"] for r in per_clip) / n,
        "lid_accuracy_spliced": sum(r["spliced_lid"] == r["language"] for r in per_clip) / n,
        "identical_text": sum(r["original_text"] == r["spliced_text"] for r in per_clip),
        "cer_definition": "Levenshtein(ref, hyp) / len(ref) over lowercased NFKC text without punctuation",
        "per_clip": per_clip,
    }
