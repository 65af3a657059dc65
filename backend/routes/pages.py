"""The HTML pages: overview, feature list (with htmx partials), feature and clip pages; services do the work.

Pages that depend only on the atlas (overview, feature, clip) are rendered once per atlas version and kept
gzip-compressed in the service's page cache: a repeat visit costs a dictionary lookup. A miss renders in the
thread pool, so the event loop keeps answering while DuckDB reads a block of features. Cached pages are
rendered without the request (nothing request-specific may leak into a shared page), and feature pages are
also rendered ahead of time in the background (backend.services.prerender). A cached feature page is served
by `CachedFeaturePages`, a small ASGI middleware in front of the router: routing and dependency injection
cost ~25x the lookup itself, which matters at 32 concurrent clients on one core.
"""

from __future__ import annotations

import gzip
import re
from typing import Annotated, Callable, Hashable, Literal

from fastapi import APIRouter, Query, Request
from fastapi.responses import HTMLResponse, RedirectResponse, Response
from fastapi.templating import Jinja2Templates
from starlette.concurrency import run_in_threadpool
from starlette.datastructures import State
from starlette.types import ASGIApp, Receive, Scope, Send

from backend.deps import MAX_ID, AtlasDep, ClipId, FeatureFilters, FeatureId
from backend.services.atlas import AtlasProvider, AtlasService, FilterSpec
from pipelines.errors import AtlasError

router = APIRouter(include_in_schema=False)

SECURITY_HEADERS = {
    "Content-Security-Policy": (
        "default-src 'self'; img-src 'self' data:; media-src 'self'; style-src 'self' 'unsafe-inline'; "
        "script-src 'self'; object-src 'none'; base-uri 'none'; frame-ancestors 'none'"
    ),
    "X-Content-Type-Options": "nosniff",
    "Referrer-Policy": "same-origin",
}
GZIP_LEVEL = 3
"""Cached pages shrink ~5x (45 kB -> 8 kB) at a fraction of a millisecond; higher levels gain little."""


def render(request: Request, template: str, status_code: int = 200, **context: object) -> Response:
    """Render a page or partial (not cached)."""
    return request.app.state.templates.TemplateResponse(
        request, template, context, status_code=status_code, headers=SECURITY_HEADERS
    )


def page_bytes(templates: Jinja2Templates, template: str, context: dict) -> bytes:
    """A page rendered for the cache: gzip-compressed, and without the request."""
    html = templates.get_template(template).render(**context)
    return gzip.compress(html.encode(), compresslevel=GZIP_LEVEL, mtime=0)


def feature_key(feature_id: int) -> tuple[str, int]:
    return ("feature", feature_id)


def feature_page(app_state: State, atlas: AtlasService, feature_id: int) -> bytes:
    """The cached form of /features/{feature_id} (the route and the pre-renderer share it)."""
    context = {"atlas": atlas, "f": atlas.feature(feature_id), "shown": app_state.settings.examples_shown}
    return page_bytes(app_state.templates, "feature.html", context)


CACHED_HEADERS = {**SECURITY_HEADERS, "Vary": "Accept-Encoding"}


async def render_cached(
    request: Request, atlas: AtlasService, key: Hashable, make: Callable[[], bytes]
) -> Response:
    """The page for `key` from the atlas's page cache; `make()` renders it (in the thread pool) on a miss."""
    body = atlas.pages.get(key)
    if body is None:
        body = await run_in_threadpool(atlas.pages.get_or_make, key, make)
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
        return atlas.pages.get(feature_key(int(match.group(1))))


@router.get("/", response_class=HTMLResponse)
async def overview(request: Request, atlas: AtlasDep) -> Response:
    def make() -> bytes:
        best = atlas.list_features(FilterSpec(sort="label_score", limit=10)).items
        context = {"atlas": atlas, "overview": atlas.overview(), "best": best}
        return page_bytes(request.app.state.templates, "overview.html", context)

    return await render_cached(request, atlas, ("overview",), make)


@router.get("/features", response_class=HTMLResponse)
def features(request: Request, atlas: AtlasDep, filters: FeatureFilters) -> Response:
    page = atlas.list_features(filters)
    template = "partials/feature_table.html" if request.headers.get("HX-Request") else "features.html"
    return render(request, template, atlas=atlas, page=page, filters=filters)


@router.get("/features/random")
async def random_feature(atlas: AtlasDep) -> Response:
    return RedirectResponse(f"/features/{atlas.random_live_feature()}", status_code=303)


@router.get("/features/{feature_id}", response_class=HTMLResponse)
async def feature(request: Request, atlas: AtlasDep, feature_id: FeatureId) -> Response:
    return await render_cached(
        request, atlas, feature_key(feature_id), lambda: feature_page(request.app.state, atlas, feature_id)
    )


@router.get("/features/{feature_id}/examples", response_class=HTMLResponse)
def feature_examples(
    request: Request,
    atlas: AtlasDep,
    feature_id: FeatureId,
    kind: Literal["top", "quantile"] = "top",
    offset: Annotated[int, Query(ge=0, le=1_000_000)] = 0,
) -> Response:
    """The examples of one kind from `offset` on (the "show more" buttons swap this in)."""
    detail = atlas.feature(feature_id)
    examples = detail.top_examples if kind == "top" else detail.quantile_examples
    return render(request, "partials/examples.html", atlas=atlas, f=detail, examples=examples[offset:])


@router.get("/clips/{clip_id}", response_class=HTMLResponse)
async def clip(request: Request, atlas: AtlasDep, clip_id: ClipId) -> Response:
    def make() -> bytes:
        context = {"atlas": atlas, "clip": atlas.clip_detail(clip_id)}
        return page_bytes(request.app.state.templates, "clip.html", context)

    return await render_cached(request, atlas, ("clip", clip_id), make)
