"""Steering on held-out clips: each method beside its controls toward es and fr, and silencing beside
Whisper's no-speech gate (pipelines/steering/heldout.py). Needs a calibrated, built run.

    .venv/bin/python benchmarks/steering_heldout.py --run default --corpus default

Prints one table per target (success = text reads as the target and does not loop) and the silencing rates,
and writes them to data/runs/<run>/steering/heldout.json.
"""

from __future__ import annotations

import argparse
import json
import time
from typing import Any

import torch

from pipelines.corpus.manifest import read_manifest
from pipelines.paths import RunPaths, corpus_dir
from pipelines.steering import load_steering_resources
from pipelines.steering.calibrate import SILENCE_STRENGTHS
from pipelines.steering.heldout import compare_methods, compare_silencing, heldout_clips

STRENGTHS = [0.3, 0.6, 1.0]


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--run", default="default")
    parser.add_argument("--corpus", default="default")
    parser.add_argument("--targets", default="es,fr", help="comma-separated; '' skips the language tables")
    parser.add_argument("--per-language", type=int, default=1)
    args = parser.parse_args()
    torch.set_num_threads(2)
    started = time.time()
    run = RunPaths.named(args.run)
    res = load_steering_resources(run)
    corpus = corpus_dir(args.corpus)
    heldout = heldout_clips(run, read_manifest(corpus))
    report: dict[str, Any] = {"strengths": STRENGTHS, "targets": {}}
    for target in [t for t in args.targets.split(",") if t]:
        found = compare_methods(res, corpus, heldout, target, STRENGTHS, args.per_language)
        report["targets"][target] = found
        print(f"\ntoward {target}: {len(found['clips'])} held-out clips; success / loop / token flip / CER")
        print(f"{'method':22}" + "".join(f"{'strength ' + str(s):>26}" for s in STRENGTHS))
        for name, c in found["methods"].items():
            keys = ("success_rate", "loop_rate", "token_flip_rate", "cer")
            cells = [" ".join(f"{c[key][k]:.2f}" for key in keys) for k in range(1, len(STRENGTHS) + 1)]
            print(f"{name:22}" + "".join(f"{cell:>26}" for cell in cells))
    silence = compare_silencing(res, corpus, heldout, list(SILENCE_STRENGTHS))
    report["silencing"] = silence
    n_quiet, n_speech = len(silence["nonspeech_clips"]), len(silence["speech_clips"])
    print(f"\nsilencing: {n_quiet} held-out non-speech clips, {n_speech} speech clips")
    print(f"no steering {silence['no_steering']:.2f}, Whisper's gate {silence['whisper_gate']:.2f}")
    for k, s in enumerate(silence["strength"]):
        keys = ("preset", "preset_and_gate", "random_features", "random_features_and_gate")
        rates = {key: silence[key][k] for key in keys}
        speech = (
            f"speech changed {silence['speech_changed_rate'][k]:.2f} (CER {silence['speech_cer'][k]:.2f})"
        )
        print(f"strength {s}: " + ", ".join(f"{key} {v:.2f}" for key, v in rates.items()) + f"; {speech}")
    for gate in ("sae_reading_gate", "vad_gate"):
        g = silence[gate]
        kept, dropped = g["hallucination_rate"], g["speech_dropped_rate"]
        print(f"{gate}: non-speech with text {kept:.2f}, speech dropped {dropped:.2f}")
    report["seconds"] = round(time.time() - started, 1)
    out = run.root / "steering" / "heldout.json"
    out.write_text(json.dumps(report, indent=1))
    print(f"\n{report['seconds']} s -> {out}")


if __name__ == "__main__":
    main()
