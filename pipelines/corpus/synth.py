"""Synthesized non-speech: noise, tones and silence made with numpy from a seed, so every build is identical.

These give the SAE clean references for features that track spectral shape (white/pink/brown noise), pitch and
its changes (tones, sweeps, chords, scales, DTMF), temporal structure (clicks, impulse trains, modulated
noise) and the absence of sound (digital silence, a faint noise floor).
"""

from __future__ import annotations

from functools import partial
from typing import Callable

import numpy as np

from pipelines.audio import SAMPLE_RATE
from pipelines.corpus.candidate import Candidate, slug

LICENCE = "CC0-1.0"
SOURCE = "whisper-atlas-synth"

Recipe = Callable[[np.random.Generator, int], np.ndarray]
"""Makes `n` samples (float32, 16 kHz, roughly unit peak) from a seeded generator."""


def _white(rng: np.random.Generator, n: int) -> np.ndarray:
    return rng.standard_normal(n)


def _coloured(rng: np.random.Generator, n: int, exponent: float) -> np.ndarray:
    """Noise whose power falls as 1/f**exponent (1: pink, 2: brown), shaped in the frequency domain."""
    spectrum = np.fft.rfft(rng.standard_normal(n))
    freqs = np.fft.rfftfreq(n, 1 / SAMPLE_RATE)
    spectrum *= np.where(freqs > 20, np.maximum(freqs, 20) ** (-exponent / 2), 0.0)
    return np.fft.irfft(spectrum, n)


def _modulated(rng: np.random.Generator, n: int) -> np.ndarray:
    t = np.arange(n) / SAMPLE_RATE
    rate = rng.uniform(1.0, 8.0)
    return rng.standard_normal(n) * (0.5 + 0.5 * np.sin(2 * np.pi * rate * t))


def _sine(rng: np.random.Generator, n: int) -> np.ndarray:
    t = np.arange(n) / SAMPLE_RATE
    return np.sin(2 * np.pi * rng.uniform(100, 4000) * t)


def _sweep(rng: np.random.Generator, n: int) -> np.ndarray:
    """A logarithmic chirp between two random frequencies, up or down."""
    f0, f1 = rng.uniform(60, 400), rng.uniform(2000, 7000)
    if rng.random() < 0.5:
        f0, f1 = f1, f0
    t = np.arange(n) / SAMPLE_RATE
    duration = n / SAMPLE_RATE
    k = np.log(f1 / f0) / duration
    return np.sin(2 * np.pi * f0 * (np.exp(k * t) - 1) / k)


def _notes(freqs: list[float], n: int, note: int) -> np.ndarray:
    """Decaying sine notes of `note` samples each, one after another."""
    out = np.zeros(n)
    envelope = np.exp(-np.arange(note) / (0.3 * note))
    for i, start in enumerate(range(0, n, note)):
        t = np.arange(min(note, n - start)) / SAMPLE_RATE
        out[start : start + t.size] = np.sin(2 * np.pi * freqs[i % len(freqs)] * t) * envelope[: t.size]
    return out


def _chord(rng: np.random.Generator, n: int) -> np.ndarray:
    root = rng.uniform(110, 440)
    ratios = [1.0, 1.25, 1.5] if rng.random() < 0.5 else [1.0, 1.2, 1.5]  # major or minor triad
    return np.sum([_notes([root * r], n, SAMPLE_RATE) for r in ratios], axis=0)


def _scale(rng: np.random.Generator, n: int) -> np.ndarray:
    root = rng.uniform(200, 600)
    steps = [0, 2, 4, 5, 7, 9, 11, 12]
    return _notes([root * 2 ** (s / 12) for s in steps], n, int(rng.uniform(0.2, 0.5) * SAMPLE_RATE))


_ROWS, _COLUMNS = (697, 770, 852, 941), (1209, 1336, 1477)
_DTMF = [(_ROWS[(d - 1) // 3], _COLUMNS[(d - 1) % 3]) for d in range(1, 10)] + [(941, 1336)]
"""Keypad digits 1-9 then 0 as (row, column) tone frequencies in Hz."""


def _dtmf(rng: np.random.Generator, n: int) -> np.ndarray:
    """Telephone keypad digits: 100 ms tone pairs with 80 ms gaps."""
    out = np.zeros(n)
    tone, gap = int(0.1 * SAMPLE_RATE), int(0.08 * SAMPLE_RATE)
    t = np.arange(tone) / SAMPLE_RATE
    for start in range(gap, n - tone, tone + gap):
        low, high = _DTMF[rng.integers(10)]
        out[start : start + tone] = np.sin(2 * np.pi * low * t) + np.sin(2 * np.pi * high * t)
    return out


def _clicks(rng: np.random.Generator, n: int) -> np.ndarray:
    """Sparse random clicks (short decaying noise bursts)."""
    out = np.zeros(n)
    burst = rng.standard_normal(80) * np.exp(-np.arange(80) / 10)
    for start in rng.integers(0, n - 80, size=int(rng.uniform(2, 10) * n / SAMPLE_RATE)):
        out[start : start + 80] += burst
    return out


def _impulses(rng: np.random.Generator, n: int) -> np.ndarray:
    """A periodic impulse train (from a slow tick to a buzz)."""
    out = np.zeros(n)
    out[:: int(SAMPLE_RATE / rng.uniform(2, 120))] = 1.0
    return out


def _digital_silence(rng: np.random.Generator, n: int) -> np.ndarray:
    return np.zeros(n)


def _noise_floor(rng: np.random.Generator, n: int) -> np.ndarray:
    """Near-silence: a faint room-like noise floor peaking 60 dB below full scale."""
    floor = _coloured(rng, n, 1.0)
    return floor / max(float(np.abs(floor).max()), 1e-9) * 1e-3


RECIPES: dict[str, dict[str, Recipe]] = {
    "noise": {
        "white": _white,
        "pink": partial(_coloured, exponent=1.0),
        "brown": partial(_coloured, exponent=2.0),
        "modulated": _modulated,
    },
    "tones": {
        "sine": _sine,
        "sweep": _sweep,
        "chord": _chord,
        "scale": _scale,
        "dtmf": _dtmf,
        "clicks": _clicks,
        "impulses": _impulses,
    },
    "silence": {"digital": _digital_silence, "floor": _noise_floor},
}
"""Category -> recipe name -> recipe."""

KEEP_LEVEL = {"digital", "floor"}
"""Recipes whose level is part of their meaning (kept as made, not normalized)."""


def synthesize(category: str, recipe: str, seed: int, seconds: float) -> np.ndarray:
    """The audio of one synthesized clip (peak level drawn from the seed, except for silence)."""
    rng = np.random.default_rng([seed, len(recipe), sum(map(ord, recipe))])
    audio = RECIPES[category][recipe](rng, int(round(seconds * SAMPLE_RATE)))
    if recipe not in KEEP_LEVEL:
        audio = audio / max(float(np.abs(audio).max()), 1e-9) * rng.uniform(0.1, 0.8)
    return audio.astype(np.float32)


def candidates(category: str, variants: int, seed: int = 0) -> list[Candidate]:
    """`variants` clips of every recipe of `category`, 2-10 s long, each from its own seed."""
    rng = np.random.default_rng(seed)
    found = []
    for recipe in RECIPES[category]:
        for variant in range(variants):
            seconds = round(float(rng.uniform(2.0, 10.0)), 2)
            found.append(
                Candidate(
                    id=slug("synth", category, recipe, f"{variant:02d}"),
                    load=partial(synthesize, category, recipe, seed * 1000 + variant, seconds),
                    seconds=seconds,
                    category=category,
                    source=SOURCE,
                    licence=LICENCE,
                    extra={"recipe": recipe},
                )
            )
    return found
