"""The small real run's steering presets, as `whisper-atlas calibrate` wrote them: chosen from training clips
only, one toward each corpus language and one to silence non-speech, each curve starting from Whisper
unsteered; and toward Spanish on unseen clips beside random directions (the full held-out comparison of
every method is benchmarks/steering_heldout.py)."""

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
    used = set().union(*notes["clips"].values())  # gradients, silencing curve, non-speech threshold
    assert used and used <= trained
    languages = sorted({c.language for c in clips if c.category == SPEECH and c.language})
    assert {f"toward_{lang}" for lang in languages} | {"suppress_hallucination"} == set(res.presets)
    for preset in res.presets.values():  # every curve starts from Whisper unsteered
        assert preset.curve["strength"][0] == 0.0 and preset.default_strength in preset.curve["strength"]
        assert (
            preset.curve.get("token_flip_rate", [0.0])[0] == 0.0 and preset.curve.get("cer", [0.0])[0] == 0.0
        )
    assert notes["rank"] in notes["rank_comparison"]


# Held out: SAE features toward Spanish, ranked by the first-order effect of adding their direction, at the
# test run's `toward_es` default strength, scored on default-corpus clips the run never trained or calibrated
# on (speakers it never heard first). Runs and numbers: benchmarks/RESULTS.md ("Held-out steering tests").
# The effect ranking is tested, not the preset's own: which ranking calibration picks from its few training
# clips changes with the seed (attribution on seed 0: 2 of 12 here; selectivity on seed 1: 0 of 12), while
# the effect ranking succeeded on both seeds and was the best method toward Spanish on the default run's
# held-out clips. Toward French is not asserted: on unseen clips it does not beat the controls. Silencing
# (non-speech clips only, since session 11) beat its controls on the default run's held-out clips, but it
# has been measured on one small run only, too few to set a bound with a margin (RESULTS.md).
TOWARD_CLIPS_PER_LANGUAGE = 2
MIN_TOWARD_SUCCESSES = 2
"""Of 12 unseen clips (2 of each other language) the features must succeed (text reads as Spanish, no loop)
on at least this many, and on this many more than random directions of the same norm: two seeds of the
small run measured 3 and 6 of 12 against 0 and 0 of 12; the bound leaves one clip below the lower."""


@pytest.fixture(scope="module")
def unseen(real, corpus):
    from pipelines.corpus.manifest import read_manifest
    from pipelines.steering.heldout import heldout_clips

    run, _ = real
    return heldout_clips(run, read_manifest(corpus))


def test_sae_features_steer_unseen_clips_toward_spanish_where_random_directions_do_not(
    real, corpus, unseen
) -> None:
    from pipelines.steering.heldout import compare_methods

    _, res = real
    strength = res.presets["toward_es"].default_strength
    methods = ("sae_effect", "random_direction")
    found = compare_methods(res, corpus, unseen, "es", [strength], TOWARD_CLIPS_PER_LANGUAGE, methods)
    n = len(found["clips"])
    sae, random = (round(found["methods"][m]["success_rate"][1] * n) for m in methods)
    print(f"toward es at {strength}: sae_effect {sae}/{n}, random {random}/{n}")
    assert found["methods"]["sae_effect"]["success_rate"][0] == 0.0  # strength 0 is the baseline
    assert sae >= MIN_TOWARD_SUCCESSES and sae - random >= MIN_TOWARD_SUCCESSES, (sae, random, n)
