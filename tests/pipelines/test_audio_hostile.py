"""pipelines.audio and pipelines.audio_sandbox against hostile inputs: every one is refused with a reason or
decoded to sane audio within seconds, and no crash, hang or bomb reaches the calling process."""

from __future__ import annotations

import os
import subprocess
import sys
import time
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import numpy as np
import pytest

from pipelines import audio_sandbox
from pipelines.audio import SAMPLE_RATE, decode_audio
from pipelines.audio_sandbox import decode_file_isolated
from pipelines.errors import AudioDecodeError
from tests.fixtures import hostile_audio
from tests.fixtures.hostile_audio import AUDIO, EITHER, KINDS, Hostile, faulty_workers

MUTATIONS = int(os.environ.get("WHISPER_ATLAS_HOSTILE_MUTATIONS", "100"))
"""Fuzzed files per run (a few hundred for a manual run: the corpus is seeded, so failures reproduce)."""

MAX_SECONDS = 30.0
BOUND_S = 5.0
"""Wall-clock bound on one hostile input, refused or decoded (the worst seen is ~1.5 s: the FLAC bomb)."""


@pytest.fixture(scope="module")
def corpus(tmp_path_factory: pytest.TempPathFactory) -> list[Hostile]:
    return hostile_audio.build(tmp_path_factory.mktemp("hostile"), mutations=MUTATIONS)


def _outcome(item: Hostile) -> tuple[str, str, float]:
    """('audio' or 'refused', a description, seconds taken) for one isolated decode."""
    start = time.perf_counter()
    try:
        audio = decode_file_isolated(item.path, max_seconds=MAX_SECONDS, timeout_s=2 * BOUND_S)
    except AudioDecodeError as exc:
        message = str(exc)
        assert message and "\n" not in message, item.path.name
        return "refused", message, time.perf_counter() - start
    assert audio.dtype == np.float32 and audio.ndim == 1, item.path.name
    assert 0 < audio.size <= MAX_SECONDS * SAMPLE_RATE, item.path.name
    return AUDIO, f"{audio.size / SAMPLE_RATE:.2f} s", time.perf_counter() - start


@pytest.mark.parametrize("kind", KINDS)
def test_every_hostile_input_is_refused_or_decoded_within_seconds(corpus: list[Hostile], kind: str) -> None:
    items = [item for item in corpus if item.kind == kind]
    assert items
    wrong = []
    for item in items:
        outcome, what, seconds = _outcome(item)
        if seconds > BOUND_S or item.expect not in (EITHER, outcome):
            wrong.append(
                f"{item.path.name}: expected {item.expect}, got {outcome} ({what}) in {seconds:.1f} s"
            )
    assert not wrong, "\n".join(wrong)


def test_the_decoder_itself_survives_the_corpus_in_process(corpus: list[Hostile], tmp_path: Path) -> None:
    """The same inputs through `decode_audio` in one plain process (a child, so a crash fails this test)."""
    listing = tmp_path / "paths.txt"
    listing.write_text("\n".join(str(item.path) for item in corpus))
    script = (
        "import sys\nfrom pipelines.audio import decode_audio\n"
        "from pipelines.errors import AudioDecodeError\n"
        "for path in open(sys.argv[1]).read().splitlines():\n"
        "    try:\n        decode_audio(path, max_seconds=30)\n    except AudioDecodeError:\n        pass\n"
        "print('survived')\n"
    )
    done = subprocess.run(
        [sys.executable, "-c", script, str(listing)], capture_output=True, text=True, timeout=300
    )
    assert done.returncode == 0 and "survived" in done.stdout, (done.returncode, done.stderr[-2000:])


@pytest.mark.parametrize("mask", [None, 0x63F], ids=["unnamed-layout", "7.1-mask"])
def test_eight_channels_are_averaged_to_mono(tmp_path: Path, mask: int | None) -> None:
    """The 8-channel WAV that crashed PyAV (and the server) decodes, its channels averaged."""
    amplitudes = [0.1 * (k + 1) for k in range(8)]
    planes = hostile_audio.tone_planes(8, 1.0, 44100, amplitudes)
    path = hostile_audio.wav(tmp_path / "eight.wav", planes, 44100, mask=mask)
    for audio in (decode_audio(path), decode_file_isolated(path, max_seconds=MAX_SECONDS)):
        assert audio.size == pytest.approx(SAMPLE_RATE, abs=2)
        assert np.abs(audio[1000:-1000]).max() == pytest.approx(np.mean(amplitudes), rel=0.02)


@pytest.mark.parametrize("layout", ["5.1", "7.1"])
def test_multichannel_opus_decodes(tmp_path: Path, layout: str) -> None:
    """7.1 Opus crashed PyAV's `frame.planes` (it reads a ninth plane pointer); each channel is read alone."""
    path = hostile_audio.encoded(tmp_path / f"surround-{layout}.webm", "webm", "libopus", 48000, layout, 1.0)
    audio = decode_file_isolated(path, max_seconds=MAX_SECONDS)
    assert audio.size == pytest.approx(SAMPLE_RATE, abs=400)
    assert np.abs(audio[2000:-2000]).max() == pytest.approx(0.5, rel=0.1)


def test_sdp_and_playlists_are_refused_at_once(tmp_path: Path) -> None:
    """An SDP made FFmpeg open a UDP socket and wait 30 s; now no demuxer but an audio one is even tried."""
    items = hostile_audio.text_formats(tmp_path)
    for item in items:
        for source in (item.path, item.path.read_bytes()):
            start = time.perf_counter()
            with pytest.raises(AudioDecodeError):
                decode_audio(source)
            assert time.perf_counter() - start < 1.0, item.path.name


def test_decoding_stops_at_max_seconds_whatever_the_header_claims(tmp_path: Path) -> None:
    sparse, bomb = [item.path for item in hostile_audio.huge_files(tmp_path)]
    assert bomb.stat().st_size < 10**6  # an hour of 8 channels at 192 kHz
    for path in (bomb, sparse):
        start = time.perf_counter()
        assert decode_file_isolated(path, max_seconds=MAX_SECONDS).size == MAX_SECONDS * SAMPLE_RATE
        assert time.perf_counter() - start < BOUND_S
    assert decode_audio(bomb, max_seconds=2.0).size == 2 * SAMPLE_RATE


def test_a_decode_past_its_memory_bound_is_refused(tmp_path: Path) -> None:
    bomb = hostile_audio.flac_bomb(tmp_path / "bomb.flac")
    with pytest.raises(AudioDecodeError, match="more than 16 MB of memory"):
        decode_file_isolated(bomb, max_seconds=3600, memory_mb=16, timeout_s=30)
    assert (
        decode_file_isolated(bomb, max_seconds=1.0).size == SAMPLE_RATE
    )  # the next call gets a sound worker


def test_a_crash_or_a_hang_costs_one_call(tmp_path: Path) -> None:
    good = hostile_audio.std_wav(tmp_path / "good.wav", 2, 22050, 1.0)
    crash = hostile_audio.std_wav(tmp_path / "crash.wav", 2, 22050, 1.0)
    hang = hostile_audio.std_wav(tmp_path / "hang.wav", 2, 22050, 1.0)
    with faulty_workers(tmp_path / "faulty"):
        with pytest.raises(
            AudioDecodeError, match=r"crash.wav: the decoder crashed on this file \(killed by SIGSEGV\)"
        ):
            decode_file_isolated(crash, max_seconds=MAX_SECONDS)
        start = time.perf_counter()
        with pytest.raises(AudioDecodeError, match=r"hang.wav: decoding took longer than 2 s \(stopped\)"):
            decode_file_isolated(hang, max_seconds=MAX_SECONDS, timeout_s=2)
        assert time.perf_counter() - start < 2 + BOUND_S
        assert decode_file_isolated(good, max_seconds=MAX_SECONDS).size == SAMPLE_RATE


def test_threads_share_the_workers_and_each_gets_its_own_answer(tmp_path: Path) -> None:
    files = [hostile_audio.std_wav(tmp_path / f"good-{i}.wav", 1, 16000, 0.5 + 0.1 * i) for i in range(6)]
    files += [hostile_audio.std_wav(tmp_path / f"crash-{i}.wav", 1, 16000, 0.5) for i in range(3)]
    (tmp_path / "notes.wav").write_text("not audio\n")
    files.append(tmp_path / "notes.wav")

    def outcome(path: Path) -> str:
        try:
            return f"{decode_file_isolated(path, max_seconds=MAX_SECONDS).size}"
        except AudioDecodeError as exc:
            return "crashed" if "crashed" in str(exc) else "refused"

    with faulty_workers(tmp_path / "faulty"), ThreadPoolExecutor(8) as pool:
        got = list(pool.map(outcome, files * 2))
    expected = [f"{int(round((0.5 + 0.1 * i) * 16000))}" for i in range(6)] + ["crashed"] * 3 + ["refused"]
    assert got == expected * 2


def test_a_worker_killed_while_idle_is_replaced(tmp_path: Path) -> None:
    good = hostile_audio.std_wav(tmp_path / "good.wav", 1, 16000, 1.0)
    assert decode_file_isolated(good, max_seconds=MAX_SECONDS).size == SAMPLE_RATE
    for worker in audio_sandbox._POOL._idle:  # as the OOM killer or an operator would
        worker.process.kill()
        worker.process.wait()
    assert decode_file_isolated(good, max_seconds=MAX_SECONDS).size == SAMPLE_RATE


def test_workers_import_only_the_decoder() -> None:
    """A worker starts in about a second: it imports PyAV and NumPy, never torch or the server."""
    script = (
        "import sys, pipelines.audio_sandbox\nprint(' '.join(sorted(m.split('.')[0] for m in sys.modules)))"
    )
    done = subprocess.run(
        [sys.executable, "-c", script], capture_output=True, text=True, timeout=120, check=True
    )
    modules = set(done.stdout.split())
    assert {"av", "numpy"} <= modules
    assert not modules & {"torch", "transformers", "duckdb", "fastapi", "pyarrow", "typer"}
