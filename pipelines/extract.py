"""Extraction: run Whisper's encoder over a corpus and store the activations of real frames at one layer.

Frame-level activations of the encoder (the final output by default, as in "Mechanistic Interpretability of
ASR models using Sparse Autoencoders") are what the SAE trains on. Padding frames are never stored: a clip of
n samples has `real_frames(n)` frames in its window, the rest of the 30 s is padding (pitfall: padding has
larger norms and would dominate an SAE). Clips longer than 30 s are cut into 30 s windows whose frames
continue the clip's frame numbering.

Three ways to fill the encoder's windows (`window`):
- `recording` (default, `pipelines.recordings`): a speaker's clips joined into recordings of up to 30 s, so
  every window is exactly what Whisper computes for that recording and is mostly speech; other clips alone;
- `solo`: every clip alone in a window padded to 30 s, exactly what the server computes for an upload
  (twice the windows of `recording` on the default corpus);
- `packed` (`pipelines.model.packing`): short clips share a window, each with its own `context_frames` of
  padding; an approximation of the solo window (per-frame cosine ~0.99) that Whisper never computes.

Shards hold whole recordings (`pipelines.activations`), and meta.json lists each window's clips; it is
rewritten after each shard, so an interrupted run resumes at the next unfinished recording with the same
plan. A changed fingerprint (model, layer, manifest content, window mode) discards the old shards.
"""

from __future__ import annotations

import functools
import hashlib
import shutil
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Callable, Iterator

import numpy as np
import torch

from pipelines.activations import ActivationsMeta, WindowRest, append_shard, read_meta
from pipelines.audio import decode_audio
from pipelines.constants import SAMPLE_RATE, SAMPLES_PER_FRAME, WINDOW_SAMPLES
from pipelines.corpus.manifest import MANIFEST_NAME, Clip, read_manifest
from pipelines.errors import AtlasError, missing_stage
from pipelines.model.encoder import check_layer, encode, features_for, real_frames
from pipelines.model.loader import WhisperBundle
from pipelines.model.packing import PackConfig, block_features, build_batch, packed_layout, plan_windows
from pipelines.model.sizes import size_for_width
from pipelines.paths import RunPaths
from pipelines.recordings import WINDOW_MODES, Recording, WindowMode, join, plan_recordings
from pipelines.stages import fingerprint

SHARD_FRAMES = 16384
"""Frames per shard (~16 MB of float16 at d_model 512): the unit of resumption and of progress."""


@dataclass
class ExtractReport:
    """What one `extract` call did."""

    layer: int
    window: WindowMode
    clips_total: int
    clips_done: int
    """Clips encoded by this call."""
    clips_skipped: int
    """Clips already in finished shards (resumed)."""
    frames: int
    """Real frames written by this call."""
    windows: int
    """Encoder windows (30 s) run by this call."""
    seconds: float
    restarted: bool = False
    """Old shards were discarded because the fingerprint changed."""
    failed: list[str] = field(default_factory=list)
    """`clip id: reason` of clips that could not be decoded (skipped, retried on the next run)."""

    @property
    def frames_per_s(self) -> float:
        return self.frames / self.seconds if self.seconds > 0 else 0.0


@dataclass
class _Span:
    """The frames of one clip in one window."""

    row: int
    first_frame: int
    """Frame number in the clip of the span's first frame (clips over 30 s span several windows)."""
    offset: int
    """Encoder frame of the window where the span starts."""
    n_real: int


@dataclass
class _Window:
    """The audio of one encoder window (packed: of one block) and the clip frames it holds."""

    audio: np.ndarray
    spans: list[_Span]

    @property
    def rows(self) -> list[int]:
        return [s.row for s in self.spans]


def _solo_windows(row: int, audio: np.ndarray) -> list[_Window]:
    """One window per 30 s of a clip, its frames numbered on from the previous window's."""
    windows = []
    for start in range(0, len(audio), WINDOW_SAMPLES):
        piece = audio[start : start + WINDOW_SAMPLES]
        windows.append(_Window(piece, [_Span(row, start // SAMPLES_PER_FRAME, 0, real_frames(len(piece)))]))
    return windows


def _recording_window(rows: list[int], audios: list[np.ndarray]) -> _Window:
    recording, offsets = join(audios)
    spans = [_Span(row, 0, off, real_frames(len(a))) for row, a, off in zip(rows, audios, offsets)]
    return _Window(recording, spans)


def _stored(acts_TD: torch.Tensor) -> torch.Tensor:
    """A float16 CPU copy of real frames (a view would keep its whole 30 s window alive)."""
    return acts_TD.to("cpu", torch.float16)


def _encode_windows(
    bundle: WhisperBundle, windows: list[_Window], layer: int, batch_size: int, keep_rest: bool
) -> tuple[list, list]:
    """Activations (n_real, D) per span, each window padded to 30 s as Whisper pads it; with `keep_rest`,
    also each window's other frames (gaps and padding) with their positions, for `WindowRest`."""
    acts, rests = [], []
    for start in range(0, len(windows), batch_size):
        chunk = windows[start : start + batch_size]
        out_BTD = encode(bundle, features_for(bundle, [w.audio for w in chunk]), layer)
        for i, w in enumerate(chunk):
            covered_T = torch.zeros(out_BTD.shape[1], dtype=torch.bool)
            for s in w.spans:
                acts.append(_stored(out_BTD[i, s.offset : s.offset + s.n_real]))
                covered_T[s.offset : s.offset + s.n_real] = True
            if keep_rest:
                rests.append((_stored(out_BTD[i, ~covered_T.to(out_BTD.device)]), np.flatnonzero(~covered_T)))
    return acts, rests


def _encode_packed(
    bundle: WhisperBundle, windows: list[_Window], layer: int, batch_size: int, config: PackConfig
) -> tuple[list, int]:
    """Activations (n_real, D) per single-span window from packed windows; and the number of windows run."""
    plan = plan_windows([w.spans[0].n_real for w in windows], config)
    acts: list = [None] * len(windows)
    for start in range(0, len(plan), batch_size):
        chunk = plan[start : start + batch_size]
        mels = {pl.item: block_features(bundle, windows[pl.item].audio, pl.block) for w in chunk for pl in w}
        batch = build_batch(chunk, mels)
        with packed_layout(bundle, batch):
            out_BTD = encode(bundle, batch.features_BMT, layer)
        for row, packed in enumerate(chunk):
            for pl in packed:
                acts[pl.item] = _stored(
                    out_BTD[row, pl.offset : pl.offset + windows[pl.item].spans[0].n_real]
                )
    return acts, len(plan)


def extraction_fingerprint(
    corpus: Path, bundle: WhisperBundle, layer: int, window: WindowMode, pack: PackConfig | None
) -> str:
    """Hash of what the activations depend on: model, layer, manifest content, window mode (and packing)."""
    manifest = hashlib.sha256((corpus / MANIFEST_NAME).read_bytes()).hexdigest()
    packing = pack.context_frames if pack is not None else None
    return fingerprint(model=bundle.name, layer=layer, manifest=manifest, window=window, pack=packing)


def _open_meta(folder: Path, fresh: ActivationsMeta) -> tuple[ActivationsMeta, bool]:
    """The existing meta if its fingerprint matches `fresh`'s; else an emptied folder (restarted=True)."""
    meta = read_meta(folder)
    if meta is not None and meta.fingerprint == fresh.fingerprint:
        return meta, False
    if folder.exists():
        shutil.rmtree(folder)
    folder.mkdir(parents=True)
    return fresh, meta is not None


def _units(clips: list[Clip], window: WindowMode) -> list[Recording]:
    """The groups of rows encoded together: speaker recordings, or every clip alone (solo and packed)."""
    if window == "recording":
        return plan_recordings(clips)
    return [Recording((row,)) for row in range(len(clips))]


def _chunks(units: list[Recording], clips: list[Clip], frames: int) -> list[list[Recording]]:
    """Consecutive units whose estimated frames fill about one shard (a shard holds whole units)."""
    chunks: list[list[Recording]] = [[]]
    total = 0
    for unit in units:
        if chunks[-1] and total >= frames:
            chunks.append([])
            total = 0
        chunks[-1].append(unit)
        total += sum(int(clips[r].duration * SAMPLE_RATE / SAMPLES_PER_FRAME) + 1 for r in unit.rows)
    return [c for c in chunks if c]


def extract(
    corpus: Path,
    run: RunPaths,
    bundle: WhisperBundle,
    layer: int | None,
    batch_size: int | None,
    window: WindowMode = "recording",
    *,
    context_frames: int = PackConfig.context_frames,
    shard_frames: int = SHARD_FRAMES,
    on_progress: Callable[[int, int], None] | None = None,
    engine: ChunkEngine | None = None,
) -> ExtractReport:
    """Encode every clip of `corpus` not yet extracted and append its real frames to `run`'s shards.

    `on_progress(clips_finished, clips_total)` is called after each shard (the count includes resumed clips).
    `engine` encodes the chunks (default `encode_locally` with `bundle`; `pipelines.engines.ray_extract` on a
    Ray cluster); planning, shards, meta.json and resumption are this function's whatever the engine.
    `layer` and `batch_size` default to the model size's row of `pipelines.model.sizes` (the layer capped
    at the model's depth, for a model of another depth than its width's row).
    """
    size = size_for_width(bundle.d_model)
    if batch_size is not None and batch_size < 1:
        raise AtlasError(f"batch size must be at least 1, got {batch_size}")
    if window not in WINDOW_MODES:
        raise AtlasError(f"unknown window mode {window!r}: choose one of {', '.join(WINDOW_MODES)}")
    if not (corpus / MANIFEST_NAME).is_file():
        raise missing_stage("corpus manifest", corpus, "corpus build")
    layer = min(size.layer, bundle.n_layers) if layer is None else layer
    try:
        check_layer(bundle, layer)
    except ValueError as exc:
        raise AtlasError(str(exc)) from exc
    config = PackConfig(context_frames=context_frames) if window == "packed" else None
    clips = read_manifest(corpus)
    fresh = ActivationsMeta(
        model=bundle.name,
        layer=layer,
        d_model=bundle.d_model,
        corpus=corpus.name,
        fingerprint=extraction_fingerprint(corpus, bundle, layer, window, config),
        window=window,
        decodable=config is None and layer == bundle.n_layers,
    )
    meta, restarted = _open_meta(run.activations, fresh)
    done = meta.done_clip_rows
    todo = [unit for unit in _units(clips, window) if not done.issuperset(unit.rows)]
    report = ExtractReport(
        layer=layer,
        window=window,
        clips_total=len(clips),
        clips_done=0,
        clips_skipped=len(clips) - sum(len(u.rows) for u in todo),
        frames=0,
        windows=0,
        seconds=0.0,
        restarted=restarted,
    )
    started = time.perf_counter()
    finished = report.clips_skipped
    job = ExtractJob(corpus, layer, batch_size, config, meta.decodable)
    planned = _chunks(todo, clips, shard_frames)
    chunks = [ChunkWork(c, {r: clips[r] for u in c for r in u.rows}) for c in planned]
    encoded = (engine or functools.partial(encode_locally, bundle))(job, chunks)
    for work, result in zip(chunks, encoded, strict=True):
        report.failed += result.failed
        if result.windows:
            _append(run.activations, meta, result.windows, result.acts, result.rests, report)
            report.windows += result.n_windows
        finished += sum(len(u.rows) for u in work.units)
        if on_progress is not None:
            on_progress(finished, len(clips))
    report.seconds = time.perf_counter() - started
    return report


@dataclass
class ExtractJob:
    """How every chunk of one extraction is encoded, whichever engine encodes it."""

    corpus: Path
    layer: int
    batch_size: int | None
    """Windows per encoder call; None: the model size's default on the device that encodes."""
    pack: PackConfig | None
    """Packed windows' settings; None for recording and solo windows."""
    keep_rest: bool
    """Also keep each window's other frames (decodable activations, `WindowRest`)."""


@dataclass
class ChunkWork:
    """One shard's worth of units and the manifest rows they hold (all that decoding them needs)."""

    units: list[Recording]
    clips: dict[int, Clip]


@dataclass
class DecodedChunk:
    windows: list[_Window]
    failed: list[str]
    """`clip id: reason` of the chunk's clips that could not be decoded."""


@dataclass
class EncodedChunk:
    """What `_append` writes as one shard: the chunk's windows (their audio dropped), each span's activations,
    with `keep_rest` each window's other frames, the encoder windows run, and the clips that failed."""

    windows: list[_Window]
    acts: list
    rests: list
    n_windows: int
    failed: list[str]


ChunkEngine = Callable[[ExtractJob, list[ChunkWork]], Iterator[EncodedChunk]]
"""Encodes the chunks and yields each one's result, in order, as soon as it is done."""


def encode_locally(bundle: WhisperBundle, job: ExtractJob, chunks: list[ChunkWork]) -> Iterator[EncodedChunk]:
    """The local engine: each chunk decoded and encoded in this process, one after the other."""
    for work in chunks:
        yield encode_chunk(bundle, job, decode_chunk(job, work))


def encode_chunk(bundle: WhisperBundle, job: ExtractJob, decoded: DecodedChunk) -> EncodedChunk:
    """The activations of a decoded chunk's windows, in batches of `job.batch_size` windows."""
    batch_size = job.batch_size or size_for_width(bundle.d_model).extract_batch(bundle.device.type)
    acts: list = []
    rests: list = []
    n_windows = 0
    if decoded.windows:
        with torch.inference_mode():
            if job.pack is not None:
                acts, n_windows = _encode_packed(bundle, decoded.windows, job.layer, batch_size, job.pack)
            else:
                acts, rests = _encode_windows(bundle, decoded.windows, job.layer, batch_size, job.keep_rest)
                n_windows = len(decoded.windows)
    spans = [_Window(np.zeros(0, np.float32), w.spans) for w in decoded.windows]
    return EncodedChunk(spans, acts, rests, n_windows, decoded.failed)


def decode_chunk(job: ExtractJob, work: ChunkWork) -> DecodedChunk:
    """The windows of the chunk's units, and the clips that failed to decode."""
    windows: list[_Window] = []
    failed: list[str] = []
    clips = work.clips
    for unit in work.units:
        rows, audios = [], []
        for row in unit.rows:
            try:
                audio = decode_audio(job.corpus / clips[row].path)
            except AtlasError as exc:
                failed.append(f"{clips[row].id}: {exc}")
                continue
            if real_frames(len(audio)) > 0:
                rows.append(row)
                audios.append(audio)
        if unit.solo:
            windows += [w for row, audio in zip(rows, audios) for w in _solo_windows(row, audio)]
        elif rows:
            try:
                windows.append(_recording_window(rows, audios))
            except ValueError as exc:
                failed += [f"{clips[row].id}: {exc}" for row in rows]
    return DecodedChunk(windows, failed)


def _append(
    folder: Path,
    meta: ActivationsMeta,
    windows: list[_Window],
    acts: list,
    rests: list,
    report: ExtractReport,
) -> None:
    """Write the windows' activations as one shard, each frame indexed by (clip row, frame in the clip);
    for decodable activations with where each frame sits in its window and the windows' other frames."""
    spans = [s for w in windows for s in w.spans]
    acts_ND = torch.cat(acts).numpy()
    index_N2 = np.concatenate(
        [np.stack([np.full(s.n_real, s.row), s.first_frame + np.arange(s.n_real)], axis=1) for s in spans]
    )
    rest = None
    if meta.decodable:
        place = [
            (w, s.offset + np.arange(s.n_real)) for w, window in enumerate(windows) for s in window.spans
        ]
        rest = WindowRest(
            place_N2=np.concatenate([np.stack([np.full(len(f), w), f], axis=1) for w, f in place]),
            rest_MD=torch.cat([states for states, _ in rests]).numpy(),
            rest_place_M2=np.concatenate(
                [np.stack([np.full(len(f), w), f], axis=1) for w, (_, f) in enumerate(rests)]
            ),
        )
    append_shard(folder, meta, acts_ND, index_N2, windows=[w.rows for w in windows], rest=rest)
    report.frames += len(index_N2)
    report.clips_done += len({s.row for s in spans})
