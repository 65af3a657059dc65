"""The inference service: Whisper + the SAE loaded once, and a bounded single worker that runs live requests.

Neuronpedia's inference server guards its model with a request lock and a memory budget; on 2 CPU cores
one request at a time is all the model can do well, so here: ONE worker thread, at most `max_waiting`
requests queued behind it (past that, 503 with Retry-After), and a per-request timeout (504). A request takes
its place in the queue (`reserve`) before its upload is decoded, so a full queue costs no decoding work. A
queued job that times out is dropped; a running one cannot be interrupted, so it keeps its slot until it
ends. A client that has gone by the time its turn comes is skipped. The model and its hooks are shared state:
everything that touches them runs on the worker thread, and so does the reload after the run was rebuilt
(another SAE, atlas labels or effects): before each job the run's identity on disk is compared with what
was loaded.
"""

from __future__ import annotations

import asyncio
import gc
import os
import threading
from concurrent.futures import Future, ThreadPoolExecutor
from pathlib import Path
from typing import TYPE_CHECKING, Callable, Hashable, TypeVar

from starlette.requests import Request

from backend.errors import BusyError
from backend.settings import InferenceSettings
from pipelines.errors import AtlasError
from pipelines.paths import RunPaths

if TYPE_CHECKING:  # torch loads with the model, not with the app
    from pipelines.steering import SteeringResources

T = TypeVar("T")


class ServiceBusy(BusyError):
    """Too many requests waiting: 503 with Retry-After."""

    def __init__(self, retry_after_s: int):
        super().__init__(f"the model is busy with other requests: retry in {retry_after_s} s", retry_after_s)


class InferenceTimeout(AtlasError):
    """A request ran past its time limit: 504."""


class ClientGone(Exception):
    """The client disconnected before its turn: nothing to answer."""


def _stat_identity(path: Path) -> tuple[int, int, int] | None:
    """(inode, mtime, size) of a file or folder, None when it is missing: a rebuild changes it."""
    try:
        st = os.stat(path)
    except OSError:
        return None
    return st.st_ino, st.st_mtime_ns, st.st_size


def run_identity(run: RunPaths) -> Hashable:
    """What a rebuild of the run changes: its SAE folder's inode (`save_sae` swaps in a new folder), the
    weights and config in it (SAEs written in place by other tools; names as in pipelines/sae/saelens.py,
    which imports torch) and the atlas file (labels, effects). Checkpoints written while training do not
    count."""
    folder = _stat_identity(run.sae)
    files = (run.sae / "cfg.json", run.sae / "sae_weights.safetensors", run.atlas)
    return (folder and folder[0], *(_stat_identity(path) for path in files))


class Slot:
    """A place in the queue, taken before decoding; the job it is given to frees it when it ends."""

    def __init__(self, free: Callable[[], None]) -> None:
        self._free: Callable[[], None] | None = free

    def give_to(self, future: Future) -> None:
        """From now on the slot is the job's: freed when it ends (a running job keeps it past a timeout)."""
        free, self._free = self._free, None
        if free is not None:
            future.add_done_callback(lambda _future: free())

    def release(self) -> None:
        """Free the slot unless a job holds it (safe to call more than once)."""
        free, self._free = self._free, None
        if free is not None:
            free()


class InferenceService:
    """Runs jobs `fn(resources)` one at a time on a worker thread, loading the resources on first use and
    again whenever `identity()` (of the run on disk) changes."""

    def __init__(
        self,
        load: Callable[[], SteeringResources],
        settings: InferenceSettings | None = None,
        identity: Callable[[], Hashable] | None = None,
    ):
        self.settings = settings or InferenceSettings()
        self._load = load
        self._identity = identity or (lambda: None)
        self._resources: SteeringResources | None = None
        self._loaded_identity: Hashable = None
        self._executor = ThreadPoolExecutor(max_workers=1, thread_name_prefix="inference")
        self._slots = 0
        self._slots_lock = threading.Lock()
        self.dropped = 0
        """Jobs skipped because their client had gone by the time their turn came."""
        self.loads = 0
        """How often the resources were loaded (1 + the reloads after rebuilds)."""

    @classmethod
    def for_run(cls, run_root: Path, settings: InferenceSettings | None = None) -> "InferenceService":
        """The service of one run folder (`data/runs/<run>`): its SAE, atlas and Whisper model."""
        run = RunPaths(run_root)

        def load() -> "SteeringResources":
            from pipelines.steering import load_steering_resources

            return load_steering_resources(run)

        return cls(load, settings, lambda: run_identity(run))

    @property
    def in_flight(self) -> int:
        """Requests running, waiting or holding a reserved place (for tests and status)."""
        return self._slots

    def resources(self) -> SteeringResources:
        """The loaded model + SAE, (re)loaded when missing or rebuilt on disk (call on the worker thread)."""
        identity = self._identity()
        if self._resources is None or identity != self._loaded_identity:
            self._resources = None  # free the old model before loading the new one
            self._resources = self._load()
            self._loaded_identity = identity
            self.loads += 1
        return self._resources

    def warm_up(self) -> None:
        """Start loading in the background, so the first request does not pay for it."""
        self._executor.submit(self._warm)

    def _warm(self) -> None:
        try:
            self.resources()
        except Exception:  # noqa: BLE001 - reported to the first request, which retries the load
            pass
        finally:
            gc.freeze()  # what was loaded stays: out of the collector's walks (see backend/app.py)

    def close(self) -> None:
        self._executor.shutdown(wait=False, cancel_futures=True)

    def reserve(self) -> Slot:
        """A place in the queue, or ServiceBusy when it is full (non-blocking: no work is done first)."""
        with self._slots_lock:
            if self._slots >= 1 + self.settings.max_waiting:
                raise ServiceBusy(self.settings.retry_after_s)
            self._slots += 1
        return Slot(self._free_slot)

    async def run(
        self, request: Request | None, job: Callable[[SteeringResources], T], slot: Slot | None = None
    ) -> T:
        """Queue `job` in `slot` (reserved now if not given); raise ServiceBusy when the queue is full,
        InferenceTimeout past the time limit, ClientGone when the client left before its turn."""
        slot = slot or self.reserve()
        loop = asyncio.get_running_loop()
        try:
            future = self._executor.submit(self._run_job, job, request, loop)
        except BaseException:
            slot.release()
            raise
        slot.give_to(future)
        try:  # cancelling the wrapper cancels a job still queued; a running one cannot be interrupted
            return await asyncio.wait_for(asyncio.wrap_future(future), self.settings.timeout_s)
        except TimeoutError:
            raise InferenceTimeout(
                f"the request took longer than {self.settings.timeout_s:.0f} s: retry later"
            )

    def _run_job(self, job: Callable[[SteeringResources], T], request: Request | None, loop) -> T:
        """On the worker thread: skip the job if its client has gone, else run it."""
        if request is not None and self._client_gone(request, loop):
            self.dropped += 1
            raise ClientGone()

        return job(self.resources())

    @staticmethod
    def _client_gone(request: Request, loop: asyncio.AbstractEventLoop) -> bool:
        try:
            return asyncio.run_coroutine_threadsafe(request.is_disconnected(), loop).result(timeout=2)
        except Exception:  # noqa: BLE001 - a loop that cannot answer: assume the client is still there
            return False

    def _free_slot(self) -> None:
        with self._slots_lock:
            self._slots -= 1
