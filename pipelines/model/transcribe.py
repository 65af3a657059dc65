"""Decoding from encoder states: language identification, transcription as Whisper does it, word timestamps.

Everything starts from final encoder states (B, 1500, D), so callers can decode what they edited (baseline,
SAE-reconstructed and steered states in one batch). Language ID follows Whisper (Radford et al. 2022, sec.
2.3): one decoder step after `<|startoftranscript|>`, softmax over the language tokens only; the same step's
softmax over the whole vocabulary gives `no_speech_prob`, the probability of the no-speech token.

Transcripts follow openai-whisper's `transcribe()` (`Decoding`): greedy first, then, for each row whose text
has a gzip compression ratio above 2.4 or an average log probability below -1, a re-decode by sampling at
the next temperature (0.2, 0.4, ... 1.0), seeded and one row at a time, so the same encoder states give the
same text every time, whatever else is in the batch (strength 0 reproduces the baseline); a row that
Whisper would call silence (no_speech_prob > 0.6 and average log probability < -1) is not re-decoded, and is
flagged `no_speech_gated` (Whisper drops such a segment's text). Every transcript is capped at
`max_new_tokens` (a wrong forced language can otherwise loop to the 448-token limit) and flagged repetitive
(gzip compression ratio > 2.4, or empty). Word timestamps come from transformers' DTW over the
cross-attention of the alignment heads (`return_token_timestamps`).
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


@dataclass(frozen=True)
class Decoding:
    """Whisper's decoding rules (openai-whisper `transcribe()` defaults): temperature fallback and the
    no-speech gate. `GREEDY` is one greedy pass (the rules' flags are still reported)."""

    temperatures: tuple[float, ...] = (0.0, 0.2, 0.4, 0.6, 0.8, 1.0)
    compression_ratio_threshold: float = REPETITION_GZIP_RATIO
    logprob_threshold: float = -1.0
    no_speech_threshold: float = 0.6
    seed: int = 0
    """Seeds the sampling of each fallback temperature (the global RNG is left as it was)."""

    def is_silence(self, no_speech_prob: float, avg_logprob: float) -> bool:
        """Whisper's gate: the no-speech token is likely and the text is improbable."""
        return no_speech_prob > self.no_speech_threshold and avg_logprob < self.logprob_threshold

    def needs_fallback(self, text: str, no_speech_prob: float, avg_logprob: float) -> bool:
        """Re-decode at the next temperature: a loop or an improbable text that is not silence."""
        if self.is_silence(no_speech_prob, avg_logprob):
            return False
        return (
            compression_ratio(text) > self.compression_ratio_threshold or avg_logprob < self.logprob_threshold
        )


WHISPER_DECODING = Decoding()
GREEDY = Decoding(temperatures=(0.0,))


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
    avg_logprob: float = 0.0
    """Mean log probability of the generated tokens and the end-of-text token (Whisper's definition)."""
    no_speech_prob: float = 0.0
    """Probability of the no-speech token at the first decoder step (softmax over the whole vocabulary)."""
    temperature: float = 0.0
    """The temperature of the decode kept (0.0 = greedy; higher after a fallback)."""
    no_speech_gated: bool = False
    """Whisper's gate would drop this text as silence (no_speech_prob > 0.6 and avg_logprob < -1)."""


def _language_token_ids(bundle: WhisperBundle) -> list[int]:
    return bundle.processor.tokenizer.convert_tokens_to_ids([f"<|{code}|>" for code in LANGUAGES])


def check_language(language: str) -> str:
    if language not in LANGUAGES:
        raise UnknownLanguageError(
            f"unknown language {language!r}: use a Whisper language code such as en, es, fr"
        )
    return language


def no_speech_token_id(bundle: WhisperBundle) -> int:
    """`<|nocaptions|>` (`<|nospeech|>` in large-v3): the token just before `<|notimestamps|>`."""
    return int(getattr(bundle.model.generation_config, "no_timestamps_token_id")) - 1


def first_step_logits(bundle: WhisperBundle, encoder_hidden_BTD: torch.Tensor) -> torch.Tensor:
    """(B, vocab) logits of the decoder's first step after `<|startoftranscript|>`; differentiable."""
    sot = bundle.model.generation_config.decoder_start_token_id
    batch = encoder_hidden_BTD.shape[0]
    decoder_input_ids = torch.full((batch, 1), sot, dtype=torch.long, device=bundle.device)
    with bundle.autocast():
        out = bundle.model(
            encoder_outputs=BaseModelOutput(last_hidden_state=encoder_hidden_BTD.to(bundle.device)),
            decoder_input_ids=decoder_input_ids,
            use_cache=False,
        )
    return out.logits[:, -1].float()


def language_logits(bundle: WhisperBundle, encoder_hidden_BTD: torch.Tensor) -> torch.Tensor:
    """(B, 99) logits of the language tokens at the decoder's first step; differentiable wrt the input."""
    return first_step_logits(bundle, encoder_hidden_BTD)[:, _language_token_ids(bundle)]


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


@dataclass
class _Decoded:
    """One row's decode at one temperature."""

    tokens: list[int]
    text: str
    avg_logprob: float
    times: np.ndarray | None
    """Token start times and the last token's end (word timestamps only)."""


def _generate(
    bundle: WhisperBundle,
    hidden_BTD: torch.Tensor,
    languages: list[str],
    frames: list[int],
    max_new_tokens: int,
    temperature: float,
    seed: int,
    word_timestamps: bool,
    stopping: list[StoppingCriteria],
) -> list[_Decoded]:
    """One `generate` call over the rows of `hidden_BTD`: greedy at temperature 0, else seeded sampling."""
    batch = hidden_BTD.shape[0]
    limit = bundle.model.config.max_target_positions - PROMPT_LENGTH
    mel_mask_BT = torch.zeros(batch, 2 * FRAMES_PER_WINDOW, dtype=torch.long)
    for row, n in enumerate(frames):
        mel_mask_BT[row, : 2 * n] = 1
    sampling = {"do_sample": True, "temperature": temperature} if temperature > 0 else {"do_sample": False}
    with bundle.autocast(), torch.random.fork_rng(devices=[]):
        torch.manual_seed(seed)
        out = bundle.model.generate(
            encoder_outputs=BaseModelOutput(last_hidden_state=hidden_BTD),
            language=languages,
            task="transcribe",
            return_timestamps=False,
            num_beams=1,
            max_length=min(max_new_tokens, limit),  # Whisper's generate counts max_length after the prompt
            attention_mask=mel_mask_BT,
            stopping_criteria=StoppingCriteriaList(stopping),
            return_dict_in_generate=True,
            output_logits=True,
            return_token_timestamps=word_timestamps,
            **sampling,
        )
    sequences = out["sequences"].cpu()
    logprobs_SBV = torch.stack(out["logits"]).float().log_softmax(-1).cpu()
    eos = bundle.model.generation_config.eos_token_id
    sot = bundle.model.generation_config.decoder_start_token_id
    decoded = []
    for row in range(batch):
        seq = sequences[row].tolist()
        begin = PROMPT_LENGTH if seq[:1] == [sot] else 0
        generated = seq[begin:]
        end = generated.index(eos) if eos in generated else len(generated)
        tokens = generated[:end]
        scored = min(end + 1, len(generated), logprobs_SBV.shape[0])  # the text and its end-of-text
        steps = torch.arange(scored)
        total = float(logprobs_SBV[steps, row, torch.tensor(generated[:scored], dtype=torch.long)].sum())
        times = None
        if word_timestamps:
            # transformers (>= 4.50) gives each token's END time; a token starts where the one before ends
            ends = out["token_timestamps"][row].cpu().numpy()
            times = np.concatenate([[0.0], ends])[begin : begin + len(tokens) + 1]
        text = bundle.processor.tokenizer.decode(tokens, skip_special_tokens=True).strip()
        decoded.append(_Decoded(tokens, text, total / (len(tokens) + 1), times))
    return decoded


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
    decoding: Decoding = WHISPER_DECODING,
) -> list[Transcription]:
    """Transcripts of a batch of final encoder states (one decoder per item, decoded together), with
    Whisper's temperature fallback and no-speech gate (`decoding`; `GREEDY` for one greedy pass).

    `language` forces the language for every item; None detects it per item. `n_frames` (real encoder frames
    per item) limits word alignment to real audio. `first_row_is_reference` stops the other rows at 1.5x + 8
    tokens of the first row's length (`OutrunFirstRow`); their fallback re-decodes keep that cap.
    """
    if language is not None:
        check_language(language)
    if max_new_tokens < 1:
        raise ValueError(f"max_new_tokens must be at least 1, got {max_new_tokens}")
    hidden = encoder_hidden_BTD.to(bundle.device)
    batch = hidden.shape[0]
    logits_BV = first_step_logits(bundle, hidden)
    probs_BL = torch.softmax(logits_BV[:, _language_token_ids(bundle)], dim=-1).cpu()
    no_speech_B = torch.softmax(logits_BV, dim=-1)[:, no_speech_token_id(bundle)].cpu().tolist()
    chosen = [language or LANGUAGES[int(i)] for i in probs_BL.argmax(-1)]
    frames = n_frames if n_frames is not None else [FRAMES_PER_WINDOW] * batch
    eos = bundle.model.generation_config.eos_token_id
    stopping: list[StoppingCriteria] = [OutrunFirstRow(eos)] if first_row_is_reference else []
    kept: list[_Decoded] = _generate(
        bundle, hidden, chosen, frames, max_new_tokens, 0.0, decoding.seed, word_timestamps, stopping
    )
    temperature_B = [0.0] * batch
    if first_row_is_reference:  # fallback rows keep the cap the reference row set
        max_new_tokens = min(max_new_tokens, int(1.5 * len(kept[0].tokens)) + 9)
    for step, temperature in enumerate(decoding.temperatures[1:], start=1):
        redo = [
            b
            for b in range(batch)
            if decoding.needs_fallback(kept[b].text, no_speech_B[b], kept[b].avg_logprob)
        ]
        if not redo:
            break
        for b in redo:  # one row at a time: a row's sample does not depend on the rest of the batch
            (kept[b],) = _generate(
                bundle,
                hidden[[b]],
                [chosen[b]],
                [frames[b]],
                max_new_tokens,
                temperature,
                decoding.seed + step,
                word_timestamps,
                [],
            )
            temperature_B[b] = temperature
    results = []
    for row, d in enumerate(kept):
        words = []
        if word_timestamps and d.times is not None:
            words = group_words(
                bundle.processor.tokenizer,
                d.tokens,
                np.minimum(d.times, frames[row] * FRAME_SECONDS),
                chosen[row],
            )
        ranked = sorted(zip(LANGUAGES, probs_BL[row].tolist()), key=lambda kv: -kv[1])
        results.append(
            Transcription(
                text=d.text,
                language=chosen[row],
                language_probs=dict(ranked),
                tokens=d.tokens,
                words=words,
                repetitive=is_repetitive(d.text),
                avg_logprob=d.avg_logprob,
                no_speech_prob=float(no_speech_B[row]),
                temperature=temperature_B[row],
                no_speech_gated=decoding.is_silence(no_speech_B[row], d.avg_logprob),
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
