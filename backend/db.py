"""The read-only atlas connection: opened once, shared by all threads through cursors, reopened on swap.

DuckDB allows many read-only connections or one writer per file; the build stage never writes the live file
but `os.replace`s a finished one over it (pipelines/atlas/writer.py). So the server keeps one read-only
connection per file *version* and compares the path's (inode, mtime, size) with the open one to notice a
swap: one `stat`, at most every `check_interval` seconds (a syscall per request is measurable under load).
The old connection is never closed under a running request: it is dropped and closes with its last cursor.

Each version is ATTACHed to a fresh in-memory DuckDB instance rather than opened with `duckdb.connect(path)`:
DuckDB caches instances by path inside a process, so reconnecting to a swapped path would silently return
the old file. Cursors are kept per thread (one `USE atlas` each, which costs about a millisecond).
"""

from __future__ import annotations

import hashlib
import json
import os
import threading
import time
from dataclasses import dataclass, field
from pathlib import Path

import duckdb

from backend.errors import AtlasUnavailableError
from backend.settings import DEMO_COMMAND
from pipelines.atlas.schema import SCHEMA_VERSION


def missing_atlas_message(path: Path) -> str:
    return f"No atlas at {path}: build one with `{DEMO_COMMAND}` (or `whisper-atlas demo`)."


@dataclass(frozen=True, eq=False)
class AtlasHandle:
    """One opened version of the atlas file."""

    path: Path
    version: str
    """Short stable id of this file version (inode, mtime, size): cache keys and URL cache-busters use it."""
    connection: duckdb.DuckDBPyConnection
    _local: threading.local = field(default_factory=threading.local, repr=False)

    def cursor(self) -> duckdb.DuckDBPyConnection:
        """The calling thread's cursor (DuckDB connections are not shared across threads).

        One cursor per thread is enough because callers fetch every result completely (`fetchall`,
        `to_arrow_table`): DuckDB refuses new work on a connection holding a half-read result.
        """
        cursor = getattr(self._local, "cursor", None)
        if cursor is None:
            cursor = self.connection.cursor()
            cursor.execute("USE atlas")
            self._local.cursor = cursor
        return cursor


class AtlasDB:
    """Hands out the handle of the atlas file as it is now, reopening when the file was swapped."""

    def __init__(self, path: Path, memory_mb: int = 256, check_interval: float = 1.0) -> None:
        self.path = path
        self.memory_mb = memory_mb
        self.check_interval = check_interval
        self._checked = float("-inf")
        self._handle: AtlasHandle | None = None
        self._identity: tuple[int, int, int] | None = None
        self._lock = threading.Lock()

    def handle(self) -> AtlasHandle:
        """The current handle; raises `AtlasUnavailableError` (naming the build command) without an atlas."""
        handle = self._handle
        now = time.monotonic()
        if handle is not None and now - self._checked < self.check_interval:
            return handle
        try:
            st = os.stat(self.path)
        except OSError:
            raise AtlasUnavailableError(missing_atlas_message(self.path)) from None
        identity = (st.st_ino, st.st_mtime_ns, st.st_size)
        if handle is not None and identity == self._identity:
            self._checked = now
            return handle
        with self._lock:
            if self._handle is None or identity != self._identity:
                self._handle = _open(self.path, identity, self.memory_mb)
                self._identity = identity
            self._checked = now
            return self._handle


def _open(path: Path, identity: tuple[int, int, int], memory_mb: int) -> AtlasHandle:
    try:
        connection = duckdb.connect(":memory:")
        connection.execute(f"SET memory_limit = '{int(memory_mb)}MB'")
        quoted = str(path).replace("'", "''")
        connection.execute(f"ATTACH '{quoted}' AS atlas (READ_ONLY)")
        connection.execute("USE atlas")
        rows = connection.execute("SELECT value FROM run WHERE key = 'schema_version'").fetchall()
    except duckdb.Error as exc:
        reason = str(exc).splitlines()[0]
        raise AtlasUnavailableError(
            f"Cannot read the atlas at {path} ({reason}): rebuild it with `{DEMO_COMMAND}`."
        ) from None
    found = json.loads(rows[0][0]) if rows else None
    if found != SCHEMA_VERSION:
        connection.close()
        raise AtlasUnavailableError(
            f"The atlas at {path} has schema version {found}, this server reads {SCHEMA_VERSION}: "
            f"rebuild it with `whisper-atlas build` (or `{DEMO_COMMAND}`)."
        )
    version = hashlib.blake2b(repr(identity).encode(), digest_size=6).hexdigest()
    return AtlasHandle(path=path, version=version, connection=connection)
