"""Online SAE training: frames come from a stream (the encoder running over a corpus) and are never stored.

For corpora whose activations are too large to cache (1,000 hours of whisper-small are ~0.28 TB of
float16 frames, docs/SCALING.md). Each epoch is one pass of the source; its frames go through a bounded
shuffle buffer (`pipelines.sae.buffer`) into the same optimiser step as the stored-shard trainer
(`pipelines.sae.train.SAEStepper.train_step`). What cannot be seen up front is estimated from the first
buffer fill: the input scale (mean squared norm) and b_dec's geometric median; the learning-rate schedule
runs over the source's expected frames. After training, the held-out clips are streamed once through the
final SAE. Differences from `train`, all recorded in metrics.json: the training FVU and L0 are running
values over the last epoch (there is no second pass over the training frames), the dead fraction is the
latents that had not fired within `dead_window_frames` at the end, and a run is not resumable (a stream has
no position to return to).
"""

from __future__ import annotations

import json
import math
import time
from pathlib import Path
from typing import Any, Iterator, Protocol

import torch
from torch import Tensor

from pipelines.errors import AtlasError
from pipelines.sae.buffer import ShuffleBuffer
from pipelines.sae.config import STREAM_BUFFER_FRAMES, SAEConfig, TrainConfig
from pipelines.sae.saelens import save_sae
from pipelines.sae.train import (
    FVU_FORMULA,
    METRICS_NAME,
    ProgressFn,
    Reconstruction,
    SAEStepper,
    initial_sae,
)


class FrameSource(Protocol):
    """Where a streamed run's frames come from (`pipelines.streaming` has a corpus folder and a dataset)."""

    d_model: int
    max_piece: int
    """The most frames one piece can hold (one encoder call)."""
    info: dict[str, Any]
    """What metrics.json records about the source: model, layer, corpus, window, split."""

    def train_pieces(self) -> Iterator[Tensor]:
        """A fresh pass over the training frames, (N, D) float16 pieces."""
        ...

    def heldout_pieces(self) -> Iterator[tuple[str, Tensor]]:
        """(evaluation set name, frames) pieces of the held-out clips."""
        ...

    def expected_train_frames(self, seen_frames: int) -> int:
        """Training frames in one pass, given that `seen_frames` of them have streamed so far."""
        ...


class _Running:
    """Sums of the training steps' reconstructions (scaled units): the running FVU and L0."""

    def __init__(self) -> None:
        self.err_sq = self.sum_sq = self.active = 0.0
        self.sum_D: Tensor | float = 0.0
        self.frames = 0

    def add(self, x_BD: Tensor, x_hat_BD: Tensor, n_active: Tensor) -> None:
        self.err_sq += (x_hat_BD - x_BD).double().pow(2).sum().item()
        self.sum_sq += x_BD.double().pow(2).sum().item()
        self.sum_D = self.sum_D + x_BD.double().sum(0)
        self.active += n_active.item()
        self.frames += len(x_BD)

    def entry(self) -> dict:
        n = max(self.frames, 1)
        total_var = self.sum_sq - float(torch.as_tensor(self.sum_D).pow(2).sum()) / n
        return {"fvu_running": self.err_sq / total_var, "l0_running": self.active / n, "frames": self.frames}


def _fvu_l0(sums: Reconstruction) -> dict:
    stats = sums.stats()
    return {"fvu": stats["fvu"], "l0": stats["l0"]}


def train_streaming(
    folder: Path,
    sae_cfg: SAEConfig,
    cfg: TrainConfig,
    source: FrameSource,
    *,
    buffer_frames: int = STREAM_BUFFER_FRAMES,
    device: torch.device | str | None = None,
    progress: ProgressFn | None = None,
    metadata: dict | None = None,
) -> dict:
    """Train an SAE on `source`'s stream and save the SAELens folder (with metrics.json) as `folder`."""
    device = torch.device(device or ("cuda" if torch.cuda.is_available() else "cpu"))
    if sae_cfg.d_in != source.d_model:
        sae_cfg = SAEConfig(**{**sae_cfg.to_dict(), "d_in": source.d_model})
    generator = torch.Generator().manual_seed(cfg.seed)
    buffer = ShuffleBuffer(buffer_frames, source.d_model, max(source.max_piece, cfg.batch_size), generator)
    started = time.perf_counter()
    pieces = source.train_pieces()
    buffer.fill(pieces)
    if buffer.size == 0:
        raise AtlasError("the stream gave no training frames (every clip held out or undecodable?)")
    first_ND = buffer.frames_ND
    mean_sq = first_ND.float().pow(2).sum(1).mean().item()
    scale = math.sqrt(sae_cfg.d_in / mean_sq)

    def sample(gen: torch.Generator) -> Tensor:
        return first_ND[torch.randperm(len(first_ND), generator=gen)[: cfg.median_sample]]

    expected = source.expected_train_frames(buffer.frames_in)
    stepper = SAEStepper(
        initial_sae(sae_cfg, generator, scale, sample),
        cfg,
        device,
        scale=scale,
        total_steps=cfg.epochs * math.ceil(expected / cfg.batch_size),
        dead_window=cfg.dead_window_frames or min(expected, 1_000_000),
    )
    history, step_seconds = [], 0.0
    for epoch in range(cfg.epochs):
        if epoch:
            pieces = source.train_pieces()
        running = _Running()
        for batch_ND in buffer.batches(pieces, cfg.batch_size):
            tick = time.perf_counter()
            x_BD = batch_ND.to(device).float().mul_(scale)
            out = stepper.train_step(x_BD)
            running.add(x_BD, out.x_hat_BD, out.n_active)
            step_seconds += time.perf_counter() - tick
            if progress is not None:
                progress(epoch * expected + running.frames, cfg.epochs * expected, {"epoch": epoch + 1})
        dead = float((stepper.frames_since_fired_F >= stepper.dead_window).float().mean())
        history.append({"epoch": epoch + 1, **running.entry(), "dead_fraction": dead})
    sae = stepper.folded_sae()
    sets: dict[str, Reconstruction] = {}
    for name, piece_ND in source.heldout_pieces():
        sums = sets.setdefault(name, Reconstruction(sae.d_in, sae.d_sae))
        sums.add(sae, piece_ND.float())
    heldout = Reconstruction(sae.d_in, sae.d_sae)
    for sums in sets.values():
        heldout.sums += sums.sums
        heldout.fires_F += sums.fires_F
    held_stats = heldout.stats() if sets else None
    info = source.info
    split = info.get("split") or {}
    last = history[-1]
    metrics = {
        "fvu": last["fvu_running"],
        "fvu_heldout": held_stats["fvu"] if held_stats else None,
        "l0": last["l0_running"],
        "l0_heldout": held_stats["l0"] if held_stats else None,
        "dead_fraction": last["dead_fraction"],
        "dead_definition": "latents that had not fired within dead_window_frames when training ended",
        "fvu_definition": "fvu and l0: running values over the last epoch's steps (streamed, no second pass)",
        "frames_per_s": last["frames"] * cfg.epochs / max(step_seconds, 1e-9),
        "train_seconds": step_seconds,
        "stream_seconds": time.perf_counter() - started,
        "epochs": cfg.epochs,
        "steps": stepper.step,
        "train_frames": last["frames"],
        "heldout_frames": int(heldout.sums[-1]),
        "fidelity": {
            name: {"clips": len(split.get(name, [])), "frames": int(s.sums[-1]), **_fvu_l0(s)}
            for name, s in sets.items()
        },
        "streamed": {
            "buffer_frames": buffer_frames,
            "max_buffer_frames": buffer.max_frames,
            "expected_train_frames": expected,
            "frames_in": buffer.frames_in,
        },
        "history": history,
        "fvu_formula": FVU_FORMULA,
        "input_scale": scale,
        "lr": stepper.lr,
        "k_aux": stepper.k_aux,
        "dead_window_frames": stepper.dead_window,
        "sae": sae.cfg.to_dict(),
        "train": cfg.to_dict(),
        **info,
    }
    layer = info["layer"]
    save_sae(
        sae,
        folder,
        {"model_name": info["model"], "hook_name": f"encoder.hidden_states.{layer}", "layer": layer}
        | (metadata or {}),
        {METRICS_NAME: json.dumps(metrics, indent=1)},
    )
    return metrics
