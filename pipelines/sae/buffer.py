"""A bounded shuffle buffer: how online training mixes frames it cannot shuffle over the whole corpus.

Consecutive frames of one clip are strongly correlated, so an SAE stepped on them in stream order would chase
each clip in turn. The buffer holds at most `capacity` frames (float16): it is filled from the stream,
shuffled, and batches are drawn from it until half of it is spent; then it is topped up and shuffled
again, so every frame waits among ~capacity / 2 others from many clips (SAELens' activation store mixes the
same way). Frames arrive in pieces of at most `max_piece` frames and a piece is only taken in whole while
it fits, which keeps the bound exact; `max_frames` records the most the buffer ever held.
"""

from __future__ import annotations

from typing import Iterator

import torch
from torch import Tensor

from pipelines.errors import AtlasError


class ShuffleBuffer:
    def __init__(self, capacity: int, d_model: int, max_piece: int, generator: torch.Generator) -> None:
        if capacity < 2 * max_piece:
            raise AtlasError(
                f"the buffer must hold at least two encoder calls' frames ({2 * max_piece:,}), "
                f"got {capacity:,}: raise the buffer size or lower the extraction batch"
            )
        self.capacity, self.max_piece, self.generator = capacity, max_piece, generator
        self.store_ND = torch.empty(capacity, d_model, dtype=torch.float16)
        self.size = 0
        self.max_frames = 0
        """The most frames held at once."""
        self.frames_in = 0
        """Frames taken from the stream so far."""

    @property
    def frames_ND(self) -> Tensor:
        """The frames held now (a view)."""
        return self.store_ND[: self.size]

    def fill(self, pieces: Iterator[Tensor]) -> bool:
        """Take pieces while one more surely fits, then shuffle; True when the stream has ended."""
        ended = False
        while self.capacity - self.size >= self.max_piece:
            piece_ND = next(pieces, None)
            if piece_ND is None:
                ended = True
                break
            if len(piece_ND) > self.max_piece:
                raise ValueError(f"a piece of {len(piece_ND)} frames exceeds max_piece={self.max_piece}")
            self.store_ND[self.size : self.size + len(piece_ND)] = piece_ND
            self.size += len(piece_ND)
            self.frames_in += len(piece_ND)
        self.max_frames = max(self.max_frames, self.size)
        self.store_ND[: self.size] = self.frames_ND[torch.randperm(self.size, generator=self.generator)]
        return ended

    def batches(self, pieces: Iterator[Tensor], batch_size: int) -> Iterator[Tensor]:
        """Batches (copies) of shuffled frames until the stream has ended and the buffer is empty; topped up
        whenever half of it is spent."""
        ended = False
        while True:
            if not ended and self.size <= self.capacity // 2:
                ended = self.fill(pieces)
            if self.size == 0:
                return
            n = min(batch_size, self.size)
            yield self.store_ND[self.size - n : self.size].clone()
            self.size -= n
