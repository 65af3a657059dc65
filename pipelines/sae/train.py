"""Train an SAE on a run's activation shards and write the SAELens folder plus metrics.json.

Practice followed (Gao et al. 2024, "Scaling and evaluating sparse autoencoders"; sparsify; SAELens): inputs
scaled so the mean squared norm is d_in (folded into the weights on save), b_dec initialised at the geometric
median, unit-norm decoder rows with the parallel gradient removed, AuxK on latents dead for
`dead_window_frames`, Adam with a linear warm-up and a linear decay over the last `decay_fraction` of steps.
Clips are held out by speaker and by sentence group (`pipelines.sae.split`, seeded) to measure the SAE on
new voices and new sentences; frames are reshuffled each epoch. A checkpoint
after every epoch holds the model, the optimiser, the RNG, the dead-latent counters and the step, so a
resumed run ends exactly where an uninterrupted one would.

One process or many (`pipelines.sae.collective`): under DDP (`pipelines.sae.ddp`) each rank loads its own
activation shards (`deal_shards`), takes `batch_size / world_size` frames per step, and every rank steps
through the same number of frames per epoch (ranks with fewer frames redraw a few of their own), so the
collectives pair up; `SAEStepper.train_step` is the one training step of both paths and of streaming.

FVU = sum over frames ||x - x_hat||^2 / sum over frames ||x - mean(x)||^2, in the encoder's own units.
"""

from __future__ import annotations

import hashlib
import json
import math
import os
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Callable

import numpy as np
import torch
from torch import Tensor, nn

from pipelines.activations import ActivationsMeta, ShardInfo, iter_shards, read_meta
from pipelines.corpus.manifest import MANIFEST_NAME, Clip, read_manifest
from pipelines.errors import AtlasError, missing_stage
from pipelines.paths import RunPaths, corpus_dir
from pipelines.sae.base import SparseAutoencoder, StepOutput
from pipelines.sae.collective import LOCAL, Collective
from pipelines.sae.config import SAEConfig, TrainConfig
from pipelines.sae.geometric_median import geometric_median
from pipelines.sae.registry import build_sae
from pipelines.sae.saelens import save_sae
from pipelines.sae.split import Split, split_clips

FVU_FORMULA = "FVU = sum_frames ||x - x_hat||^2 / sum_frames ||x - mean(x)||^2 (original encoder units)"
CHECKPOINT_NAME = "checkpoint.pt"
METRICS_NAME = "metrics.json"
EVAL_BATCH = 2048

ProgressFn = Callable[[int, int, dict], None]
"""progress(frames_done, frames_total, info) after every step."""


@dataclass
class TrainingData:
    """Every frame of a run (float16, as stored) and which frames train and which evaluate
    (`pipelines.sae.split`: held out by speaker and by sentence group)."""

    acts_ND: Tensor
    clip_of_frame_N: np.ndarray
    split: Split

    def __post_init__(self) -> None:
        self.train_rows = self.frames_of(self.split.train)
        """int64 frame indices trained on."""
        self.heldout_rows = self.frames_of(self.split.evaluation)
        """int64 frame indices of every evaluation clip (both held-out sets)."""

    @property
    def d_in(self) -> int:
        return self.acts_ND.shape[1]

    @property
    def heldout_clip_rows(self) -> list[int]:
        """Manifest rows of the evaluation clips."""
        return self.split.evaluation

    def frames_of(self, clip_rows: list[int]) -> Tensor:
        return torch.from_numpy(np.flatnonzero(np.isin(self.clip_of_frame_N, clip_rows)))


def run_corpus(meta: ActivationsMeta) -> Path:
    """The folder of the corpus the activations were extracted from (a name or a path in `meta`)."""
    folder = Path(meta.corpus) if Path(meta.corpus).is_dir() else corpus_dir(meta.corpus)
    if not (folder / MANIFEST_NAME).is_file():
        raise missing_stage(f"manifest of corpus {meta.corpus!r}", folder, "corpus build")
    return folder


def run_clips(meta: ActivationsMeta) -> list[Clip]:
    """The manifest the activations were extracted from (rows index it)."""
    return read_manifest(run_corpus(meta))


def deal_shards(
    shards: list[ShardInfo], parts: int, weight: Callable[[ShardInfo], float]
) -> list[list[ShardInfo]]:
    """Shards dealt to `parts` ranks, heaviest first to the lightest rank (each rank's in extraction order):
    every rank computes the same deal from meta.json and the manifest, without reading a shard."""
    dealt: list[list[ShardInfo]] = [[] for _ in range(parts)]
    load = [0.0] * parts
    for shard in sorted(shards, key=lambda s: -weight(s)):
        rank = load.index(min(load))
        dealt[rank].append(shard)
        load[rank] += weight(shard)
    order = {s.name: i for i, s in enumerate(shards)}
    return [sorted(mine, key=lambda s: order[s.name]) for mine in dealt]


def load_training_data(
    folder: Path, heldout_fraction: float, seed: int, part: int = 0, parts: int = 1
) -> TrainingData:
    """The frames of the shards dealt to rank `part` of `parts` (all of them by default) and the split,
    which depends on meta.json and the manifest only, so every rank computes the same one."""
    meta = read_meta(folder)
    if meta is None:
        raise missing_stage("activations", folder, "extract")
    if meta.n_frames == 0:
        raise missing_stage("activation frames", folder, "extract")
    if len(meta.shards) < parts:
        raise AtlasError(f"{folder} has {len(meta.shards)} shards, too few for {parts} processes")
    clips = run_clips(meta)
    present = sorted(meta.done_clip_rows)
    if present[-1] >= len(clips):
        raise AtlasError(
            f"{folder} holds clips the corpus {meta.corpus!r} lacks: run `whisper-atlas extract`"
        )
    split = split_clips({r: clips[r] for r in present}, heldout_fraction, seed)
    if not split.train:
        raise AtlasError(f"no clip of {meta.corpus!r} is left to train on: lower the held-out fraction")
    train = set(split.train)  # deal by training seconds, what sets each rank's steps per epoch

    def seconds(shard: ShardInfo) -> float:
        return sum(clips[r].duration for r in shard.clip_rows if r in train)

    mine = {s.name for s in deal_shards(meta.shards, parts, seconds)[part]}
    pairs = [(a, i) for (a, i), s in zip(iter_shards(folder), meta.shards) if s.name in mine]
    acts_ND = np.concatenate([a for a, _ in pairs])
    index_N2 = np.concatenate([i for _, i in pairs])
    return TrainingData(torch.from_numpy(acts_ND), index_N2[:, 0], split)


@torch.no_grad()
def moments(acts_ND: Tensor, rows: Tensor, group: Collective = LOCAL) -> tuple[float, Tensor]:
    """Mean squared norm and mean vector (float64) of acts_ND[rows], over every rank's rows."""
    sum_sq, sum_D = 0.0, torch.zeros(acts_ND.shape[1], dtype=torch.float64)
    for chunk in rows.split(65536):
        x_BD = acts_ND[chunk].double()
        sum_sq += x_BD.pow(2).sum().item()
        sum_D += x_BD.sum(0)
    totals = group.sum(torch.cat([sum_D, torch.tensor([sum_sq, len(rows)], dtype=torch.float64)]))
    n = totals[-1].item()
    return totals[-2].item() / n, totals[:-2] / n


class Reconstruction:
    """Running sums behind FVU and L0 over batches of frames (float64), reducible across ranks."""

    def __init__(self, d_in: int, d_sae: int) -> None:
        self.sums = torch.zeros(d_in + 4, dtype=torch.float64)
        """sum of x (D), then sum ||x||^2, sum ||x - x_hat||^2, active pairs, frames."""
        self.fires_F = torch.zeros(d_sae, dtype=torch.int64)

    @torch.no_grad()
    def add(self, sae: SparseAutoencoder, x_BD: Tensor) -> None:
        """Reconstruct the batch (on the SAE's device, float32) and add it to the sums."""
        x_hat_BD, latents_BF = sae(x_BD)
        on_BF = latents_BF > 0
        self.sums[:-4] += x_BD.double().sum(0).cpu()
        self.sums[-4] += x_BD.double().pow(2).sum().item()
        self.sums[-3] += (x_BD - x_hat_BD).double().pow(2).sum().item()
        self.sums[-2] += on_BF.sum().item()
        self.sums[-1] += len(x_BD)
        self.fires_F += on_BF.sum(0).cpu()

    def stats(self, group: Collective = LOCAL) -> dict:
        """FVU, L0 and per-latent firing counts over every rank's frames."""
        sums, fires_F = group.sum(self.sums), group.sum(self.fires_F)
        sum_x_D, (sum_sq, err_sq, active, n) = sums[:-4], sums[-4:].tolist()
        n = max(n, 1)
        total_var = sum_sq - sum_x_D.pow(2).sum().item() / n
        return {
            "fvu": err_sq / total_var if total_var > 0 else float("nan"),
            "l0": active / n,
            "fires_F": fires_F,
        }


@torch.no_grad()
def reconstruction_stats(
    sae: SparseAutoencoder, acts_ND: Tensor, rows: Tensor, scale: float = 1.0, group: Collective = LOCAL
) -> dict:
    """FVU, L0 and per-latent firing counts of `sae` on acts_ND[rows] x scale (over every rank's rows)."""
    sums = Reconstruction(sae.d_in, sae.d_sae)
    for chunk in rows.split(EVAL_BATCH) if len(rows) else ():
        sums.add(sae, acts_ND[chunk].to(sae.W_dec.device).float() * scale)
    return sums.stats(group)


def initial_sae(
    sae_cfg: SAEConfig, generator: torch.Generator, scale: float, sample: Callable[[torch.Generator], Tensor]
) -> SparseAutoencoder:
    """Random unit-norm decoder rows from `generator`, b_dec at the geometric median of `sample(generator)`
    (raw frames, multiplied by `scale`)."""
    sae = build_sae(sae_cfg)
    sae.reset_parameters(generator)
    with torch.no_grad():
        sae.b_dec.copy_(geometric_median(sample(generator).float() * scale))
    return sae


class TrainingStep(nn.Module):
    """`sae.training_step` as a module's forward, which is what DistributedDataParallel wraps (it all-reduces
    the gradients of what its forward ran)."""

    def __init__(self, sae: SparseAutoencoder, k_aux: int, auxk_coefficient: float) -> None:
        super().__init__()
        self.sae, self.k_aux, self.auxk_coefficient = sae, k_aux, auxk_coefficient

    def forward(self, x_BD: Tensor, dead_F: Tensor) -> StepOutput:
        return self.sae.training_step(x_BD, dead_F, self.k_aux, self.auxk_coefficient)


class SAEStepper:
    """An SAE being trained: its Adam optimiser, learning-rate schedule and dead-latent counters, and
    `train_step`, the one optimiser step of every training path (stored shards, DDP, streaming)."""

    def __init__(
        self,
        sae: SparseAutoencoder,
        cfg: TrainConfig,
        device: torch.device,
        *,
        scale: float,
        total_steps: int,
        dead_window: int,
        group: Collective = LOCAL,
    ) -> None:
        self.cfg, self.device, self.group, self.scale = cfg, device, group, scale
        self.sae = sae.to(device).train()
        self.lr = cfg.resolved_lr(sae.d_sae)
        self.k_aux = cfg.k_aux or sae.d_in // 2
        self.module = group.wrap(TrainingStep(self.sae, self.k_aux, cfg.auxk_coefficient), device)
        """The step as a module; under DDP its construction broadcast rank 0's parameters and buffers."""
        fused = device.type in ("cpu", "cuda")
        self.optimizer = torch.optim.Adam(
            self.sae.parameters(), lr=self.lr, betas=cfg.adam_betas, fused=fused
        )
        self.total_steps = total_steps
        self.dead_window = dead_window
        self.frames_since_fired_F = torch.zeros(sae.d_sae, dtype=torch.int64, device=device)
        """Frames (on every rank together) since each latent last fired."""
        self.step = 0

    def lr_at(self, step: int) -> float:
        warmup = min(self.cfg.warmup_steps, self.total_steps // 10)
        factor = min(1.0, (step + 1) / warmup) if warmup else 1.0
        decay_start = self.total_steps * (1 - self.cfg.decay_fraction)
        if step >= decay_start and self.cfg.decay_fraction > 0:
            factor *= max(self.total_steps - step, 0) / (self.total_steps - decay_start)
        return self.lr * factor

    def train_step(self, x_BD: Tensor) -> StepOutput:
        """One optimiser step on a batch of scaled frames (this rank's share of the global batch)."""
        for param_group in self.optimizer.param_groups:
            param_group["lr"] = self.lr_at(self.step)
        dead_F = self.frames_since_fired_F >= self.dead_window
        out = self.module(x_BD, dead_F)
        self.optimizer.zero_grad(set_to_none=True)
        out.loss.backward()
        self.sae.remove_parallel_grad()
        self.optimizer.step()
        self.sae.normalise_decoder()
        self.frames_since_fired_F += len(x_BD) * self.group.world_size
        self.frames_since_fired_F[self.group.fired(out.fired_latents, self.sae.d_sae)] = 0
        self.step += 1
        return out

    def folded_sae(self) -> SparseAutoencoder:
        """A copy of the SAE that reads raw (unscaled) activations, in eval mode on the CPU."""
        folded = build_sae(self.sae.cfg)
        folded.load_state_dict({k: v.detach().cpu() for k, v in self.sae.state_dict().items()})
        folded.fold_input_scale(self.scale)
        return folded.eval()

    def state_dict(self) -> dict:
        return {
            "sae": self.sae.state_dict(),
            "optimizer": self.optimizer.state_dict(),
            "frames_since_fired_F": self.frames_since_fired_F,
            "step": self.step,
            "scale": self.scale,
        }

    def load_state_dict(self, state: dict) -> None:
        self.sae.load_state_dict(state["sae"])
        self.optimizer.load_state_dict(state["optimizer"])
        self.frames_since_fired_F.copy_(state["frames_since_fired_F"])
        self.step, self.scale = state["step"], state["scale"]


class SAETrainer(SAEStepper):
    """An SAE trained over stored frames (this rank's shards under DDP); `run_epoch` trains one pass."""

    def __init__(
        self,
        sae_cfg: SAEConfig,
        cfg: TrainConfig,
        data: TrainingData,
        device: torch.device,
        group: Collective = LOCAL,
    ) -> None:
        if cfg.batch_size % group.world_size:
            raise AtlasError(f"batch size {cfg.batch_size} does not split over {group.world_size} processes")
        self.data = data
        self.generator = torch.Generator().manual_seed(cfg.seed + (group.rank << 32))
        """Initialisation and this rank's shuffles (rank 0 is seeded as a single process is)."""
        counts = group.gather(len(data.train_rows))
        if min(counts) == 0:
            raise AtlasError(f"a process got no training frames ({counts}): use fewer processes")
        self.n_train, self.epoch_frames = sum(counts), max(counts)
        """Training frames of every rank; frames each rank steps through per epoch (its own, then redrawn)."""
        self.n_heldout = sum(group.gather(len(data.heldout_rows)))
        mean_sq, mean_D = moments(data.acts_ND, data.train_rows, group)
        scale = math.sqrt(sae_cfg.d_in / mean_sq)
        self.centred_sq = mean_sq - mean_D.pow(2).sum().item()
        """mean ||x - mean||^2 over the training frames (raw units), per frame of the running FVU."""

        def sample(generator: torch.Generator) -> Tensor:
            order = torch.randperm(len(data.train_rows), generator=generator)
            return data.acts_ND[data.train_rows[order[: cfg.median_sample]]]

        self.local_batch = cfg.batch_size // group.world_size
        self.steps_per_epoch = math.ceil(self.epoch_frames / self.local_batch)
        super().__init__(
            initial_sae(sae_cfg, self.generator, scale, sample),
            cfg,
            device,
            scale=scale,
            total_steps=cfg.epochs * self.steps_per_epoch,
            dead_window=cfg.dead_window_frames or min(self.n_train, 1_000_000),
            group=group,
        )
        self.epoch = 0
        self.train_seconds = 0.0
        self.history: list[dict] = []
        self.resumed_world_size: int | None = None
        """The world size of a checkpoint resumed with another one (its shuffles could not continue)."""

    def epoch_order(self) -> Tensor:
        """This rank's frames in a fresh random order, topped up with random redraws to `epoch_frames`."""
        rows = self.data.train_rows
        order = rows[torch.randperm(len(rows), generator=self.generator)]
        if short := self.epoch_frames - len(rows):
            order = torch.cat([order, rows[torch.randint(len(rows), (short,), generator=self.generator)]])
        return order

    def run_epoch(self, progress: ProgressFn | None = None) -> dict:
        cfg, sae, data, world = self.cfg, self.sae, self.data, self.group.world_size
        err_sq = torch.zeros((), dtype=torch.float64, device=self.device)
        active = torch.zeros((), dtype=torch.int64, device=self.device)
        frames = 0
        per_epoch = self.epoch_frames * world
        started = time.perf_counter()
        for batch_rows in self.epoch_order().split(self.local_batch):
            x_BD = data.acts_ND[batch_rows].to(self.device, non_blocking=True).float().mul_(self.scale)
            out = self.train_step(x_BD)
            err_sq += (out.x_hat_BD - x_BD).pow(2).sum()
            active += out.n_active
            frames += len(batch_rows) * world
            if progress is not None:
                progress(self.epoch * per_epoch + frames, cfg.epochs * per_epoch, {"epoch": self.epoch + 1})
        if self.device.type == "cuda":
            torch.cuda.synchronize(self.device)  # count queued kernels in the epoch's time
        self.train_seconds += time.perf_counter() - started
        self.epoch += 1
        totals = self.group.sum(torch.stack([err_sq, active.double()])).tolist()
        entry = {
            "epoch": self.epoch,
            "fvu_running": totals[0] / (frames * self.centred_sq * self.scale**2),
            "l0_running": totals[1] / frames,
            "dead_fraction": float((self.frames_since_fired_F >= self.dead_window).float().mean()),
            "train_seconds": self.train_seconds,
        }
        if self.n_heldout:
            sae.eval()
            entry["fvu_heldout"] = reconstruction_stats(
                sae, data.acts_ND, data.heldout_rows, self.scale, self.group
            )["fvu"]
            sae.train()
        self.history.append(entry)
        return entry

    def state_dict(self) -> dict:
        return {
            **super().state_dict(),
            "generator": self.generator.get_state(),
            "generators": self.group.gather(self.generator.get_state()),
            "epoch": self.epoch,
            "train_seconds": self.train_seconds,
            "history": self.history,
        }

    def load_state_dict(self, state: dict) -> None:
        """Resume; from a checkpoint of another world size the shards are dealt anew, so each rank's
        shuffle restarts from a seed of (seed, rank, epoch) instead of continuing."""
        super().load_state_dict(state)
        self.epoch, self.train_seconds = state["epoch"], state["train_seconds"]
        self.history = state["history"]
        generators = state.get("generators", [state["generator"]])
        if len(generators) == self.group.world_size:
            self.generator.set_state(generators[self.group.rank])
        else:
            self.resumed_world_size = len(generators)
            self.generator.manual_seed(self.cfg.seed + (self.group.rank << 32) + (self.epoch << 16))


def run_fingerprint(sae_cfg: SAEConfig, cfg: TrainConfig, activations_fingerprint: str, n_frames: int) -> str:
    """What a checkpoint must match to be resumed: the configs (threads aside) and the activations."""
    train = {**cfg.to_dict(), "lr": cfg.resolved_lr(sae_cfg.d_sae), "threads": None}
    blob = json.dumps(
        [sae_cfg.to_dict(), train, activations_fingerprint, n_frames], sort_keys=True, default=str
    )
    return hashlib.sha256(blob.encode()).hexdigest()[:16]


def _atomic_torch_save(obj: object, path: Path) -> None:
    tmp = path.with_suffix(".tmp")
    torch.save(obj, tmp)
    os.replace(tmp, path)


def train_sae(
    run: RunPaths,
    sae_cfg: SAEConfig,
    cfg: TrainConfig,
    *,
    resume: bool = True,
    device: str | torch.device | None = None,
    progress: ProgressFn | None = None,
    stop_after_epoch: int | None = None,
    metadata: dict | None = None,
    folder: Path | None = None,
    group: Collective = LOCAL,
) -> dict:
    """Train (or resume) the run's SAE; write sae/cfg.json, sae/sae_weights.safetensors and metrics.json
    (into `folder` instead of the run's `sae/` when given: the seed-stability twin).

    Returns the metrics. `stop_after_epoch` ends the call early after checkpointing that epoch (as an
    interruption would); `metadata` is merged into cfg.json's metadata (model_name, hook_name, ...).
    Under DDP (`group`, every rank calls this) rank 0 writes the checkpoint and the folder, which every
    rank reads back on resume (one machine, or a shared file system).
    """
    folder = folder or run.sae
    meta = read_meta(run.activations)
    if meta is None:
        raise missing_stage("activations", run.activations, "extract")
    if meta.d_model != sae_cfg.d_in:
        sae_cfg = SAEConfig(**{**sae_cfg.to_dict(), "d_in": meta.d_model})
    device = torch.device(device or ("cuda" if torch.cuda.is_available() else "cpu"))
    old_threads = torch.get_num_threads()
    if cfg.threads:
        torch.set_num_threads(cfg.threads)
    try:
        split_seed = cfg.seed if cfg.split_seed is None else cfg.split_seed
        data = load_training_data(
            run.activations, cfg.heldout_fraction, split_seed, group.rank, group.world_size
        )
        trainer = SAETrainer(sae_cfg, cfg, data, device, group)
        fingerprint = run_fingerprint(sae_cfg, cfg, meta.fingerprint, meta.n_frames)
        folder.mkdir(parents=True, exist_ok=True)
        checkpoint_path = folder / CHECKPOINT_NAME
        if resume and checkpoint_path.exists():
            state = torch.load(checkpoint_path, map_location="cpu", weights_only=True)
            if state.get("fingerprint") == fingerprint:
                trainer.load_state_dict(state)
        while trainer.epoch < cfg.epochs:
            trainer.run_epoch(progress)
            state = trainer.state_dict()
            if group.rank == 0:
                _atomic_torch_save({**state, "fingerprint": fingerprint}, checkpoint_path)
            group.barrier()
            if (
                stop_after_epoch is not None
                and trainer.epoch >= stop_after_epoch
                and trainer.epoch < cfg.epochs
            ):
                return {"stopped_after_epoch": trainer.epoch}
        return finalise(folder, trainer, data, meta, metadata or {})
    finally:
        torch.set_num_threads(old_threads)


def held_out_fidelity(
    sae: SparseAutoencoder, data: TrainingData, group: Collective = LOCAL
) -> dict[str, dict]:
    """FVU and L0 on each evaluation set (`speaker`: new voices, `group`: known voices, new sentences)."""
    sets = {}
    for name in ("speaker", "group"):
        rows = getattr(data.split, name)
        frames = data.frames_of(rows)
        n_frames = sum(group.gather(len(frames)))
        stats = reconstruction_stats(sae, data.acts_ND, frames, group=group) if n_frames else None
        sets[name] = {
            "clips": len(rows),
            "frames": n_frames,
            "fvu": stats["fvu"] if stats else None,
            "l0": stats["l0"] if stats else None,
        }
    return sets


def finalise(
    folder: Path, trainer: SAETrainer, data: TrainingData, meta: ActivationsMeta, metadata: dict
) -> dict:
    """Fold the scale, measure on raw frames, save the SAELens folder (with metrics.json) as `folder`
    (rank 0 saves; every rank returns the metrics)."""
    model, layer, group = meta.model, meta.layer, trainer.group
    sae = trainer.folded_sae()
    train_stats = reconstruction_stats(sae, data.acts_ND, data.train_rows, group=group)
    held_stats = (
        reconstruction_stats(sae, data.acts_ND, data.heldout_rows, group=group) if trainer.n_heldout else None
    )
    metrics = {
        "fvu": train_stats["fvu"],
        "fvu_heldout": held_stats["fvu"] if held_stats else None,
        "l0": train_stats["l0"],
        "l0_heldout": held_stats["l0"] if held_stats else None,
        "dead_fraction": float((train_stats["fires_F"] == 0).float().mean()),
        "dead_definition": "latents that fire on no training frame with the final weights",
        "frames_per_s": trainer.epoch * trainer.n_train / max(trainer.train_seconds, 1e-9),
        "train_seconds": trainer.train_seconds,
        "epochs": trainer.epoch,
        "steps": trainer.step,
        "train_frames": trainer.n_train,
        "heldout_frames": trainer.n_heldout,
        "heldout_clip_rows": data.heldout_clip_rows,
        "split": data.split.to_dict(),
        "fidelity": held_out_fidelity(sae, data, group),
        "window": meta.window,
        "history": trainer.history,
        "fvu_formula": FVU_FORMULA,
        "input_scale": trainer.scale,
        "lr": trainer.lr,
        "k_aux": trainer.k_aux,
        "dead_window_frames": trainer.dead_window,
        "sae": sae.cfg.to_dict(),
        "train": trainer.cfg.to_dict(),
        "model": model,
        "layer": layer,
        "world_size": group.world_size,
    }
    if trainer.resumed_world_size is not None:
        metrics["resumed_from_world_size"] = trainer.resumed_world_size
    if group.rank == 0:
        save_sae(  # metrics.json goes in with the weights: one folder, swapped in at once
            sae,
            folder,
            {"model_name": model, "hook_name": f"encoder.hidden_states.{layer}", "layer": layer, **metadata},
            {METRICS_NAME: json.dumps(metrics, indent=1)},
        )
    group.barrier()
    return metrics


def read_metrics(run: RunPaths) -> dict:
    path = run.sae / METRICS_NAME
    return json.loads(path.read_text()) if path.exists() else {}


def write_metrics(run: RunPaths, metrics: dict) -> None:
    """Replace metrics.json atomically."""
    run.sae.mkdir(parents=True, exist_ok=True)
    tmp = run.sae / (METRICS_NAME + ".tmp")
    tmp.write_text(json.dumps(metrics, indent=1))
    os.replace(tmp, run.sae / METRICS_NAME)
