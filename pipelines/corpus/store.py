"""Turn selected candidates into FLAC files and manifest entries; swap a finished corpus folder into place.

Decoding runs in a small process pool (G.722 and Vorbis decoding are CPU-bound); a candidate that fails to
decode is skipped with a one-line reason instead of stopping the build.
"""

from __future__ import annotations

import os
import shutil
from concurrent.futures import ProcessPoolExecutor
from pathlib import Path
from typing import Callable, Sequence

import numpy as np
from rich.progress import Progress

from pipelines.audio import SAMPLE_RATE, write_flac
from pipelines.corpus.candidate import Candidate
from pipelines.corpus.manifest import MANIFEST_NAME, Clip, read_manifest, write_manifest
from pipelines.corpus.notice import write_notice
from pipelines.errors import AudioDecodeError

AUDIO_DIR = "audio"


def default_workers() -> int:
    """Decoding processes: the cores there are, at most 4 (the machine is usually shared)."""
    return max(1, min(4, os.cpu_count() or 1))


def store(
    candidates: Sequence[Candidate], folder: Path, *, workers: int | None = None, label: str = "encoding"
) -> tuple[list[Clip], list[str]]:
    """Decode each candidate into `folder/audio/<id>.flac`; return the clips (input order) and the skips."""
    (folder / AUDIO_DIR).mkdir(parents=True, exist_ok=True)
    jobs = [(c.load, folder / AUDIO_DIR / f"{c.id}.flac") for c in candidates]
    workers = workers or default_workers()
    clips: list[Clip] = []
    skipped: list[str] = []
    with Progress(transient=True) as progress:
        task = progress.add_task(label, total=len(jobs))
        if workers > 1 and len(jobs) > 8:
            with ProcessPoolExecutor(workers) as pool:
                results = pool.map(_encode, *zip(*jobs), chunksize=4)
                for candidate, result in zip(candidates, results):
                    _collect(candidate, result, clips, skipped)
                    progress.advance(task)
        else:
            for candidate, (load, target) in zip(candidates, jobs):
                _collect(candidate, _encode(load, target), clips, skipped)
                progress.advance(task)
    return clips, skipped


def append(
    folder: Path, name: str, candidates: Sequence[Candidate], *, workers: int | None = None
) -> tuple[list[Clip], list[Clip], list[str]]:
    """Add candidates to the corpus at `folder` (created if missing): (all clips, added clips, skips).

    A candidate with the same id and origin as an existing clip replaces it (re-adding a folder updates it);
    other id clashes get a numeric suffix. The manifest is rewritten atomically once every file is written.
    """
    existing = read_manifest(folder) if (folder / MANIFEST_NAME).is_file() else []
    _assign_unique_ids(candidates, existing)
    added, skipped = store(candidates, folder, workers=workers, label=f"adding to {name}")
    replaced = {c.id for c in added}
    clips = [c for c in existing if c.id not in replaced] + added
    write_manifest(folder, clips)
    write_notice(folder, name, clips)
    return clips, added, skipped


def swap_in(built: Path, target: Path) -> None:
    """Replace `target` with the finished folder `built` (two renames; the old folder is removed after)."""
    old = target.with_name(f".{target.name}.old")
    shutil.rmtree(old, ignore_errors=True)
    if target.exists():
        target.rename(old)
    built.rename(target)
    shutil.rmtree(old, ignore_errors=True)


def _assign_unique_ids(candidates: Sequence[Candidate], existing: list[Clip]) -> None:
    """Suffix ids that clash with another candidate, or with an existing clip of another origin."""
    origin_of = {c.id: c.extra.get("origin") for c in existing}
    used: set[str] = set()
    for candidate in candidates:
        origin = candidate.extra.get("origin")
        base, n = candidate.id, 1
        while candidate.id in used or (candidate.id in origin_of and origin_of[candidate.id] != origin):
            n += 1
            candidate.id = f"{base}-{n}"
        used.add(candidate.id)


def _encode(load: Callable[[], np.ndarray], target: Path) -> int | str:
    """Samples written, or the reason the audio could not be had."""
    try:
        audio = load()
    except AudioDecodeError as exc:
        return str(exc)
    if audio.size == 0:
        return f"{target.stem}: no audio"
    write_flac(target, audio)
    return int(audio.size)


def _collect(candidate: Candidate, result: int | str, clips: list[Clip], skipped: list[str]) -> None:
    if isinstance(result, str):
        skipped.append(result)
    else:
        clips.append(candidate.to_clip(f"{AUDIO_DIR}/{candidate.id}.flac", result / SAMPLE_RATE))
