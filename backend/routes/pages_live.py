"""The live page: upload or record a clip, see what Whisper and the SAE make of it, steer it (htmx partials);
and the steering page, every preset's strength curve.

`GET /live` renders the page; `POST /live/analyze` and `POST /live/steer` take the same multipart bodies as
the JSON API (backend.routes.api_live) and answer HTML partials. Errors come back as a partial too, with their
status code (live.js lets htmx swap them in).
"""

from __future__ import annotations

from typing import Annotated, Any

from fastapi import APIRouter, Query, Request
from fastapi.responses import HTMLResponse, Response

from backend.deps import AtlasDep, SettingsDep
from backend.html import LIVE_HEADERS, render
from backend.services.inference import ClientGone
from backend.services.live_jobs import CLIENT_CLOSED, LiveFailure, LiveJob, analyze_job, run_live, steer_job
from pipelines.errors import AtlasError

router = APIRouter(include_in_schema=False)

STEER_LANGUAGES = ["en", "es", "fr", "it", "ru", "cs", "nl", "de", "pt", "pl", "ja", "zh"]
"""Target languages offered first in the selector (the default corpus's, then a few common ones)."""


def render_live(
    request: Request,
    template: str,
    status_code: int = 200,
    headers: dict[str, str] | None = None,
    **context: Any,
) -> Response:
    return render(request, template, status_code, {**LIVE_HEADERS, **(headers or {})}, **context)


def _labels(request: Request) -> dict[int, str]:
    try:
        return request.app.state.atlas.current().labels
    except AtlasError:
        return {}


@router.get("/live", response_class=HTMLResponse)
def live_page(
    request: Request, settings: SettingsDep, feature: Annotated[int | None, Query(ge=0, le=2**31 - 1)] = None
) -> Response:
    limits = settings.uploads
    prefill = (
        []
        if feature is None
        else [{"id": feature, "label": _labels(request).get(feature, ""), "strength": 0.5}]
    )
    return render_live(
        request,
        "live/index.html",
        languages=STEER_LANGUAGES,
        prefill=prefill,
        max_seconds=limits.max_seconds,
        max_mb=limits.max_bytes // 2**20,
        live_enabled=request.app.state.inference is not None,
    )


async def _partial(request: Request, template: str, job: LiveJob) -> Response:
    """Run a live job and render its partial, or the error partial with the failure's status."""
    try:
        result = await run_live(request, job)
    except LiveFailure as failure:
        return render_live(
            request, "live/_error.html", failure.status_code, detail=failure.detail, headers=failure.headers
        )
    except ClientGone:
        return Response(status_code=CLIENT_CLOSED)
    return render_live(request, template, r=result)


@router.post("/live/analyze", response_class=HTMLResponse)
async def live_analyze(request: Request) -> Response:
    return await _partial(request, "live/_analysis.html", analyze_job)


@router.post("/live/steer", response_class=HTMLResponse)
async def live_steer(request: Request) -> Response:
    return await _partial(request, "live/_steer.html", steer_job)


@router.get("/steering", response_class=HTMLResponse)
def steering_page(request: Request, atlas: AtlasDep) -> Response:
    """Every steering preset with its strength curve on training clips, and the ranking comparison."""
    presets = atlas.presets()
    return render(request, "steering.html", 200, None, atlas=atlas, presets=presets, labels=atlas.labels)
