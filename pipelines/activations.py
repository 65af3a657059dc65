"""Activation shards: the frame-level encoder activations that extraction writes and training/analysis read.

On disk, under `data/runs/<run>/activations/`:

    meta.json              {"model", "layer", "d_model", "dtype", "corpus", "window", "shards": [...]}
    shard_00000.npy        float16 (N, D): one row per REAL frame (padding never stored)
    shard_00000.index.npy  int32 (N, 2): (clip row in the manifest, encoder frame within the clip)

and, when `decodable` (exact windows at the final encoder layer), what rebuilds each window's whole output:

    shard_00000.place.npy      int32 (N, 2): (window in the shard, encoder frame in it) of each real frame
    shard_00000.rest.npy       float16 (M, D): the window frames that are no clip's (gaps, padding)
    shard_00000.rest_place.npy int32 (M, 2): their (window in the shard, encoder frame in it)

Why keep the rest: Whisper's decoder reads all 1500 frames of a window, padding included, so with them the
later stages transcribe, align and take language gradients from the stored states (`iter_windows`) instead
of running the encoder again (about a third more frames on the default corpus, 74 MB).

A shard holds whole clips only, so a clip's frames are contiguous and in order. `meta.json` is rewritten
after each shard, which makes extraction resumable: clips listed in finished shards are skipped.
"""

from __future__ import annotations

import json
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Iterator, Literal

import numpy as np

from pipelines.errors import missing_stage

META_NAME = "meta.json"


@dataclass
class ShardInfo:
    name: str
    n_frames: int
    clip_rows: list[int]
    windows: list[list[int]] = field(default_factory=list)
    """The clip rows of each encoder window (packed blocks listed as windows of one clip)."""


@dataclass
class ActivationsMeta:
    model: str
    layer: int
    d_model: int
    corpus: str
    fingerprint: str = ""
    """Hash of the inputs (model, layer, manifest) the shards were made from; a change invalidates them."""
    dtype: str = "float16"
    window: str = "packed"
    """How windows were filled (`pipelines.recordings.WindowMode`); metas written before it were packed."""
    decodable: bool = False
    """Every frame of every window is stored (see the module docstring), so `iter_windows` can rebuild the
    decoder's input: recording and solo windows at the final layer."""
    shards: list[ShardInfo] = field(default_factory=list)

    @property
    def n_frames(self) -> int:
        return sum(s.n_frames for s in self.shards)

    @property
    def done_clip_rows(self) -> set[int]:
        return {row for s in self.shards for row in s.clip_rows}

    @property
    def solo_clip_rows(self) -> set[int]:
        """Clips that had every window to themselves (what the server computes for an upload)."""
        if self.window == "packed":
            return set()
        shared = {row for s in self.shards for w in s.windows if len(w) > 1 for row in w}
        return self.done_clip_rows - shared


def read_meta(folder: Path) -> ActivationsMeta | None:
    path = folder / META_NAME
    if not path.exists():
        return None
    raw = json.loads(path.read_text())
    raw["shards"] = [ShardInfo(**s) for s in raw["shards"]]
    return ActivationsMeta(**raw)


def write_meta(folder: Path, meta: ActivationsMeta) -> None:
    tmp = folder / (META_NAME + ".tmp")
    tmp.write_text(json.dumps(asdict(meta), indent=1))
    tmp.replace(folder / META_NAME)


@dataclass
class WindowRest:
    """What a shard needs beyond its real frames to rebuild every window's whole encoder output."""

    place_N2: np.ndarray
    """(window in the shard, encoder frame in it) of each real frame, in shard order."""
    rest_MD: np.ndarray
    """The windows' other frames (gaps between clips, padding)."""
    rest_place_M2: np.ndarray


@dataclass
class StoredWindow:
    """One encoder window as extraction ran it: its clips, where each starts, and its whole output."""

    rows: list[int]
    """Manifest rows of its clips, in join order."""
    offsets: list[int]
    """Encoder frame of the window at which each clip's frames start."""
    first_frames: list[int]
    """Frame number within the clip of each clip's first frame here (> 0 for a long clip's later windows)."""
    n_frames: int
    """Frames from the window's start to the end of its last clip (what the decoder should attend to)."""
    states_TD: np.ndarray
    """float16 (1500, D): the layer's output over the whole window."""


def append_shard(
    folder: Path,
    meta: ActivationsMeta,
    acts_ND: np.ndarray,
    index_N2: np.ndarray,
    windows: list[list[int]] | None = None,
    rest: WindowRest | None = None,
) -> None:
    """Write one shard (whole clips) and record it in meta.json only once its files are complete."""
    assert acts_ND.shape[0] == index_N2.shape[0] and acts_ND.shape[1] == meta.d_model
    assert (rest is not None) == meta.decodable, "decodable activations store every window frame"
    folder.mkdir(parents=True, exist_ok=True)
    name = f"shard_{len(meta.shards):05d}"
    if rest is not None:
        assert rest.place_N2.shape[0] == acts_ND.shape[0]
        np.save(folder / f"{name}.place.npy", rest.place_N2.astype(np.int32, copy=False))
        np.save(folder / f"{name}.rest.npy", rest.rest_MD.astype(np.float16, copy=False))
        np.save(folder / f"{name}.rest_place.npy", rest.rest_place_M2.astype(np.int32, copy=False))
    np.save(folder / f"{name}.npy", acts_ND.astype(np.float16, copy=False))
    np.save(folder / f"{name}.index.npy", index_N2.astype(np.int32, copy=False))
    clip_rows = sorted(set(int(r) for r in index_N2[:, 0]))
    meta.shards.append(
        ShardInfo(name=name, n_frames=int(acts_ND.shape[0]), clip_rows=clip_rows, windows=windows or [])
    )
    write_meta(folder, meta)


def iter_shards(folder: Path, mmap: bool = True) -> Iterator[tuple[np.ndarray, np.ndarray]]:
    """Yield (acts_ND float16, index_N2 int32) per shard, memory-mapped by default."""
    meta = read_meta(folder)
    if meta is None:
        raise missing_stage("activations", folder, "extract")
    mode: Literal["r"] | None = "r" if mmap else None
    for shard in meta.shards:
        acts = np.load(folder / f"{shard.name}.npy", mmap_mode=mode)
        index = np.load(folder / f"{shard.name}.index.npy", mmap_mode=mode)
        yield acts, index


def load_all(folder: Path) -> tuple[np.ndarray, np.ndarray]:
    """Every frame in one array pair (acts_ND float16, index_N2 int32); fine for the default corpus size."""
    pairs = list(iter_shards(folder, mmap=False))
    if not pairs:
        meta = read_meta(folder)
        d = meta.d_model if meta else 0
        return np.zeros((0, d), np.float16), np.zeros((0, 2), np.int32)
    return np.concatenate([a for a, _ in pairs]), np.concatenate([i for _, i in pairs])


def iter_windows(folder: Path, frames_per_window: int) -> Iterator[StoredWindow]:
    """Every window of decodable activations, rebuilt from the shard files, in extraction order."""
    meta = read_meta(folder)
    if meta is None:
        raise missing_stage("activations", folder, "extract")
    if not meta.decodable:
        raise ValueError(f"the activations in {folder} do not store whole windows (re-run extract)")
    for shard in meta.shards:
        acts = np.load(folder / f"{shard.name}.npy", mmap_mode="r")
        index = np.load(folder / f"{shard.name}.index.npy")
        place = np.load(folder / f"{shard.name}.place.npy")
        rest = np.load(folder / f"{shard.name}.rest.npy", mmap_mode="r")
        rest_place = np.load(folder / f"{shard.name}.rest_place.npy")
        for w, rows in enumerate(shard.windows):
            states_TD = np.zeros((frames_per_window, meta.d_model), np.float16)
            mine = np.flatnonzero(place[:, 0] == w)
            states_TD[place[mine, 1]] = acts[mine]
            other = np.flatnonzero(rest_place[:, 0] == w)
            states_TD[rest_place[other, 1]] = rest[other]
            offsets, firsts, end = [], [], 0
            for row in rows:
                frames = mine[index[mine, 0] == row]
                offsets.append(int(place[frames[0], 1]))
                firsts.append(int(index[frames[0], 1]))
                end = max(end, int(place[frames[-1], 1]) + 1)
            yield StoredWindow(list(rows), offsets, firsts, end, states_TD)
