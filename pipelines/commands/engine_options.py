"""The options that choose where `extract` and `analyze` run their heavy step: here, or on a Ray cluster."""

from __future__ import annotations

from typing import Annotated, Optional

import typer

from pipelines.engines.cluster import Engine, RayConfig
from pipelines.errors import AtlasError

EngineOption = Annotated[
    Engine,
    typer.Option(
        help="local: in this process; ray: on a Ray cluster (a local one unless --address names one)."
    ),
]
AddressOption = Annotated[
    Optional[str],
    typer.Option(
        help="With --engine ray: the cluster to join (host:port of its head, ray://host:port, or auto); "
        "default: start a local cluster for this command."
    ),
]
NumCpusOption = Annotated[
    Optional[int],
    typer.Option(help="With --engine ray and no --address: CPUs of the local cluster (default: all)."),
]
WorkersOption = Annotated[
    Optional[int],
    typer.Option(
        help="With --engine ray: actors holding the model (default: one per GPU, else one per CPU)."
    ),
]


def ray_config(
    engine: Engine, address: str | None, num_cpus: int | None, workers: int | None
) -> RayConfig | None:
    """The Ray settings of `--engine ray`, None for the local engine (which takes no Ray option)."""
    if engine == "local":
        given = [
            name
            for name, value in (("--address", address), ("--num-cpus", num_cpus), ("--workers", workers))
            if value is not None
        ]
        if given:
            raise AtlasError(f"{', '.join(given)} only apply to --engine ray")
        return None
    return RayConfig(address=address, num_cpus=num_cpus, workers=workers)
