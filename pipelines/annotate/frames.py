"""The frame annotations file: categorical attributes of every stored encoder frame of a run.

Scoring a hypothesis about an SAE feature ("fires on Spanish /s/", "fires at speech onsets") needs, for
each frame the feature was scanned on, whether the hypothesis holds there. Every attribute is one int32 code
per frame, whose names are in a small vocabulary, with -1 where the attribute does not apply (no word under
a non-speech frame), so "attribute == value" is one comparison over all frames.

On disk, in one folder (this module is the only reader and writer):

    frame_annotations.npz    clip_row, frame (int32 (N,)) and `code:<attribute>` per attribute (int16 when
                             every code fits, else int32), compressed
    frame_annotations.json   {"version", "n_frames", "vocab": {attribute: [value names]}}

Each file is written beside its name and renamed into place (`pipelines.durable`), the arrays first, so a
reader finds the previous pair or the new one; `load` refuses a pair whose attributes or frame counts differ.
"""

from __future__ import annotations

import io
import json
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np

from pipelines import durable

ARRAYS_NAME = "frame_annotations.npz"
VOCAB_NAME = "frame_annotations.json"
FORMAT_VERSION = 1
_CODE_PREFIX = "code:"


@dataclass
class FrameAnnotations:
    """Categorical annotations of frames: one int32 code per frame per attribute; -1 = not applicable."""

    clip_row: np.ndarray
    """int32 (N,) manifest row of each frame."""
    frame: np.ndarray
    """int32 (N,) encoder frame within its clip."""
    codes: dict[str, np.ndarray]
    """attribute -> int32 (N,) code of each frame."""
    vocab: dict[str, list[str]]
    """attribute -> value names; code i means vocab[attribute][i]."""

    def __post_init__(self) -> None:
        self.clip_row = np.asarray(self.clip_row, dtype=np.int32)
        self.frame = np.asarray(self.frame, dtype=np.int32)
        self.codes = {name: np.asarray(c, dtype=np.int32) for name, c in self.codes.items()}
        if set(self.codes) != set(self.vocab):
            raise ValueError(
                f"attributes with codes {sorted(self.codes)} differ from vocab {sorted(self.vocab)}"
            )
        n = len(self.clip_row)
        for name, codes_N in self.codes.items():
            if codes_N.shape != (n,) or self.frame.shape != (n,):
                raise ValueError(f"{name}: {codes_N.shape[0]} codes for {n} frames")
            if n and not -1 <= codes_N.min() <= codes_N.max() < len(self.vocab[name]):
                raise ValueError(f"{name}: codes outside -1..{len(self.vocab[name]) - 1}")

    @property
    def n_frames(self) -> int:
        return len(self.clip_row)

    def save(self, folder: Path) -> None:
        """Write both files into `folder` (created), each atomically."""
        folder.mkdir(parents=True, exist_ok=True)
        arrays: dict[str, Any] = {"clip_row": self.clip_row, "frame": self.frame}
        for name, codes_N in self.codes.items():
            fits16 = codes_N.size == 0 or codes_N.max() < np.iinfo(np.int16).max
            arrays[_CODE_PREFIX + name] = codes_N.astype(np.int16 if fits16 else np.int32)
        buffer = io.BytesIO()
        np.savez_compressed(buffer, **arrays)
        header = {"version": FORMAT_VERSION, "n_frames": self.n_frames, "vocab": self.vocab}
        _write_atomically(folder / ARRAYS_NAME, buffer.getvalue())
        _write_atomically(folder / VOCAB_NAME, json.dumps(header, ensure_ascii=False).encode())

    @classmethod
    def load(cls, folder: Path) -> "FrameAnnotations":
        header = json.loads((folder / VOCAB_NAME).read_text(encoding="utf-8"))
        if header.get("version") != FORMAT_VERSION:
            raise ValueError(f"{folder / VOCAB_NAME}: format version {header.get('version')}, expected 1")
        with np.load(folder / ARRAYS_NAME) as arrays:
            codes = {
                k.removeprefix(_CODE_PREFIX): arrays[k] for k in arrays.files if k.startswith(_CODE_PREFIX)
            }
            clip_row, frame = arrays["clip_row"], arrays["frame"]
        if len(clip_row) != header["n_frames"] or set(codes) != set(header["vocab"]):
            raise ValueError(f"{folder}: {ARRAYS_NAME} and {VOCAB_NAME} are from different writes")
        return cls(clip_row, frame, codes, header["vocab"])

    def select(self, mask: np.ndarray) -> "FrameAnnotations":
        """The frames where `mask` (bool (N,)) is true, in order, with the same vocabularies."""
        mask = np.asarray(mask)
        if mask.dtype != bool or mask.shape != (self.n_frames,):
            raise ValueError(
                f"select takes a bool mask of {self.n_frames} frames, got {mask.dtype} {mask.shape}"
            )
        codes = {name: codes_N[mask] for name, codes_N in self.codes.items()}
        return FrameAnnotations(self.clip_row[mask], self.frame[mask], codes, dict(self.vocab))


def _write_atomically(target: Path, data: bytes) -> None:
    durable.remove_leftovers(target)
    tmp = durable.sibling(target, "tmp")
    tmp.write_bytes(data)
    durable.replace(tmp, target)
