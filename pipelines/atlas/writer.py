"""Write an atlas: build a complete DuckDB file beside the live one, then swap it in atomically.

DuckDB allows one writer OR many read-only processes on a file, never both, so we never write the live
file: the new atlas is built at `atlas.duckdb.building-<pid>`, checked, synced to disk and `os.replace`d
over the old one (pipelines/durable.py: a crash never leaves a half-written file under the live name). A
server holding the old file open keeps reading the old inode until it reopens. Builds that crashed leave
their `.building-<pid>` files behind; the next build removes them.
"""

from __future__ import annotations

from pathlib import Path
from typing import Mapping

import duckdb
import pyarrow as pa
import sqlalchemy as sa

from pipelines import durable
from pipelines.atlas.schema import SCHEMA_VERSION, metadata


def create_schema(path: Path) -> None:
    """Create every table of `schema.metadata` in a new DuckDB file through duckdb_engine."""
    engine = sa.create_engine(f"duckdb:///{path}")
    try:
        metadata.create_all(engine)
    finally:
        engine.dispose()


def write_atlas(path: Path, tables: Mapping[str, pa.Table]) -> Path:
    """Write `tables` (name -> Arrow table whose columns match the schema) to a new atlas at `path`.

    Rows are inserted in the order given: callers sort per-feature tables by `feature_id`. Tables of the
    schema that are not given stay empty. On any error the partial file is removed and the old atlas is
    untouched.
    """
    path.parent.mkdir(parents=True, exist_ok=True)
    durable.remove_leftovers(path)  # crashed builds' files, this process's earlier attempts included
    tmp = durable.sibling(path, "building")
    try:
        create_schema(tmp)
        con = duckdb.connect(str(tmp))
        try:
            for name, table in tables.items():
                if name not in metadata.tables:
                    raise KeyError(f"unknown atlas table {name!r}")
                columns = [c.name for c in metadata.tables[name].columns]
                missing = set(columns) - set(table.column_names)
                if missing:
                    raise ValueError(f"table {name!r} lacks columns {sorted(missing)}")
                con.register("incoming", table.select(columns))
                quoted = ", ".join(f'"{c}"' for c in columns)
                con.execute(f'INSERT INTO "{name}" ({quoted}) SELECT {quoted} FROM incoming')
                con.unregister("incoming")
            con.execute("INSERT OR REPLACE INTO run VALUES ('schema_version', ?)", [str(SCHEMA_VERSION)])
            con.execute("CHECKPOINT")
        finally:
            con.close()
        durable.replace(tmp, path)
    except BaseException:
        tmp.unlink(missing_ok=True)
        raise
    return path
