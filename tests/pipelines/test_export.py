"""Exports of an atlas (Neuronpedia layout, Parquet) and of the SAE (SAELens folder), on a synthetic atlas."""

from __future__ import annotations

import gzip
import json
from pathlib import Path

import duckdb
import pyarrow.parquet as pq
import pytest

from pipelines.analysis.words import word_at
from pipelines.atlas.schema import metadata
from pipelines.errors import MissingStageError
from pipelines.export.neuronpedia import export_neuronpedia, frame_labels
from pipelines.export.parquet import export_parquet
from pipelines.export.saelens import export_saelens
from pipelines.sae.saelens import save_sae
from tests.fixtures.synthetic_atlas import write_synthetic_atlas
from tests.fixtures.tiny_sae import tiny_sae

N_FEATURES = 40


@pytest.fixture(scope="module")
def atlas_and_sae(tmp_path_factory: pytest.TempPathFactory) -> tuple[Path, Path]:
    root = tmp_path_factory.mktemp("export")
    atlas = write_synthetic_atlas(root / "atlas.duckdb", n_features=N_FEATURES, n_clips=10, seed=3)
    save_sae(tiny_sae(16, N_FEATURES, k=4), root / "sae", {"model_name": "synthetic", "hook_name": "h"})
    return atlas, root / "sae"


def test_frame_labels_put_each_word_on_the_frames_it_covers():
    words = [("¿Hola,", 0.0, 0.1), ("amigo", 0.1, 0.3)]
    labels = frame_labels(20, words)
    assert labels[0] == "0.00s hola" and labels[7] == "0.14s amigo" and labels[19] == "0.38s"
    for frame, label in enumerate(labels):
        word = word_at(words, frame)
        assert label.split(" ", 1)[1:] == ([word] if word else [])


def test_neuronpedia_export_parses(atlas_and_sae, tmp_path: Path):
    atlas, sae = atlas_and_sae
    folder = export_neuronpedia(atlas, sae, tmp_path, batch_size=16)
    assert folder == tmp_path / "synthetic" / f"6-whisper-atlas-{N_FEATURES}"
    assert json.loads((folder / "source.jsonl").read_text())["hookName"] == "h"
    features = [json.loads(x) for p in sorted((folder / "features").glob("*.gz")) for x in gzip.open(p, "rt")]
    assert sorted(int(f["index"]) for f in features) == list(range(N_FEATURES))
    assert all(len(f["vector"]) == 16 and f["hasVector"] for f in features)
    acts = [json.loads(x) for p in sorted((folder / "activations").glob("*.gz")) for x in gzip.open(p, "rt")]
    con = duckdb.connect(str(atlas), read_only=True)
    n_examples = con.execute("SELECT count(*) FROM examples").fetchone()[0]
    con.close()
    assert len(acts) == n_examples
    assert any(" " in token for a in acts for token in a["tokens"]), "aligned words label some frames"
    assert all(len(a["tokens"]) == len(a["values"]) for a in acts)
    explanations = [json.loads(x) for p in (folder / "explanations").glob("*.gz") for x in gzip.open(p, "rt")]
    assert explanations and all(e["description"] for e in explanations)


def test_neuronpedia_export_refuses_a_mismatched_sae(atlas_and_sae, tmp_path: Path):
    atlas, _ = atlas_and_sae
    save_sae(tiny_sae(16, 8, k=2), tmp_path / "sae", {"model_name": "x", "hook_name": "h"})
    with pytest.raises(MissingStageError, match="rebuild"):
        export_neuronpedia(atlas, tmp_path / "sae", tmp_path / "out")


def test_parquet_export_has_every_table(atlas_and_sae, tmp_path: Path):
    atlas, _ = atlas_and_sae
    files = export_parquet(atlas, tmp_path)
    assert {f.stem for f in files} == set(metadata.tables)
    assert pq.read_table(tmp_path / "features.parquet").num_rows == N_FEATURES
    with pytest.raises(MissingStageError, match="build"):
        export_parquet(tmp_path / "missing.duckdb", tmp_path)


def test_saelens_export_copies_the_checkpoint(atlas_and_sae, tmp_path: Path):
    _, sae = atlas_and_sae
    out = export_saelens(sae, tmp_path / "out")
    assert sorted(p.name for p in out.iterdir()) == ["cfg.json", "sae_weights.safetensors"]
    assert (out / "sae_weights.safetensors").read_bytes() == (sae / "sae_weights.safetensors").read_bytes()
    with pytest.raises(MissingStageError, match="train"):
        export_saelens(tmp_path / "nothing", tmp_path / "out2")
