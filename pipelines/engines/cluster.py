"""Connecting to Ray (https://docs.ray.io): a cluster joined at an address, or a local one started here.

The Ray engines run inside `ray_session`. Without an address it starts a local cluster (all the CPUs Ray
detects unless told otherwise), quiet (errors only, no dashboard, no worker output) and stops it afterwards;
with one it joins that cluster and leaves it running. An unreachable address is one line, at once: Ray's
own connect retries for minutes before giving up. A process already connected (a notebook, a test's
cluster) keeps its connection.
"""

from __future__ import annotations

import logging
import socket
from contextlib import contextmanager
from typing import TYPE_CHECKING, Callable, Iterator, Literal, NamedTuple, Optional

from pydantic import PositiveInt

from pipelines.config import config
from pipelines.errors import AtlasError

if TYPE_CHECKING:
    from pipelines.model.loader import WhisperBundle

Engine = Literal["local", "ray"]
"""Where the work runs: this process, or a Ray cluster."""

BundleLoader = Callable[[], "WhisperBundle"]
"""Loads the model inside an actor, on the actor's device (each node reads its own copy: bundled, a local
folder or the hub cache), e.g. `functools.partial(load_whisper, "bundled:whisper-base")`."""

CONNECT_TIMEOUT_S = 5.0


class RayClusterError(AtlasError, ValueError):
    """The Ray settings are invalid or the cluster cannot be reached."""


@config(RayClusterError, frozen=True)
class RayConfig:
    """Which Ray cluster runs the work and how many actors it gets."""

    address: Optional[str] = None
    """A running cluster to join (`host:port` of its head, `ray://host:port`, or `auto` for one started on
    this machine with `ray start`); None: start a local cluster for this command."""
    num_cpus: Optional[PositiveInt] = None
    """CPUs of the local cluster (None: what Ray detects, the machine's or its container's); a joined
    cluster has its own."""
    workers: Optional[PositiveInt] = None
    """Actors holding a model (None: one per GPU on a cluster with GPUs, else one per CPU)."""

    def __post_init__(self) -> None:
        if self.num_cpus is not None and self.address is not None:
            raise ValueError("num_cpus sizes a local cluster: a joined cluster (address) has its own")


@contextmanager
def ray_session(cfg: RayConfig) -> Iterator[None]:
    """Ray connected for the block: `cfg.address` joined, else a local cluster started and stopped after."""
    import ray

    if ray.is_initialized():
        yield
        return
    if cfg.address is not None:
        _check_reachable(cfg.address)
    try:
        ray.init(
            address=cfg.address,
            num_cpus=cfg.num_cpus,
            include_dashboard=False,
            logging_level=logging.ERROR,
            log_to_driver=False,
        )
    except (ConnectionError, ValueError, RuntimeError) as exc:
        reason = str(exc).strip().splitlines()[0] if str(exc).strip() else type(exc).__name__
        raise RayClusterError(f"cannot join the Ray cluster at {cfg.address!r}: {reason}") from None
    import ray.data  # noqa: F401  (configures its loggers on import: quieten them after)

    logging.getLogger("ray.data").setLevel(logging.ERROR)
    try:
        yield
    finally:
        ray.shutdown()


class Actors(NamedTuple):
    """How many model-holding actors to start and what each asks Ray for."""

    size: int
    num_cpus: float
    num_gpus: float


def actor_resources(cfg: RayConfig) -> Actors:
    """A GPU each on a cluster with GPUs (by default one actor per GPU), else a CPU each (one per CPU)."""
    import ray

    resources = ray.cluster_resources()
    gpus = int(resources.get("GPU", 0))
    if gpus > 0:
        return Actors(cfg.workers or gpus, num_cpus=1.0, num_gpus=1.0)
    return Actors(cfg.workers or max(int(resources.get("CPU", 1)), 1), num_cpus=1.0, num_gpus=0.0)


def _check_reachable(address: str) -> None:
    """Fail fast when `host:port` (or `ray://host:port`) accepts no connection; `auto` is Ray's to find."""
    if address == "auto":
        return
    target = address.removeprefix("ray://")
    host, _, port = target.rpartition(":")
    if not host or not port.isdigit():
        raise RayClusterError(f"Ray address {address!r} is not host:port, ray://host:port or auto")
    try:
        with socket.create_connection((host, int(port)), timeout=CONNECT_TIMEOUT_S):
            pass
    except OSError as exc:
        raise RayClusterError(f"cannot reach the Ray cluster at {address}: {exc.strerror or exc}") from None
