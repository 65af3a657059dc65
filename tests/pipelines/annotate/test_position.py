"""Window position bands: a clip's offset in its joined window plus its frame, wrapping at 30 s."""

from __future__ import annotations

import numpy as np

from pipelines.annotate.position import WINDOW_POSITION_VALUES, joined_offsets, window_position_codes
from pipelines.recordings import GAP_SAMPLES, join
from tests.pipelines.annotate.conftest import silence


def bands(offset: int, frames: list[int]) -> list[str]:
    return [WINDOW_POSITION_VALUES[c] for c in window_position_codes(offset, np.array(frames))]


def test_bands_on_known_frames() -> None:
    assert bands(0, [0, 24, 25, 99, 100, 499, 500, 1499]) == [
        "0-0.5 s", "0-0.5 s", "0.5-2 s", "0.5-2 s", "2-10 s", "2-10 s", "10-30 s", "10-30 s"
    ]  # fmt: skip
    assert bands(75, [0, 25]) == ["0.5-2 s", "2-10 s"]
    assert bands(0, [1500, 1525, 2000]) == ["0-0.5 s", "0.5-2 s", "10-30 s"]  # a long clip's next window


def test_offsets_are_where_join_puts_each_clip() -> None:
    audios = [silence(1.0), silence(0.33), silence(2.0)]
    assert joined_offsets(audios) == join(audios)[1]
    assert joined_offsets(audios)[1] == (16000 + GAP_SAMPLES) // 320  # 1 s clip + 0.5 s gap: frame 75
