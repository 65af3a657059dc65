"""The attributes every frame is annotated with, and the feature type (taxonomy) each one tests."""

from __future__ import annotations

ATTRIBUTES: dict[str, str] = {
    "language": "The clip's language (ISO 639-1, from the manifest); -1 for non-speech.",
    "speaker": "The clip's speaker or voice id (manifest); -1 where the manifest names none.",
    "source": "Where the clip came from (manifest `source`, e.g. a Debian package); -1 when unknown.",
    "category": "The clip's category: speech or a non-speech one (music, effects, laughter, noise, ...).",
    "vad": "speech / non-speech by WebRTC's voice-activity detector, smoothed (`vad.py`).",
    "word": "The aligned word under the frame's centre, normalised; -1 between words and off speech.",
    "phone": "The IPA phone under the frame, gruut's pronunciation spread over the word (times approximate).",
    "language_phone": "Language and phone together ('es:/s/'): a phone as one language realises it.",
    "window_position": "Band of the frame's index in its 30 s encoder window (0-0.5 s ... 10-30 s).",
    "since_onset": "Band of the time since the onset of the frame's VAD speech region; -1 off speech.",
    "utterance_edge": "First or last 100 ms of a VAD speech region; -1 elsewhere.",
    "boundary": "Within 40 ms of a VAD speech onset or offset; -1 elsewhere.",
    "loudness": "Band of the frame's RMS level in dBFS.",
    "pitch": "Band of Praat's F0 at the frame's centre, or unvoiced.",
}
"""Attribute name -> what a frame's value of it says (the keys: every attribute `annotate_frames` makes)."""

ATTRIBUTE_TYPES: dict[str, str] = {
    "language": "language",
    "speaker": "speaker",
    "source": "non-speech",
    "category": "non-speech",
    "vad": "non-speech",
    "word": "lexical",
    "phone": "phonetic",
    "language_phone": "phonetic",
    "window_position": "positional",
    "since_onset": "positional",
    "utterance_edge": "positional",
    "boundary": "boundary",
    "loudness": "acoustic",
    "pitch": "acoustic",
}
"""Attribute -> the feature type of the taxonomy that a hypothesis on it belongs to."""
