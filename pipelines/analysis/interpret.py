"""What each feature detects, scored on clips the SAE never trained on, against two controls.

Every held-out frame (clips of held-out speakers and of held-out sentence groups, `pipelines.sae.split`)
carries annotations (`pipelines.annotate`: language, speaker, phone, word, position, loudness, pitch, ...).
For each live feature each annotation value is a hypothesis, scored by the balanced accuracy of the
hypothesis as a predictor of the feature firing (`pipelines.analysis.hypotheses`: detection scoring over
equal numbers of active and inactive frames, 0.5 = chance whatever the base rate). The label is the best
hypothesis; below the threshold, or on fewer than `MIN_CLIPS` held-out clips (one clip's frames share
every clip-level attribute, so a feature seen in one clip "detects" its language by construction), the
feature is unexplained.

The same code scores two controls, so the explained share of the real SAE can be read against them: a
random TopK SAE of the same width and k (how much the annotations explain of directions nobody learned),
and the real SAE's latents with the annotations shuffled across clips (how much explains by chance
alignment). Seed stability: each feature's best decoder cosine among the features of an SAE trained with
another seed on the same activations (Paulo and Belrose 2025; AudioSAE reports over half stable at 0.7).
"""

from __future__ import annotations

from collections.abc import Mapping
from pathlib import Path

import numpy as np
import torch

from pipelines.activations import iter_shards
from pipelines.analysis.hypotheses import (
    THRESHOLD,
    HypothesisCounts,
    HypothesisScores,
    explained_share,
    keep_frequent_values,
    random_topk_encoder,
    score_hypotheses,
    shuffled_across_clips,
    type_counts,
)
from pipelines.analysis.result import Interpretation
from pipelines.analysis.scan import LatentEncoder
from pipelines.analysis.taxonomy import UNEXPLAINED
from pipelines.annotate.attributes import ATTRIBUTE_TYPES
from pipelines.annotate.frames import FrameAnnotations
from pipelines.sae.base import SparseAutoencoder

MIN_CLIPS = 3
"""Held-out clips a feature must fire in to be scored (see the module docstring)."""
STABLE_COSINE = 0.7
"""Decoder cosine at which a feature counts as found again by another seed."""
CHUNK_FRAMES = 4096
SCORED_TYPES: dict[str, str | None] = {**ATTRIBUTE_TYPES, "source": None}
"""`source` is left out: for speech it names the corpus a voice came from (a coarser speaker)."""


def interpret(
    activations: Path,
    sae: SparseAutoencoder,
    annotations: FrameAnnotations,
    evaluation_rows: set[int],
    live_F: np.ndarray,
    *,
    other_seed: LatentEncoder | None = None,
    seed: int = 0,
) -> Interpretation:
    """Score every feature of `sae` on the frames of `evaluation_rows`, with both controls (the random SAE
    is a TopK SAE with `sae`'s k, also for ReLU SAEs, whose k is the configured target)."""
    held_N = np.isin(annotations.clip_row, np.fromiter(evaluation_rows, np.int64, len(evaluation_rows)))
    held = annotations.select(held_N)
    if len(np.unique(held.clip_row)) < 2:
        raise ValueError("interpretation needs held-out frames of at least two clips")
    codes, vocab = keep_frequent_values(held.codes, held.vocab)
    shuffled = shuffled_across_clips(codes, held.clip_row, seed)
    n_features, d_in = sae.W_dec.shape
    random_sae = random_topk_encoder(d_in, n_features, sae.cfg.k, seed, like=sae)
    sizes = {attribute: len(names) for attribute, names in vocab.items()}
    counts = {name: HypothesisCounts(n_features, sizes) for name in ("sae", "random_sae", "shuffled")}
    seen = {name: _ClipsSeen(n_features, held.clip_row) for name in ("sae", "random_sae")}
    for acts_ND, rows, positions in _held_frames(activations, annotations, held_N):
        x_ND = torch.from_numpy(acts_ND.astype(np.float32)).to(sae.W_dec.device)
        with torch.no_grad():
            latents_NF = sae.encode(x_ND).float().cpu()
            random_NF = random_sae.encode(x_ND.to(random_sae.W_dec.dtype)).float().cpu()
        part = {a: c[positions] for a, c in codes.items()}
        counts["sae"].add_dense(latents_NF, part)
        counts["shuffled"].add_dense(latents_NF, {a: c[positions] for a, c in shuffled.items()})
        counts["random_sae"].add_dense(random_NF, part)
        seen["sae"].add(latents_NF, rows)
        seen["random_sae"].add(random_NF, rows)
    scores = {name: score_hypotheses(c, vocab, SCORED_TYPES) for name, c in counts.items()}
    for name, latents in (("sae", "sae"), ("shuffled", "sae"), ("random_sae", "random_sae")):
        _unexplained_where(scores[name], seen[latents].clips_F < MIN_CLIPS)
    live = live_F.astype(bool)
    stability = decoder_stability(sae.W_dec, other_seed.W_dec) if other_seed is not None else None
    return _interpretation(scores, live, stability, len(held.clip_row), len(np.unique(held.clip_row)))


def decoder_stability(W_dec_FD: torch.Tensor, other_GD: torch.Tensor, block: int = 2048) -> np.ndarray:
    """(F,) each decoder row's largest cosine with any row of `other_GD` (computed in row blocks)."""
    other = torch.nn.functional.normalize(other_GD.detach().float().cpu(), dim=1)
    best = []
    for start in range(0, W_dec_FD.shape[0], block):
        rows = torch.nn.functional.normalize(W_dec_FD[start : start + block].detach().float().cpu(), dim=1)
        best.append((rows @ other.T).max(dim=1).values)
    return torch.cat(best).numpy().astype(np.float32)


class _ClipsSeen:
    """Per feature, the number of distinct held-out clips it fires in."""

    def __init__(self, n_features: int, clip_row: np.ndarray):
        self.clips, local = np.unique(clip_row, return_inverse=True)
        self.seen_FC = np.zeros((n_features, len(self.clips)), dtype=bool)

    def add(self, latents_NF: torch.Tensor, rows: np.ndarray) -> None:
        frame, feature = (latents_NF > 0).nonzero(as_tuple=True)
        clip = np.searchsorted(self.clips, rows[frame.numpy()])
        self.seen_FC[feature.numpy(), clip] = True

    @property
    def clips_F(self) -> np.ndarray:
        return self.seen_FC.sum(axis=1)


def _held_frames(activations: Path, annotations: FrameAnnotations, held_N: np.ndarray):
    """(acts, clip rows, positions in the held-out annotations) of the held-out frames, shard by shard, in
    chunks; checks that the annotations were made for these shards."""
    position_N = np.cumsum(held_N) - 1
    at = 0
    for acts, index in iter_shards(activations):
        n = len(index)
        if not np.array_equal(index[:, 0], annotations.clip_row[at : at + n]):
            raise ValueError("the frame annotations do not follow the activation shards: annotate again")
        mine = np.flatnonzero(held_N[at : at + n])
        for start in range(0, len(mine), CHUNK_FRAMES):
            chosen = mine[start : start + CHUNK_FRAMES]
            yield np.asarray(acts[chosen]), index[chosen, 0], position_N[at + chosen]
        at += n
    if at != len(held_N):
        raise ValueError("the frame annotations do not cover the activation shards: annotate again")


def _unexplained_where(scores: HypothesisScores, mask_F: np.ndarray) -> None:
    """Mark features seen in too few held-out clips as unexplained (their label stays as the best guess)."""
    for f in np.flatnonzero(mask_F & (scores.active_frames > 0)):
        scores.label_type[f] = UNEXPLAINED
        scores.explained[f] = False
        scores.note[f] = scores.note[f] or f"fires in fewer than {MIN_CLIPS} held-out clips"
        scores.language_vs_speaker[f] = np.nan


def _interpretation(
    scores: Mapping[str, HypothesisScores],
    live: np.ndarray,
    stability: np.ndarray | None,
    heldout_frames: int,
    heldout_clips: int,
) -> Interpretation:
    real = scores["sae"]
    n_features = len(real.label)
    label_type = [t if live[f] else "" for f, t in enumerate(real.label_type)]
    stable_share = (
        float((stability[live] >= STABLE_COSINE).mean()) if stability is not None and live.any() else None
    )
    summary = {
        "threshold": THRESHOLD,
        "heldout_frames": heldout_frames,
        "heldout_clips": heldout_clips,
        "min_clips": MIN_CLIPS,
        "counts": type_counts(real, live),
        "control_counts": {name: type_counts(scores[name], live) for name in ("random_sae", "shuffled")},
        "explained_share": {name: explained_share(s, live) for name, s in scores.items()},
        "stable_share": stable_share,
        "stable_cosine": STABLE_COSINE,
    }
    return Interpretation(
        label=list(real.label),
        label_type=label_type,
        label_score=real.label_score,
        label_precision=real.label_precision,
        label_recall=real.label_recall,
        language_vs_speaker=real.language_vs_speaker,
        runner_ups=real.runner_ups,
        stability=stability if stability is not None else np.full(n_features, np.nan, np.float32),
        summary=summary,
    )
