"""Per-clip details for the atlas: the log-mel (stored once, as uint8) and Whisper's word-aligned transcript.

Speech clips are decoded in their manifest language (when Whisper knows it), so the words under each example
are the ones spoken; other clips are decoded with the language Whisper detects, which shows what it invents
on non-speech (hypothesis only: no word alignment, which would be of invented words and costs the slower
eager attention). Word times come from transformers' DTW over the alignment heads (`transcribe_encoded`).
Decoding stops at `token_budget` tokens (10 + 10 per second of audio), so a hallucination loop on noise
does not hold its batch to the 96-token cap. Mels cover the whole clip (30 s windows, as extraction).
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

WINDOW_SAMPLES = 30 * SAMPLE_RATE
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
    """Decoder tokens for a batch: enough for fast speech in its longest clip, at most `max_new_tokens`
    (a hallucinating decode on noise otherwise runs the whole batch to the cap)."""
    return min(max_new_tokens, int(TOKENS_BASE + TOKENS_PER_SECOND * max(durations)))


def describe_clips(
    bundle: WhisperBundle,
    corpus: Path,
    clips: list[Clip],
    rows: list[int],
    cached: dict[str, ClipText],
    hidden_rows: set[int],
    on_hidden: HiddenHook,
    batch_size: int,
    max_new_tokens: int,
    advance: Callable[[int], None] = lambda n: None,
) -> tuple[ClipTable, list[ClipText]]:
    """Mels and transcripts of manifest `rows` (others get empty entries); encoder states go to `on_hidden`.

    Speech clips get word alignment; other clips only Whisper's hypothesis (their "words" would be
    hallucinations, and alignment forces the slower eager attention). A clip is transcribed unless `cached`
    holds it decoded in the same language; the encoder runs only on clips that need a transcript or are in
    `hidden_rows`.
    """
    n_clips = len(clips)
    mels: list[np.ndarray] = [np.zeros((0, 0), np.uint8)] * n_clips
    vmin, vmax = np.zeros(n_clips, np.float32), np.ones(n_clips, np.float32)
    text = [ClipText(c.id, decode_language(c), "", []) for c in clips]
    groups: dict[tuple[str, bool], list[int]] = {}
    for row in rows:
        groups.setdefault((decode_language(clips[row]), clips[row].category == SPEECH), []).append(row)
    for (language, speech), group in groups.items():
        group.sort(key=lambda r: clips[r].duration)  # a batch decodes as long as its longest clip
        for start in range(0, len(group), batch_size):
            batch = group[start : start + batch_size]
            audios = [decode_audio(corpus / clips[r].path) for r in batch]
            for r, audio in zip(batch, audios):
                mels[r], vmin[r], vmax[r] = quantise_mel(clip_mel(bundle, audio))
            todo = [i for i, r in enumerate(batch) if _stale(cached.get(clips[r].id), language)]
            for i, r in enumerate(batch):
                if i not in todo:
                    text[r] = cached[clips[r].id]
            wanted = [i for i, r in enumerate(batch) if r in hidden_rows]
            need = sorted(set(todo) | set(wanted))  # encode only these clips' first 30 s (what Whisper hears)
            if need:
                first = {i: audios[i][:WINDOW_SAMPLES] for i in need}
                frames = {i: max(real_frames(len(first[i])), 1) for i in need}
                hidden = dict(zip(need, encode(bundle, features_for(bundle, [first[i] for i in need]))))
                if todo:
                    out = transcribe_encoded(
                        bundle,
                        torch.stack([hidden[i] for i in todo]),
                        language=language or None,
                        max_new_tokens=token_budget(
                            [len(first[i]) / SAMPLE_RATE for i in todo], max_new_tokens
                        ),
                        word_timestamps=speech,
                        n_frames=[frames[i] for i in todo],
                    )
                    for i, t in zip(todo, out):
                        words = [(w.word.strip(), float(w.start), float(w.end)) for w in t.words]
                        text[batch[i]] = ClipText(clips[batch[i]].id, language, t.text, words)
                if wanted:
                    on_hidden(
                        [batch[i] for i in wanted],
                        torch.stack([hidden[i] for i in wanted]),
                        [frames[i] for i in wanted],
                    )
            advance(len(batch))
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
