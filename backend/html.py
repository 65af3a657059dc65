"""Serving HTML: security headers, templates to responses, the gzip page cache, and the feature pages.

Feature pages come from the atlas itself: the build renders every one of them with the server's own page code
(backend/rendering.py) and stores them gzip-compressed, so a first visit costs a batched lookup
(backend/services/stored_pages.py) and no rendering, and nothing per feature is kept in memory.
`FeaturePages`, a small ASGI middleware in front of the router, answers them (routing and dependency injection
cost ~25x the lookup itself, which matters at 32 concurrent clients on one core), decompressed for the rare
client that does not take gzip. A stored page is used only when the server's page code is the code that
rendered it (`backend.rendering.page_identity`), so it is exactly the page the server would render.
An atlas holds HTML then: one from elsewhere could show other markup on its feature pages (scripts, forms
posting elsewhere and foreign images stay blocked by the CSP); `WHISPER_ATLAS_STORED_PAGES=false` renders
them here from the atlas's data instead, like an atlas without stored pages or from other page code.

Other pages that depend only on the atlas (overview, clip, feature pages not stored) are rendered once per
atlas version and kept gzip-compressed in the provider's page cache: a repeat visit costs a dictionary lookup.
A miss renders in the thread pool, so the event loop keeps answering while DuckDB reads a block of features.
Cached pages are rendered without the request (nothing request-specific may leak into a shared page);
feature pages not stored may be rendered ahead of time in the background (backend/services/prerender.py).
"""

from __future__ import annotations

import re
import zlib
from typing import Callable, Hashable

from fastapi import Request
from fastapi.responses import HTMLResponse, Response
from starlette.concurrency import run_in_threadpool
from starlette.types import ASGIApp, Receive, Scope, Send

from backend.services.provider import AtlasProvider, feature_key
from pipelines.atlas.reader import ReadError
from pipelines.errors import AtlasError

MAX_ID = 2**31 - 1
"""Largest id a path may name (ids are int32 in the atlas)."""

SECURITY_HEADERS = {
    "Content-Security-Policy": (
        "default-src 'self'; img-src 'self' data:; media-src 'self'; style-src 'self' 'unsafe-inline'; "
        "script-src 'self'; object-src 'none'; base-uri 'none'; form-action 'self'; frame-ancestors 'none'"
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
GZIP_WBITS = 16 + zlib.MAX_WBITS
"""`zlib.decompress` of a gzip stream: header and CRC checked in C (`gzip.decompress` parses in Python)."""


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


def page_response(request: Request, body: bytes) -> Response:
    """A gzip-compressed page as the response: as it is when the client takes gzip, else decompressed."""
    if "gzip" in request.headers.get("accept-encoding", ""):
        headers = {**CACHED_HEADERS, "Content-Encoding": "gzip"}
        return Response(body, media_type="text/html; charset=utf-8", headers=headers)
    return HTMLResponse(zlib.decompress(body, GZIP_WBITS), headers=CACHED_HEADERS)


async def render_cached(
    request: Request, provider: AtlasProvider, key: Hashable, make: Callable[[], bytes]
) -> Response:
    """The page for `key` from the page cache; `make()` renders it (in the thread pool) on a miss."""
    body = provider.pages.get(key)
    if body is None:
        body = await run_in_threadpool(provider.pages.get_or_make, key, make)
    return page_response(request, body)


class FeaturePages:
    """ASGI middleware: answer `GET /features/{id}` with the atlas's stored page, or from the page cache when
    the atlas stores none (gzip-compressed, or decompressed for a client that does not take gzip);
    everything else (unknown ids, misses, lookup errors) goes on to the app, whose route answers it."""

    PATH = re.compile(r"/features/([0-9]{1,10})")

    def __init__(self, app: ASGIApp, provider: AtlasProvider) -> None:
        self.app = app
        self.provider = provider
        self.headers = [
            (b"content-type", b"text/html; charset=utf-8"),
            *((name.lower().encode(), value.encode()) for name, value in CACHED_HEADERS.items()),
        ]

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        body = await self._page(scope) if scope["type"] == "http" and scope["method"] == "GET" else None
        if body is None:
            await self.app(scope, receive, send)
            return
        headers = [*self.headers]
        if any(name == b"accept-encoding" and b"gzip" in value for name, value in scope["headers"]):
            headers.append((b"content-encoding", b"gzip"))
        else:
            body = zlib.decompress(body, GZIP_WBITS)
        headers.append((b"content-length", str(len(body)).encode()))
        await send({"type": "http.response.start", "status": 200, "headers": headers})
        await send({"type": "http.response.body", "body": body})

    async def _page(self, scope: Scope) -> bytes | None:
        match = self.PATH.fullmatch(scope["path"])
        if match is None or int(match.group(1)) > MAX_ID:
            return None
        try:
            atlas = self.provider.current()
        except AtlasError:
            return None
        feature_id = int(match.group(1))
        if atlas.stored_pages is None:
            return self.provider.pages.get(feature_key(atlas.version, feature_id))
        try:
            return await atlas.stored_pages.get(feature_id)
        except ReadError:
            return None  # the route reads it again, and reports the damage
