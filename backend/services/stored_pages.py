"""The feature pages the build stored in the atlas, looked up a batch at a time.

Serving a stored page is one lookup, but DuckDB answers any query in about a millisecond of CPU, point
lookups included, which at 32 concurrent clients would be most of the latency budget. A lookup of 32 pages
costs about three times one page's (`AtlasReader.stored_pages`), so concurrent requests share one: a request
waits for the query in flight (if any) and joins the next, which takes every id waiting by then. Under light
load a batch is one id and a request waits for one query; under heavy load a query serves dozens of
requests. The query runs in a worker thread (DuckDB releases the GIL while it works), so the event loop keeps
answering meanwhile.

Nothing is kept here: the process holds no page and nothing per feature, however many are visited (DuckDB
keeps the file blocks it read within its own bound, `Settings.duckdb_memory_mb`).
"""

from __future__ import annotations

import asyncio
import weakref
from typing import Callable

from pipelines.atlas.queries import PAGE_BATCHES

Lookup = Callable[[list[int]], dict[int, bytes]]
"""feature ids -> their pages (those that have one), at most `PAGE_BATCHES[-1]` ids at a time."""


class StoredPages:
    """Batched lookups of stored pages, for the requests of every event loop that asks."""

    def __init__(self, lookup: Lookup, max_batch: int = PAGE_BATCHES[-1]) -> None:
        self.lookup = lookup
        self.max_batch = max_batch
        self.queries = 0
        """Lookups run so far (tests and the health check read it)."""
        self._loops: weakref.WeakKeyDictionary[asyncio.AbstractEventLoop, _Batcher] = (
            weakref.WeakKeyDictionary()
        )

    async def get(self, feature_id: int) -> bytes | None:
        """The stored page of `feature_id` (gzip), or None when the atlas has none for it."""
        loop = asyncio.get_running_loop()
        batcher = self._loops.get(loop)
        if batcher is None:
            batcher = self._loops[loop] = _Batcher(self, loop)
        return await batcher.get(feature_id)


class _Batcher:
    """One event loop's waiting requests and the task that looks their pages up, one query at a time."""

    def __init__(self, pages: StoredPages, loop: asyncio.AbstractEventLoop) -> None:
        self.pages = pages
        self.loop = loop
        self.waiting: dict[int, list[asyncio.Future[bytes | None]]] = {}
        self.task: asyncio.Task[None] | None = None

    async def get(self, feature_id: int) -> bytes | None:
        future: asyncio.Future[bytes | None] = self.loop.create_future()
        self.waiting.setdefault(feature_id, []).append(future)
        if self.task is None:
            self.task = self.loop.create_task(self._drain())
        return await future

    async def _drain(self) -> None:
        try:
            while self.waiting:
                ids = list(self.waiting)[: self.pages.max_batch]
                batch = {feature_id: self.waiting.pop(feature_id) for feature_id in ids}
                self.pages.queries += 1
                try:
                    found = await self.loop.run_in_executor(None, self.pages.lookup, ids)
                except Exception as exc:  # noqa: BLE001 - each waiting request gets the error
                    for futures in batch.values():
                        for future in futures:
                            if not future.done():
                                future.set_exception(exc)
                    continue
                for feature_id, futures in batch.items():
                    page = found.get(feature_id)
                    for future in futures:
                        if not future.done():  # a request whose client left is cancelled
                            future.set_result(page)
        finally:
            self.task = None
