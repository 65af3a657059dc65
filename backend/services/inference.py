"""The inference service: Whisper + the SAE loaded once, and a bounded single worker that runs live requests.

Neuronpedia's inference server guards its model with a request lock and a memory budget; on 2 CPU cores
one request at a time is all the model can do well, so here: ONE worker thread, at most `max_waiting`
requests queued behind it (past that, 503 with Retry-After), and a per-request timeout (504). A queued job
that times out is dropped; a running one cannot be interrupted, so it keeps its slot until it ends. A client
that has gone by the time its turn comes is skipped. The model and its hooks are shared state: everything
that touches them runs on the worker thread.
"""

from __future__ import annotations

import asyncio
import threading
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from typing import TYPE_CHECKING, Callable, TypeVar

from starlette.requests import Request

from backend.settings import InferenceSettings
from pipelines.errors import AtlasError
from pipelines.paths import RunPaths

if TYPE_CHECKING:  # torch loads with the model, not with the app
    from pipelines.steering import SteeringResources

T = TypeVar("T")


class ServiceBusy(AtlasError):
    """Too many requests waiting: 503 with Retry-After."""

    def __init__(self, retry_after_s: int):
        super().__init__(f"the model is busy with other requests: retry in {retry_after_s} s")
        self.retry_after_s = retry_after_s


class InferenceTimeout(AtlasError):
    """A request ran past its time limit: 504."""


class ClientGone(Exception):
    """The client disconnected before its turn: nothing to answer."""


class InferenceService:
    """Runs jobs `fn(resources)` one at a time on a worker thread, loading the resources on first use."""

    def __init__(self, load: Callable[[], SteeringResources], settings: InferenceSettings | None = None):
        self.settings = settings or InferenceSettings()
        self._load = load
        self._resources: SteeringResources | None = None
        self._executor = ThreadPoolExecutor(max_workers=1, thread_name_prefix="inference")
        self._slots = 0
        self._slots_lock = threading.Lock()
        self.dropped = 0
        """Jobs skipped because their client had gone by the time their turn came."""

    @classmethod
    def for_run(cls, run_root: Path, settings: InferenceSettings | None = None) -> "InferenceService":
        """The service of one run folder (`data/runs/<run>`): its SAE, atlas and Whisper model."""

        def load() -> "SteeringResources":
            from pipelines.steering import load_steering_resources

            return load_steering_resources(RunPaths(run_root))

        return cls(load, settings)

    @property
    def in_flight(self) -> int:
        """Requests running or waiting (for tests and status)."""
        return self._slots

    def resources(self) -> SteeringResources:
        """The loaded model + SAE (loads them on first call; call on the worker thread only)."""
        if self._resources is None:
            self._resources = self._load()
        return self._resources

    def warm_up(self) -> None:
        """Start loading in the background, so the first request does not pay for it."""
        self._executor.submit(self._warm)

    def _warm(self) -> None:
        try:
            self.resources()
        except Exception:  # noqa: BLE001 - reported to the first request, which retries the load
            pass

    def close(self) -> None:
        self._executor.shutdown(wait=False, cancel_futures=True)

    async def run(self, request: Request | None, job: Callable[[SteeringResources], T]) -> T:
        """Queue `job`; raise ServiceBusy when the queue is full, InferenceTimeout past the time limit,
        ClientGone when the client left before its turn."""
        with self._slots_lock:
            if self._slots >= 1 + self.settings.max_waiting:
                raise ServiceBusy(self.settings.retry_after_s)
            self._slots += 1
        loop = asyncio.get_running_loop()
        future = self._executor.submit(self._run_job, job, request, loop)
        future.add_done_callback(self._free_slot)  # a running job keeps its slot even after a timeout
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

    def _free_slot(self, _future: object = None) -> None:
        with self._slots_lock:
            self._slots -= 1
