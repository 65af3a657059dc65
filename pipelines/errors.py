"""Errors a user can fix: the CLI prints them as one line (no traceback), the API turns them into 4xx."""


class AtlasError(Exception):
    """Base for user-facing errors; the message says what is wrong and what to do."""


class AudioDecodeError(AtlasError):
    """The input is not audio we can decode (empty, truncated, not audio, unsupported)."""


class MissingStageError(AtlasError, FileNotFoundError):
    """A stage's input is missing: the message names the command that produces it.

    Also a FileNotFoundError, since a missing stage output is a missing file or folder: callers that catch
    the OS error keep working where a raw FileNotFoundError used to be raised.
    """


def missing_stage(what: str, where: object, command: str) -> MissingStageError:
    """The error for a stage output that is not there yet, e.g. `missing_stage("SAE", folder, "train")`."""
    return MissingStageError(f"no {what} in {where}: run `whisper-atlas {command}` first")
