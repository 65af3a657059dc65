"""Steering maths and the one-encoder-pass steer request: tiny random Whisper + a small random SAE (fast),
and the real Whisper base + the small real run's SAE (integration: identity checks, language flip rates)."""

from __future__ import annotations

import json

import numpy as np
import pytest
import torch

from pipelines.activations import ActivationsMeta, append_shard
from pipelines.corpus.manifest import Clip, write_manifest
from pipelines.errors import AtlasError
from pipelines.model.transcribe import GREEDY
from pipelines.steering import (
    AtlasSteeringData,
    LanguageEffects,
    SteeringError,
    SteeringResources,
    SteeringSpec,
    encode_clip,
    language_means,
    steer,
    word_diff,
)
from pipelines.steering.directions import add_directions, clamp_latents, reconstruct, unit_rows
from tests.fixtures.audio import speechlike
from tests.fixtures.tiny_sae import tiny_sae

D_SAE = 96


@pytest.fixture(scope="module")
def tiny():
    from tests.fixtures.tiny_whisper import tiny_whisper

    return tiny_whisper()


def random_sae(d_in: int, seed: int = 0):
    return tiny_sae(d_in, D_SAE, 8, seed=seed).requires_grad_(False)


@pytest.fixture(scope="module")
def res(tiny) -> SteeringResources:
    """Greedy decoding: the random model's text always triggers Whisper's fallback (tested elsewhere)."""
    return SteeringResources(tiny, random_sae(tiny.d_model), decoding=GREEDY)


@pytest.fixture(scope="module")
def audio() -> np.ndarray:
    return speechlike()


# --- the spec ------------------------------------------------------------------------------------------


@pytest.mark.parametrize(
    "text, message",
    [
        ("not json", "not valid JSON"),
        ("[1, 2]", "JSON object"),
        ('{"features": [{"id": 1, "strength": 1}], "colour": "red"}', "unknown spec keys"),
        ('{"features": [{"id": 1}]}', "list of"),
        ("{}", "nothing to steer"),
        ('{"features": [{"id": 1, "strength": 1}], "toward_language": "es"}', "not both"),
        ('{"features": [{"id": 1, "strength": 1e400}]}', "finite"),
        ('{"features": [{"id": 1, "strength": 99}]}', "<="),
        ('{"features": [{"id": -1, "strength": 1}]}', "non-negative"),
        ('{"features": [{"id": 1, "strength": 1}, {"id": 1, "strength": 2}]}', "once"),
        ('{"features": [{"id": 1, "strength": 1}], "method": "dom"}', "target language"),
        ('{"toward_language": "es", "mode": "clamp"}', "mode 'add'"),
        ('{"features": [{"id": 1, "strength": 1}], "mode": "multiply"}', "mode must be"),
        ('{"toward_language": "es", "max_new_tokens": 100000}', "max_new_tokens"),
        ('{"toward_language": "es", "n_features": 2.5}', "integer"),
        ('{"toward_language": 7}', "language code"),
    ],
)
def test_bad_specs_are_refused_with_a_clear_message(text: str, message: str) -> None:
    with pytest.raises(SteeringError, match=message):
        SteeringSpec.from_json(text)


def test_spec_from_json_round_trip() -> None:
    spec = SteeringSpec.from_json(
        '{"features": [{"id": 3, "strength": -0.5}], "mode": "clamp", "scale": null}'
    )
    assert spec.features[0].id == 3 and spec.features[0].strength == -0.5
    assert spec.mode == "clamp" and spec.scale == "frame_norm"
    assert issubclass(SteeringError, AtlasError)


def test_word_diff_marks_replacements_as_delete_plus_insert() -> None:
    ops = word_diff("the weather is nice today", "el weather es nice today")
    assert ops == [
        {"op": "delete", "text": "the"},
        {"op": "insert", "text": "el"},
        {"op": "equal", "text": "weather"},
        {"op": "delete", "text": "is"},
        {"op": "insert", "text": "es"},
        {"op": "equal", "text": "nice today"},
    ]


# --- the maths on frames -------------------------------------------------------------------------------


def test_reconstruction_plus_error_term_is_the_original(res, audio) -> None:
    h_TD = encode_clip(res.bundle, audio).site_TD
    x_hat = reconstruct(res.sae, h_TD)
    assert not torch.allclose(x_hat, h_TD, atol=1e-3)  # the SAE alone changes the frames
    torch.testing.assert_close(x_hat + (h_TD - x_hat), h_TD)
    z_TF = res.sae.encode(h_TD)
    ids = torch.tensor([0, 5])
    one = h_TD[:1]
    assert torch.equal(clamp_latents(res.sae, one, ids, z_TF[0, ids]), one)  # clamping to itself: exactly h


def test_add_and_clamp_follow_their_definitions(res, audio) -> None:
    h_TD = encode_clip(res.bundle, audio).site_TD
    W = res.sae.W_dec
    ids, coefs = torch.tensor([2, 7]), torch.tensor([1.5, -0.5])
    torch.testing.assert_close(add_directions(h_TD, W[ids], coefs), h_TD + coefs @ W[ids])
    assert torch.equal(add_directions(h_TD, W[ids], torch.zeros(2)), h_TD)
    values = torch.tensor([3.0, 0.0])  # clamp: set latent 2 to 3, ablate latent 7
    z_TF = res.sae.encode(h_TD)
    expected = h_TD + (values[None, :] - z_TF[:, ids]) @ W[ids]
    torch.testing.assert_close(clamp_latents(res.sae, h_TD, ids, values), expected, atol=1e-4, rtol=1e-5)


# --- one steer request ----------------------------------------------------------------------------------


def test_strength_zero_reproduces_the_baseline_exactly(res, audio) -> None:
    result = steer(res, audio, SteeringSpec(features=[{"id": 4, "strength": 0.0}], max_new_tokens=8))
    baseline_TD, reconstructed_TD, steered_TD = result.hidden_3TD
    assert torch.equal(steered_TD, baseline_TD)
    assert not torch.equal(reconstructed_TD, baseline_TD)
    assert result.steered.text == result.baseline.text and result.steered.tokens == result.baseline.tokens
    # identical rows of one batched decoder pass agree to float rounding, not bit for bit, on CPU BLAS
    assert result.steered.language_probs == pytest.approx(result.baseline.language_probs, rel=1e-5)


def test_add_mode_moves_real_frames_only_by_strength_times_frame_norm(res, audio) -> None:
    spec = SteeringSpec(features=[{"id": 9, "strength": 0.7}], max_new_tokens=4)
    result = steer(res, audio, spec)
    clip = encode_clip(res.bundle, audio)
    n = clip.n_frames
    frame_norm = float(clip.site_TD.norm(dim=-1).mean())
    expected = clip.site_TD + 0.7 * frame_norm * unit_rows(res.sae.W_dec[9:10])
    torch.testing.assert_close(result.hidden_3TD[2], expected, atol=1e-4, rtol=1e-5)
    assert result.frame_norm == pytest.approx(frame_norm, rel=1e-5)
    assert result.n_frames == n < 1500


def test_feature_act_scale_needs_typical_activations(res, audio) -> None:
    spec = SteeringSpec(features=[{"id": 1, "strength": 1.0}], scale="feature_act", max_new_tokens=4)
    with pytest.raises(SteeringError, match="typical activations"):
        steer(res, audio, spec)
    typical = np.linspace(1, 2, D_SAE).astype(np.float32)
    with_atlas = SteeringResources(
        res.bundle, res.sae, atlas=AtlasSteeringData(typical_act_F=typical), decoding=res.decoding
    )
    result = steer(with_atlas, audio, spec)
    delta_D = (result.hidden_3TD[2] - result.hidden_3TD[0]).mean(0)
    torch.testing.assert_close(delta_D, float(typical[1]) * res.sae.W_dec[1], atol=1e-4, rtol=1e-4)


def test_unknown_feature_ids_are_refused(res, audio) -> None:
    with pytest.raises(SteeringError, match="unknown feature ids"):
        steer(res, audio, SteeringSpec(features=[{"id": D_SAE, "strength": 1.0}]))


def test_toward_language_from_clip_gradients_raises_the_target_logit(res, audio) -> None:
    from pipelines.model.transcribe import LANGUAGES, language_logits

    spec = SteeringSpec(
        toward_language="es",
        source_language="en",
        selection="clip",
        n_features=5,
        strength=0.02,
        max_new_tokens=4,
    )
    result = steer(res, audio, spec)
    used = result.plan.features_used
    assert 1 <= len(used) <= 5 and all(f.effect > 0 for f in used)
    assert [f.effect for f in used] == sorted((f.effect for f in used), reverse=True)
    assert sum(f.strength for f in used) == pytest.approx(0.02)
    clip = encode_clip(res.bundle, audio)
    steered = clip.final_BTD.clone()
    steered[0, : result.n_frames] = result.hidden_3TD[2]
    with torch.no_grad():
        logits = language_logits(res.bundle, torch.cat([clip.final_BTD, steered]))
    es, en = LANGUAGES.index("es"), LANGUAGES.index("en")
    assert (
        logits[1, es] - logits[1, en] > logits[0, es] - logits[0, en]
    )  # a small step along a positive slope


def test_toward_language_by_attribution_uses_the_atlas_top_effects(res, audio) -> None:
    effect_FL = np.zeros((D_SAE, 2), np.float32)
    effect_FL[[10, 20, 30], 1] = [0.5, 2.0, 1.0]  # es
    effect_FL[20, 0] = 1.5  # en: feature 20 nets 0.5
    atlas = AtlasSteeringData(effects=LanguageEffects(["en", "es"], effect_FL))
    spec = SteeringSpec(
        toward_language="es", source_language="en", rank="attribution", n_features=10, max_new_tokens=4
    )
    result = steer(SteeringResources(res.bundle, res.sae, atlas=atlas, decoding=res.decoding), audio, spec)
    assert result.plan.selection == "atlas"
    assert [(f.id, f.effect) for f in result.plan.features_used] == [(30, 1.0), (10, 0.5), (20, 0.5)]
    assert result.plan.source_language == "en" and result.plan.target_language == "es"


def test_atlas_tables_are_read_for_steering(tmp_path) -> None:
    import duckdb

    from pipelines.steering.resources import read_atlas_steering_data, read_labels_and_presets
    from tests.fixtures.synthetic_atlas import write_synthetic_atlas

    atlas = write_synthetic_atlas(tmp_path / "atlas.duckdb", n_features=64, n_clips=8)
    data = read_atlas_steering_data(atlas, 64)
    con = duckdb.connect(str(atlas), read_only=True)
    mean_act = dict(con.execute("SELECT id, mean_act FROM features").fetchall())
    sql = "SELECT effect FROM feature_language_effects WHERE feature_id = 7 AND language = 'fr'"
    (fr_effect,) = con.execute(sql).fetchone()
    labels = dict(con.execute("SELECT id, label FROM features WHERE label <> ''").fetchall())
    types = dict(con.execute("SELECT id, label_type FROM features WHERE label_type <> ''").fetchall())
    np.testing.assert_allclose(data.typical_act_F, [mean_act[i] for i in range(64)], rtol=1e-6)
    assert data.effects.effect_FL[7, data.effects.languages.index("fr")] == pytest.approx(fr_effect)
    assert read_labels_and_presets(atlas)[0] == labels
    assert data.label_types == types and types  # "why these features" shows each one's type
    assert read_atlas_steering_data(atlas, 16).effects.effect_FL.shape == (16, len(data.effects.languages))
    assert read_atlas_steering_data(tmp_path / "none.duckdb", 64) == AtlasSteeringData()


def test_same_source_and_target_is_refused(res, audio) -> None:

    with pytest.raises(SteeringError, match="already"):
        steer(res, audio, SteeringSpec(toward_language="en", source_language="en", selection="clip"))


def write_language_run(root, d: int, seed: int = 0):
    """A run with activation shards over 3 English, 3 Spanish and 2 music clips, and its manifest."""
    rng = np.random.default_rng(seed)
    clips, acts, index = [], [], []
    for row, (lang, category) in enumerate(
        [("en", "speech")] * 3 + [("es", "speech")] * 3 + [("", "music")] * 2
    ):
        clips.append(Clip(id=f"c{row}", path=f"c{row}.flac", duration=1.0, category=category, language=lang))
        n = 5 + row
        shift = {"en": 1.0, "es": -1.0, "": 5.0}[lang]
        acts.append(rng.standard_normal((n, d)).astype(np.float32) + shift)
        index.append(np.stack([np.full(n, row), np.arange(n)], 1))
    corpus = root / "corpora" / "toy"
    write_manifest(corpus, clips)
    activations = root / "runs" / "toy" / "activations"
    meta = ActivationsMeta(model="tiny", layer=2, d_model=d, corpus="toy", fingerprint="fp")
    append_shard(activations, meta, np.concatenate(acts[:4]), np.concatenate(index[:4]))
    append_shard(activations, meta, np.concatenate(acts[4:]), np.concatenate(index[4:]))
    return corpus, activations, acts


def test_language_means_skip_held_out_clips_and_are_cached(data_root) -> None:
    corpus, activations, acts = write_language_run(data_root, d=6)
    cache = data_root / "runs" / "toy" / "steering" / "dom.npz"
    means = language_means(activations, corpus, exclude_rows={2}, cache=cache)
    assert means.languages == ["en", "es"] and list(means.counts_L) == [5 + 6, 8 + 9 + 10]
    np.testing.assert_allclose(
        means.means_LD[0], np.concatenate(acts[:2]).astype(np.float16).astype(np.float64).mean(0), rtol=1e-5
    )

    np.testing.assert_allclose(means.direction("en", "es"), means.means_LD[1] - means.means_LD[0])
    assert cache.exists()
    again = language_means(activations, corpus, exclude_rows={2}, cache=cache)
    assert again.fingerprint == means.fingerprint
    np.testing.assert_array_equal(again.means_LD, means.means_LD)
    other = language_means(activations, corpus, exclude_rows=set(), cache=cache)
    assert list(other.counts_L) == [5 + 6 + 7, 8 + 9 + 10]
    with pytest.raises(SteeringError, match="no 'fr' speech frames"):
        means.direction("en", "fr")


def test_difference_of_means_adds_the_normalised_mean_difference(res, audio, data_root) -> None:
    corpus, activations, _ = write_language_run(data_root, d=res.bundle.d_model)
    means = language_means(activations, corpus, set())
    result = steer(
        SteeringResources(res.bundle, res.sae, dom=lambda: means, decoding=res.decoding),
        audio,
        SteeringSpec(
            toward_language="es", source_language="en", method="dom", strength=0.4, max_new_tokens=4
        ),
    )
    direction = torch.as_tensor(means.direction("en", "es"))
    expected = result.hidden_3TD[0] + 0.4 * result.frame_norm * direction / direction.norm()
    torch.testing.assert_close(result.hidden_3TD[2], expected, atol=1e-4, rtol=1e-5)
    assert result.plan.features_used[0].id is None
    with pytest.raises(SteeringError, match="activations"):
        steer(res, audio, SteeringSpec(toward_language="es", source_language="en", method="dom"))


def test_intermediate_layer_edits_flow_through_the_rest_of_the_encoder(tiny, audio) -> None:
    """The general path (an SAE on layer 2, both edits in one batched encoder pass) against a plain
    reference: encode with the same edit installed by hand."""
    from pipelines.model.encoder import edit_layer, encode, features_for

    sae = random_sae(tiny.d_model, seed=1)
    res2 = SteeringResources(tiny, sae, layer=2, decoding=GREEDY)
    result = steer(res2, audio, SteeringSpec(features=[{"id": 3, "strength": 0.5}], max_new_tokens=4))
    clip = encode_clip(tiny, audio, layer=2)
    n = clip.n_frames
    delta_D = 0.5 * float(clip.site_TD.norm(dim=-1).mean()) * unit_rows(sae.W_dec[3:4])[0]

    def edit(h_BTD: torch.Tensor) -> torch.Tensor:
        out = h_BTD.clone()
        out[:, :n] += delta_D
        return out

    with edit_layer(tiny, 2, edit):
        reference = encode(tiny, features_for(tiny, [audio]))[0, :n]
    torch.testing.assert_close(result.hidden_3TD[2], reference, atol=1e-4, rtol=1e-4)
    torch.testing.assert_close(result.hidden_3TD[0], clip.final_BTD[0, :n])
    zero = steer(res2, audio, SteeringSpec(features=[{"id": 3, "strength": 0.0}], max_new_tokens=4))
    torch.testing.assert_close(zero.hidden_3TD[2], zero.hidden_3TD[0], atol=1e-5, rtol=1e-5)


def test_result_to_dict_is_json_ready(res, audio) -> None:
    result = steer(res, audio, SteeringSpec(features=[{"id": 4, "strength": 0.3}], max_new_tokens=4))
    payload = json.loads(json.dumps(result.to_dict()))
    assert set(payload) >= {"baseline", "reconstructed", "steered", "features_used", "diff", "warnings"}
    transcript = {"text", "language", "language_probs", "repetitive", "no_speech_prob", "avg_logprob"}
    transcript |= {"temperature", "no_speech_gated"}
    assert set(payload["baseline"]) == transcript
    assert 0 <= payload["baseline"]["no_speech_prob"] <= 1 and payload["baseline"]["avg_logprob"] <= 0
    for name in ("reconstructed", "steered"):
        assert set(payload[name]) == transcript | {"measures"}
        measures = payload[name]["measures"]
        assert measures["target"] is None and measures["succeeded_toward_target"] is None  # no target asked
        assert measures["token_flipped"] == (payload[name]["language"] != payload["baseline"]["language"])
        assert measures["cer_vs_baseline"] >= 0 and measures["length_ratio"] >= 0
    used = {"id": 4, "strength": 0.3, "label": "", "effect": None, "label_type": ""}
    assert payload["features_used"] == [used]


def test_cli_without_an_sae_names_the_command_to_run(data_root, tmp_path) -> None:
    from typer.testing import CliRunner

    from pipelines.audio import write_flac
    from pipelines.cli import app

    clip = tmp_path / "clip.flac"
    write_flac(clip, speechlike(1.0))
    out = CliRunner().invoke(app, ["steer", str(clip), "--feature", "1:0.5"])
    assert out.exit_code == 1
    assert "whisper-atlas train" in out.output
    bad = CliRunner().invoke(app, ["steer", str(clip), "--feature", "one"])
    assert bad.exit_code != 0 and "ID:STRENGTH" in bad.output


# --- the real model and the small real run (integration) ------------------------------------------------


@pytest.fixture(scope="module")
def real(repo_data_dir):
    """The small real run's resources: bundled Whisper base, its SAE, atlas and activations."""
    from pipelines.steering import load_steering_resources
    from tests.fixtures.real_run import real_run

    run = real_run(repo_data_dir, "activations", "sae", "atlas")
    return run, load_steering_resources(run)


def heldout_speech(run, language: str, limit: int) -> list[np.ndarray]:
    """Audio of up to `limit` speech clips in `language` that the SAE was never trained on: clips of the
    default corpus (which `make test` builds) that are not among the run's training clips."""
    from pipelines.activations import read_meta
    from pipelines.audio import decode_audio
    from pipelines.corpus.manifest import read_manifest
    from pipelines.paths import corpus_dir
    from pipelines.sae.train import read_metrics, run_clips

    clips = run_clips(read_meta(run.activations))
    trained = {clips[row].id for row in read_metrics(run)["split"]["train"]}
    corpus = corpus_dir("default")
    chosen = [
        c
        for c in read_manifest(corpus)
        if c.category == "speech" and c.language == language and c.id not in trained
    ]
    return [decode_audio(corpus / c.path) for c in chosen[:limit]]


@pytest.mark.integration
def test_real_model_identities(real) -> None:
    run, res = real
    (audio,) = heldout_speech(run, "en", 1)
    zero = steer(res, audio, SteeringSpec(features=[{"id": 0, "strength": 0.0}], max_new_tokens=48))
    assert torch.equal(zero.hidden_3TD[2], zero.hidden_3TD[0])
    assert zero.steered.tokens == zero.baseline.tokens and zero.steered.text == zero.baseline.text
    h_TD = encode_clip(res.bundle, audio, res.layer).site_TD
    x_hat = reconstruct(res.sae, h_TD)
    torch.testing.assert_close(x_hat + (h_TD - x_hat), h_TD)
    z_TF = res.sae.encode(h_TD[:1])
    ids = z_TF[0].nonzero().squeeze(1)[:4]
    assert torch.equal(clamp_latents(res.sae, h_TD[:1], ids, z_TF[0, ids]), h_TD[:1])


@pytest.mark.integration
def test_cli_steers_a_real_clip_toward_spanish(real, tmp_path) -> None:
    from typer.testing import CliRunner

    from pipelines.audio import write_flac
    from pipelines.cli import app

    run, _ = real
    (audio,) = heldout_speech(run, "en", 1)
    clip = tmp_path / "clip.flac"
    write_flac(clip, audio)
    argv = ["steer", str(clip), "--run", run.root.name, "--toward", "es", "--method", "dom", "--json"]
    out = CliRunner().invoke(app, argv)
    assert out.exit_code == 0, out.output
    payload = json.loads(out.stdout)
    assert payload["source_language"] == "en" and payload["target_language"] == "es"
    assert {"baseline", "reconstructed", "steered", "diff"} <= set(payload)
