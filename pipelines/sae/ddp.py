"""Train one SAE with DistributedDataParallel: `torchrun --nproc-per-node N -m pipelines.sae.ddp RUN ...`.

Every rank runs `pipelines.sae.train.train_sae` over the activation shards dealt to it (gloo on CPU, NCCL with
one GPU per rank, `cuda:LOCAL_RANK`); gradients are averaged each step, the global batch is `--batch-size`
as in one process, and rank 0 writes the checkpoint after each epoch and the SAELens folder at the end.
`whisper-atlas train --distributed N` calls `launch`, which starts torchrun on this machine; across machines,
start torchrun yourself on each (`--nnodes`, `--rdzv-endpoint`) over a shared data folder.

Resuming needs the same configs and activations (the checkpoint's fingerprint). With the same world size it
continues exactly; with another one the model, optimiser, counters and step carry over, the shards are dealt
anew and each rank's shuffle restarts (`metrics.json` records `resumed_from_world_size`).
"""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
from datetime import timedelta
from pathlib import Path

from pipelines.errors import AtlasError
from pipelines.sae.config import SAEConfig, TrainConfig
from pipelines.sae.train import METRICS_NAME

LOG_NAME = "torchrun-error.log"
"""Where a failed launch leaves torchrun's whole log (in the SAE folder)."""


def launch(
    run: str,
    sae_cfg: SAEConfig,
    cfg: TrainConfig,
    processes: int,
    *,
    folder: Path | None = None,
    metadata: dict | None = None,
    resume: bool = True,
    device: str | None = None,
    stop_after_epoch: int | None = None,
) -> dict:
    """Run `processes` ranks on this machine under torchrun and return the metrics rank 0 wrote
    (or `{"stopped_after_epoch": E}`). A rank's one-line `error:` becomes this call's AtlasError."""
    if processes < 1:
        raise AtlasError(f"--distributed needs at least 1 process, got {processes}")
    if cfg.batch_size % processes:
        raise AtlasError(f"batch size {cfg.batch_size} does not split over {processes} processes")
    argv = [run, "--sae-config", json.dumps(sae_cfg.to_dict()), "--train-config"]
    argv += [json.dumps(cfg.to_dict())]
    argv += ["--folder", str(folder)] if folder else []
    argv += ["--metadata", json.dumps(metadata)] if metadata else []
    argv += [] if resume else ["--no-resume"]
    argv += ["--device", device] if device else []
    argv += ["--stop-after-epoch", str(stop_after_epoch)] if stop_after_epoch else []
    torchrun = [
        sys.executable,
        "-m",
        "torch.distributed.run",
        "--standalone",
        f"--nproc-per-node={processes}",
    ]
    done = subprocess.run([*torchrun, "-m", __name__, *argv], stderr=subprocess.PIPE, text=True)
    from pipelines.paths import RunPaths

    folder = folder or RunPaths.named(run).sae
    if done.returncode:
        errors = [line for line in done.stderr.splitlines() if line.startswith("error: ")]
        if errors:
            raise AtlasError(errors[0].removeprefix("error: "))
        folder.mkdir(parents=True, exist_ok=True)
        (folder / LOG_NAME).write_text(done.stderr)
        tail = "\n".join(done.stderr.strip().splitlines()[-12:])
        raise AtlasError(
            f"distributed training failed (exit {done.returncode}, whole log in {folder / LOG_NAME}):\n{tail}"
        )
    if stop_after_epoch:
        return {"stopped_after_epoch": stop_after_epoch}
    return json.loads((folder / METRICS_NAME).read_text())


def _parse(argv: list[str] | None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(prog="python -m pipelines.sae.ddp", description=__doc__.split("\n")[0])
    parser.add_argument("run", help="run to train (first: torchrun reads options before it)")
    parser.add_argument("--sae-config", type=json.loads, default={}, help="SAEConfig fields as JSON")
    parser.add_argument("--train-config", type=json.loads, default={}, help="TrainConfig fields as JSON")
    parser.add_argument("--folder", type=Path, help="output folder (default: data/runs/<run>/sae)")
    parser.add_argument("--metadata", type=json.loads, default=None, help="extra cfg.json metadata (JSON)")
    parser.add_argument("--no-resume", action="store_true", help="ignore an existing checkpoint")
    parser.add_argument("--device", choices=["cpu", "cuda"], help="default: cuda when present")
    parser.add_argument(
        "--stop-after-epoch", type=int, help="checkpoint after this epoch and exit (fits a job's time limit)"
    )
    return parser.parse_args(argv)


def main(argv: list[str] | None = None) -> int:
    """One rank (torchrun sets RANK, WORLD_SIZE, LOCAL_RANK and the rendezvous)."""
    import torch
    import torch.distributed as dist

    from pipelines.activations import read_meta
    from pipelines.errors import missing_stage
    from pipelines.paths import RunPaths
    from pipelines.sae.collective import Distributed, leave_together
    from pipelines.sae.train import train_sae

    args = _parse(argv)
    cuda = args.device == "cuda" or (args.device is None and torch.cuda.is_available())
    device = torch.device("cpu")
    if cuda:
        device = torch.device("cuda", int(os.environ.get("LOCAL_RANK", 0)))
        torch.cuda.set_device(device)
    dist.init_process_group("nccl" if cuda else "gloo")
    group = Distributed(device)
    try:
        run = RunPaths.named(args.run)
        meta = read_meta(run.activations)
        if meta is None:
            raise missing_stage("activations", run.activations, "extract")
        sae_cfg = SAEConfig(**{"d_in": meta.d_model, **args.sae_config})
        cfg = TrainConfig(**args.train_config)

        def progress(done: int, total: int, info: dict) -> None:
            if group.rank == 0 and done == total * info["epoch"] // cfg.epochs:
                print(f"rank 0/{group.world_size}: epoch {info['epoch']}/{cfg.epochs} done", flush=True)

        metrics = train_sae(
            run,
            sae_cfg,
            cfg,
            resume=not args.no_resume,
            device=device,
            progress=progress,
            stop_after_epoch=args.stop_after_epoch,
            metadata=args.metadata,
            folder=args.folder,
            group=group,
        )
        if group.rank == 0 and "fvu" in metrics:
            print(f"fvu {metrics['fvu']:.4g}  fvu_heldout {metrics['fvu_heldout']}", flush=True)
        address, port = os.environ["MASTER_ADDR"], int(os.environ["MASTER_PORT"])
        store = dist.TCPStore(address, port, is_master=False, timeout=timedelta(seconds=120))
        leave_together(store, group.world_size, os.environ.get("TORCHELASTIC_RESTART_COUNT", "0"))
        return 0
    except AtlasError as exc:
        if group.rank == 0:
            print(f"error: {exc}", file=sys.stderr, flush=True)
        return 1
    finally:
        dist.destroy_process_group()


if __name__ == "__main__":
    sys.exit(main())
