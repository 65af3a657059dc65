"""Per-clip details for the atlas: the log-mel (stored once, as uint8) and word-aligned text.

Speech clips are decoded in their manifest language (when Whisper knows it), so the words under each example
are the ones spoken; other clips are decoded with the language Whisper detects, which shows what it invents
on non-speech (hypothesis only, no word times).

Short clips of one decode language share a 30 s window, 1 s of silence apart (`transcription_windows`): an
encoder pass costs the same for 3 s of audio as for 30, and the corpus's clips average 5 s. On the default
corpus this took the clips phase of `analyze` from 789 s to 546 s (2 cores, transformers' greedy decoding at
~40 ms a token), and CER against the reference transcripts of its 280 speech clips went from 0.124 mean /
0.055 median (one window per clip) to 0.088 / 0.049 (the neighbouring clips give the short game lines
context), with no clip left empty. Two aligners fill the words (`AnalysisConfig.aligner`). `ct2`
(`pipelines.model.align`): a speech clip with a reference transcript (and at most 30 s long) gets its
*reference* words, forced-aligned in its shared window (the window's references concatenated, one teacher-
forced pass); every clip's hypothesis, and the words of speech clips without a reference, come from
CTranslate2's greedy decode of the same windows, a batch of windows at a time. `ct2` is the default;
`transformers` (the reference implementation, `transcribe_packed`): Whisper's own words from transformers'
`generate` with word timestamps, for every clip. On 28 corpus clips (benchmarks/align_bench.py, 2 cores at
load 3.5, per clip): encoder 1.00 s, transformers' words 1.89 s, forced alignment 0.10 s, CTranslate2 decode
(the whole budget, `align.generate_tokens`) + alignment 0.78 s, so the clips phase's decoding runs 2.1x faster
(1.5x with the encoder); CTranslate2's window transcripts equal transformers' on 7/7 windows. Decoding stops
at `token_budget` tokens (10 + 10 per second of audio per clip), so a hallucination loop on noise stops early.
Mels cover the whole clip (30 s windows, as extraction). Transcripts of an earlier analysis with the same
model are reused: only new or changed clips are decoded (and a clip whose stored words are not its
reference's, once it has one).
"""

from __future__ import annotations

from pathlib import Path
from typing import Callable, Literal

import numpy as np
import torch

from pipelines.analysis.result import ClipTable, ClipText
from pipelines.audio import SAMPLE_RATE, decode_audio
from pipelines.corpus.manifest import SPEECH, Clip
from pipelines.model.align import FastWhisper, load_fast, reference_tokens, token_times, transcribe_words
from pipelines.model.encoder import encode, features_for, real_frames
from pipelines.model.loader import WhisperBundle
from pipelines.model.transcribe import LANGUAGES, group_words, transcribe_encoded

WINDOW_S = 30.0
WINDOW_SAMPLES = int(WINDOW_S) * SAMPLE_RATE
GAP_S = 1.0
"""Silence between clips sharing a transcription window (DTW word times stray ~0.2 s, boundaries 0.5 s)."""
TOKENS_BASE = 10
TOKENS_PER_SECOND = 10
"""Decoder budget per clip: fast speech runs ~4-8 Whisper tokens per second (more for Cyrillic)."""

WINDOWS_PER_BATCH = 4
"""Windows decoded and aligned together on the fast path (CTranslate2 batches them)."""

Aligner = Literal["ct2", "transformers"]
ClipWords = list[tuple[str, float, float]]
"""(raw word text, start s, end s) relative to the clip; joining the texts gives the clip's text."""

HiddenHook = Callable[[list[int], torch.Tensor, list[int]], None]
"""Called with (manifest rows, final encoder states (B, 1500, D), real frames) for the rows it asked for."""


def decode_language(clip: Clip) -> str:
    """The language to decode a clip in: its own for speech Whisper knows, else '' (detect)."""
    return clip.language if clip.category == SPEECH and clip.language in LANGUAGES else ""


def quantise_mel(mel_MT: np.ndarray) -> tuple[np.ndarray, float, float]:
    """uint8 image of a log-mel, with the values 0 and 255 stand for."""
    vmin, vmax = float(mel_MT.min()), float(mel_MT.max())
    scale = 255.0 / max(vmax - vmin, 1e-6)
    return np.round((mel_MT - vmin) * scale).astype(np.uint8), vmin, max(vmax, vmin + 1e-6)


def clip_mel(bundle: WhisperBundle, audio: np.ndarray) -> np.ndarray:
    """(n_mels, 2 x real frames) log-mel of a whole clip, window by window (frames numbered as extraction)."""
    pieces = [audio[i : i + WINDOW_SAMPLES] for i in range(0, max(len(audio), 1), WINDOW_SAMPLES)]
    feats_BMT = features_for(bundle, pieces).cpu().numpy()
    return np.concatenate([feats_BMT[i, :, : 2 * real_frames(len(p))] for i, p in enumerate(pieces)], axis=1)


def token_budget(durations: list[float], max_new_tokens: int) -> int:
    """Decoder tokens for clips decoded in one window: enough for fast speech, at most `max_new_tokens` per
    clip (a hallucination loop on noise stops there instead of at Whisper's 448)."""
    return sum(min(max_new_tokens, int(TOKENS_BASE + TOKENS_PER_SECOND * d)) for d in durations)


def transcription_windows(
    durations: list[float], gap: float = GAP_S, tokens: list[int] | None = None, max_tokens: int = 0
) -> list[list[int]]:
    """Consecutive clip indices packed greedily into 30 s windows, `gap` seconds of silence between clips;
    given `tokens` per clip (references to align), a window also holds at most `max_tokens` of them."""
    windows: list[list[int]] = []
    used, held = 0.0, 0
    for i, duration in enumerate(durations):
        size = tokens[i] if tokens is not None else 0
        if windows and used + gap + duration <= WINDOW_S and (tokens is None or held + size <= max_tokens):
            windows[-1].append(i)
            used, held = used + gap + duration, held + size
        else:
            windows.append([i])
            used, held = duration, size
    return windows


def pack_window(audios: list[np.ndarray]) -> tuple[np.ndarray, list[float]]:
    """One window of clips (each <= 30 s) `GAP_S` apart, and the second at which each clip starts."""
    silence = np.zeros(int(GAP_S * SAMPLE_RATE), np.float32)
    starts, pieces, at = [], [], 0
    for audio in audios:
        starts.append(at / SAMPLE_RATE)
        pieces += [audio, silence]
        at += len(audio) + len(silence)
    return np.concatenate(pieces[:-1])[:WINDOW_SAMPLES], starts


def transcribe_packed(
    bundle: WhisperBundle, audios: list[np.ndarray], language: str, max_new_tokens: int
) -> list[ClipWords]:
    """Word-aligned transcripts of clips (each <= 30 s) decoded together in ONE window, `GAP_S` apart, by
    transformers' `generate` with word timestamps (the reference implementation of `align_packed`)."""
    window, starts = pack_window(audios)
    (result,) = transcribe_encoded(
        bundle,
        encode(bundle, features_for(bundle, [window])),
        language=language or None,
        max_new_tokens=token_budget([len(a) / SAMPLE_RATE for a in audios], max_new_tokens),
        word_timestamps=True,
        n_frames=[real_frames(len(window))],
    )
    words = [(w.word, float(w.start), float(w.end)) for w in result.words]
    return split_words(words, starts, by_middle=True)  # a clip's first word starts where the one before ends


def split_words(
    words: list[tuple[str, float, float]], starts: list[float], by_middle: bool = False
) -> list[ClipWords]:
    """Window words per clip (clips starting at `starts` seconds, `GAP_S` apart), times relative to the clip.

    A word belongs to the clip in which it starts, or with `by_middle` in which its middle lies (for times
    read as openai-whisper reads them, where a clip's first word starts as the previous clip's speech
    ends); each boundary sits in the middle of a gap, and a word's times are kept inside its clip's share.
    """
    bounds = [start - GAP_S / 2 for start in starts[1:]] + [float("inf")]
    per_clip: list[ClipWords] = [[] for _ in starts]
    for word, start, end in words:
        at = (start + end) / 2 if by_middle else start
        clip = next(i for i, bound in enumerate(bounds) if at < bound)
        lo, hi = (bounds[clip - 1] if clip else float("-inf")), bounds[clip]
        start, end = min(max(start, lo), hi), min(max(end, lo), hi)
        per_clip[clip].append((word, start - starts[clip], end - starts[clip]))
    return per_clip


def align_packed(
    fast: FastWhisper,
    windows: list[list[np.ndarray]],
    language: str,
    max_new_tokens: int,
    references: list[list[list[int]]] | None = None,
) -> list[list[tuple[ClipWords, ClipWords]]]:
    """The fast path for a batch of windows (each a list of clips, packed as `transcribe_packed` packs them).

    Per clip: Whisper's words (CTranslate2's greedy decode, aligned) and the words to store: with
    `references` (every clip's reference tokens), those, forced-aligned with the window's references
    concatenated, each clip's kept within its share of the window; else Whisper's words again.
    """
    bundle = fast.bundle
    packed = [pack_window(audios) for audios in windows]
    encoder_BTD = encode(bundle, features_for(bundle, [window for window, _ in packed]))
    n_frames = [real_frames(len(window)) for window, _ in packed]
    budgets = [token_budget([len(a) / SAMPLE_RATE for a in audios], max_new_tokens) for audios in windows]
    decoded = transcribe_words(fast, encoder_BTD, language or None, budgets, n_frames)
    heard = [
        split_words([(w.word, w.start, w.end) for w in words], starts, by_middle=True)
        for (_, words), (_, starts) in zip(decoded, packed)
    ]
    if references is None:
        return [list(zip(clips, clips)) for clips in heard]
    languages = [lang for lang, _ in decoded]
    times = token_times(fast, encoder_BTD, [sum(refs, []) for refs in references], languages, n_frames)
    out = []
    for w, refs in enumerate(references):
        spoken, at = [], 0
        for tokens, start, audio in zip(refs, packed[w][1], windows[w]):
            # A clip's words stay in its share of the window (as `split_words` shares Whisper's words).
            share = (-GAP_S / 2, len(audio) / SAMPLE_RATE + GAP_S / 2)
            clip_times = np.clip(times[w][at : at + len(tokens) + 1] - start, *share)
            words = group_words(bundle.processor.tokenizer, tokens, clip_times, languages[w])
            spoken.append([(x.word, x.start, x.end) for x in words])
            at += len(tokens)
        out.append(list(zip(heard[w], spoken)))
    return out


def alignable(clip: Clip) -> bool:
    """Speech with a reference transcript that one window holds whole (a longer one is heard only in part)."""
    return clip.category == SPEECH and bool(clip.transcript.strip()) and clip.duration <= WINDOW_S


def _transcribe_group(
    bundle: WhisperBundle,
    fast: FastWhisper | None,
    clips: list[Clip],
    rows: list[int],
    audios: dict[int, np.ndarray],
    language: str,
    max_new_tokens: int,
    advance: Callable[[int], None],
) -> dict[int, tuple[ClipWords, ClipWords]]:
    """(Whisper's words, words to store) of clips of one decode language, packed into shared windows: by
    `align_packed` with `fast` (forced-aligned references when the clips are `alignable`), else one window
    at a time by `transcribe_packed`."""
    aligned = fast is not None and bool(rows) and alignable(clips[rows[0]])
    refs = [reference_tokens(fast, clips[r].transcript) for r in rows] if fast and aligned else []
    windows = transcription_windows(
        [min(clips[r].duration, WINDOW_S) for r in rows],
        tokens=[len(t) for t in refs] if aligned else None,
        max_tokens=fast.max_tokens if fast else 0,
    )
    step = WINDOWS_PER_BATCH if fast else 1
    done: dict[int, tuple[ClipWords, ClipWords]] = {}
    for first in range(0, len(windows), step):
        chunk = windows[first : first + step]
        heard = [[audios[rows[i]][:WINDOW_SAMPLES] for i in window] for window in chunk]
        if fast is None:
            per_window = [
                [(words, words) for words in transcribe_packed(bundle, audio, language, max_new_tokens)]
                for audio in heard
            ]
        else:
            chunk_refs = [[refs[i] for i in window] for window in chunk] if aligned else None
            per_window = align_packed(fast, heard, language, max_new_tokens, chunk_refs)
        for window, results in zip(chunk, per_window):
            done.update({rows[i]: result for i, result in zip(window, results)})
        advance(sum(len(window) for window in chunk))
    return done


def describe_clips(
    bundle: WhisperBundle,
    corpus: Path,
    clips: list[Clip],
    rows: list[int],
    cached: dict[str, ClipText],
    hidden_rows: set[int],
    on_hidden: HiddenHook,
    max_new_tokens: int,
    advance: Callable[[int], None] = lambda n: None,
    aligner: Aligner = "ct2",
) -> tuple[ClipTable, list[ClipText]]:
    """Mels and transcripts of manifest `rows` (others get empty entries); encoder states go to `on_hidden`.

    Clips needing a transcript are grouped by decode language (and, for `ct2`, by whether they are
    `alignable`) and packed into shared windows; clips in `hidden_rows` are also encoded alone (their own
    first 30 s, what Whisper hears) for `on_hidden`.
    """
    n_clips = len(clips)
    mels: list[np.ndarray] = [np.zeros((0, 0), np.uint8)] * n_clips
    vmin, vmax = np.zeros(n_clips, np.float32), np.ones(n_clips, np.float32)
    text = [ClipText(c.id, decode_language(c), "", []) for c in clips]
    groups: dict[tuple[str, bool, bool], list[int]] = {}
    for row in rows:
        clip = clips[row]
        key = (decode_language(clip), clip.category == SPEECH, aligner == "ct2" and alignable(clip))
        groups.setdefault(key, []).append(row)
    fast = load_fast(bundle) if aligner == "ct2" and rows else None
    for (language, speech, aligned), group in groups.items():
        group.sort(key=lambda r: clips[r].duration)  # similar lengths share windows
        audios = {r: decode_audio(corpus / clips[r].path) for r in group}
        references = {r: clips[r].transcript if aligned else "" for r in group}
        todo = [r for r in group if _stale(cached.get(clips[r].id), language, references[r])]
        for r in group:
            mels[r], vmin[r], vmax[r] = quantise_mel(clip_mel(bundle, audios[r]))
            if r not in todo:
                text[r] = cached[clips[r].id]
        done = _transcribe_group(bundle, fast, clips, todo, audios, language, max_new_tokens, advance)
        for r, (heard, spoken) in done.items():
            # Non-speech keeps Whisper's hypothesis only: word times there would time invented words.
            stored = [(w.strip(), start, end) for w, start, end in spoken] if speech else []
            text[r] = ClipText(clips[r].id, language, "".join(w for w, _, _ in heard).strip(), stored)
        wanted = [r for r in group if r in hidden_rows]
        for r in wanted:
            first = audios[r][:WINDOW_SAMPLES]
            on_hidden([r], encode(bundle, features_for(bundle, [first])), [max(real_frames(len(first)), 1)])
        advance(len(group) - len(todo))
    mel_frames = np.array([m.shape[1] if m.size else 0 for m in mels], np.int32)
    table = ClipTable(
        n_frames=np.zeros(n_clips, np.int64),
        mel_frames=mel_frames,
        mel=np.concatenate([m.ravel() for m in mels]) if n_clips else np.zeros(0, np.uint8),
        vmin=vmin,
        vmax=vmax,
        n_mels=np.array(bundle.model.config.num_mel_bins),
    )
    return table, text


def _stale(entry: ClipText | None, language: str, reference: str) -> bool:
    """No transcript yet, another decode language, or words that are not the clip's `reference` (if any)."""
    if entry is None or entry.language != language:
        return True
    return bool(reference) and "".join(w for w, _, _ in entry.words) != "".join(reference.split())
