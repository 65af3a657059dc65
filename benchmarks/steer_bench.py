"""Steering latency against one plain transcription of the same clip, measured in the same run.

Target: steering a 10 s clip returns baseline and steered results in <= 2.5x the time of one plain
transcription. A steering request (pipelines.steering.steer) runs the encoder ONCE, the SAE on the real
frames, and ONE batched greedy decode of three states (baseline, SAE-reconstructed, steered); the plain
transcription (pipelines.model.transcribe.transcribe) is encoder + one decode. Both decode as Whisper does
(greedy, then a seeded re-decode at rising temperature for each transcript that loops or is improbable), so
a steered transcript that loops pays its fallback re-decodes here. Both get the same token budget. The clip is
real corpus speech (English clips of the run's corpus, concatenated to 10 s).

Runs interleave (plain, steer, plain, steer, ...) so slow phases of a shared machine hit both; we report
medians and the ratio of medians, per steering kind: one SAE feature added, and the run's presets
`toward_<target>` and `suppress_hallucination` at their default strengths (`whisper-atlas calibrate`). A
steered decode that loops stops at 1.5x + 8 tokens of the baseline's length (`OutrunFirstRow`), and so do
its fallback re-decodes.

    python benchmarks/steer_bench.py [--run default] [--seconds 10] [--repeats 5] [--language en --toward es]
"""

from __future__ import annotations

import argparse
import json
import statistics
import time

import numpy as np
import torch

from pipelines.activations import read_meta
from pipelines.audio import SAMPLE_RATE, decode_audio
from pipelines.corpus.manifest import SPEECH, read_manifest
from pipelines.model.transcribe import transcribe
from pipelines.paths import RunPaths, corpus_dir
from pipelines.steering import SteeringSpec, encode_clip, load_steering_resources, steer


def corpus_clip(run: RunPaths, language: str, seconds: float) -> tuple[np.ndarray, list[str]]:
    """`seconds` of `language` speech from the run's corpus: whole clips, 0.2 s apart, cut to length."""
    meta = read_meta(run.activations)
    if meta is None:
        raise SystemExit(f"no activations in {run.activations}: run `whisper-atlas demo` first")
    corpus = corpus_dir(meta.corpus)
    gap = np.zeros(int(0.2 * SAMPLE_RATE), np.float32)
    parts, used, total = [], [], 0
    for clip in read_manifest(corpus):
        if clip.category != SPEECH or clip.language != language:
            continue
        audio = decode_audio(corpus / clip.path)
        parts += [audio, gap]
        used.append(clip.id)
        total += len(audio) + len(gap)
        if total >= seconds * SAMPLE_RATE:
            break
    if total < seconds * SAMPLE_RATE:
        raise SystemExit(f"the corpus has under {seconds} s of {language!r} speech")
    return np.concatenate(parts)[: int(seconds * SAMPLE_RATE)], used


def timed(fn) -> tuple[float, object]:
    start = time.perf_counter()
    out = fn()
    return time.perf_counter() - start, out


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--run", default="default")
    parser.add_argument("--seconds", type=float, default=10.0)
    parser.add_argument("--repeats", type=int, default=5)
    parser.add_argument("--language", default="en")
    parser.add_argument("--toward", default="es")
    parser.add_argument("--max-new-tokens", type=int, default=96)
    parser.add_argument("--json", action="store_true", help="also print the results as one JSON line")
    args = parser.parse_args()

    run = RunPaths.named(args.run)
    audio, clip_ids = corpus_clip(run, args.language, args.seconds)
    res = load_steering_resources(run)
    bundle, tokens = res.bundle, args.max_new_tokens
    with torch.no_grad():
        latents = res.sae.encode(encode_clip(bundle, audio, res.layer).site_TD)
    strongest = int(latents.sum(0).argmax())
    kinds = {f"feature {strongest} add 0.3": SteeringSpec(features=[{"id": strongest, "strength": 0.3}])}
    for preset_id in (f"toward_{args.toward}", "suppress_hallucination"):  # the atlas's presets (calibrate)
        if preset_id in res.presets:
            preset = res.presets[preset_id]
            kinds[f"preset {preset_id} at {preset.default_strength}"] = preset.steering_spec()
    for spec in kinds.values():
        spec.max_new_tokens = tokens
    print(
        f"clip: {args.seconds:.0f} s of {args.language} speech from {len(clip_ids)} corpus clips; model "
        f"{bundle.name}, SAE {res.sae.d_sae} latents at layer {res.layer}; {torch.get_num_threads()} threads"
    )

    timed(lambda: transcribe(bundle, audio, max_new_tokens=tokens))  # warm-up (allocators, caches)
    results = []
    for name, spec in kinds.items():
        timed(lambda: steer(res, audio, spec))
        plain_s, steer_s = [], []
        for _ in range(args.repeats):
            seconds, plain = timed(lambda: transcribe(bundle, audio, max_new_tokens=tokens))
            plain_s.append(seconds)
            seconds, result = timed(lambda: steer(res, audio, spec))
            steer_s.append(seconds)
        longest = max(len(t.tokens) for t in (result.baseline, result.reconstructed, result.steered))
        row = {
            "kind": name,
            "plain_median_s": statistics.median(plain_s),
            "steer_median_s": statistics.median(steer_s),
            "ratio": statistics.median(steer_s) / statistics.median(plain_s),
            "plain_tokens": len(plain.tokens),
            "longest_tokens": longest,
            "baseline": result.baseline.text,
            "steered": result.steered.text,
            "steered_language": result.steered.language,
            "steered_repetitive": result.steered.repetitive,
        }
        results.append(row)
        print(
            f"\n{name}: plain {row['plain_median_s']:.2f} s, steer {row['steer_median_s']:.2f} s, "
            f"ratio {row['ratio']:.2f}x (target <= 2.5x); tokens plain {row['plain_tokens']}, longest of 3 "
            f"{longest}"
        )
        print(
            f"  baseline: {row['baseline']!r}\n  steered ({row['steered_language']}"
            f"{', degenerate' if row['steered_repetitive'] else ''}): {row['steered']!r}"
        )
    if args.json:
        print(json.dumps(results))


if __name__ == "__main__":
    main()
