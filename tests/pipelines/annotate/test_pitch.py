"""Praat's F0 in bands, sampled at encoder frame centres."""

from __future__ import annotations

from typing import Callable

import numpy as np

from pipelines.annotate.pitch import PITCH_VALUES, f0_hz, pitch_codes
from tests.pipelines.annotate.conftest import silence, vowels


def test_vowel_at_150_hz_is_in_its_band_between_unvoiced_silences(
    vowel_between_silences: Callable[[], np.ndarray],
) -> None:
    codes_T = pitch_codes(vowel_between_silences(), 100)
    assert {PITCH_VALUES[c] for c in codes_T[30:70]} == {"120-200 Hz"}
    assert {PITCH_VALUES[c] for c in codes_T[:20]} | {PITCH_VALUES[c] for c in codes_T[80:]} == {"unvoiced"}
    assert np.all(np.abs(f0_hz(vowel_between_silences(), 100)[30:70] - 150) < 10)


def test_bands_follow_f0() -> None:
    for f0, band in ((100.0, "< 120 Hz"), (250.0, "200-300 Hz"), (350.0, ">= 300 Hz")):
        assert PITCH_VALUES[np.bincount(pitch_codes(vowels(0.6, f0=f0), 30)[5:25]).argmax()] == band


def test_audio_too_short_for_praat_is_unvoiced() -> None:
    np.testing.assert_array_equal(pitch_codes(silence(0.02), 1), [0])
