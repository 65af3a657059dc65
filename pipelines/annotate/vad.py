"""Voice activity per encoder frame: Silero VAD (the `silero-vad` package, which ships its model), smoothed.

Why Silero and not WebRTC's GMM detector: on the default corpus WebRTC's detector (aggressiveness 3, the
strictest) called 92% of music frames, 100% of noise and 53% of tones "speech", so its `vad` would mostly
repeat "not silent"; Silero VAD (a small neural detector trained to reject music and noise; Silero Team,
"Silero VAD: pre-trained enterprise-grade Voice Activity Detector", 2024) calls 0.1% of music, 0% of noise
and tones, and 85% of speech-clip frames speech. Its TorchScript model is a file of the package (nothing
downloaded) and runs on the torch we already have. It scores 32 ms chunks (512 samples) with a state
carried from chunk to chunk, so clips are scored together, a batch of clips per call
(`audio_forward`, each row its own stream), which takes the corpus's 56 min in about 2 s, against about
17 s one clip at a time. It runs on one torch thread (what Silero's package sets on import): with two,
its tiny per-chunk steps wait on each other, 10x slower when another process holds one of the cores.

A chunk is speech by Silero's own hysteresis (`get_speech_timestamps`): it enters speech at probability >=
`THRESHOLD` and leaves below `THRESHOLD - 0.15`. An encoder frame takes the chunk under its centre:
onsets land within a chunk of the sound's, offsets tend to come late (up to ~100 ms on a synthetic vowel, as
Silero's probability decays after the sound stops). Then pauses of at most `MAX_GAP_SECONDS` inside speech are
filled and speech runs shorter than `MIN_SPEECH_SECONDS` dropped (Silero's `min_silence_duration_ms` 100;
its `min_speech_duration_ms` of 250 would drop short words such as "no", so 100). `vad`, `since_onset`,
`utterance_edge` and `boundary` all read these smoothed decisions.
"""

from __future__ import annotations

import warnings
from functools import lru_cache

import numpy as np
import torch

from pipelines.annotate.regions import speech_runs
from pipelines.constants import FRAME_SECONDS, SAMPLE_RATE

VAD_VALUES = ["speech", "non-speech"]
THRESHOLD = 0.5
"""Silero's default speech probability threshold; speech ends below THRESHOLD - HYSTERESIS."""
HYSTERESIS = 0.15
CHUNK_SAMPLES = 512
"""Samples Silero scores at once at 16 kHz (32 ms)."""
BATCH_CLIPS = 128
"""Clips scored in one call (a call's steps follow its longest clip, so clips are batched by length)."""
MAX_GAP_SECONDS = 0.1
"""Pauses up to this long between speech frames are speech (closures, short breaths)."""
MIN_SPEECH_SECONDS = 0.1
"""Speech runs shorter than this (after the gaps are filled) are clicks, not speech."""


def speech_frames(audios: list[np.ndarray], n_frames: list[int]) -> list[np.ndarray]:
    """Per clip, (T,) bool: the smoothed VAD decision of each of its first `n_frames` encoder frames."""
    speech: list[np.ndarray] = [np.zeros(0, dtype=bool)] * len(audios)
    order = np.argsort([len(a) for a in audios], kind="stable")
    for first in range(0, len(order), BATCH_CLIPS):
        batch = order[first : first + BATCH_CLIPS]
        probs_BC = chunk_probabilities([audios[i] for i in batch])
        for i, probs_C in zip(batch, probs_BC):
            speech[i] = smooth(_frame_decisions(probs_C, n_frames[i]))
    return speech


def chunk_probabilities(audios: list[np.ndarray]) -> np.ndarray:
    """(B, C) Silero's speech probability per 32 ms chunk of each clip, zero-padded to the longest."""
    longest = max([CHUNK_SAMPLES, *(len(a) for a in audios)])
    batch_BS = np.zeros((len(audios), -(-longest // CHUNK_SAMPLES) * CHUNK_SAMPLES), dtype=np.float32)
    for row, audio in enumerate(audios):
        batch_BS[row, : len(audio)] = audio
    model = _model()
    threads = torch.get_num_threads()
    torch.set_num_threads(
        1
    )  # per-chunk ops are tiny: a second thread gains little, and stalls on a busy core
    try:
        with torch.inference_mode():
            return model.audio_forward(torch.from_numpy(batch_BS), SAMPLE_RATE).numpy()
    finally:
        torch.set_num_threads(threads)


def smooth(raw_T: np.ndarray) -> np.ndarray:
    """(T,) bool: `raw_T` with short gaps between speech filled, then short speech runs removed."""
    speech_T = np.asarray(raw_T, dtype=bool).copy()
    starts, stops = speech_runs(speech_T)
    max_gap = int(round(MAX_GAP_SECONDS / FRAME_SECONDS))
    for stop, next_start in zip(stops[:-1], starts[1:]):
        if next_start - stop <= max_gap:
            speech_T[stop:next_start] = True
    min_run = int(round(MIN_SPEECH_SECONDS / FRAME_SECONDS))
    for start, stop in zip(*speech_runs(speech_T)):
        if stop - start < min_run:
            speech_T[start:stop] = False
    return speech_T


def _frame_decisions(probs_C: np.ndarray, n_frames: int) -> np.ndarray:
    """(T,) bool: the hysteresis decision of the chunk under each encoder frame's centre."""
    speech_C = np.zeros(len(probs_C), dtype=bool)
    inside = False
    for chunk, p in enumerate(probs_C):
        inside = p >= THRESHOLD or (inside and p >= THRESHOLD - HYSTERESIS)
        speech_C[chunk] = inside
    centres_T = (np.arange(n_frames) + 0.5) * FRAME_SECONDS * SAMPLE_RATE
    chunk_T = np.minimum(centres_T // CHUNK_SAMPLES, len(probs_C) - 1).astype(int)
    return speech_C[chunk_T]


@lru_cache(maxsize=1)
def _model() -> torch.jit.ScriptModule:
    threads = torch.get_num_threads()
    from silero_vad import load_silero_vad  # importing it sets torch to one thread: restored below

    torch.set_num_threads(threads)
    with warnings.catch_warnings():  # torch deprecates `torch.jit.load`, which Silero's loader calls
        warnings.simplefilter("ignore", DeprecationWarning)
        return load_silero_vad()
