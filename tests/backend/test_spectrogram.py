"""Log-mel PNGs (endpoint and renderer) and the activation overlay geometry."""

from __future__ import annotations

import io
import math

import numpy as np
import pytest
from fastapi.testclient import TestClient
from PIL import Image

from backend.errors import InvalidRequestError
from backend.services.spectrogram import PALETTE, mel_window, overlay_points, render_png


def test_render_png_maps_values_through_the_palette_low_bins_at_the_bottom() -> None:
    mel_MT = np.zeros((80, 30), np.uint8)
    mel_MT[0] = 255  # the lowest mel bin, loudest
    image = Image.open(io.BytesIO(render_png(mel_MT))).convert("RGB")
    assert image.size == (30, 80)
    assert image.getpixel((5, 79)) == tuple(PALETTE[255 * 3 : 255 * 3 + 3])
    assert image.getpixel((5, 0)) == tuple(PALETTE[0:3])


def test_mel_window() -> None:
    assert mel_window(300, None, None) == (0, 300)
    assert mel_window(300, 0.5, 1.0) == (50, 100)
    assert mel_window(300, 2.5, 9.0) == (250, 300)
    with pytest.raises(InvalidRequestError):
        mel_window(300, 3.5, None)


def test_spectrogram_endpoint_whole_and_window(client: TestClient) -> None:
    clip = client.get("/api/v1/clips/0").json()
    whole = client.get("/api/v1/clips/0/spectrogram.png")
    assert whole.status_code == 200 and whole.headers["content-type"] == "image/png"
    width, height = Image.open(io.BytesIO(whole.content)).size
    assert height == 80 and width == 2 * clip["n_frames"]
    window = client.get("/api/v1/clips/0/spectrogram.png", params={"start": 0.1, "end": 0.6})
    assert Image.open(io.BytesIO(window.content)).size == (50, 80)
    assert client.get("/api/v1/clips/0/spectrogram.png", params={"start": 999}).status_code == 422
    assert client.get("/api/v1/clips/999/spectrogram.png").status_code == 404


def test_versioned_urls_are_cached_for_good(client: TestClient) -> None:
    version = client.get("/healthz").json()["version"]
    pinned = client.get("/api/v1/clips/0/spectrogram.png", params={"v": version})
    assert "immutable" in pinned.headers["cache-control"]
    unpinned = client.get("/api/v1/clips/0/spectrogram.png")
    assert unpinned.headers["cache-control"] == "no-cache" and unpinned.headers["etag"]


def overlay_reference(
    acts: list[float], scale: float, offset: int, height: int = 100
) -> list[tuple[int, int]]:
    """Plain loop: baseline corners plus one point per frame centre (rounded half up)."""
    points = [(2 * offset, height)]
    for i, a in enumerate(acts):
        y = height - math.floor(min(max(a / scale, 0.0), 1.0) * height + 0.5)
        points.append((2 * (offset + i) + 1, y))
    return points + [(2 * (offset + len(acts)), height)]


@pytest.mark.parametrize("offset", [0, 7, 1490])
def test_overlay_points_match_a_plain_reference(offset: int) -> None:
    acts = list(np.random.default_rng(0).uniform(-1, 12, 40))
    numbers = [int(v) for v in overlay_points(acts, 10.0, offset).split(",")]
    assert list(zip(numbers[::2], numbers[1::2])) == overlay_reference(acts, 10.0, offset)
    assert overlay_points([], 1.0) == ""
