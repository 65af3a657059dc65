"""Whisper's log-mel spectrogram as a PNG, and the activation overlay drawn over it in the page.

Browser audio widgets (wavesurfer.js) compute their own FFT, so they cannot show the 80-bin log-mel Whisper
actually reads: it is rendered here from the atlas's uint8 copy with Pillow and one palette (a palette image,
no matplotlib: a few ms for 80x500 px). `palette_png` is the one PNG renderer of the server: the live
upload view draws its spectrogram and timeline heatmap with it too. The image stays feature-independent (and
cacheable per clip window); each feature's per-frame activation is an SVG path laid over it in the page.
"""

from __future__ import annotations

import io
from itertools import chain

import numpy as np
from PIL import Image

from backend.errors import InvalidRequestError
from pipelines.constants import FRAMES_PER_WINDOW, MEL_FRAME_SECONDS

OVERLAY_HEIGHT = 100
"""Height of the overlay's SVG box (the page stretches it over the spectrogram)."""

_VIRIDIS_ANCHORS = np.array(
    [
        (0.000, 0x44, 0x01, 0x54),
        (0.125, 0x48, 0x28, 0x78),
        (0.250, 0x3E, 0x49, 0x89),
        (0.375, 0x31, 0x68, 0x8E),
        (0.500, 0x26, 0x82, 0x8E),
        (0.625, 0x1F, 0x9E, 0x89),
        (0.750, 0x35, 0xB7, 0x79),
        (0.875, 0x6E, 0xCE, 0x58),
        (1.000, 0xFD, 0xE7, 0x25),
    ]
)
"""Viridis (perceptually uniform, colour-blind safe) sampled at nine points; linear in between."""


def _palette() -> list[int]:
    x = np.linspace(0.0, 1.0, 256)
    rgb = [np.interp(x, _VIRIDIS_ANCHORS[:, 0], _VIRIDIS_ANCHORS[:, c]) for c in (1, 2, 3)]
    return np.stack(rgb, axis=1).round().astype(np.uint8).ravel().tolist()


PALETTE = _palette()
"""256 RGB entries (flat), index = the stored uint8 log-mel value."""


def mel_window(n_mel_frames: int, start: float | None, end: float | None) -> tuple[int, int]:
    """Mel frame range [a, b) for the window [start, end) seconds of a clip; the whole clip when omitted."""
    a = 0 if start is None else int(round(start / MEL_FRAME_SECONDS))
    b = n_mel_frames if end is None else int(round(end / MEL_FRAME_SECONDS))
    b = min(b, n_mel_frames)
    if a >= b:
        raise InvalidRequestError(
            f"Empty spectrogram window: start {start} s, end {end} s, clip has "
            f"{n_mel_frames * MEL_FRAME_SECONDS:.2f} s of log-mel."
        )
    return a, b


def palette_png(pixels_HW: np.ndarray, size: tuple[int, int] | None = None) -> bytes:
    """PNG of uint8 palette indices (row 0 at the top) in `PALETTE`, scaled to `size` (width, height) by
    nearest neighbour when given."""
    image = Image.fromarray(np.ascontiguousarray(pixels_HW, dtype=np.uint8), mode="L").convert("P")
    image.putpalette(PALETTE)
    if size is not None:
        image = image.resize(size, Image.Resampling.NEAREST)
    out = io.BytesIO()
    image.save(out, format="PNG", compress_level=3)
    return out.getvalue()


def render_png(mel_MT: np.ndarray) -> bytes:
    """PNG of a uint8 log-mel (n_mels, n_frames): low frequencies at the bottom, a pixel per bin and frame."""
    return palette_png(mel_MT[::-1])


_X = [str(2 * i + 1) for i in range(FRAMES_PER_WINDOW + 1)]
_Y = [str(i) for i in range(OVERLAY_HEIGHT + 1)]
"""Frame-centre x and integer y coordinates as strings, made once: the overlay is built by joining them."""


def overlay_points(acts: list[float], scale: float, offset: int = 0) -> str:
    """SVG polygon points of per-frame activations, in a box 2 units wide per frame and 100 tall.

    Frame `offset + i` is drawn at x = 2(offset + i) + 1; activation 0 sits at y = 100 and `scale` (or more)
    at y = 0, rounded to whole units (half up). A feature page draws a few thousand points, so the string is
    joined from precomputed pieces rather than formatted number by number (4x faster than numpy here).
    """
    n = len(acts)
    if n == 0:
        return ""
    h = OVERLAY_HEIGHT
    k = h / max(scale, 1e-9)
    ys = [_Y[h - (0 if a <= 0 else h if a * k >= h else int(a * k + 0.5))] for a in acts]
    xs = _X[offset : offset + n] if offset + n <= len(_X) else [str(2 * (offset + i) + 1) for i in range(n)]
    return f"{2 * offset},{h},{','.join(chain.from_iterable(zip(xs, ys)))},{2 * (offset + n)},{h}"
