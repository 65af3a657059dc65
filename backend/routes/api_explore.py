"""`/api/v1` explore by example: a span's features, similar moments (of an atlas clip or an upload), the map.

Thin routes over backend/services/explore.py; an upload (`POST /api/v1/similar`) goes through the same
limits and worker as `/api/v1/analyze` (backend/services/live_jobs.py).
"""

from __future__ import annotations

import math
from typing import Annotated, Any

from fastapi import APIRouter, Query, Request
from fastapi.responses import JSONResponse, Response
from starlette.concurrency import run_in_threadpool

from backend.deps import AtlasDep, ClipId
from backend.html import MAX_ID
from backend.schemas import ErrorDetail, FeatureMapPoints, SimilarMoments, Span
from backend.services.explore import ExploreService, SpanError, explore_service
from backend.services.inference import ClientGone
from backend.services.live_jobs import CLIENT_CLOSED, LiveFailure, LiveJob, run_live
from backend.services.uploads import FILE_FIELD, Upload
from backend.settings import InferenceSettings

ERRORS: dict[int | str, dict[str, Any]] = {
    status: {"model": ErrorDetail, "description": text}
    for status, text in (
        (404, "Unknown clip, or an atlas without the explore index (rebuild it)"),
        (422, "Invalid parameters: a span outside the clip or empty, a limit out of range"),
        (503, "No atlas yet: the detail names the command that builds it"),
    )
}
UPLOAD_ERRORS: dict[int | str, dict[str, Any]] = {
    code: {"description": text, "content": {"application/json": {"example": {"detail": "..."}}}}
    for code, text in {
        400: "empty upload, malformed body or bad file name",
        403: "cross-origin request (an Origin other than this server's)",
        413: "upload too large",
        415: "not audio",
        422: "truncated/corrupt/silent audio, or a span outside the clip",
        503: "busy (see Retry-After), no model/SAE or no atlas",
        504: "took too long",
    }.items()
}

router = APIRouter(prefix="/api/v1", tags=["explore"], responses=ERRORS)

SpanStart = Annotated[float, Query(ge=0, le=86400, allow_inf_nan=False, description="span start (s)")]
SpanEnd = Annotated[float, Query(gt=0, le=86400, allow_inf_nan=False, description="span end (s), exclusive")]
Shown = Annotated[int, Query(ge=1, le=200, description="span features listed (by share)")]
Limit = Annotated[int, Query(ge=1, le=50, description="similar moments returned (one per clip)")]
MAX_LIMIT, MAX_SHOWN = 50, 200


@router.get("/clips/{clip_id}/span", response_model=Span)
def clip_span(atlas: AtlasDep, clip_id: ClipId, start: SpanStart, end: SpanEnd, features: Shown = 30) -> Span:
    """The features active in [start, end) s of a clip, by their share of the span's summed activation, each
    with its activation over the span (exactly the stored per-frame SAE codes summed)."""
    return explore_service(atlas).clip_span(clip_id, start, end, features)[0]


@router.get("/similar", response_model=SimilarMoments)
def similar(
    atlas: AtlasDep,
    clip: Annotated[int, Query(ge=0, le=MAX_ID, description="clip row id in the atlas")],
    start: SpanStart,
    end: SpanEnd,
    limit: Limit = 10,
    features: Shown = 20,
) -> SimilarMoments:
    """The corpus windows whose pooled SAE codes are most like the span's, best first, one per clip; windows
    of the query clip overlapping the span are left out."""
    return explore_service(atlas).similar_to_clip(clip, start, end, limit, features)


@router.post(
    "/similar",
    response_model=SimilarMoments,
    responses=UPLOAD_ERRORS,
    openapi_extra={
        "requestBody": {
            "required": True,
            "content": {
                "multipart/form-data": {
                    "schema": {
                        "type": "object",
                        "required": [FILE_FIELD],
                        "properties": {
                            FILE_FIELD: {"type": "string", "format": "binary", "description": "audio clip"},
                            "start": {"type": "number", "description": "span start (s); default 0"},
                            "end": {"type": "number", "description": "span end (s); default the clip's end"},
                            "limit": {"type": "integer", "description": f"moments returned, 1..{MAX_LIMIT}"},
                        },
                    }
                }
            },
        }
    },
)
async def similar_upload(request: Request, atlas: AtlasDep) -> Any:
    """Similar moments of a span of an uploaded clip (the whole clip without `start`/`end`): the clip is
    encoded by the run's Whisper and SAE on the live worker, with the limits of `/api/v1/analyze`."""
    service = explore_service(atlas)

    def work(res: Any, upload: Upload, params: dict[str, Any], settings: InferenceSettings) -> dict:
        return _similar_of_upload(service, res, upload, params)

    try:
        result = await run_live(request, LiveJob(_upload_fields, work))
    except LiveFailure as failure:
        return JSONResponse({"detail": failure.detail}, failure.status_code, headers=failure.headers)
    except ClientGone:
        return Response(status_code=CLIENT_CLOSED)
    return await run_in_threadpool(JSONResponse, result)


@router.get("/map", response_class=Response, responses={200: {"model": FeatureMapPoints}})
def feature_map(request: Request, atlas: AtlasDep) -> Response:
    """Every live feature's position in a 2-D UMAP of the decoder directions, with its label, type, top
    language and density (computed at build time)."""
    headers = {"Cache-Control": "no-cache", "ETag": f'"{atlas.version}"'}
    if request.headers.get("if-none-match") == headers["ETag"]:
        return Response(status_code=304, headers=headers)
    return Response(explore_service(atlas).map_json(), media_type="application/json", headers=headers)


def _upload_fields(fields: dict[str, str], settings: InferenceSettings) -> dict[str, Any]:
    """The form's span and limit, checked before any audio work."""
    start, end = _seconds(fields, "start"), _seconds(fields, "end")
    if start is not None and end is not None and not end > start:
        raise SpanError(f"the span must end after it starts (start {start:g} s, end {end:g} s)")
    raw = fields.get("limit", "").strip()
    if raw and not (raw.isdigit() and 1 <= int(raw) <= MAX_LIMIT):
        raise SpanError(f"limit must be a whole number in 1..{MAX_LIMIT} (got {raw[:20]!r})")
    return {"start": start, "end": end, "limit": int(raw) if raw else 10}


def _seconds(fields: dict[str, str], name: str) -> float | None:
    raw = fields.get(name, "").strip()
    if not raw:
        return None
    try:
        value = float(raw)
    except ValueError:
        raise SpanError(f"{name} must be a number of seconds (got {raw[:20]!r})") from None
    if not math.isfinite(value) or not 0 <= value <= 86400:
        raise SpanError(f"{name} must be between 0 and 86400 s (got {raw[:20]!r})")
    return value


def _similar_of_upload(service: ExploreService, res: Any, upload: Upload, params: dict[str, Any]) -> dict:
    """On the inference worker: encode the upload, then search with its span."""
    import torch

    from pipelines.steering import encode_clip

    clip = encode_clip(res.bundle, upload.audio, res.layer)
    with torch.no_grad():
        latents_TF = res.sae.encode(clip.site_TD).float().cpu()
    found = service.similar_to_latents(latents_TF, params["start"], params["end"], params["limit"], 20)
    found.filename, found.duration, found.truncated = (
        upload.filename,
        round(upload.duration, 3),
        upload.truncated,
    )
    return found.model_dump()
