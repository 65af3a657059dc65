"""`corpus add-hf`: column mapping of LibriSpeech, FLEURS and Common Voice rows, and a real offline load."""

from __future__ import annotations

import sys
from pathlib import Path

import pytest

from pipelines.audio import decode_audio
from pipelines.corpus.hf import LAYOUTS, add_hf, layout_for, map_example
from pipelines.corpus.manifest import read_manifest
from pipelines.errors import AtlasError
from pipelines.paths import corpus_dir
from tests.fixtures.audio import encode_tone

AUDIO = {"bytes": b"RIFF....", "path": "x.wav"}


def test_librispeech_rows() -> None:
    layout = layout_for("openslr/librispeech_asr", [])
    row = {"audio": AUDIO, "text": "HELLO  WORLD", "speaker_id": 1272, "id": "1272-128104-0000"}
    example = map_example(row, layout, "clean", 0)
    assert (example.transcript, example.language, example.speaker, example.key) == (
        "HELLO WORLD",
        "en",
        "1272",
        "1272-128104-0000",
    )
    assert example.audio == AUDIO["bytes"] and layout.licence == "CC-BY-4.0"


def test_fleurs_language_comes_from_the_config() -> None:
    row = {"audio": AUDIO, "transcription": "bonjour", "id": 7, "language": "French"}
    assert map_example(row, layout_for("google/fleurs", []), "fr_fr", 3).language == "fr"
    assert map_example(row, layout_for("google/fleurs", []), "cmn_hans_cn", 3).language == "zh"
    assert map_example(row, layout_for("google/fleurs", []), "all", 3).language == ""


def test_common_voice_rows() -> None:
    layout = layout_for("mozilla-foundation/common_voice_17_0", [])
    assert layout is LAYOUTS["common_voice"]
    row = {"audio": {"bytes": None, "path": "/cache/cv_pt_1.mp3"}, "sentence": "Olá", "locale": "pt-BR",
           "client_id": "ab12", "path": "pt/clips/common_voice_pt_1.mp3"}  # fmt: skip
    example = map_example(row, layout, "pt", 0)
    assert (example.audio, example.language, example.key) == (
        "/cache/cv_pt_1.mp3",
        "pt",
        "common_voice_pt_1.mp3",
    )


def test_unknown_datasets_are_guessed_or_refused() -> None:
    layout = layout_for("someone/my_set", ["audio", "sentence", "lang", "other"])
    assert (layout.audio, layout.text, layout.language_column) == ("audio", "sentence", "lang")
    assert layout_for("someone/my_set", ["clip", "text"], audio_column="clip").audio == "clip"
    with pytest.raises(AtlasError, match="no audio column"):
        layout_for("someone/my_set", ["text"])
    with pytest.raises(AtlasError, match="no audio bytes"):
        map_example({"audio": {"bytes": None, "path": None}}, layout, None, 4)


def _in_memory(tmp_path: Path):
    datasets = pytest.importorskip("datasets")
    audio = [{"bytes": encode_tone(tmp_path / f"{i}.{s}", 1.0).read_bytes(), "path": f"{i}.{s}"}
             for i, s in enumerate(("wav", "opus"))]  # fmt: skip
    rows = datasets.Dataset.from_dict(
        {"audio": audio, "sentence": ["hello", "olá"], "locale": ["en", "pt-BR"], "client_id": ["a", "b"]}
    )
    return datasets, rows.cast_column("audio", datasets.Audio(decode=False))


def test_mapping_an_in_memory_dataset(tmp_path: Path) -> None:
    datasets, rows = _in_memory(tmp_path)
    layout = layout_for("common_voice", rows.features)
    examples = [map_example(row, layout, None, i) for i, row in enumerate(rows)]
    assert [e.language for e in examples] == ["en", "pt"]
    assert all(abs(decode_audio(e.audio).size - 16000) < 400 for e in examples)


def test_add_hf_loads_a_local_parquet_dataset(data_root: Path, tmp_path: Path) -> None:
    datasets, rows = _in_memory(tmp_path)
    (tmp_path / "set").mkdir()
    rows.to_parquet(str(tmp_path / "set" / "test.parquet"))
    summary = add_hf("parquet", None, "test", 10, "hf", data_dir=str(tmp_path / "set"), workers=1)
    assert summary.added == 2 and not summary.skipped
    clips = read_manifest(corpus_dir("hf"))
    assert [(c.language, c.transcript) for c in clips] == [("en", "hello"), ("pt", "olá")]
    assert all(c.extra["added"] == "hf" for c in clips)
    with pytest.raises(AtlasError, match="cannot load parquet"):
        add_hf("parquet", None, "nope", 10, "hf", data_dir=str(tmp_path / "set"))


def test_missing_datasets_package_says_how_to_install(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setitem(sys.modules, "datasets", None)  # what `import datasets` sees when it is not installed
    with pytest.raises(AtlasError, match=r"pip install -e '\.\[hf\]'"):
        add_hf("google/fleurs", "fr_fr")
