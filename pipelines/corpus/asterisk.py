"""Asterisk core sound prompts: real studio speech in en, es, fr, it and ru with transcripts, in parallel.

The Asterisk PBX ships the same prompt names (e.g. `vm-goodbye`) recorded in each language, with the spoken
text in `core-sounds-xx.txt`. A prompt name present in all five languages is a parallel group: the same
sentence said in five languages, which is what cross-lingual feature analysis and steering need. Audio is raw
G.722 (16 kHz). Tone descriptions (`[beep]`), spelled digits and letters and the silence files are left out.
"""

from __future__ import annotations

import gzip
import re
from functools import partial
from pathlib import Path

from pipelines.audio import decode_audio
from pipelines.corpus.candidate import Candidate, slug
from pipelines.corpus.manifest import SPEECH
from pipelines.corpus.notice import Stanza, licence_for, parse_dep5
from pipelines.errors import AtlasError

LANGUAGES = ("en", "es", "fr", "it", "ru")
SKIPPED_FOLDERS = ("digits/", "letters/", "silence/")
MAX_SECONDS = 30.0
G722_BYTES_PER_SECOND = 8000
"""G.722 codes 16 kHz audio at 64 kbit/s, so a raw file's length follows from its size."""

_ENTRY = re.compile(r"^\s*([\w./+-]+)\s*:\s*(.*?)\s*$")


def packages(languages: tuple[str, ...] = LANGUAGES) -> list[str]:
    """The Debian packages holding the audio (`-g722`) and the transcripts of `languages`."""
    return [
        name
        for lang in languages
        for name in (f"asterisk-core-sounds-{lang}-g722", f"asterisk-core-sounds-{lang}")
    ]


def parse_core_sounds(text: str) -> dict[str, str]:
    """Prompt name -> transcript from a `core-sounds-xx.txt`.

    Skips comments (`;`), entries with bracketed notes (`[beep]`, `[ascending tones]`, `[temporales]`: not
    reliably spoken), empty texts and the digits/letters/silence folders.
    """
    prompts: dict[str, str] = {}
    for line in text.lstrip("\ufeff").splitlines():
        match = _ENTRY.match(line)
        if not match or line.lstrip().startswith(";"):
            continue
        name, transcript = match.groups()
        if not transcript or "[" in transcript or name.startswith(SKIPPED_FOLDERS):
            continue
        prompts[name] = " ".join(transcript.split())
    return prompts


def prompts(folders: dict[str, Path], language: str) -> list[Candidate]:
    """Every usable prompt of one language: has audio, a transcript and at most 30 s."""
    texts = read_transcripts(folders[f"asterisk-core-sounds-{language}"], language)
    package = f"asterisk-core-sounds-{language}-g722"
    sounds = folders[package] / "usr/share/asterisk/sounds"
    rights = _rights(folders[package] / "usr/share/doc" / package / "copyright", language)
    candidates = []
    for voice in sorted(p for p in sounds.iterdir() if p.is_dir()):
        for name, transcript in texts.items():
            audio = voice / f"{name}.g722"
            if not audio.is_file():
                continue
            seconds = audio.stat().st_size / G722_BYTES_PER_SECOND
            if 0 < seconds <= MAX_SECONDS:
                candidates.append(
                    Candidate(
                        id=slug("asterisk", language, name),
                        load=partial(decode_audio, audio, format="g722"),
                        seconds=seconds,
                        category=SPEECH,
                        source=f"asterisk-core-sounds-{language}",
                        licence=rights.licence,
                        language=language,
                        transcript=transcript,
                        group=slug("asterisk", name),
                        speaker=slug("asterisk", voice.name.split("_")[-1].lower()),
                        extra={"prompt": name, "voice": voice.name, "copyright": rights.copyright},
                    )
                )
    return candidates


def _rights(copyright_file: Path, language: str) -> Stanza:
    """Licence and copyright of one language's voice (its copyright file has an `xx-*` stanza per voice)."""
    stanza = licence_for(parse_dep5(copyright_file.read_text(encoding="utf-8")), f"{language}-prompts")
    if stanza is None:
        package = copyright_file.parents[3]
        raise AtlasError(
            f"{copyright_file.name} of {package.name} names no licence for {language}: delete {package}"
        )
    return stanza


def read_transcripts(folder: Path, language: str) -> dict[str, str]:
    """Prompt name -> transcript of one language, from its text package (the second voices use it too)."""
    path = folder / f"usr/share/doc/asterisk-core-sounds-{language}/core-sounds-{language}.txt.gz"
    return parse_core_sounds(gzip.decompress(path.read_bytes()).decode("utf-8"))
