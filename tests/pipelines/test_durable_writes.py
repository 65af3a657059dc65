"""Crash-safe writes (pipelines/durable.py) in the real writers: the atlas file and the SAE folder reach the
disk before they are renamed into place, the SAE's weights and config are swapped in as one folder (a reader
never sees a mix), and leftovers of crashed writers are removed by the next write. Also `corpus add-hf`'s
decoding in worker processes."""

from __future__ import annotations

import os
import subprocess
import sys
import threading
from pathlib import Path

import numpy as np
import pyarrow as pa
import pytest

from pipelines import durable
from pipelines.atlas.reader import AtlasReader
from pipelines.atlas.writer import write_atlas
from pipelines.corpus.hf import decode_isolated
from pipelines.errors import AudioDecodeError
from pipelines.sae.saelens import CFG_NAME, WEIGHTS_NAME, load_sae, save_sae
from tests.fixtures.audio import audio_bytes, speechlike
from tests.fixtures.hostile_audio import faulty_workers
from tests.fixtures.tiny_sae import tiny_sae

METADATA = {"model_name": "tiny", "hook_name": "encoder.layer_norm"}


def dead_pid() -> int:
    """The pid of a process that has ended (a crashed writer)."""
    process = subprocess.Popen([sys.executable, "-c", "pass"])
    process.wait()
    return process.pid


def record_syncs(monkeypatch: pytest.MonkeyPatch) -> list[tuple[str, str]]:
    """Log ("fsync", path) and ("replace"/"rename", target) in call order."""
    events: list[tuple[str, str]] = []
    fsync, replace, rename = os.fsync, os.replace, os.rename

    def logged_fsync(fd: int) -> None:
        events.append(("fsync", os.readlink(f"/proc/self/fd/{fd}")))
        fsync(fd)

    def logged(kind, real):
        def move(src, dst, *args, **kwargs):
            events.append((kind, str(dst)))
            return real(src, dst, *args, **kwargs)

        return move

    monkeypatch.setattr(durable.os, "fsync", logged_fsync)
    monkeypatch.setattr(durable.os, "replace", logged("replace", replace))
    monkeypatch.setattr(durable.os, "rename", logged("rename", rename))
    return events


@pytest.mark.skipif(not sys.platform.startswith("linux"), reason="reads /proc/self/fd")
def test_the_atlas_is_synced_before_and_after_its_rename(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    atlas = tmp_path / "atlas.duckdb"
    events = record_syncs(monkeypatch)
    write_atlas(atlas, {})
    building = str(durable.sibling(atlas, "building"))
    assert events == [("fsync", building), ("replace", str(atlas)), ("fsync", str(tmp_path))]


def test_the_next_build_removes_crashed_builds_leftovers(tmp_path: Path) -> None:
    atlas = tmp_path / "atlas.duckdb"
    crashed = [
        tmp_path / f"atlas.duckdb.building-{dead_pid()}",
        tmp_path / "atlas.duckdb.building-999999999.wal",
    ]
    running = tmp_path / f"atlas.duckdb.building-{os.getppid()}"  # a build still running elsewhere
    for path in (*crashed, running):
        path.write_bytes(b"partial")
    (tmp_path / "atlas.duckdb.notes").write_text("not ours")
    write_atlas(atlas, {"run": pa.table({"key": ["model"], "value": ['"tiny"']})})  # values are JSON
    assert not any(path.exists() for path in crashed) and running.exists()
    assert (tmp_path / "atlas.duckdb.notes").exists()
    with AtlasReader.open(atlas) as reader:
        assert reader.run_metadata()["model"] == "tiny"


def test_the_sae_folder_is_swapped_in_whole(tmp_path: Path) -> None:
    folder = tmp_path / "sae"
    save_sae(tiny_sae(16, 32, 4), folder, METADATA)
    first = folder.stat().st_ino
    (folder / "checkpoint.pt").write_bytes(b"training state")
    (folder / "cfg.json.tmp").write_text("left by an old, crashed save")
    leftover = tmp_path / f"sae.tmp-{dead_pid()}"
    leftover.mkdir()
    (leftover / WEIGHTS_NAME).write_bytes(b"half")
    save_sae(tiny_sae(16, 48, 4), folder, METADATA, {"metrics.json": '{"fvu": 0.1}'})
    assert folder.stat().st_ino != first  # a new folder, not files replaced one by one
    assert sorted(p.name for p in folder.iterdir()) == sorted(
        [CFG_NAME, WEIGHTS_NAME, "checkpoint.pt", "metrics.json"]
    )
    assert (folder / "checkpoint.pt").read_bytes() == b"training state"
    assert load_sae(folder).d_sae == 48
    assert sorted(p.name for p in tmp_path.iterdir()) == ["sae"]  # no leftovers, no old folder


def test_a_reader_never_sees_weights_and_config_of_different_saes(tmp_path: Path) -> None:
    """Two SAEs of different widths saved in turn while another thread loads: a mix would not load."""
    folder = tmp_path / "sae"
    saes = [tiny_sae(16, 32, 4), tiny_sae(16, 64, 4)]
    save_sae(saes[0], folder, METADATA)
    errors: list[Exception] = []
    widths: set[int] = set()
    done = threading.Event()

    def read() -> None:
        while not done.is_set():
            try:
                widths.add(load_sae(folder).d_sae)
            except Exception as exc:  # noqa: BLE001 - collected for the assertion
                errors.append(exc)

    reader = threading.Thread(target=read)
    reader.start()
    for i in range(40):
        save_sae(saes[i % 2], folder, METADATA)
    done.set()
    reader.join()
    assert not errors, errors[:3]
    assert widths <= {32, 64}


def test_a_folder_swap_works_where_the_kernel_cannot_exchange(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setattr(durable, "_exchange", lambda a, b: False)
    folder = tmp_path / "sae"
    save_sae(tiny_sae(16, 32, 4), folder, METADATA)
    save_sae(tiny_sae(16, 40, 4), folder, METADATA)
    assert load_sae(folder).d_sae == 40 and sorted(p.name for p in tmp_path.iterdir()) == ["sae"]


def test_add_hf_decodes_dataset_bytes_in_a_worker(tmp_path: Path) -> None:
    audio = decode_isolated(audio_bytes(speechlike(1.0), "flac"), "hf-set-row-1")
    assert audio.dtype == np.float32 and abs(audio.size - 16000) < 400
    with pytest.raises(AudioDecodeError, match="hf-set-row-2: not a readable audio file"):
        decode_isolated(b"not audio at all " * 50, "hf-set-row-2")
    with faulty_workers(tmp_path / "faults"):
        with pytest.raises(AudioDecodeError, match="crash-row: the decoder crashed"):
            decode_isolated(audio_bytes(speechlike(1.0)), "crash-row")
