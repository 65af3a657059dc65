"""Add a folder of the user's own audio to a corpus, optionally described by a CSV manifest.

Every file (or every file the CSV lists) is decoded in a worker process (`pipelines.audio_sandbox`); files
that are empty, truncated or not audio, or that crash or hang the decoder, are skipped with a one-line reason,
and the corpus manifest is only rewritten (atomically) once all good files are stored. Clip ids come from the
file paths, made URL-safe and unique.
"""

from __future__ import annotations

import csv
import time
from functools import partial
from pathlib import Path

from pipelines.audio_sandbox import decode_file_isolated
from pipelines.corpus.candidate import ADDED_KEY, Candidate, language_code, slug
from pipelines.corpus.manifest import CATEGORIES, SPEECH
from pipelines.corpus.store import append
from pipelines.corpus.summary import CorpusSummary, summarize
from pipelines.errors import AtlasError
from pipelines.paths import DEFAULT_CORPUS, corpus_dir

MAX_SECONDS = 600.0
"""Only the first 10 minutes of a file are kept (Whisper reads 30 s windows)."""

DECODE_TIMEOUT_S = 120.0
"""A file whose decoding takes longer is skipped (10 minutes of audio decode in a few seconds)."""


def add_folder(
    folder: Path, corpus: str = DEFAULT_CORPUS, manifest: Path | None = None, *, workers: int | None = None
) -> CorpusSummary:
    """Decode the audio under `folder` into the corpus `corpus`; returns its summary (with the skips)."""
    folder = Path(folder)
    if not folder.is_dir():
        raise AtlasError(f"{folder} is not a folder: give the folder holding your audio files")
    start = time.perf_counter()
    candidates, skipped = folder_candidates(folder, manifest)
    if not candidates and not skipped:
        raise AtlasError(f"{folder} holds no files to add")
    target = corpus_dir(corpus)
    clips, added, failed = append(target, corpus, candidates, workers=workers)
    summary = summarize(corpus, target, clips)
    summary.skipped = skipped + failed
    summary.added = len(added)
    summary.timings = {"total": time.perf_counter() - start}
    return summary


def folder_candidates(folder: Path, manifest: Path | None = None) -> tuple[list[Candidate], list[str]]:
    """One candidate per file (hidden files aside), or per CSV row; rows that cannot be used are skipped."""
    source = slug("folder", folder.resolve().name)
    if manifest is None:
        rows = [
            {"path": p.relative_to(folder).as_posix()}
            for p in sorted(folder.rglob("*"))
            if _visible(p, folder)
        ]
        return [_candidate(folder, source, row) for row in rows], []
    candidates, skipped = [], []
    for line, row in enumerate(_read_csv(manifest), start=2):
        reason = _check_row(folder, row)
        if reason:
            skipped.append(f"{manifest.name} line {line}: {reason}")
        else:
            candidates.append(_candidate(folder, source, row))
    return candidates, skipped


def _candidate(folder: Path, source: str, row: dict[str, str]) -> Candidate:
    relative = row["path"].strip()
    category = (row.get("category") or "").strip() or SPEECH
    return Candidate(
        id=slug("user", Path(relative).with_suffix("").as_posix()),
        load=partial(
            decode_file_isolated, folder / relative, max_seconds=MAX_SECONDS, timeout_s=DECODE_TIMEOUT_S
        ),
        seconds=0.0,
        category=category,
        source=source,
        licence=(row.get("licence") or "").strip(),
        language=language_code(row.get("language") or "") if category == SPEECH else "",
        transcript=" ".join((row.get("transcript") or "").split()),
        group=(row.get("group") or "").strip(),
        speaker=(row.get("speaker") or "").strip(),
        extra={ADDED_KEY: "folder", "origin": (folder.resolve() / relative).as_posix()},
    )


def _read_csv(manifest: Path) -> list[dict[str, str]]:
    try:
        with open(manifest, newline="", encoding="utf-8-sig") as f:
            reader = csv.DictReader(f)
            columns = [c.strip().lower() for c in reader.fieldnames or []]
            if "path" not in columns:
                raise AtlasError(
                    f"{manifest.name} has no `path` column: add a header row `path,language,transcript`"
                )
            return [{k.strip().lower(): v or "" for k, v in row.items() if k} for row in reader]
    except (OSError, UnicodeDecodeError, csv.Error) as exc:
        raise AtlasError(f"cannot read the manifest {manifest}: {exc}") from exc


def _check_row(folder: Path, row: dict[str, str]) -> str:
    """Why a CSV row cannot be used ('' when it can)."""
    relative = (row.get("path") or "").strip()
    if not relative:
        return "empty path"
    path = (folder / relative).resolve()
    if not path.is_relative_to(folder.resolve()):
        return f"{relative}: outside {folder}"
    if not path.is_file():
        return f"{relative}: no such file"
    category = (row.get("category") or "").strip()
    if category and category not in CATEGORIES:
        return f"{relative}: unknown category {category!r} (use one of {', '.join(CATEGORIES)})"
    return ""


def _visible(path: Path, root: Path) -> bool:
    return path.is_file() and not any(part.startswith(".") for part in path.relative_to(root).parts)
