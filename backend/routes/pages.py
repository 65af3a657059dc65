"""The HTML pages: overview, taxonomy, feature list (with htmx partials), feature and clip pages; services do
the work.

Feature pages come from the atlas when it stores them; other atlas-only pages are cached per atlas version
(backend/html.py explains both).
"""

from __future__ import annotations

from typing import Annotated, Literal

from fastapi import APIRouter, Query, Request
from fastapi.responses import HTMLResponse, RedirectResponse, Response

from backend.deps import AtlasDep, ClipId, FeatureFilters, FeatureId, ProviderDep, SettingsDep
from backend.html import page_response, render, render_cached
from backend.rendering import feature_page, page_bytes
from backend.services.provider import feature_key
from pipelines.atlas.reader import FeatureFilter

router = APIRouter(include_in_schema=False)


@router.get("/", response_class=HTMLResponse)
async def overview(request: Request, atlas: AtlasDep, provider: ProviderDep) -> Response:
    def make() -> bytes:
        best = atlas.list_features(FeatureFilter(sort="label_score", limit=10)).items
        context = {"atlas": atlas, "overview": atlas.overview(), "best": best}
        return page_bytes(request.app.state.templates, "overview.html", context)

    return await render_cached(request, provider, ("overview", atlas.version), make)


@router.get("/taxonomy", response_class=HTMLResponse)
async def taxonomy(request: Request, atlas: AtlasDep, provider: ProviderDep) -> Response:
    def make() -> bytes:
        context = {"atlas": atlas, "taxonomy": atlas.taxonomy() if atlas.interpretation else None}
        return page_bytes(request.app.state.templates, "taxonomy.html", context)

    return await render_cached(request, provider, ("taxonomy", atlas.version), make)


@router.get("/features", response_class=HTMLResponse)
def features(request: Request, atlas: AtlasDep, filters: FeatureFilters) -> Response:
    page = atlas.list_features(filters)
    template = "partials/feature_table.html" if request.headers.get("HX-Request") else "features.html"
    return render(request, template, atlas=atlas, page=page, filters=filters)


@router.get("/features/random")
async def random_feature(atlas: AtlasDep) -> Response:
    return RedirectResponse(f"/features/{atlas.random_live_feature()}", status_code=303)


@router.get("/features/{feature_id}", response_class=HTMLResponse)
async def feature(
    request: Request, atlas: AtlasDep, provider: ProviderDep, settings: SettingsDep, feature_id: FeatureId
) -> Response:
    if atlas.stored_pages is not None:  # usually answered by backend.html.FeaturePages already
        body = await atlas.stored_pages.get(feature_id)
        if body is not None:
            return page_response(request, body)
    templates = request.app.state.templates
    return await render_cached(
        request,
        provider,
        feature_key(atlas.version, feature_id),
        lambda: feature_page(templates, settings.examples_shown, atlas, feature_id),
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


@router.get("/map", response_class=HTMLResponse)
async def feature_map(request: Request, atlas: AtlasDep, provider: ProviderDep) -> Response:
    """The map of the dictionary: the points come from /api/v1/map (map.js draws them)."""

    def make() -> bytes:
        return page_bytes(request.app.state.templates, "map.html", {"atlas": atlas})

    return await render_cached(request, provider, ("map", atlas.version), make)


@router.get("/lists", response_class=HTMLResponse)
async def feature_lists(request: Request, atlas: AtlasDep, provider: ProviderDep) -> Response:
    """Named feature lists, kept in the browser's storage (lists.js): the page is the same for everyone."""

    def make() -> bytes:
        return page_bytes(request.app.state.templates, "lists.html", {"atlas": atlas})

    return await render_cached(request, provider, ("lists", atlas.version), make)


@router.get("/clips/{clip_id}", response_class=HTMLResponse)
async def clip(request: Request, atlas: AtlasDep, provider: ProviderDep, clip_id: ClipId) -> Response:
    def make() -> bytes:
        context = {"atlas": atlas, "clip": atlas.clip_detail(clip_id)}
        return page_bytes(request.app.state.templates, "clip.html", context)

    return await render_cached(request, provider, ("clip", atlas.version, clip_id), make)
