"""How `pipelines.model.packing` shares encoder windows between clips (kept apart so the CLI reads its
defaults without importing torch)."""

from __future__ import annotations

from typing import Annotated

from pydantic import Field

from pipelines.config import config
from pipelines.constants import FRAMES_PER_WINDOW
from pipelines.errors import AtlasError


class PackConfigError(AtlasError, ValueError):
    """An out-of-range packing setting."""


@config(PackConfigError, frozen=True)
class PackConfig:
    """How clips share windows."""

    context_frames: Annotated[int, Field(ge=0, lt=FRAMES_PER_WINDOW)] = 300
    """Padding frames (20 ms each) kept after each clip as its own attention context (300 = 6 s)."""

    def block(self, n_real: int) -> int:
        """Frames a clip of `n_real` real frames occupies in a packed window."""
        return min(n_real + self.context_frames, FRAMES_PER_WINDOW)
