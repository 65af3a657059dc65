"""The `transcribe` and `extract` commands end to end, on a tiny random Whisper saved as a local folder."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest
from typer.testing import CliRunner

from pipelines.activations import read_meta
from pipelines.audio import write_flac
from pipelines.cli import app
from pipelines.corpus.manifest import Clip, write_manifest
from pipelines.paths import RunPaths

runner = CliRunner()


@pytest.fixture(scope="module")
def tiny_folder(tmp_path_factory) -> Path:
    from tests.fixtures.tiny_whisper import tiny_whisper

    bundle = tiny_whisper()
    folder = tmp_path_factory.mktemp("tiny-model")
    bundle.model.save_pretrained(folder)
    bundle.processor.save_pretrained(folder)
    return folder


def tone(seconds: float) -> np.ndarray:
    t = np.arange(int(seconds * 16000)) / 16000
    return (0.3 * np.sin(2 * np.pi * 330 * t)).astype(np.float32)


def test_transcribe_json(tiny_folder, tmp_path) -> None:
    write_flac(tmp_path / "clip.flac", tone(1.2))
    result = runner.invoke(
        app, ["transcribe", str(tmp_path / "clip.flac"), "--json", "--model", str(tiny_folder)]
    )
    assert result.exit_code == 0, result.output
    payload = json.loads(result.stdout)
    assert set(payload) >= {"text", "language", "language_probs", "tokens", "repetitive", "seconds"}
    assert len(payload["language_probs"]) == 5 and payload["seconds"] == pytest.approx(1.2, abs=0.01)


def test_transcribe_text_with_words(tiny_folder, tmp_path) -> None:
    write_flac(tmp_path / "clip.flac", tone(0.8))
    args = [
        "transcribe",
        str(tmp_path / "clip.flac"),
        "--model",
        str(tiny_folder),
        "--language",
        "fr",
        "--words",
    ]
    result = runner.invoke(app, args)
    assert result.exit_code == 0, result.output
    assert "languages: " in result.stdout


@pytest.mark.parametrize(
    ("make", "message"),
    [
        (lambda p: p.write_bytes(b"this is not audio"), "not a readable audio file"),
        (lambda p: p.write_bytes(b""), ""),
    ],
)
def test_transcribe_bad_audio_is_one_line(tiny_folder, tmp_path, make, message) -> None:
    path = tmp_path / "bad.wav"
    make(path)
    result = runner.invoke(app, ["transcribe", str(path), "--model", str(tiny_folder)])
    assert result.exit_code == 1
    assert result.stderr.startswith("error: ") and len(result.stderr.strip().splitlines()) == 1
    assert message in result.stderr


def test_transcribe_unknown_language_and_model(tiny_folder, tmp_path) -> None:
    write_flac(tmp_path / "clip.flac", tone(0.5))
    bad_language = runner.invoke(app, ["transcribe", str(tmp_path / "clip.flac"), "--language", "xx"])
    assert bad_language.exit_code == 1 and "unknown language 'xx'" in bad_language.stderr
    bad_model = runner.invoke(app, ["transcribe", str(tmp_path / "clip.flac"), "--model", "bundled:nope"])
    assert bad_model.exit_code == 1 and "only bundled model" in bad_model.stderr


def test_extract_command(tiny_folder, data_root) -> None:
    corpus = data_root / "corpora" / "default"
    clips = []
    for i, seconds in enumerate([0.6, 1.4, 2.2]):
        write_flac(corpus / "audio" / f"c{i}.flac", tone(seconds))
        clips.append(Clip(id=f"c{i}", path=f"audio/c{i}.flac", duration=seconds))
    write_manifest(corpus, clips)
    args = ["extract", "--model", str(tiny_folder), "--layer", "1", "--batch-size", "2"]
    result = runner.invoke(app, args)
    assert result.exit_code == 0, result.output
    meta = read_meta(RunPaths.named().activations)
    assert meta is not None and meta.layer == 1 and meta.n_frames == 30 + 70 + 110
    assert "3 clips encoded" in result.stdout
    again = runner.invoke(app, [*args, "--window", "solo"])
    assert again.exit_code == 0 and "previous activations discarded" in again.stdout


def test_extract_without_corpus(tiny_folder, data_root) -> None:
    result = runner.invoke(app, ["extract", "--model", str(tiny_folder), "--corpus", "missing"])
    assert result.exit_code == 1 and "corpus build" in result.stderr
