"""Frame sources for online training (`pipelines.sae.stream`): encoder frames as they come, never stored.

- `CorpusSource`: a corpus folder with its manifest, windowed exactly as `pipelines.extract` windows it
  (speaker recordings or solo windows, real frames only, the same helpers), decoded a few recordings at a time
  and encoded `batch_size` windows per call. The train/evaluation split is `pipelines.sae.split`'s, as for
  stored activations, so `analyze` can later read the SAE's split against activations of the same corpus.
- `DatasetSource`: a Hugging Face dataset streamed through `datasets` (the optional `hf` extra), each
  example decoded in a worker process as `corpus add-hf` decodes it and encoded alone in its window; a
  seeded hash of the speaker (or of the example, when the dataset names no speakers) holds examples out.
A piece is the frames of one encoder call; every pass re-runs the encoder (that is the price of not storing).
"""

from __future__ import annotations

import hashlib
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Iterator

import torch
from torch import Tensor

from pipelines.constants import FRAMES_PER_WINDOW, SAMPLE_RATE, SAMPLES_PER_FRAME
from pipelines.corpus.manifest import MANIFEST_NAME, Clip, read_manifest
from pipelines.errors import AtlasError, missing_stage
from pipelines.extract import (
    ChunkWork,
    DecodedChunk,
    ExtractJob,
    _chunks,
    _solo_windows,
    _units,
    _Window,
    decode_chunk,
    encode_chunk,
)
from pipelines.model.encoder import check_layer
from pipelines.model.loader import WhisperBundle
from pipelines.model.sizes import size_for_width
from pipelines.recordings import WindowMode
from pipelines.sae.split import split_clips


def _encode(bundle: WhisperBundle, job: ExtractJob, windows: list[_Window]) -> list[tuple[int, Tensor]]:
    """(clip row, float16 real frames) of every span of `windows` (at most one encoder call's worth)."""
    done = encode_chunk(bundle, job, DecodedChunk(windows, []))
    return [(span.row, acts) for span, acts in zip((s for w in done.windows for s in w.spans), done.acts)]


def _resolve(bundle: WhisperBundle, layer: int | None, batch_size: int | None) -> tuple[int, int]:
    """The layer and windows per call, defaulting to the model size's row as `extract` does."""
    size = size_for_width(bundle.d_model)
    layer = min(size.layer, bundle.n_layers) if layer is None else layer
    try:
        check_layer(bundle, layer)
    except ValueError as exc:
        raise AtlasError(str(exc)) from exc
    batch_size = size.extract_batch(bundle.device.type) if batch_size is None else batch_size
    if batch_size < 1:
        raise AtlasError(f"batch size must be at least 1, got {batch_size}")
    return layer, batch_size


@dataclass
class CorpusSource:
    """A corpus folder's frames, streamed (see the module docstring)."""

    corpus: Path
    bundle: WhisperBundle
    layer: int | None = None
    batch_size: int | None = None
    window: WindowMode = "recording"
    heldout_fraction: float = 0.15
    seed: int = 0
    failed: list[str] = field(default_factory=list)
    """`clip id: reason` of clips that could not be decoded (last pass)."""

    def __post_init__(self) -> None:
        if not (self.corpus / MANIFEST_NAME).is_file():
            raise missing_stage("corpus manifest", self.corpus, "corpus build")
        if self.window == "packed":
            raise AtlasError("streaming runs recording or solo windows, not packed ones")
        self.encoder_layer, self.encoder_batch = _resolve(self.bundle, self.layer, self.batch_size)
        self.clips: list[Clip] = read_manifest(self.corpus)
        self.split = split_clips(dict(enumerate(self.clips)), self.heldout_fraction, self.seed)
        if not self.split.train:
            raise AtlasError(f"no clip of {self.corpus} is left to train on: lower the held-out fraction")
        self.d_model = self.bundle.d_model
        self.max_piece = self.encoder_batch * FRAMES_PER_WINDOW
        self.info: dict[str, Any] = {
            "model": self.bundle.name,
            "layer": self.encoder_layer,
            "corpus": self.corpus.name,
            "window": self.window,
            "split": self.split.to_dict(),
            "heldout_clip_rows": self.split.evaluation,
        }

    def pieces(self, rows: set[int]) -> Iterator[tuple[int, Tensor]]:
        """(clip row, frames) of the clips in `rows`, one encoder call at a time (their recordings whole)."""
        units = [unit for unit in _units(self.clips, self.window) if rows.intersection(unit.rows)]
        job = ExtractJob(self.corpus, self.encoder_layer, self.encoder_batch, pack=None, keep_rest=False)
        self.failed = []
        for chunk in _chunks(units, self.clips, self.max_piece):
            work = ChunkWork(chunk, {row: self.clips[row] for unit in chunk for row in unit.rows})
            decoded = decode_chunk(job, work)
            self.failed += decoded.failed
            for start in range(0, len(decoded.windows), self.encoder_batch):
                batch = decoded.windows[start : start + self.encoder_batch]
                yield from ((row, acts) for row, acts in _encode(self.bundle, job, batch) if row in rows)

    def train_pieces(self) -> Iterator[Tensor]:
        return _joined(self.pieces(set(self.split.train)), self.max_piece)

    def heldout_pieces(self) -> Iterator[tuple[str, Tensor]]:
        name_of = {row: name for name in ("speaker", "group") for row in getattr(self.split, name)}
        for row, acts in self.pieces(set(name_of)):
            yield name_of[row], acts

    def expected_train_frames(self, seen_frames: int) -> int:
        """From the manifest's durations (the frames extraction would store)."""
        return sum(_frames(self.clips[row].duration) for row in self.split.train)


def _frames(seconds: float) -> int:
    return -(-int(round(seconds * SAMPLE_RATE)) // SAMPLES_PER_FRAME)


def _joined(spans: Iterator[tuple[int, Tensor]], max_piece: int) -> Iterator[Tensor]:
    """Spans joined into pieces of at most `max_piece` frames (a span never exceeds one window)."""
    held: list[Tensor] = []
    size = 0
    for _, acts in spans:
        if size + len(acts) > max_piece:
            yield torch.cat(held)
            held, size = [], 0
        held.append(acts)
        size += len(acts)
    if held:
        yield torch.cat(held)


@dataclass
class DatasetSource:
    """A Hugging Face dataset's frames, streamed (see the module docstring); needs `datasets`."""

    dataset: str
    bundle: WhisperBundle
    config: str | None = None
    split_name: str = "train"
    limit: int = 1000
    data_dir: str | None = None
    layer: int | None = None
    batch_size: int | None = None
    heldout_fraction: float = 0.15
    seed: int = 0
    failed: list[str] = field(default_factory=list)
    train_examples: int = 0
    """Training examples decoded so far (with the frames streamed, the estimate of a pass's frames)."""

    def __post_init__(self) -> None:
        if self.limit < 1:
            raise AtlasError(f"--limit must be positive, got {self.limit}")
        self.encoder_layer, self.encoder_batch = _resolve(self.bundle, self.layer, self.batch_size)
        self.d_model = self.bundle.d_model
        self.max_piece = self.encoder_batch * FRAMES_PER_WINDOW
        self.info: dict[str, Any] = {
            "model": self.bundle.name,
            "layer": self.encoder_layer,
            "corpus": f"hf:{self.dataset}{'/' + self.config if self.config else ''}:{self.split_name}",
            "window": "solo",
            "split": None,
            "heldout": f"{self.heldout_fraction} of speakers (examples without one) by seeded hash",
        }

    def is_held_out(self, speaker: str, key: str) -> bool:
        """Whether an example is an evaluation example: a seeded hash of its speaker, else of its key."""
        digest = hashlib.sha256(f"{self.seed}:{speaker or key}".encode()).digest()
        return int.from_bytes(digest[:8], "big") / 2**64 < self.heldout_fraction

    def _examples(self) -> Iterator:
        from pipelines.corpus import hf

        try:
            import datasets
        except ImportError:
            raise AtlasError(f"Hugging Face `datasets` is not installed: {hf.INSTALL_HINT}") from None
        try:
            rows = datasets.load_dataset(
                self.dataset, self.config, data_dir=self.data_dir, split=self.split_name, streaming=True
            )
            features = rows.features or {}
            audio = next((n for n, f in features.items() if isinstance(f, datasets.Audio)), None)
            layout = hf.layout_for(self.dataset, features, audio)
            rows = rows.cast_column(layout.audio, datasets.Audio(decode=False))
        except AtlasError:
            raise
        except Exception as exc:  # the hub client raises many kinds: offline, gated, unknown config
            raise AtlasError(f"cannot stream {self.dataset}: {str(exc).splitlines()[0]}") from exc
        for index, row in zip(range(self.limit), rows):
            yield hf.map_example(row, layout, self.config, index)

    def _spans(self, held_out: bool) -> Iterator[tuple[int, Tensor]]:
        from pipelines.corpus.hf import decode_isolated

        job = ExtractJob(Path("."), self.encoder_layer, self.encoder_batch, pack=None, keep_rest=False)
        windows: list[_Window] = []
        for index, example in enumerate(self._examples()):
            if self.is_held_out(example.speaker, example.key) != held_out:
                continue
            self.train_examples += not held_out
            try:
                audio = decode_isolated(example.audio, f"example-{index}")
            except AtlasError as exc:
                self.failed.append(f"{example.key}: {exc}")
                continue
            windows += _solo_windows(index, audio)
            while len(windows) >= self.encoder_batch:
                yield from _encode(self.bundle, job, windows[: self.encoder_batch])
                windows = windows[self.encoder_batch :]
        if windows:
            yield from _encode(self.bundle, job, windows)

    def train_pieces(self) -> Iterator[Tensor]:
        return _joined(self._spans(held_out=False), self.max_piece)

    def heldout_pieces(self) -> Iterator[tuple[str, Tensor]]:
        for _, acts in self._spans(held_out=True):
            yield "speaker", acts

    def expected_train_frames(self, seen_frames: int) -> int:
        """Frames per example so far x the training examples of `limit` (an estimate: lengths vary)."""
        per_example = seen_frames / max(self.train_examples, 1)
        return max(seen_frames, round(per_example * self.limit * (1 - self.heldout_fraction)))
