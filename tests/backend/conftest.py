"""Fixtures for the server tests: small synthetic atlases written through the real writer, and clients.

`tests.fixtures.synthetic_atlas` writes a plausible atlas (real schema, real FLAC files beside it) in seconds;
`hostile_atlas` copies one and plants hostile text and audio paths in it, the way a tampered build could.
"""

from __future__ import annotations

import shutil
from pathlib import Path
from typing import Callable, Iterator

import duckdb
import pyarrow as pa
import pytest
from fastapi.testclient import TestClient

from backend.app import create_app
from backend.settings import Settings
from pipelines.atlas.build import page_renderer
from pipelines.atlas.schema import metadata
from pipelines.atlas.writer import write_atlas
from tests.fixtures.synthetic_atlas import write_synthetic_atlas

N_FEATURES = 300
N_CLIPS = 16
BLOCK = 64
"""Small feature blocks, so a 300-feature atlas spans several of them (and a partial last one)."""

XSS = '<script>alert("xss")</script>'
HOSTILE_KEY = '"><img src=x onerror=alert(1)>'


@pytest.fixture(scope="session")
def atlas_path(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return write_synthetic_atlas(tmp_path_factory.mktemp("atlas") / "atlas.duckdb", N_FEATURES, N_CLIPS)


def settings_for(atlas: Path, **overrides: object) -> Settings:
    """Test settings: small blocks, a swap check on every request, no background pre-rendering."""
    options = {"block_features": BLOCK, "atlas_check_interval_s": 0, "prerender_share": 0.0, **overrides}
    return Settings(atlas=atlas, data_dir=atlas.parent, **options)


@pytest.fixture
def client(atlas_path: Path) -> Iterator[TestClient]:
    with TestClient(create_app(settings_for(atlas_path))) as test_client:
        yield test_client


def read_tables(path: Path) -> dict[str, pa.Table]:
    """Every table of an atlas, as Arrow."""
    with duckdb.connect(str(path), read_only=True) as con:
        return {name: con.sql(f'SELECT * FROM "{name}"').to_arrow_table() for name in metadata.tables}


def set_cell(table: pa.Table, column: str, row: int, value: object) -> pa.Table:
    values = table.column(column).to_pylist()
    values[row] = value
    index = table.column_names.index(column)
    return table.set_column(index, column, pa.array(values, table.schema.field(column).type))


def copy_atlas(src: Path, dst: Path, patch: Callable[[dict[str, pa.Table]], None]) -> Path:
    """A copy of the atlas at `src` (and of its audio, paths rewritten) with `patch` applied to its tables,
    written as the build writes (its feature pages rendered anew from the patched tables)."""
    shutil.copytree(src.parent / f"{src.stem}_audio", dst.parent / f"{src.stem}_audio", dirs_exist_ok=True)
    tables = read_tables(src)
    paths = [
        p.replace(str(src.parent), str(dst.parent)) for p in tables["clips"].column("audio_path").to_pylist()
    ]
    clips = tables["clips"]
    tables["clips"] = clips.set_column(clips.column_names.index("audio_path"), "audio_path", pa.array(paths))
    patch(tables)
    return write_atlas(dst, tables, derive=page_renderer())


@pytest.fixture(scope="session")
def hostile_atlas(atlas_path: Path, tmp_path_factory: pytest.TempPathFactory) -> Path:
    """Labels, keys, transcripts and words with markup; audio paths outside the data folder or missing."""

    def patch(t: dict[str, pa.Table]) -> None:
        t["features"] = set_cell(t["features"], "label", 1, XSS)
        t["clips"] = set_cell(t["clips"], "key", 0, HOSTILE_KEY)
        t["clips"] = set_cell(t["clips"], "transcript", 0, f"</p>{XSS}")
        t["clips"] = set_cell(t["clips"], "source", 0, "\"'><script>alert(2)</script>")
        t["clips"] = set_cell(t["clips"], "audio_path", 1, "/etc/passwd")
        t["clips"] = set_cell(t["clips"], "audio_path", 2, "../../../../../../etc/passwd")
        audio_dir = Path(t["clips"].column("audio_path")[0].as_py()).parent
        t["clips"] = set_cell(t["clips"], "audio_path", 3, str(audio_dir / "missing.flac"))
        t["clips"] = set_cell(t["clips"], "audio_path", 4, str(audio_dir / ".." / ".." / "escape.flac"))
        t["clip_words"] = set_cell(t["clip_words"], "word", 0, "<b>bold</b>")

    return copy_atlas(atlas_path, tmp_path_factory.mktemp("hostile") / "atlas.duckdb", patch)


@pytest.fixture
def hostile_client(hostile_atlas: Path) -> Iterator[TestClient]:
    with TestClient(create_app(settings_for(hostile_atlas))) as test_client:
        yield test_client
