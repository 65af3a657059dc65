"""A live request from upload to answer, shared by the JSON routes and the HTML partials of `/live`.

Read the upload (backend/services/uploads.py), queue the job on the inference worker
(backend/services/inference.py), return what backend/services/live.py computed. Every failure becomes a
`LiveFailure` carrying its HTTP status: 400/413/415/422 for bad uploads or specs, 503 (+ Retry-After) when
busy or without an SAE, 504 on timeout.
"""

from __future__ import annotations

from typing import Any, Awaitable, Callable

from starlette.requests import Request

from backend.services.inference import InferenceService, InferenceTimeout, ServiceBusy
from backend.services.uploads import Upload, UploadError, read_upload
from pipelines.errors import AtlasError, MissingStageError

CLIENT_CLOSED = 499
"""nginx's status for a request whose client went away (never seen by that client)."""

LiveJob = Callable[[InferenceService, Request, Upload], Awaitable[Any]]


class LiveFailure(Exception):
    """A live request that failed in a way the client should hear about: status, message, headers."""

    def __init__(self, status_code: int, detail: str, headers: dict[str, str] | None = None):
        super().__init__(detail)
        self.status_code, self.detail, self.headers = status_code, detail, headers or {}


def inference_service(request: Request) -> InferenceService:
    service = request.app.state.inference
    if service is None:
        raise MissingStageError("live inference is not running on this server")
    return service


async def run_live(request: Request, job: LiveJob) -> Any:
    """Read the upload and run `job`; every failure becomes a LiveFailure with its status. ClientGone passes
    through: nobody is left to answer."""
    try:
        service = inference_service(request)
        upload = await read_upload(request, request.app.state.settings.uploads)
        return await job(service, request, upload)
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


async def analyze_job(service: InferenceService, request: Request, upload: Upload) -> dict[str, Any]:
    """Transcript, language probabilities, spectrogram and per-frame features of the upload."""
    from backend.services import live

    tokens = service.settings.max_new_tokens
    return await service.run(request, lambda res: live.analyze(res, upload, tokens))


async def steer_job(service: InferenceService, request: Request, upload: Upload) -> dict[str, Any]:
    """Baseline, reconstructed and steered transcripts of the upload under its `spec` field."""
    from backend.services import live
    from pipelines.steering import SteeringSpec

    spec = SteeringSpec.from_json(upload.fields.get("spec", ""))
    spec.max_new_tokens = min(spec.max_new_tokens, service.settings.max_new_tokens)
    return await service.run(request, lambda res: live.steer(res, upload, spec))
