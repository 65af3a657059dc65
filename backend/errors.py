"""Errors the server turns into 4xx/503 answers: each carries its HTTP status and a one-line message."""

from __future__ import annotations

from pipelines.errors import AtlasError


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
