"""Extraction: run Whisper's encoder over a corpus and store the activations of real frames at one layer.

Frame-level activations of the encoder (the final output by default, as in "Mechanistic Interpretability of
ASR models using Sparse Autoencoders") are what the SAE trains on. Padding frames are never stored: a clip of
n samples has `real_frames(n)` frames in its window, the rest of the 30 s is padding (pitfall: padding has
larger norms and would dominate an SAE). Clips longer than 30 s are cut into 30 s windows whose frames
continue the clip's frame numbering.

Two ways to run the encoder:
- solo (`pack=False`): every window holds one clip, padded to 30 s, exactly what the server sees live;
- packed (`pack=True`, see `pipelines.model.packing`): short clips share a window, each with its own
  `context_frames` of padding; several times faster on CPU at a measured fidelity (per-frame cosine ~0.99).

Shards hold whole clips (`pipelines.activations`); meta.json is rewritten after each, so an interrupted run
resumes at the next unfinished clip. A changed fingerprint (model, layer, manifest content, packing) discards
the old shards and starts over.
"""

from __future__ import annotations

import hashlib
import shutil
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Callable

import numpy as np
import torch

from pipelines.activations import ActivationsMeta, append_shard, read_meta
from pipelines.audio import decode_audio
from pipelines.constants import SAMPLE_RATE, SAMPLES_PER_FRAME, WINDOW_SAMPLES
from pipelines.corpus.manifest import MANIFEST_NAME, Clip, read_manifest
from pipelines.errors import AtlasError, missing_stage
from pipelines.model.encoder import check_layer, encode, features_for, real_frames
from pipelines.model.loader import WhisperBundle
from pipelines.model.packing import PackConfig, block_features, build_batch, packed_layout, plan_windows
from pipelines.paths import RunPaths
from pipelines.stages import fingerprint

SHARD_FRAMES = 16384
"""Frames per shard (~16 MB of float16 at d_model 512): the unit of resumption and of progress."""


@dataclass
class ExtractReport:
    """What one `extract` call did."""

    layer: int
    packed: bool
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
class _Piece:
    """At most 30 s of one clip: what one window (or one packed block) encodes."""

    row: int
    first_frame: int
    audio: np.ndarray

    @property
    def n_real(self) -> int:
        return real_frames(len(self.audio))


def _pieces(row: int, audio: np.ndarray) -> list[_Piece]:
    return [
        _Piece(row, start // SAMPLES_PER_FRAME, audio[start : start + WINDOW_SAMPLES])
        for start in range(0, len(audio), WINDOW_SAMPLES)
    ]


def _stored(acts_TD: torch.Tensor) -> torch.Tensor:
    """A float16 CPU copy of real frames (a view would keep its whole 30 s window alive)."""
    return acts_TD.to("cpu", torch.float16)


def _encode_solo(
    bundle: WhisperBundle, pieces: list[_Piece], layer: int, batch_size: int
) -> tuple[list, int]:
    """Activations (n_real, D) per piece, one padded window each; and the number of windows run."""
    acts = []
    for start in range(0, len(pieces), batch_size):
        chunk = pieces[start : start + batch_size]
        out_BTD = encode(bundle, features_for(bundle, [p.audio for p in chunk]), layer)
        acts += [_stored(out_BTD[i, : p.n_real]) for i, p in enumerate(chunk)]
    return acts, len(pieces)


def _encode_packed(
    bundle: WhisperBundle, pieces: list[_Piece], layer: int, batch_size: int, config: PackConfig
) -> tuple[list, int]:
    """Activations (n_real, D) per piece from packed windows; and the number of windows run."""
    windows = plan_windows([p.n_real for p in pieces], config)
    acts: list = [None] * len(pieces)
    for start in range(0, len(windows), batch_size):
        chunk = windows[start : start + batch_size]
        mels = {pl.item: block_features(bundle, pieces[pl.item].audio, pl.block) for w in chunk for pl in w}
        batch = build_batch(chunk, mels)
        with packed_layout(bundle, batch):
            out_BTD = encode(bundle, batch.features_BMT, layer)
        for row, window in enumerate(chunk):
            for pl in window:
                acts[pl.item] = _stored(out_BTD[row, pl.offset : pl.offset + pieces[pl.item].n_real])
    return acts, len(windows)


def extraction_fingerprint(corpus: Path, bundle: WhisperBundle, layer: int, pack: PackConfig | None) -> str:
    """Hash of what the activations depend on: model, layer, manifest content, packing."""
    manifest = hashlib.sha256((corpus / MANIFEST_NAME).read_bytes()).hexdigest()
    packing = pack.context_frames if pack is not None else None
    return fingerprint(model=bundle.name, layer=layer, manifest=manifest, pack_context_frames=packing)


def _open_meta(folder: Path, fresh: ActivationsMeta) -> tuple[ActivationsMeta, bool]:
    """The existing meta if its fingerprint matches `fresh`'s; else an emptied folder (restarted=True)."""
    meta = read_meta(folder)
    if meta is not None and meta.fingerprint == fresh.fingerprint:
        return meta, False
    if folder.exists():
        shutil.rmtree(folder)
    folder.mkdir(parents=True)
    return fresh, meta is not None


def _chunks(rows: list[int], clips: list[Clip], frames: int) -> list[list[int]]:
    """Consecutive rows whose estimated frames fill about one shard."""
    chunks: list[list[int]] = [[]]
    total = 0
    for row in rows:
        if chunks[-1] and total >= frames:
            chunks.append([])
            total = 0
        chunks[-1].append(row)
        total += int(clips[row].duration * SAMPLE_RATE / SAMPLES_PER_FRAME) + 1
    return [c for c in chunks if c]


def extract(
    corpus: Path,
    run: RunPaths,
    bundle: WhisperBundle,
    layer: int | None,
    batch_size: int,
    pack: bool,
    *,
    context_frames: int = PackConfig.context_frames,
    shard_frames: int = SHARD_FRAMES,
    on_progress: Callable[[int, int], None] | None = None,
) -> ExtractReport:
    """Encode every clip of `corpus` not yet extracted and append its real frames to `run`'s shards.

    `on_progress(clips_finished, clips_total)` is called after each shard (the count includes resumed clips).
    """
    if batch_size < 1:
        raise AtlasError(f"batch size must be at least 1, got {batch_size}")
    if not (corpus / MANIFEST_NAME).is_file():
        raise missing_stage("corpus manifest", corpus, "corpus build")
    layer = bundle.n_layers if layer is None else layer
    try:
        check_layer(bundle, layer)
    except ValueError as exc:
        raise AtlasError(str(exc)) from exc
    config = PackConfig(context_frames=context_frames) if pack else None
    clips = read_manifest(corpus)
    fresh = ActivationsMeta(
        model=bundle.name,
        layer=layer,
        d_model=bundle.d_model,
        corpus=corpus.name,
        fingerprint=extraction_fingerprint(corpus, bundle, layer, config),
    )
    meta, restarted = _open_meta(run.activations, fresh)
    done = meta.done_clip_rows
    todo = [row for row in range(len(clips)) if row not in done]
    report = ExtractReport(
        layer=layer,
        packed=pack,
        clips_total=len(clips),
        clips_done=0,
        clips_skipped=len(clips) - len(todo),
        frames=0,
        windows=0,
        seconds=0.0,
        restarted=restarted,
    )
    started = time.perf_counter()
    finished = report.clips_skipped
    for chunk in _chunks(todo, clips, shard_frames):
        pieces = _decode_chunk(corpus, clips, chunk, report)
        if pieces:
            with torch.inference_mode():
                if config is not None:
                    acts, windows = _encode_packed(bundle, pieces, layer, batch_size, config)
                else:
                    acts, windows = _encode_solo(bundle, pieces, layer, batch_size)
            _append(run.activations, meta, pieces, acts, report)
            report.windows += windows
        finished += len(chunk)
        if on_progress is not None:
            on_progress(finished, len(clips))
    report.seconds = time.perf_counter() - started
    return report


def _decode_chunk(corpus: Path, clips: list[Clip], chunk: list[int], report: ExtractReport) -> list[_Piece]:
    """The non-empty pieces of the chunk's clips; clips that fail to decode are listed in `report.failed`."""
    pieces: list[_Piece] = []
    for row in chunk:
        try:
            pieces += _pieces(row, decode_audio(corpus / clips[row].path))
        except AtlasError as exc:
            report.failed.append(f"{clips[row].id}: {exc}")
    return [p for p in pieces if p.n_real > 0]


def _append(
    folder: Path, meta: ActivationsMeta, pieces: list[_Piece], acts: list, report: ExtractReport
) -> None:
    """Write the pieces' activations as one shard, each frame indexed by (clip row, frame in the clip)."""
    acts_ND = torch.cat(acts).numpy()
    index_N2 = np.concatenate(
        [np.stack([np.full(p.n_real, p.row), p.first_frame + np.arange(p.n_real)], axis=1) for p in pieces]
    )
    append_shard(folder, meta, acts_ND, index_N2)
    report.frames += len(index_N2)
    report.clips_done += len({p.row for p in pieces})
