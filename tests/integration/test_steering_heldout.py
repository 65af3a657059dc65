"""The small real run's steering presets, as `whisper-atlas calibrate` wrote them: chosen from training clips
only, one toward each corpus language and one to silence non-speech, each curve starting from Whisper
unsteered. (Held-out success against the controls is measured by benchmarks/steering_heldout.py.)"""

from __future__ import annotations

import json

import pytest

from pipelines.corpus.manifest import SPEECH

pytestmark = pytest.mark.integration


@pytest.fixture(scope="module")
def real(repo_data_dir):
    from pipelines.steering import load_steering_resources
    from tests.fixtures.real_run import real_run

    run = real_run(repo_data_dir, "activations", "sae", "atlas")
    return run, load_steering_resources(run)


def test_calibration_chose_from_training_clips_only(real) -> None:
    from pipelines.activations import read_meta
    from pipelines.sae.train import read_metrics, run_clips

    run, res = real
    notes = json.loads((run.root / "steering" / "presets.json").read_text())
    clips = run_clips(read_meta(run.activations))
    trained = {clips[row].id for row in read_metrics(run)["split"]["train"]}
    used = set(notes["clips"]["gradient"]) | set(notes["clips"]["silence"])
    assert used and used <= trained
    languages = sorted({c.language for c in clips if c.category == SPEECH and c.language})
    assert {f"toward_{lang}" for lang in languages} | {"suppress_hallucination"} == set(res.presets)
    for preset in res.presets.values():  # every curve starts from Whisper unsteered
        assert preset.curve["strength"][0] == 0.0 and preset.default_strength in preset.curve["strength"]
        assert (
            preset.curve.get("token_flip_rate", [0.0])[0] == 0.0 and preset.curve.get("cer", [0.0])[0] == 0.0
        )
    assert notes["rank"] in notes["rank_comparison"]
