"""Rebuilds and swaps that must never take the site down, against the real server (uvicorn on loopback): a
hostile atlas (a view that reads a server file) or a half-copied one swapped in is refused while the old one
keeps serving, and the live worker reloads the SAE and the atlas labels after a rebuild, between jobs."""

from __future__ import annotations

import os
import shutil
from pathlib import Path

import duckdb
import httpx
import pyarrow as pa
import pytest

from backend.app import create_app
from backend.services.inference import InferenceService, InferenceSettings, run_identity
from backend.settings import Settings
from pipelines.atlas.writer import write_atlas
from pipelines.paths import RunPaths
from pipelines.sae.saelens import load_sae, save_sae
from pipelines.steering import SteeringResources
from pipelines.steering.resources import read_labels_and_presets
from tests.backend.conftest import copy_atlas, read_tables, settings_for
from tests.backend.test_live_api import CLIP
from tests.fixtures.live_server import LiveServer, tiny_resources
from tests.fixtures.synthetic_atlas import write_synthetic_atlas
from tests.fixtures.tiny_sae import tiny_sae

URLS = ("/healthz", "/api/v1/atlas", "/api/v1/features/3", "/features/3", "/api/v1/clips/1", "/")


def answers(base: str) -> dict[str, httpx.Response]:
    return {url: httpx.get(base + url, timeout=30) for url in URLS}


def replace_with(live: Path, make) -> None:
    """Swap a file made by `make(path)` in over `live`, as a build or a copy-then-rename would."""
    incoming = live.with_name("incoming.duckdb")
    make(incoming)
    os.replace(incoming, live)


def hostile(source: Path, secret: Path):
    def make(path: Path) -> None:
        shutil.copy(source, path)
        with duckdb.connect(str(path)) as con:
            con.execute("DROP TABLE run")
            con.execute(
                f"CREATE VIEW run AS SELECT 'model' AS key, content AS value FROM read_text('{secret}')"
            )

    return make


def half_copied(source: Path):
    def make(path: Path) -> None:
        path.write_bytes(source.read_bytes()[: source.stat().st_size // 2])

    return make


def test_bad_atlases_swapped_in_are_refused_and_the_old_one_keeps_serving(
    atlas_path: Path, tmp_path: Path
) -> None:
    live = copy_atlas(atlas_path, tmp_path / "atlas.duckdb", lambda tables: None)
    secret = tmp_path / "secret.txt"
    secret.write_text("server secret 42")
    with LiveServer(create_app(settings_for(live))) as server:
        before = answers(server.url)
        version = before["/healthz"].json()["version"]
        for name, make in (
            ("hostile view", hostile(atlas_path, secret)),
            ("half copied", half_copied(atlas_path)),
        ):
            replace_with(live, make)
            for _ in range(3):  # every request looks at the file again (check interval 0)
                now = answers(server.url)
                assert {url: r.status_code for url, r in now.items()} == dict.fromkeys(URLS, 200), name
                assert now["/healthz"].json()["version"] == version, name
                assert now["/api/v1/atlas"].json() == before["/api/v1/atlas"].json(), name
                assert all("server secret" not in r.text for r in now.values()), name

        def relabel(tables: dict[str, pa.Table]) -> None:
            labels = [f"rebuilt {i}" for i in range(tables["features"].num_rows)]
            index = tables["features"].column_names.index("label")
            tables["features"] = tables["features"].set_column(index, "label", pa.array(labels))

        replace_with(live, lambda path: copy_atlas(atlas_path, path, relabel))
        assert httpx.get(server.url + "/api/v1/features/3").json()["label"] == "rebuilt 3"
        assert httpx.get(server.url + "/healthz").json()["version"] != version


@pytest.fixture
def run(data_root: Path) -> RunPaths:
    """A run folder with a tiny SAE on the tiny Whisper and a synthetic 96-feature atlas."""
    run = RunPaths(data_root / "runs" / "default")
    d_model = tiny_resources().bundle.d_model
    save_sae(tiny_sae(d_model, 96, 8), run.sae, {"model_name": "tiny", "hook_name": "encoder.layer_norm"})
    write_synthetic_atlas(run.atlas, n_features=96, n_clips=6)
    return run


def test_the_live_worker_reloads_a_rebuilt_run_between_jobs(run: RunPaths) -> None:
    loads = []

    def load() -> SteeringResources:
        loads.append(run_identity(run))
        bundle = tiny_resources().bundle
        return SteeringResources(bundle, load_sae(run.sae), labels=read_labels_and_presets(run.atlas)[0])

    app = create_app(Settings(data_dir=run.root.parent.parent))
    app.state.inference = InferenceService(
        load, InferenceSettings(max_new_tokens=4), lambda: run_identity(run)
    )
    url = ""

    def timeline_labels() -> set[str]:
        body = httpx.post(url, files={"file": ("clip.wav", CLIP)}, timeout=120).json()
        return {feature["label"] for feature in body["timeline"]["features"]}

    with LiveServer(app) as server:
        url = server.url + "/api/v1/analyze"
        timeline_labels()
        timeline_labels()
        assert len(loads) == 1  # nothing changed: no reload

        save_sae(
            tiny_sae(tiny_resources().bundle.d_model, 96, 8, seed=1),
            run.sae,
            {"model_name": "tiny", "hook_name": "h"},
        )
        timeline_labels()
        assert len(loads) == 2  # a retrained SAE

        tables = read_tables(run.atlas)
        labels = pa.array([f"rebuilt {i}" for i in range(tables["features"].num_rows)])
        tables["features"] = tables["features"].set_column(
            tables["features"].column_names.index("label"), "label", labels
        )
        write_atlas(run.atlas, tables)
        relabelled = timeline_labels()
        assert len(loads) == 3 and relabelled and all(label.startswith("rebuilt ") for label in relabelled)


def test_run_identity_follows_rebuilds_not_checkpoints(run: RunPaths) -> None:
    before = run_identity(run)
    (run.sae / "checkpoint.pt").write_bytes(b"epoch 2")  # training writes checkpoints beside the SAE
    assert run_identity(run) == before
    save_sae(
        tiny_sae(tiny_resources().bundle.d_model, 96, 8, seed=2),
        run.sae,
        {"model_name": "t", "hook_name": "h"},
    )
    after_train = run_identity(run)
    assert after_train != before
    write_synthetic_atlas(run.atlas, n_features=96, n_clips=6, seed=3)
    assert run_identity(run) != after_train
