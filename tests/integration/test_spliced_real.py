"""Spliced evaluation on the fast path against the reference path: real Whisper base, real corpus speech.

`spliced_eval` decodes the same encoder states (transformers' encoder, unmodified and with an SAE spliced
in) two ways: CTranslate2's batched greedy decode (the default) and transformers' `generate` (the reference).
The SAE is a real TopK SAE (1,024 latents, k 16) fitted here on the clips' own final encoder output
(`fit_sae`, 100 Adam steps: FVU ~0.15 there, about a trained SAE's held-out FVU), so the splice changes
some decodes and the comparison covers states the model is less sure of. (Fitted on a few clips only, it
reconstructs unseen ones so badly (FVU ~0.6) that every spliced decode loops to the token cap.)

Agreement asked for: identical texts and language IDs for the original states; for the spliced states,
identical texts on all clips but one and mean CER within 0.02. Why that margin: both decoders read the very
same float32 tensor and differ only in arithmetic order (~1e-6 relative on the logits), which can flip a
greedy argmax only at a near-tie; one flipped clip rewrites at most its own text, and on these 14 clips a
clip's CER change of up to 0.28 moves the mean by 0.02. (Observed on this corpus: no difference at all.)
"""

from __future__ import annotations

import statistics
from pathlib import Path

import ctranslate2
import numpy as np
import pytest
import torch

from pipelines.audio import decode_audio
from pipelines.corpus.manifest import SPEECH, Clip, read_manifest
from pipelines.model.align import FastWhisper, load_fast
from pipelines.model.encoder import encode, features_for, real_frames
from pipelines.model.loader import WhisperBundle, load_whisper
from pipelines.sae.evaluate import spliced_eval
from tests.fixtures.tiny_sae import fit_sae

pytestmark = pytest.mark.integration

PER_LANGUAGE = 2
MAX_SECONDS = 10.0
CER_MARGIN = 0.02


@pytest.fixture(scope="module")
def models() -> tuple[WhisperBundle, FastWhisper]:
    base = load_whisper("bundled:whisper-base", device="cpu")
    return base, load_fast(base)


@pytest.fixture(scope="module")
def clips(corpus: Path) -> list[Clip]:
    by_language: dict[str, list[Clip]] = {}
    for clip in read_manifest(corpus):
        if clip.category == SPEECH and clip.transcript and clip.duration <= MAX_SECONDS:
            by_language.setdefault(clip.language, []).append(clip)
    return [clip for group in by_language.values() for clip in group[:PER_LANGUAGE]]


@pytest.fixture(scope="module")
def evaluated(models, clips: list[Clip], corpus: Path) -> dict[str, dict]:
    base, fast = models
    acts = []
    for first in range(0, len(clips), 4):
        audios = [decode_audio(corpus / c.path) for c in clips[first : first + 4]]
        hidden_BTD = encode(base, features_for(base, audios))
        acts += [hidden_BTD[i, : real_frames(len(a))] for i, a in enumerate(audios)]
    sae = fit_sae(torch.cat(acts), steps=100)
    return {
        decoder: spliced_eval(base, sae, clips, corpus, base.n_layers, decoder=decoder, fast=fast)
        for decoder in ("ct2", "transformers")
    }


def test_ctranslate2_reads_the_transformers_encoder_output_as_its_own(models, clips, corpus) -> None:
    """transformers' `last_hidden_state` (what `encode` returns) ends with the encoder's final layer norm,
    as CTranslate2's encoder output does: the decoder's cross-attention input, the same tensor."""
    base, fast = models
    feats_BMT = features_for(base, [decode_audio(corpus / c.path) for c in clips[:2]])
    before_norm: list[torch.Tensor] = []
    handle = base.model.model.encoder.layer_norm.register_forward_hook(
        lambda module, args, out: before_norm.append(args[0])
    )
    try:
        ours = encode(base, feats_BMT).numpy()
    finally:
        handle.remove()
    theirs = np.asarray(fast.model.encode(ctranslate2.StorageView.from_array(feats_BMT.numpy()), to_cpu=True))
    assert theirs.shape == ours.shape == (2, 1500, base.d_model)
    assert np.abs(theirs - ours).max() < 0.02  # float noise (3e-3 seen; the states' rms is ~1.5)
    assert np.abs(theirs - before_norm[0].numpy()).max() > 1.0  # not the last block's un-normed output


def test_original_states_decode_to_the_same_texts(evaluated) -> None:
    fast, reference = evaluated["ct2"], evaluated["transformers"]
    assert fast["eval_clips"] == reference["eval_clips"] >= 12
    for ours, theirs in zip(fast["per_clip"], reference["per_clip"]):
        assert ours["clip"] == theirs["clip"]
        assert ours["original_text"] == theirs["original_text"], ours["clip"]
        assert ours["original_lid"] == theirs["original_lid"], ours["clip"]
    assert fast["original_cer"] == pytest.approx(reference["original_cer"])


def test_spliced_states_agree_within_noise(evaluated) -> None:
    fast, reference = evaluated["ct2"], evaluated["transformers"]
    n = fast["eval_clips"]
    assert reference["identical_text"] < n, "the SAE changes no decode: nothing spliced is compared"
    same = sum(
        a["spliced_text"] == b["spliced_text"] for a, b in zip(fast["per_clip"], reference["per_clip"])
    )
    lid = sum(a["spliced_lid"] == b["spliced_lid"] for a, b in zip(fast["per_clip"], reference["per_clip"]))
    gap = abs(fast["spliced_cer"] - reference["spliced_cer"])
    print(
        f"{n} clips: spliced texts equal {same}/{n}, language IDs {lid}/{n}; spliced CER "
        f"{fast['spliced_cer']:.4f} (ct2) vs {reference['spliced_cer']:.4f} (transformers); original CER "
        f"{reference['original_cer']:.4f}; decode {fast['spliced_seconds']['decode']:.1f} s vs "
        f"{reference['spliced_seconds']['decode']:.1f} s"
    )
    assert same >= n - 1 and lid >= n - 1
    per_clip = [
        abs(a["spliced_cer"] - b["spliced_cer"]) for a, b in zip(fast["per_clip"], reference["per_clip"])
    ]
    assert gap <= statistics.fmean(per_clip) <= CER_MARGIN
