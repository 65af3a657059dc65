"""Extraction on a Ray cluster, with Ray Data (https://docs.ray.io/en/latest/data/data.html).

The plan is `pipelines.extract`'s: the same chunks (one per shard, whole recordings) in the same order, and
the driver writes each shard through `extract`'s own writer as its chunk comes back, so the shards,
meta.json, the fingerprint and resumption are the local engine's. Only where the work runs changes:

    from_items(chunks) -> map(decode_chunk)           CPU tasks: a chunk's audio decoded, its windows laid out
                       -> map_batches(_ChunkEncoder)  actor pool: each actor loads Whisper once, then encodes
                                                      one chunk per call (a GPU per actor on a GPU cluster)
                       -> iter_rows, in plan order    the driver appends the shard, rewrites meta.json

A row is a whole chunk because a shard holds whole recordings and `encode_chunk` batches a chunk's windows
as the local engine does, so every frame is the same computation. On a CPU-only cluster decoding and the
actors ask for the same resources and Ray Data fuses the two stages (each actor decodes its chunk, then
encodes it); with GPUs, decoding stays on CPU tasks and feeds the GPU actors. Tasks read the audio at the
corpus's path, so every node must see the corpus there (a shared filesystem); only the driver writes.
"""

from __future__ import annotations

import functools
from typing import Iterator

import numpy as np

from pipelines.engines.cluster import BundleLoader, RayConfig, actor_resources
from pipelines.extract import ChunkWork, DecodedChunk, EncodedChunk, ExtractJob, decode_chunk, encode_chunk


class RayExtraction:
    """A `pipelines.extract.ChunkEngine` on the connected Ray cluster (see `cluster.ray_session`)."""

    def __init__(self, load: BundleLoader, cfg: RayConfig):
        self.load, self.cfg = load, cfg

    def __call__(self, job: ExtractJob, chunks: list[ChunkWork]) -> Iterator[EncodedChunk]:
        if not chunks:
            return
        import ray.data

        actors = actor_resources(self.cfg)
        items = [{"work": work} for work in chunks]
        ds: ray.data.Dataset = ray.data.from_items(items, override_num_blocks=len(chunks))
        ds = ds.map(functools.partial(_decode, job), num_cpus=1.0)
        ds = ds.map_batches(
            _ChunkEncoder,
            fn_constructor_args=(self.load, job),
            batch_size=1,
            batch_format="numpy",
            compute=ray.data.ActorPoolStrategy(size=min(actors.size, len(chunks))),
            num_cpus=actors.num_cpus,
            num_gpus=actors.num_gpus,
        )
        ds.context.execution_options.preserve_order = True  # shards are written in plan order
        ds.context.enable_progress_bars = False  # the CLI shows its own
        ds.context.print_on_execution_start = False
        for row in ds.iter_rows():
            yield row["encoded"]


def _decode(job: ExtractJob, row: dict) -> dict:
    return {"decoded": decode_chunk(job, row["work"])}


class _ChunkEncoder:
    """The actor: the Whisper bundle loaded once, one chunk encoded per call."""

    def __init__(self, load: BundleLoader, job: ExtractJob):
        self.bundle, self.job = load(), job

    def __call__(self, batch: dict[str, np.ndarray]) -> dict[str, list[EncodedChunk]]:
        decoded: list[DecodedChunk] = list(batch["decoded"])
        return {"encoded": [encode_chunk(self.bundle, self.job, chunk) for chunk in decoded]}
