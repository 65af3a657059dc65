"""`corpus add-folder` and `corpus info`: good files stored, bad ones skipped with a reason, ids kept safe."""

from __future__ import annotations

import re
from pathlib import Path

import numpy as np
import pytest
from typer.testing import CliRunner

from pipelines.audio import SAMPLE_RATE, decode_audio
from pipelines.cli import app
from pipelines.corpus import folder as folder_module
from pipelines.corpus.folder import add_folder
from pipelines.corpus.manifest import read_manifest
from pipelines.errors import AtlasError
from pipelines.paths import corpus_dir
from tests.fixtures import hostile_audio
from tests.fixtures.audio import encode_tone, video_only
from tests.fixtures.hostile_audio import faulty_workers

SAFE_ID = re.compile(r"[A-Za-z0-9._-]+")
HOSTILE = [
    "my clip (1).wav",
    "Привет мир.mp3",
    "<script>alert(1)<script>.flac",
    "-rf;rm.ogg",
    "weird..name..webm",
]


def _mixed_folder(root: Path) -> tuple[Path, int, int]:
    """A folder with good audio under hostile names, broken files and a hidden file: (folder, good, bad)."""
    folder = root / "incoming"
    (folder / "sub dir").mkdir(parents=True)
    for name in HOSTILE:
        encode_tone(folder / name, 1.0)
    encode_tone(folder / "sub dir" / "nested.m4a", 1.5)
    whole = encode_tone(root / "whole.flac", 3.0).read_bytes()
    (folder / "truncated.flac").write_bytes(whole[: len(whole) // 2])
    (folder / "empty.wav").write_bytes(b"")
    (folder / "notes.wav").write_text("not audio at all\n" * 10)
    (folder / "README.txt").write_text("hello")
    (folder / "noise.bin").write_bytes(np.random.default_rng(1).bytes(3000))
    video_only(folder / "video.mkv")
    encode_tone(folder / ".hidden.wav", 1.0)
    return folder, len(HOSTILE) + 1, 6


def test_add_folder_stores_good_files_and_skips_bad_ones(data_root: Path, tmp_path: Path) -> None:
    folder, good, bad = _mixed_folder(tmp_path)
    summary = add_folder(folder, "mine", workers=1)
    assert summary.added == good and len(summary.skipped) == bad
    assert all("\n" not in reason for reason in summary.skipped)
    clips = read_manifest(corpus_dir("mine"))
    assert len(clips) == good and len({c.id for c in clips}) == good
    for clip in clips:
        assert SAFE_ID.fullmatch(clip.id), clip.id
        assert clip.extra["added"] == "folder" and clip.source == "folder-incoming"
        audio = decode_audio(corpus_dir("mine") / clip.path)
        assert audio.size / SAMPLE_RATE == pytest.approx(clip.duration, abs=1e-3)
    nested = next(c for c in clips if "nested" in c.id)
    assert nested.duration == pytest.approx(1.5, abs=0.1)
    assert (corpus_dir("mine") / "NOTICE").read_text().count("folder-incoming") == 1


def test_re_adding_replaces_and_other_folders_get_unique_ids(data_root: Path, tmp_path: Path) -> None:
    folder, good, _ = _mixed_folder(tmp_path)
    add_folder(folder, "mine", workers=1)
    assert add_folder(folder, "mine", workers=1).total.clips == good  # same files: replaced, not duplicated
    other = tmp_path / "other" / "incoming"
    other.mkdir(parents=True)
    encode_tone(other / "my clip (1).wav", 2.0)
    summary = add_folder(other, "mine", workers=1)
    ids = [c.id for c in read_manifest(corpus_dir("mine"))]
    assert summary.total.clips == good + 1 and len(set(ids)) == len(ids)


def test_csv_manifest_sets_metadata_and_rejects_bad_rows(data_root: Path, tmp_path: Path) -> None:
    folder = tmp_path / "set"
    folder.mkdir()
    encode_tone(folder / "a.wav", 1.0)
    encode_tone(folder / "b.ogg", 1.0)
    encode_tone(tmp_path / "outside.wav", 1.0)
    csv = tmp_path / "meta.csv"
    csv.write_text(
        "path,language,transcript,category,speaker\n"
        "a.wav,pt-BR,  Olá   mundo ,,ana\n"
        "b.ogg,,,music,\n"
        "missing.wav,en,hello,,\n"
        "../outside.wav,en,escape,,\n"
        "a.wav,en,bad category,shouting,\n",
        encoding="utf-8",
    )
    summary = add_folder(folder, "meta", csv, workers=1)
    assert summary.added == 2
    assert [r.split(":")[0] for r in summary.skipped] == [
        "meta.csv line 4",
        "meta.csv line 5",
        "meta.csv line 6",
    ]
    a, b = sorted(read_manifest(corpus_dir("meta")), key=lambda c: c.id)
    assert (a.language, a.transcript, a.category, a.speaker) == ("pt", "Olá mundo", "speech", "ana")
    assert (b.language, b.category) == ("", "music")

    csv.write_text("file,language\na.wav,en\n")
    with pytest.raises(AtlasError, match="no `path` column"):
        add_folder(folder, "meta", csv)


def test_cli_add_folder_and_info(data_root: Path, tmp_path: Path) -> None:
    folder, good, bad = _mixed_folder(tmp_path)
    runner = CliRunner()
    result = runner.invoke(app, ["corpus", "add-folder", str(folder), "--corpus", "cli", "--workers", "1"])
    assert result.exit_code == 0, result.output
    assert f"added {good} clips, skipped {bad}" in result.output
    info = runner.invoke(app, ["corpus", "info", "--corpus", "cli"])
    assert info.exit_code == 0 and "speech" in info.output
    missing = runner.invoke(app, ["corpus", "add-folder", str(tmp_path / "nope")])
    assert missing.exit_code == 1 and "error:" in missing.output
    assert runner.invoke(app, ["corpus", "info", "--corpus", "none"]).exit_code == 1


@pytest.mark.parametrize("workers", [1, 2])
def test_cli_add_folder_skips_files_that_crash_or_hang_the_decoder(
    data_root: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch, workers: int
) -> None:
    """A file that crashes or hangs the decoder costs a line in the skips, not the run (it was exit 139)."""
    folder = tmp_path / "risky"
    folder.mkdir()
    for i in range(8):  # more than 8 files: with 2 workers the corpus store decodes in a process pool
        encode_tone(folder / f"good-{i}.wav", 1.0)
    hostile_audio.std_wav(folder / "eight-channels.wav", 8, 44100, 0.5)  # crashed PyAV
    hostile_audio.encoded(folder / "surround.webm", "webm", "libopus", 48000, "7.1")  # crashed PyAV
    hostile_audio.std_wav(folder / "crash.wav", 1, 16000, 1.0)
    hostile_audio.std_wav(folder / "hang.wav", 1, 16000, 1.0)
    (folder / "stream.sdp").write_text("v=0\nc=IN IP4 127.0.0.1\nm=audio 5004 RTP/AVP 0\n")
    monkeypatch.setattr(folder_module, "DECODE_TIMEOUT_S", 3.0)
    command = ["corpus", "add-folder", str(folder), "--corpus", "risky", "--workers", str(workers)]
    with faulty_workers(tmp_path / "faulty"):
        result = CliRunner().invoke(app, command)
    assert result.exit_code == 0, result.output
    output = " ".join(result.output.split())
    assert "added 10 clips, skipped 3" in output
    assert "skipped crash.wav: the decoder crashed on this file (killed by SIGSEGV)" in output
    assert "skipped hang.wav: decoding took longer than 3 s (stopped)" in output
    assert "skipped stream.sdp: not an accepted audio format" in output
    assert len(read_manifest(corpus_dir("risky"))) == 10
