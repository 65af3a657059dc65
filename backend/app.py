"""The FastAPI application: `create_app(settings)` wires settings, the atlas provider, templates and routes.

The server starts with or without an atlas: while there is none, every page and `/healthz` name the command
that builds it, and the atlas is picked up (and later swaps too) without a restart. Around the routes sit
the feature-page middleware (pages stored in the atlas, or cached), the same-origin rule for POSTs and the
catch-all that turns unexpected exceptions into a 500 with an error id (backend/middleware.py); uploads are
decoded in worker processes (pipelines/audio_sandbox.py), stopped when the app shuts down.

What the server loads to start (libraries, the model's modules, the atlas summary: ~400k objects) is frozen
out of Python's cyclic garbage collector (`gc.freeze`) once loaded, until shutdown: a full collection would
otherwise walk all of it, ~350 ms on 2 busy cores, every few seconds under load: alone, the p99 of pages.
"""

from __future__ import annotations

import gc
import logging
from contextlib import asynccontextmanager
from typing import AsyncIterator

from fastapi import FastAPI, Request
from fastapi.exceptions import RequestValidationError
from fastapi.responses import Response
from fastapi.staticfiles import StaticFiles
from starlette.exceptions import HTTPException as StarletteHTTPException

from backend.errors import AtlasUnavailableError
from backend.html import FeaturePages
from backend.middleware import OriginCheck, UnexpectedErrors, error_response
from backend.rendering import STATIC, feature_page, make_templates, page_identity
from backend.routes import api, api_explore, api_live, docs, pages, pages_live
from backend.services.atlas import AtlasService
from backend.services.inference import InferenceService
from backend.services.provider import AtlasProvider
from backend.services.uploads import UploadGate
from backend.settings import Settings
from pipelines import audio_sandbox
from pipelines.errors import AtlasError

log = logging.getLogger("whisper_atlas.server")


def create_app(settings: Settings | None = None) -> FastAPI:
    settings = settings or Settings()
    provider = AtlasProvider(settings, page_identity=page_identity(settings.examples_shown))

    @asynccontextmanager
    async def lifespan(app: FastAPI) -> AsyncIterator[None]:
        try:
            provider.current()  # read the summary now, not on the first request
        except AtlasUnavailableError as exc:
            log.warning("%s", exc)
        app.state.inference.warm_up()  # loads Whisper + the SAE in the background (fails fast without an SAE)
        gc.freeze()  # see the module docstring; the warm-up freezes again once it has loaded
        yield
        gc.unfreeze()
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
    templates = make_templates()

    def render_feature_page(service: AtlasService, feature_id: int) -> bytes:
        return feature_page(templates, settings.examples_shown, service, feature_id)

    provider.render_feature_page = render_feature_page
    app.state.settings = settings
    app.state.atlas = provider
    app.state.templates = templates
    app.state.inference = InferenceService.for_run(settings.atlas_path.parent, settings.inference)
    app.state.uploads = UploadGate(settings.uploads.max_concurrent, settings.inference.retry_after_s)
    app.add_middleware(FeaturePages, provider=provider)
    app.add_middleware(OriginCheck, settings=settings)
    app.add_middleware(UnexpectedErrors)  # added last: the outermost, so it also sees the others' errors
    app.mount("/static", StaticFiles(directory=STATIC), name="static")
    app.include_router(api.health_router)
    app.include_router(api.router)
    app.include_router(pages.router)
    app.include_router(api_explore.router)
    app.include_router(api_live.router)
    app.include_router(pages_live.router)
    assets = docs.swagger_assets()
    if assets is not None:
        app.include_router(docs.docs_router(assets))
    _error_handlers(app)
    return app


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
