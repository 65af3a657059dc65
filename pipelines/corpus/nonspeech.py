"""Real non-speech audio from Debian packages: music excerpts, sound effects and laughter.

Music comes as long tracks and is cut into 15 s excerpts (Whisper sees at most 30 s at once). Effects are
desktop and game sounds; spoken ones (the freedesktop `audio-channel-*` voice prompts) are left out, and so
are files whose licence the package's copyright file does not state. Laughter is the `Laugh` voice of each
Hedgewars character: real recorded laughs, the one cheap source of it in the archive (the package is 145 MB).
"""

from __future__ import annotations

import re
from dataclasses import dataclass
from functools import partial
from pathlib import Path
from typing import Callable, Iterator

import numpy as np

from pipelines.audio import SAMPLE_RATE, decode_audio, probe_seconds
from pipelines.corpus import fillets
from pipelines.corpus.candidate import Candidate, slug
from pipelines.corpus.notice import licence_for, parse_dep5
from pipelines.errors import AudioDecodeError

EXCERPT_SECONDS = 15.0
MIN_EXCERPT_SECONDS = 5.0
MIN_EFFECT_SECONDS = 0.2
MAX_SECONDS = 30.0

HEDGEWARS = "usr/share/games/hedgewars/Data"
HEDGEWARS_MEMBERS = (f"{HEDGEWARS}/Sounds/", f"{HEDGEWARS}/Music/", "usr/share/doc/")
"""What is unpacked of `hedgewars-data` (the rest is 140 MB of graphics and maps)."""


@dataclass(frozen=True)
class FileSource:
    """Where a package keeps one kind of non-speech audio, and how its copyright file names those paths."""

    package: str
    folder: str
    """Folder in the package holding the files."""
    pattern: str
    """Glob of the files (relative to `folder`)."""
    dep5_prefix: str | None
    """Prefix that turns a path under `folder` into the copyright file's path; None: one licence for all."""
    licence: str = ""
    """The licence when `dep5_prefix` is None."""
    skip: str = r"$^"
    """Regex of file names to leave out (spoken prompts)."""


MUSIC = (
    FileSource("asterisk-moh-opsound-g722", "usr/share/asterisk/moh", "*.g722", None, "CC-BY-SA-3.0"),
    FileSource("fillets-ng-data", "usr/share/games/fillets-ng/music", "*.ogg", None, fillets.LICENCE),
    FileSource("hedgewars-data", f"{HEDGEWARS}/Music", "*.ogg", "share/hedgewars/Data/Music/"),
)
EFFECTS = (
    FileSource(
        "sound-theme-freedesktop", "usr/share/sounds/freedesktop", "stereo/*.oga", "", skip=r"^audio-channel-"
    ),
    FileSource("oxygen-sounds", "usr/share/sounds", "*.ogg", None, "LGPL-3.0-or-later"),
    FileSource("sound-icons", "usr/share/sounds/sound-icons", "*.wav", None, "GPL-2+"),
    FileSource("fillets-ng-data", "usr/share/games/fillets-ng/sound/share", "*.ogg", None, fillets.LICENCE),
    FileSource("hedgewars-data", f"{HEDGEWARS}/Sounds", "*.ogg", "share/hedgewars/Data/Sounds/"),
)
LAUGHTER = (
    FileSource(
        "hedgewars-data", f"{HEDGEWARS}/Sounds/voices", "*/Laugh.ogg", "share/hedgewars/Data/Sounds/voices/"
    ),
)


def packages(sources: tuple[FileSource, ...]) -> list[str]:
    return list(dict.fromkeys(s.package for s in sources))


def music(folders: dict[str, Path]) -> list[Candidate]:
    """15 s excerpts of every track (a last excerpt shorter than 5 s is dropped)."""
    found = []
    for source, path, licence, rights in _files(folders, MUSIC):
        track = slug(path.stem)
        length = _seconds(path)
        for index, start in enumerate(np.arange(0.0, length - MIN_EXCERPT_SECONDS, EXCERPT_SECONDS)):
            seconds = min(EXCERPT_SECONDS, length - start)
            found.append(
                Candidate(
                    id=slug("music", track, f"{index:02d}"),
                    load=partial(excerpt, path, float(start), float(seconds)),
                    seconds=float(seconds),
                    category="music",
                    source=source,
                    licence=licence,
                    group=slug("music", track),
                    extra={"track": path.stem, "start": float(start), "copyright": rights},
                )
            )
    return found


def effects(folders: dict[str, Path]) -> list[Candidate]:
    return _whole_files(folders, EFFECTS, "effects", lambda source, path: slug("effects", source, path.stem))


def laughter(folders: dict[str, Path]) -> list[Candidate]:
    return _whole_files(
        folders, LAUGHTER, "laughter", lambda source, path: slug("laughter", path.parent.name)
    )


def excerpt(path: Path, start: float, seconds: float) -> np.ndarray:
    """`seconds` of audio from `start` (decoding stops at the end of the excerpt)."""
    audio = decode_audio(path, max_seconds=start + seconds)
    return audio[int(start * SAMPLE_RATE) :]


def _whole_files(
    folders: dict[str, Path], sources: tuple[FileSource, ...], category: str, name: Callable[[str, Path], str]
) -> list[Candidate]:
    found = []
    for source, path, licence, rights in _files(folders, sources):
        seconds = _seconds(path)
        if seconds >= MIN_EFFECT_SECONDS:
            found.append(
                Candidate(
                    id=name(source, path),
                    load=partial(decode_audio, path, max_seconds=MAX_SECONDS),
                    seconds=min(seconds, MAX_SECONDS),
                    category=category,
                    source=source,
                    licence=licence,
                    speaker=slug("hedgewars", path.parent.name) if category == "laughter" else "",
                    extra={"file": path.name, "copyright": rights},
                )
            )
    return found


def _files(folders: dict[str, Path], sources: tuple[FileSource, ...]) -> Iterator[tuple[str, Path, str, str]]:
    """(package, path, licence, copyright) of every file of the `sources` whose package is in `folders`."""
    for spec in sources:
        if spec.package not in folders:
            continue
        root = folders[spec.package] / spec.folder
        copyright_file = folders[spec.package] / "usr/share/doc" / spec.package / "copyright"
        stanzas = parse_dep5(copyright_file.read_text()) if spec.dep5_prefix is not None else []
        for path in sorted(root.glob(spec.pattern)):
            if re.search(spec.skip, path.name):
                continue
            if spec.dep5_prefix is None:
                yield spec.package, path, spec.licence, ""
                continue
            stanza = licence_for(stanzas, spec.dep5_prefix + path.relative_to(root).as_posix())
            if stanza is not None:
                yield spec.package, path, stanza.licence, stanza.copyright


def _seconds(path: Path) -> float:
    try:
        return probe_seconds(path)
    except AudioDecodeError:
        return 0.0
