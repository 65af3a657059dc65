"""Audio uploads for live analysis and steering: receive a multipart body safely, decode it out of process.

Defences, in order: at most `max_concurrent` uploads are received or decoded at once (`UploadGate`: 503 with
Retry-After past that); the body is streamed and reading stops past `max_bytes` (413); the file lands in a
private temporary folder that is removed whatever happens; the file name is only echoed, never used as a
path, and one with path separators or control characters is refused (400). The event loop does nothing
else: images and documents are told apart by their first bytes (415), and the audio is decoded by
`pipelines.audio_sandbox` in a worker process (only real audio containers, a wall-clock and a memory bound),
so a file that crashes, hangs or floods FFmpeg costs its own request a 422 and never the server. Content that
is not audio is 415; truncated or corrupt audio is 422; clips longer than `max_seconds` are cut to their
first `max_seconds` and flagged `truncated`; silent or too-short clips are 422. Every refusal carries a
one-line message saying what to do.
"""

from __future__ import annotations

import asyncio
import re
import shutil
import tempfile
from contextlib import asynccontextmanager, contextmanager
from dataclasses import dataclass, field
from pathlib import Path
from typing import IO, AsyncGenerator, AsyncIterator, Iterator

import numpy as np
from starlette.datastructures import UploadFile
from starlette.formparsers import MultiPartException, MultiPartParser
from starlette.requests import Request

from backend.errors import BusyError
from backend.settings import UploadLimits
from pipelines import audio_sandbox
from pipelines.audio import SAMPLE_RATE, TRUNCATION_RATIO, TRUNCATION_SLACK_S, riff_missing_fraction
from pipelines.errors import AtlasError, AudioDecodeError

FILE_FIELD = "file"
TEMP_NAME = "upload"
"""Name of the uploaded file in its temporary folder: decoder messages start with it, and lose it."""


class UploadError(AtlasError):
    """A refused upload; `status_code` is the HTTP status the API answers with."""

    def __init__(self, status_code: int, message: str):
        super().__init__(message)
        self.status_code = status_code


class UploadsBusy(BusyError):
    """Too many uploads being received or decoded at once: 503 with Retry-After."""

    def __init__(self, retry_after_s: int):
        super().__init__(f"too many uploads at once: retry in {retry_after_s} s", retry_after_s)


@dataclass
class Upload:
    """A decoded, checked upload."""

    audio: np.ndarray
    """float32 mono 16 kHz, at most `max_seconds` long."""
    filename: str
    duration: float
    """Seconds kept (after truncation)."""
    truncated: bool
    """True when the clip was longer than the limit and only its start was kept."""
    fields: dict[str, str] = field(default_factory=dict)
    """The other (text) form fields, e.g. the steering `spec`."""


@dataclass(frozen=True)
class ReceivedUpload:
    """An upload stored in its temporary folder, not decoded yet."""

    path: Path
    filename: str
    fields: dict[str, str]


class UploadGate:
    """Bounds the uploads being received or decoded at once (used on the event loop only: no lock)."""

    def __init__(self, limit: int, retry_after_s: int) -> None:
        self.limit, self.retry_after_s = limit, retry_after_s
        self.active = 0

    @contextmanager
    def admit(self) -> Iterator[None]:
        """Hold one of the places, or raise UploadsBusy at once when none is free."""
        if self.active >= self.limit:
            raise UploadsBusy(self.retry_after_s)
        self.active += 1
        try:
            yield
        finally:
            self.active -= 1


_BAD_NAME = re.compile(r"[/\\\x00-\x1f\x7f]")
_NOT_AUDIO_MAGIC = {
    b"\x89PNG": "png image",
    b"\xff\xd8\xff": "jpeg image",
    b"GIF8": "gif image",
    b"%PDF": "pdf document",
    b"PK\x03\x04": "zip archive",
    b"II*\x00": "tiff image",
    b"MM\x00*": "tiff image",
}
"""First bytes of common non-audio files, named in the 415 without asking FFmpeg."""
_NOT_AUDIO_REASONS = ("not an accepted audio format", "not a readable audio file")
"""How `pipelines.audio` says that a file is no audio container at all (415, not 422)."""


@asynccontextmanager
async def receive_upload(request: Request, limits: UploadLimits) -> AsyncIterator[ReceivedUpload]:
    """Stream the multipart body of `request` (field `file` + text fields) into a temporary folder, which is
    removed when the block ends."""
    content_type = request.headers.get("content-type", "")
    if not content_type.startswith("multipart/form-data"):
        raise UploadError(400, f"send the audio as multipart/form-data with a `{FILE_FIELD}` field")
    declared = request.headers.get("content-length")
    if declared and declared.isdigit() and int(declared) > limits.max_bytes:
        raise _too_large(limits)
    folder = Path(tempfile.mkdtemp(prefix="whisper-atlas-upload-"))
    try:
        parser = MultiPartParser(request.headers, _capped(request, limits), max_files=1, max_fields=16)
        try:
            form = await parser.parse()
        except MultiPartException as exc:
            raise UploadError(400, f"malformed multipart body: {exc}") from exc
        try:
            upload = form.get(FILE_FIELD)
            if not isinstance(upload, UploadFile):
                raise UploadError(400, f"no audio: send the file in the multipart field `{FILE_FIELD}`")
            filename = check_filename(upload.filename or "")
            size = await asyncio.to_thread(_save, upload.file, folder / TEMP_NAME)
            fields = {k: v for k, v in form.multi_items() if isinstance(v, str)}
        finally:
            await form.close()
        if size == 0:
            raise UploadError(400, "the file is empty (0 bytes): choose or record a clip")
        yield ReceivedUpload(folder / TEMP_NAME, filename, fields)
    finally:
        shutil.rmtree(folder, ignore_errors=True)


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


def _save(file: IO[bytes], path: Path) -> int:
    """Copy the parser's spooled file to `path`; returns its size."""
    file.seek(0)
    with open(path, "wb") as out:
        shutil.copyfileobj(file, out, 2**20)
        return out.tell()


def check_filename(name: str) -> str:
    """The client's file name, if harmless (it is only ever echoed back)."""
    if len(name) > 255 or _BAD_NAME.search(name) or name in (".", ".."):
        raise UploadError(400, "bad file name: use a plain name without paths or control characters")
    return name or "upload"


def refuse_non_audio(received: ReceivedUpload) -> None:
    """415 for an image or document, told by its first bytes (cheap: checked before any decoding)."""
    with open(received.path, "rb") as f:
        head = f.read(16)
    what = next((kind for magic, kind in _NOT_AUDIO_MAGIC.items() if head.startswith(magic)), None)
    if what is None and head[:4] == b"RIFF" and head[8:12] == b"WEBP":
        what = "webp image"
    if what is not None:
        raise UploadError(415, f"wrong file type ({what}, no audio): send an audio clip")


async def decode_upload(received: ReceivedUpload, limits: UploadLimits) -> Upload:
    """Decode the stored upload in a worker process (off the event loop), then cut and check it."""
    try:
        audio = await asyncio.to_thread(
            audio_sandbox.decode_file_isolated,
            received.path,
            max_seconds=limits.max_seconds + 0.02,  # a frame more: tells a long clip from an exact one
            timeout_s=limits.decode_timeout_s,
            memory_mb=limits.decode_memory_mb,
        )
    except AudioDecodeError as exc:
        raise _refusal(str(exc), received.filename) from None
    except AtlasError as exc:  # the worker process itself could not start
        raise UploadError(503, f"the audio decoder is not available right now ({exc}): retry later") from None
    return check_clip(audio, received, limits)


def _refusal(reason: str, filename: str) -> UploadError:
    """The decoder's reason as the client's answer: 415 when it is no audio at all, else 422."""
    if any(text in reason for text in _NOT_AUDIO_REASONS):
        return UploadError(415, "not an audio file we can read: send WAV, FLAC, MP3, Ogg, WebM/Opus or M4A")
    if "no audio stream" in reason:
        return UploadError(415, "wrong file type (no audio stream): send an audio clip")
    return UploadError(422, f"{filename}: {reason.removeprefix(TEMP_NAME + ': ')}")


def check_clip(audio: np.ndarray, received: ReceivedUpload, limits: UploadLimits) -> Upload:
    """Cut the decoded clip to `max_seconds`; refuse it when truncated, too short or silent (422)."""
    filename = received.filename
    limit = int(limits.max_seconds * SAMPLE_RATE)
    truncated = len(audio) > limit
    audio = audio[:limit]
    duration = len(audio) / SAMPLE_RATE
    promised = None if truncated else _wav_promised_seconds(received.path, duration)
    if promised is not None:
        raise UploadError(
            422, f"{filename}: the audio is truncated (only {duration:.1f} s of {promised:.1f} s)"
        )
    if duration < limits.min_seconds:
        raise UploadError(
            422, f"{filename}: the clip is too short ({duration:.2f} s): send at least {limits.min_seconds} s"
        )
    if not np.isfinite(audio).all() or float(np.abs(audio).max()) < limits.silence_peak:
        raise UploadError(422, f"{filename}: the clip is silent: record or choose a clip with sound in it")
    return Upload(audio, filename, duration, truncated, received.fields)


def _wav_promised_seconds(path: Path, decoded_s: float) -> float | None:
    """The duration a WAV's header promises when the file holds much less (a cut-off upload), else None.

    The decoder stops at `max_seconds` and so does not compare lengths itself; a WAV is the one format whose
    header states its length in plain bytes, read here without FFmpeg.
    """
    with open(path, "rb") as f:
        head = f.read(4096)
    missing = riff_missing_fraction(head, path.stat().st_size)
    if missing <= 0 or missing >= 1:
        return None
    promised = decoded_s / (1.0 - missing)
    short = decoded_s < promised * TRUNCATION_RATIO and promised - decoded_s > TRUNCATION_SLACK_S
    return promised if short else None
