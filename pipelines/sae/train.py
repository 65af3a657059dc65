"""Train an SAE on a run's activation shards and write the SAELens folder plus metrics.json.

Practice followed (Gao et al. 2024, "Scaling and evaluating sparse autoencoders"; sparsify; SAELens): inputs
scaled so the mean squared norm is d_in (folded into the weights on save), b_dec initialised at the geometric
median, unit-norm decoder rows with the parallel gradient removed, AuxK on latents dead for
`dead_window_frames`, Adam with a linear warm-up and a linear decay over the last `decay_fraction` of steps.
Clips are held out by speaker and by sentence group (`pipelines.sae.split`, seeded) to measure the SAE on
new voices and new sentences; frames are reshuffled each epoch. A checkpoint
after every epoch holds the model, the optimiser, the RNG, the dead-latent counters and the step, so a
resumed run ends exactly where an uninterrupted one would.

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
from torch import Tensor

from pipelines.activations import ActivationsMeta, load_all, read_meta
from pipelines.corpus.manifest import MANIFEST_NAME, Clip, read_manifest
from pipelines.errors import AtlasError, missing_stage
from pipelines.paths import RunPaths, corpus_dir
from pipelines.sae.base import SparseAutoencoder
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


def run_clips(meta: ActivationsMeta) -> list[Clip]:
    """The manifest the activations were extracted from (rows index it)."""
    folder = Path(meta.corpus) if Path(meta.corpus).is_dir() else corpus_dir(meta.corpus)
    if not (folder / MANIFEST_NAME).is_file():
        raise missing_stage(f"manifest of corpus {meta.corpus!r}", folder, "corpus build")
    return read_manifest(folder)


def load_training_data(folder: Path, heldout_fraction: float, seed: int) -> TrainingData:
    meta = read_meta(folder)
    if meta is None:
        raise missing_stage("activations", folder, "extract")
    acts_ND, index_N2 = load_all(folder)
    if len(acts_ND) == 0:
        raise missing_stage("activation frames", folder, "extract")
    clips = run_clips(meta)
    present = np.unique(index_N2[:, 0])
    if present.max() >= len(clips):
        raise AtlasError(
            f"{folder} holds clips the corpus {meta.corpus!r} lacks: run `whisper-atlas extract`"
        )
    split = split_clips({int(r): clips[r] for r in present}, heldout_fraction, seed)
    if not split.train:
        raise AtlasError(f"no clip of {meta.corpus!r} is left to train on: lower the held-out fraction")
    return TrainingData(torch.from_numpy(acts_ND), index_N2[:, 0], split)


@torch.no_grad()
def moments(acts_ND: Tensor, rows: Tensor) -> tuple[float, Tensor]:
    """Mean squared norm and mean vector (float64) of acts_ND[rows]."""
    sum_sq, sum_D = 0.0, torch.zeros(acts_ND.shape[1], dtype=torch.float64)
    for chunk in rows.split(65536):
        x_BD = acts_ND[chunk].double()
        sum_sq += x_BD.pow(2).sum().item()
        sum_D += x_BD.sum(0)
    return sum_sq / len(rows), sum_D / len(rows)


@torch.no_grad()
def reconstruction_stats(sae: SparseAutoencoder, acts_ND: Tensor, rows: Tensor, scale: float = 1.0) -> dict:
    """FVU, L0 and per-latent firing counts of `sae` on acts_ND[rows] x scale (float64 sums)."""
    device = sae.W_dec.device
    sum_x_D = torch.zeros(sae.d_in, dtype=torch.float64)
    sum_sq = err_sq = active = 0.0
    fires_F = torch.zeros(sae.d_sae, dtype=torch.int64)
    for chunk in rows.split(EVAL_BATCH):
        x_BD = acts_ND[chunk].to(device).float() * scale
        x_hat_BD, latents_BF = sae(x_BD)
        sum_x_D += x_BD.double().sum(0).cpu()
        sum_sq += x_BD.double().pow(2).sum().item()
        err_sq += (x_BD - x_hat_BD).double().pow(2).sum().item()
        on_BF = latents_BF > 0
        active += on_BF.sum().item()
        fires_F += on_BF.sum(0).cpu()
    n = max(len(rows), 1)
    total_var = sum_sq - sum_x_D.pow(2).sum().item() / n
    return {
        "fvu": err_sq / total_var if total_var > 0 else float("nan"),
        "l0": active / n,
        "fires_F": fires_F,
    }


class SAETrainer:
    """One SAE, its optimiser and the training state; `run_epoch` trains one pass over the frames."""

    def __init__(
        self, sae_cfg: SAEConfig, cfg: TrainConfig, data: TrainingData, device: torch.device
    ) -> None:
        self.cfg, self.data, self.device = cfg, data, device
        self.generator = torch.Generator().manual_seed(cfg.seed)
        self.sae = build_sae(sae_cfg)
        self.sae.reset_parameters(self.generator)
        mean_sq, mean_D = moments(data.acts_ND, data.train_rows)
        self.scale = math.sqrt(sae_cfg.d_in / mean_sq)
        self.train_variance = len(data.train_rows) * (mean_sq - mean_D.pow(2).sum().item()) * self.scale**2
        """sum ||x - mean||^2 over the training frames, in scaled units (the running FVU's denominator)."""
        sample = data.train_rows[
            torch.randperm(len(data.train_rows), generator=self.generator)[: cfg.median_sample]
        ]
        with torch.no_grad():
            self.sae.b_dec.copy_(geometric_median(data.acts_ND[sample].float() * self.scale))
        self.sae.to(device).train()
        self.lr = cfg.resolved_lr(sae_cfg.d_sae)
        fused = device.type in ("cpu", "cuda")
        self.optimizer = torch.optim.Adam(
            self.sae.parameters(), lr=self.lr, betas=cfg.adam_betas, fused=fused
        )
        self.steps_per_epoch = math.ceil(len(data.train_rows) / cfg.batch_size)
        self.total_steps = cfg.epochs * self.steps_per_epoch
        self.k_aux = cfg.k_aux or sae_cfg.d_in // 2
        self.dead_window = cfg.dead_window_frames or min(len(data.train_rows), 1_000_000)
        self.frames_since_fired_F = torch.zeros(sae_cfg.d_sae, dtype=torch.int64, device=device)
        self.step = 0
        self.epoch = 0
        self.train_seconds = 0.0
        self.history: list[dict] = []

    def lr_at(self, step: int) -> float:
        warmup = min(self.cfg.warmup_steps, self.total_steps // 10)
        factor = min(1.0, (step + 1) / warmup) if warmup else 1.0
        decay_start = self.total_steps * (1 - self.cfg.decay_fraction)
        if step >= decay_start and self.cfg.decay_fraction > 0:
            factor *= (self.total_steps - step) / (self.total_steps - decay_start)
        return self.lr * factor

    def run_epoch(self, progress: ProgressFn | None = None) -> dict:
        cfg, sae, data = self.cfg, self.sae, self.data
        order = data.train_rows[torch.randperm(len(data.train_rows), generator=self.generator)]
        err_sq = torch.zeros((), dtype=torch.float64, device=self.device)
        active = torch.zeros((), dtype=torch.int64, device=self.device)
        frames = 0
        started = time.perf_counter()
        for batch_rows in order.split(cfg.batch_size):
            x_BD = data.acts_ND[batch_rows].to(self.device, non_blocking=True).float().mul_(self.scale)
            for group in self.optimizer.param_groups:
                group["lr"] = self.lr_at(self.step)
            dead_F = self.frames_since_fired_F >= self.dead_window
            out = sae.training_step(x_BD, dead_F, self.k_aux, cfg.auxk_coefficient)
            self.optimizer.zero_grad(set_to_none=True)
            out.loss.backward()
            sae.remove_parallel_grad()
            self.optimizer.step()
            sae.normalise_decoder()
            self.frames_since_fired_F += len(batch_rows)
            self.frames_since_fired_F[out.fired_latents] = 0
            err_sq += (out.x_hat_BD - x_BD).pow(2).sum()
            active += out.n_active
            frames += len(batch_rows)
            self.step += 1
            if progress is not None:
                n_train = len(data.train_rows)
                progress(self.epoch * n_train + frames, cfg.epochs * n_train, {"epoch": self.epoch + 1})
        if self.device.type == "cuda":
            torch.cuda.synchronize(self.device)  # count queued kernels in the epoch's time
        self.train_seconds += time.perf_counter() - started
        self.epoch += 1
        entry = {
            "epoch": self.epoch,
            "fvu_running": err_sq.item() / self.train_variance,
            "l0_running": active.item() / frames,
            "dead_fraction": float((self.frames_since_fired_F >= self.dead_window).float().mean()),
            "train_seconds": self.train_seconds,
        }
        if len(data.heldout_rows):
            sae.eval()
            entry["fvu_heldout"] = reconstruction_stats(sae, data.acts_ND, data.heldout_rows, self.scale)[
                "fvu"
            ]
            sae.train()
        self.history.append(entry)
        return entry

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
            "generator": self.generator.get_state(),
            "frames_since_fired_F": self.frames_since_fired_F,
            "step": self.step,
            "epoch": self.epoch,
            "train_seconds": self.train_seconds,
            "history": self.history,
            "scale": self.scale,
        }

    def load_state_dict(self, state: dict) -> None:
        self.sae.load_state_dict(state["sae"])
        self.optimizer.load_state_dict(state["optimizer"])
        self.generator.set_state(state["generator"])
        self.frames_since_fired_F.copy_(state["frames_since_fired_F"])
        self.step, self.epoch = state["step"], state["epoch"]
        self.train_seconds, self.history, self.scale = (
            state["train_seconds"],
            state["history"],
            state["scale"],
        )


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
) -> dict:
    """Train (or resume) the run's SAE; write sae/cfg.json, sae/sae_weights.safetensors and metrics.json
    (into `folder` instead of the run's `sae/` when given: the seed-stability twin).

    Returns the metrics. `stop_after_epoch` ends the call early after checkpointing that epoch (as an
    interruption would); `metadata` is merged into cfg.json's metadata (model_name, hook_name, ...).
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
        data = load_training_data(run.activations, cfg.heldout_fraction, split_seed)
        trainer = SAETrainer(sae_cfg, cfg, data, device)
        fingerprint = run_fingerprint(sae_cfg, cfg, meta.fingerprint, meta.n_frames)
        folder.mkdir(parents=True, exist_ok=True)
        checkpoint_path = folder / CHECKPOINT_NAME
        if resume and checkpoint_path.exists():
            state = torch.load(checkpoint_path, map_location="cpu", weights_only=True)
            if state.get("fingerprint") == fingerprint:
                trainer.load_state_dict(state)
        while trainer.epoch < cfg.epochs:
            trainer.run_epoch(progress)
            _atomic_torch_save({**trainer.state_dict(), "fingerprint": fingerprint}, checkpoint_path)
            if (
                stop_after_epoch is not None
                and trainer.epoch >= stop_after_epoch
                and trainer.epoch < cfg.epochs
            ):
                return {"stopped_after_epoch": trainer.epoch}
        return finalise(folder, trainer, data, meta, metadata or {})
    finally:
        torch.set_num_threads(old_threads)


def held_out_fidelity(sae: SparseAutoencoder, data: TrainingData) -> dict[str, dict]:
    """FVU and L0 on each evaluation set (`speaker`: new voices, `group`: known voices, new sentences)."""
    sets = {}
    for name in ("speaker", "group"):
        rows = getattr(data.split, name)
        frames = data.frames_of(rows)
        stats = reconstruction_stats(sae, data.acts_ND, frames) if len(frames) else None
        sets[name] = {
            "clips": len(rows),
            "frames": len(frames),
            "fvu": stats["fvu"] if stats else None,
            "l0": stats["l0"] if stats else None,
        }
    return sets


def finalise(
    folder: Path, trainer: SAETrainer, data: TrainingData, meta: ActivationsMeta, metadata: dict
) -> dict:
    """Fold the scale, measure on raw frames, save the SAELens folder (with metrics.json) as `folder`."""
    model, layer = meta.model, meta.layer
    sae = trainer.folded_sae()
    train_stats = reconstruction_stats(sae, data.acts_ND, data.train_rows)
    held_stats = (
        reconstruction_stats(sae, data.acts_ND, data.heldout_rows) if len(data.heldout_rows) else None
    )
    metrics = {
        "fvu": train_stats["fvu"],
        "fvu_heldout": held_stats["fvu"] if held_stats else None,
        "l0": train_stats["l0"],
        "l0_heldout": held_stats["l0"] if held_stats else None,
        "dead_fraction": float((train_stats["fires_F"] == 0).float().mean()),
        "dead_definition": "latents that fire on no training frame with the final weights",
        "frames_per_s": trainer.epoch * len(data.train_rows) / max(trainer.train_seconds, 1e-9),
        "train_seconds": trainer.train_seconds,
        "epochs": trainer.epoch,
        "steps": trainer.step,
        "train_frames": len(data.train_rows),
        "heldout_frames": len(data.heldout_rows),
        "heldout_clip_rows": data.heldout_clip_rows,
        "split": data.split.to_dict(),
        "fidelity": held_out_fidelity(sae, data),
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
    }
    save_sae(  # metrics.json goes in with the weights: one folder, swapped in at once
        sae,
        folder,
        {"model_name": model, "hook_name": f"encoder.hidden_states.{layer}", "layer": layer, **metadata},
        {METRICS_NAME: json.dumps(metrics, indent=1)},
    )
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
