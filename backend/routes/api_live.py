"""JSON routes of live analysis and steering: `POST /api/v1/analyze` and `POST /api/v1/steer` (multipart).

Thin: read the upload (backend.services.uploads), queue the job on the inference worker
(backend.services.inference), return what backend.services.live computed. Errors become `{"detail": ...}`
with their status: 400/413/415/422 for bad uploads or specs, 503 (+ Retry-After) when busy or no SAE, 504 on
timeout.
"""

from __future__ import annotations

from typing import Any, Awaitable, Callable

from fastapi import APIRouter, Request
from fastapi.responses import JSONResponse, Response

from backend.services.inference import ClientGone, InferenceService, InferenceTimeout, ServiceBusy
from backend.services.uploads import FILE_FIELD, Upload, UploadError, UploadLimits, read_upload
from pipelines.errors import AtlasError, MissingStageError

router = APIRouter(prefix="/api/v1", tags=["live"])

CLIENT_CLOSED = 499
"""nginx's status for a request whose client went away (never seen by that client)."""


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
        'or {"toward_language": "es", "method": "sae"|"dom", "strength": 0.5} (see SteeringSpec)',
    }
}
ERRORS: dict[int | str, dict[str, Any]] = {
    code: {"description": text, "content": {"application/json": {"example": {"detail": "..."}}}}
    for code, text in {
        400: "empty upload, malformed body or bad file name",
        413: "upload too large",
        415: "not audio",
        422: "truncated/corrupt/silent audio or a bad steering spec",
        503: "busy (see Retry-After) or no model/SAE",
        504: "took too long",
    }.items()
}


def inference_service(request: Request) -> InferenceService:
    service = getattr(request.app.state, "inference", None)
    if service is None:
        raise MissingStageError("live inference is not running on this server")
    return service


def upload_limits(request: Request) -> UploadLimits:
    return getattr(request.app.state, "upload_limits", None) or UploadLimits()


class LiveFailure(Exception):
    """A live request that failed in a way the client should hear about: status, message, headers."""

    def __init__(self, status_code: int, detail: str, headers: dict[str, str] | None = None):
        super().__init__(detail)
        self.status_code, self.detail, self.headers = status_code, detail, headers or {}

    def json(self) -> JSONResponse:
        return JSONResponse({"detail": self.detail}, self.status_code, headers=self.headers)


async def run_live(request: Request, work: Callable[[InferenceService, Upload], Awaitable[Any]]) -> Any:
    """Read the upload and run `work`; every failure becomes a LiveFailure with its status (the HTML
    routes share this). ClientGone passes through: nobody is left to answer."""
    try:
        service = inference_service(request)
        upload = await read_upload(request, upload_limits(request))
        return await work(service, upload)
    except ServiceBusy as exc:
        raise LiveFailure(503, str(exc), {"Retry-After": str(exc.retry_after_s)}) from exc
    except AtlasError as exc:
        raise LiveFailure(error_status(exc), str(exc)) from exc


def error_status(exc: AtlasError) -> int:
    if isinstance(exc, UploadError):
        return exc.status_code
    if isinstance(exc, MissingStageError):
        return 503
    if isinstance(exc, InferenceTimeout):
        return 504
    return getattr(exc, "status_code", 422)


async def answer_json(request: Request, work: Callable[[InferenceService, Upload], Awaitable[Any]]) -> Any:
    try:
        return await run_live(request, work)
    except LiveFailure as failure:
        return failure.json()
    except ClientGone:
        return Response(status_code=CLIENT_CLOSED)


async def analyze_job(service: InferenceService, request: Request, upload: Upload) -> dict[str, Any]:
    from backend.services import live

    tokens = service.settings.max_new_tokens
    return await service.run(request, lambda res: live.analyze(res, upload, tokens))


async def steer_job(service: InferenceService, request: Request, upload: Upload) -> dict[str, Any]:
    from backend.services import live
    from pipelines.steering import SteeringSpec

    spec = SteeringSpec.from_json(upload.fields.get("spec", ""))
    spec.max_new_tokens = min(spec.max_new_tokens, service.settings.max_new_tokens)
    return await service.run(request, lambda res: live.steer(res, upload, spec))


@router.post("/analyze", openapi_extra=_multipart(AUDIO_FIELD), responses=ERRORS)
async def analyze(request: Request) -> Any:
    """Transcript, language probabilities, log-mel spectrogram and per-frame top SAE features of a clip."""
    return await answer_json(request, lambda service, upload: analyze_job(service, request, upload))


@router.post("/steer", openapi_extra=_multipart({**AUDIO_FIELD, **SPEC_FIELD}), responses=ERRORS)
async def steer(request: Request) -> Any:
    """Baseline, SAE-reconstructed and steered transcripts of a clip (one encoder pass), with a word diff."""
    return await answer_json(request, lambda service, upload: steer_job(service, request, upload))
