"""pipelines.audio: real formats decode to 16 kHz mono float32; broken inputs raise AudioDecodeError."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest

from pipelines.audio import SAMPLE_RATE, decode_audio, probe_seconds, write_flac
from pipelines.errors import AudioDecodeError
from tests.fixtures.audio import FORMATS, LOSSLESS, encode, encode_tone, tone, video_only

SECONDS = 2.0


def aligned_correlation(audio: np.ndarray, reference: np.ndarray, max_lag: int = 2000) -> float:
    """Best normalised correlation over small shifts (lossy codecs add a few ms of priming delay)."""
    n = min(audio.size, reference.size) - max_lag
    ref = reference[max_lag // 2 : max_lag // 2 + n // 2]
    best = 0.0
    for lag in range(0, max_lag, 4):
        seg = audio[lag : lag + ref.size]
        best = max(best, float(np.dot(seg, ref) / (np.linalg.norm(seg) * np.linalg.norm(ref) + 1e-12)))
    return best


@pytest.mark.parametrize("suffix", sorted(FORMATS))
def test_decodes_every_format_to_16k_mono(tmp_path: Path, suffix: str) -> None:
    path = encode_tone(tmp_path / f"tone.{suffix}", SECONDS)
    audio = decode_audio(path)
    assert audio.dtype == np.float32 and audio.ndim == 1
    assert abs(audio.size / SAMPLE_RATE - SECONDS) < 0.1
    peak_hz = np.argmax(np.abs(np.fft.rfft(audio))) * SAMPLE_RATE / audio.size
    assert abs(peak_hz - 440) < 5
    reference = tone(SECONDS, SAMPLE_RATE)
    assert np.sqrt(np.mean(audio**2)) == pytest.approx(np.sqrt(np.mean(reference**2)), rel=0.1)
    assert aligned_correlation(audio, reference) > 0.95
    if suffix in LOSSLESS:
        middle = slice(1000, reference.size - 1000)
        assert np.abs(audio[middle] - reference[middle]).max() < 2e-3


@pytest.mark.parametrize("suffix", ["wav", "ogg", "webm"])
def test_bytes_and_paths_decode_alike(tmp_path: Path, suffix: str) -> None:
    path = encode_tone(tmp_path / f"tone.{suffix}")
    np.testing.assert_array_equal(decode_audio(path.read_bytes()), decode_audio(path))
    assert decode_audio(str(path)).size == decode_audio(path).size


def test_stereo_and_odd_rates_are_averaged_and_resampled(tmp_path: Path) -> None:
    rate = 11025
    path = encode(tmp_path / "stereo.wav", tone(1.5, rate), rate, channels=2)
    audio = decode_audio(path)
    assert audio.size == pytest.approx(1.5 * SAMPLE_RATE, abs=2)
    # identical channels averaged: same level as the mono signal, not louder
    assert np.abs(audio).max() == pytest.approx(0.5, abs=0.02)


def test_max_seconds_cuts_decoding(tmp_path: Path) -> None:
    path = encode_tone(tmp_path / "long.flac", 3.0)
    assert decode_audio(path, max_seconds=1.0).size == SAMPLE_RATE
    with pytest.raises(ValueError):
        decode_audio(path, max_seconds=0)


def test_raw_g722_is_decoded_by_suffix_or_format(tmp_path: Path) -> None:
    import av

    path = tmp_path / "prompt.g722"
    with av.open(str(path), mode="w", format="g722") as container:
        stream = container.add_stream("g722", rate=SAMPLE_RATE, layout="mono")
        frame = av.AudioFrame.from_ndarray(
            (tone(1.0, SAMPLE_RATE)[None] * 32767).astype(np.int16), format="s16", layout="mono"
        )
        frame.sample_rate = SAMPLE_RATE
        for packet in [*stream.encode(frame), *stream.encode(None)]:
            container.mux(packet)
    assert abs(decode_audio(path).size - SAMPLE_RATE) < 400
    assert abs(decode_audio(path.read_bytes(), format="g722").size - SAMPLE_RATE) < 400
    assert probe_seconds(path) == pytest.approx(1.0, abs=0.03)


def test_write_flac_round_trips(tmp_path: Path) -> None:
    audio = tone(1.25, SAMPLE_RATE, freq=1000)
    target = tmp_path / "sub" / "clip.flac"
    write_flac(target, audio)
    back = decode_audio(target)
    assert back.size == audio.size
    assert np.abs(back - audio).max() < 2 / 32767
    assert not list(target.parent.glob("*.tmp"))
    with pytest.raises(ValueError):
        write_flac(tmp_path / "empty.flac", np.zeros(0, dtype=np.float32))


def _broken_inputs(tmp_path: Path) -> dict[str, bytes | Path]:
    flac = encode_tone(tmp_path / "whole.flac", 3.0).read_bytes()
    wav = encode_tone(tmp_path / "whole.wav", 3.0).read_bytes()
    mp3 = encode_tone(tmp_path / "whole.mp3", 3.0).read_bytes()
    text = tmp_path / "notes.wav"
    text.write_text("this is a text file pretending to be audio\n" * 20)
    empty = tmp_path / "empty.ogg"
    empty.write_bytes(b"")
    return {
        "empty bytes": b"",
        "empty file": empty,
        "missing file": tmp_path / "nope.wav",
        "truncated flac": flac[: len(flac) // 2],
        "truncated wav": wav[: len(wav) // 3],
        "truncated mp3": mp3[: len(mp3) // 3],
        "header only": wav[:44],
        "random bytes": np.random.default_rng(0).bytes(4096),
        "text renamed .wav": text,
        "video without audio": video_only(tmp_path / "video.mkv"),
    }


def test_broken_inputs_raise_one_line_errors(tmp_path: Path) -> None:
    for name, source in _broken_inputs(tmp_path).items():
        with pytest.raises(AudioDecodeError) as caught:
            decode_audio(source)
        message = str(caught.value)
        assert message and "\n" not in message, name


def test_probe_reads_the_header_without_decoding(tmp_path: Path) -> None:
    assert probe_seconds(encode_tone(tmp_path / "a.opus", 1.5)) == pytest.approx(1.5, abs=0.05)
    with pytest.raises(AudioDecodeError):
        probe_seconds(video_only(tmp_path / "v.mkv"))
