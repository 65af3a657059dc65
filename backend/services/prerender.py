"""Background pre-rendering: every feature page rendered once after an atlas opens, at a bounded CPU share.

A feature page costs a few milliseconds of Python to render and a fraction of one to serve from the page
cache; under 32 concurrent clients that difference is the whole latency budget (benchmarks/server_bench.py
targets p50 <= 30 ms). So when an atlas version opens, one daemon thread walks the feature ids in order and
renders the pages that are not cached yet, sleeping between pages so it uses at most `share` of one core, and
stops when the atlas is swapped, the server shuts down, or the page cache is nearly full (rendering more would
only evict).
"""

from __future__ import annotations

import logging
import threading
import time
from typing import Callable, Hashable

from backend.services.cache import SizedLRU

log = logging.getLogger("whisper_atlas.server")

FULL = 0.95
"""Stop once the page cache holds this share of its byte budget."""


class Prerenderer:
    """Renders `render(i)` into `pages[key(i)]` for every feature id, in the background."""

    def __init__(
        self,
        feature_ids: list[int],
        key: Callable[[int], Hashable],
        render: Callable[[int], bytes],
        pages: SizedLRU[bytes],
        keep_going: Callable[[], bool],
        share: float,
        name: str = "prerender",
    ) -> None:
        if not 0 < share <= 1:
            raise ValueError(f"share must be in (0, 1], got {share}")
        self.feature_ids = feature_ids
        self.key = key
        self.render = render
        self.pages = pages
        self.keep_going = keep_going
        self.share = share
        self.rendered = 0
        self.done = threading.Event()
        self._thread = threading.Thread(target=self._run, name=name, daemon=True)

    def start(self) -> "Prerenderer":
        self._thread.start()
        return self

    def _run(self) -> None:
        pages = self.pages
        try:
            for feature_id in self.feature_ids:
                if not self.keep_going() or pages.nbytes > FULL * pages.max_bytes:
                    break
                key = self.key(feature_id)
                if pages.get(key) is not None:
                    continue
                t0 = time.perf_counter()
                pages.get_or_make(key, lambda: self.render(feature_id))
                self.rendered += 1
                spent = time.perf_counter() - t0
                time.sleep(spent * (1 - self.share) / self.share)  # also lets request threads have the GIL
        except Exception:  # noqa: BLE001 - a page that fails here fails (and is reported) when requested
            log.exception("pre-rendering stopped")
        finally:
            self.done.set()
