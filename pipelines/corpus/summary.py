"""What a corpus holds: clips and minutes per language, category and source, and speakers per language, as an
object and a rich table (speaker counts say whether speaker-held-out splits are possible)."""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path
from typing import Iterable

from rich.console import Console
from rich.table import Table

from pipelines.corpus.manifest import SPEECH, Clip


@dataclass
class Tally:
    clips: int = 0
    seconds: float = 0.0
    speakers: set[str] = field(default_factory=set)
    """Speaker ids of the speech clips counted (empty where none is known)."""

    @property
    def minutes(self) -> float:
        return self.seconds / 60


@dataclass
class CorpusSummary:
    """Composition of one corpus (returned by `corpus build`, `add-folder` and `info`)."""

    name: str
    folder: Path
    total: Tally
    by_language: dict[str, Tally]
    """Speech clips and their speakers per language (`?` where unknown)."""
    by_category: dict[str, Tally]
    by_source: dict[str, Tally]
    bytes_on_disk: int
    timings: dict[str, float] = field(default_factory=dict)
    """Seconds per build step (`fetch`, `select`, `encode`, `total`), when built."""
    skipped: list[str] = field(default_factory=list)
    """One line per file or candidate left out, with the reason."""
    added: int = 0
    """Clips added by `add-folder`/`add-hf` in this call."""


def summarize(name: str, folder: Path, clips: Iterable[Clip]) -> CorpusSummary:
    total = Tally()
    by_language: dict[str, Tally] = {}
    by_category: dict[str, Tally] = {}
    by_source: dict[str, Tally] = {}
    for clip in clips:
        tallies = [
            total,
            by_category.setdefault(clip.category, Tally()),
            by_source.setdefault(clip.source, Tally()),
        ]
        if clip.category == SPEECH:
            tallies.append(by_language.setdefault(clip.language or "?", Tally()))
        for tally in tallies:
            tally.clips += 1
            tally.seconds += clip.duration
            if clip.category == SPEECH and clip.speaker:
                tally.speakers.add(clip.speaker)
    size = sum(p.stat().st_size for p in folder.rglob("*") if p.is_file()) if folder.is_dir() else 0
    return CorpusSummary(
        name=name,
        folder=folder,
        total=total,
        by_language=dict(sorted(by_language.items())),
        by_category=dict(sorted(by_category.items())),
        by_source=dict(sorted(by_source.items())),
        bytes_on_disk=size,
    )


def render(summary: CorpusSummary, console: Console | None = None) -> None:
    """Print the composition table (speech by language with its speakers, then every category) and totals."""
    console = console or Console()
    table = Table(title=f"corpus `{summary.name}`: {summary.folder}")
    table.add_column("group")
    table.add_column("name")
    table.add_column("clips", justify="right")
    table.add_column("minutes", justify="right")
    table.add_column("speakers", justify="right")
    for section, tallies in (("language", summary.by_language), ("category", summary.by_category)):
        for key, tally in tallies.items():
            table.add_row(section, key, str(tally.clips), f"{tally.minutes:.1f}", _speakers(tally))
        table.add_section()
    total = summary.total
    table.add_row("total", "", str(total.clips), f"{total.minutes:.1f}", _speakers(total))
    console.print(table)
    line = f"{summary.bytes_on_disk / 1e6:.1f} MB on disk"
    if summary.timings:
        line += "; " + ", ".join(f"{step} {seconds:.1f} s" for step, seconds in summary.timings.items())
    console.print(line)
    if summary.skipped:
        console.print(f"[yellow]{len(summary.skipped)} skipped[/yellow]")


def _speakers(tally: Tally) -> str:
    return str(len(tally.speakers)) if tally.speakers else ""
