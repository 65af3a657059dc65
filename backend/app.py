"""The FastAPI application: `create_app(settings)` wires settings, the atlas provider, templates and routes.

The server starts with or without an atlas: while there is none, every page and `/healthz` name the command
that builds it, and the atlas is picked up (and later swaps too) without a restart. Around the routes sit
the feature-page cache, the same-origin rule for POSTs and the catch-all that turns unexpected exceptions
into a 500 with an error id (backend/middleware.py); uploads are decoded in worker processes
(pipelines/audio_sandbox.py), stopped when the app shuts down.
"""

from __future__ import annotations

import hashlib
import logging
from contextlib import asynccontextmanager
from pathlib import Path
from typing import AsyncIterator, Mapping
from urllib.parse import urlencode

from fastapi import FastAPI, Request
from fastapi.exceptions import RequestValidationError
from fastapi.responses import Response
from fastapi.staticfiles import StaticFiles
from fastapi.templating import Jinja2Templates
from starlette.exceptions import HTTPException as StarletteHTTPException

import frontend
from backend import views
from backend.errors import AtlasUnavailableError
from backend.html import CachedFeaturePages, feature_page
from backend.middleware import OriginCheck, UnexpectedErrors, error_response
from backend.routes import api, api_live, docs, pages, pages_live
from backend.services import spectrogram
from backend.services.atlas import AtlasService
from backend.services.inference import InferenceService
from backend.services.provider import AtlasProvider
from backend.services.uploads import UploadGate
from backend.settings import DEMO_COMMAND, Settings
from pipelines import audio_sandbox
from pipelines.errors import AtlasError

log = logging.getLogger("whisper_atlas.server")

FRONTEND = Path(frontend.__file__).resolve().parent
TEMPLATES = FRONTEND / "templates"
STATIC = FRONTEND / "static"
HTMX = STATIC / "vendor" / "htmx.min.js"


def create_app(settings: Settings | None = None) -> FastAPI:
    settings = settings or Settings()
    provider = AtlasProvider(settings)

    @asynccontextmanager
    async def lifespan(app: FastAPI) -> AsyncIterator[None]:
        try:
            provider.current()  # read the summary now, not on the first request
        except AtlasUnavailableError as exc:
            log.warning("%s", exc)
        app.state.inference.warm_up()  # loads Whisper + the SAE in the background (fails fast without an SAE)
        yield
        provider.close()
        app.state.inference.close()
        audio_sandbox.shutdown()

    app = FastAPI(
        title="Whisper Atlas API",
        version="1",
        summary="Sparse-autoencoder features of Whisper's encoder: search, inspect, listen.",
        openapi_url="/api/v1/openapi.json",
        docs_url=None,  # served by backend.routes.docs from a package, when it is installed
        redoc_url=None,
        lifespan=lifespan,
    )
    templates = _templates()

    def render_feature_page(service: AtlasService, feature_id: int) -> bytes:
        return feature_page(templates, settings.examples_shown, service, feature_id)

    provider.render_feature_page = render_feature_page
    app.state.settings = settings
    app.state.atlas = provider
    app.state.templates = templates
    app.state.inference = InferenceService.for_run(settings.atlas_path.parent, settings.inference)
    app.state.uploads = UploadGate(settings.uploads.max_concurrent, settings.inference.retry_after_s)
    app.add_middleware(CachedFeaturePages, provider=provider)
    app.add_middleware(OriginCheck, settings=settings)
    app.add_middleware(UnexpectedErrors)  # added last: the outermost, so it also sees the others' errors
    app.mount("/static", StaticFiles(directory=STATIC), name="static")
    app.include_router(api.health_router)
    app.include_router(api.router)
    app.include_router(pages.router)
    app.include_router(api_live.router)
    app.include_router(pages_live.router)
    assets = docs.swagger_assets()
    if assets is not None:
        app.include_router(docs.docs_router(assets))
    _error_handlers(app)
    return app


def _templates() -> Jinja2Templates:
    templates = Jinja2Templates(directory=TEMPLATES)
    env = templates.env
    env.trim_blocks = env.lstrip_blocks = True
    env.globals.update(
        demo_command=DEMO_COMMAND,
        htmx=HTMX.is_file(),
        asset_version=_asset_version(),
        overlay_points=spectrogram.overlay_points,
        example_view=views.example_view,
        bar_chart=views.bar_chart,
        share_scale=views.share_scale,
        CHART=views.CHART,
    )
    env.filters.update(num=_num, pct=_pct, merge_query=_merge_query)
    return templates


def _asset_version() -> str:
    """Changes whenever a static file changes, so `?v=` URLs can be cached for good."""
    digest = hashlib.blake2b(digest_size=5)
    for path in sorted(STATIC.rglob("*")):
        if path.is_file():
            digest.update(f"{path.relative_to(STATIC)}:{path.stat().st_mtime_ns}".encode())
    return digest.hexdigest()


def _num(value: float | None, digits: int = 3) -> str:
    """Compact significant-digit formatting for tables (monospace columns)."""
    if value is None:
        return "—"
    if float(value).is_integer() and abs(value) < 1e7:
        return f"{int(value):,}"
    return f"{value:.{digits}g}"


def _pct(value: float | None, digits: int = 3) -> str:
    """A fraction as a percentage with `digits` significant digits, whole numbers never in e-notation."""
    if value is None:
        return "—"
    if value == 0:
        return "0%"
    percent = value * 100
    if abs(percent) < 1:
        return f"{percent:.{digits}g}%"
    return f"{percent:.{max(digits - len(str(int(abs(percent)))), 0)}f}%"


def _merge_query(params: Mapping[str, str], **changes: object) -> str:
    """A query string: `params` with `changes` applied and empty values dropped (pagination links)."""
    merged = {**params, **{key: str(value) for key, value in changes.items()}}
    return urlencode({key: value for key, value in merged.items() if value != ""})


def _error_handlers(app: FastAPI) -> None:
    @app.exception_handler(AtlasError)
    async def atlas_error(request: Request, exc: AtlasError) -> Response:
        return error_response(request, getattr(exc, "status_code", 400), str(exc))

    @app.exception_handler(RequestValidationError)
    async def invalid(request: Request, exc: RequestValidationError) -> Response:
        problems = []
        for error in exc.errors():
            where = ".".join(
                str(part) for part in error.get("loc", ()) if part not in ("query", "path", "body")
            )
            problems.append(
                f"{where}: {error.get('msg', 'invalid')}" if where else error.get("msg", "invalid")
            )
        return error_response(request, 422, "; ".join(problems) or "Invalid request.")

    @app.exception_handler(StarletteHTTPException)
    async def http_error(request: Request, exc: StarletteHTTPException) -> Response:
        if exc.status_code == 404 and exc.detail == "Not Found":
            detail = f"Nothing at {request.url.path}."
        else:
            detail = str(exc.detail)
        response = error_response(request, exc.status_code, detail)
        for name, value in (exc.headers or {}).items():
            response.headers[name] = value
        return response
