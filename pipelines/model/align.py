"""Word times on the fast path: CTranslate2's Whisper, on the same weights, for forced alignment and decoding.

Forced alignment times a clip's *reference* words: one teacher-forced decoder pass over
`<|startoftranscript|> <|lang|> <|transcribe|> <|notimestamps|>` + the reference tokens + `<|endoftext|>`,
then dynamic time warping over the cross-attention of Whisper's alignment heads (softmax over the real frames,
standardised over the tokens, median filter of width 7, averaged over the heads). That is the method behind
Whisper's own word timestamps (openai-whisper's `timing.py`; transformers' `return_token_timestamps`, which
`pipelines.model.transcribe` uses and which stays the reference implementation); CTranslate2's
`Whisper.align` runs it in C++ in one batched call. Token i starts where the warping path first reaches
the row whose query predicts token i (so the end-of-text row gives the last token's end), as in
openai-whisper; tokens become words with `transcribe.group_words`, as on the reference path.

Clips without a reference are decoded greedily with CTranslate2's `generate` (a batch of windows at once)
and their tokens aligned the same way: Whisper's own transcript with word times, without transformers'
step-by-step Python generation loop.

Every call here takes final encoder states (B, 1500, D) from transformers' encoder (`encoder.encode`), not
a log-mel: CTranslate2's Whisper accepts its own encoder's output in place of the features (it tells them
apart by shape), and that output is transformers' `last_hidden_state`, the last block's output after the
encoder's final layer norm, which the decoder's cross-attention reads (equal to CTranslate2's `encode` to
3e-3 on the bundled base, tests/integration/test_spliced_real.py). So edited states (an SAE spliced in)
decode here as they do in transformers. `generate`'s `max_length` is not prompt + new tokens: CTranslate2
decodes min(max_length // 2, max_length - prompt + 1) steps (`ct2_max_length` inverts it), at most 224 a
call, and `generate_tokens` continues the items that reach that cap.
"""

from __future__ import annotations

import json
import tempfile
from dataclasses import dataclass
from pathlib import Path

import ctranslate2
import numpy as np
import torch

from pipelines.constants import FRAME_SECONDS
from pipelines.model import bundled
from pipelines.model.loader import BUNDLED_PREFIX, WhisperBundle
from pipelines.model.transcribe import PROMPT_LENGTH, Word, check_language, group_words

MEDIAN_FILTER_WIDTH = 7
"""Whisper's median filter over the attention weights (openai-whisper and transformers use 7 too)."""


@dataclass
class FastWhisper:
    """A CTranslate2 Whisper holding the same weights as `bundle` (whose tokenizer and ids it uses)."""

    model: ctranslate2.models.Whisper
    bundle: WhisperBundle

    @property
    def max_tokens(self) -> int:
        """Most text tokens one window can align or decode (448 positions, less prompt and end-of-text)."""
        return int(self.bundle.model.config.max_target_positions) - PROMPT_LENGTH - 1

    def prompt(self, language: str) -> list[int]:
        """<|startoftranscript|> <|language|> <|transcribe|> (align adds <|notimestamps|> itself)."""
        tokenizer = self.bundle.processor.tokenizer
        ids = tokenizer.convert_tokens_to_ids(["<|startoftranscript|>", f"<|{language}|>", "<|transcribe|>"])
        return [int(i) for i in ids]


def _write_ct2_folder(bundle: WhisperBundle, folder: Path) -> Path:
    """The bundled CT2 model.bin as shipped, or `bundle`'s weights converted by CTranslate2's converter
    (alignment heads copied from the generation config, which the converter may not find by name)."""
    if bundle.name == BUNDLED_PREFIX + bundled.BUNDLED_NAME:
        return bundled.write_ct2_folder(folder / "ct2")
    from ctranslate2.converters import TransformersConverter

    bundle.model.save_pretrained(folder / "hf")
    bundle.processor.save_pretrained(folder / "hf")
    TransformersConverter(str(folder / "hf")).convert(str(folder / "ct2"))
    config_path = folder / "ct2" / "config.json"
    config = json.loads(config_path.read_text())
    heads = bundle.model.generation_config.to_dict().get("alignment_heads")
    config["alignment_heads"] = heads or config["alignment_heads"]
    config_path.write_text(json.dumps(config))
    return folder / "ct2"


def load_fast(bundle: WhisperBundle) -> FastWhisper:
    """`bundle`'s model in CTranslate2 (float32 on CPU, as the reference path), loaded into memory."""
    on_cuda = bundle.device.type == "cuda"
    with tempfile.TemporaryDirectory(prefix="whisper-ct2-") as tmp:
        model = ctranslate2.models.Whisper(
            str(_write_ct2_folder(bundle, Path(tmp))),
            device="cuda" if on_cuda else "cpu",
            device_index=bundle.device.index or 0,
            compute_type="default" if on_cuda else "float32",
            intra_threads=torch.get_num_threads(),
        )
    return FastWhisper(model=model, bundle=bundle)


def reference_tokens(fast: FastWhisper, transcript: str) -> list[int]:
    """Text tokens of a reference transcript as Whisper would emit them (leading space, no specials)."""
    text = " " + " ".join(transcript.split())
    return [int(t) for t in fast.bundle.processor.tokenizer.encode(text, add_special_tokens=False)]


def _storage(encoder_BTD: torch.Tensor) -> ctranslate2.StorageView:
    return ctranslate2.StorageView.from_array(np.ascontiguousarray(encoder_BTD.float().cpu().numpy()))


def token_times(
    fast: FastWhisper,
    encoder_BTD: torch.Tensor,
    tokens: list[list[int]],
    languages: list[str],
    n_frames: list[int],
) -> list[np.ndarray]:
    """Forced alignment: per item, (len(tokens) + 1,) seconds where each token starts, then where the last
    one ends; `n_frames` real encoder frames per item bound the warping (and the times). One `align` call
    per language (its prompt is shared by the batch)."""
    times: list[np.ndarray] = [np.zeros(1)] * len(tokens)
    for language in dict.fromkeys(languages):
        rows = [i for i, t in enumerate(tokens) if t and languages[i] == language]
        if not rows:
            continue
        results = fast.model.align(
            _storage(encoder_BTD[rows]),
            fast.prompt(check_language(language)),
            [tokens[i] for i in rows],
            [2 * n_frames[i] for i in rows],  # CTranslate2 counts mel frames
            median_filter_width=MEDIAN_FILTER_WIDTH,
        )
        for i, result in zip(rows, results):
            text_index_P, frame_P = np.array(result.alignments, dtype=np.int64).reshape(-1, 2).T
            entered_P = np.diff(text_index_P, prepend=-1) > 0  # where the path enters each token's row
            times[i] = np.minimum(frame_P[entered_P], n_frames[i]) * FRAME_SECONDS
    return times


def align_words(
    fast: FastWhisper,
    encoder_BTD: torch.Tensor,
    tokens: list[list[int]],
    languages: list[str],
    n_frames: list[int],
) -> list[list[Word]]:
    """Words of each item's given tokens with their forced-aligned times (seconds in the window)."""
    tokenizer = fast.bundle.processor.tokenizer
    times = token_times(fast, encoder_BTD, tokens, languages, n_frames)
    return [group_words(tokenizer, t, s, lang) if t else [] for t, s, lang in zip(tokens, times, languages)]


def ct2_max_length(steps: int, prompt_length: int) -> int:
    """CTranslate2's `max_length` for `steps` decoding steps after a prompt of `prompt_length` tokens.

    Its Whisper decodes at most min(max_length // 2, max_length - (prompt_length - 1)) steps (whisper.cc:
    openai-whisper's half-context `sample_len`), so max_length = prompt + steps would stop at about half the
    budget; this inverts that rule (capped at the 448-position context, so one call gives at most 224)."""
    return max(2 * steps, steps + prompt_length - 1)


def generate_tokens(
    fast: FastWhisper, encoder_BTD: torch.Tensor, prompts: list[list[int]], budgets: list[int]
) -> list[list[int]]:
    """Greedy text tokens after each item's prompt (same length for the batch), item i stopped at
    `budgets[i]` tokens (at most `fast.max_tokens`) or at end-of-text, as transformers' greedy `generate`
    with `max_new_tokens`.

    One batched `generate` call gives each item at most 224 tokens (`ct2_max_length`); items that reach
    that cap with budget left are decoded on in a further call, teacher-forced on the prompt and their
    tokens so far (the same greedy continuation; the items that hit the cap share a prompt length)."""
    context = int(fast.bundle.model.config.max_target_positions)
    eot = int(fast.bundle.model.generation_config.eos_token_id)
    wanted = [min(int(b), fast.max_tokens) for b in budgets]
    tokens: list[list[int]] = [[] for _ in prompts]
    todo = [i for i, n in enumerate(wanted) if n > 0]
    while todo:
        prefix = len(prompts[todo[0]]) + len(tokens[todo[0]])
        if any(len(prompts[i]) + len(tokens[i]) != prefix for i in todo):
            raise ValueError("CTranslate2's Whisper decodes a batch of prompts of one length only")
        want = max(wanted[i] - len(tokens[i]) for i in todo)
        max_length = min(ct2_max_length(want, prefix), context)
        steps = min(max_length // 2, max_length - (prefix - 1))
        if steps < 1:
            break
        results = fast.model.generate(
            _storage(encoder_BTD[todo]),
            [prompts[i] + tokens[i] for i in todo],
            beam_size=1,
            max_length=max_length,
            suppress_blank=not tokens[todo[0]],  # only at the first step (as begin_suppress_tokens)
        )
        still = []
        for i, result in zip(todo, results):
            new = [int(t) for t in result.sequences_ids[0]]
            tokens[i] += [t for t in new if t < eot][: wanted[i] - len(tokens[i])]
            if len(new) == steps and len(tokens[i]) < wanted[i]:  # stopped by the cap, not end-of-text
                still.append(i)
        todo = still
    return tokens


def detect_languages(fast: FastWhisper, encoder_BTD: torch.Tensor) -> list[str]:
    """The most probable of Whisper's languages per item (CTranslate2's `detect_language`, which reads
    encoder outputs as they are; one decoder step after <|startoftranscript|>, as `language_logits`)."""
    return [best[0][0].strip("<|>") for best in fast.model.detect_language(_storage(encoder_BTD))]


def decode_tokens(
    fast: FastWhisper, encoder_BTD: torch.Tensor, language: str | None, budgets: list[int]
) -> list[tuple[str, list[int]]]:
    """Greedy transcripts (language, text tokens) of a batch of windows, item i stopped at `budgets[i]`
    tokens; `language` None detects it per window (the most probable of Whisper's languages)."""
    if language is None:
        languages = detect_languages(fast, encoder_BTD)
    else:
        languages = [check_language(language)] * encoder_BTD.shape[0]
    notimestamps = int(fast.bundle.processor.tokenizer.convert_tokens_to_ids("<|notimestamps|>"))
    prompts = [fast.prompt(lang) + [notimestamps] for lang in languages]
    return list(zip(languages, generate_tokens(fast, encoder_BTD, prompts, budgets)))


def transcribe_words(
    fast: FastWhisper,
    encoder_BTD: torch.Tensor,
    language: str | None,
    budgets: list[int],
    n_frames: list[int],
) -> list[tuple[str, list[Word]]]:
    """Whisper's own words with times for a batch of windows: greedy decode, then forced alignment of the
    decoded tokens."""
    decoded = decode_tokens(fast, encoder_BTD, language, budgets)
    languages = [lang for lang, _ in decoded]
    words = align_words(fast, encoder_BTD, [tokens for _, tokens in decoded], languages, n_frames)
    return list(zip(languages, words))


def boundary_differences(
    ours: list[tuple[str, float, float]], theirs: list[tuple[str, float, float]]
) -> list[float]:
    """Seconds between matching word boundaries (starts and ends) of two timings of the same words, e.g.
    forced alignment against transformers' word timestamps on a clip Whisper transcribed exactly."""
    if len(ours) != len(theirs):
        raise ValueError(f"{len(ours)} words against {len(theirs)}: not the same words")
    return [abs(a - b) for (_, *mine), (_, *other) in zip(ours, theirs) for a, b in zip(mine, other)]
