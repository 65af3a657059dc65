"""Per-frame annotations of a run's encoder frames, to score hypotheses about what each SAE feature detects.

`frames.py` owns the file format (and imports nothing heavy, so a scorer can read annotations without the
phonemizer or Praat); `annotate.py` computes every attribute listed in `attributes.py`, one module each:
`vad.py` and `regions.py` (speech and its onsets), `position.py` (place in the 30 s window), `loudness.py`,
`pitch.py`, `words.py` and `phones.py`, with `framing.py` (a clip's samples per frame) and `vocabulary.py`
(codes for open sets of values) shared by them.
"""
