"""How calibration picks a preset's default strength from its curve (the sweeps themselves run on the small
real run: tests/integration/test_steering_heldout.py)."""

from __future__ import annotations

from pipelines.steering.calibrate import SPEECH_CER_BUDGET, _best_strength, silencing_gain


def test_silencing_gain_counts_only_strengths_that_keep_speech() -> None:
    gated = [0.5, 0.5, 0.25, 0.0]
    cer = [0.0, 0.0, SPEECH_CER_BUDGET, SPEECH_CER_BUDGET + 0.01]
    assert silencing_gain(gated, cer) == [0.0, 0.0, 0.25, -1.0]  # silencing all of it broke speech
    curve = {"strength": [0.0, 0.1, 0.25, 0.5]}
    assert _best_strength(curve, silencing_gain(gated, cer), 0.1) == 0.25


def test_without_any_gain_the_default_is_the_fallback_not_a_speech_breaking_strength() -> None:
    gain = silencing_gain([0.5, 0.5, 0.75, 0.0], [0.0, 0.0, 0.0, 0.5])
    assert gain == [0.0, 0.0, -0.25, -1.0]
    assert _best_strength({"strength": [0.0, 0.05, 0.1, 0.25]}, gain, 0.05) == 0.05
