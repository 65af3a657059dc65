"""Errors a user can fix: the CLI prints them as one line (no traceback), the API turns them into 4xx."""


class AtlasError(Exception):
    """Base for user-facing errors; the message says what is wrong and what to do."""


class AudioDecodeError(AtlasError):
    """The input is not audio we can decode (empty, truncated, not audio, unsupported)."""


class MissingStageError(AtlasError):
    """A stage's input is missing: the message names the command that produces it."""
