"""Which clips an SAE trains on and which measure it: held out by speaker and by sentence group.

A metric on clips that share a voice or a sentence with the training clips says how well the SAE fits its
training data, not how faithful it is to Whisper on new audio. So evaluation clips share neither a speaker
nor a parallel group (the same sentence, any language) with a training clip:

- a share (`fraction`) of the groups of each category is held out; a clip without a group is a group of
  its own (non-speech, user clips). Groups holding clips of held-out speakers are taken first, so the
  held-out speakers have sentences to be measured on;
- in every language with two or more speakers, speakers are held out (in a seeded order, never the one with
  the most clips) until they hold `fraction` of the language's clips, at least one: none of their clips is
  trained on.

That gives two evaluation sets and one unused remainder:

    `speaker`  held-out speaker, held-out group: new voices saying new sentences;
    `group`    trained speaker, held-out group: known voices, new sentences;
    `unused`   held-out speaker, trained group: never trained on, but its sentence was, so never scored.

Languages with a single speaker cannot be split by speaker; `Split.unsplit_languages` lists them so every
figure can say so.
"""

from __future__ import annotations

import json
import random
from dataclasses import asdict, dataclass, field
from pathlib import Path

from pipelines.corpus.manifest import Clip


@dataclass
class Split:
    """Manifest rows of each part, sorted."""

    train: list[int]
    speaker: list[int]
    group: list[int]
    unused: list[int]
    held_out_speakers: dict[str, list[str]] = field(default_factory=dict)
    """Language -> the speakers held out in it."""
    unsplit_languages: list[str] = field(default_factory=list)
    """Speech languages with one speaker only: their evaluation clips are all `group` clips."""

    @property
    def evaluation(self) -> list[int]:
        return sorted(self.speaker + self.group)

    def to_dict(self) -> dict:
        return asdict(self)


def split_clips(clips: dict[int, Clip], fraction: float, seed: int) -> Split:
    """Split the clips (manifest row -> clip) present in a run; equal seeds give equal splits."""
    held_speakers = _held_out_speakers(clips.values(), fraction, seed)
    held_voices = {(lang, speaker) for lang, speakers in held_speakers.items() for speaker in speakers}
    groups: dict[str, list[int]] = {}
    for row, clip in sorted(clips.items()):
        groups.setdefault(_group(row, clip), []).append(row)
    held_groups = _held_out_groups(groups, clips, held_voices, fraction, seed)
    parts: dict[str, list[int]] = {"train": [], "speaker": [], "group": [], "unused": []}
    for key, rows in groups.items():
        for row in rows:
            new_voice = (clips[row].language, clips[row].speaker) in held_voices
            if key in held_groups:
                parts["speaker" if new_voice else "group"].append(row)
            else:
                parts["unused" if new_voice else "train"].append(row)
    speech_languages = {c.language for c in clips.values() if c.speaker and c.language}
    return Split(
        **{name: sorted(rows) for name, rows in parts.items()},
        held_out_speakers=dict(sorted(held_speakers.items())),
        unsplit_languages=sorted(speech_languages - set(held_speakers)),
    )


def _group(row: int, clip: Clip) -> str:
    return clip.group or f"clip:{clip.id or row}"


def _held_out_speakers(clips, fraction: float, seed: int) -> dict[str, list[str]]:
    """Language -> seeded speakers, not the language's largest, holding `fraction` of its clips (>= one)."""
    counts: dict[str, dict[str, int]] = {}
    for clip in clips:
        if clip.speaker and clip.language:
            by_speaker = counts.setdefault(clip.language, {})
            by_speaker[clip.speaker] = by_speaker.get(clip.speaker, 0) + 1
    held = {}
    for language, by_speaker in sorted(counts.items()):
        if len(by_speaker) < 2 or fraction <= 0:
            continue
        ranked = sorted(by_speaker, key=lambda s: (-by_speaker[s], s))
        others = ranked[1:]
        random.Random(f"{seed}:speaker:{language}").shuffle(others)
        target = fraction * sum(by_speaker.values())
        chosen: list[str] = []
        while others and (not chosen or sum(by_speaker[s] for s in chosen) < target):
            chosen.append(others.pop(0))
        held[language] = sorted(chosen)
    return held


def _held_out_groups(
    groups: dict[str, list[int]],
    clips: dict[int, Clip],
    held_voices: set[tuple[str, str]],
    fraction: float,
    seed: int,
) -> set[str]:
    """round(fraction x groups) groups of each category (at least one where fraction > 0 and a category has
    two or more), those with a held-out speaker's clip first, in a seeded order."""
    by_category: dict[str, list[str]] = {}
    for key, rows in groups.items():
        by_category.setdefault(clips[rows[0]].category, []).append(key)
    held: set[str] = set()
    for category, keys in sorted(by_category.items()):
        if fraction <= 0 or len(keys) < 2:
            continue
        n = min(max(round(fraction * len(keys)), 1), len(keys) - 1)
        order = random.Random(f"{seed}:groups:{category}")
        draw = {key: order.random() for key in sorted(keys)}

        def has_new_voice(key: str) -> bool:
            return any((clips[r].language, clips[r].speaker) in held_voices for r in groups[key])

        held |= set(sorted(keys, key=lambda k: (not has_new_voice(k), draw[k]))[:n])
    return held


def read_split(sae_folder: Path) -> Split | None:
    """The split the SAE was trained with (metrics.json `split`); None when none is recorded."""
    path = sae_folder / "metrics.json"
    if not path.exists():
        return None
    split = json.loads(path.read_text()).get("split")
    return Split(**split) if split else None
