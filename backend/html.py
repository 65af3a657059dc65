"""Rendering HTML: security headers, templates to responses, and the gzip page cache in front of the router.

Pages that depend only on the atlas (overview, feature, clip) are rendered once per atlas version and kept
gzip-compressed in the provider's page cache: a repeat visit costs a dictionary lookup. A miss renders in the
thread pool, so the event loop keeps answering while DuckDB reads a block of features. Cached pages are
rendered without the request (nothing request-specific may leak into a shared page), and feature pages are
also rendered ahead of time in the background (backend/services/prerender.py). A cached feature page is
served by `CachedFeaturePages`, a small ASGI middleware in front of the router: routing and dependency
injection cost ~25x the lookup itself, which matters at 32 concurrent clients on one core.
"""

from __future__ import annotations

import gzip
import re
from typing import Callable, Hashable

from fastapi import Request
from fastapi.responses import HTMLResponse, Response
from fastapi.templating import Jinja2Templates
from starlette.concurrency import run_in_threadpool
from starlette.types import ASGIApp, Receive, Scope, Send

from backend.services.atlas import AtlasService
from backend.services.provider import AtlasProvider, feature_key
from pipelines.errors import AtlasError

MAX_ID = 2**31 - 1
"""Largest id a path may name (ids are int32 in the atlas)."""

SECURITY_HEADERS = {
    "Content-Security-Policy": (
        "default-src 'self'; img-src 'self' data:; media-src 'self'; style-src 'self' 'unsafe-inline'; "
        "script-src 'self'; object-src 'none'; base-uri 'none'; frame-ancestors 'none'"
    ),
    "X-Content-Type-Options": "nosniff",
    "Referrer-Policy": "same-origin",
}
LIVE_HEADERS = {
    **SECURITY_HEADERS,
    # a recording is previewed from a blob: URL before it is uploaded
    "Content-Security-Policy": SECURITY_HEADERS["Content-Security-Policy"].replace(
        "media-src 'self'", "media-src 'self' blob:"
    ),
}
CACHED_HEADERS = {**SECURITY_HEADERS, "Vary": "Accept-Encoding"}
GZIP_LEVEL = 3
"""Cached pages shrink ~5x (45 kB -> 8 kB) at a fraction of a millisecond; higher levels gain little."""


def render(
    request: Request,
    template: str,
    status_code: int = 200,
    headers: dict[str, str] | None = None,
    **context: object,
) -> Response:
    """Render a page or partial (not cached), with the security headers (`headers` override them)."""
    return request.app.state.templates.TemplateResponse(
        request, template, context, status_code=status_code, headers=headers or SECURITY_HEADERS
    )


def page_bytes(templates: Jinja2Templates, template: str, context: dict) -> bytes:
    """A page rendered for the cache: gzip-compressed, and without the request."""
    html = templates.get_template(template).render(**context)
    return gzip.compress(html.encode(), compresslevel=GZIP_LEVEL, mtime=0)


def feature_page(
    templates: Jinja2Templates, examples_shown: int, atlas: AtlasService, feature_id: int
) -> bytes:
    """The cached form of /features/{feature_id} (the route and the pre-renderer share it)."""
    context = {"atlas": atlas, "f": atlas.feature(feature_id), "shown": examples_shown}
    return page_bytes(templates, "feature.html", context)


async def render_cached(
    request: Request, provider: AtlasProvider, key: Hashable, make: Callable[[], bytes]
) -> Response:
    """The page for `key` from the page cache; `make()` renders it (in the thread pool) on a miss."""
    body = provider.pages.get(key)
    if body is None:
        body = await run_in_threadpool(provider.pages.get_or_make, key, make)
    if "gzip" in request.headers.get("accept-encoding", ""):
        headers = {**CACHED_HEADERS, "Content-Encoding": "gzip"}
        return Response(body, media_type="text/html; charset=utf-8", headers=headers)
    return HTMLResponse(gzip.decompress(body), headers=CACHED_HEADERS)


class CachedFeaturePages:
    """ASGI middleware: answer `GET /features/{id}` from the page cache when the page is there and the client
    takes gzip; everything else (misses included) goes on to the app, whose route renders and caches it."""

    PATH = re.compile(r"/features/([0-9]{1,10})")

    def __init__(self, app: ASGIApp, provider: AtlasProvider) -> None:
        self.app = app
        self.provider = provider
        self.headers = [
            (b"content-type", b"text/html; charset=utf-8"),
            (b"content-encoding", b"gzip"),
            *((name.lower().encode(), value.encode()) for name, value in CACHED_HEADERS.items()),
        ]

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        body = self._cached(scope) if scope["type"] == "http" and scope["method"] == "GET" else None
        if body is None:
            await self.app(scope, receive, send)
            return
        headers = [*self.headers, (b"content-length", str(len(body)).encode())]
        await send({"type": "http.response.start", "status": 200, "headers": headers})
        await send({"type": "http.response.body", "body": body})

    def _cached(self, scope: Scope) -> bytes | None:
        match = self.PATH.fullmatch(scope["path"])
        if match is None or int(match.group(1)) > MAX_ID:
            return None
        if not any(name == b"accept-encoding" and b"gzip" in value for name, value in scope["headers"]):
            return None
        try:
            atlas = self.provider.current()
        except AtlasError:
            return None
        return self.provider.pages.get(feature_key(atlas.version, int(match.group(1))))
