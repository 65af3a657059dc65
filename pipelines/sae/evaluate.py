"""Downstream check of an SAE: does Whisper still transcribe when the SAE's reconstruction replaces a layer?

For each speech clip (a reference transcript is optional), the encoder runs twice: unmodified, and with the
frames at `layer` replaced by the SAE's reconstruction (real frames only; the window's padding untouched), via
`pipelines.model.encoder.edit_layer` (at the last layer, the encoder's output, the splice is applied to the
unmodified output instead: the same tensor, one pass fewer). Both are decoded greedily with the clip's true
language forced, and scored by character error rate (CER) where the clip has a reference. Language
identification (no language forced) is compared too. This is the ASR analogue of the spliced-in language-
model loss that SAE papers report (e.g. Gao et al. 2024, "Scaling and evaluating sparse autoencoders").

Decoding runs on CTranslate2 by default (`decoder="ct2"`, `pipelines.model.align`): its Whisper takes final
encoder states of shape (B, 1500, D) in place of a log-mel, the tensor its own encoder ends with (after the
final layer norm, as transformers' `last_hidden_state`, which is what `encode` returns), so it decodes the
transformers encoder's states, spliced or not, in one batched greedy call and identifies the language with
`detect_language` on the same states. `decoder="transformers"` (greedy `generate`, `language_logits`) is
the reference implementation; tests/integration/test_spliced_real.py and benchmarks/spliced_bench.py
compare the two on real clips.

CER = Levenshtein distance (rapidfuzz) between normalised reference and hypothesis / length of the normalised
reference, where normalising lowercases (NFKC), drops punctuation and symbols, and collapses whitespace.
"""

from __future__ import annotations

import statistics
import time
import unicodedata
from pathlib import Path
from typing import Literal, get_args

import torch
from rapidfuzz.distance.Levenshtein import distance as levenshtein

from pipelines.constants import FRAMES_PER_WINDOW, WINDOW_SECONDS
from pipelines.corpus.manifest import SPEECH, Clip
from pipelines.sae.base import SparseAutoencoder

MAX_SECONDS = WINDOW_SECONDS
"""Longest clip checked: one encoder window."""

Decoder = Literal["ct2", "transformers"]
DECODERS: tuple[str, ...] = get_args(Decoder)

BATCH_CLIPS = 4
"""Clips encoded (and, on CTranslate2, decoded) together: 8 windows with their spliced twins."""


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
    """Speech clips in a language Whisper knows, at most one window long, taken round-robin over languages
    (so every held-out language counts) up to `limit`. A reference transcript is not needed: divergence
    compares the spliced transcript with the untouched one; CER against the reference skips clips without."""
    by_language: dict[str, list[Clip]] = {}
    for c in clips:
        if c.category == SPEECH and c.language in languages and c.duration <= MAX_SECONDS:
            by_language.setdefault(c.language, []).append(c)
    queues = list(by_language.values())
    chosen: list[Clip] = []
    for depth in range(max((len(q) for q in queues), default=0)):
        chosen += [q[depth] for q in queues if depth < len(q)]
    return chosen[:limit]


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


def spliced_states(
    bundle, sae: SparseAutoencoder, layer: int, feats_BMT: torch.Tensor, n_frames: list[int]
) -> tuple[torch.Tensor, torch.Tensor]:
    """Final encoder states (B, 1500, D) of a batch of windows: unmodified, and with the SAE spliced in at
    `layer` over each window's first `n_frames` frames. At the last layer (the encoder's output, after its
    final layer norm) the splice is applied to the unmodified output directly: the same tensor that the
    `edit_layer` hook there would give, without a second encoder pass."""
    from pipelines.model.encoder import edit_layer, encode

    mask_BT = torch.zeros(len(n_frames), FRAMES_PER_WINDOW, dtype=torch.bool, device=bundle.device)
    for row, n in enumerate(n_frames):
        mask_BT[row, :n] = True
    original = encode(bundle, feats_BMT)
    if layer == bundle.n_layers:
        return original, splice(sae, mask_BT)(original)
    with edit_layer(bundle, layer, splice(sae, mask_BT)):
        return original, encode(bundle, feats_BMT)


def _decode_transformers(
    bundle, hidden_BTD: torch.Tensor, languages: list[str], n_frames: list[int], max_new_tokens: int
):
    """(texts, detected languages) of rows [originals; spliced]: the reference implementation, transformers'
    greedy `generate` on each clip's two rows (its language forced), language ID by `language_logits`."""
    from pipelines.model.transcribe import GREEDY, LANGUAGES, language_logits, transcribe_encoded

    n = len(languages)
    texts = [""] * (2 * n)
    for i, language in enumerate(languages):
        pair = transcribe_encoded(
            bundle,
            hidden_BTD[[i, n + i]],
            language=language,
            max_new_tokens=max_new_tokens,
            n_frames=[n_frames[i]] * 2,
            decoding=GREEDY,  # the reference of the CTranslate2 path's greedy decode
        )
        texts[i], texts[n + i] = pair[0].text, pair[1].text
    lid = [LANGUAGES[int(i)] for i in language_logits(bundle, hidden_BTD).argmax(-1)]
    return texts, lid


def _decode_ct2(fast, hidden_BTD: torch.Tensor, languages: list[str], max_new_tokens: int):
    """(texts, detected languages) of rows [originals; spliced] in one batched CTranslate2 greedy decode
    (each row's clip language forced by its prompt) and one `detect_language` call, both reading the same
    final encoder states as the transformers path (CTranslate2 takes them in place of a log-mel)."""
    from pipelines.model.align import detect_languages, generate_tokens

    tokenizer = fast.bundle.processor.tokenizer
    notimestamps = int(tokenizer.convert_tokens_to_ids("<|notimestamps|>"))
    prompts = [fast.prompt(lang) + [notimestamps] for lang in languages * 2]
    tokens = generate_tokens(fast, hidden_BTD, prompts, [max_new_tokens] * len(prompts))
    texts = [str(tokenizer.decode(t, skip_special_tokens=True)).strip() for t in tokens]
    return texts, detect_languages(fast, hidden_BTD)


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
    decoder: Decoder = "ct2",
    batch_clips: int = BATCH_CLIPS,
    fast=None,
) -> dict:
    """CER with and without the SAE spliced in at `layer`, plus language-ID agreement (see module docstring).

    `clips` are candidates (e.g. the held-out clips); the first `max_clips` eligible ones are used, encoded
    `batch_clips` at a time. `decoder` `ct2` decodes on CTranslate2 (`fast`, a `FastWhisper` of `bundle`,
    is loaded when not given); `transformers` is the reference implementation. Besides `summarise`'s keys,
    `spliced_decoder` names the decoder and `spliced_seconds` times the encoder and decoder passes.
    """
    from pipelines.audio import decode_audio
    from pipelines.model.encoder import features_for, real_frames
    from pipelines.model.transcribe import LANGUAGES

    if decoder not in DECODERS:
        raise ValueError(f"decoder must be one of {', '.join(DECODERS)}, got {decoder!r}")
    if max_new_tokens < 1:
        raise ValueError(f"max_new_tokens must be at least 1, got {max_new_tokens}")
    chosen = eligible_clips(clips, LANGUAGES, max_clips)
    if decoder == "ct2" and fast is None and chosen:
        from pipelines.model.align import load_fast

        fast = load_fast(bundle)
    per_clip = []
    seconds = {"encode": 0.0, "decode": 0.0}
    for first in range(0, len(chosen), max(batch_clips, 1)):
        batch = chosen[first : first + max(batch_clips, 1)]
        started = time.perf_counter()
        audios = [decode_audio(corpus_dir / clip.path, max_seconds=MAX_SECONDS) for clip in batch]
        n_frames = [max(real_frames(len(audio)), 1) for audio in audios]
        original, spliced = spliced_states(bundle, sae, layer, features_for(bundle, audios), n_frames)
        hidden = torch.cat([original, spliced])
        decoded = time.perf_counter()
        languages = [clip.language for clip in batch]
        if decoder == "ct2":
            texts, lid = _decode_ct2(fast, hidden, languages, max_new_tokens)
        else:
            texts, lid = _decode_transformers(bundle, hidden, languages, n_frames, max_new_tokens)
        seconds["encode"] += decoded - started
        seconds["decode"] += time.perf_counter() - decoded
        n = len(batch)
        for i, clip in enumerate(batch):
            per_clip.append(
                {
                    "clip": clip.id,
                    "language": clip.language,
                    "original_cer": cer(clip.transcript, texts[i]) if clip.transcript.strip() else None,
                    "spliced_cer": cer(clip.transcript, texts[n + i]) if clip.transcript.strip() else None,
                    "original_text": texts[i],
                    "spliced_text": texts[n + i],
                    "original_lid": lid[i],
                    "spliced_lid": lid[n + i],
                }
            )
    return {**summarise(per_clip), "spliced_decoder": decoder, "spliced_seconds": seconds}


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
        return [row[key] for row in per_clip if row[key] is not None]

    def mean(key: str) -> float | None:
        values = column(key)
        return statistics.fmean(values) if values else None

    def median(key: str) -> float | None:
        values = column(key)
        return statistics.median(values) if values else None

    n = len(per_clip)
    return {
        "eval_clips": n,
        "reference_clips": len(column("original_cer")),
        "original_cer": mean("original_cer"),
        "spliced_cer": mean("spliced_cer"),
        "original_cer_median": median("original_cer"),
        "spliced_cer_median": median("spliced_cer"),
        "lid_agreement": sum(r["original_lid"] == r["spliced_lid"] for r in per_clip) / n,
        "lid_accuracy_original": sum(r["original_lid"] == r["language"] for r in per_clip) / n,
        "lid_accuracy_spliced": sum(r["spliced_lid"] == r["language"] for r in per_clip) / n,
        "identical_text": sum(r["original_text"] == r["spliced_text"] for r in per_clip),
        "cer_definition": "Levenshtein(ref, hyp) / len(ref) over lowercased NFKC text without punctuation, "
        "over the clips with a reference transcript",
        "per_clip": per_clip,
    }
