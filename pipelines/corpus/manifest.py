"""The corpus manifest: one JSON object per clip in `manifest.jsonl`, next to the audio it describes.

Every later stage (extract, analyze, build) and the server read clips through this module only.
"""

from __future__ import annotations

import json
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Callable, Iterable

MANIFEST_NAME = "manifest.jsonl"

SPEECH = "speech"
NON_SPEECH_CATEGORIES = ("music", "effects", "laughter", "noise", "tones", "silence")
CATEGORIES = (SPEECH, *NON_SPEECH_CATEGORIES)


@dataclass
class Clip:
    """One audio clip of a corpus.

    `path` is relative to the corpus folder; audio is 16 kHz mono FLAC once built.
    """

    id: str
    """Stable, URL-safe id, unique in the corpus (e.g. `asterisk-en-vm-goodbye`)."""
    path: str
    """Audio file, relative to the corpus folder."""
    duration: float
    """Seconds of audio."""
    category: str = SPEECH
    """`speech` or a non-speech category (music, effects, laughter, noise, tones, silence)."""
    language: str = ""
    """ISO 639-1 code for speech (`en`, `es`, ...); empty for non-speech or unknown."""
    transcript: str = ""
    """Reference transcript when known."""
    source: str = ""
    """Where the audio came from (e.g. `asterisk-core-sounds-en`)."""
    licence: str = ""
    """SPDX-like licence of the audio (e.g. `CC-BY-SA-3.0`)."""
    group: str = ""
    """Parallel group: clips sharing it say the same sentence in different languages."""
    speaker: str = ""
    """Speaker or voice id when known."""
    extra: dict = field(default_factory=dict)


def read_manifest(corpus: Path) -> list[Clip]:
    """All clips of the corpus at folder `corpus`, in manifest order."""
    with open(corpus / MANIFEST_NAME, encoding="utf-8") as f:
        return [Clip(**json.loads(line)) for line in f if line.strip()]


def round_robin(clips: list[Clip], key: Callable[[Clip], str]) -> list[Clip]:
    """`clips` reordered to take one of each `key` (sorted) in turn, in their order within each: the first
    few cover every category, language or speaker."""
    groups: dict[str, list[Clip]] = {}
    for clip in clips:
        groups.setdefault(key(clip), []).append(clip)
    queues = [group for _, group in sorted(groups.items())]
    ordered: list[Clip] = []
    while any(queues):
        ordered += [q.pop(0) for q in queues if q]
    return ordered


def write_manifest(corpus: Path, clips: Iterable[Clip]) -> None:
    """Write the manifest atomically (a reader never sees half of it)."""
    corpus.mkdir(parents=True, exist_ok=True)
    tmp = corpus / (MANIFEST_NAME + ".tmp")
    with open(tmp, "w", encoding="utf-8") as f:
        for clip in clips:
            f.write(json.dumps(asdict(clip), ensure_ascii=False) + "\n")
    tmp.replace(corpus / MANIFEST_NAME)
