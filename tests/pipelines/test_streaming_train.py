"""Online training (`whisper-atlas stream`): the tiny random Whisper over a corpus folder, nothing stored."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest
import torch
from typer.testing import CliRunner

from pipelines.audio import write_flac
from pipelines.corpus.manifest import Clip, write_manifest
from pipelines.errors import AtlasError
from pipelines.extract import extract
from pipelines.paths import RunPaths
from pipelines.sae import SAEConfig, TrainConfig, load_sae
from pipelines.sae.buffer import ShuffleBuffer
from pipelines.sae.stream import train_streaming
from pipelines.sae.train import load_training_data
from pipelines.streaming import CorpusSource
from tests.fixtures.sae_data import one_thread  # noqa: F401  (fixture)
from tests.fixtures.tiny_whisper import tiny_whisper

pytestmark = pytest.mark.usefixtures("one_thread")

SR = 16000
BUFFER = 3200
"""Frames the buffer may hold: a third of the corpus's training frames, two encoder calls of one window."""


@pytest.fixture(scope="module")
def tiny():
    return tiny_whisper()


def _voice(seconds: float, seed: int) -> np.ndarray:
    rng = np.random.default_rng(seed)
    t = np.arange(int(seconds * SR)) / SR
    pitch = 110 + 40 * (seed % 5)
    wave = sum(np.sin(2 * np.pi * pitch * h * t) / h for h in range(1, 6)) * (0.5 + 0.5 * np.sin(3 * t))
    return (0.2 * wave + 0.02 * rng.standard_normal(t.size)).astype(np.float32)


@pytest.fixture
def corpus(data_root: Path) -> Path:
    """24 clips of 4-9 s: parallel pairs (en, es) by three voices, so the split holds out a voice."""
    folder = data_root / "corpora" / "voices"
    clips = []
    for row in range(24):
        seconds = 4.0 + (row * 7) % 6
        write_flac(folder / "audio" / f"c{row}.flac", _voice(seconds, row))
        language = ("en", "es")[row % 2]
        speaker = {"en": ("ann", "bob"), "es": ("eva", "eva")}[language][(row // 2) % 2]
        clips.append(
            Clip(
                f"c{row}",
                f"audio/c{row}.flac",
                seconds,
                "speech",
                language,
                group=f"g{row // 2}",
                speaker=speaker,
            )
        )
    write_manifest(folder, clips)
    return folder


def test_buffer_returns_every_frame_once_and_never_holds_more_than_its_capacity() -> None:
    frames_ND = torch.arange(5000, dtype=torch.float16)[:, None].repeat(1, 4)
    pieces = iter(frames_ND.split(300))
    buffer = ShuffleBuffer(1000, 4, 300, torch.Generator().manual_seed(0))
    out = torch.cat(list(buffer.batches(pieces, 64)))
    assert sorted(out[:, 0].tolist()) == frames_ND[:, 0].tolist()
    assert 700 <= buffer.max_frames <= 1000 and buffer.frames_in == 5000
    assert not torch.equal(out, frames_ND)  # shuffled
    # mixing: frames leave the buffer far from their stream order (a buffer of ~1000 frames)
    assert (out[:, 0].float() - torch.arange(5000.0)).abs().mean() > 100
    with pytest.raises(AtlasError, match="at least two encoder calls"):
        ShuffleBuffer(500, 4, 300, torch.Generator())


def test_stream_trains_an_sae_from_a_folder_without_writing_activations(tiny, corpus, data_root) -> None:
    run = RunPaths.named("streamed")
    source = CorpusSource(corpus, tiny, batch_size=1)
    cfg = TrainConfig(epochs=2, batch_size=64, lr=1e-2, threads=1)
    metrics = train_streaming(run.sae, SAEConfig(d_in=64, d_sae=128, k=8), cfg, source, buffer_frames=BUFFER)
    assert not run.activations.exists() and not list(data_root.rglob("*.npy"))
    sae = load_sae(run.sae)
    assert (sae.d_in, sae.d_sae) == (64, 128)
    assert json.loads((run.sae / "metrics.json").read_text())["streamed"] == metrics["streamed"]
    streamed = metrics["streamed"]
    # the bound held on a stream several times larger than the buffer
    assert BUFFER - 1500 <= streamed["max_buffer_frames"] <= BUFFER
    assert streamed["frames_in"] == 2 * metrics["train_frames"] and metrics["train_frames"] > 1.5 * BUFFER
    assert 0 < metrics["fvu_heldout"] < 0.5 and metrics["l0"] == pytest.approx(8, abs=0.01)
    assert set(metrics["fidelity"]) == {"speaker", "group"}
    assert metrics["history"][1]["fvu_running"] < metrics["history"][0]["fvu_running"]
    # the stream is the frames extraction stores: same training frames, same held-out frames
    stored = RunPaths.named("stored")
    extract(corpus, stored, tiny, None, 1)
    data = load_training_data(stored.activations, cfg.heldout_fraction, cfg.seed)
    assert metrics["train_frames"] == len(data.train_rows)
    assert metrics["heldout_frames"] == len(data.heldout_rows)
    assert metrics["split"] == data.split.to_dict()
    assert metrics["streamed"]["expected_train_frames"] == len(data.train_rows)


def test_stream_command_with_a_local_model_folder(tiny, corpus, data_root, tmp_path) -> None:
    """The CLI path: a transformers folder as --model, width, k and batch from the size table (tiny's row)."""
    from pipelines.cli import app
    from pipelines.model.sizes import size_for_width

    folder = tmp_path / "tiny-model"
    tiny.model.save_pretrained(folder)
    tiny.processor.save_pretrained(folder)
    args = ["stream", "--run", "cli", "--corpus", "voices", "--model", str(folder), "--extract-batch", "1"]
    result = CliRunner().invoke(app, [*args, "--buffer-frames", str(BUFFER), "--eval-clips", "0"])
    assert result.exit_code == 0, result.output
    assert "no activations written" in result.output and "fvu" in result.output
    row = size_for_width(64)
    cfg = json.loads((RunPaths.named("cli").sae / "cfg.json").read_text())
    metrics = json.loads((RunPaths.named("cli").sae / "metrics.json").read_text())
    assert (cfg["d_sae"], cfg["k"], metrics["train"]["batch_size"]) == (row.d_sae, row.k, row.train_batch)
    assert not list(data_root.rglob("*.npy"))
    bad = CliRunner().invoke(app, [*args, "--window", "packed"])
    assert bad.exit_code != 0 and "Traceback" not in bad.output
    small = CliRunner().invoke(app, [*args, "--buffer-frames", "1000", "--eval-clips", "0"])
    assert small.exit_code == 1 and "error: the buffer must hold at least" in small.output
    missing = CliRunner().invoke(app, ["stream", "--corpus", "nothing", "--model", str(folder)])
    assert missing.exit_code == 1 and "whisper-atlas corpus build" in missing.output


def test_stream_from_a_datasets_source(tiny, data_root, tmp_path) -> None:
    """`datasets` streaming (here a local parquet file: no network); a dataset whose columns name no speaker
    holds examples out one by one."""
    datasets = pytest.importorskip("datasets")
    from pipelines.streaming import DatasetSource
    from tests.fixtures.audio import encode

    audio = [
        {"bytes": encode(tmp_path / f"{i}.wav", _voice(8.0 + i % 3, i), SR).read_bytes(), "path": f"{i}.wav"}
        for i in range(12)
    ]
    rows = datasets.Dataset.from_dict({"audio": audio, "sentence": ["x"] * 12}).cast_column(
        "audio", datasets.Audio(decode=False)
    )
    (tmp_path / "set").mkdir()
    rows.to_parquet(str(tmp_path / "set" / "train.parquet"))
    source = DatasetSource("parquet", tiny, data_dir=str(tmp_path / "set"), limit=12, batch_size=1, seed=0,
                           heldout_fraction=0.3)  # fmt: skip
    run = RunPaths.named("hf")
    cfg = TrainConfig(epochs=1, batch_size=64, lr=1e-2, threads=1)
    metrics = train_streaming(run.sae, SAEConfig(d_in=64, d_sae=128, k=8), cfg, source, buffer_frames=BUFFER)
    assert load_sae(run.sae).d_sae == 128 and not source.failed
    held = [i for i in range(12) if source.is_held_out("", str(i))]
    assert 0 < len(held) < 12
    assert metrics["train_frames"] + metrics["heldout_frames"] == sum(
        -(-int((8.0 + i % 3) * SR) // 320) for i in range(12)
    )
    assert metrics["heldout_frames"] == sum(-(-int((8.0 + i % 3) * SR) // 320) for i in held)
    assert metrics["streamed"]["max_buffer_frames"] <= BUFFER < metrics["train_frames"]
