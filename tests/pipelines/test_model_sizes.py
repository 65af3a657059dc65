"""The per-size defaults (`pipelines.model.sizes`): the table, where extract and train read it, the docs."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest
from typer.testing import CliRunner

from pipelines.activations import read_meta
from pipelines.audio import write_flac
from pipelines.corpus.manifest import Clip, write_manifest
from pipelines.extract import extract
from pipelines.model.loader import WhisperBundle
from pipelines.model.sizes import SIZES, markdown_table, size_for_width
from pipelines.paths import RunPaths
from tests.fixtures.sae_data import one_thread, write_run  # noqa: F401  (fixture)

ROOT = Path(__file__).resolve().parents[2]


def test_the_table_is_consistent() -> None:
    assert [s.name for s in SIZES] == ["tiny", "base", "small", "medium", "large-v3"]
    widths = [s.d_model for s in SIZES]
    assert widths == sorted(set(widths))  # one width per size: activations (which record it) are recognised
    for size in SIZES:
        assert size.hub_id == f"openai/whisper-{size.name}"
        assert 1 <= size.k <= size.d_sae and size.d_model % 64 == 0
        assert size.layer == size.encoder_layers  # the final output, the default site
        assert size.extract_batch("cuda") >= size.extract_batch("cpu") >= 1
    assert size_for_width(768).name == "small" and size_for_width(64).name == "tiny"
    assert size_for_width(600).name == "base" and size_for_width(640).name == "base"  # ties: the smaller
    assert size_for_width(5000).name == "large-v3"


def test_the_docs_show_this_table() -> None:
    assert markdown_table() in (ROOT / "docs" / "SCALING.md").read_text()


def _encoder_batches(bundle: WhisperBundle) -> list[int]:
    """Windows per encoder call, recorded by a hook on the encoder."""
    calls: list[int] = []
    bundle.model.model.encoder.register_forward_pre_hook(lambda module, args: calls.append(len(args[0])))
    return calls


def _tone_corpus(folder: Path, n: int) -> Path:
    t = np.arange(16000 * 2) / 16000
    clips = []
    for i in range(n):
        write_flac(
            folder / "audio" / f"c{i}.flac", (0.3 * np.sin(2 * np.pi * (200 + 50 * i) * t)).astype("f4")
        )
        clips.append(Clip(id=f"c{i}", path=f"audio/c{i}.flac", duration=2.0))
    write_manifest(folder, clips)
    return folder


def test_extract_takes_layer_and_batch_from_the_tiny_row(data_root: Path) -> None:
    """The tiny random Whisper (64 wide, 2 layers) takes the nearest row, tiny's: 8 windows per CPU call, and
    the final layer, capped at the model's own depth."""
    from tests.fixtures.tiny_whisper import tiny_whisper

    tiny = tiny_whisper()
    calls = _encoder_batches(tiny)
    corpus = _tone_corpus(data_root / "corpora" / "tones", 10)
    extract(corpus, RunPaths.named("tiny"), tiny, None, None, "solo")
    assert calls == [8, 2] and size_for_width(64).extract_batch("cpu") == 8
    assert read_meta(RunPaths.named("tiny").activations).layer == tiny.n_layers == 2


@pytest.mark.usefixtures("one_thread")
def test_train_takes_width_k_and_batch_from_the_row(data_root: Path) -> None:
    from pipelines.cli import app

    write_run("sized")  # 32-wide synthetic frames: the nearest row is tiny's
    args = ["train", "--run", "sized", "--epochs", "1", "--eval-clips", "0", "--no-stability"]
    result = CliRunner().invoke(app, args)
    assert result.exit_code == 0, result.output
    row = size_for_width(32)
    cfg = json.loads((RunPaths.named("sized").sae / "cfg.json").read_text())
    metrics = json.loads((RunPaths.named("sized").sae / "metrics.json").read_text())
    assert (cfg["d_sae"], cfg["k"], metrics["train"]["batch_size"]) == (row.d_sae, row.k, row.train_batch)
    explicit = CliRunner().invoke(app, [*args, "--d-sae", "64", "--k", "4", "--batch-size", "32"])
    assert explicit.exit_code == 0, explicit.output
    cfg = json.loads((RunPaths.named("sized").sae / "cfg.json").read_text())
    assert (cfg["d_sae"], cfg["k"]) == (64, 4)


@pytest.fixture(scope="module")
def base() -> WhisperBundle:
    """The bundled base, converted once into the real data folder (as the other integration tests load it)."""
    from pipelines.model.loader import load_whisper

    return load_whisper("bundled:whisper-base", device="cpu")


@pytest.mark.integration
def test_the_bundled_base_is_the_base_row(base: WhisperBundle, data_root: Path) -> None:
    """The real bundled base: its shape is the base row's, and extraction takes that row's defaults."""
    row = size_for_width(base.d_model)
    assert (row.name, row.d_model, row.encoder_layers) == ("base", 512, base.n_layers)
    params = sum(p.numel() for p in base.model.model.encoder.parameters()) / 1e6
    assert params == pytest.approx(row.encoder_params_m, rel=0.05)
    calls = _encoder_batches(base)
    extract(
        _tone_corpus(data_root / "corpora" / "tones", 5), RunPaths.named("base"), base, None, None, "solo"
    )
    assert calls == [4, 1] and read_meta(RunPaths.named("base").activations).layer == 6
