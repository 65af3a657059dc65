"""Spliced check: CTranslate2 decoding of the encoder states vs transformers' generate, same clips, same SAE.

`spliced_eval` (what `whisper-atlas train` runs on held-out clips) on N speech clips of the default corpus
(the first `--per-language` clips with a reference transcript in each language), once per decoder:

- `ct2`: one batched CTranslate2 greedy decode of the clips' original and spliced encoder states (4 clips,
  8 windows, a call) and CTranslate2's `detect_language` on them, the default;
- `transformers`: transformers' greedy `generate` per clip (its two windows) and `language_logits`, the
  reference implementation.

Both run the same transformers encoder (timed apart as `encode`: the splice needs its hooks). The SAE is
`--sae` (a SAELens folder, e.g. data/runs/default/sae) or, by default, a TopK SAE (1,024 latents, k 16,
400 Adam steps) fitted here on the clips' own encoder states at the layer: FVU ~0.11 on 28 clips, about
a trained SAE's held-out FVU, so the splice changes some transcripts (as in
tests/integration/test_spliced_real.py).
Printed: wall times and their ratio, and agreement (texts equal, language IDs equal, CER of each path).

    .venv/bin/python benchmarks/spliced_bench.py [--per-language 4] [--max-seconds 12] [--sae FOLDER]
"""

from __future__ import annotations

import argparse
import os
import statistics
import time
from pathlib import Path

import torch

from pipelines.audio import decode_audio
from pipelines.corpus.manifest import SPEECH, Clip, read_manifest
from pipelines.model.align import load_fast
from pipelines.model.encoder import encode, features_for, real_frames
from pipelines.model.loader import load_whisper
from pipelines.paths import corpus_dir
from pipelines.sae import load_sae
from pipelines.sae.evaluate import spliced_eval
from tests.fixtures.tiny_sae import fit_sae


def chosen_clips(per_language: int, max_seconds: float) -> list[Clip]:
    by_language: dict[str, list[Clip]] = {}
    for clip in read_manifest(corpus_dir()):
        if clip.category == SPEECH and clip.transcript and clip.duration <= max_seconds:
            by_language.setdefault(clip.language, []).append(clip)
    return [clip for group in by_language.values() for clip in group[:per_language]]


def load(seconds: float) -> str:
    return f"load {os.getloadavg()[0]:.1f}, {seconds:.0f} s"


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--per-language", type=int, default=4)
    parser.add_argument("--max-seconds", type=float, default=12.0)
    parser.add_argument("--layer", type=int, default=None, help="encoder layer (default N, the output)")
    parser.add_argument("--sae", type=Path, default=None, help="SAELens folder (default: fit one here)")
    parser.add_argument("--max-new-tokens", type=int, default=96)
    args = parser.parse_args()
    started = time.perf_counter()
    bundle = load_whisper("bundled:whisper-base", device="cpu")
    fast = load_fast(bundle)
    layer = bundle.n_layers if args.layer is None else args.layer
    clips = chosen_clips(args.per_language, args.max_seconds)
    if args.sae is not None:
        sae, source = load_sae(args.sae, bundle.device), str(args.sae)
    else:
        acts = []
        for first in range(0, len(clips), 4):
            audios = [decode_audio(corpus_dir() / c.path) for c in clips[first : first + 4]]
            hidden_BTD = encode(bundle, features_for(bundle, audios), layer=layer)
            acts += [hidden_BTD[i, : real_frames(len(a))] for i, a in enumerate(audios)]
        acts_ND = torch.cat(acts)
        sae = fit_sae(acts_ND, steps=400)
        with torch.no_grad():
            error = (sae(acts_ND).x_hat_BD - acts_ND).pow(2).sum()
        fvu = float(error / (acts_ND - acts_ND.mean(0)).pow(2).sum())
        source = f"TopK 1024/k16 fitted on the clips' {len(acts_ND)} frames (FVU {fvu:.3f})"
    print(f"{len(clips)} clips ({args.per_language} per language, <= {args.max_seconds} s), layer {layer}")
    print(f"  SAE: {source}; {load(time.perf_counter() - started)}")
    results, wall = {}, {}
    for decoder in ("ct2", "transformers"):
        began = time.perf_counter()
        results[decoder] = spliced_eval(
            bundle,
            sae,
            clips,
            corpus_dir(),
            layer,
            max_clips=len(clips),
            max_new_tokens=args.max_new_tokens,
            decoder=decoder,
            fast=fast,
        )
        wall[decoder] = time.perf_counter() - began
        spent = results[decoder]["spliced_seconds"]
        print(
            f"  {decoder:>12}: {wall[decoder]:.1f} s in all, encode {spent['encode']:.1f} s, decode "
            f"{spent['decode']:.1f} s ({spent['decode'] / len(clips):.2f} s a clip); {load(wall[decoder])}"
        )
    ours, theirs = results["ct2"], results["transformers"]
    decode = theirs["spliced_seconds"]["decode"] / ours["spliced_seconds"]["decode"]
    print(
        f"  transformers / ct2: decode {decode:.1f}x, whole check {wall['transformers'] / wall['ct2']:.1f}x"
    )
    pairs = list(zip(ours["per_clip"], theirs["per_clip"]))
    n = len(pairs)
    for kind in ("original", "spliced"):
        same = sum(a[f"{kind}_text"] == b[f"{kind}_text"] for a, b in pairs)
        lid = sum(a[f"{kind}_lid"] == b[f"{kind}_lid"] for a, b in pairs)
        gap = statistics.fmean(abs(a[f"{kind}_cer"] - b[f"{kind}_cer"]) for a, b in pairs)
        print(
            f"  {kind:>8}: texts equal {same}/{n}, language IDs equal {lid}/{n}; CER "
            f"{ours[f'{kind}_cer']:.4f} (ct2) vs {theirs[f'{kind}_cer']:.4f} (transformers), "
            f"mean |per-clip difference| {gap:.4f}"
        )
    print(f"  the splice changes {n - theirs['identical_text']}/{n} transcripts (transformers)")


if __name__ == "__main__":
    main()
