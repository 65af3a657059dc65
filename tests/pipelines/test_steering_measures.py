"""Transcript-level measures of a steered result (pipelines/steering/measures.py) on hand-written transcripts:
the language the text reads as, the loop flag, CER / length against the baseline, success toward a target."""

from __future__ import annotations

import json

import pytest

from pipelines.steering.measures import TranscriptMeasures, is_degenerate, measure, text_language

SENTENCES = {
    "en": "The cat sat on the mat and looked at me.",
    "es": "¿Dónde está la biblioteca de la ciudad?",
    "fr": "Où se trouve la bibliothèque de la ville ?",
    "it": "Dove si trova la biblioteca della città?",
    "ru": "Где находится библиотека в этом городе?",
    "cs": "Kde je knihovna v tomto městě?",
    "nl": "Waar is de bibliotheek in deze stad?",
    "de": "Wo ist die Bibliothek in dieser Stadt?",
}


@pytest.mark.parametrize("language", sorted(SENTENCES))
def test_sentences_read_as_their_language_and_do_not_loop(language: str) -> None:
    got, probability = text_language(SENTENCES[language])
    assert got == language and 0.5 < probability <= 1.0
    assert not is_degenerate(SENTENCES[language])


@pytest.mark.parametrize("text", ["", "   ", "¿?", "sí", "ok."])
def test_empty_or_very_short_text_has_no_language(text: str) -> None:
    assert text_language(text) == ("", 0.0)


@pytest.mark.parametrize(
    "text",
    [
        "la la la la la la la la",
        "La la fe es la fe, la la fe.",  # "la fe" three times covers 6 of 9 words
        "No, no, no.",
        "哈哈哈哈哈哈",  # one "word" of a no-space script: read as characters
        "",  # nothing at all
        "Hola. " + "Gracias por ver el video. " * 12,  # long: gzip ratio > 2.4
    ],
)
def test_loops_and_empty_text_are_degenerate(text: str) -> None:
    assert is_degenerate(text)


@pytest.mark.parametrize(
    "text",
    [
        "the cat and the dog and the bird",  # "the" three times, but under half the words
        "La casa de la madre de la niña es la más bonita.",
        "Hello, my name is John and I like to go, go, go.",
        "今天天气很好，我们去公园散步吧。",
        "Mississippi",
    ],
)
def test_ordinary_repetition_is_not_a_loop(text: str) -> None:
    assert not is_degenerate(text)


def test_a_flipped_token_with_a_loop_is_no_success() -> None:
    m = measure("Where is the library?", "en", "la la la la la la", "es", target="es")
    assert m.token_flipped and m.degenerate
    assert not m.succeeded_toward("es")
    assert m.to_dict()["succeeded_toward_target"] is False


def test_fluent_text_in_the_target_language_succeeds() -> None:
    m = measure(SENTENCES["en"], "en", "El gato se sentó en la alfombra y me miró.", "es", target="es")
    assert m.text_language == "es" and not m.degenerate and m.token_flipped
    assert m.succeeded_toward("es") and not m.succeeded_toward("fr")
    assert m.cer_vs_baseline > 0.5


def test_text_can_read_as_the_target_without_the_token_flipping() -> None:
    m = measure(SENTENCES["en"], "en", SENTENCES["es"], "en", target="es")
    assert not m.token_flipped and m.succeeded_toward("es")


def test_unchanged_transcript_measures_zero_change() -> None:
    m = measure(SENTENCES["fr"], "fr", SENTENCES["fr"], "fr", target=None)
    assert m.cer_vs_baseline == 0.0 and m.length_ratio == 1.0 and not m.token_flipped
    assert m.text_language == "fr" and m.target is None
    assert m.to_dict()["succeeded_toward_target"] is None


def test_target_probability_grades_how_much_the_text_reads_as_the_target() -> None:
    spanish = measure(SENTENCES["en"], "en", SENTENCES["es"], "es", target="es").target_probability
    english = measure(SENTENCES["en"], "en", SENTENCES["en"], "es", target="es").target_probability
    assert spanish is not None and english is not None and spanish > 0.9 > 0.1 > english
    assert measure("hello", "en", "la", "es", target="es").target_probability == 0.0  # too short to tell
    assert measure("hello", "en", "hola", "es", target=None).target_probability is None


def test_length_ratio_counts_normalised_characters() -> None:
    m = measure("Hello, world!", "en", "hello", "en", target=None)  # "hello world" (11) vs "hello" (5)
    assert m.length_ratio == pytest.approx(5 / 11) and m.cer_vs_baseline == pytest.approx(6 / 11)
    empty = measure("", "en", "", "en", target=None)  # an empty baseline counts as one character
    assert empty.length_ratio == 0.0 and empty.cer_vs_baseline == 0.0 and empty.degenerate


def test_to_dict_is_json_ready_and_typed() -> None:
    payload = json.loads(json.dumps(measure(SENTENCES["en"], "en", SENTENCES["de"], "de", "de").to_dict()))
    assert set(payload) == {
        "text_language",
        "text_language_probability",
        "degenerate",
        "cer_vs_baseline",
        "length_ratio",
        "token_flipped",
        "target",
        "target_probability",
        "succeeded_toward_target",
    }
    assert payload["text_language"] == "de" and payload["succeeded_toward_target"] is True
    assert payload["target_probability"] > 0.9
    assert isinstance(payload["text_language_probability"], float)
    assert set(payload) - {"succeeded_toward_target"} == set(TranscriptMeasures.__dataclass_fields__)


def test_steer_result_carries_measures_and_warns_on_an_empty_flip() -> None:
    from types import SimpleNamespace
    from typing import Any

    from pipelines.model.transcribe import Transcription
    from pipelines.steering.run import SteerResult

    baseline = Transcription(SENTENCES["en"], "en", {"en": 1.0}, [])
    plan: Any = SimpleNamespace(target_language="es", source_language="en", features_used=[])

    def result(steered_text: str) -> SteerResult:
        steered = Transcription(steered_text, "es", {"es": 1.0}, [])
        return SteerResult(baseline, baseline, steered, None, plan, 1.0, 10, None)  # type: ignore[arg-type]

    looped = result("la la la la la la")
    assert any("does not read as es" in w for w in looped.warnings())
    assert looped.measures("reconstructed").cer_vs_baseline == 0.0
    fluent = result("El gato se sentó en la alfombra.")
    assert fluent.measures("steered").succeeded_toward("es") and fluent.warnings() == []
