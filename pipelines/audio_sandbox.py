"""Decode untrusted audio files in warm worker processes: a decoder crash, hang or memory bomb costs one call.

FFmpeg is a large C library fed whatever a user sends, and `pipelines.audio` can only refuse what it
recognises; these workers are the last fence. A worker is a small Python process that imports only PyAV and
NumPy (`python -m pipelines.audio_sandbox FD`), started on demand and reused. A call takes an idle worker (at
most `MAX_WORKERS` decode at once, further callers wait), sends it the request and waits at most `timeout_s`;
a worker that dies (a SIGSEGV in FFmpeg) or overruns is killed and replaced, and the call raises
`AudioDecodeError` saying which. For each decode the worker caps its address space (RLIMIT_AS), so a
decompression bomb ends in a MemoryError there instead of in swap. Audio comes back as raw float32 bytes of a
bounded length, never a pickle, so even a subverted worker can only send wrong audio. Calls are thread-safe.
"""

from __future__ import annotations

import atexit
import json
import os
import resource
import signal
import socket
import subprocess
import sys
import threading
from contextlib import contextmanager
from multiprocessing.connection import Connection
from pathlib import Path
from typing import Iterator

import numpy as np

from pipelines.audio import SAMPLE_RATE, decode_audio
from pipelines.errors import AtlasError, AudioDecodeError

MAX_WORKERS = max(1, min(4, os.cpu_count() or 1))
"""Decodes running at once (one worker process each); further callers wait for a free worker."""

DEFAULT_TIMEOUT_S = 60.0
"""Wall-clock seconds a decode may take (10 minutes of Vorbis decode in about 5 s on a laptop core)."""

DEFAULT_MEMORY_MB = 512
"""Address space a decode may add to the idle worker's (10 minutes of 16 kHz float32 audio is 38 MB)."""

START_TIMEOUT_S = 60.0
"""Seconds a new worker may take to import PyAV and NumPy (slow on a loaded machine)."""

_READY, _AUDIO, _ERROR = b"ready", b"A", b"E"
_MAX_MESSAGE = 4096
_WORKER_ENV = {"OMP_NUM_THREADS": "1", "OPENBLAS_NUM_THREADS": "1", "MKL_NUM_THREADS": "1"}
"""A worker decodes on one thread; NumPy's BLAS pools would only add threads and address space."""


def decode_file_isolated(
    path: str | Path,
    *,
    max_seconds: float,
    timeout_s: float = DEFAULT_TIMEOUT_S,
    memory_mb: int = DEFAULT_MEMORY_MB,
    format: str | None = None,
) -> np.ndarray:
    """`decode_audio(path, max_seconds=...)` in a worker process: float32 mono 16 kHz, cut at `max_seconds`.

    Whatever the file does to the decoder (crash, hang, exhaust memory), this raises `AudioDecodeError` with
    the reason, and the calling process goes on.
    """
    if max_seconds <= 0:
        raise ValueError(f"max_seconds must be positive, got {max_seconds}")
    path = Path(path)
    request = {
        "path": os.path.abspath(path),
        "max_seconds": max_seconds,
        "memory_mb": memory_mb,
        "format": format,
    }
    limit = int(round(max_seconds * SAMPLE_RATE))
    try:
        reply = _POOL.call(json.dumps(request).encode(), timeout_s, 1 + 4 * limit)
    except _WorkerLost as lost:
        raise AudioDecodeError(f"{path.name}: {lost}") from None
    if reply[:1] == _ERROR:
        raise AudioDecodeError(reply[1:].decode("utf-8", "replace").splitlines()[0])
    if reply[:1] != _AUDIO or (len(reply) - 1) % 4:
        raise AudioDecodeError(f"{path.name}: the decoder sent a malformed reply")
    return np.frombuffer(reply, dtype=np.float32, offset=1).copy()


def shutdown() -> None:
    """Stop the idle workers (busy ones finish their call first); later calls start new ones."""
    _POOL.shutdown()


class _WorkerLost(Exception):
    """The worker died or overran during a call; the message says which."""


class _Worker:
    """One decoding process and the socket it listens on."""

    def __init__(self) -> None:
        parent_end, child_end = socket.socketpair()
        with child_end:
            self.process = subprocess.Popen(
                [sys.executable, "-m", "pipelines.audio_sandbox", str(child_end.fileno())],
                pass_fds=(child_end.fileno(),),
                stdin=subprocess.DEVNULL,
                stdout=subprocess.DEVNULL,
                env=_worker_env(),
            )
        self.conn = Connection(parent_end.detach())
        try:
            ready = self.conn.poll(START_TIMEOUT_S) and self.conn.recv_bytes() == _READY
        except (EOFError, OSError):
            ready = False
        if not ready:
            self.stop()
            raise AtlasError(f"the audio decoding worker did not start ({_exit_reason(self.process)})")

    def reply(self, timeout_s: float, max_bytes: int) -> bytes:
        """The answer to the request just sent; on `_WorkerLost` this worker has been stopped."""
        if not self.conn.poll(timeout_s):
            self.stop()
            raise _WorkerLost(f"decoding took longer than {timeout_s:g} s (stopped)")
        try:
            return self.conn.recv_bytes(max(max_bytes, _MAX_MESSAGE))
        except EOFError:  # the worker only closes its end by dying
            try:
                self.process.wait(timeout=5)
            except subprocess.TimeoutExpired:
                pass
            self.stop()
            raise _WorkerLost(f"the decoder crashed on this file ({_exit_reason(self.process)})") from None
        except OSError:
            self.stop()
            raise _WorkerLost("the decoder sent more audio than asked for") from None

    def stop(self) -> None:
        self.conn.close()
        if self.process.poll() is None:
            self.process.kill()
        self.process.wait()

    def hang_up(self) -> None:
        """Close the socket: the worker sees EOF and exits by itself."""
        self.conn.close()
        try:
            self.process.wait(timeout=5)
        except subprocess.TimeoutExpired:
            self.stop()


class _Pool:
    """Idle workers, and a semaphore bounding how many decode at once."""

    def __init__(self) -> None:
        self._slots = threading.Semaphore(MAX_WORKERS)
        self._lock = threading.Lock()
        self._idle: list[_Worker] = []

    def call(self, request: bytes, timeout_s: float, max_bytes: int) -> bytes:
        with self._slots:
            worker = self._take()
            try:
                try:
                    worker.conn.send_bytes(request)
                except OSError:  # it died since the check: a new worker takes the call
                    worker.stop()
                    worker = _Worker()
                    worker.conn.send_bytes(request)
                reply = worker.reply(timeout_s, max_bytes)
            except BaseException:  # a lost worker is stopped already; in any other state, stop it
                if not worker.conn.closed:
                    worker.stop()
                raise
            with self._lock:
                self._idle.append(worker)
            return reply

    def _take(self) -> _Worker:
        """An idle worker that is still alive (one killed from outside shows EOF), or a new one."""
        while True:
            with self._lock:
                worker = self._idle.pop() if self._idle else None
            if worker is None:
                return _Worker()
            if not worker.conn.poll(0):
                return worker
            worker.stop()

    def shutdown(self) -> None:
        with self._lock:
            idle, self._idle = self._idle, []
        for worker in idle:
            worker.hang_up()

    def close_inherited(self) -> None:
        """In a forked child: close the parent's sockets without touching its workers."""
        for worker in self._idle:
            worker.conn.close()


def _worker_env() -> dict[str, str]:
    root = str(Path(__file__).resolve().parents[1])  # so `-m pipelines.audio_sandbox` imports without install
    path = os.pathsep.join(p for p in (root, os.environ.get("PYTHONPATH", "")) if p)
    return os.environ | _WORKER_ENV | {"PYTHONPATH": path}


def _exit_reason(process: subprocess.Popen) -> str:
    code = process.poll()
    if code is None:
        return "no answer"
    if code < 0:
        try:
            return f"killed by {signal.Signals(-code).name}"
        except ValueError:
            return f"killed by signal {-code}"
    return f"exit status {code}"


def _serve(fd: int) -> None:
    """The worker's loop: a JSON request in, a tagged reply out, until the parent hangs up."""
    signal.signal(signal.SIGINT, signal.SIG_IGN)  # Ctrl-C is for the parent, which then hangs up
    resource.setrlimit(resource.RLIMIT_CORE, (0, 0))  # a crash writes no core file
    conn = Connection(fd)
    conn.send_bytes(_READY)
    while True:
        try:
            request = json.loads(conn.recv_bytes())
        except EOFError:
            return
        conn.send_bytes(_answer(**request))


def _answer(path: str, max_seconds: float, memory_mb: int, format: str | None) -> bytes:
    name = Path(path).name
    try:
        with _memory_limit(memory_mb):
            audio = decode_audio(path, max_seconds=max_seconds, format=format)
    except AudioDecodeError as exc:
        return _ERROR + str(exc).encode()[: _MAX_MESSAGE - 1]
    except MemoryError:
        return _ERROR + f"{name}: decoding needs more than {memory_mb} MB of memory (refused)".encode()
    except Exception as exc:  # a decoder bug ends this call, not the worker
        return _ERROR + f"{name}: the decoder failed ({type(exc).__name__})".encode()
    return _AUDIO + audio.astype(np.float32, copy=False).tobytes()


@contextmanager
def _memory_limit(memory_mb: int) -> Iterator[None]:
    """Cap the address space at what the worker maps now plus `memory_mb` (Linux; elsewhere no cap)."""
    try:
        with open("/proc/self/statm") as f:
            used = int(f.read().split()[0]) * os.sysconf("SC_PAGE_SIZE")
    except (OSError, ValueError):
        yield
        return
    soft, hard = resource.getrlimit(resource.RLIMIT_AS)
    cap = used + memory_mb * 2**20
    resource.setrlimit(resource.RLIMIT_AS, (cap if hard == resource.RLIM_INFINITY else min(cap, hard), hard))
    try:
        yield
    finally:
        resource.setrlimit(resource.RLIMIT_AS, (soft, hard))


def _after_fork_in_child() -> None:
    """A forked child (a corpus encoding process) starts its own workers: the parent's are not its own."""
    global _POOL
    _POOL.close_inherited()
    _POOL = _Pool()


_POOL = _Pool()
os.register_at_fork(after_in_child=_after_fork_in_child)
atexit.register(shutdown)

if __name__ == "__main__":
    _serve(int(sys.argv[1]))
