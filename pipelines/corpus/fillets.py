"""Fish Fillets NG voices: expressive acted speech in Czech and Dutch, transcribed by the game's Lua dialogs.

Each level's `script/<level>/dialogs_<lang>.lua` pairs a line id with its English original and its translation
(`dialogId("id", "font_small", "English")` then `dialogStr("translation")`); the voice of line `id` in
language `xx` is `sound/<level>/<xx>/<id>.ogg` (11-44.1 kHz, stereo in Dutch; the decoder resamples and
downmixes). A line voiced in both Czech and Dutch forms a parallel pair (`group`). The font names the speaking
character, taken to be voiced by one actor per language, so the speaker id is language and font
(the two fish in Dutch and Czech, and some twenty side characters voiced in Czech only).
"""

from __future__ import annotations

import re
from dataclasses import dataclass
from functools import partial
from pathlib import Path

from pipelines.audio import decode_audio, probe_seconds
from pipelines.corpus.candidate import Candidate, slug
from pipelines.corpus.manifest import SPEECH
from pipelines.errors import AudioDecodeError

LANGUAGES = ("cs", "nl")
LICENCE = "GPL-2"
"""Fish Fillets NG data: GNU GPL version 2 (its Debian copyright file)."""
MAX_SECONDS = 30.0
SHARED_FONTS = ("font_both",)
"""Fonts of lines several characters say at once: no single speaker, so left out."""
GAME = "usr/share/games/fillets-ng"
PACKAGE_MEMBERS = tuple(f"{GAME}/{sub}/" for sub in ("script", "sound", "music")) + ("usr/share/doc/",)
"""What is unpacked of `fillets-ng-data` (its 3,700 images are not needed)."""

_STRING = r'"((?:[^"\\]|\\.)*)"'
_DIALOG = re.compile(
    rf"dialogId\(\s*{_STRING}\s*,\s*{_STRING}\s*,\s*{_STRING}\s*\)(?:\s*dialogStr\(\s*{_STRING}\s*\))?", re.S
)
_COMMENT = re.compile(r"^\s*--.*$", re.M)
_ESCAPE = re.compile(r"\\(.)", re.S)
_ESCAPES = {"n": " ", "t": " ", "r": " "}


@dataclass(frozen=True)
class Dialog:
    """One line of a level's dialog file."""

    id: str
    font: str
    """The font the line is shown in, which names the speaker (`font_small`: the small fish)."""
    english: str
    text: str
    """The translation (`dialogStr`); the English original where the file has none."""


def packages(languages: tuple[str, ...] = LANGUAGES) -> list[str]:
    return ["fillets-ng-data", *(f"fillets-ng-data-{lang}" for lang in languages)]


def parse_dialogs(lua: str) -> dict[str, Dialog]:
    """Line id -> Dialog from the text of one `dialogs_xx.lua` (Lua escapes undone, whitespace collapsed)."""
    dialogs = {}
    for match in _DIALOG.finditer(_COMMENT.sub("", lua)):
        line_id, font, english, text = (_unescape(s or "") for s in match.groups())
        dialogs[line_id] = Dialog(line_id, font, english, text if match.group(4) is not None else english)
    return dialogs


def lines(folders: dict[str, Path], language: str) -> list[Candidate]:
    """Every voiced line of `language` that has a transcript, one speaker and lasts at most 30 s."""
    game = folders["fillets-ng-data"] / GAME
    voices = folders[f"fillets-ng-data-{language}"] / GAME / "sound"
    candidates = []
    for script in sorted(game.glob(f"script/*/dialogs_{language}.lua")):
        level = script.parent.name
        for dialog in parse_dialogs(script.read_text(encoding="utf-8", errors="replace")).values():
            audio = voices / level / language / f"{dialog.id}.ogg"
            if not dialog.text or dialog.font in SHARED_FONTS or not audio.is_file():
                continue
            try:
                seconds = probe_seconds(audio)
            except AudioDecodeError:
                continue
            if 0 < seconds <= MAX_SECONDS:
                candidates.append(
                    Candidate(
                        id=slug("fillets", language, level, dialog.id),
                        load=partial(decode_audio, audio),
                        seconds=seconds,
                        category=SPEECH,
                        source=f"fillets-ng-data-{language}",
                        licence=LICENCE,
                        language=language,
                        transcript=dialog.text,
                        group=slug("fillets", level, dialog.id),
                        speaker=slug("fillets", language, dialog.font.removeprefix("font_")),
                        extra={"level": level, "line": dialog.id, "english": dialog.english},
                    )
                )
    return candidates


def _unescape(text: str) -> str:
    return " ".join(_ESCAPE.sub(lambda m: _ESCAPES.get(m.group(1), m.group(1)), text).split())
