"""Selectivity maths and the words under top examples on constructed data."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest

from pipelines.analysis.result import (
    AnalysisMeta,
    AnalysisResult,
    ClipTable,
    ClipText,
    ExampleTable,
    FeatureTable,
)
from pipelines.analysis.words import (
    normalise_word,
    top_example_words,
    word_at,
)
from pipelines.atlas.build import atlas_tables
from pipelines.corpus.manifest import CATEGORIES, Clip

LANGS = ["en", "es"]


def constructed_result() -> AnalysisResult:
    """3 features over 1000 frames: en 600, es 200, music 200 (feature 2 is dead).

    Feature 0 puts mass 30 on en and 30 on es; feature 1 fires only on music.
    """
    n_f, n_c = 3, len(CATEGORIES)
    cat_frames = np.zeros(n_c, np.int64)
    cat_frames[0], cat_frames[1] = 800, 200
    cat_mass = np.zeros((n_f, n_c))
    cat_mass[0, 0], cat_mass[1, 1] = 60.0, 20.0
    cat_fires = np.zeros((n_f, n_c), np.int64)
    cat_fires[0, 0], cat_fires[1, 1] = 40, 10
    features = FeatureTable(
        fire_count=np.array([40, 10, 0]),
        act_sum=np.array([60.0, 20.0, 0.0]),
        max_act=np.array([3.0, 4.0, 0.0], np.float32),
        hist_counts=np.array([[0, 30, 10, 0], [0, 0, 5, 5], [0, 0, 0, 0]]),
        lang_mass=np.array([[30.0, 30.0], [0.0, 0.0], [0.0, 0.0]]),
        lang_fires=np.array([[30, 10], [0, 0], [0, 0]]),
        cat_mass=cat_mass,
        cat_fires=cat_fires,
        neighbours=np.array([[1, 2], [0, 2], [0, 1]], np.int32),
        neighbour_cos=np.full((3, 2), 0.5, np.float32),
        coactive=np.array([[1, -1], [0, -1], [-1, -1]], np.int32),
        coactive_score=np.array([[0.2, 0], [0.2, 0], [0, 0]], np.float32),
        effects=np.zeros((3, 0), np.float32),
        label_score=np.zeros(3, np.float32),
    )
    examples = ExampleTable(
        feature=np.array([0, 1], np.int32),
        kind=np.array([0, 0], np.int8),
        rank=np.array([0, 0], np.int32),
        quantile=np.ones(2, np.float32),
        clip=np.array([0, 1], np.int32),
        start=np.array([0, 0], np.int32),
        end=np.array([3, 2], np.int32),
        peak=np.array([1, 0], np.int32),
        peak_act=np.array([3.0, 4.0], np.float32),
        acts=np.array([1, 3, 0, 4, 2], np.float32),
        acts_len=np.array([3, 2], np.int32),
    )
    clips = ClipTable(
        n_frames=np.array([600, 400]),
        mel_frames=np.array([2, 1], np.int32),
        mel=np.arange(240, dtype=np.uint8),
        vmin=np.zeros(2, np.float32),
        vmax=np.ones(2, np.float32),
        n_mels=np.array(80),
    )
    meta = AnalysisMeta(
        model="m",
        transcriber="m",
        layer=6,
        corpus="c",
        n_frames=1000,
        n_features=3,
        languages=LANGS,
        lang_frames=[600, 200],
        categories=list(CATEGORIES),
        cat_frames=cat_frames.tolist(),
        grid_edges=[0.1, 1.0, 2.0, 4.0, 8.0],
        effect_languages=[],
        effect_clips=0,
        config={},
    )
    text = [ClipText("a", "en", "hi there", [("hi", 0.0, 0.5)]), ClipText("b", "", "", [])]
    return AnalysisResult(meta, features, examples, clips, text, ["x", "y", ""], [[], [], []])


def test_selectivity_is_act_share_over_frame_share():
    result = constructed_result()
    clips = [Clip(id="a", path="a.flac", duration=12.0), Clip(id="b", path="b.flac", duration=8.0)]
    tables = atlas_tables(result, clips, Path("/corpus"), {}, {})
    rows = tables["feature_languages"].to_pylist()
    assert [(r["feature_id"], r["language"]) for r in rows] == [(0, "en"), (0, "es"), (1, "en"), (1, "es")]
    en, es = rows[0], rows[1]
    assert en["act_share"] == pytest.approx(0.5) and en["frame_share"] == pytest.approx(0.6)
    assert en["selectivity"] == pytest.approx(0.5 / 0.6)
    assert es["selectivity"] == pytest.approx(0.5 / 0.2)
    assert en["fire_rate"] == pytest.approx(30 / 600) and es["fire_rate"] == pytest.approx(10 / 200)
    features = tables["features"].to_pylist()
    assert features[0]["top_language"] == "es"
    assert features[0]["top_language_selectivity"] == pytest.approx(2.5)
    assert features[1]["top_category"] == "music"
    assert features[1]["top_category_selectivity"] == pytest.approx(1.0 / 0.2)
    assert features[0]["speech_fraction"] == pytest.approx(1.0)
    assert features[2]["top_language"] == "" and features[2]["density"] == 0
    assert features[0]["hist_counts"] == [30, 10] and features[0]["hist_edges"] == pytest.approx([1, 2, 4])
    assert features[1]["coactive"] == [0] and features[2]["coactive"] == []
    assert [r["n_features"] for r in tables["density_histogram"].to_pylist()] == [1, 0, 1, 0, 0, 0, 0, 0]
    mels = tables["clip_mels"].to_pylist()
    assert [len(m["mel"]) for m in mels] == [160, 80]
    assert tables["examples"].column("acts").to_pylist() == [[1, 3, 0], [4, 2]]


def test_words_under_peaks():
    words = [("¿Hola,", 0.0, 0.1), ("amigo", 0.1, 0.3)]
    assert normalise_word("¿Hola,") == "hola"
    assert word_at(words, 0) == "hola"  # frame 0 centre 0.01 s
    assert word_at(words, 7) == "amigo"
    assert word_at(words, 40) == ""
    top, support = top_example_words(
        np.array([0, 0, 0, 1]), np.array([0, 1, 2, 0]), np.array([0, 0, 7, 7]), [words, words, words], 2
    )
    assert top == [["hola"], []]
    np.testing.assert_allclose(support, [2 / 3, 1.0])
