"""RMS level bands on sines of known amplitude."""

from __future__ import annotations

import numpy as np

from pipelines.annotate.loudness import LOUDNESS_VALUES, loudness_codes, rms_db
from tests.pipelines.annotate.conftest import silence, sine


def test_sine_levels() -> None:
    # a sine of amplitude A has an RMS of A / sqrt(2): 0.1 -> -23 dBFS (400 Hz: 8 whole periods a frame)
    level_T = rms_db(sine(0.2, 0.1, freq=400.0), 10)
    np.testing.assert_allclose(level_T, 20 * np.log10(0.1 / np.sqrt(2)), atol=0.01)
    for amplitude, band in (
        (0.5, ">= -15 dB"),
        (0.1, "-25..-15 dB"),
        (0.03, "-40..-25 dB"),
        (0.005, "-60..-40 dB"),
    ):
        assert {LOUDNESS_VALUES[c] for c in loudness_codes(sine(0.2, amplitude), 10)} == {band}


def test_silence_and_the_padded_last_frame() -> None:
    assert {LOUDNESS_VALUES[c] for c in loudness_codes(silence(0.1), 5)} == {"< -60 dB"}
    audio = sine(0.03, 0.5)  # 480 samples: frame 1 is half audio, frame 2 past the end
    assert [LOUDNESS_VALUES[c] for c in loudness_codes(audio, 3)] == [">= -15 dB", ">= -15 dB", "< -60 dB"]
