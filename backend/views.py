"""Template helpers: the arithmetic behind the charts and example figures, done once in Python.

Templates keep the markup; these functions turn API models into the few numbers and URLs each element needs
(Jinja expressions cost microseconds each, and a feature page has a few thousand of them otherwise).
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Callable

from markupsafe import Markup, escape

from backend.schemas import (
    ClipDetail,
    ClipFeature,
    Example,
    ParallelGroup,
    ParallelVersion,
    Phone,
    Share,
    Word,
)
from backend.services.spectrogram import overlay_points
from pipelines.atlas.schema import FRAME_SECONDS, LABEL_TYPES


@dataclass(frozen=True)
class ExampleView:
    """What one example card prints (URLs and markup already escaped)."""

    ex: Example
    anchor: str
    """Element id suffix of the example's figure (unique on the page)."""
    audio_url: Markup
    png_url: Markup
    times: str
    points: str
    words: Markup
    """The aligned words as positioned <span>s over the window."""


def words_html(words: list[Word], start: float, end: float) -> Markup:
    """Words as <span>s placed at their share of the window [start, end) (clipped to it).

    Built here rather than in the template: a window holds a handful of words, each needing position maths,
    and one joined string is an order of magnitude cheaper than a Jinja loop. Every word is escaped.
    """
    span = max(end - start, 1e-3)
    parts = []
    for w in words:
        a = max((w.start - start) / span, 0.0)
        b = min((w.end - start) / span, 1.0)
        word = escape(w.word)
        parts.append(
            f'<span style="left:{a * 100:.1f}%;width:{max(b - a, 0.02) * 100:.1f}%" '
            f'title="{word} ({w.start:.2f}–{w.end:.2f} s)">{word}</span>'
        )
    return Markup("".join(parts))


def example_view(ex: Example, scale: float, version: str) -> ExampleView:
    """One example card; `scale` is the activation that fills the figure's height."""
    query = f"start={ex.start:.2f}&amp;end={ex.end:.2f}&amp;v={escape(version)}"
    return ExampleView(
        ex=ex,
        anchor=f"{ex.kind}-{ex.rank}",
        audio_url=Markup(f"/api/v1/clips/{ex.clip_id}/audio?{query}"),
        png_url=Markup(f"/api/v1/clips/{ex.clip_id}/spectrogram.png?{query}"),
        times=f"{ex.start:.2f}–{ex.end:.2f} s",
        points=overlay_points(ex.acts, scale),
        words=words_html(ex.words, ex.start, ex.end),
    )


@dataclass(frozen=True)
class Bar:
    x: str
    y: str
    width: str
    height: str
    title: str


@dataclass(frozen=True)
class BarChart:
    """Geometry of a vertical bar chart in a fixed viewBox (see macros/charts.html)."""

    bars: list[Bar]
    top: float
    ticks: list[tuple[str, str, str]]
    """(x, anchor, label) along the x axis."""
    log_x: bool
    """The bins are equal in log space (the analysis bins activations on a log grid)."""


CHART = {"W": 360, "H": 150, "L": 46, "R": 10, "T": 10, "B": 36}
"""Chart box in SVG units: width, height and the left/right/top/bottom margins for the axes."""


def _short(value: float) -> str:
    return f"{value:.3g}"


def bar_chart(edges: list[float], counts: list[int], fmt: Callable[[float], str] = _short) -> BarChart:
    """Bars for `counts` over bins with `edges` (len(counts) + 1), scaled to the largest count."""
    n = len(counts)
    top = max(counts, default=0)
    pw = CHART["W"] - CHART["L"] - CHART["R"]
    ph = CHART["H"] - CHART["T"] - CHART["B"]
    bars = []
    if n and top > 0:
        bw = pw / n
        for i, c in enumerate(counts):
            h = c / top * ph
            bars.append(
                Bar(
                    x=f"{CHART['L'] + i * bw + 0.5:.1f}",
                    y=f"{CHART['T'] + ph - h:.1f}",
                    width=f"{max(bw - 1, 0.5):.1f}",
                    height=f"{h:.1f}",
                    title=f"{fmt(edges[i])} to {fmt(edges[i + 1])}: {c:,}",
                )
            )
    ticks = []
    if n:
        for i, anchor in ((0, "start"), (n // 2, "middle"), (n, "end")):
            ticks.append((f"{CHART['L'] + i * pw / n:.1f}", anchor, fmt(edges[i])))
    return BarChart(bars=bars, top=top, ticks=ticks, log_x=_geometric(edges))


def _geometric(edges: list[float]) -> bool:
    """Whether the edges grow by a constant factor (and not by a constant step)."""
    if len(edges) < 3 or min(edges) <= 0:
        return False
    ratios = [b / a for a, b in zip(edges, edges[1:])]
    steps = [b - a for a, b in zip(edges, edges[1:])]
    return max(ratios) - min(ratios) < 1e-3 * max(ratios) and max(steps) - min(steps) > 1e-3 * max(steps)


def share_scale(rows: list[Share]) -> float:
    """The value drawn full-width in a shares table: the largest activation or corpus share (never 0)."""
    return max(max(max(r.act_share, r.frame_share) for r in rows), 1e-12)


@dataclass(frozen=True)
class Interval:
    """One interval of a clip-page tier, placed on the spectrogram's time axis."""

    label: str
    start: float
    end: float
    left: str
    """Percent of the axis, formatted."""
    width: str


def tier(intervals: list[Word] | list[Phone], span: float) -> list[Interval]:
    """Words or phones as intervals over a time axis of `span` seconds (the spectrogram's width)."""
    span = max(span, 1e-3)
    out = []
    for item in intervals:
        label = item.word if isinstance(item, Word) else item.phone
        a = min(max(item.start / span, 0.0), 1.0)
        b = min(max(item.end / span, a), 1.0)
        out.append(Interval(label, item.start, item.end, f"{a * 100:.2f}", f"{max(b - a, 0.004) * 100:.2f}"))
    return out


def clip_span(clip: ClipDetail) -> float:
    """Seconds the clip's spectrogram and timeline span: its encoder frames (20 ms each), else its length."""
    return clip.n_frames * FRAME_SECONDS if clip.n_frames > 0 else clip.duration


def by_type(features: list[ClipFeature]) -> list[tuple[str, list[ClipFeature]]]:
    """A clip's timeline rows grouped by feature type, in the taxonomy's order (untyped last), each group
    keeping the strongest-first order."""
    groups: dict[str, list[ClipFeature]] = {}
    for cf in features:
        groups.setdefault(cf.label_type, []).append(cf)
    order: dict[str, int] = {kind: i for i, kind in enumerate(LABEL_TYPES)}
    return sorted(groups.items(), key=lambda item: order.get(item[0], len(order)))


@dataclass(frozen=True)
class VersionView:
    """One row of the feature page's parallel-sentence card."""

    v: ParallelVersion
    anchor: str
    audio_url: Markup
    points: str
    """Sparkline polygon in a viewBox 2 units wide per trace point and `OVERLAY_HEIGHT` tall."""
    view_width: int
    width: str
    """Percent of the row: the clip's share of the group's longest clip (one time scale per group)."""


def parallel_view(group: ParallelGroup, version: str) -> list[VersionView]:
    """The rows of one parallel group: sparklines on one time and activation scale, play URLs."""
    longest = max((len(v.trace) * v.seconds_per_point for v in group.versions), default=0.0)
    rows = []
    for v in group.versions:
        seconds = len(v.trace) * v.seconds_per_point
        rows.append(
            VersionView(
                v=v,
                anchor=f"par-{group.rank}-{v.clip_id}",
                audio_url=Markup(f"/api/v1/clips/{v.clip_id}/audio?v={escape(version)}"),
                points=overlay_points(v.trace, group.peak),
                view_width=2 * max(len(v.trace), 1),
                width=f"{seconds / longest * 100 if longest > 0 else 100:.1f}",
            )
        )
    return rows
