"""Per-clip details for the atlas: the log-mel (stored once, as uint8) and word-aligned text.

Clips are described window by window, in the encoder windows extraction ran (`ClipWindow`: a speaker's
recording of several clips, or one clip alone), from the stored final encoder states when the activations
keep whole windows (`pipelines.activations.iter_windows`); otherwise the window's clips are joined again
(`pipelines.recordings.join`) and encoded. So on the default run `analyze` runs no encoder at all, and the
language effects (`on_hidden`) read the same windows.

Speech is decoded in its manifest language (when Whisper knows it), so the words under each example are the
ones spoken; other clips are decoded with the language Whisper detects, which shows what it invents on
non-speech (hypothesis only, no word times; on a reel of sounds of one source the window's hypothesis is
shared out among its clips by time). Two aligners fill the words (`AnalysisConfig.aligner`):

- `ct2` (the default, `pipelines.model.align`): a window whose clips all have reference transcripts (and
  whose references fit Whisper's 448-token context) gets the *reference* words, forced-aligned with one
  teacher-forced pass over the window's references concatenated, each clip's words kept within its share of
  the window; it is not decoded unless `transcribe_all`. Other windows are decoded greedily by CTranslate2,
  a batch of windows at a time, and their tokens aligned the same way.
- `transformers` (the reference implementation): Whisper's own words from transformers' `generate` with
  word timestamps, for every window.

On 28 corpus clips (benchmarks/align_bench.py, 2 cores at load 3.5, per clip) the encoder took 1.00 s,
transformers' words 1.89 s, forced alignment 0.10 s and CTranslate2's decode + alignment 0.78 s. Decoding
stops at `token_budget` tokens (10 + 10 per second of audio per clip), so a hallucination loop on noise stops
early. Mels cover the whole clip (30 s windows, as extraction). Transcripts of an earlier analysis with the
same model are reused: only windows holding a new or changed clip are decoded again (and a clip whose stored
words are not its reference's, once it has one).
"""

from __future__ import annotations

import functools
from collections import deque
from dataclasses import dataclass, replace
from pathlib import Path
from typing import Callable, Collection, Iterable, Iterator, Literal

import numpy as np
import torch

from pipelines.activations import ActivationsMeta, iter_windows
from pipelines.analysis.result import ClipTable, ClipText
from pipelines.audio import decode_audio
from pipelines.constants import FRAME_SECONDS, FRAMES_PER_WINDOW, SAMPLE_RATE, WINDOW_SAMPLES, WINDOW_SECONDS
from pipelines.corpus.manifest import SPEECH, Clip
from pipelines.model.align import FastWhisper, load_fast, reference_tokens, token_times, transcribe_words
from pipelines.model.encoder import encode, features_for, real_frames
from pipelines.model.loader import WhisperBundle
from pipelines.model.transcribe import GREEDY, LANGUAGES, group_words, transcribe_encoded
from pipelines.recordings import join

TOKENS_BASE = 10
TOKENS_PER_SECOND = 10
"""Decoder budget per clip: fast speech runs ~4-8 Whisper tokens per second (more for Cyrillic)."""

WINDOWS_PER_BATCH = 4
"""Windows decoded and aligned together (CTranslate2 batches them)."""

Aligner = Literal["ct2", "transformers"]
ClipWords = list[tuple[str, float, float]]
"""(raw word text, start s, end s) relative to the clip; joining the texts gives the clip's text."""

HiddenHook = Callable[[torch.Tensor, list[int]], None]
"""Called with (final encoder states (B, 1500, D), frames up to each window's last clip's end)."""


@dataclass
class ClipWindow:
    """One encoder window of the run: its clips in join order and, when stored, its whole encoder output."""

    rows: list[int]
    states_TD: np.ndarray | None = None
    """float16 (1500, D) final encoder states as extraction computed them; None: encode the joined clips."""
    offsets: list[int] | None = None
    """Encoder frame at which each clip starts (given with the states)."""

    @property
    def key(self) -> tuple[int, ...]:
        return tuple(self.rows)


def run_windows(folder: Path, meta: ActivationsMeta) -> Iterator[ClipWindow]:
    """The run's windows that start a clip (a long clip is described from its first 30 s), with their
    stored states when the activations are decodable; else the windows as meta.json lists them."""
    if meta.decodable:
        for window in iter_windows(folder, FRAMES_PER_WINDOW):
            if window.first_frames[0] == 0:
                yield ClipWindow(window.rows, window.states_TD, window.offsets)
        return
    for rows in window_rows(meta):
        yield ClipWindow(rows)


def window_rows(meta: ActivationsMeta) -> list[list[int]]:
    """The clip rows of each window that starts a clip, as meta.json lists them (older metas list none:
    every clip alone)."""
    listed = [rows for shard in meta.shards for rows in shard.windows]
    seen: set[int] = set()
    out = []
    for rows in listed or [[row] for shard in meta.shards for row in shard.clip_rows]:
        if rows[0] not in seen:
            seen.update(rows)
            out.append(list(rows))
    return out


def decode_language(clip: Clip) -> str:
    """The language to decode a clip in: its own for speech Whisper knows, else '' (detect)."""
    return clip.language if clip.category == SPEECH and clip.language in LANGUAGES else ""


def quantise_mel(mel_MT: np.ndarray) -> tuple[np.ndarray, float, float]:
    """uint8 image of a log-mel, with the values 0 and 255 stand for."""
    vmin, vmax = float(mel_MT.min()), float(mel_MT.max())
    scale = 255.0 / max(vmax - vmin, 1e-6)
    return np.round((mel_MT - vmin) * scale).astype(np.uint8), vmin, max(vmax, vmin + 1e-6)


def clip_mel(bundle: WhisperBundle, audio: np.ndarray) -> np.ndarray:
    """(n_mels, 2 x real frames) log-mel of a whole clip, window by window (frames numbered as extraction)."""
    pieces = [audio[i : i + WINDOW_SAMPLES] for i in range(0, max(len(audio), 1), WINDOW_SAMPLES)]
    feats_BMT = features_for(bundle, pieces).cpu().numpy()
    return np.concatenate([feats_BMT[i, :, : 2 * real_frames(len(p))] for i, p in enumerate(pieces)], axis=1)


def token_budget(durations: list[float], max_new_tokens: int) -> int:
    """Decoder tokens for clips decoded in one window: enough for fast speech, at most `max_new_tokens` per
    clip (a hallucination loop on noise stops there instead of at Whisper's 448)."""
    return sum(min(max_new_tokens, int(TOKENS_BASE + TOKENS_PER_SECOND * d)) for d in durations)


def shares(starts: list[float], durations: list[float]) -> list[tuple[float, float]]:
    """Each clip's share of its window (seconds): from the middle of the gap before it to the middle of
    the gap after it (the first from -inf, the last to +inf)."""
    ends = [start + d for start, d in zip(starts, durations)]
    bounds = [(end + start) / 2 for end, start in zip(ends[:-1], starts[1:])]
    return list(zip([float("-inf")] + bounds, bounds + [float("inf")]))


def split_words(
    words: list[tuple[str, float, float]],
    starts: list[float],
    durations: list[float],
    by_middle: bool = False,
) -> list[ClipWords]:
    """Window words per clip (clips starting at `starts` seconds), times relative to the clip.

    A word belongs to the clip in whose share (`shares`) it starts, or with `by_middle` in which its middle
    lies (for times read as openai-whisper reads them, where a clip's first word starts as the previous
    clip's speech ends); a word's times are kept inside its clip's share.
    """
    spans = shares(starts, durations)
    per_clip: list[ClipWords] = [[] for _ in starts]
    for word, start, end in words:
        at = (start + end) / 2 if by_middle else start
        clip = next(i for i, (_, hi) in enumerate(spans) if at < hi)
        lo, hi = spans[clip]
        start, end = min(max(start, lo), hi), min(max(end, lo), hi)
        per_clip[clip].append((word, start - starts[clip], end - starts[clip]))
    return per_clip


def alignable(clip: Clip) -> bool:
    """Speech with a reference transcript that one window holds whole (a longer one is heard only in part)."""
    return clip.category == SPEECH and bool(clip.transcript.strip()) and clip.duration <= WINDOW_SECONDS


@dataclass
class _Pending:
    """A window waiting for its batch: its clips' audio, where each starts (s), and what it needs."""

    window: ClipWindow
    audios: list[np.ndarray]
    starts: list[float]
    n_frames: int
    stale: bool
    effects: bool


def _prepare(window: ClipWindow, audios: list[np.ndarray], stale: bool, effects: bool) -> _Pending:
    """Where each clip starts in the window: stored offsets, else as `join` lays the clips out again."""
    heard = [audio[:WINDOW_SAMPLES] for audio in audios]
    offsets = window.offsets if window.offsets is not None else join(heard)[1]
    n_frames = max(offsets[-1] + real_frames(len(heard[-1])), 1)
    return _Pending(window, heard, [o * FRAME_SECONDS for o in offsets], n_frames, stale, effects)


def _states(bundle: WhisperBundle, batch: list[_Pending]) -> torch.Tensor:
    """(B, 1500, D) final encoder states: the stored ones, the missing ones encoded in one pass."""
    missing = [p for p in batch if p.window.states_TD is None]
    encoded: list[torch.Tensor] = []
    if missing:
        encoded = list(
            encode(bundle, features_for(bundle, [join(p.audios)[0] for p in missing])).float().cpu()
        )
    rows = []
    for p in batch:
        stored = p.window.states_TD
        rows.append(torch.from_numpy(stored.astype(np.float32)) if stored is not None else encoded.pop(0))
    return torch.stack(rows)


WindowWords = list[list[tuple[ClipWords, ClipWords]]]
"""Per window of a batch, per clip: (Whisper's words, words to store)."""


@dataclass
class TranscribeJob:
    """A batch of windows of one decode language whose words are stale: what `WindowTranscriber` reads."""

    states_BTD: torch.Tensor
    batch: list[_Pending]
    """The windows, without their stored states (`states_BTD` holds them)."""
    clips: list[list[Clip]]
    language: str


BatchTranscribe = Callable[[Iterable[TranscribeJob]], Iterator[WindowWords]]
"""Transcribes jobs and yields one result per job, in order (locally one by one; on Ray, several at once:
`pipelines.engines.ray_transcribe`)."""


class WindowTranscriber:
    """(Whisper's words, words to store) per clip for batches of windows of one decode language."""

    def __init__(self, bundle: WhisperBundle, aligner: Aligner, max_new_tokens: int, transcribe_all: bool):
        self.bundle, self.aligner, self.max_new_tokens = bundle, aligner, max_new_tokens
        self.transcribe_all = transcribe_all
        self.fast: FastWhisper | None = load_fast(bundle) if aligner == "ct2" else None

    def references(self, clips: list[Clip]) -> list[list[int]] | None:
        """Every clip's reference tokens, if the window can be forced-aligned (ct2, all clips `alignable`,
        the references fit one context); else None."""
        if self.fast is None or not all(alignable(c) for c in clips):
            return None
        refs = [reference_tokens(self.fast, c.transcript) for c in clips]
        return refs if sum(len(r) for r in refs) <= self.fast.max_tokens else None

    def run(self, job: TranscribeJob) -> WindowWords:
        return self(job.states_BTD, job.batch, job.clips, job.language)

    def __call__(
        self, states_BTD: torch.Tensor, batch: list[_Pending], clips: list[list[Clip]], language: str
    ) -> WindowWords:
        durations = [[len(a) / SAMPLE_RATE for a in p.audios] for p in batch]
        n_frames = [p.n_frames for p in batch]
        refs = [self.references(c) for c in clips]
        decode = [r is None or self.transcribe_all for r in refs]
        heard: list[list[ClipWords]] = [[[] for _ in p.audios] for p in batch]
        chosen = [i for i, d in enumerate(decode) if d]
        if chosen:
            decoded = self._decode(
                states_BTD[chosen], language, [durations[i] for i in chosen], n_frames, chosen
            )
            for i, words in zip(chosen, decoded):
                heard[i] = split_words(words, batch[i].starts, durations[i], by_middle=True)
        out = [list(zip(heard[i], heard[i])) for i in range(len(batch))]
        aligned = [i for i, r in enumerate(refs) if r is not None]
        if aligned and self.fast is not None:
            times = token_times(
                self.fast,
                states_BTD[aligned],
                [sum(refs[i] or [], []) for i in aligned],
                [language] * len(aligned),
                [n_frames[i] for i in aligned],
            )
            for i, window_times in zip(aligned, times):
                tokenizer = self.bundle.processor.tokenizer
                spoken = reference_words(
                    tokenizer, refs[i] or [], window_times, batch[i].starts, durations[i], language
                )
                out[i] = list(zip(heard[i], spoken))
        return out

    def _decode(
        self,
        states_BTD: torch.Tensor,
        language: str,
        durations: list[list[float]],
        n_frames: list[int],
        chosen: list[int],
    ) -> list[list[tuple[str, float, float]]]:
        """Whisper's own words (seconds in the window) of each window, greedy, within its token budget."""
        budgets = [token_budget(d, self.max_new_tokens) for d in durations]
        frames = [n_frames[i] for i in chosen]
        if self.fast is not None:
            decoded = transcribe_words(self.fast, states_BTD, language or None, budgets, frames)
            return [[(w.word, w.start, w.end) for w in words] for _, words in decoded]
        results = [
            transcribe_encoded(
                self.bundle,
                states_BTD[[b]],
                language=language or None,
                max_new_tokens=budget,
                word_timestamps=True,
                n_frames=[n],
                decoding=GREEDY,  # as the CTranslate2 path decodes
            )[0]
            for b, (budget, n) in enumerate(zip(budgets, frames))
        ]
        return [[(w.word, float(w.start), float(w.end)) for w in r.words] for r in results]


def reference_words(
    tokenizer,
    refs: list[list[int]],
    times: np.ndarray,
    starts: list[float],
    durations: list[float],
    language: str,
) -> list[ClipWords]:
    """Each clip's reference words from its window's forced alignment (`times`: seconds where each token of
    the concatenated `refs` starts, then where the last ends), clip-relative, kept within the clip's share."""
    spoken, at = [], 0
    for tokens, start, (lo, hi) in zip(refs, starts, shares(starts, durations)):
        clip_times = np.clip(times[at : at + len(tokens) + 1], lo, hi) - start
        words = group_words(tokenizer, tokens, clip_times, language)
        spoken.append([(w.word, w.start, w.end) for w in words])
        at += len(tokens)
    return spoken


def describe_clips(
    bundle: WhisperBundle,
    corpus: Path,
    clips: list[Clip],
    windows: Iterable[ClipWindow],
    cached: dict[str, ClipText],
    max_new_tokens: int,
    *,
    effect_windows: Collection[tuple[int, ...]] = (),
    on_hidden: HiddenHook = lambda states, frames: None,
    advance: Callable[[int], None] = lambda n: None,
    aligner: Aligner = "ct2",
    transcribe_all: bool = False,
    transcribe: BatchTranscribe | None = None,
) -> tuple[ClipTable, list[ClipText]]:
    """Mels and transcripts of the clips of `windows` (others get empty entries); the final encoder states
    of the windows in `effect_windows` go to `on_hidden`.

    Windows are batched by decode language; a window whose clips all have current cached text is not
    decoded again (nor encoded, unless `on_hidden` wants it). `transcribe` runs the batches (default: a
    `WindowTranscriber` of `bundle` here, with `aligner`, `max_new_tokens` and `transcribe_all`).
    """
    n_clips = len(clips)
    mels: list[np.ndarray] = [np.zeros((0, 0), np.uint8)] * n_clips
    vmin, vmax = np.zeros(n_clips, np.float32), np.ones(n_clips, np.float32)
    text = [ClipText(c.id, decode_language(c), "", []) for c in clips]
    if transcribe is None:
        transcriber = WindowTranscriber(bundle, aligner, max_new_tokens, transcribe_all)
        transcribe = functools.partial(map, transcriber.run)  # one job at a time, when its words are wanted
    pending: dict[str, list[_Pending]] = {}
    submitted: deque[TranscribeJob] = deque()

    def flush(language: str) -> Iterator[TranscribeJob]:
        batch = [p for p in pending.pop(language, []) if p.stale or p.effects]
        if not batch:
            return
        states_BTD = _states(bundle, batch)
        wanted = [i for i, p in enumerate(batch) if p.effects]
        if wanted:
            on_hidden(states_BTD[wanted], [batch[i].n_frames for i in wanted])
        stale = [i for i, p in enumerate(batch) if p.stale]
        if not stale:
            return
        window_clips = [[clips[r] for r in batch[i].window.rows] for i in stale]
        slim = [replace(batch[i], window=ClipWindow(batch[i].window.rows)) for i in stale]
        submitted.append(TranscribeJob(states_BTD[stale], slim, window_clips, language))
        yield submitted[-1]

    def jobs() -> Iterator[TranscribeJob]:
        for window in windows:
            yield from describe_window(window)
        for language in list(pending):
            yield from flush(language)

    def describe_window(window: ClipWindow) -> Iterator[TranscribeJob]:
        audios = [decode_audio(corpus / clips[r].path) for r in window.rows]
        language = decode_language(clips[window.rows[0]])
        stale = False
        for row, audio in zip(window.rows, audios):
            mels[row], vmin[row], vmax[row] = quantise_mel(clip_mel(bundle, audio))
            entry = cached.get(clips[row].id)
            if _stale(entry, language, clips[row].transcript if alignable(clips[row]) else ""):
                stale = True
            else:
                text[row] = entry  # type: ignore[assignment]
        if not stale:
            advance(len(window.rows))
        pending.setdefault(language, []).append(_prepare(window, audios, stale, window.key in effect_windows))
        if len(pending[language]) == WINDOWS_PER_BATCH:
            yield from flush(language)

    for results in transcribe(jobs()):
        job = submitted.popleft()
        for pending_window, per_clip in zip(job.batch, results):
            for row, (heard, spoken) in zip(pending_window.window.rows, per_clip):
                # Non-speech keeps Whisper's hypothesis only: word times there would time invented words.
                stored = [(w.strip(), s, e) for w, s, e in spoken] if clips[row].category == SPEECH else []
                hypothesis = "".join(w for w, _, _ in heard).strip()
                text[row] = ClipText(clips[row].id, job.language, hypothesis, stored)
            advance(len(pending_window.window.rows))
    mel_frames = np.array([m.shape[1] if m.size else 0 for m in mels], np.int32)
    table = ClipTable(
        n_frames=np.zeros(n_clips, np.int64),
        mel_frames=mel_frames,
        mel=np.concatenate([m.ravel() for m in mels]) if n_clips else np.zeros(0, np.uint8),
        vmin=vmin,
        vmax=vmax,
        n_mels=np.array(bundle.model.config.num_mel_bins),
    )
    return table, text


def _stale(entry: ClipText | None, language: str, reference: str) -> bool:
    """No transcript yet, another decode language, or words that are not the clip's `reference` (if any)."""
    if entry is None or entry.language != language:
        return True
    return bool(reference) and "".join(w for w, _, _ in entry.words) != "".join(reference.split())
