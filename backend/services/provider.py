"""The atlas as it is served now: the data service of the current file version and the caches around it.

The provider owns everything whose lifetime is "one served version": the `AtlasService` (data), its stored
feature pages (backend/services/stored_pages.py, when the atlas has pages rendered by this server's page
code), the page cache (rendered pages, gzip), the media cache (PNG spectrograms, WAV windows) and the
background pre-renderer (only for an atlas whose pages are not stored). A swapped atlas file gets a new
service, empty caches and, if needed, a new pre-render pass; cache keys carry the version, so a request
still finishing on the old version can never put its page into the new version's cache.
"""

from __future__ import annotations

import logging
import threading
from typing import Callable

from backend.db import AtlasDB
from backend.services.atlas import BLOCK_CACHE_SHARE, AtlasService
from backend.services.cache import SizedLRU
from backend.services.prerender import Prerenderer
from backend.services.stored_pages import StoredPages
from backend.settings import DEMO_COMMAND, Settings

log = logging.getLogger("whisper_atlas.server")

PAGE_CACHE_SHARE = 0.3
MEDIA_CACHE_SHARE = 1 - BLOCK_CACHE_SHARE - PAGE_CACHE_SHARE
"""Shares of `Settings.cache_mb` for rendered pages and for images/audio windows."""

FeaturePageRenderer = Callable[[AtlasService, int], bytes]
"""Renders the cacheable form of one feature page (the app supplies it: rendering is the web layer's job)."""


def feature_key(version: str, feature_id: int) -> tuple[str, str, int]:
    """Page-cache key of a feature page (the route, the middleware and the pre-renderer share it)."""
    return ("feature", version, feature_id)


class AtlasProvider:
    """The service and caches of the atlas file as it is now: new ones after every swap."""

    def __init__(
        self,
        settings: Settings,
        render_feature_page: FeaturePageRenderer | None = None,
        page_identity: str | None = None,
    ) -> None:
        self.settings = settings
        self.page_identity = page_identity
        """Id of this server's page code (`backend.rendering.page_identity`): stored pages are served when
        theirs is the same (None: never)."""
        self.db = AtlasDB(
            settings.atlas_path,
            lambda handle: AtlasService(handle, settings),
            settings.duckdb_memory_mb,
            settings.atlas_check_interval_s,
        )
        self.render_feature_page = render_feature_page
        """Set by the app when pages should be pre-rendered in the background (`prerender_share` > 0)."""
        budget = settings.cache_mb * 2**20
        self.pages: SizedLRU[bytes] = SizedLRU(int(budget * PAGE_CACHE_SHARE), len)
        """Rendered pages (gzip), keyed by (kind, version, ...)."""
        self.media: SizedLRU[bytes] = SizedLRU(int(budget * MEDIA_CACHE_SHARE), len)
        """Rendered PNGs and WAV windows, keyed by (kind, version, ...)."""
        self.prerenderer: Prerenderer | None = None
        """The background job filling `pages` for the current version, if one was started."""
        self._service: AtlasService | None = None
        self._lock = threading.Lock()
        self._closed = False

    def is_current(self, service: AtlasService) -> bool:
        """Whether `service` still serves the live file (not swapped out, server not shut down)."""
        return not self._closed and self._service is service

    def close(self) -> None:
        self._closed = True

    def current(self) -> AtlasService:
        """Raises `AtlasUnavailableError` (naming the build command) while there is no atlas."""
        service = self.db.current()
        if service is not self._service:
            with self._lock:
                if service is not self._service:
                    self._open(service)
        return service

    def _open(self, service: AtlasService) -> None:
        """Serve `service` from now on: fresh caches, and a pre-render pass when configured."""
        service.stored_pages = self._stored_pages(service)
        self._service = service
        self.pages.clear()
        self.media.clear()
        self.prerenderer = None  # one still running for the old version stops by itself
        if (
            service.stored_pages is None
            and self.render_feature_page is not None
            and self.settings.prerender_share > 0
        ):
            render = self.render_feature_page
            self.prerenderer = Prerenderer(
                service.feature_ids.tolist(),
                lambda feature_id: feature_key(service.version, feature_id),
                lambda feature_id: render(service, feature_id),
                self.pages,
                lambda: self.is_current(service),
                self.settings.prerender_share,
                name=f"prerender-{service.version}",
            ).start()

    def _stored_pages(self, service: AtlasService) -> StoredPages | None:
        """The atlas's stored pages, if they may be served: rendered by this server's page code, not off."""
        info = service.run.get("pages")
        if not self.settings.stored_pages or self.page_identity is None or not isinstance(info, dict):
            return None
        if info.get("identity") != self.page_identity:
            log.warning(
                "the atlas's stored feature pages were rendered by other page code (templates, page modules "
                "or examples_shown changed since it was built): rendering them on request instead; rebuild "
                "it (`whisper-atlas build`, or `%s`) to serve them stored",
                DEMO_COMMAND,
            )
            return None
        return StoredPages(service.reader.stored_pages)
