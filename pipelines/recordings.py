"""Speaker recordings: one speaker's short clips joined, with short pauses, into recordings of up to 30 s.

Why: the SAE should learn from encoder outputs Whisper really computes for some audio (what its decoder
reads). Giving each 1-8 s clip a 30 s window of its own spends most of the encoder on padding, and packing
clips into shared windows (`pipelines.model.packing`) only approximates Whisper (each clip loses the attention
to padding beyond its context). Joining a speaker's clips into one recording fills most of a window with
speech, as Whisper's own training data does (30 s segments of long recordings), and every window is computed
exactly as Whisper computes that recording. Each clip keeps its offset, so every frame still belongs to its
clip and frame numbers count from the clip's start.

Non-speech clips are joined by category and source (a reel of sound effects, of tones), which is still
audio Whisper really encodes. Speech clips without a speaker id (user clips) and clips too long to share a
window keep a window of their own: the computation the server runs for an uploaded clip.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Literal

import numpy as np

from pipelines.constants import SAMPLE_RATE, SAMPLES_PER_FRAME, WINDOW_SAMPLES
from pipelines.corpus.manifest import SPEECH, Clip

WindowMode = Literal["recording", "solo", "packed"]
"""How extraction fills encoder windows: speaker recordings (exact, the default), one clip per window (exact,
2x the windows), or packed blocks (approximate, `pipelines.model.packing`)."""
WINDOW_MODES: tuple[WindowMode, ...] = ("recording", "solo", "packed")

GAP_SAMPLES = SAMPLE_RATE // 2
"""Silence between two clips of a recording (0.5 s, a pause between sentences)."""
PLAN_MARGIN_SAMPLES = SAMPLE_RATE // 5
"""Room left when planning from manifest durations (rounded to 1 ms) so decoded clips always fit."""


@dataclass(frozen=True)
class Recording:
    """Manifest rows encoded together in one window, in the order they are joined."""

    rows: tuple[int, ...]

    @property
    def solo(self) -> bool:
        return len(self.rows) == 1


def plan_recordings(clips: list[Clip]) -> list[Recording]:
    """Every clip in exactly one recording, deterministically (ordered by each recording's first row).

    A speaker's clips in one language (a recording never switches language), or one source's non-speech
    clips of one category, fill windows first-fit in decreasing length, so few windows are run and most of
    each is signal; speech without a speaker and clips longer than a shared window allows stay alone.
    """
    capacity = WINDOW_SAMPLES - PLAN_MARGIN_SAMPLES
    by_voice: dict[tuple[str, str], list[int]] = {}
    alone: list[Recording] = []
    for row, clip in enumerate(clips):
        voice = _voice(clip)
        if voice is not None and _samples(clip) + GAP_SAMPLES <= capacity:
            by_voice.setdefault(voice, []).append(row)
        else:
            alone.append(Recording((row,)))
    joined: list[Recording] = []
    for rows in by_voice.values():
        bins: list[list[int]] = []
        used: list[int] = []
        for row in sorted(rows, key=lambda r: (-_samples(clips[r]), r)):
            need = _samples(clips[row]) + GAP_SAMPLES
            slot = next((b for b, u in enumerate(used) if u + need <= capacity), None)
            if slot is None:
                bins.append([])
                used.append(0)
                slot = len(bins) - 1
            bins[slot].append(row)
            used[slot] += need
        joined += [Recording(tuple(sorted(b))) for b in bins]
    return sorted(joined + alone, key=lambda r: r.rows[0])


def join(audios: list[np.ndarray]) -> tuple[np.ndarray, list[int]]:
    """The recording of `audios` and each clip's first encoder frame in it.

    Each clip starts on an encoder-frame boundary (a multiple of 320 samples), after a gap of silence.
    Raises ValueError when the clips do not fit one window (a manifest duration far from the audio).
    """
    offsets: list[int] = []
    position = 0
    for audio in audios:
        start = -(-position // SAMPLES_PER_FRAME) * SAMPLES_PER_FRAME
        offsets.append(start)
        position = start + len(audio) + GAP_SAMPLES
    end = offsets[-1] + len(audios[-1]) if audios else 0
    if end > WINDOW_SAMPLES:
        raise ValueError(f"clips of {end / SAMPLE_RATE:.2f} s do not fit one 30 s window")
    recording = np.zeros(end, dtype=np.float32)
    for audio, start in zip(audios, offsets):
        recording[start : start + len(audio)] = audio
    return recording, [start // SAMPLES_PER_FRAME for start in offsets]


def _voice(clip: Clip) -> tuple[str, str] | None:
    """What a recording holds one of: a speaker in one language, or one source's sounds of one category."""
    if clip.category != SPEECH:
        return (f"{clip.category}:{clip.source}", "")
    return (clip.speaker, clip.language) if clip.speaker else None


def _samples(clip: Clip) -> int:
    return int(round(clip.duration * SAMPLE_RATE))
