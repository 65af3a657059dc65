"""Labels chosen on one half of the held-out clips and scored on the other: the atlas's explained share
without selection on the scored clips.

`analyze` chooses each feature's label as the best of a few thousand hypotheses and reports its score on
the same held-out clips, so its scores carry the maximum's optimism (the controls go through the same
maximum, which keeps the comparison fair but not the absolute numbers). Here the run's held-out clips are
split at random into halves A and B: labels are chosen on A (`score_hypotheses`, the threshold and the
minimum of held-out clips as in `pipelines.analysis.interpret`) and a feature counts as explained only if
its A-label also scores >= the threshold on B, in >= the minimum of B clips. Same for the random-SAE and
the shuffled-annotation controls. One line per control and seed.

    .venv/bin/python benchmarks/label_holdout.py [--run default] [--seeds 0 1 2]
"""

from __future__ import annotations

import argparse

import numpy as np
import torch

from pipelines.activations import load_all
from pipelines.analysis.hypotheses import (
    THRESHOLD,
    HypothesisCounts,
    balanced_accuracy,
    keep_frequent_values,
    random_topk_encoder,
    score_hypotheses,
    shuffled_across_clips,
)
from pipelines.analysis.interpret import MIN_CLIPS, SCORED_TYPES
from pipelines.annotate.frames import FrameAnnotations
from pipelines.paths import RunPaths
from pipelines.sae.saelens import load_sae
from pipelines.sae.split import read_split


def half_counts(
    latents_NF: torch.Tensor, codes: dict, clip_row: np.ndarray, mask: np.ndarray, sizes: dict
) -> tuple[HypothesisCounts, np.ndarray]:
    """Counts over the frames in `mask`, and per feature the number of distinct clips it fires in there."""
    chosen = torch.from_numpy(mask)
    counts = HypothesisCounts(latents_NF.shape[1], sizes)
    counts.add_dense(latents_NF[chosen], {a: v[mask] for a, v in codes.items()})
    active_NF = (latents_NF[chosen] > 0).numpy()
    rows = clip_row[mask]
    clips_F = np.array([len(np.unique(rows[active_NF[:, f]])) for f in range(active_NF.shape[1])])
    return counts, clips_F


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--run", default="default")
    parser.add_argument("--seeds", type=int, nargs="+", default=[0, 1, 2])
    args = parser.parse_args()
    run = RunPaths.named(args.run)
    sae, split = load_sae(run.sae), read_split(run.sae)
    assert split is not None, "the run's metrics.json records no split"
    annotations = FrameAnnotations.load(run.analysis)
    acts_ND, index_N2 = load_all(run.activations)
    held_N = np.isin(annotations.clip_row, split.evaluation)
    held = annotations.select(held_N)
    x_ND = torch.from_numpy(acts_ND[held_N].astype(np.float32))
    codes, vocab = keep_frequent_values(held.codes, held.vocab)
    sizes = {a: len(v) for a, v in vocab.items()}
    random_sae = random_topk_encoder(sae.d_in, sae.d_sae, sae.cfg.k, 0, like=sae)
    with torch.no_grad():
        trained_NF, random_NF = sae.encode(x_ND).float(), random_sae.encode(x_ND).float()
    controls = {
        "sae": (trained_NF, codes),
        "random_sae": (random_NF, codes),
        "shuffled": (trained_NF, shuffled_across_clips(codes, held.clip_row, 0)),
    }
    clips = np.unique(held.clip_row)
    for seed in args.seeds:
        order = np.random.default_rng(seed).permutation(clips)
        in_a = np.isin(held.clip_row, order[: len(order) // 2])
        for name, (latents_NF, control_codes) in controls.items():
            counts_a, clips_a = half_counts(latents_NF, control_codes, held.clip_row, in_a, sizes)
            counts_b, clips_b = half_counts(latents_NF, control_codes, held.clip_row, ~in_a, sizes)
            scores = score_hypotheses(counts_a, vocab, SCORED_TYPES)
            live = (latents_NF > 0).any(0).numpy()
            chosen = scores.explained & (clips_a >= MIN_CLIPS) & live
            score_b = np.full(sae.d_sae, np.nan)
            for f in np.flatnonzero(chosen):
                attribute, j = (
                    scores.label_attribute[f],
                    vocab[scores.label_attribute[f]].index(scores.label_value[f]),
                )
                score_b[f] = balanced_accuracy(
                    counts_b.active_value_FV[attribute][f : f + 1, j : j + 1],
                    counts_b.active_F[f : f + 1],
                    counts_b.value_frames_V[attribute][j : j + 1],
                    counts_b.n_frames,
                )[0, 0]
            kept = chosen & (score_b >= THRESHOLD) & (clips_b >= MIN_CLIPS)
            median_b = float(np.nanmedian(score_b)) if chosen.any() else float("nan")
            print(
                f"seed {seed} {name:>10}: {len(clips)} held-out clips; explained on A "
                f"{chosen.sum() / live.sum():.3f}, and still on B {kept.sum() / live.sum():.3f} of "
                f"{live.sum()} live (median B score of the A-explained {median_b:.3f})"
            )


if __name__ == "__main__":
    main()
