"""SAE training: our TopK trainer against SAELens' TopK trainer (library defaults) on the same activations.

Target: >= 1.5x SAELens' frames/s on the same activations and hardware, reaching no worse FVU in
equal wall time. sae-lens is a dev dependency (`make install-dev`):

    .venv/bin/python benchmarks/train_bench.py [--run default] [--epochs 2] [--threads 2]

Data: the run's activation shards (data/runs/<run>/activations) when present, held-out frames being the
trainer's seeded whole-clip split; otherwise synthetic Whisper-like frames (printed as such): ~36k frames of
d 512 in clips of 100-400 frames (10% of clips held out), each a shared offset + a per-clip offset + a
sparse non-negative sum of 8,192 unit atoms with Zipf-distributed frequencies (~40 active) + noise, norms ~33.

Same threads, batch 256, d_sae 4,096, k 32; lr: ours its default, SAELens 1e-3 (a common TopK setting; its
library default is 3e-4). (1) ours and SAELens for E epochs, built one after the other and then trained epoch
by epoch in turn, so load drifts on a shared machine hit both alike; (2) ours again for as many epochs as fit
in SAELens' wall time. Wall time covers each trainer's set-up and epochs (ours includes its per-epoch held-out
FVU); final evaluation is excluded. FVU is computed by one function for both: sum ||x - x_hat||^2 / sum ||x -
mean(x)||^2 over frames, in the activations' own units. Another data folder: WHISPER_ATLAS_DATA=/path/to/data
.venv/bin/python benchmarks/train_bench.py
"""

from __future__ import annotations

import argparse
import json
import math
import os
import sys
import time
from pathlib import Path
from typing import Callable, Iterator

import numpy as np
import torch

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from pipelines.activations import load_all, read_meta  # noqa: E402
from pipelines.paths import RunPaths  # noqa: E402
from pipelines.sae.config import SAEConfig, TrainConfig  # noqa: E402
from pipelines.sae.train import SAETrainer, TrainingData, split_clips  # noqa: E402

D_SAE, K, BATCH = 4096, 32, 256


def synthetic(seed: int = 0, n_train: int = 32768, d: int = 512, n_atoms: int = 8192) -> TrainingData:
    rng = np.random.default_rng(seed)
    atoms_AD = rng.standard_normal((n_atoms, d)).astype(np.float32)
    atoms_AD /= np.linalg.norm(atoms_AD, axis=1, keepdims=True)
    freq_A = 1.0 / (np.arange(n_atoms) + 20.0) ** 0.9
    freq_A *= 40 / freq_A.sum()  # ~40 active atoms per frame on average
    n_total = int(n_train * 1.1)
    lengths = []
    while sum(lengths) < n_total:
        lengths.append(int(rng.integers(100, 400)))
    clip_N = np.repeat(np.arange(len(lengths)), lengths)[:n_total]
    active_NA = rng.random((n_total, n_atoms), dtype=np.float32) < freq_A.astype(np.float32)
    rows, cols = np.nonzero(active_NA)
    del active_NA
    weights = rng.exponential(1.0, size=len(rows)).astype(np.float32)
    indices = torch.from_numpy(np.stack([rows, cols]))
    codes = torch.sparse_coo_tensor(
        indices, torch.from_numpy(weights), (n_total, n_atoms), check_invariants=False
    )
    acts_ND = torch.sparse.mm(codes, torch.from_numpy(atoms_AD)).numpy()
    acts_ND += rng.standard_normal(d).astype(np.float32) * 1.0  # shared offset
    acts_ND += (rng.standard_normal((len(lengths), d)).astype(np.float32) * 0.3)[clip_N]  # per-clip offset
    acts_ND += rng.standard_normal((n_total, d)).astype(np.float32) * 0.15
    acts_ND *= 33.0 / np.sqrt((acts_ND**2).sum(1).mean())
    train_rows, heldout_rows, held = split_clips(clip_N, 0.1, seed)
    return TrainingData(torch.from_numpy(acts_ND.astype(np.float16)), train_rows, heldout_rows, held)


def run_data(run: str) -> TrainingData | None:
    folder = RunPaths.named(run).activations
    if read_meta(folder) is None:
        return None
    acts_ND, index_N2 = load_all(folder)
    train_rows, heldout_rows, held = split_clips(index_N2[:, 0], 0.1, 0)
    return TrainingData(torch.from_numpy(acts_ND), train_rows, heldout_rows, held)


@torch.no_grad()
def fvu(
    reconstruct: Callable[[torch.Tensor], torch.Tensor], acts_ND: torch.Tensor, rows: torch.Tensor
) -> float:
    err = total = 0.0
    x_all = acts_ND[rows].float()
    mean_D = x_all.double().mean(0)
    for chunk in x_all.split(4096):
        err += (chunk - reconstruct(chunk)).double().pow(2).sum().item()
        total += (chunk.double() - mean_D).pow(2).sum().item()
    return err / total


class Ours:
    """Our trainer, driven one epoch at a time."""

    name = "ours"

    def __init__(self, data: TrainingData, epochs: int, lr: float | None) -> None:
        cfg = TrainConfig(epochs=epochs, batch_size=BATCH, lr=lr, seed=0)
        self.trainer = SAETrainer(SAEConfig(d_in=data.d_in, d_sae=D_SAE, k=K), cfg, data, torch.device("cpu"))

    def epoch(self) -> None:
        self.trainer.run_epoch()

    def reconstruct(self) -> Callable[[torch.Tensor], torch.Tensor]:
        sae = self.trainer.folded_sae()
        return lambda x: sae(x).x_hat_BD


class Lens:
    """SAELens' SAETrainer with a TopKTrainingSAE, library defaults, stepped as its `fit()` does."""

    def __init__(self, data: TrainingData, epochs: int, lr: float) -> None:
        import sae_lens
        from sae_lens.config import SAETrainerConfig
        from sae_lens.saes.topk_sae import TopKTrainingSAE, TopKTrainingSAEConfig
        from sae_lens.training.sae_trainer import SAETrainer as LensTrainer

        self.name = f"sae-lens {sae_lens.__version__}"
        self.sae = TopKTrainingSAE(TopKTrainingSAEConfig(d_in=data.d_in, d_sae=D_SAE, k=K))
        self.steps_per_epoch = len(data.train_rows) // BATCH
        # lr_end: the runner config's default (lr / 10); the default constant schedule ignores it
        cfg = SAETrainerConfig(
            total_training_samples=epochs * self.steps_per_epoch * BATCH,
            train_batch_size_samples=BATCH,
            lr=lr,
            lr_end=lr / 10,
        )
        self.batches = batches(data)
        self.trainer = LensTrainer(cfg, self.sae, self.batches)

    def epoch(self) -> None:
        """The body of `SAETrainer.fit()` (sparsity window, step, checkpoint check) without its tqdm bar."""
        for _ in range(self.steps_per_epoch):
            self.trainer.maybe_reset_sparsity()
            self.trainer.step(next(self.batches))
            self.trainer._checkpoint_if_needed()
            self.trainer.n_training_steps += 1

    def reconstruct(self) -> Callable[[torch.Tensor], torch.Tensor]:
        self.sae.eval()
        return lambda x: self.sae.decode(self.sae.encode(x))


def batches(data: TrainingData, seed: int = 0) -> Iterator[torch.Tensor]:
    """Shuffled float32 batches, epoch after epoch (the same gather-and-convert work our trainer does)."""
    generator = torch.Generator().manual_seed(seed)
    while True:
        order = data.train_rows[torch.randperm(len(data.train_rows), generator=generator)]
        for rows in order.split(BATCH):
            if len(rows) == BATCH:
                yield data.acts_ND[rows].float()


def race(data: TrainingData, makers: list[Callable], epochs: int) -> list[dict]:
    """Build each trainer, then train them epoch by epoch in turn, so load drifts on a shared machine hit
    all alike; wall time = set-up + epochs (evaluation excluded)."""
    walls, trainers = [], []
    for make in makers:
        started = time.perf_counter()
        trainers.append(make(data, epochs))
        walls.append(time.perf_counter() - started)
    for _ in range(epochs):
        for i, trainer in enumerate(trainers):
            started = time.perf_counter()
            trainer.epoch()
            walls[i] += time.perf_counter() - started
    frames = epochs * len(data.train_rows)
    rows = []
    for trainer, wall in zip(trainers, walls):
        reconstruct = trainer.reconstruct()
        rows.append(
            {
                "trainer": trainer.name,
                "epochs": epochs,
                "wall_s": wall,
                "frames_per_s": frames / wall,
                "fvu": fvu(reconstruct, data.acts_ND, data.train_rows),
                "fvu_heldout": fvu(reconstruct, data.acts_ND, data.heldout_rows),
            }
        )
    return rows


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--run", default="default")
    parser.add_argument("--epochs", type=int, default=2)
    parser.add_argument("--threads", type=int, default=2)
    parser.add_argument("--lr-ours", type=float, default=None, help="default: the trainer's own default")
    parser.add_argument("--lr-saelens", type=float, default=1e-3, help="1e-3 as in facts (its default: 3e-4)")
    args = parser.parse_args()
    torch.set_num_threads(args.threads)
    data = run_data(args.run)
    source = f"data/runs/{args.run}/activations"
    if data is None:
        data = synthetic()
        source = "SYNTHETIC Whisper-like activations (no real shards found): ratios only indicative"
    lr_ours = TrainConfig(lr=args.lr_ours).resolved_lr(D_SAE)
    print(f"data: {source}; {len(data.train_rows):,} train / {len(data.heldout_rows):,} held-out frames")
    print(
        f"threads {args.threads}, batch {BATCH}, d_sae {D_SAE}, k {K}, lr ours {lr_ours:g} / sae-lens"
        f" {args.lr_saelens:g}; load avg {os.getloadavg()}"
    )
    ours, lens = race(
        data,
        [lambda d, e: Ours(d, e, lr_ours), lambda d, e: Lens(d, e, args.lr_saelens)],
        args.epochs,
    )
    fit = max(args.epochs, math.floor(args.epochs * lens["wall_s"] / ours["wall_s"]))
    equal = race(data, [lambda d, e: Ours(d, e, lr_ours)], fit)[0] if fit != args.epochs else ours
    for row in (ours, lens, equal):
        print(
            f"{row['trainer']:>18s} {row['epochs']} epochs: {row['wall_s']:6.1f} s,"
            f" {row['frames_per_s']:7.0f} frames/s,"
            f" FVU {row['fvu']:.4f} train / {row['fvu_heldout']:.4f} held out"
        )
    print(
        f"frames/s ratio ours / sae-lens: {ours['frames_per_s'] / lens['frames_per_s']:.2f} (target >= 1.5)"
    )
    print(
        f"equal wall time: ours {equal['epochs']} epochs in {equal['wall_s']:.1f} s"
        f" -> held-out FVU {equal['fvu_heldout']:.4f}"
        f" vs sae-lens {lens['fvu_heldout']:.4f} in {lens['wall_s']:.1f} s"
    )
    print(f"load avg after {os.getloadavg()}")
    print(json.dumps({"source": source, "ours": ours, "saelens": lens, "ours_equal_time": equal}))


if __name__ == "__main__":
    main()
