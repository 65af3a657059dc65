"""Audio I/O: decode anything FFmpeg reads into 16 kHz mono float32, and store clips as 16-bit FLAC.

Whisper consumes 16 kHz mono audio (Radford et al., "Robust Speech Recognition via Large-Scale Weak
Supervision", 2022), so every clip, upload or recording is decoded and resampled here once, through PyAV
(FFmpeg): WAV, FLAC, MP3, Ogg/Vorbis, WebM/Opus (browser recordings), M4A/AAC and raw G.722 all take one path.
Anything that does not yield audio raises `AudioDecodeError` with a one-line reason a user can act on.
"""

from __future__ import annotations

import io
from pathlib import Path

import av
import numpy as np

from pipelines.errors import AudioDecodeError

SAMPLE_RATE = 16000

RAW_FORMATS = {".g722": "g722", ".722": "g722"}
"""Headerless formats FFmpeg cannot probe: the demuxer is chosen by file suffix."""

TRUNCATION_RATIO = 0.9
"""A file whose decoded length falls this far short of its declared duration is reported as truncated."""

TRUNCATION_SLACK_S = 0.5
"""Shortfalls below this many seconds are tolerated (encoder padding, rounding of declared durations)."""

_RIFF_HEAD = 4096
"""Bytes read to find a WAV header's `data` chunk."""

_DECODE_ERRORS = (av.FFmpegError, OSError, ValueError, UnicodeDecodeError)


def decode_audio(
    source: str | Path | bytes, *, max_seconds: float | None = None, format: str | None = None
) -> np.ndarray:
    """Decode `source` (a path or the file's bytes) into float32 mono samples at 16 kHz.

    `max_seconds` stops decoding there (the result is cut), so huge inputs cost no more than that.
    `format` forces an FFmpeg demuxer (e.g. `"g722"`); by default it is probed, or taken from a raw suffix.
    """
    if max_seconds is not None and max_seconds <= 0:
        raise ValueError(f"max_seconds must be positive, got {max_seconds}")
    file, name, format, missing = _open_source(source, format)
    try:
        with av.open(file, mode="r", format=format) as container:
            if not container.streams.audio:
                raise AudioDecodeError(f"{name}: the file has no audio stream")
            return _decode_stream(container, name, max_seconds, missing)
    except AudioDecodeError:
        raise
    except _DECODE_ERRORS as exc:
        raise AudioDecodeError(f"{name}: not a readable audio file ({_reason(exc)})") from exc


def probe_seconds(path: Path, format: str | None = None) -> float:
    """The duration a file declares, read from its header without decoding (0.0 when it declares none)."""
    path = Path(path)
    try:
        with av.open(str(path), mode="r", format=format or RAW_FORMATS.get(path.suffix.lower())) as container:
            if not container.streams.audio:
                raise AudioDecodeError(f"{path.name}: the file has no audio stream")
            return _declared_seconds(container, container.streams.audio[0]) or 0.0
    except _DECODE_ERRORS as exc:
        raise AudioDecodeError(f"{path.name}: not a readable audio file ({_reason(exc)})") from exc


def write_flac(path: Path, audio: np.ndarray) -> None:
    """Write float32 mono 16 kHz `audio` as 16-bit FLAC, atomically (a reader never sees half a file)."""
    path = Path(path)
    samples = np.asarray(audio, dtype=np.float32).reshape(-1)
    if samples.size == 0:
        raise ValueError(f"refusing to write an empty clip to {path}")
    pcm = (np.clip(samples, -1.0, 1.0) * 32767.0).round().astype(np.int16)
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_name(path.name + ".tmp")
    with av.open(str(tmp), mode="w", format="flac") as container:
        stream = container.add_stream("flac", rate=SAMPLE_RATE, layout="mono", format="s16")
        frame = av.AudioFrame.from_ndarray(pcm.reshape(1, -1), format="s16", layout="mono")
        frame.sample_rate = SAMPLE_RATE
        for packet in stream.encode(frame):
            container.mux(packet)
        for packet in stream.encode(None):
            container.mux(packet)
    tmp.replace(path)


def _open_source(source: str | Path | bytes, format: str | None) -> tuple[object, str, str | None, float]:
    """What to hand `av.open`, a name for messages, the demuxer to force, and the WAV shortfall."""
    if isinstance(source, (bytes, bytearray, memoryview)):
        data = bytes(source)
        if not data:
            raise AudioDecodeError("the audio is empty (0 bytes)")
        return io.BytesIO(data), "upload", format, _riff_missing_fraction(data[:_RIFF_HEAD], len(data))
    path = Path(source)
    if not path.is_file():
        raise AudioDecodeError(f"{path.name}: no such file")
    size = path.stat().st_size
    if size == 0:
        raise AudioDecodeError(f"{path.name}: the file is empty (0 bytes)")
    with open(path, "rb") as f:
        missing = _riff_missing_fraction(f.read(_RIFF_HEAD), size)
    return str(path), path.name, format or RAW_FORMATS.get(path.suffix.lower()), missing


def _decode_stream(
    container: av.container.InputContainer, name: str, max_seconds: float | None, missing: float
) -> np.ndarray:
    stream = container.streams.audio[0]
    # Channels are kept through resampling and averaged here: FFmpeg's own stereo-to-mono matrix adds them
    # at -3 dB each, which makes identical channels 1.4x louder and can clip.
    resampler = av.AudioResampler(format="fltp", rate=SAMPLE_RATE)
    limit = None if max_seconds is None else int(round(max_seconds * SAMPLE_RATE))
    chunks: list[np.ndarray] = []
    n_samples = 0
    try:
        for frame in container.decode(stream):
            for out in resampler.resample(frame):
                chunks.append(out.to_ndarray().mean(axis=0))
                n_samples += chunks[-1].size
            if limit is not None and n_samples >= limit:
                break
        else:
            for out in resampler.resample(None):
                chunks.append(out.to_ndarray().mean(axis=0))
                n_samples += chunks[-1].size
    except _DECODE_ERRORS as exc:
        raise AudioDecodeError(f"{name}: the audio is truncated or corrupt ({_reason(exc)})") from exc
    if n_samples == 0:
        raise AudioDecodeError(f"{name}: no audio samples could be decoded (empty or truncated)")
    audio = np.concatenate(chunks).astype(np.float32, copy=False)
    if limit is not None:
        return audio[:limit]
    decoded = n_samples / SAMPLE_RATE
    declared = _declared_seconds(container, stream)
    if missing > 0:  # FFmpeg takes a WAV's duration from the file size: add back what the header promised
        declared = decoded / (1.0 - missing)
    if declared and decoded < declared * TRUNCATION_RATIO and declared - decoded > TRUNCATION_SLACK_S:
        raise AudioDecodeError(f"{name}: the audio is truncated (only {decoded:.1f} s of {declared:.1f} s)")
    return audio


def _riff_missing_fraction(head: bytes, size: int) -> float:
    """The fraction of a WAV's `data` chunk that its header promises but the file lacks (0 when whole)."""
    if head[:4] != b"RIFF" or head[8:12] != b"WAVE":
        return 0.0
    pos = 12
    while pos + 8 <= len(head):
        chunk, length = head[pos : pos + 4], int.from_bytes(head[pos + 4 : pos + 8], "little")
        if chunk == b"data":
            if length in (0, 0xFFFFFFFF):  # streaming writers leave the size open
                return 0.0
            return max(0.0, 1.0 - (size - pos - 8) / length)
        pos += 8 + length + (length & 1)
    return 0.0


def _declared_seconds(container: av.container.InputContainer, stream: av.audio.AudioStream) -> float | None:
    """The duration the container claims, when it claims one (raw and streamed formats often do not)."""
    if stream.duration is not None and stream.time_base is not None:
        return float(stream.duration * stream.time_base)
    if container.duration is not None:
        return container.duration / av.time_base
    return None


def _reason(exc: Exception) -> str:
    """The first line of an FFmpeg/OS error, without the file name PyAV appends."""
    text = getattr(exc, "strerror", None) or str(exc) or type(exc).__name__
    return text.splitlines()[0].strip()
