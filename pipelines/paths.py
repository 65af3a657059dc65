"""Where every stage reads and writes: one place that names the files under `data/`.

Layout (all git-ignored):

    data/cache/debs/<package>/          unpacked Debian packages the default corpus is built from
    data/models/<model-slug>/           converted transformers folders (bundled weights)
    data/corpora/<corpus>/              audio/*.flac + manifest.jsonl + NOTICE
    data/runs/<run>/activations/        float16 activation shards + frame index (extract)
    data/runs/<run>/sae/                SAELens-format checkpoint + metrics.json (train)
    data/runs/<run>/sae-stability/      the same SAE trained with the next seed (train --stability)
    data/runs/<run>/analysis/           per-feature statistics as .npz/.json (analyze)
    data/runs/<run>/atlas.duckdb        the atlas the server reads (build)
    data/runs/<run>/stages.json         which stages ran, with the fingerprints of their inputs
"""

from __future__ import annotations

import os
from dataclasses import dataclass
from pathlib import Path

DEFAULT_DATA_DIR = Path(os.environ.get("WHISPER_ATLAS_DATA", Path(__file__).resolve().parent.parent / "data"))
DEFAULT_RUN = "default"
DEFAULT_CORPUS = "default"
DEFAULT_HOST = "127.0.0.1"
"""Where the server listens by default (loopback: the server is a local research tool)."""
DEFAULT_PORT = 8000


def data_dir() -> Path:
    """The data root; `WHISPER_ATLAS_DATA` overrides it (tests point it at a temporary folder)."""
    return Path(os.environ.get("WHISPER_ATLAS_DATA", DEFAULT_DATA_DIR))


def cache_dir() -> Path:
    return data_dir() / "cache"


def models_dir() -> Path:
    return data_dir() / "models"


def corpus_dir(name: str = DEFAULT_CORPUS) -> Path:
    return data_dir() / "corpora" / name


@dataclass(frozen=True)
class RunPaths:
    """The files of one run (`data/runs/<name>/`)."""

    root: Path

    @classmethod
    def named(cls, name: str = DEFAULT_RUN) -> "RunPaths":
        return cls(data_dir() / "runs" / name)

    @property
    def activations(self) -> Path:
        return self.root / "activations"

    @property
    def sae(self) -> Path:
        return self.root / "sae"

    @property
    def stability_sae(self) -> Path:
        """The seed-stability twin: an SAE trained with the next seed on the same split."""
        return self.root / "sae-stability"

    @property
    def analysis(self) -> Path:
        return self.root / "analysis"

    @property
    def atlas(self) -> Path:
        return self.root / "atlas.duckdb"

    @property
    def stages(self) -> Path:
        return self.root / "stages.json"
