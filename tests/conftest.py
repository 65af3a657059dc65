"""Shared fixtures: every test gets its own data folder so nothing touches the user's `data/`."""

from __future__ import annotations

from pathlib import Path

import pytest
import torch


@pytest.fixture(autouse=True)
def seeded_torch() -> None:
    """Every test starts from one torch RNG state: a float tolerance cannot pass here and fail in CI."""
    torch.manual_seed(0)


@pytest.fixture
def data_root(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Path:
    """A fresh `WHISPER_ATLAS_DATA` folder for one test."""
    root = tmp_path / "data"
    root.mkdir()
    monkeypatch.setenv("WHISPER_ATLAS_DATA", str(root))
    return root


@pytest.fixture(scope="session")
def repo_data_dir() -> Path:
    """The real data folder (models and corpora built by `make demo` / the integration setup)."""
    from pipelines.paths import DEFAULT_DATA_DIR

    return DEFAULT_DATA_DIR
