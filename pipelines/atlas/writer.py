"""Write an atlas: build a complete DuckDB file beside the live one, then swap it in atomically.

DuckDB allows one writer OR many read-only processes on a file, never both, so we never write the live
file: the new atlas is built at `atlas.duckdb.building-<pid>`, checked, synced to disk and `os.replace`d
over the old one (pipelines/durable.py: a crash never leaves a half-written file under the live name). A
server holding the old file open keeps reading the old inode until it reopens. Builds that crashed leave
their `.building-<pid>` files behind; the next build removes them.

Every file gets a fresh `build_id` (its served version). Derived tables (`schema.DERIVED_TABLES`: the
pre-rendered feature pages) are never taken from the input, where they could be stale (a copy of an atlas
with one label changed): `derive`, when given, computes them from the finished file, read-only, before the
swap, and they are added to it then.
"""

from __future__ import annotations

import json
import secrets
from pathlib import Path
from typing import Callable, Mapping

import duckdb
import pyarrow as pa
import pyarrow.compute as pc
import sqlalchemy as sa

from pipelines import durable
from pipelines.atlas.schema import DERIVED_TABLES, SCHEMA_VERSION, metadata

Derive = Callable[[Path], Mapping[str, pa.Table]]
"""Given a finished atlas file (open it read-only), the derived tables to add to it; rows for `run`
(key/value JSON, like the table) are merged into that table."""

WRITER_KEYS = ("schema_version", "build_id", "pages")
"""`run` keys the writer and its `derive` step own: dropped from the input."""


def create_schema(path: Path) -> None:
    """Create every table of `schema.metadata` in a new DuckDB file through duckdb_engine."""
    engine = sa.create_engine(f"duckdb:///{path}")
    try:
        metadata.create_all(engine)
    finally:
        engine.dispose()


def write_atlas(path: Path, tables: Mapping[str, pa.Table], derive: Derive | None = None) -> Path:
    """Write `tables` (name -> Arrow table whose columns match the schema) to a new atlas at `path`.

    Rows are inserted in the order given: callers sort per-feature tables by `feature_id`. Tables of the
    schema that are not given stay empty, derived ones too unless `derive` computes them. On any error the
    partial file is removed and the old atlas is untouched.
    """
    path.parent.mkdir(parents=True, exist_ok=True)
    durable.remove_leftovers(path)  # crashed builds' files, this process's earlier attempts included
    tmp = durable.sibling(path, "building")
    try:
        create_schema(tmp)
        given = {name: table for name, table in tables.items() if name not in DERIVED_TABLES}
        _insert(tmp, given, {"schema_version": SCHEMA_VERSION, "build_id": secrets.token_hex(6)}, WRITER_KEYS)
        if derive is not None:
            _insert(tmp, derive(tmp), {}, ())
        durable.replace(tmp, path)
    except BaseException:
        tmp.unlink(missing_ok=True)
        raise
    return path


def _insert(
    path: Path, tables: Mapping[str, pa.Table], run_values: dict[str, object], drop_keys: tuple[str, ...]
) -> None:
    """Append `tables` to the file at `path` (`run` rows replace, less the `drop_keys`), then `run_values`."""
    con = duckdb.connect(str(path))
    try:
        for name, table in tables.items():
            if name not in metadata.tables:
                raise KeyError(f"unknown atlas table {name!r}")
            columns = [c.name for c in metadata.tables[name].columns]
            missing = set(columns) - set(table.column_names)
            if missing:
                raise ValueError(f"table {name!r} lacks columns {sorted(missing)}")
            incoming = table.select(columns)
            if name == "run":
                dropped = pc.is_in(incoming["key"], pa.array(drop_keys, pa.string()))
                incoming = incoming.filter(pc.invert(dropped))
            con.register("incoming", incoming)
            quoted = ", ".join(f'"{c}"' for c in columns)
            verb = "INSERT OR REPLACE" if name == "run" else "INSERT"
            con.execute(f'{verb} INTO "{name}" ({quoted}) SELECT {quoted} FROM incoming')
            con.unregister("incoming")
        for key, value in run_values.items():
            con.execute("INSERT OR REPLACE INTO run VALUES (?, ?)", [key, json.dumps(value)])
        con.execute("CHECKPOINT")
    finally:
        con.close()
