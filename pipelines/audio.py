"""Audio I/O: decode real audio containers into 16 kHz mono float32, and store clips as 16-bit FLAC.

Whisper consumes 16 kHz mono audio (Radford et al., "Robust Speech Recognition via Large-Scale Weak
Supervision", 2022), so every clip, upload or recording is decoded and resampled here once, through PyAV
(FFmpeg): WAV, FLAC, MP3, Ogg/Vorbis, WebM/Opus (browser recordings), M4A/AAC and raw G.722 all take one path.
Anything that does not yield audio raises `AudioDecodeError` with a one-line reason a user can act on.

Inputs may be hostile, so FFmpeg is fenced in: only the audio demuxers in `ACCEPTED_DEMUXERS` and the local
`file:` protocol are allowed (FFmpeg's concat, playlist, SDP and network inputs would open other files and
sockets), sample rate and channel count are checked on every frame, each channel's samples are read straight
from the frame and averaged in NumPy (PyAV's own frame-to-array conversion reads a ninth plane of an
8-channel frame, a segfault on any 8-channel input), only mono reaches the resampler, and `max_seconds`
bounds the samples decoded, whatever the header claims. `pipelines.audio_sandbox` runs this
in worker processes for files that may still crash or hang the decoder.
"""

from __future__ import annotations

import io
import os
from pathlib import Path
from typing import Iterator

import av
import numpy as np
from av.audio.plane import AudioPlane

from pipelines.constants import SAMPLE_RATE
from pipelines.errors import AudioDecodeError

RAW_FORMATS = {".g722": "g722", ".722": "g722"}
"""Headerless formats FFmpeg cannot probe: the demuxer is chosen by file suffix."""

ACCEPTED_DEMUXERS = ("wav", "flac", "mp3", "ogg", "matroska", "mov", "aac", "g722")
"""The FFmpeg demuxers a file may be read with (`matroska` also reads WebM, `mov` reads MP4/M4A); FFmpeg
probes the format first and refuses any other (concat, playlists, SDP, devices, images, text)."""

MIN_RATE, MAX_RATE = 8000, 192000
"""Sample rates accepted, in Hz (telephone audio to studio masters)."""

MAX_CHANNELS = 8
"""Channels accepted (7.1); each is averaged into the mono signal."""

TRUNCATION_RATIO = 0.9
"""A file whose decoded length falls this far short of its declared duration is reported as truncated."""

TRUNCATION_SLACK_S = 0.5
"""Shortfalls below this many seconds are tolerated (encoder padding, rounding of declared durations)."""

_RIFF_HEAD = 4096
"""Bytes read to find a WAV header's `data` chunk."""

_RESAMPLE_PAD_S = 0.01
"""Input decoded past `max_seconds`, so that the resampler's delay still yields the last samples wanted."""

_SAMPLE_DTYPES = {
    k: np.dtype(v) for k, v in dict(u8="u1", s16="i2", s32="i4", s64="i8", flt="f4", dbl="f8").items()
}
"""FFmpeg sample formats (packed names; planar ones add `p`) and their NumPy types."""

_OPEN_OPTIONS = {"format_whitelist": ",".join(ACCEPTED_DEMUXERS), "protocol_whitelist": "file"}

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
        with _open(file, format, name) as container:
            if not container.streams.audio:
                raise AudioDecodeError(f"{name}: the file has no audio stream")
            return _decode_stream(container, name, max_seconds, missing)
    except (AudioDecodeError, MemoryError):  # out of memory is the caller's bound, not the file's fault
        raise
    except _DECODE_ERRORS as exc:
        raise AudioDecodeError(f"{name}: not a readable audio file ({_reason(exc)})") from exc


def probe_seconds(path: Path, format: str | None = None) -> float:
    """The duration a file declares, read from its header without decoding (0.0 when it declares none)."""
    path = Path(path)
    try:
        with _open(_file_url(path), format or RAW_FORMATS.get(path.suffix.lower()), path.name) as container:
            if not container.streams.audio:
                raise AudioDecodeError(f"{path.name}: the file has no audio stream")
            return _declared_seconds(container, container.streams.audio[0]) or 0.0
    except AudioDecodeError:
        raise
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
        return io.BytesIO(data), "upload", format, riff_missing_fraction(data[:_RIFF_HEAD], len(data))
    path = Path(source)
    if not path.is_file():
        raise AudioDecodeError(f"{path.name}: no such file")
    size = path.stat().st_size
    if size == 0:
        raise AudioDecodeError(f"{path.name}: the file is empty (0 bytes)")
    with open(path, "rb") as f:
        missing = riff_missing_fraction(f.read(_RIFF_HEAD), size)
    return _file_url(path), path.name, format or RAW_FORMATS.get(path.suffix.lower()), missing


def _file_url(path: Path) -> str:
    """The path as an explicit `file:` URL, so a name like `http:x.wav` or `pipe:0` stays a local file."""
    return "file:" + os.path.abspath(path)


def _open(file: object, format: str | None, name: str) -> av.container.InputContainer:
    """`av.open` for reading, limited to the accepted demuxers and the local file protocol."""
    try:
        return av.open(file, mode="r", format=format, container_options=_OPEN_OPTIONS)
    except av.error.ArgumentError as exc:  # FFmpeg's answer to a format or protocol off the whitelists
        raise AudioDecodeError(
            f"{name}: not an accepted audio format (send WAV, FLAC, MP3, Ogg, WebM, MP4/M4A or AAC)"
        ) from exc


def _decode_stream(
    container: av.container.InputContainer, name: str, max_seconds: float | None, missing: float
) -> np.ndarray:
    stream = container.streams.audio[0]
    if stream.codec_context is None:
        raise AudioDecodeError(f"{name}: no decoder for this kind of audio")
    if stream.rate and stream.channels:  # 0 when the header does not say; every frame is checked anyway
        _check_shape(name, stream.rate, stream.channels)
    try:
        audio = _decode_mono(container, stream, name, max_seconds)
    except MemoryError:
        raise
    except _DECODE_ERRORS as exc:
        raise AudioDecodeError(f"{name}: the audio is truncated or corrupt ({_reason(exc)})") from exc
    if audio.size == 0:
        raise AudioDecodeError(f"{name}: no audio samples could be decoded (empty or truncated)")
    if max_seconds is not None:
        return audio[: int(round(max_seconds * SAMPLE_RATE))]
    decoded = audio.size / SAMPLE_RATE
    declared = _declared_seconds(container, stream)
    if missing > 0:  # FFmpeg takes a WAV's duration from the file size: add back what the header promised
        declared = decoded / (1.0 - missing)
    if declared and decoded < declared * TRUNCATION_RATIO and declared - decoded > TRUNCATION_SLACK_S:
        raise AudioDecodeError(f"{name}: the audio is truncated (only {decoded:.1f} s of {declared:.1f} s)")
    return audio


def _decode_mono(
    container: av.container.InputContainer, stream: av.audio.AudioStream, name: str, max_seconds: float | None
) -> np.ndarray:
    """The stream as 16 kHz mono float32, resampled a second of input at a time (fewer calls into PyAV)."""
    resampler = av.AudioResampler(format="flt", layout="mono", rate=SAMPLE_RATE)
    chunks: list[np.ndarray] = []
    pending: list[np.ndarray] = []
    rate = 0
    for rate, mono in _mono_input(container, stream, name, max_seconds):
        pending.append(mono)
        if sum(p.size for p in pending) >= rate:
            chunks += _resample(resampler, np.concatenate(pending), rate)
            pending = []
    if pending:
        chunks += _resample(resampler, np.concatenate(pending), rate)
    chunks += _resample(resampler, None, rate)
    return np.concatenate(chunks) if chunks else np.zeros(0, dtype=np.float32)


def _mono_input(
    container: av.container.InputContainer, stream: av.audio.AudioStream, name: str, max_seconds: float | None
) -> Iterator[tuple[int, np.ndarray]]:
    """(input rate, the frame's channels averaged) per frame; stops past `max_seconds` (plus a margin)."""
    rate, budget = 0, None  # the input rate, and the input samples still wanted (None: all)
    for frame in container.decode(stream):
        _check_shape(name, frame.sample_rate, frame.layout.nb_channels)
        if not rate:
            rate = frame.sample_rate
            if max_seconds is not None:
                budget = int(np.ceil((max_seconds + _RESAMPLE_PAD_S) * rate))
        elif frame.sample_rate != rate:
            raise AudioDecodeError(
                f"{name}: the sample rate changes mid-stream ({rate} to {frame.sample_rate} Hz)"
            )
        mono = _frame_mono(frame, name)
        if budget is not None:
            mono, budget = mono[:budget], budget - min(budget, mono.size)
        yield rate, mono
        if budget == 0:
            return


def _check_shape(name: str, rate: int, channels: int) -> None:
    if not MIN_RATE <= rate <= MAX_RATE:
        raise AudioDecodeError(
            f"{name}: unsupported sample rate {rate} Hz (accepted: {MIN_RATE}-{MAX_RATE} Hz)"
        )
    if not 1 <= channels <= MAX_CHANNELS:
        raise AudioDecodeError(f"{name}: unsupported channel count {channels} (accepted: 1-{MAX_CHANNELS})")


def _frame_mono(frame: av.AudioFrame, name: str) -> np.ndarray:
    """The frame's channels averaged, as float32 in [-1, 1].

    Averaging here, not in FFmpeg's resampler, keeps every layout (named or not) out of the resampler, and
    keeps the level: FFmpeg's stereo-to-mono matrix adds channels at -3 dB, so identical ones get 1.4x louder.
    The planes are read one per channel: PyAV's `frame.planes` (and so `to_ndarray`) looks for a ninth pointer
    past an 8-channel planar frame's eight and reads garbage there (a segfault on 7.1 Opus, and on the
    8-channel output of the resampler that decoding used to hand every layout to).
    """
    dtype = _SAMPLE_DTYPES.get(frame.format.name.removesuffix("p"))
    if dtype is None:
        raise AudioDecodeError(f"{name}: unsupported sample format {frame.format.name}")
    channels = frame.layout.nb_channels
    if frame.format.is_planar:
        planes = [_plane(frame, c, dtype, frame.samples) for c in range(channels)]
    else:  # one plane, channels interleaved
        packed = _plane(frame, 0, dtype, frame.samples * channels).reshape(-1, channels)
        planes = [packed[:, c] for c in range(channels)]
    mono = planes[0].astype(np.float32)  # summed row by row: what `mean(axis=0)` does, without its casts
    for plane in planes[1:]:
        mono += plane
    mono /= channels
    if dtype == np.uint8:  # unsigned 8-bit is centred on 128
        return (mono - 128.0) / 128.0
    if dtype.kind == "i":  # FFmpeg's own scale, 1 / 2^(bits - 1)
        return mono * np.float32(2.0 ** (1 - 8 * dtype.itemsize))
    return mono


def _plane(frame: av.AudioFrame, index: int, dtype: np.dtype, count: int) -> np.ndarray:
    """`count` samples of plane `index`; raises ValueError when the plane holds fewer."""
    return np.frombuffer(memoryview(AudioPlane(frame, index)), dtype, count=count)


def _resample(resampler: av.AudioResampler, mono: np.ndarray | None, rate: int) -> list[np.ndarray]:
    """Mono samples at `rate` as 16 kHz chunks; None flushes the resampler's tail."""
    if rate in (0, SAMPLE_RATE):  # nothing decoded, or already at 16 kHz
        return [] if mono is None else [mono]
    frame = None
    if mono is not None:
        frame = av.AudioFrame.from_ndarray(mono[None, :], format="flt", layout="mono")
        frame.sample_rate = rate
    return [out.to_ndarray()[0] for out in resampler.resample(frame)]


def riff_missing_fraction(head: bytes, size: int) -> float:
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
