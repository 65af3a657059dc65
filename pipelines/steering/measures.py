"""Judge a steered transcript against its baseline: what language the text reads as, whether it loops.

A flipped language token is not a successful steer: the decoder can be forced into Spanish and write
"la la la la ...". These measures look at the text itself:

- `text_language`: py3langid (Lui & Baldwin 2012, a byte n-gram naive Bayes model shipped with the package)
  restricted to Whisper's languages, on the normalised text; under `MIN_LETTERS` letters there is nothing to
  judge and the answer is ("", 0.0).
- `is_degenerate`: the loop flag, see its docstring.
- `measure`: both, plus CER against the baseline, the length ratio and whether the language token flipped.

`TranscriptMeasures.succeeded_toward(target)` is the honest success test: the text reads as the target
language AND is not degenerate.
"""

from __future__ import annotations

from collections import Counter
from dataclasses import asdict, dataclass
from functools import cache
from typing import TYPE_CHECKING, Any

from pipelines.sae.evaluate import cer, normalise_text

if TYPE_CHECKING:
    from py3langid.langid import LanguageIdentifier

MIN_LETTERS = 4
"""Texts with fewer letters than this have no language to speak of: ("", 0.0)."""

LOOP_GZIP_RATIO = 2.4
"""Whisper's fallback threshold: a gzip compression ratio above it means a repetition loop."""

LOOP_MAX_N = 4
"""Longest word n-gram the repetition rule looks for."""

LOOP_MIN_REPEATS = 3
"""An n-gram must occur at least this often (non-overlapping) to count as a loop."""

LOOP_COVERAGE = 0.5
"""...and its occurrences must cover at least this share of the text's words."""

_LANGID_ALIASES = {"jv": "jw"}
"""py3langid code -> Whisper code where they differ (Javanese)."""


@cache
def _identifier() -> LanguageIdentifier:
    """py3langid's model (loaded once, ~0.4 s) restricted to the languages Whisper knows."""
    from py3langid.langid import MODEL_FILE, LanguageIdentifier

    from pipelines.model.transcribe import LANGUAGES  # the model stack loads with the model, not here

    identifier = LanguageIdentifier.from_model_file(MODEL_FILE, norm_probs=True)
    whisper = set(LANGUAGES)
    identifier.set_languages(sorted(c for c in identifier.labels if _LANGID_ALIASES.get(c, c) in whisper))
    return identifier


def text_language(text: str) -> tuple[str, float]:
    """(Whisper language code, probability) the text reads as; ("", 0.0) for empty or very short text."""
    norm = normalise_text(text)
    if sum(ch.isalpha() for ch in norm) < MIN_LETTERS:
        return "", 0.0
    language, probability = _identifier().classify(norm)
    return _LANGID_ALIASES.get(language, language), float(probability)


def target_probability(text: str, target: str) -> float:
    """py3langid's probability that the text is in `target` (0.0 for very short text): a graded version of
    "reads as the target", which separates steers that the success count ties."""
    norm = normalise_text(text)
    if sum(ch.isalpha() for ch in norm) < MIN_LETTERS:
        return 0.0
    wanted = next((code for code, whisper in _LANGID_ALIASES.items() if whisper == target), target)
    return float(dict(_identifier().rank(norm)).get(wanted, 0.0))


def _units(norm: str) -> list[str]:
    """Words; for a single word (no-space scripts such as Chinese, or "lalalala"), its characters."""
    words = norm.split()
    return words if len(words) > 1 else list(norm.replace(" ", ""))


def _loop_coverage(units: list[str]) -> float:
    """Largest share of `units` covered by the non-overlapping occurrences of one n-gram (n <= LOOP_MAX_N)
    that occurs at least LOOP_MIN_REPEATS times; 0.0 when none does."""
    best = 0.0
    for n in range(1, min(LOOP_MAX_N, len(units) // LOOP_MIN_REPEATS) + 1):
        grams = [tuple(units[i : i + n]) for i in range(len(units) - n + 1)]
        for gram, count in Counter(grams).most_common(3):
            if count < LOOP_MIN_REPEATS:
                break
            hits, i = 0, 0
            while i <= len(units) - n:  # non-overlapping, left to right
                if tuple(units[i : i + n]) == gram:
                    hits, i = hits + 1, i + n
                else:
                    i += 1
            if hits >= LOOP_MIN_REPEATS:
                best = max(best, hits * n / len(units))
    return best


def is_degenerate(text: str) -> bool:
    """A repetition loop or nothing at all. The rule, on the normalised text (lower case, no punctuation):

    1. empty -> degenerate;
    2. gzip compression ratio > 2.4 (Whisper's temperature-fallback rule; catches long loops);
    3. one word n-gram (n = 1..4) repeated at least 3 times, non-overlapping, covering at least half the
       words (catches short loops gzip cannot see: "la la la la", "la la fe es la fe la la fe"). A text of
       one word (no-space scripts) is read as characters instead.
    """
    from pipelines.model.transcribe import compression_ratio

    norm = normalise_text(text)
    if not norm:
        return True
    if compression_ratio(norm) > LOOP_GZIP_RATIO:
        return True
    return _loop_coverage(_units(norm)) >= LOOP_COVERAGE


@dataclass(frozen=True)
class TranscriptMeasures:
    """A transcript judged against its baseline (the untouched encoder's transcript of the same clip)."""

    text_language: str
    """Language the text reads as (py3langid over Whisper's languages); '' when too short to tell."""
    text_language_probability: float
    """py3langid's probability of `text_language` (0.0 when '')."""
    degenerate: bool
    """A repetition loop or empty (`is_degenerate`)."""
    cer_vs_baseline: float
    """Character error rate against the baseline transcript (normalised text; can exceed 1)."""
    length_ratio: float
    """len(text) / len(baseline) in normalised characters (the baseline counted as at least 1)."""
    token_flipped: bool
    """Whisper's detected language token differs from the baseline's."""
    target: str | None = None
    """The language the steering asked for (None: no target)."""
    target_probability: float | None = None
    """py3langid's probability that the text is in `target` (`target_probability`); None without a target."""

    def succeeded_toward(self, target: str) -> bool:
        """The text reads as `target` and is not a loop: a language-token flip alone does not count."""
        return self.text_language == target and not self.degenerate

    def to_dict(self) -> dict[str, Any]:
        """JSON view: the fields (floats rounded) plus `succeeded_toward_target` (None without a target)."""
        out = asdict(self)
        for key in ("text_language_probability", "cer_vs_baseline", "length_ratio", "target_probability"):
            out[key] = None if out[key] is None else round(out[key], 4)
        out["succeeded_toward_target"] = None if self.target is None else self.succeeded_toward(self.target)
        return out


def measure(
    baseline_text: str, baseline_language: str, text: str, language: str, target: str | None
) -> TranscriptMeasures:
    """Measures of `text` (decoded as `language`) against the baseline, for a steer toward `target`."""
    lang, probability = text_language(text)
    return TranscriptMeasures(
        text_language=lang,
        text_language_probability=probability,
        degenerate=is_degenerate(text),
        cer_vs_baseline=cer(baseline_text, text),
        length_ratio=len(normalise_text(text)) / max(len(normalise_text(baseline_text)), 1),
        token_flipped=language != baseline_language,
        target=target,
        target_probability=None if target is None else target_probability(text, target),
    )
