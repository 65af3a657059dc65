"""Licences and attribution: per-file licences from Debian copyright files, and the corpus NOTICE.

Debian's machine-readable copyright format (DEP-5) lists `Files:` patterns with their `Copyright:` and
`License:`; the last stanza that matches a file wins. The NOTICE next to a corpus lists every source with its
licences, clip count and attribution, and the Debian copyright files are copied into `licences/`.
"""

from __future__ import annotations

import fnmatch
from collections import defaultdict
from dataclasses import dataclass
from pathlib import Path
from typing import Iterable

from pipelines.corpus.manifest import Clip

NOTICE_NAME = "NOTICE"
LICENCES_DIR = "licences"

DESCRIPTIONS = {
    "asterisk-core-sounds": "Asterisk core sound prompts (Digium, Inc. and the voices named below), "
    "https://downloads.asterisk.org/pub/telephony/sounds/",
    "asterisk-prompt-es-co": "Colombian Spanish Asterisk prompts, recorded by Avatar Ltda. with the voice of "
    "July E. Jiménez, http://www.avatar.com.co/",
    "asterisk-prompt-fr-armelle": "French Asterisk prompts, voice Armelle Desjardins, copyright Michel "
    "Gutierrez (the BSD-style terms are in its copyright file)",
    "asterisk-prompt-it-menardi": "Italian Asterisk prompts made by Marco Menardi and Paola Dal Zot (the "
    "voice); updates and new voices: http://www.voip.ammdomus.it",
    "asterisk-moh-opsound": "Asterisk music on hold from opsound.org: Paul Shuler (Macroform), Manolo Camp, "
    "Reno Project",
    "fillets-ng-data": "Fish Fillets NG (ALTAR interactive; Ivo and Pavel Danihelka and the Fillets NG "
    "translators and voice actors), https://fillets.sourceforge.net/",
    "sound-theme-freedesktop": "freedesktop.org sound theme (authors below)",
    "oxygen-sounds": "KDE Oxygen sounds (2008, Nuno Filipe Povoa)",
    "sound-icons": "sound-icons (2003 Brailcom, o.p.s.)",
    "hedgewars-data": "Hedgewars (Andrey Korotaev and the Hedgewars Project), https://hedgewars.org/",
    "whisper-atlas-synth": "Synthesized by whisper-atlas with numpy from fixed seeds",
    "hf-": "A Hugging Face dataset: see its dataset card for the licence terms and attribution",
}
"""Attribution by source prefix (a source is a Debian package name, or e.g. `asterisk-core-sounds-en`)."""


@dataclass(frozen=True)
class Stanza:
    """One `Files:` paragraph of a DEP-5 copyright file."""

    patterns: tuple[str, ...]
    copyright: str
    licence: str


def parse_dep5(text: str) -> list[Stanza]:
    """The `Files:` stanzas of a DEP-5 copyright file, in file order."""
    stanzas = []
    for paragraph in text.split("\n\n"):
        fields: dict[str, str] = {}
        key = ""
        for line in paragraph.splitlines():
            if line[:1].isspace() and key:
                fields[key] += "\n" + line.strip()
            elif ":" in line:
                key, value = line.split(":", 1)
                key = key.strip().lower()
                fields[key] = value.strip()
        if "files" in fields and "license" in fields:
            licence = fields["license"].splitlines()[0].strip()
            copyright_ = " ".join(fields.get("copyright", "").split())
            stanzas.append(Stanza(tuple(fields["files"].split()), copyright_, licence))
    return stanzas


def licence_for(stanzas: list[Stanza], path: str) -> Stanza | None:
    """The stanza that governs `path` (relative to the upstream source tree); None when no pattern matches."""
    found = None
    for stanza in stanzas:
        if any(fnmatch.fnmatchcase(path, pattern) for pattern in stanza.patterns):
            found = stanza
    return found


def copy_copyright_files(folder: Path, packages: dict[str, Path]) -> None:
    """Copy each package's Debian copyright file to `folder/licences/<package>.copyright`."""
    target = folder / LICENCES_DIR
    target.mkdir(parents=True, exist_ok=True)
    for name, root in packages.items():
        source = root / "usr/share/doc" / name / "copyright"
        if source.is_file():
            (target / f"{name}.copyright").write_bytes(source.read_bytes())


def notice_text(corpus: str, clips: Iterable[Clip], licence_files: Iterable[str] = ()) -> str:
    """The NOTICE: one paragraph per source, with its licences, clip count and attribution."""
    by_source: dict[str, list[Clip]] = defaultdict(list)
    for clip in clips:
        by_source[clip.source or "unknown"].append(clip)
    files = set(licence_files)
    lines = [
        f"Corpus `{corpus}`: third-party audio, redistributed under the licences below.",
        "Each clip's source and licence are also in manifest.jsonl. Full copyright files are in licences/.",
        "",
    ]
    for source in sorted(by_source):
        found = by_source[source]
        licences = sorted({c.licence or "unknown (as supplied)" for c in found})
        minutes = sum(c.duration for c in found) / 60
        description = next(
            (text for prefix, text in DESCRIPTIONS.items() if source.startswith(prefix)),
            "Supplied by the user",
        )
        lines.append(f"{source}: {len(found)} clips, {minutes:.1f} min")
        lines.append(f"  Licence: {', '.join(licences)}")
        lines.append(f"  Attribution: {description}")
        for holder in sorted({c.extra.get("copyright", "") for c in found} - {""}):
            lines.append(f"  Copyright: {holder}")
        package = next(
            (f for f in sorted(files) if f.removesuffix(".copyright") in _packages_of(source)), None
        )
        if package:
            lines.append(f"  Copyright file: {LICENCES_DIR}/{package}")
        lines.append("")
    return "\n".join(lines)


def write_notice(folder: Path, corpus: str, clips: Iterable[Clip]) -> None:
    files = [p.name for p in (folder / LICENCES_DIR).glob("*.copyright")]
    tmp = folder / (NOTICE_NAME + ".tmp")
    tmp.write_text(notice_text(corpus, clips, files), encoding="utf-8")
    tmp.replace(folder / NOTICE_NAME)


def _packages_of(source: str) -> tuple[str, ...]:
    """Debian packages whose copyright covers `source` (an Asterisk language's audio is in its `-g722`)."""
    return (source, f"{source}-g722")
