"""Stored feature pages: concurrent requests share batched lookups, errors reach every waiting request."""

from __future__ import annotations

import asyncio
import threading
import time

import pytest

from backend.services.stored_pages import StoredPages


class Lookups:
    """A fake `AtlasReader.stored_pages`: pages for even ids, each call slow and recorded."""

    def __init__(self, fail: bool = False) -> None:
        self.batches: list[list[int]] = []
        self.fail = fail
        self.lock = threading.Lock()

    def __call__(self, ids: list[int]) -> dict[int, bytes]:
        with self.lock:
            self.batches.append(list(ids))
        time.sleep(0.02)
        if self.fail:
            raise OSError("damaged atlas")
        return {i: f"page {i}".encode() for i in ids if i % 2 == 0}


def test_concurrent_requests_share_lookups() -> None:
    lookups = Lookups()
    pages = StoredPages(lookups, max_batch=16)

    async def main() -> list[bytes | None]:
        return await asyncio.gather(*(pages.get(i % 40) for i in range(200)))

    found = asyncio.run(main())
    assert found == [f"page {i % 40}".encode() if i % 2 == 0 else None for i in range(200)]
    assert pages.queries == len(lookups.batches) <= 4  # 40 distinct ids, 16 a batch: 3 lookups
    assert all(len(batch) <= 16 and len(set(batch)) == len(batch) for batch in lookups.batches)
    assert sorted(i for batch in lookups.batches for i in batch) == list(range(40))


def test_a_lone_request_waits_for_one_lookup() -> None:
    lookups = Lookups()
    pages = StoredPages(lookups)

    async def main() -> tuple[bytes | None, bytes | None]:
        first = await pages.get(4)
        return first, await pages.get(5)

    assert asyncio.run(main()) == (b"page 4", None)
    assert lookups.batches == [[4], [5]]


def test_a_failed_lookup_fails_its_requests_only() -> None:
    lookups = Lookups(fail=True)
    pages = StoredPages(lookups)

    async def main() -> None:
        results = await asyncio.gather(*(pages.get(i) for i in range(5)), return_exceptions=True)
        assert all(isinstance(r, OSError) for r in results)
        lookups.fail = False
        assert await pages.get(2) == b"page 2"

    asyncio.run(main())


def test_each_event_loop_has_its_own_batches() -> None:
    pages = StoredPages(Lookups())
    for _ in range(2):  # a second loop (another test client, a restarted server) works as the first
        assert asyncio.run(pages.get(6)) == b"page 6"


def test_reader_batches_are_padded_and_bounded(tmp_path) -> None:
    from pipelines.atlas.reader import AtlasReader
    from tests.fixtures.synthetic_atlas import write_synthetic_atlas

    path = write_synthetic_atlas(tmp_path / "atlas.duckdb", n_features=24, n_clips=4)
    with AtlasReader.open(path) as reader:
        assert reader.stored_page_count() == 24
        assert sorted(reader.stored_pages([3, 5, 900])) == [3, 5]  # padded to 4 ids, 900 has none
        assert reader.stored_pages([]) == {}
        with pytest.raises(ValueError):
            reader.stored_pages(list(range(129)))
