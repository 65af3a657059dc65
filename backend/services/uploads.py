"""Audio uploads for live analysis and steering: read a multipart body safely and decode it to 16 kHz mono.

Defences, in order: the body is streamed and reading stops past `max_bytes` (413) before anything is
spooled; the file name is only echoed, never used as a path, and one with path separators or control
characters is refused (400); the type is sniffed from the content with FFmpeg's probe (PyAV), not taken from
the name or the client's content type (415 for images, text, other non-audio); truncated or corrupt audio is
422; clips longer than `max_seconds` are cut to their first `max_seconds` and flagged `truncated`; silent or
too-short clips are 422. Every refusal carries a one-line message saying what to do.
"""

from __future__ import annotations

import io
import re
from dataclasses import dataclass, field
from typing import AsyncGenerator

import av
import numpy as np
from starlette.datastructures import UploadFile
from starlette.formparsers import MultiPartException, MultiPartParser
from starlette.requests import Request

from backend.settings import UploadLimits
from pipelines.audio import SAMPLE_RATE, decode_audio
from pipelines.errors import AtlasError, AudioDecodeError

FILE_FIELD = "file"


class UploadError(AtlasError):
    """A refused upload; `status_code` is the HTTP status the API answers with."""

    def __init__(self, status_code: int, message: str):
        super().__init__(message)
        self.status_code = status_code


@dataclass
class Upload:
    """A decoded, checked upload."""

    audio: np.ndarray
    """float32 mono 16 kHz, at most `max_seconds` long."""
    filename: str
    format: str
    """Container format FFmpeg detected (e.g. `wav`, `matroska,webm`)."""
    duration: float
    """Seconds kept (after truncation)."""
    truncated: bool
    """True when the clip was longer than the limit and only its start was kept."""
    fields: dict[str, str] = field(default_factory=dict)
    """The other (text) form fields, e.g. the steering `spec`."""


_BAD_NAME = re.compile(r"[/\\\x00-\x1f\x7f]")
_IMAGE_OR_DOC = ("_pipe", "image2", "gif", "apng", "webp", "tty", "srt", "webvtt", "ass", "lrc")


async def read_upload(request: Request, limits: UploadLimits) -> Upload:
    """Stream the multipart body of `request` (field `file` + text fields) and return the decoded audio."""
    content_type = request.headers.get("content-type", "")
    if not content_type.startswith("multipart/form-data"):
        raise UploadError(400, f"send the audio as multipart/form-data with a `{FILE_FIELD}` field")
    declared = request.headers.get("content-length")
    if declared and declared.isdigit() and int(declared) > limits.max_bytes:
        raise _too_large(limits)
    parser = MultiPartParser(request.headers, _capped(request, limits), max_files=1, max_fields=16)
    try:
        form = await parser.parse()
    except MultiPartException as exc:
        raise UploadError(400, f"malformed multipart body: {exc}") from exc
    upload = form.get(FILE_FIELD)
    if not isinstance(upload, UploadFile):
        raise UploadError(400, f"no audio: send the file in the multipart field `{FILE_FIELD}`")
    filename = check_filename(upload.filename or "")
    data = await upload.read()
    await form.close()
    fields = {k: v for k, v in form.multi_items() if isinstance(v, str)}
    return decode_upload(data, filename, limits, fields)


async def _capped(request: Request, limits: UploadLimits) -> AsyncGenerator[bytes, None]:
    total = 0
    async for chunk in request.stream():
        total += len(chunk)
        if total > limits.max_bytes:
            raise _too_large(limits)
        yield chunk


def _too_large(limits: UploadLimits) -> UploadError:
    return UploadError(
        413, f"the upload is larger than {limits.max_bytes // (1024 * 1024)} MB: send a shorter clip"
    )


def check_filename(name: str) -> str:
    """The client's file name, if harmless (it is only ever echoed back)."""
    if len(name) > 255 or _BAD_NAME.search(name) or name in (".", ".."):
        raise UploadError(400, "bad file name: use a plain name without paths or control characters")
    return name or "upload"


def decode_upload(
    data: bytes, filename: str, limits: UploadLimits, fields: dict[str, str] | None = None
) -> Upload:
    """Sniff, decode, cut and check the bytes of an uploaded clip."""
    if not data:
        raise UploadError(400, "the file is empty (0 bytes): choose or record a clip")
    fmt, declared_s = _probe(data)
    too_long = declared_s is None or declared_s > limits.max_seconds + 0.5
    try:  # decode at most the kept duration (+ a frame to tell a long clip from an exact one)
        audio = decode_audio(data, max_seconds=limits.max_seconds + 0.02 if too_long else None)
    except AudioDecodeError as exc:
        raise UploadError(422, f"{filename}: {str(exc).removeprefix('upload: ')}") from exc
    limit = int(limits.max_seconds * SAMPLE_RATE)
    truncated = len(audio) > limit
    audio = audio[:limit]
    duration = len(audio) / SAMPLE_RATE
    if duration < limits.min_seconds:
        raise UploadError(
            422, f"{filename}: the clip is too short ({duration:.2f} s): send at least {limits.min_seconds} s"
        )
    if not np.isfinite(audio).all() or float(np.abs(audio).max()) < limits.silence_peak:
        raise UploadError(422, f"{filename}: the clip is silent: record or choose a clip with sound in it")
    return Upload(audio, filename, fmt, duration, truncated, fields or {})


def _probe(data: bytes) -> tuple[str, float | None]:
    """(FFmpeg's format name, declared duration in seconds or None); non-audio content raises 415."""
    try:
        with av.open(io.BytesIO(data), mode="r") as container:
            fmt = container.format.name
            kinds = {s.type for s in container.streams}
            duration = container.duration / av.time_base if container.duration else None
    except (av.FFmpegError, OSError, ValueError) as exc:
        raise UploadError(
            415, "not an audio file we can read: send WAV, FLAC, MP3, Ogg, WebM/Opus or M4A"
        ) from exc
    if "audio" not in kinds or any(tag in fmt for tag in _IMAGE_OR_DOC):
        what = f"{fmt} {'/'.join(sorted(kinds)) or 'data'}"
        raise UploadError(415, f"wrong file type ({what}, no audio): send an audio clip")
    return fmt, duration
