"""The frame annotations file: round trip, compact codes, consistency checks, select."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest

from pipelines.annotate.frames import ARRAYS_NAME, VOCAB_NAME, FrameAnnotations


def sample(n_words: int = 3) -> FrameAnnotations:
    return FrameAnnotations(
        clip_row=np.array([0, 0, 0, 2, 2]),
        frame=np.array([0, 1, 2, 0, 1]),
        codes={"vad": np.array([1, 0, 0, 0, 1]), "word": np.array([-1, 0, n_words - 1, 1, -1])},
        vocab={"vad": ["speech", "non-speech"], "word": [f"w{i}" for i in range(n_words)]},
    )


def test_save_load_round_trip(tmp_path: Path) -> None:
    original = sample()
    original.save(tmp_path / "annotations")
    loaded = FrameAnnotations.load(tmp_path / "annotations")
    assert loaded.vocab == original.vocab
    np.testing.assert_array_equal(loaded.clip_row, original.clip_row)
    np.testing.assert_array_equal(loaded.frame, original.frame)
    for name, codes_N in original.codes.items():
        np.testing.assert_array_equal(loaded.codes[name], codes_N)
        assert loaded.codes[name].dtype == np.int32
    assert sorted(p.name for p in (tmp_path / "annotations").iterdir()) == sorted([ARRAYS_NAME, VOCAB_NAME])


def test_codes_stored_as_int16_when_they_fit(tmp_path: Path) -> None:
    sample().save(tmp_path)
    with np.load(tmp_path / ARRAYS_NAME) as arrays:
        assert arrays["code:word"].dtype == np.int16
    sample(n_words=40000).save(tmp_path)
    with np.load(tmp_path / ARRAYS_NAME) as arrays:
        assert arrays["code:word"].dtype == np.int32
    assert FrameAnnotations.load(tmp_path).codes["word"][2] == 39999


def test_load_refuses_files_from_different_writes(tmp_path: Path) -> None:
    sample().save(tmp_path)
    header = json.loads((tmp_path / VOCAB_NAME).read_text())
    header["n_frames"] = 4
    (tmp_path / VOCAB_NAME).write_text(json.dumps(header))
    with pytest.raises(ValueError, match="different writes"):
        FrameAnnotations.load(tmp_path)


def test_codes_must_fit_vocab_and_frames() -> None:
    with pytest.raises(ValueError, match="outside"):
        FrameAnnotations(np.zeros(1), np.zeros(1), {"vad": np.array([2])}, {"vad": ["speech", "non-speech"]})
    with pytest.raises(ValueError, match="codes for"):
        FrameAnnotations(np.zeros(2), np.zeros(2), {"vad": np.array([0])}, {"vad": ["speech"]})
    with pytest.raises(ValueError, match="differ"):
        FrameAnnotations(np.zeros(1), np.zeros(1), {"vad": np.array([0])}, {})


def test_select_keeps_vocab_and_order() -> None:
    annotations = sample()
    subset = annotations.select(annotations.clip_row == 2)
    assert subset.n_frames == 2 and subset.vocab == annotations.vocab
    np.testing.assert_array_equal(subset.frame, [0, 1])
    np.testing.assert_array_equal(subset.codes["word"], [1, -1])
    with pytest.raises(ValueError, match="bool mask"):
        annotations.select(np.array([0, 1]))
