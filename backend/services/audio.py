"""Clip audio for the browser: the stored FLAC whole (byte ranges let the player seek), or a WAV window.

Paths come only from the atlas, never from a request, and even those are served only from inside the allowed
roots (the data folder, the atlas's folder, configured extras): a tampered or hostile atlas cannot make the
server read `/etc/passwd`.
"""

from __future__ import annotations

import io
import wave
from pathlib import Path

import numpy as np

from backend.errors import ForbiddenError, InvalidRequestError, NotFoundError
from pipelines.audio import SAMPLE_RATE, decode_audio
from pipelines.errors import AudioDecodeError

WINDOW_TOLERANCE_S = 0.05
"""A window may end this far past the clip's stored duration (frame rounding) before it is refused."""


def resolve_audio(audio_path: str, roots: tuple[Path, ...], clip_id: int) -> Path:
    """The clip's audio file, if it exists inside one of `roots`."""
    path = Path(audio_path).resolve()
    if not any(path.is_relative_to(root.resolve()) for root in roots):
        raise ForbiddenError(f"Clip {clip_id}'s audio lies outside the folders this server may read.")
    if not path.is_file():
        raise NotFoundError(f"Clip {clip_id}'s audio file is missing: rebuild the corpus (`make demo`).")
    return path


def check_window(
    start: float | None, end: float | None, duration: float, max_seconds: float
) -> tuple[float, float]:
    """Validate an audio window against the clip; returns (start, end) in seconds."""
    a = 0.0 if start is None else start
    b = duration if end is None else end
    if b <= a:
        raise InvalidRequestError(f"The window must end after it starts (start {a} s, end {b} s).")
    if b > duration + WINDOW_TOLERANCE_S:
        raise InvalidRequestError(f"The window ends at {b} s, past the clip's end ({duration:.3f} s).")
    if b - a > max_seconds:
        raise InvalidRequestError(
            f"The window is {b - a:.1f} s, over the {max_seconds:g} s limit (omit start/end: whole clip)."
        )
    return a, min(b, duration)


def wav_window(path: Path, start: float, end: float, clip_id: int) -> bytes:
    """16-bit mono 16 kHz WAV of [start, end) seconds of the file."""
    try:
        audio = decode_audio(path, max_seconds=end + 0.1)
    except AudioDecodeError as exc:
        raise NotFoundError(
            f"Clip {clip_id}'s audio cannot be decoded ({exc}): rebuild the corpus."
        ) from None
    samples = audio[int(round(start * SAMPLE_RATE)) : int(round(end * SAMPLE_RATE))]
    pcm = (np.clip(samples, -1.0, 1.0) * 32767.0).round().astype("<i2")
    out = io.BytesIO()
    with wave.open(out, "wb") as wav:
        wav.setnchannels(1)
        wav.setsampwidth(2)
        wav.setframerate(SAMPLE_RATE)
        wav.writeframes(pcm.tobytes())
    return out.getvalue()
