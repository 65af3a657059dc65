"""The trainer on synthetic sparse activations: quality, held-out split, resume, dead latents, the CLI."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest
import torch
from typer.testing import CliRunner

from pipelines.errors import MissingStageError
from pipelines.paths import RunPaths
from pipelines.sae import SAEConfig, TrainConfig, load_sae
from pipelines.sae.train import SAETrainer, load_training_data, reconstruction_stats, train_sae
from tests.fixtures.sae_data import (
    one_thread,  # noqa: F401  (fixture)
    sparse_frames,
    write_run,
)

pytestmark = pytest.mark.usefixtures("one_thread")

SAE_CFG = SAEConfig(d_in=32, d_sae=96, k=6)


def quick(**overrides) -> TrainConfig:
    """Single-threaded (the tests share 2 cores), small batches so a few thousand frames make many steps."""
    return TrainConfig(**{"epochs": 10, "batch_size": 64, "lr": 1e-2, "threads": 1, **overrides})


def test_topk_reaches_low_fvu_and_writes_metrics(data_root: Path) -> None:
    run = write_run(n_clips=50)
    metrics = train_sae(run, SAE_CFG, quick())
    assert metrics["fvu"] < 0.1 and metrics["fvu_heldout"] < 0.15
    assert metrics["l0"] == pytest.approx(6, abs=0.05)
    for key in ["dead_fraction", "frames_per_s", "train_seconds", "epochs", "history", "fvu_formula"]:
        assert key in metrics
    assert (
        len(metrics["history"]) == 10
        and metrics["history"][-1]["fvu_running"] < metrics["history"][0]["fvu_running"]
    )
    assert json.loads((run.sae / "metrics.json").read_text())["fvu"] == metrics["fvu"]
    # the saved SAE reads raw activations and reproduces the reported FVU
    data = load_training_data(run.activations, TrainConfig().heldout_fraction, 0)
    stats = reconstruction_stats(load_sae(run.sae), data.acts_ND, data.train_rows)
    assert stats["fvu"] == pytest.approx(metrics["fvu"], rel=1e-6)


def test_held_out_frames_are_whole_clips_of_the_split(data_root: Path) -> None:
    run = write_run(n_clips=20)
    data = load_training_data(run.activations, 0.2, seed=3)
    _, index_N2 = sparse_frames(n_clips=20)
    train_clips = set(index_N2[data.train_rows.numpy(), 0])
    held_clips = set(index_N2[data.heldout_rows.numpy(), 0])
    assert held_clips == set(data.heldout_clip_rows) == set(data.split.speaker + data.split.group)
    assert train_clips == set(data.split.train) and not train_clips & held_clips
    unused = len(data.frames_of(data.split.unused))
    assert len(data.train_rows) + len(data.heldout_rows) + unused == len(index_N2)
    assert load_training_data(run.activations, 0.2, seed=3).split == data.split


def test_metrics_report_fidelity_per_held_out_set(data_root: Path) -> None:
    run = write_run(n_clips=40)
    metrics = train_sae(run, SAEConfig(d_in=32, d_sae=96, k=6), quick(epochs=2, heldout_fraction=0.2))
    assert metrics["split"]["held_out_speakers"] == {"en": ["bob"]}  # ann has as many clips: ties go by name
    assert metrics["split"]["unsplit_languages"] == ["es"]
    for name in ("speaker", "group"):
        fidelity = metrics["fidelity"][name]
        assert fidelity["clips"] > 0 and fidelity["frames"] == 40 * fidelity["clips"]
        assert 0 < fidelity["fvu"] < 1
    assert metrics["window"] == "packed"  # the synthetic meta predates window modes


@pytest.mark.parametrize("arch", ["topk", "batchtopk"])
def test_resume_equals_an_uninterrupted_seeded_run(data_root: Path, arch: str) -> None:
    cfg, sae_cfg = quick(epochs=3), SAEConfig(d_in=32, d_sae=96, k=6, arch=arch)
    whole = write_run("whole")
    parts = write_run("parts")
    expected = train_sae(whole, sae_cfg, cfg)
    assert train_sae(parts, sae_cfg, cfg, stop_after_epoch=1) == {"stopped_after_epoch": 1}
    assert not (parts.sae / "cfg.json").exists()
    resumed = train_sae(parts, sae_cfg, cfg)
    a, b = load_sae(whole.sae).state_dict(), load_sae(parts.sae).state_dict()
    assert all(torch.equal(a[name], b[name]) for name in a)
    assert [h["fvu_running"] for h in resumed["history"]] == [h["fvu_running"] for h in expected["history"]]
    assert resumed["fvu"] == expected["fvu"]


def test_a_changed_config_does_not_resume_a_stale_checkpoint(data_root: Path) -> None:
    run = write_run()
    train_sae(run, SAE_CFG, quick(epochs=2), stop_after_epoch=1)
    metrics = train_sae(run, SAE_CFG, quick(epochs=2, seed=1))
    assert [h["epoch"] for h in metrics["history"]] == [1, 2]
    assert metrics["train"]["seed"] == 1


def _trainer(run: RunPaths, auxk: float, window: int) -> SAETrainer:
    cfg = quick(auxk_coefficient=auxk, dead_window_frames=window, epochs=4)
    return SAETrainer(
        SAE_CFG,
        cfg,
        load_training_data(run.activations, TrainConfig().heldout_fraction, 0),
        torch.device("cpu"),
    )


def _starve(trainer: SAETrainer, latents: slice) -> None:
    """Make latents that never win the top-k but have small positive pre-activations (dead, revivable)."""
    with torch.no_grad():
        trainer.sae.W_enc[:, latents] *= 1e-3
        trainer.sae.b_enc[latents] = 1e-3


def test_auxk_revives_dead_latents(data_root: Path) -> None:
    run = write_run(n_clips=50)
    fired = {}
    for auxk in (0.0, 1 / 32):
        trainer = _trainer(run, auxk, window=256)
        _starve(trainer, slice(0, 48))
        for _ in range(4):
            trainer.run_epoch()
        sae = trainer.folded_sae()
        fires_F = reconstruction_stats(sae, trainer.data.acts_ND, trainer.data.train_rows)["fires_F"]
        fired[auxk] = int((fires_F[:48] > 0).sum())
    assert fired[0.0] == 0  # no gradient ever reaches a latent that never fires
    assert fired[1 / 32] >= 24


def test_dead_latent_accounting(data_root: Path) -> None:
    """Latents that can never fire are counted dead; frames_since_fired counts every frame seen."""
    run = write_run()
    trainer = _trainer(run, 0.0, window=500)
    with torch.no_grad():
        trainer.sae.b_enc[:10] = -1e4
    entry = trainer.run_epoch()
    n_train = len(trainer.data.train_rows)
    assert (trainer.frames_since_fired_F[:10] == n_train).all()
    alive = trainer.frames_since_fired_F[10:] < n_train
    assert entry["dead_fraction"] == pytest.approx(
        float((trainer.frames_since_fired_F >= 500).float().mean())
    )
    assert entry["dead_fraction"] >= 10 / 96 - 1e-6 and bool(alive.any())


@pytest.mark.parametrize("arch", ["batchtopk", "relu"])
def test_other_architectures_train(data_root: Path, arch: str) -> None:
    run = write_run()
    sae_cfg = SAEConfig(d_in=32, d_sae=96, k=6, arch=arch, l1_coefficient=0.5)
    metrics = train_sae(run, sae_cfg, quick(epochs=4))
    assert metrics["fvu"] < 0.6 and metrics["l0"] > 0
    sae = load_sae(run.sae)
    if arch == "batchtopk":
        assert float(sae.threshold.min()) > 0 and 2 <= metrics["l0"] <= 18


def test_missing_activations_name_the_command(data_root: Path) -> None:
    with pytest.raises(MissingStageError, match="whisper-atlas extract"):
        train_sae(RunPaths.named("nothing"), SAE_CFG, quick())


def test_train_command(data_root: Path) -> None:
    from pipelines.cli import app

    write_run("cli")
    args = ["train", "--run", "cli", "--d-sae", "64", "--k", "4", "--epochs", "2", "--batch-size", "64"]
    result = CliRunner().invoke(app, [*args, "--eval-clips", "0"])
    assert result.exit_code == 0, result.output
    assert "fvu" in result.output
    cfg = json.loads((RunPaths.named("cli").sae / "cfg.json").read_text())
    assert cfg["d_sae"] == 64 and cfg["k"] == 4
    missing = CliRunner().invoke(app, ["train", "--run", "nope", "--eval-clips", "0"])
    assert missing.exit_code == 1 and "whisper-atlas extract" in missing.output
    assert np.isfinite(json.loads((RunPaths.named("cli").sae / "metrics.json").read_text())["fvu"])
    assert "held out by speaker: clips" in result.output
    status = CliRunner().invoke(app, ["status", "--run", "cli", "--json"])
    shown = json.loads(status.stdout)
    assert 0 < shown["fidelity"]["speaker"]["fvu"] < 1 and shown["fidelity"]["group"]["clips"] > 0
    assert shown["split"]["held_out_speakers"] == {"en": ["bob"]} and shown["split"]["unsplit_languages"] == [
        "es"
    ]
