"""Whisper's decoding rules, the conditional steering modes, the dense controls and preset requests: the tiny
random Whisper and a small random SAE (fast). The real run's presets and held-out measures are in
tests/integration/test_steering_heldout.py."""

from __future__ import annotations

import numpy as np
import pytest
import torch

from pipelines.model.transcribe import GREEDY, WHISPER_DECODING, Decoding, transcribe_encoded
from pipelines.steering import SteeringError, SteeringResources, SteeringSpec, encode_clip, steer
from pipelines.steering.directions import mean_frame_norm, scale_latents
from pipelines.steering.plan import plan_steering
from pipelines.steering.presets import Preset, parse_request, resolve
from pipelines.steering.resources import Calibration
from tests.fixtures.audio import speechlike
from tests.fixtures.tiny_sae import tiny_sae

D_SAE = 96


@pytest.fixture(scope="module")
def tiny():
    from tests.fixtures.tiny_whisper import tiny_whisper

    return tiny_whisper()


@pytest.fixture(scope="module")
def res(tiny) -> SteeringResources:
    sae = tiny_sae(tiny.d_model, D_SAE, 8, seed=0).requires_grad_(False)
    return SteeringResources(tiny, sae, decoding=GREEDY)


@pytest.fixture(scope="module")
def clip(res):
    return encode_clip(res.bundle, speechlike(), res.layer)


# --- decoding as Whisper does it -----------------------------------------------------------------------


def test_fallback_and_gate_rules_follow_whisper() -> None:
    rules = Decoding()
    assert rules.temperatures == (0.0, 0.2, 0.4, 0.6, 0.8, 1.0)
    assert rules.needs_fallback("the cat " * 40, 0.0, -0.2)  # a loop: compression ratio > 2.4
    assert rules.needs_fallback("a plain sentence", 0.0, -1.5)  # improbable text
    assert not rules.needs_fallback("a plain sentence", 0.0, -0.3)
    assert rules.is_silence(0.7, -1.5) and not rules.is_silence(0.7, -0.5) and not rules.is_silence(0.5, -2)
    assert not rules.needs_fallback("the cat " * 40, 0.7, -1.5)  # silence is not re-decoded


def test_fallback_decodes_are_seeded_and_independent_of_the_batch(res, clip) -> None:
    """The random tiny model's greedy text is improbable, so every row falls back to sampling: identical
    states give identical text, in one batch or alone, run after run."""
    n = clip.n_frames
    states = clip.final_BTD.repeat(3, 1, 1)
    batch = transcribe_encoded(res.bundle, states, max_new_tokens=6, n_frames=[n] * 3)
    alone = transcribe_encoded(res.bundle, clip.final_BTD, max_new_tokens=6, n_frames=[n])
    assert batch[0].temperature > 0, "the random model's text should trigger the fallback"
    assert {t.text for t in batch} == {alone[0].text}
    assert all(t.temperature == alone[0].temperature for t in batch)
    greedy = transcribe_encoded(res.bundle, clip.final_BTD, max_new_tokens=6, n_frames=[n], decoding=GREEDY)
    assert greedy[0].temperature == 0.0
    for t in (*batch, greedy[0]):
        assert 0.0 <= t.no_speech_prob <= 1.0 and t.avg_logprob <= 0.0
        assert t.no_speech_gated == WHISPER_DECODING.is_silence(t.no_speech_prob, t.avg_logprob)


def _calibration(res: SteeringResources) -> Calibration:
    rng = np.random.default_rng(0)
    d = res.sae.W_dec.shape[1]
    return Calibration(
        ["en", "es"],
        rng.standard_normal((2, 2, d)).astype(np.float32),
        rng.random((D_SAE, 2)).astype(np.float32),
        3 * rng.random(D_SAE).astype(np.float32),  # a third of them non-speech-selective (>= 2)
        rng.standard_normal(d).astype(np.float32),
    )


# --- conditional modes -----------------------------------------------------------------------------------


def test_scale_multiplies_a_feature_contribution_and_one_changes_nothing(res, clip) -> None:
    h_TD = clip.site_TD
    ids = torch.tensor([3, 7])
    assert torch.equal(scale_latents(res.sae, h_TD, ids, torch.ones(2)), h_TD)
    z_TF = res.sae.encode(h_TD)
    expected = h_TD + (z_TF[:, ids] * 1.5) @ res.sae.W_dec[ids]
    torch.testing.assert_close(scale_latents(res.sae, h_TD, ids, torch.full((2,), 2.5)), expected)


def test_frames_restrict_the_edit(res, clip) -> None:
    h_TD = clip.site_TD
    n = clip.n_frames
    speech_T = torch.zeros(n, dtype=torch.bool)
    speech_T[: n // 2] = True
    spec = SteeringSpec(features=[{"id": 5, "strength": 1.0}], frames="speech")
    edited = plan_steering(res, spec, h_TD, clip.final_BTD, n, speech_T).edit(h_TD)
    assert torch.equal(edited[~speech_T], h_TD[~speech_T])
    assert not torch.allclose(edited[speech_T], h_TD[speech_T])
    inverse = spec.model_copy(update={"frames": "nonspeech"})
    edited = plan_steering(res, inverse, h_TD, clip.final_BTD, n, speech_T).edit(h_TD)
    assert torch.equal(edited[speech_T], h_TD[speech_T])
    active = SteeringSpec(features=[{"id": 5, "strength": 1.0}], frames="active")
    fires_T = res.sae.encode(h_TD)[:, 5] > 0
    edited = plan_steering(res, active, h_TD, clip.final_BTD, n).edit(h_TD)
    assert torch.equal(edited[~fires_T], h_TD[~fires_T])
    with pytest.raises(SteeringError, match="voice activity"):
        plan_steering(res, spec, h_TD, clip.final_BTD, n)


def test_nonspeech_clip_edits_every_frame_of_a_clip_the_sae_reads_as_non_speech_and_none_of_others(
    res, clip
) -> None:
    h_TD, n = clip.site_TD, clip.n_frames
    spec = SteeringSpec(features=[{"id": 5, "strength": 1.0}], frames="nonspeech_clip")
    with pytest.raises(SteeringError, match="calibrate"):
        plan_steering(res, spec, h_TD, clip.final_BTD, n)
    cal = _calibration(res)
    share = cal.nonspeech_share(res.sae, h_TD)
    z_TF = res.sae.encode(h_TD)
    expected = z_TF[:, cal.nonspeech_features()].sum() / z_TF.sum()
    assert 0.0 < share < 1.0 and share == pytest.approx(float(expected), rel=1e-5)
    for threshold, edited_everywhere in ((share, True), (share + 1e-3, False)):
        cal.nonspeech_share_threshold = threshold
        with_cal = SteeringResources(res.bundle, res.sae, calibration=cal, decoding=GREEDY)
        plan = plan_steering(with_cal, spec, h_TD, clip.final_BTD, n)
        changed_T = (plan.edit(h_TD) != h_TD).any(-1)
        assert bool(changed_T.all()) is edited_everywhere and bool(changed_T.any()) is edited_everywhere
        assert plan.nonspeech_share == share and plan.nonspeech_threshold == threshold


def test_calibration_files_keep_the_non_speech_threshold_and_older_files_lack_it(res, tmp_path) -> None:
    from pipelines.steering.resources import load_calibration, save_calibration

    cal = _calibration(res)
    cal.nonspeech_share_threshold = 0.25
    save_calibration(tmp_path / "new.npz", cal)
    assert load_calibration(tmp_path / "new.npz", D_SAE).nonspeech_share_threshold == 0.25
    cal.nonspeech_share_threshold = None
    save_calibration(tmp_path / "none.npz", cal)
    assert load_calibration(tmp_path / "none.npz", D_SAE).nonspeech_share_threshold is None
    with np.load(tmp_path / "new.npz") as z:  # as written before the threshold existed
        np.savez(tmp_path / "old.npz", **{k: z[k] for k in z.files if k != "nonspeech_share_threshold"})
    assert load_calibration(tmp_path / "old.npz", D_SAE).nonspeech_share_threshold is None


@pytest.mark.parametrize(
    "spec, message",
    [
        ({"toward_language": "es", "method": "random", "frames": "active"}, "needs SAE features"),
        ({"features": [{"id": 1, "strength": -1}], "mode": "scale"}, ">= 0"),
        ({"features": [{"id": 1, "strength": 1}], "method": "gradient"}, "target language"),
        ({"toward_language": "es", "rank": "loudest"}, "rank must be"),
    ],
)
def test_inconsistent_modes_are_refused(spec: dict, message: str) -> None:
    with pytest.raises(SteeringError, match=message):
        SteeringSpec(**spec)


# --- dense directions and rankings -------------------------------------------------------------------


def test_random_and_gradient_directions_have_the_asked_length(res, clip) -> None:
    cal = _calibration(res)
    with_cal = SteeringResources(res.bundle, res.sae, calibration=cal, decoding=GREEDY)
    h_TD, n = clip.site_TD, clip.n_frames
    deltas = {}
    for method, seed in (("random", 0), ("random", 1), ("gradient", 0)):
        spec = SteeringSpec(
            toward_language="es", source_language="en", method=method, strength=0.5, seed=seed
        )
        delta_TD = plan_steering(with_cal, spec, h_TD, clip.final_BTD, n).edit(h_TD) - h_TD
        torch.testing.assert_close(delta_TD.norm(dim=-1), torch.full((n,), 0.5 * mean_frame_norm(h_TD)))
        deltas[(method, seed)] = delta_TD[0]
    assert not torch.allclose(deltas[("random", 0)], deltas[("random", 1)])
    gradient = torch.as_tensor(cal.grad_LLD[0, 1] - cal.grad_LLD[0, 0])
    cosine = torch.nn.functional.cosine_similarity(deltas[("gradient", 0)], gradient, dim=0)
    assert float(cosine) == pytest.approx(1.0, abs=1e-5)


def test_rankings_choose_their_own_top_features(res, clip) -> None:
    cal = _calibration(res)
    with_cal = SteeringResources(res.bundle, res.sae, calibration=cal, decoding=GREEDY)
    h_TD, n = clip.site_TD, clip.n_frames

    def chosen(rank: str) -> list[int]:
        spec = SteeringSpec(toward_language="es", source_language="en", rank=rank, n_features=5)
        return [f.id for f in plan_steering(with_cal, spec, h_TD, clip.final_BTD, n).features_used]

    assert chosen("selectivity") == np.argsort(-cal.selectivity_FL[:, 1])[:5].tolist()
    units_FD = res.sae.W_dec / res.sae.W_dec.norm(dim=-1, keepdim=True)
    effect_F = units_FD @ torch.as_tensor(cal.gradient("en", "es"))
    positive = [int(i) for i in effect_F.argsort(descending=True)[:5] if effect_F[i] > 0]
    assert chosen("effect") == positive
    with pytest.raises(SteeringError, match="calibrate"):
        steer(res, speechlike(), SteeringSpec(toward_language="es", rank="selectivity", selection="atlas"))


# --- presets ---------------------------------------------------------------------------------------------


QUIET = {"features": [{"id": 3, "strength": 1.0}], "frames": "active"}
PRESETS = {
    "toward_es": Preset("toward_es", "to es", {"toward_language": "es", "n_features": 4}, 0.6, {}, "s", 2),
    "quiet": Preset("quiet", "q", QUIET, 0.25, {}, "s", 2),
}


def test_preset_requests_resolve_to_their_spec_and_strength() -> None:
    spec = resolve(parse_request('{"preset": "toward_es"}'), PRESETS)
    assert spec.toward_language == "es" and spec.strength == 0.6 and spec.n_features == 4
    spec = resolve(parse_request('{"preset": "quiet", "strength": 0.5, "max_new_tokens": 12}'), PRESETS)
    assert [(f.id, f.strength) for f in spec.features] == [(3, 0.5)] and spec.frames == "active"
    assert spec.max_new_tokens == 12
    full = parse_request('{"features": [{"id": 2, "strength": 1}]}')
    assert isinstance(full, SteeringSpec) and resolve(full, PRESETS) is full


@pytest.mark.parametrize(
    "text, message",
    [
        ('{"preset": "toward_xx"}', "unknown preset 'toward_xx' \\(have: quiet, toward_es\\)"),
        ('{"preset": "toward_es", "mode": "clamp"}', "takes only"),
        ('{"preset": 3}', "preset id"),
        ('{"preset": "toward_es", "strength": 1e9}', "strength"),
    ],
)
def test_bad_preset_requests_are_refused(text: str, message: str) -> None:
    with pytest.raises(SteeringError, match=message):
        resolve(parse_request(text), PRESETS)
