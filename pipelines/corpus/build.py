"""Build the default multilingual corpus from real audio in Debian packages, offline and deterministically.

Composition (sources in pipelines/corpus/debian.py, credited in the corpus NOTICE): Asterisk prompts as
parallel sentences in en/es/fr/it/ru, with the second es/fr/it voices' takes of the chosen prompts; Fish
Fillets voices in cs/nl (parallel pairs, plus lines of the side characters); real music, effects and
laughter; and synthesized noise, tones and silence. Every speech clip names its speaker.
Every clip is decoded once to 16 kHz mono FLAC. The build writes a new folder and swaps it in, so readers see
the old corpus or the new one, never a mix; clips added with `add-folder`/`add-hf` are carried over.
"""

from __future__ import annotations

import json
import shutil
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Literal

from pipelines.corpus import asterisk, asterisk_voices, fillets, nonspeech, synth
from pipelines.corpus.candidate import ADDED_KEY, Candidate, parallel, shuffled, spread
from pipelines.corpus.debian import ensure_packages
from pipelines.corpus.manifest import MANIFEST_NAME, Clip, read_manifest, write_manifest
from pipelines.corpus.notice import copy_copyright_files, write_notice
from pipelines.corpus.store import store, swap_in
from pipelines.corpus.summary import CorpusSummary, summarize
from pipelines.errors import AtlasError
from pipelines.paths import DEFAULT_CORPUS, corpus_dir

Size = Literal["small", "default", "large"]

BUILD_INFO = "build.json"
"""How the corpus was built (`size`, `seed`, `builder`), next to its manifest."""

BUILDER_VERSION = 2
"""Bumped whenever the same size and seed would select or encode different clips."""

SYNTH_VARIANTS = 10
"""Synthesized clips per recipe in the pool every size draws from (so smaller sizes are subsets)."""


@dataclass(frozen=True)
class CorpusSize:
    """How much of each source a build takes; None takes everything."""

    parallel_groups: int | None
    """Asterisk sentences, each in all five languages and in the second voices that have it; None: every
    prompt of every voice."""
    min_group_seconds: float
    """Shortest recording allowed in a chosen group or solo line (short prompts like "Goodbye" say little)."""
    fillets_pairs: int | None
    """Fish Fillets lines voiced in both Czech and Dutch; None: every line of both languages."""
    fillets_solos: int | None
    """Fish Fillets lines voiced in one language only, spread over their speakers (most side characters
    speak only these); None: all of them."""
    nonspeech: dict[str, int | None]
    """Clips per non-speech category (music, effects, laughter, noise, tones, silence)."""

    def __post_init__(self) -> None:
        unknown = set(self.nonspeech) - set(NONSPEECH_SOURCES) - set(synth.RECIPES)
        if unknown:
            raise ValueError(f"unknown non-speech categories {sorted(unknown)}")

    def packages(self) -> list[str]:
        names = asterisk.packages() + asterisk_voices.packages() + fillets.packages()
        for category, spec in NONSPEECH_SOURCES.items():
            if self.nonspeech.get(category) != 0:
                names += nonspeech.packages(spec)
        return list(dict.fromkeys(names))


NONSPEECH_SOURCES = {"music": nonspeech.MUSIC, "effects": nonspeech.EFFECTS, "laughter": nonspeech.LAUGHTER}
NONSPEECH_LISTERS = {"music": nonspeech.music, "effects": nonspeech.effects, "laughter": nonspeech.laughter}

SIZES: dict[str, CorpusSize] = {
    "small": CorpusSize(
        8, 1.5, 5, 3, {"music": 2, "effects": 3, "laughter": 0, "noise": 2, "tones": 3, "silence": 1}
    ),
    "default": CorpusSize(
        60, 1.5, 90, 40, {"music": 14, "effects": 20, "laughter": 10, "noise": 10, "tones": 12, "silence": 4}
    ),
    "large": CorpusSize(
        None, 0.0, None, None, dict.fromkeys(("music", "effects", "laughter", "noise", "tones", "silence"))
    ),
}
"""`small`: ~80 clips (~8 min) for tests; `default`: ~730 clips (~56 min) for the demo; `large`: all."""

PACKAGE_MEMBERS = {"fillets-ng-data": fillets.PACKAGE_MEMBERS, "hedgewars-data": nonspeech.HEDGEWARS_MEMBERS}


def build_corpus(
    name: str = DEFAULT_CORPUS, size: Size = "default", *, seed: int = 0, workers: int | None = None
) -> CorpusSummary:
    """Fetch the sources, select clips, encode them and swap the new corpus into `data/corpora/<name>/`."""
    if size not in SIZES:
        raise AtlasError(f"unknown corpus size {size!r}: choose one of {', '.join(SIZES)}")
    spec = SIZES[size]
    timings = {}
    start = time.perf_counter()
    folders = ensure_packages(spec.packages(), PACKAGE_MEMBERS)
    timings["fetch"] = time.perf_counter() - start
    candidates = select(folders, spec, seed)
    timings["select"] = time.perf_counter() - start - timings["fetch"]

    target = corpus_dir(name)
    building = target.with_name(f".{name}.building")
    shutil.rmtree(building, ignore_errors=True)
    building.mkdir(parents=True)
    clips, skipped = store(candidates, building, workers=workers, label=f"building {name} ({size})")
    clips += _carry_over(target, building)
    clips.sort(key=lambda c: c.id)
    write_manifest(building, clips)
    copy_copyright_files(building, folders)
    write_notice(building, name, clips)
    info = {"size": size, "seed": seed, "builder": BUILDER_VERSION, "clips": len(clips)}
    (building / BUILD_INFO).write_text(json.dumps(info, indent=1) + "\n")
    swap_in(building, target)
    timings["encode"] = time.perf_counter() - start - timings["fetch"] - timings["select"]
    timings["total"] = time.perf_counter() - start

    summary = summarize(name, target, clips)
    summary.timings = timings
    summary.skipped = skipped
    return summary


def build_info(name: str = DEFAULT_CORPUS) -> dict | None:
    """`build.json` of a built corpus (None if never built): lets callers skip an identical rebuild."""
    path = corpus_dir(name) / BUILD_INFO
    return json.loads(path.read_text()) if path.is_file() else None


def select(folders: dict[str, Path], spec: CorpusSize, seed: int = 0) -> list[Candidate]:
    """The candidates a build of `spec` takes, in a fixed order (smaller sizes take a prefix of each pool)."""
    picked = _asterisk(folders, spec, seed) + _fillets(folders, spec, seed)
    for category, n in spec.nonspeech.items():
        if n == 0:
            continue
        if category in synth.RECIPES:
            pool = synth.candidates(category, SYNTH_VARIANTS, seed)
            picked += spread(pool, n, f"{seed}:{category}", key=_id, by=lambda c: c.extra["recipe"])
        else:
            pool = NONSPEECH_LISTERS[category](folders)
            picked += spread(pool, n, f"{seed}:{category}", key=_id, by=lambda c: c.source)
    ids = [c.id for c in picked]
    if len(set(ids)) != len(ids):
        raise AssertionError(f"duplicate clip ids: {sorted({i for i in ids if ids.count(i) > 1})[:5]}")
    return picked


def _asterisk(folders: dict[str, Path], spec: CorpusSize, seed: int) -> list[Candidate]:
    """The chosen core prompt groups, each joined by the second voices' takes of the same prompts."""
    by_language = {lang: asterisk.prompts(folders, lang) for lang in asterisk.LANGUAGES}
    core = _parallel_groups(by_language, spec.parallel_groups, spec.min_group_seconds, f"{seed}:asterisk")
    chosen = {c.group for c in core}
    return core + [
        c
        for voice in asterisk_voices.VOICES
        for c in asterisk_voices.prompts(folders, voice, spec.min_group_seconds)
        if spec.parallel_groups is None or c.group in chosen
    ]


def _fillets(folders: dict[str, Path], spec: CorpusSize, seed: int) -> list[Candidate]:
    """Chosen Czech-Dutch pairs, then lines voiced in one language only, drawn round-robin by speaker."""
    by_language = {lang: fillets.lines(folders, lang) for lang in fillets.LANGUAGES}
    pairs = _parallel_groups(by_language, spec.fillets_pairs, spec.min_group_seconds, f"{seed}:fillets")
    if spec.fillets_pairs is None:
        return pairs
    in_pairs = {group[0].group for group in parallel(by_language)}
    solos = [
        c
        for found in by_language.values()
        for c in found
        if c.group not in in_pairs and c.seconds >= spec.min_group_seconds
    ]
    return pairs + spread(solos, spec.fillets_solos, f"{seed}:fillets-solos", key=_id, by=_speaker)


def _parallel_groups(
    by_language: dict[str, list[Candidate]], count: int | None, min_seconds: float, seed: str
) -> list[Candidate]:
    """`count` sentence groups said in every language given (all clips when `count` is None)."""
    if count is None:
        return [c for found in by_language.values() for c in found]
    groups = parallel(by_language, min_seconds)
    chosen = shuffled(groups, seed, key=lambda g: g[0].group)[:count]
    return [c for group in chosen for c in group]


def _carry_over(old: Path, new: Path) -> list[Clip]:
    """Clips a user added to the corpus being rebuilt, with their audio moved into the new folder."""
    if not (old / MANIFEST_NAME).is_file():
        return []
    kept = [c for c in read_manifest(old) if c.extra.get(ADDED_KEY) and (old / c.path).is_file()]
    for clip in kept:
        (new / clip.path).parent.mkdir(parents=True, exist_ok=True)
        shutil.copy2(old / clip.path, new / clip.path)
    return kept


def _id(candidate: Candidate) -> str:
    return candidate.id


def _speaker(candidate: Candidate) -> str:
    return candidate.speaker
