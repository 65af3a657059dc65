"""JSON routes of live analysis and steering: `POST /api/v1/analyze` and `POST /api/v1/steer` (multipart).

Thin: backend/services/live_jobs.py runs the request; errors become `{"detail": ...}` with their status.
"""

from __future__ import annotations

from typing import Any

from fastapi import APIRouter, Request
from fastapi.responses import JSONResponse, Response
from starlette.concurrency import run_in_threadpool

from backend.services.inference import ClientGone
from backend.services.live_jobs import CLIENT_CLOSED, LiveFailure, LiveJob, analyze_job, run_live, steer_job
from backend.services.uploads import FILE_FIELD

router = APIRouter(prefix="/api/v1", tags=["live"])


def _multipart(fields: dict[str, Any]) -> dict[str, Any]:
    """OpenAPI view of a multipart body (the routes stream it themselves: FastAPI cannot infer it)."""
    schema = {"type": "object", "required": [FILE_FIELD], "properties": fields}
    return {"requestBody": {"required": True, "content": {"multipart/form-data": {"schema": schema}}}}


AUDIO_FIELD = {
    FILE_FIELD: {"type": "string", "format": "binary", "description": "audio clip (first 30 s used)"}
}
SPEC_FIELD = {
    "spec": {
        "type": "string",
        "description": 'JSON steering spec, e.g. {"features": [{"id": 12, "strength": 0.5}], "mode": "add"} '
        'or {"toward_language": "es", "method": "sae"|"dom"|"gradient"|"random", "strength": 0.5} (see '
        'SteeringSpec), or a preset of GET /api/v1/presets: {"preset": "toward_es", "strength": 0.6}',
    }
}
ERRORS: dict[int | str, dict[str, Any]] = {
    code: {"description": text, "content": {"application/json": {"example": {"detail": "..."}}}}
    for code, text in {
        400: "empty upload, malformed body or bad file name",
        403: "cross-origin request (an Origin other than this server's)",
        413: "upload too large",
        415: "not audio",
        422: "truncated/corrupt/silent audio or a bad steering spec",
        503: "busy (see Retry-After) or no model/SAE",
        504: "took too long",
    }.items()
}


async def answer_json(request: Request, job: LiveJob) -> Any:
    """The job's result as JSON, encoded in the thread pool: a 30 s analysis is ~0.5 MB of numbers, and
    FastAPI's own encoder would spend most of a second on it on the event loop."""
    try:
        return await run_in_threadpool(JSONResponse, await run_live(request, job))
    except LiveFailure as failure:
        return JSONResponse({"detail": failure.detail}, failure.status_code, headers=failure.headers)
    except ClientGone:
        return Response(status_code=CLIENT_CLOSED)


@router.post("/analyze", openapi_extra=_multipart(AUDIO_FIELD), responses=ERRORS)
async def analyze(request: Request) -> Any:
    """Transcript, language probabilities, log-mel spectrogram and per-frame top SAE features of a clip."""
    return await answer_json(request, analyze_job)


@router.post("/steer", openapi_extra=_multipart({**AUDIO_FIELD, **SPEC_FIELD}), responses=ERRORS)
async def steer(request: Request) -> Any:
    """Baseline, SAE-reconstructed and steered transcripts of a clip (one encoder pass), with a word diff.

    The reconstructed and steered transcripts carry `measures` against the baseline (TranscriptMeasures in
    backend/schemas.py): the language their text reads as, a loop flag, CER, length ratio, whether the
    language token flipped, and `succeeded_toward_target` (text reads as the target and does not loop)."""
    return await answer_json(request, steer_job)
