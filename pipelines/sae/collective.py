"""What the SAE trainer needs from its peers: sums, firing masks, gathered objects, a DDP-wrapped step.

One process (`LOCAL`) makes every operation the identity, so `pipelines.sae.train` runs one code path with
or without `torch.distributed`. `Distributed` is the same interface over an initialised process group (gloo
on CPU, NCCL on CUDA, launched by torchrun: `pipelines.sae.ddp`): gradients are averaged by
`DistributedDataParallel` (which also broadcasts rank 0's parameters and buffers when it wraps the step, so
every rank starts from the same SAE), and everything that must agree across ranks besides the gradients is
reduced here: the dead-latent counters (a latent fired anywhere fired), running and held-out sums, frame
counts.
"""

from __future__ import annotations

import time
from typing import Any

import torch
from torch import Tensor, nn


class Collective:
    """A group of one process: nothing to exchange."""

    rank = 0
    world_size = 1

    def sum(self, tensor: Tensor) -> Tensor:
        """The elementwise sum of `tensor` over every rank (a new tensor on `tensor`'s device)."""
        return tensor

    def gather(self, obj: Any) -> list[Any]:
        """Every rank's `obj`, in rank order (picklable objects; small ones: counts, RNG states)."""
        return [obj]

    def fired(self, latents: Tensor, d_sae: int) -> Tensor:
        """What indexes the latents that fired on any rank this step: here the indices themselves."""
        return latents

    def wrap(self, module: nn.Module, device: torch.device) -> nn.Module:
        """The module whose forward runs a training step (DDP-wrapped in a process group)."""
        return module

    def barrier(self) -> None:
        """Wait for every rank."""


LOCAL = Collective()


class Distributed(Collective):
    """The ranks of `torch.distributed`'s default process group (initialised by the caller)."""

    def __init__(self, device: torch.device) -> None:
        import torch.distributed as dist

        self.dist = dist
        self.rank, self.world_size = dist.get_rank(), dist.get_world_size()
        self.comm_device = device if dist.get_backend() == "nccl" else torch.device("cpu")
        """Where collectives run: NCCL needs CUDA tensors, gloo takes CPU ones."""

    def sum(self, tensor: Tensor) -> Tensor:
        out = tensor.to(self.comm_device, copy=True)
        self.dist.all_reduce(out)
        return out.to(tensor.device)

    def gather(self, obj: Any) -> list[Any]:
        out: list[Any] = [None] * self.world_size
        self.dist.all_gather_object(out, obj)
        return out

    def fired(self, latents: Tensor, d_sae: int) -> Tensor:
        """A bool (d_sae,) mask, the union over ranks (one small all-reduce per step)."""
        mask_F = torch.zeros(d_sae, dtype=torch.int32, device=self.comm_device)
        mask_F[latents.to(self.comm_device)] = 1
        self.dist.all_reduce(mask_F, op=self.dist.ReduceOp.MAX)
        return mask_F.to(latents.device).bool()

    def wrap(self, module: nn.Module, device: torch.device) -> nn.Module:
        from torch.nn.parallel import DistributedDataParallel

        ids = [device.index] if device.type == "cuda" else None
        return DistributedDataParallel(module, device_ids=ids, output_device=device if ids else None)

    def barrier(self) -> None:
        self.dist.barrier()


def leave_together(store: Any, world_size: int, tag: str = "") -> None:
    """Wait on `store` (a torch.distributed Store that outlives the ranks: torchrun's) until every rank is
    past its last collective. A rank that closes its gloo connections while a peer still reads its last
    message makes that peer abort ("Connection closed by peer", SIGABRT: about once in 50 runs here)."""
    key = f"whisper-atlas/left/{tag}"
    store.add(key, 1)
    while store.add(key, 0) < world_size:
        time.sleep(0.01)
