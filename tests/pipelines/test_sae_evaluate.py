"""Spliced evaluation: CER maths, the splice edit (real frames only), end-to-end runs on tiny Whisper with
the CTranslate2 decoder and the transformers reference (real model: tests/integration/test_spliced_real.py).
"""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
import torch

from pipelines.corpus.manifest import Clip
from pipelines.sae import SAEConfig, build_sae
from pipelines.sae.evaluate import cer, eligible_clips, levenshtein, normalise_text, splice, spliced_states
from tests.fixtures.sae_data import one_thread  # noqa: F401  (fixture)

pytestmark = pytest.mark.usefixtures("one_thread")


def test_levenshtein_and_cer() -> None:
    assert levenshtein("kitten", "sitting") == 3
    assert levenshtein("", "abc") == 3 and levenshtein("abc", "abc") == 0
    assert normalise_text("  Hello,   WORLD!  ¿Qué?") == "hello world qué"
    assert cer("Hello, world.", "hello world") == 0.0
    assert cer("abcd", "abxd") == pytest.approx(0.25)
    assert cer("ab", "") == 1.0 and cer("", "x") == 1.0


def test_eligible_clips_are_speech_in_known_languages_taken_round_robin() -> None:
    clips = [
        Clip(id="a", path="a.flac", duration=3, language="en", transcript="hi"),
        Clip(id="b", path="b.flac", duration=3, language="en", transcript=""),
        Clip(id="c", path="c.flac", duration=3, category="music"),
        Clip(id="d", path="d.flac", duration=3, language="xx", transcript="hi"),
        Clip(id="e", path="e.flac", duration=45, language="en", transcript="hi"),
        Clip(id="f", path="f.flac", duration=3, language="es", transcript="hola"),
    ]
    # b has no reference: divergence needs none (its CER against a reference is left out)
    assert [c.id for c in eligible_clips(clips, ["en", "es"], 10)] == ["a", "f", "b"]
    assert [c.id for c in eligible_clips(clips, ["en", "es"], 2)] == ["a", "f"]  # every language first


def test_cer_summaries_skip_clips_without_a_reference() -> None:
    from pipelines.sae.evaluate import summarise

    rows = [
        {
            "original_cer": 0.1,
            "spliced_cer": 0.3,
            "original_text": "a",
            "spliced_text": "b",
            "language": "en",
            "original_lid": "en",
            "spliced_lid": "en",
        },
        {
            "original_cer": None,
            "spliced_cer": None,
            "original_text": "c",
            "spliced_text": "c",
            "language": "es",
            "original_lid": "es",
            "spliced_lid": "en",
        },
    ]
    summary = summarise(rows)
    assert summary["eval_clips"] == 2 and summary["reference_clips"] == 1
    assert summary["spliced_cer"] == pytest.approx(0.3) and summary["lid_agreement"] == 0.5


def test_splice_replaces_real_frames_only() -> None:
    sae = build_sae(SAEConfig(d_in=8, d_sae=32, k=4)).eval()
    hidden_BTD = torch.randn(2, 10, 8)
    mask_BT = torch.zeros(2, 10, dtype=torch.bool)
    mask_BT[0, :3] = True
    mask_BT[1, :7] = True
    out_BTD = splice(sae, mask_BT)(hidden_BTD)
    assert torch.equal(out_BTD[~mask_BT], hidden_BTD[~mask_BT])
    assert torch.allclose(out_BTD[mask_BT], sae(hidden_BTD[mask_BT]).x_hat_BD)


def test_splicing_the_output_equals_the_hook_on_the_final_layer_norm() -> None:
    from pipelines.model.encoder import edit_layer, encode, features_for
    from tests.fixtures.tiny_whisper import tiny_whisper

    bundle = tiny_whisper(seed=0)
    sae = build_sae(SAEConfig(d_in=bundle.d_model, d_sae=4 * bundle.d_model, k=8)).eval()
    audios = [
        0.1 * np.random.default_rng(i).standard_normal(16000 * (i + 1)).astype(np.float32) for i in (0, 1)
    ]
    feats, frames = features_for(bundle, audios), [50, 100]
    original, spliced = spliced_states(bundle, sae, bundle.n_layers, feats, frames)
    mask_BT = torch.zeros(2, 1500, dtype=torch.bool)
    mask_BT[0, :50], mask_BT[1, :100] = True, True
    with edit_layer(bundle, bundle.n_layers, splice(sae, mask_BT)):
        hooked = encode(bundle, feats)
    assert torch.equal(original, encode(bundle, feats))
    assert torch.equal(spliced, hooked)  # one encoder pass fewer, the same tensor
    assert torch.equal(spliced[~mask_BT], original[~mask_BT])


def test_spliced_eval_on_tiny_whisper(tmp_path: Path) -> None:
    tiny = pytest.importorskip("tests.fixtures.tiny_whisper")
    from pipelines.audio import write_flac
    from pipelines.model.align import load_fast
    from pipelines.sae.evaluate import spliced_eval

    bundle = tiny.tiny_whisper(seed=0)
    fast = load_fast(bundle)
    t = np.arange(16000 * 2) / 16000
    clips = []
    for i, (lang, text) in enumerate([("en", "hello there"), ("es", "hola amigo"), ("fr", "salut")]):
        write_flac(tmp_path / f"{i}.flac", (0.1 * np.sin(2 * np.pi * (220 + 110 * i) * t)).astype(np.float32))
        clips.append(Clip(id=f"c{i}", path=f"{i}.flac", duration=2.0, language=lang, transcript=text))
    sae = build_sae(SAEConfig(d_in=bundle.d_model, d_sae=4 * bundle.d_model, k=8)).eval()
    for layer in (bundle.n_layers, 1):
        results = {
            decoder: spliced_eval(
                bundle,
                sae,
                clips,
                tmp_path,
                layer,
                max_new_tokens=8,
                decoder=decoder,
                batch_clips=2,
                fast=fast,
            )
            for decoder in ("ct2", "transformers")
        }
        for decoder, result in results.items():
            assert result["eval_clips"] == 3 and len(result["per_clip"]) == 3
            assert result["original_cer"] >= 0 and result["spliced_cer"] >= 0
            assert 0 <= result["lid_agreement"] <= 1
            assert result["spliced_decoder"] == decoder and result["spliced_seconds"]["decode"] > 0
        # The same encoder states decoded two ways (a random model: loops of one token, no near-ties).
        assert results["ct2"]["per_clip"] == results["transformers"]["per_clip"]
    empty = spliced_eval(bundle, sae, [], tmp_path, bundle.n_layers)
    assert empty["eval_clips"] == 0 and empty["spliced_cer"] is None
    with pytest.raises(ValueError, match="decoder"):
        spliced_eval(bundle, sae, clips, tmp_path, 1, decoder="whisper.cpp")  # type: ignore[arg-type]
