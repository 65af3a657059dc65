"""The served atlas file: one version opened at a time, shared by all threads, reopened on swap.

The build stage never writes the live file but `os.replace`s a finished one over it
(pipelines/atlas/writer.py), so the server keeps one opened version per file *version* and compares the
path's (inode, mtime, size) with the open one to notice a swap: one `stat`, at most every `check_interval`
seconds (a syscall per request is measurable under load). The old version is never closed under a running
request: it is dropped and closes with its last cursor.

A swapped-in file that cannot be served (half-copied, another schema, views or macros, unreadable rows)
never takes the site down: the old version keeps serving, the reason is logged once, and the next interval
tries again. "Served" means opened by `AtlasReader` and then by `open_version` (the server's data service
reads its summary there), so a file that fails either step is refused before it replaces anything.
"""

from __future__ import annotations

import hashlib
import logging
import os
import threading
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Callable, Generic, TypeVar

from backend.errors import AtlasUnavailableError
from backend.settings import DEMO_COMMAND
from pipelines.atlas.reader import AtlasFileError, AtlasReader, ReadError

log = logging.getLogger("whisper_atlas.server")

T = TypeVar("T")


def _file_version(identity: tuple[int, int, int]) -> str:
    """A version id from the file's (inode, mtime, size), for a file without a `build_id`."""
    return hashlib.blake2b(repr(identity).encode(), digest_size=6).hexdigest()


def missing_atlas_message(path: Path) -> str:
    return f"No atlas at {path.name}: build one with `{DEMO_COMMAND}` (or `whisper-atlas demo`)."


@dataclass(frozen=True, eq=False)
class AtlasHandle:
    """One opened version of the atlas file."""

    path: Path
    version: str
    """Short stable id of this file version (its `build_id`, given by the writer): cache keys and URL
    cache-busters use it, and the pages the build stored in it carry it already."""
    reader: AtlasReader


class AtlasDB(Generic[T]):
    """Hands out `open_version(handle)` of the atlas file as it is now, reopened when the file is swapped."""

    def __init__(
        self,
        path: Path,
        open_version: Callable[[AtlasHandle], T],
        memory_mb: int = 256,
        check_interval: float = 1.0,
    ) -> None:
        self.path = path
        self.open_version = open_version
        self.memory_mb = memory_mb
        self.check_interval = check_interval
        self._checked = float("-inf")
        self._served: T | None = None
        self._identity: tuple[int, int, int] | None = None
        self._refused: tuple[int, int, int] | None = None
        """Identity of the last file version that failed to open (logged once, retried each interval)."""
        self._unusable = ""
        self._lock = threading.Lock()

    def current(self) -> T:
        """The served version; raises `AtlasUnavailableError` (naming the build command) without one."""
        served = self._served
        now = time.monotonic()
        if served is not None and now - self._checked < self.check_interval:
            return served
        try:
            st = os.stat(self.path)
        except OSError:
            if served is not None:  # a swap in progress (or a deleted file): keep serving what is open
                self._checked = now
                return served
            raise AtlasUnavailableError(missing_atlas_message(self.path)) from None
        identity = (st.st_ino, st.st_mtime_ns, st.st_size)
        if served is not None and identity == self._identity:
            self._checked = now
            return served
        with self._lock:
            if identity != self._identity:
                self._swap_in(identity)
            self._checked = now
            if self._served is None:
                raise AtlasUnavailableError(self._unusable)
            return self._served

    def _swap_in(self, identity: tuple[int, int, int]) -> None:
        """Open the file version `identity`; on failure keep the open one (if any) and remember why."""
        try:
            reader = AtlasReader.open(self.path, self.memory_mb)
            version = str(reader.run_metadata().get("build_id") or _file_version(identity))
            served = self.open_version(AtlasHandle(path=self.path, version=version, reader=reader))
        except (AtlasFileError, ReadError) as exc:
            reason = str(exc).splitlines()[0].replace(str(self.path), self.path.name)
            self._unusable = f"The atlas cannot be served ({reason}): rebuild it with `{DEMO_COMMAND}`."
            if self._refused != identity:
                log.warning("atlas not swapped in: %s", reason)
            self._refused = identity
            return
        self._served = served
        self._identity = identity
        self._refused = None
