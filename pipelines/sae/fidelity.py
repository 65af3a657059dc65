"""Spliced fidelity of a trained SAE on each held-out set (new voices; known voices, new sentences).

The headline is how far Whisper's transcript moves when the SAE's reconstruction replaces the encoder output:
`divergence` = CER of the spliced transcript against the untouched one (not against the reference, so
Whisper's own errors do not count), summarised by its median with a bootstrap interval over clips, and the
share of clips where it exceeds 0.5 (the decode loops or says something else). CER against the reference
and language-ID agreement come from `pipelines.sae.evaluate.spliced_eval`.
"""

from __future__ import annotations

import statistics
from pathlib import Path

import numpy as np

from pipelines.corpus.manifest import Clip
from pipelines.sae.base import SparseAutoencoder
from pipelines.sae.evaluate import cer, spliced_eval

EVALUATION_SETS = ("speaker", "group")
LOOP_DIVERGENCE = 0.5
"""A spliced transcript this far from the untouched one has lost it (loops, another sentence)."""
BOOTSTRAP_DRAWS = 2000


def spliced_fidelity(
    bundle,
    sae: SparseAutoencoder,
    clips: list[Clip],
    corpus: Path,
    layer: int,
    split: dict,
    *,
    max_clips: int,
    seed: int = 0,
) -> dict[str, dict]:
    """`spliced_eval` plus divergence on the clips of each evaluation set of `split` (`Split.to_dict()`)."""
    results = {}
    for name in EVALUATION_SETS:
        chosen = [clips[row] for row in split.get(name, []) if row < len(clips)]
        result = spliced_eval(bundle, sae, chosen, corpus, layer, max_clips=max_clips)
        results[name] = {**result, **divergence_summary(result["per_clip"], seed)}
    return results


def divergence_summary(per_clip: list[dict], seed: int = 0) -> dict:
    """Median divergence, its 90% bootstrap interval over clips, and the share of clips that lose it."""
    for row in per_clip:
        row["divergence"] = cer(row["original_text"], row["spliced_text"])
    values = np.array([row["divergence"] for row in per_clip], dtype=np.float64)
    if not len(values):
        return {"divergence_median": None, "divergence_interval": None, "loop_share": None}
    draws = np.random.default_rng(seed).choice(values, size=(BOOTSTRAP_DRAWS, len(values)))
    low, high = np.quantile(np.median(draws, axis=1), [0.05, 0.95])
    return {
        "divergence_median": statistics.median(values.tolist()),
        "divergence_interval": [float(low), float(high)],
        "loop_share": float((values > LOOP_DIVERGENCE).mean()),
        "divergence_definition": "CER of the spliced transcript against the untouched one (same decoding)",
    }
