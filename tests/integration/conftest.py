"""Shared by the integration tests: the default corpus that `make test` builds (real speech, real model)."""

from __future__ import annotations

from pathlib import Path

import pytest

from pipelines.corpus.manifest import MANIFEST_NAME


@pytest.fixture(scope="module")
def corpus(repo_data_dir: Path) -> Path:
    folder = repo_data_dir / "corpora" / "default"
    if not (folder / MANIFEST_NAME).is_file():
        pytest.skip(f"no default corpus at {folder}: run `whisper-atlas corpus build` first")
    return folder
