"""Errors the server turns into 4xx/503 answers: each carries its HTTP status and a one-line message.

Messages may come from the pipelines, which name files by their absolute paths; `public_message` cuts the
server's folders out of them before they reach a client.
"""

from __future__ import annotations

import functools
import os
import sys
import tempfile
from pathlib import Path

from backend.settings import Settings
from pipelines.errors import AtlasError

PROJECT_ROOT = Path(__file__).resolve().parent.parent


class NotFoundError(AtlasError):
    """An id that the atlas does not hold (404)."""

    status_code = 404


class InvalidRequestError(AtlasError):
    """Well-formed parameters that make no sense together, e.g. an audio window past the clip (422)."""

    status_code = 422


class ForbiddenError(AtlasError):
    """A file the atlas points at lies outside the folders the server may read (403)."""

    status_code = 403


class AtlasUnavailableError(AtlasError):
    """No atlas yet, or one that cannot be opened: the message names the command that builds it (503)."""

    status_code = 503


class BusyError(AtlasError):
    """Too much work in progress (queued jobs, concurrent uploads): 503 with Retry-After."""

    status_code = 503

    def __init__(self, message: str, retry_after_s: int):
        super().__init__(message)
        self.retry_after_s = retry_after_s


@functools.cache
def server_folders(settings: Settings) -> list[str]:
    """Folders whose absolute paths no response may show: the data folder first (`runs/<run>/...` stays
    readable), then the others longest first (the most specific is cut)."""
    others = {
        settings.atlas_path.parent,
        *settings.audio_roots,
        Path(tempfile.gettempdir()),
        PROJECT_ROOT,
        Path(sys.prefix),
        Path.home(),
    }
    names = sorted({str(f.expanduser().resolve()) for f in others} - {"/"}, key=len, reverse=True)
    return [str(settings.data_dir), *names]


def public_message(text: str, settings: Settings) -> str:
    """`text` with every path under a server folder made relative to it (`/srv/data/runs/x` -> `runs/x`)."""
    for folder in server_folders(settings):
        text = text.replace(folder + os.sep, "").replace(folder, ".")
    return text


def public_path(path: Path, settings: Settings) -> str:
    """`path` as an answer may show it: relative to the data folder when inside it, else its name."""
    return str(path.relative_to(settings.data_dir)) if path.is_relative_to(settings.data_dir) else path.name
