"""Parquet export: every atlas table as `<table>.parquet` (zstd), read through the atlas reader."""

from __future__ import annotations

from pathlib import Path

import pyarrow.parquet as pq

from pipelines.atlas.reader import AtlasReader
from pipelines.atlas.schema import metadata
from pipelines.errors import missing_stage


def export_parquet(atlas: Path, out: Path) -> list[Path]:
    """Write one Parquet file per atlas table into `out` (created); returns the files."""
    if not atlas.exists():
        raise missing_stage("atlas", atlas, "build")
    out.mkdir(parents=True, exist_ok=True)
    written = []
    with AtlasReader.open(atlas) as reader:
        for name in metadata.tables:
            path = out / f"{name}.parquet"
            tmp = path.with_name(path.name + ".tmp")
            pq.write_table(reader.table(name), tmp, compression="zstd")
            tmp.replace(path)
            written.append(path)
    return written
