"""Decoding from encoder states: language identification, greedy transcription, word timestamps.

Everything starts from final encoder states (B, 1500, D), so callers can decode what they edited (baseline,
SAE-reconstructed and steered states in one batch). Language ID follows Whisper (Radford et al. 2022, sec.
2.3): one decoder step after `<|startoftranscript|>`, softmax over the language tokens only. Transcripts are
greedy, capped at `max_new_tokens` (a wrong forced language can otherwise loop to the 448-token limit), and
flagged repetitive like Whisper's fallback rule: gzip compression ratio > 2.4, or empty. Word timestamps come
from transformers' DTW over the cross-attention of the alignment heads (`return_token_timestamps`).
"""

from __future__ import annotations

import zlib
from dataclasses import dataclass, field

import numpy as np
import torch
from transformers import PreTrainedTokenizerBase, StoppingCriteria, StoppingCriteriaList
from transformers.modeling_outputs import BaseModelOutput

from pipelines.constants import FRAME_SECONDS, FRAMES_PER_WINDOW
from pipelines.errors import AtlasError
from pipelines.model.encoder import encode, features_for, real_frames
from pipelines.model.loader import WhisperBundle

# fmt: off
LANGUAGES: list[str] = [
    "en", "zh", "de", "es", "ru", "ko", "fr", "ja", "pt", "tr", "pl", "ca", "nl", "ar", "sv", "it", "id",
    "hi", "fi", "vi", "he", "uk", "el", "ms", "cs", "ro", "da", "hu", "ta", "no", "th", "ur", "hr", "bg",
    "lt", "la", "mi", "ml", "cy", "sk", "te", "fa", "lv", "bn", "sr", "az", "sl", "kn", "et", "mk", "br",
    "eu", "is", "hy", "ne", "mn", "bs", "kk", "sq", "sw", "gl", "mr", "pa", "si", "km", "sn", "yo", "so",
    "af", "oc", "ka", "be", "tg", "sd", "gu", "am", "yi", "lo", "uz", "fo", "ht", "ps", "tk", "nn", "mt",
    "sa", "lb", "my", "bo", "tl", "mg", "as", "tt", "haw", "ln", "ha", "ba", "jw", "su",
]
"""Whisper's 99 language codes in token order (`<|en|>` = 50259 ... `<|su|>` = 50357)."""
# fmt: on

NO_SPACE_LANGUAGES = {"zh", "ja", "th", "lo", "my", "yue"}
"""Languages written without spaces: words are split at unicode-complete tokens instead (as Whisper does)."""

REPETITION_GZIP_RATIO = 2.4
"""Whisper's compression-ratio threshold above which a decode is considered a repetition loop."""

PROMPT_LENGTH = 4
"""<|startoftranscript|> <|lang|> <|transcribe|> <|notimestamps|>."""


class UnknownLanguageError(AtlasError):
    """A language code that Whisper does not have."""


@dataclass
class Word:
    word: str
    start: float
    """Seconds from the start of the window."""
    end: float


@dataclass
class Transcription:
    text: str
    language: str
    """The language decoded with (forced, or the most probable one)."""
    language_probs: dict[str, float]
    """Probability of each language, most probable first."""
    tokens: list[int]
    """Generated text token ids (no prompt, no end-of-text)."""
    words: list[Word] = field(default_factory=list)
    """Filled when word timestamps were asked for."""
    repetitive: bool = False
    """gzip compression ratio of the text > 2.4, or empty text: likely a hallucination loop."""


def _language_token_ids(bundle: WhisperBundle) -> list[int]:
    return bundle.processor.tokenizer.convert_tokens_to_ids([f"<|{code}|>" for code in LANGUAGES])


def check_language(language: str) -> str:
    if language not in LANGUAGES:
        raise UnknownLanguageError(
            f"unknown language {language!r}: use a Whisper language code such as en, es, fr"
        )
    return language


def language_logits(bundle: WhisperBundle, encoder_hidden_BTD: torch.Tensor) -> torch.Tensor:
    """(B, 99) logits of the language tokens at the decoder's first step; differentiable wrt the input."""
    sot = bundle.model.generation_config.decoder_start_token_id
    batch = encoder_hidden_BTD.shape[0]
    decoder_input_ids = torch.full((batch, 1), sot, dtype=torch.long, device=bundle.device)
    with bundle.autocast():
        out = bundle.model(
            encoder_outputs=BaseModelOutput(last_hidden_state=encoder_hidden_BTD.to(bundle.device)),
            decoder_input_ids=decoder_input_ids,
            use_cache=False,
        )
    return out.logits[:, -1, _language_token_ids(bundle)].float()


def compression_ratio(text: str) -> float:
    raw = text.encode("utf-8")
    return len(raw) / len(zlib.compress(raw)) if raw else 0.0


def is_repetitive(text: str) -> bool:
    return not text.strip() or compression_ratio(text) > REPETITION_GZIP_RATIO


def group_words(
    tokenizer: PreTrainedTokenizerBase, tokens: list[int], times: np.ndarray, language: str
) -> list[Word]:
    """Merge text tokens into words: a token starting with a space starts a new word (or, for languages
    without spaces, every unicode-complete run of tokens is a word). `times[i]` is token i's start time and
    `times[i + 1]` its end."""
    words: list[Word] = []
    current: list[int] = []
    first = 0

    def flush(end_index: int) -> None:
        text = str(tokenizer.decode(current))
        if text.strip():
            words.append(Word(word=text, start=float(times[first]), end=float(times[end_index])))

    for i, token in enumerate(tokens):
        piece = str(tokenizer.decode([token]))
        starts_word = piece.startswith(" ") if language not in NO_SPACE_LANGUAGES else not current
        if current and starts_word:
            flush(i)
            current = []
        if not current:
            first = i
        current.append(token)
        if language in NO_SPACE_LANGUAGES and "\ufffd" not in tokenizer.decode(current):
            flush(i + 1)
            current = []
    if current:
        flush(len(tokens))
    return words


class OutrunFirstRow(StoppingCriteria):
    """Stops every row once it is `factor` x + `extra` tokens past the length at which row 0 ended.

    For batches whose first row is a reference (steering's baseline): a steered decode that loops ("la la
    la ...") is cut there instead of holding the whole batch to the token cap.
    """

    def __init__(self, eos: int, factor: float = 1.5, extra: int = 8) -> None:
        self.eos, self.factor, self.extra = eos, factor, extra

    def __call__(self, input_ids: torch.Tensor, scores: torch.Tensor, **kwargs) -> torch.Tensor:
        generated = input_ids[0, PROMPT_LENGTH:]
        ended = (generated == self.eos).nonzero()
        batch = input_ids.shape[0]
        if len(ended) == 0:
            return torch.zeros(batch, dtype=torch.bool, device=input_ids.device)
        limit = self.factor * int(ended[0]) + self.extra
        return torch.full((batch,), len(generated) >= limit, dtype=torch.bool, device=input_ids.device)


@torch.no_grad()
def transcribe_encoded(
    bundle: WhisperBundle,
    encoder_hidden_BTD: torch.Tensor,
    *,
    language: str | None = None,
    max_new_tokens: int = 96,
    word_timestamps: bool = False,
    n_frames: list[int] | None = None,
    first_row_is_reference: bool = False,
) -> list[Transcription]:
    """Greedy transcripts of a batch of final encoder states (one decoder per item, decoded together).

    `language` forces the language for every item; None detects it per item. `n_frames` (real encoder frames
    per item) limits word alignment to real audio. `first_row_is_reference` stops the other rows at 1.5x + 8
    tokens of the first row's length (`OutrunFirstRow`).
    """
    if language is not None:
        check_language(language)
    if max_new_tokens < 1:
        raise ValueError(f"max_new_tokens must be at least 1, got {max_new_tokens}")
    hidden = encoder_hidden_BTD.to(bundle.device)
    batch = hidden.shape[0]
    probs_BL = torch.softmax(language_logits(bundle, hidden), dim=-1).cpu()
    chosen = [language or LANGUAGES[int(i)] for i in probs_BL.argmax(-1)]
    frames = n_frames if n_frames is not None else [FRAMES_PER_WINDOW] * batch
    limit = bundle.model.config.max_target_positions - PROMPT_LENGTH
    mel_mask_BT = torch.zeros(batch, 2 * FRAMES_PER_WINDOW, dtype=torch.long)
    for row, n in enumerate(frames):
        mel_mask_BT[row, : 2 * n] = 1
    kwargs = {"return_token_timestamps": True, "return_dict_in_generate": True} if word_timestamps else {}
    with bundle.autocast():
        out = bundle.model.generate(
            encoder_outputs=BaseModelOutput(last_hidden_state=hidden),
            language=chosen,
            task="transcribe",
            return_timestamps=False,
            do_sample=False,
            num_beams=1,
            max_length=min(max_new_tokens, limit),  # Whisper's generate counts max_length after the prompt
            attention_mask=mel_mask_BT,
            stopping_criteria=StoppingCriteriaList(
                [OutrunFirstRow(bundle.model.generation_config.eos_token_id)]
                if first_row_is_reference
                else []
            ),
            **kwargs,
        )
    sequences = (out["sequences"] if word_timestamps else out).cpu()
    eos = bundle.model.generation_config.eos_token_id
    results = []
    for row in range(batch):
        seq = sequences[row].tolist()
        # generate() keeps the prompt in `sequences` only when it returns a dict (word timestamps).
        begin = PROMPT_LENGTH if seq[:1] == [bundle.model.generation_config.decoder_start_token_id] else 0
        end = seq.index(eos, begin) if eos in seq[begin:] else len(seq)
        tokens = seq[begin:end]
        text = bundle.processor.tokenizer.decode(tokens, skip_special_tokens=True).strip()
        words = []
        if word_timestamps:
            # transformers (>= 4.50) gives each token's END time; a token starts where the one before ends
            ends = out["token_timestamps"][row].cpu().numpy()
            times = np.concatenate([[0.0], ends])[begin:]  # times[i] = start of token i, times[i+1] its end
            words = group_words(
                bundle.processor.tokenizer,
                tokens,
                np.minimum(times, frames[row] * FRAME_SECONDS),
                chosen[row],
            )
        ranked = sorted(zip(LANGUAGES, probs_BL[row].tolist()), key=lambda kv: -kv[1])
        results.append(
            Transcription(
                text=text,
                language=chosen[row],
                language_probs=dict(ranked),
                tokens=tokens,
                words=words,
                repetitive=is_repetitive(text),
            )
        )
    return results


def transcribe(
    bundle: WhisperBundle,
    audio: np.ndarray,
    *,
    language: str | None = None,
    max_new_tokens: int = 96,
    word_timestamps: bool = False,
) -> Transcription:
    """Transcribe the first 30 s of a 16 kHz mono clip (edits from `edit_layer` apply)."""
    hidden = encode(bundle, features_for(bundle, [audio]))
    (result,) = transcribe_encoded(
        bundle,
        hidden,
        language=language,
        max_new_tokens=max_new_tokens,
        word_timestamps=word_timestamps,
        n_frames=[max(real_frames(len(audio)), 1)],
    )
    return result
