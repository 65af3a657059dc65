"""Hand-built audio for the annotation tests: silence, sines of known level, a voiced vowel train."""

from __future__ import annotations

from typing import Callable

import numpy as np
import pytest

from pipelines.constants import SAMPLE_RATE

FORMANTS = {
    "a": [(700.0, 130.0, 1.0), (1220.0, 70.0, 0.5), (2600.0, 160.0, 0.25)],
    "i": [(300.0, 60.0, 1.0), (2300.0, 100.0, 0.4), (3000.0, 200.0, 0.2)],
    "u": [(300.0, 60.0, 1.0), (870.0, 80.0, 0.5), (2250.0, 100.0, 0.1)],
}
"""Vowel -> (formant Hz, bandwidth Hz, gain): enough of a vocal tract for a VAD to hear speech."""


def silence(seconds: float) -> np.ndarray:
    return np.zeros(int(round(seconds * SAMPLE_RATE)), dtype=np.float32)


def sine(seconds: float, amplitude: float, freq: float = 440.0) -> np.ndarray:
    t = np.arange(int(round(seconds * SAMPLE_RATE))) / SAMPLE_RATE
    return (amplitude * np.sin(2 * np.pi * freq * t)).astype(np.float32)


def vowels(seconds: float, f0: float = 150.0, sequence: str = "aiuaiu", amplitude: float = 0.3) -> np.ndarray:
    """A harmonic source at `f0` (+-5% slow drift) through changing vowel formants, at a 4 Hz syllable
    rhythm: Silero hears speech in it (a steady tone fades to non-speech within half a second)."""
    t = np.arange(int(round(seconds * SAMPLE_RATE))) / SAMPLE_RATE
    phase = 2 * np.pi * np.cumsum(f0 * (1 + 0.05 * np.sin(2 * np.pi * 1.5 * t))) / SAMPLE_RATE
    segment = np.minimum((t / seconds * len(sequence)).astype(int), len(sequence) - 1)
    signal = np.zeros_like(t)
    for k in range(1, int(4000 / f0)):
        gain = np.zeros_like(t)
        for index, vowel in enumerate(sequence):
            gain[segment == index] = sum(g / (1 + ((k * f0 - f) / b) ** 2) for f, b, g in FORMANTS[vowel])
        signal += gain * np.sin(k * phase)
    signal *= (0.55 - 0.45 * np.cos(2 * np.pi * 4 * t)) * np.minimum(1, np.minimum(t, t[-1] - t) / 0.02)
    return (amplitude * signal / np.abs(signal).max()).astype(np.float32)


@pytest.fixture
def vowel_between_silences() -> Callable[[], np.ndarray]:
    """0.5 s silence, 1 s of vowels at F0 150 Hz (encoder frames 25-74), 0.5 s silence."""
    return lambda: np.concatenate([silence(0.5), vowels(1.0), silence(0.5)])
