"""The byte-bounded LRU: eviction order, size bound, one producer per key under concurrency."""

from __future__ import annotations

import threading
import time

from backend.services.cache import SizedLRU


def test_evicts_least_recently_used_within_the_byte_budget() -> None:
    cache: SizedLRU[bytes] = SizedLRU(10, len)
    cache.put("a", b"1234")
    cache.put("b", b"1234")
    assert cache.get("a") == b"1234"  # a is now the most recent
    cache.put("c", b"1234")
    assert cache.get("b") is None and cache.get("a") and cache.get("c")
    assert cache.nbytes <= 10
    cache.put("huge", b"x" * 11)
    assert cache.get("huge") is None and len(cache) == 2


def test_get_or_make_runs_the_producer_once_for_concurrent_callers() -> None:
    cache: SizedLRU[bytes] = SizedLRU(1000, len)
    calls = []

    def make() -> bytes:
        calls.append(1)
        time.sleep(0.05)
        return b"value"

    results = []
    threads = [
        threading.Thread(target=lambda: results.append(cache.get_or_make("k", make))) for _ in range(8)
    ]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert results == [b"value"] * 8 and len(calls) == 1
