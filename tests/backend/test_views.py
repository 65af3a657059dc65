"""Template helpers: chart geometry, word placement and escaping."""

from __future__ import annotations

import pytest

from backend.schemas import Word
from backend.views import CHART, bar_chart, words_html


def test_bar_chart_scales_to_the_largest_count() -> None:
    chart = bar_chart([0.0, 1.0, 2.0, 3.0], [5, 10, 0])
    plot_height = CHART["H"] - CHART["T"] - CHART["B"]
    assert chart.top == 10 and len(chart.bars) == 3
    assert [float(b.height) for b in chart.bars] == [plot_height / 2, plot_height, 0.0]
    assert [t[2] for t in chart.ticks] == ["0", "1", "3"] and not chart.log_x


def test_bar_chart_recognises_a_log_grid_and_empty_data() -> None:
    assert bar_chart([10 ** (i / 8) for i in range(9)], [1] * 8).log_x
    empty = bar_chart([0.0, 1.0], [0])
    assert empty.bars == [] and empty.top == 0


def test_words_are_placed_within_the_window_and_escaped() -> None:
    html = words_html(
        [Word(word="<b>hi</b>", start=0.5, end=1.0), Word(word="x", start=1.8, end=2.5)], 0.5, 2.5
    )
    assert "<b>" not in html and "&lt;b&gt;hi&lt;/b&gt;" in html
    assert "left:0.0%;width:25.0%" in html and "left:65.0%;width:35.0%" in html


@pytest.mark.parametrize(
    ("fraction", "digits", "shown"),
    [
        (1.0, 2, "100%"),
        (0.995, 3, "99.5%"),
        (0.00266, 3, "0.266%"),
        (0.5, 2, "50%"),
        (0.0, 3, "0%"),
        (None, 3, "—"),
    ],
)
def test_percentages_never_use_e_notation(fraction, digits: int, shown: str) -> None:
    from backend.rendering import pct as _pct

    assert _pct(fraction, digits) == shown
