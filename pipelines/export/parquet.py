"""Parquet export: every atlas table as `<table>.parquet`, written by DuckDB's own COPY (no pandas)."""

from __future__ import annotations

from pathlib import Path

import duckdb

from pipelines.atlas.schema import metadata
from pipelines.errors import MissingStageError


def export_parquet(atlas: Path, out: Path) -> list[Path]:
    """Write one Parquet file per atlas table into `out` (created); returns the files."""
    if not atlas.exists():
        raise MissingStageError(f"no atlas at {atlas}: run `whisper-atlas build` first")
    out.mkdir(parents=True, exist_ok=True)
    con = duckdb.connect(str(atlas), read_only=True)
    written = []
    try:
        for name in metadata.tables:
            path = out / f"{name}.parquet"
            con.execute(f"COPY \"{name}\" TO '{_quote(path)}' (FORMAT parquet, COMPRESSION zstd)")
            written.append(path)
    finally:
        con.close()
    return written


def _quote(path: Path) -> str:
    return str(path.resolve()).replace("'", "''")
