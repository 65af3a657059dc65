"""Explore by example in headless Chromium: drag a span on a clip, play a similar moment, open a feature from
the map, select from the keyboard, save to a list, and search from an uploaded clip on /live.

The real server (`whisper-atlas serve` in a subprocess) over a synthetic atlas written by the real build;
the live test runs the app in a thread on the tiny Whisper. Screenshots land in test-artifacts/screenshots/.
"""

from __future__ import annotations

import re
import socket
import subprocess
import sys
import time
from pathlib import Path
from typing import Iterator

import httpx
import pytest

from tests.browser.conftest import shot
from tests.fixtures.audio import audio_bytes, speechlike
from tests.fixtures.live_server import LiveServer, live_app
from tests.fixtures.synthetic_atlas import write_synthetic_atlas

pytestmark = pytest.mark.browser

ROOT = Path(__file__).resolve().parents[2]


@pytest.fixture(scope="module")
def server(tmp_path_factory: pytest.TempPathFactory) -> Iterator[str]:
    """`whisper-atlas serve` over a 400-feature synthetic atlas; yields its base URL."""
    atlas = write_synthetic_atlas(
        tmp_path_factory.mktemp("atlas") / "atlas.duckdb", n_features=400, n_clips=24
    )
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    command = [sys.executable, "-m", "pipelines.cli", "serve", "--atlas", str(atlas), "--port", str(port)]
    process = subprocess.Popen([*command, "--log-level", "warning"], cwd=ROOT)
    base = f"http://127.0.0.1:{port}"
    try:
        deadline = time.monotonic() + 60
        while True:
            try:
                if httpx.get(base + "/healthz", timeout=2).json()["status"] == "ok":
                    break
            except httpx.HTTPError:
                pass
            if process.poll() is not None or time.monotonic() > deadline:
                pytest.fail("the server did not start")
            time.sleep(0.2)
        yield base
    finally:
        process.terminate()
        process.wait(timeout=30)


def drag(page, selector: str, a: float, b: float) -> None:
    """Drag across the element from fraction `a` to fraction `b` of its width."""
    box = page.locator(selector).first.bounding_box()
    y = box["y"] + box["height"] / 2
    page.mouse.move(box["x"] + a * box["width"], y)
    page.mouse.down()
    page.mouse.move(box["x"] + b * box["width"], y, steps=6)
    page.mouse.up()


def test_drag_a_span_see_its_features_and_play_a_similar_moment(page, server: str) -> None:
    page.goto(server + "/clips/0")
    drag(page, "#clip-fig .spec-img", 0.2, 0.55)
    page.wait_for_selector(".span-panel table.span-features tbody tr")
    assert re.search(r"span=0%3A[\d.]+-[\d.]+", page.url), page.url
    label = page.locator("#clip-fig .span-sel").get_attribute("data-label")
    start, end = (float(t) for t in re.findall(r"[\d.]+", label)[:2])
    body = httpx.get(f"{server}/api/v1/clips/0/span", params={"start": start, "end": end}).json()
    first = page.locator(".span-panel table.span-features tbody tr").first
    assert f"#{body['features'][0]['id']}" in first.inner_text()  # the largest share first, as the API says
    page.wait_for_selector(".span-panel ol.similar li")
    shot(page, "explore-clip-span", full_page=True)

    moment = page.locator(".span-panel ol.similar li").first
    moment.locator("a.play").click()
    page.wait_for_function("document.getElementById('player').currentTime > 0")
    assert "/audio?start=" in page.evaluate("document.getElementById('player').src")
    assert moment.locator(".playhead").is_visible()
    shot(page, "explore-similar-playing")

    href = moment.locator("a.clip").get_attribute("href")
    moment.locator("a.clip").click()
    page.wait_for_url(re.compile(re.escape(href.split("?")[0]) + r"\?span="))
    page.wait_for_selector(".span-panel table.span-features")  # the link reopens the span it names
    assert page.locator("#clip-fig .span-sel").count() == 1


def test_open_a_feature_from_the_map(page, server: str) -> None:
    page.goto(server + "/map")
    page.wait_for_function("document.getElementById('map-status').textContent.includes('live features')")
    points = httpx.get(server + "/api/v1/map").json()["points"]
    canvas = page.locator("#map-canvas").bounding_box()
    scale = 0.92 * min(canvas["width"], canvas["height"])  # map.js's whole-map view (x = y = 0.5, z = 1)
    target = points[len(points) // 2]
    x = canvas["x"] + canvas["width"] / 2 + (target["x"] - 0.5) * scale
    y = canvas["y"] + canvas["height"] / 2 - (target["y"] - 0.5) * scale
    page.mouse.move(x, y)
    tip = page.locator(".map-tip")
    tip.wait_for(state="visible")
    shown = int(
        re.match(r"#(\d+)", tip.inner_text()).group(1)
    )  # the dot under the pointer (maybe a neighbour)
    assert page.locator("#map-legend li").count() >= 2
    shot(page, "explore-map")
    page.mouse.click(x, y)
    page.wait_for_url(re.compile(rf"/features/{shown}$"))
    page.wait_for_function("document.querySelector('canvas[data-map-mini]').width > 0")
    shot(page, "explore-feature-mini-map")


def test_map_view_and_colouring_live_in_the_url(page, server: str) -> None:
    page.goto(server + "/map?f=7&color=density")
    page.wait_for_function("document.getElementById('map-status').textContent.includes('#7')")
    assert page.locator("#map-color").input_value() == "density"
    page.locator("#map-canvas").focus()
    page.keyboard.press("+")
    page.keyboard.press("ArrowLeft")
    page.wait_for_function("new URLSearchParams(location.search).get('z') !== null")
    assert page.url.startswith(server + "/map")  # the arrows pan the map, not the feature pager
    url = page.url
    page.goto(url)
    page.wait_for_function("document.getElementById('map-status').textContent.includes('#7')")
    page.wait_for_function(
        "document.querySelectorAll('#map-table tbody tr').length > 0"
    )  # the text alternative
    assert page.url == url  # the reopened link keeps its view


def test_keyboard_span_on_a_feature_example_and_save_to_a_list(page, server: str) -> None:
    page.goto(server + "/features/10")
    surface = page.locator("li.ex figure .spec-img").first
    surface.focus()
    page.keyboard.press("Shift+ArrowRight")
    page.keyboard.press("ArrowRight")
    page.keyboard.press("Enter")
    assert page.url.startswith(server + "/features/10")  # arrows on a spectrogram do not change feature
    page.wait_for_selector("li.ex .span-panel table.span-features tbody tr")
    row = page.locator(".span-panel table.span-features tbody tr").first
    feature = row.locator("[data-save-feature]").get_attribute("data-save-feature")
    row.locator("[data-save-feature]").click()
    page.fill("#save-dialog input[name=new]", "vowels")
    page.click("#save-dialog button[value=save]")
    page.goto(server + "/lists")
    card = page.locator('[data-list="vowels"]')
    assert card.locator(f'a[href="/features/{feature}"]').count() == 1
    with page.expect_download() as download:
        card.locator("[data-export-list]").click()
    assert f'"id": {feature}' in Path(download.value.path()).read_text()
    shot(page, "explore-lists")
    page.keyboard.press("?")
    assert page.locator("#help").get_by_text("select a span on a spectrogram").is_visible()


def test_similar_moments_of_an_uploaded_clip(data_root: Path, tmp_path: Path, page) -> None:
    write_synthetic_atlas(
        data_root / "runs" / "default" / "atlas.duckdb", 96, 12, pages=False
    )  # tiny SAE's width
    clip = tmp_path / "hello.wav"
    clip.write_bytes(audio_bytes(speechlike(2.0)))
    with LiveServer(live_app(data_root)) as server:
        page.goto(server.url + "/live")
        page.set_input_files("#live-file", str(clip))
        page.click("#live-analyze")
        page.wait_for_selector(".span-surface img.live-spectrogram", timeout=60_000)
        drag(page, ".span-surface", 0.1, 0.6)
        page.wait_for_selector(".span-panel table.span-features tbody tr", timeout=60_000)
        page.keyboard.press("s")
        page.wait_for_selector(".span-panel ol.similar li", timeout=60_000)
        page.locator(".span-panel .live-add").first.click()  # to the steering panel
        assert page.locator(".live-feature").count() == 1
        shot(page, "explore-live-similar", full_page=True)
