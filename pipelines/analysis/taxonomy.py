"""The feature types and how a hypothesis "attribute = value" reads as a label.

A hypothesis is one value of one per-frame attribute (`pipelines.annotate.frames`: language, phone, word,
...). Each attribute has a type (the caller's mapping: `pipelines.annotate.attributes.ATTRIBUTE_TYPES`); a
feature takes the type of its best hypothesis, or "unexplained" when no hypothesis detects it well enough
(`pipelines.analysis.hypotheses`). Conjunction attributes hold two attributes' values at once ("es:/s/" for
language_phone); they are more specific than either part, which the scoring's tie-break uses.
"""

from __future__ import annotations

import re

from pipelines.atlas.schema import LABEL_TYPES

UNEXPLAINED = "unexplained"
TYPES: tuple[str, ...] = LABEL_TYPES
"""The feature types, declared once with the atlas column that stores them."""
CONJUNCTIONS: dict[str, tuple[str, ...]] = {"language_phone": ("language", "phone")}
"""Conjunction attribute -> the attributes whose values it joins, in the order of its value's parts."""
CONJUNCTION_SEPARATOR = ":"

_POSITION_ANCHORS = {
    "since_onset": ("after onset", "after onset"),
    "window_position": ("of the window", "into the window"),
}
"""Positional attributes whose values are time bands ("0-100 ms", "0.3-1 s"): what a band starting at 0, and
any other band, is counted from ("first 100 ms after onset", "10-30 s into the window")."""
_FROM_ZERO = re.compile(r"^0\s*[-–]\s*(\S.*)$")


def format_value(attribute: str, value: str) -> str:
    """A value as it reads inside a label: phones between slashes, words quoted, others as they are."""
    if attribute == "phone":
        return f"/{value.strip('/')}/"
    if attribute == "word":
        return f'"{value}"'
    return value


def hypothesis_label(attribute: str, value: str) -> str:
    """The label of the hypothesis attribute == value: `language = es`, `phone = /s/`, `es ∧ /s/`,
    `word = "conference"`, `first 100 ms after onset`, `first 100 ms of an utterance`, else
    `attribute = value`."""
    if attribute in CONJUNCTIONS:
        parts = CONJUNCTIONS[attribute]
        values = value.split(CONJUNCTION_SEPARATOR, len(parts) - 1)
        if len(values) == len(parts):
            return " ∧ ".join(format_value(part, v) for part, v in zip(parts, values))
    if attribute in _POSITION_ANCHORS:
        from_zero, later = _POSITION_ANCHORS[attribute]
        start = _FROM_ZERO.match(value)
        return f"first {start.group(1)} {from_zero}" if start else f"{value} {later}"
    if attribute == "utterance_edge":
        return f"{value} of an utterance"
    return f"{attribute} = {format_value(attribute, value)}"
