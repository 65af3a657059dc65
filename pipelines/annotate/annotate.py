"""Annotate encoder frames with every attribute of `attributes.ATTRIBUTES`.

Frames come as (clip row, frame in clip) pairs in shard order. Each clip is decoded once; the clips of a
joined window (meta.json's `shards[].windows`) are decoded together, because a clip's place in its window
depends on the lengths of the clips before it (`pipelines.recordings.join`). Work goes in chunks of about
`CHUNK_CLIPS` clips, the windows ordered by length, so each chunk is one even batch for the VAD and memory
holds one chunk's audio, not the corpus's. Per clip everything is arrays over its frames; open vocabularies
(words, phones, speakers) are interned as met and sorted at the end.
"""

from __future__ import annotations

import time
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import Callable, Iterator

import numpy as np

from pipelines.activations import iter_shards, read_meta
from pipelines.analysis.words import normalise_word
from pipelines.annotate.attributes import ATTRIBUTES
from pipelines.annotate.frames import FrameAnnotations
from pipelines.annotate.framing import frame_count
from pipelines.annotate.loudness import LOUDNESS_VALUES, loudness_codes
from pipelines.annotate.phones import Phonemizer, phone_index
from pipelines.annotate.pitch import PITCH_VALUES, pitch_codes
from pipelines.annotate.position import WINDOW_POSITION_VALUES, joined_offsets, window_position_codes
from pipelines.annotate.regions import (
    BOUNDARY_VALUES,
    SINCE_ONSET_VALUES,
    UTTERANCE_EDGE_VALUES,
    boundary_codes,
    since_onset_codes,
    utterance_edge_codes,
)
from pipelines.annotate.vad import BATCH_CLIPS, VAD_VALUES, speech_frames
from pipelines.annotate.vocabulary import Vocabulary
from pipelines.annotate.words import Word, frame_centres, word_index
from pipelines.audio import decode_audio
from pipelines.corpus.manifest import Clip, read_manifest
from pipelines.errors import missing_stage
from pipelines.paths import RunPaths

CHUNK_CLIPS = BATCH_CLIPS
"""Clips decoded and scored by the VAD together (one VAD batch)."""

FIXED_VOCAB: dict[str, list[str]] = {
    "vad": VAD_VALUES,
    "window_position": WINDOW_POSITION_VALUES,
    "since_onset": SINCE_ONSET_VALUES,
    "utterance_edge": UTTERANCE_EDGE_VALUES,
    "boundary": BOUNDARY_VALUES,
    "loudness": LOUDNESS_VALUES,
    "pitch": PITCH_VALUES,
}
"""The attributes whose values are fixed bands, in band order."""
CLIP_FIELDS = ("language", "speaker", "source", "category")
"""Attributes copied from the clip's manifest entry ("" is not applicable)."""
OPEN_ATTRIBUTES = ("word", "phone", "language_phone")


def annotate_run(
    run: RunPaths,
    corpus: Path,
    clip_words: list[list[Word]],
    advance: Callable[[int], None] = lambda n: None,
    *,
    timings: dict[str, float] | None = None,
) -> FrameAnnotations:
    """`annotate_frames` over every frame of the run's activation shards, in shard order."""
    meta = read_meta(run.activations)
    if meta is None:
        raise missing_stage("activations", run.activations, "extract")
    indexes = [np.asarray(index_N2) for _, index_N2 in iter_shards(run.activations)]
    index_N2 = np.concatenate(indexes) if indexes else np.zeros((0, 2), dtype=np.int32)
    windows = [window for shard in meta.shards for window in shard.windows]
    clips = read_manifest(corpus)
    return annotate_frames(
        corpus, clips, index_N2[:, 0], index_N2[:, 1], windows, clip_words, advance, timings=timings
    )


def annotate_frames(
    corpus: Path,
    clips: list[Clip],
    clip_row: np.ndarray,
    frame: np.ndarray,
    windows: list[list[int]],
    clip_words: list[list[Word]],
    advance: Callable[[int], None] = lambda n: None,
    *,
    timings: dict[str, float] | None = None,
) -> FrameAnnotations:
    """Every attribute for each frame (`clip_row`, `frame`: int (N,)), in the order given.

    `windows`: the clip rows of each encoder window in join order (a clip in no listed window of several
    clips starts its window); `clip_words[row]`: the clip's aligned (word, start s, end s). `advance(n)`
    reports n more frames done; `timings`, when given, gets the seconds spent per step.
    """
    if len(clip_words) != len(clips):
        raise ValueError(f"clip_words has {len(clip_words)} entries for {len(clips)} manifest rows")
    clip_row = np.asarray(clip_row, dtype=np.int32)
    frame = np.asarray(frame, dtype=np.int32)
    seconds: dict[str, float] = {} if timings is None else timings
    frames_of = _frames_by_clip(clip_row)
    codes = {name: np.full(len(clip_row), -1, dtype=np.int32) for name in (*FIXED_VOCAB, *OPEN_ATTRIBUTES)}
    lexicon = _Lexicon({name: Vocabulary() for name in OPEN_ATTRIBUTES}, Phonemizer())
    units = sorted(_units(windows, set(frames_of)), key=lambda unit: max(clips[r].duration for r in unit))
    for chunk in _chunks(units):
        with _timed(seconds, "decode"):
            audios = {row: decode_audio(corpus / clips[row].path) for unit in chunk for row in unit}
        with _timed(seconds, "window_position"):
            offsets = {row: 0 for unit in chunk for row in unit}
            for unit in chunk:
                if len(unit) > 1:
                    offsets.update(zip(unit, joined_offsets([audios[row] for row in unit])))
        rows = [row for unit in chunk for row in unit if row in frames_of]
        n_frames = {row: max(frame_count(audios[row]), int(frame[frames_of[row]].max()) + 1) for row in rows}
        with _timed(seconds, "vad"):
            speech = speech_frames([audios[row] for row in rows], [n_frames[row] for row in rows])
        for row, speech_T in zip(rows, speech):
            index = frames_of[row]
            with _timed(seconds, "window_position"):
                codes["window_position"][index] = window_position_codes(offsets[row], frame[index])
            clip = clips[row]
            per_frame = _clip_codes(
                audios[row], n_frames[row], speech_T, clip_words[row], clip.language, lexicon, seconds
            )
            for name, codes_T in per_frame.items():
                codes[name][index] = codes_T[frame[index]]
            advance(len(index))
    vocab = {name: list(values) for name, values in FIXED_VOCAB.items()}
    with _timed(seconds, "finish"):
        for name in OPEN_ATTRIBUTES:
            codes[name], vocab[name] = lexicon.vocab[name].finish(codes[name])
        for name in CLIP_FIELDS:
            codes[name], vocab[name] = _clip_field_codes(clips, clip_row, name)
    return FrameAnnotations(
        clip_row, frame, {n: codes[n] for n in ATTRIBUTES}, {n: vocab[n] for n in ATTRIBUTES}
    )


@dataclass
class _Lexicon:
    """What the lexical attributes share over clips: their open vocabularies and the phonemizer's cache."""

    vocab: dict[str, Vocabulary]
    phonemizer: Phonemizer


def _clip_codes(
    audio: np.ndarray,
    n_frames: int,
    speech_T: np.ndarray,
    words: list[Word],
    language: str,
    lexicon: _Lexicon,
    seconds: dict[str, float],
) -> dict[str, np.ndarray]:
    """int32 (T,) codes of every attribute measured on a clip's own frames (all but the clip fields and the
    window position)."""
    codes: dict[str, np.ndarray] = {}
    with _timed(seconds, "vad"):
        codes["vad"] = np.where(speech_T, 0, 1).astype(np.int32)
    with _timed(seconds, "speech_regions"):
        codes["since_onset"] = since_onset_codes(speech_T)
        codes["utterance_edge"] = utterance_edge_codes(speech_T)
        codes["boundary"] = boundary_codes(speech_T)
    with _timed(seconds, "loudness"):
        codes["loudness"] = loudness_codes(audio, n_frames)
    with _timed(seconds, "pitch"):
        codes["pitch"] = pitch_codes(audio, n_frames)
    with _timed(seconds, "words_phones"):
        codes.update(_lexical_codes(words, language, n_frames, lexicon))
    return codes


def _lexical_codes(
    words: list[Word], language: str, n_frames: int, lexicon: _Lexicon
) -> dict[str, np.ndarray]:
    """int32 (T,) codes of `word`, `phone` and `language_phone` of a clip's frames (`lexicon`'s numbering)."""
    index_T = word_index(words, n_frames)
    result = {name: np.full(n_frames, -1, dtype=np.int32) for name in OPEN_ATTRIBUTES}
    centres_T = frame_centres(n_frames)
    vocab = lexicon.vocab
    for i, (text, start, end) in enumerate(words):
        frames_K = np.flatnonzero(index_T == i)
        word = normalise_word(text)
        if not len(frames_K) or not word:
            continue
        result["word"][frames_K] = vocab["word"].code(word)
        phones = lexicon.phonemizer.phones(language, word)
        if phones:
            phone_K = phone_index(phones, start, end, centres_T[frames_K])
            result["phone"][frames_K] = np.array([vocab["phone"].code(p) for p in phones])[phone_K]
            pairs = [vocab["language_phone"].code(f"{language}:/{p}/") for p in phones]
            result["language_phone"][frames_K] = np.array(pairs)[phone_K]
    return result


def _clip_field_codes(clips: list[Clip], clip_row: np.ndarray, name: str) -> tuple[np.ndarray, list[str]]:
    """int32 (N,) code of each frame's clip's manifest field `name`, and the values (sorted)."""
    vocab = Vocabulary()
    code_R = np.full(len(clips), -1, dtype=np.int32)
    for row in np.unique(clip_row):
        code_R[row] = vocab.code(getattr(clips[row], name))
    return vocab.finish(code_R[clip_row])


def _frames_by_clip(clip_row: np.ndarray) -> dict[int, np.ndarray]:
    """Manifest row -> the positions of its frames in `clip_row`, in order."""
    order = np.argsort(clip_row, kind="stable")
    rows, firsts = np.unique(clip_row[order], return_index=True)
    return {int(row): index for row, index in zip(rows, np.split(order, firsts[1:]))}


def _units(windows: list[list[int]], rows: set[int]) -> list[tuple[int, ...]]:
    """Clips to decode together: every joined window holding a wanted clip (all of its clips, which place
    one another), then each other wanted clip alone."""
    units: list[tuple[int, ...]] = []
    placed: set[int] = set()
    for window in windows:
        if len(window) > 1 and rows.intersection(window):
            if placed.intersection(window):
                raise ValueError(f"clip rows {sorted(placed.intersection(window))} are in two joined windows")
            units.append(tuple(window))
            placed.update(window)
    return units + [(row,) for row in sorted(rows - placed)]


def _chunks(units: list[tuple[int, ...]]) -> Iterator[list[tuple[int, ...]]]:
    """Consecutive units, at most `CHUNK_CLIPS` clips together (one VAD batch) unless one unit has more."""
    chunk: list[tuple[int, ...]] = []
    for unit in units:
        if chunk and sum(len(u) for u in chunk) + len(unit) > CHUNK_CLIPS:
            yield chunk
            chunk = []
        chunk.append(unit)
    if chunk:
        yield chunk


@contextmanager
def _timed(seconds: dict[str, float], step: str) -> Iterator[None]:
    start = time.perf_counter()
    try:
        yield
    finally:
        seconds[step] = seconds.get(step, 0.0) + time.perf_counter() - start
