"""`--engine ray` on a real local Ray cluster (2 CPUs, one per module): extraction writes the local engine's
shards and meta.json, resumes the same way after an interruption, joins a running cluster from the CLI, and
the analysis's transcription on Ray actors gives the local analysis, file for file.

Equality is exact: each Ray row is a whole chunk that `encode_chunk` batches as the local engine does, and
the analysis sends the local engine's own transcription batches, so no float is summed in another order.
"""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest

from pipelines.activations import read_meta
from pipelines.audio import write_flac
from pipelines.corpus.manifest import Clip, write_manifest
from pipelines.engines.cluster import RayConfig, ray_session
from pipelines.engines.ray_extract import RayExtraction
from pipelines.extract import ExtractReport, extract
from pipelines.paths import RunPaths
from tests.fixtures.tiny_whisper import tiny_whisper

pytestmark = [pytest.mark.ray, pytest.mark.filterwarnings("ignore::DeprecationWarning:ray.data.context")]

SR = 16000
CLUSTER = RayConfig(num_cpus=2)
SHARD_FRAMES = 300
"""Small shards, so a run has several chunks and both actors get work."""


@pytest.fixture(scope="module")
def cluster():
    import ray

    with ray_session(CLUSTER):
        yield ray.get_runtime_context().gcs_address


@pytest.fixture(scope="module")
def tiny():
    return tiny_whisper()


def tone(seconds: float, seed: int) -> np.ndarray:
    rng = np.random.default_rng(seed)
    t = np.arange(int(seconds * SR)) / SR
    return (0.3 * np.sin(2 * np.pi * (140 + 50 * seed) * t) + 0.02 * rng.standard_normal(t.size)).astype(
        np.float32
    )


def make_corpus(folder: Path) -> list[Clip]:
    """Joined recordings (two speakers, a reel of noises), a clip over 30 s, a speaker-less clip and a file
    that does not decode."""
    specs = [
        (1.3, "speech", "a", "en"),
        (0.45, "speech", "a", "en"),
        (2.0, "speech", "a", "en"),
        (31.0, "speech", "", "en"),
        (0.8, "noise", "", ""),
        (1.1, "noise", "", ""),
        (3.0, "speech", "b", "fr"),
        (2.5, "speech", "b", "fr"),
        (1.7, "speech", "", "es"),
        (1.0, "speech", "b", "fr"),
    ]
    clips = []
    for i, (seconds, category, speaker, language) in enumerate(specs):
        path = f"audio/c{i}.flac"
        write_flac(folder / path, tone(seconds, i))
        clips.append(
            Clip(
                id=f"c{i}",
                path=path,
                duration=seconds,
                category=category,
                speaker=speaker,
                language=language,
                source="synthetic",
            )
        )
    (folder / clips[-1].path).write_bytes(b"not audio at all")
    write_manifest(folder, clips)
    return clips


@pytest.fixture
def corpus(data_root: Path) -> Path:
    folder = data_root / "corpora" / "mixed"
    make_corpus(folder)
    return folder


def shard_files(run: RunPaths) -> dict[str, np.ndarray]:
    return {p.name: np.load(p) for p in sorted(run.activations.glob("shard_*.npy"))}


def assert_same_activations(a: RunPaths, b: RunPaths) -> None:
    """The same shards, array for array and bit for bit, and the same meta.json."""
    files_a, files_b = shard_files(a), shard_files(b)
    assert list(files_a) == list(files_b) and len(files_a) > 5
    for name in files_a:
        assert files_a[name].dtype == files_b[name].dtype, name
        np.testing.assert_array_equal(files_a[name], files_b[name], err_msg=name)
    assert read_meta(a.activations) == read_meta(b.activations)


def counts(report: ExtractReport) -> tuple:
    return report.clips_done, report.clips_skipped, report.frames, report.windows, report.failed


@pytest.mark.parametrize("window", ["recording", "packed"])
def test_ray_extraction_writes_the_local_engines_shards(cluster, tiny, corpus, data_root, window) -> None:
    local, ray_run = RunPaths.named(f"local-{window}"), RunPaths.named(f"ray-{window}")
    expected = extract(corpus, local, tiny, None, 2, window, shard_frames=SHARD_FRAMES)
    engine = RayExtraction(tiny_whisper, CLUSTER)
    report = extract(corpus, ray_run, tiny, None, 2, window, shard_frames=SHARD_FRAMES, engine=engine)
    assert counts(report) == counts(expected)
    assert len(report.failed) == 1 and report.failed[0].startswith("c9: ")
    assert_same_activations(local, ray_run)
    assert read_meta(ray_run.activations).decodable == (window == "recording")


def test_interrupted_ray_run_resumes_at_the_next_unfinished_recording(
    cluster, tiny, corpus, data_root
) -> None:
    full, resumed = RunPaths.named("full"), RunPaths.named("resumed")
    extract(corpus, full, tiny, None, 2, "recording", shard_frames=SHARD_FRAMES)
    engine = RayExtraction(tiny_whisper, CLUSTER)

    def interrupt(finished: int, total: int) -> None:
        raise KeyboardInterrupt  # what Ctrl-C raises in the driver while the cluster is encoding

    with pytest.raises(KeyboardInterrupt):
        extract(
            corpus, resumed, tiny, None, 2, shard_frames=SHARD_FRAMES, on_progress=interrupt, engine=engine
        )
    first = read_meta(resumed.activations)
    assert first is not None and len(first.shards) == 1  # only the finished shard is listed
    again = extract(corpus, resumed, tiny, None, 2, shard_frames=SHARD_FRAMES, engine=engine)
    assert not again.restarted and again.clips_skipped == len(first.shards[0].clip_rows)
    assert again.clips_done == 9 - again.clips_skipped  # every decodable clip once, over both runs
    assert_same_activations(full, resumed)


def test_cli_joins_a_running_cluster(cluster, tiny, corpus, data_root, tmp_path) -> None:
    """`whisper-atlas extract --engine ray --address` from another process, on a model folder that every
    actor loads itself, equals the local engine."""
    from pipelines.model.loader import load_whisper

    folder = tmp_path / "tiny-model"
    tiny.model.save_pretrained(folder)
    tiny.processor.save_pretrained(folder)
    local = RunPaths.named("cli-local")
    extract(corpus, local, load_whisper(str(folder), device="cpu"), None, None, "recording")
    command = [sys.executable, "-m", "pipelines.cli", "extract", "--corpus", "mixed", "--model", str(folder)]
    done = run_cli([*command, "--run", "cli-ray", "--engine", "ray", "--address", cluster], data_root)
    assert done.returncode == 0, done.stderr
    assert "9 clips encoded" in done.stdout and "skipped c9: " in done.stdout
    files_a, files_b = shard_files(local), shard_files(RunPaths.named("cli-ray"))
    assert list(files_a) == list(files_b)
    for name in files_a:
        np.testing.assert_array_equal(files_a[name], files_b[name], err_msg=name)


def test_unreachable_address_is_one_line(data_root) -> None:
    command = [
        sys.executable,
        "-m",
        "pipelines.cli",
        "extract",
        "--engine",
        "ray",
        "--address",
        "127.0.0.1:9",
    ]
    done = run_cli(command, data_root)
    assert done.returncode == 1
    assert done.stderr.startswith("error: cannot reach the Ray cluster at 127.0.0.1:9")
    assert len(done.stderr.strip().splitlines()) == 1 and "Traceback" not in done.stderr


def test_ray_options_need_the_ray_engine(data_root) -> None:
    from typer.testing import CliRunner

    from pipelines.cli import app

    result = CliRunner().invoke(app, ["extract", "--address", "127.0.0.1:6379", "--workers", "2"])
    assert result.exit_code == 1
    assert "--address, --workers only apply to --engine ray" in result.output


def run_cli(command: list[str], data_root: Path) -> subprocess.CompletedProcess:
    import os

    env = {**os.environ, "WHISPER_ATLAS_DATA": str(data_root), "COLUMNS": "200"}
    return subprocess.run(command, capture_output=True, text=True, env=env, timeout=300)


# --- the analysis ----------------------------------------------------------------------------------------


def test_ray_transcription_gives_the_local_analysis(cluster, tiny, data_root) -> None:
    import shutil

    from pipelines.analysis.analyze import analyze
    from pipelines.analysis.config import AnalysisConfig
    from pipelines.engines.ray_transcribe import RayTranscription
    from pipelines.sae.saelens import load_sae, save_sae
    from tests.fixtures.tiny_sae import tiny_sae

    corpus = data_root / "corpora" / "speech"
    specs = [
        ("en", "one two three"),
        ("en", ""),
        ("fr", "un deux"),
        ("fr", ""),
        ("es", "uno"),
        ("en", "four"),
    ]
    specs += [("es", ""), ("fr", "trois"), ("en", "five six"), ("es", "dos tres")]
    clips = []
    for i, (language, transcript) in enumerate(specs):
        write_flac(corpus / f"audio/s{i}.flac", tone(0.9 + 0.2 * i, i))
        clips.append(
            Clip(
                id=f"s{i}",
                path=f"audio/s{i}.flac",
                duration=0.9 + 0.2 * i,
                language=language,
                transcript=transcript,
            )
        )
    write_manifest(corpus, clips)
    local, ray_run = RunPaths.named("an-local"), RunPaths.named("an-ray")
    extract(corpus, local, tiny, None, 2, "solo")  # a window per clip: several batches per language
    meta = {"model_name": tiny.name, "hook_name": "encoder.layer_norm"}
    save_sae(tiny_sae(tiny.d_model, 32, k=4, seed=1), local.sae, meta)
    split = {"train": [0, 2, 4, 6, 8], "speaker": [], "group": [1, 3, 5, 7, 9], "unused": []}
    (local.sae / "metrics.json").write_text(json.dumps({"fvu": 0.1, "l0": 4.0, "split": split}))
    for folder in ("activations", "sae"):
        shutil.copytree(local.root / folder, ray_run.root / folder)
    cfg = AnalysisConfig(
        top_k=2, quantile_bins=2, quantile_per_bin=1, window_frames=11, chunk_frames=200, max_new_tokens=4
    )
    sae = load_sae(local.sae)
    analyze(local, corpus, tiny, sae, cfg)
    transcribe = RayTranscription(tiny_whisper, CLUSTER, cfg)
    analyze(ray_run, corpus, tiny, sae, cfg, transcribe)
    assert transcribe.actors == 2 and transcribe.batches == 3  # 4 en, 3 fr, 3 es windows: a batch each
    names = sorted(p.name for p in local.analysis.iterdir())
    assert names == sorted(p.name for p in ray_run.analysis.iterdir()) and "text.json" in names
    for name in names:
        a, b = local.analysis / name, ray_run.analysis / name
        if name.endswith(".npz"):
            with np.load(a) as x, np.load(b) as y:
                assert sorted(x.files) == sorted(y.files), name
                for key in x.files:
                    np.testing.assert_array_equal(x[key], y[key], err_msg=f"{name}:{key}")
        else:
            x, y = json.loads(a.read_text()), json.loads(b.read_text())
            if name == "meta.json":
                x.pop("timings"), y.pop("timings")
            assert x == y, name
    words = {
        entry["key"]: [w for w, _, _ in entry["words"]]
        for entry in json.loads((ray_run.analysis / "text.json").read_text())["clips"]
    }
    for clip in clips:  # references forced-aligned on the actors (the random model's own words elsewhere)
        if clip.transcript:
            assert words[clip.id] == clip.transcript.split()
