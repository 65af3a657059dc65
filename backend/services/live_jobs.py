"""A live request from upload to answer, shared by the JSON routes and the HTML partials of `/live`.

In order, each step cheaper than the next, so a refusal costs as little as possible: a place among the
uploads in progress (backend/services/uploads.py), the body streamed to a temporary file, the job's own text
fields checked (the steering spec), a place in the inference queue (backend/services/inference.py), the
audio decoded in a worker process, then the job on the inference worker (backend/services/live.py). Every
failure becomes a `LiveFailure` carrying its HTTP status and a message without server paths: 400/413/415/422
for bad uploads or specs, 503 (+ Retry-After) when busy or without an SAE, 504 on timeout. A client that
leaves mid-upload or before its turn becomes `ClientGone`: nobody is left to answer.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import TYPE_CHECKING, Any, Callable

from starlette.requests import ClientDisconnect, Request

from backend.errors import BusyError, public_message
from backend.services.inference import ClientGone, InferenceService, InferenceTimeout, Slot
from backend.services.uploads import Upload, UploadError, decode_upload, receive_upload, refuse_non_audio
from backend.settings import InferenceSettings
from pipelines.errors import AtlasError, MissingStageError

if TYPE_CHECKING:
    from pipelines.steering import SteeringResources

CLIENT_CLOSED = 499
"""nginx's status for a request whose client went away (never seen by that client)."""


@dataclass(frozen=True)
class LiveJob:
    """What a live endpoint does: `prepare` checks the text fields before any audio work (raising an
    AtlasError for a 4xx); `work` runs on the inference worker with the upload and what `prepare` returned."""

    prepare: Callable[[dict[str, str], InferenceSettings], Any]
    work: Callable[[SteeringResources, Upload, Any, InferenceSettings], Any]


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
    """Receive, check and decode the upload, then run `job`; every failure becomes a LiveFailure with its
    status. ClientGone passes through (a disconnect mid-upload becomes one)."""
    settings = request.app.state.settings
    try:
        service = inference_service(request)
        slot: Slot | None = None
        try:
            with request.app.state.uploads.admit():
                async with receive_upload(request, settings.uploads) as received:
                    params = job.prepare(received.fields, service.settings)
                    refuse_non_audio(received)
                    slot = service.reserve()
                    upload = await decode_upload(received, settings.uploads)
            return await service.run(
                request, lambda res: job.work(res, upload, params, service.settings), slot
            )
        finally:
            if slot is not None:
                slot.release()  # a no-op once the job holds it
    except ClientDisconnect:
        raise ClientGone() from None
    except BusyError as exc:
        raise LiveFailure(503, str(exc), {"Retry-After": str(exc.retry_after_s)}) from exc
    except AtlasError as exc:
        raise LiveFailure(error_status(exc), public_message(str(exc), settings)) from exc


def error_status(exc: AtlasError) -> int:
    if isinstance(exc, UploadError):
        return exc.status_code
    if isinstance(exc, MissingStageError):
        return 503
    if isinstance(exc, InferenceTimeout):
        return 504
    return getattr(exc, "status_code", 422)


def _no_fields(fields: dict[str, str], settings: InferenceSettings) -> None:
    return None


def _analyze(res: SteeringResources, upload: Upload, params: None, settings: InferenceSettings) -> Any:
    from backend.services import live

    return live.analyze(res, upload, settings.max_new_tokens)


def _steering_spec(fields: dict[str, str], settings: InferenceSettings) -> Any:
    """The `spec` field validated before the upload is decoded: a spec, or a preset request."""
    from pipelines.steering.presets import parse_request

    return parse_request(fields.get("spec", ""))


def _steer(res: SteeringResources, upload: Upload, request: Any, settings: InferenceSettings) -> Any:
    """Resolve the request against the run's presets and steer the upload with it."""
    from backend.services import live
    from pipelines.steering.presets import resolve

    spec = resolve(request, res.presets)
    spec.max_new_tokens = min(spec.max_new_tokens, settings.max_new_tokens)
    return live.steer(res, upload, spec)


analyze_job = LiveJob(_no_fields, _analyze)
"""Transcript, language probabilities, spectrogram and per-frame features of the upload."""
steer_job = LiveJob(_steering_spec, _steer)
"""Baseline, reconstructed and steered transcripts of the upload under its `spec` field."""
