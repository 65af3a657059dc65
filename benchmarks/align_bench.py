"""Word alignment: forced alignment on CTranslate2 vs transformers' generate with word timestamps.

The analysis pass times the words of N speech clips of the default corpus (the first `--per-language` clips
with a reference transcript in each language), joined into speaker recordings as `extract` joins them (the
windows `analyze` describes).
Each window is encoded once (timed apart: the same for every path), then its words are timed three ways:

- `transformers`: `transcribe_encoded` with word timestamps (greedy generate + DTW), the reference path;
- `ct2 align`: forced alignment of the window's reference transcripts (`token_times`), the new word path;
- `ct2 decode+align`: CTranslate2 greedy decode + alignment of its tokens (`transcribe_words`), which gives
  `analyze` Whisper's hypothesis (and the words of clips without a reference).

Agreement, on clips whose transformers transcript equals the reference (normalised): median and p90 of
`boundary_differences` between the forced-aligned reference words and transformers' words.

    .venv/bin/python benchmarks/align_bench.py [--per-language 4] [--max-seconds 12]
"""

from __future__ import annotations

import argparse
import os
import time

import numpy as np

from pipelines.analysis.clips import reference_words, split_words, token_budget
from pipelines.audio import SAMPLE_RATE, decode_audio
from pipelines.constants import FRAME_SECONDS, WINDOW_SAMPLES
from pipelines.corpus.manifest import SPEECH, Clip, read_manifest
from pipelines.model.align import (
    boundary_differences,
    load_fast,
    reference_tokens,
    token_times,
    transcribe_words,
)
from pipelines.model.encoder import encode, features_for, real_frames
from pipelines.model.loader import load_whisper
from pipelines.model.transcribe import transcribe_encoded
from pipelines.paths import corpus_dir
from pipelines.recordings import join, plan_recordings
from pipelines.sae.evaluate import normalise_text

MAX_NEW_TOKENS = 96


def chosen_clips(per_language: int, max_seconds: float) -> dict[str, list[Clip]]:
    by_language: dict[str, list[Clip]] = {}
    for clip in read_manifest(corpus_dir()):
        if clip.category == SPEECH and clip.transcript and clip.duration <= max_seconds:
            group = by_language.setdefault(clip.language, [])
            if len(group) < per_language:
                group.append(clip)
    return by_language


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--per-language", type=int, default=4)
    parser.add_argument("--max-seconds", type=float, default=12.0)
    args = parser.parse_args()
    bundle = load_whisper("bundled:whisper-base", device="cpu")
    fast = load_fast(bundle)
    seconds = dict.fromkeys(["encoder", "transformers", "ct2 align", "ct2 decode+align"], 0.0)
    diffs: list[float] = []
    n_clips = n_exact = n_same = n_windows = n_same_windows = 0

    def timed(name: str, fn, *fn_args):
        start = time.perf_counter()
        out = fn(*fn_args)
        seconds[name] += time.perf_counter() - start
        return out

    for language, clips in chosen_clips(args.per_language, args.max_seconds).items():
        audios = [decode_audio(corpus_dir() / c.path)[:WINDOW_SAMPLES] for c in clips]
        for recording in plan_recordings(clips):
            window = list(recording.rows)
            packed, offsets = join([audios[i] for i in window])
            starts = [o * FRAME_SECONDS for o in offsets]
            durations = [len(audios[i]) / SAMPLE_RATE for i in window]
            frames = [real_frames(len(packed))]
            budget = token_budget(durations, MAX_NEW_TOKENS)
            encoder_BTD = timed("encoder", encode, bundle, features_for(bundle, [packed]))
            (result,) = timed(
                "transformers",
                lambda: transcribe_encoded(
                    bundle,
                    encoder_BTD,
                    language=language,
                    max_new_tokens=budget,
                    word_timestamps=True,
                    n_frames=frames,
                ),
            )
            refs = [reference_tokens(fast, clips[i].transcript) for i in window]
            (times,) = timed("ct2 align", token_times, fast, encoder_BTD, [sum(refs, [])], [language], frames)
            ((_, heard),) = timed(
                "ct2 decode+align", transcribe_words, fast, encoder_BTD, language, [budget], frames
            )
            # Both shared out as `analyze` shares them (`WindowTranscriber`): by word middle.
            words = [(w.word, w.start, w.end) for w in result.words]
            theirs = split_words(words, starts, durations, by_middle=True)
            ours = split_words([(w.word, w.start, w.end) for w in heard], starts, durations, by_middle=True)
            tokenizer = bundle.processor.tokenizer
            spoken = reference_words(tokenizer, refs, times, starts, durations, language)
            n_windows += 1
            n_same_windows += "".join(w.word for w in heard).strip() == result.text
            for i, their_words, our_words, reference in zip(window, theirs, ours, spoken):
                n_clips += 1
                hypothesis = "".join(w for w, _, _ in their_words)
                n_same += hypothesis.strip() == "".join(w for w, _, _ in our_words).strip()
                exact = normalise_text(hypothesis) == normalise_text(clips[i].transcript)
                if exact and len(reference) == len(their_words):
                    n_exact += 1
                    diffs += boundary_differences(reference, their_words)
    print(
        f"{n_clips} clips ({args.per_language} per language, <= {args.max_seconds} s), load "
        f"{os.getloadavg()[0]:.1f}, seconds per clip:"
    )
    baseline = seconds["encoder"] + seconds["transformers"]
    for name, total in seconds.items():
        ratios = (
            f"  (transformers / this: {seconds['transformers'] / total:.1f}x, "
            f"encoder included {baseline / (seconds['encoder'] + total):.1f}x)"
        )
        print(f"  {name:>16}: {total / n_clips:.3f} s{ratios if name != 'encoder' else ''}")
    print(
        f"  ct2's greedy transcript equals transformers' on {n_same_windows}/{n_windows} windows, "
        f"{n_same}/{n_clips} clips"
    )
    print(
        f"  reference words vs transformers' words, {n_exact} clips transcribed exactly, {len(diffs)} "
        f"boundaries: median {np.median(diffs):.3f} s, p90 {np.percentile(diffs, 90):.3f} s, "
        f"max {np.max(diffs):.3f} s"
    )


if __name__ == "__main__":
    main()
