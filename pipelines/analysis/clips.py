"""Per-clip details for the atlas: the log-mel (stored once, as uint8) and Whisper's word-aligned transcript.

Speech clips are decoded in their manifest language (when Whisper knows it), so the words under each example
are the ones spoken; other clips are decoded with the language Whisper detects, which shows what it invents
on non-speech (hypothesis only, no word times). Word times come from transformers' DTW over the alignment
heads (`transcribe_encoded`).

Short clips of one decode language share a 30 s window, 1 s of silence apart (`transcribe_packed`): an
encoder pass costs the same for 3 s of audio as for 30, and the corpus's clips average 5 s. On the default
corpus this took the clips phase of `analyze` from 789 s to 546 s (2 cores; the rest is greedy decoding at
~40 ms a token), and CER against the reference transcripts of its 280 speech clips went from 0.124 mean /
0.055 median (one window per clip) to 0.088 / 0.049 (the neighbouring clips give the short game lines
context), with no clip left empty.
Decoding stops at `token_budget` tokens (10 + 10 per second of audio per clip), so a hallucination loop on
noise stops early. Mels cover the whole clip (30 s windows, as extraction).
Transcripts of an earlier analysis with the same model are reused: only new or changed clips are decoded.
"""

from __future__ import annotations

from pathlib import Path
from typing import Callable

import numpy as np
import torch

from pipelines.analysis.result import ClipTable, ClipText
from pipelines.audio import SAMPLE_RATE, decode_audio
from pipelines.corpus.manifest import SPEECH, Clip
from pipelines.model.encoder import encode, features_for, real_frames
from pipelines.model.loader import WhisperBundle
from pipelines.model.transcribe import LANGUAGES, transcribe_encoded

WINDOW_S = 30.0
WINDOW_SAMPLES = int(WINDOW_S) * SAMPLE_RATE
GAP_S = 1.0
"""Silence between clips sharing a transcription window (DTW word times stray ~0.2 s, boundaries 0.5 s)."""
TOKENS_BASE = 10
TOKENS_PER_SECOND = 10
"""Decoder budget per clip: fast speech runs ~4-8 Whisper tokens per second (more for Cyrillic)."""

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


def transcription_windows(durations: list[float], gap: float = GAP_S) -> list[list[int]]:
    """Consecutive clip indices packed greedily into 30 s windows, `gap` seconds of silence between clips."""
    windows: list[list[int]] = []
    used = 0.0
    for i, duration in enumerate(durations):
        if windows and used + gap + duration <= WINDOW_S:
            windows[-1].append(i)
            used += gap + duration
        else:
            windows.append([i])
            used = duration
    return windows


def transcribe_packed(
    bundle: WhisperBundle, audios: list[np.ndarray], language: str, max_new_tokens: int
) -> list[list[tuple[str, float, float]]]:
    """Word-aligned transcripts of clips (each <= 30 s) decoded together in ONE window, `GAP_S` apart.

    Words keep their raw text (leading spaces), so joining a clip's words gives its text.
    """
    silence = np.zeros(int(GAP_S * SAMPLE_RATE), np.float32)
    starts, pieces, at = [], [], 0
    for audio in audios:
        starts.append(at / SAMPLE_RATE)
        pieces += [audio, silence]
        at += len(audio) + len(silence)
    window = np.concatenate(pieces[:-1])[:WINDOW_SAMPLES]
    (result,) = transcribe_encoded(
        bundle,
        encode(bundle, features_for(bundle, [window])),
        language=language or None,
        max_new_tokens=token_budget([len(a) / SAMPLE_RATE for a in audios], max_new_tokens),
        word_timestamps=True,
        n_frames=[real_frames(len(window))],
    )
    return split_words([(w.word, float(w.start), float(w.end)) for w in result.words], starts)


def split_words(
    words: list[tuple[str, float, float]], starts: list[float]
) -> list[list[tuple[str, float, float]]]:
    """Window words per clip (clips starting at `starts` seconds, `GAP_S` apart), times relative to the clip.

    A word belongs to the clip in which it starts; each boundary sits in the middle of a gap.
    """
    bounds = [start - GAP_S / 2 for start in starts[1:]] + [float("inf")]
    per_clip: list[list[tuple[str, float, float]]] = [[] for _ in starts]
    for word, start, end in words:
        clip = next(i for i, bound in enumerate(bounds) if start < bound)
        per_clip[clip].append((word, start - starts[clip], end - starts[clip]))
    return per_clip


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
) -> tuple[ClipTable, list[ClipText]]:
    """Mels and transcripts of manifest `rows` (others get empty entries); encoder states go to `on_hidden`.

    Clips needing a transcript are packed by decode language into shared windows (`transcribe_packed`);
    clips in `hidden_rows` are also encoded alone (their own first 30 s, what Whisper hears) for `on_hidden`.
    """
    n_clips = len(clips)
    mels: list[np.ndarray] = [np.zeros((0, 0), np.uint8)] * n_clips
    vmin, vmax = np.zeros(n_clips, np.float32), np.ones(n_clips, np.float32)
    text = [ClipText(c.id, decode_language(c), "", []) for c in clips]
    groups: dict[tuple[str, bool], list[int]] = {}
    for row in rows:
        groups.setdefault((decode_language(clips[row]), clips[row].category == SPEECH), []).append(row)
    for (language, speech), group in groups.items():
        group.sort(key=lambda r: clips[r].duration)  # similar lengths share windows
        audios = {r: decode_audio(corpus / clips[r].path) for r in group}
        todo = [r for r in group if _stale(cached.get(clips[r].id), language)]
        for r in group:
            mels[r], vmin[r], vmax[r] = quantise_mel(clip_mel(bundle, audios[r]))
            if r not in todo:
                text[r] = cached[clips[r].id]
        for window in transcription_windows([min(clips[r].duration, WINDOW_S) for r in todo]):
            batch = [todo[i] for i in window]
            packed = transcribe_packed(
                bundle, [audios[r][:WINDOW_SAMPLES] for r in batch], language, max_new_tokens
            )
            for r, words in zip(batch, packed):
                # Non-speech keeps Whisper's hypothesis only: word times there would time invented words.
                spoken = [(w.strip(), start, end) for w, start, end in words] if speech else []
                text[r] = ClipText(clips[r].id, language, "".join(w for w, _, _ in words).strip(), spoken)
            advance(len(batch))
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


def _stale(entry: ClipText | None, language: str) -> bool:
    return entry is None or entry.language != language
