"""The atlas in headless Chromium: overview, search, feature list paging, feature page playback, clip page.

The real server (`whisper-atlas serve`, uvicorn in a subprocess) over a synthetic atlas written through the
real writer, on a free loopback port; Debian's chromium driven by Playwright. Screenshots land in
test-artifacts/screenshots/ (git-ignored) for a human look.
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
from tests.fixtures.synthetic_atlas import write_synthetic_atlas

pytestmark = pytest.mark.browser

ROOT = Path(__file__).resolve().parents[2]


@pytest.fixture(scope="module")
def server(tmp_path_factory: pytest.TempPathFactory) -> Iterator[str]:
    """`whisper-atlas serve` over a 600-feature synthetic atlas; yields its base URL."""
    atlas = write_synthetic_atlas(
        tmp_path_factory.mktemp("atlas") / "atlas.duckdb", n_features=600, n_clips=24
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


def test_overview(page, server: str) -> None:
    page.goto(server + "/")
    assert page.title().startswith("Whisper Atlas")
    assert page.locator("svg.chart rect.bar").count() > 0
    assert page.locator("text=Sparse autoencoder").is_visible()
    shot(page, "overview", full_page=True)


def test_search_from_the_keyboard(page, server: str) -> None:
    page.goto(server + "/")
    page.keyboard.press("/")
    assert page.evaluate("document.activeElement.id") == "search"
    page.keyboard.type("speech")
    page.keyboard.press("Enter")
    page.wait_for_url(re.compile(r"/features\?q=speech"))
    labels = page.locator("table.features td.label-cell").all_inner_texts()
    assert labels and all("speech" in label for label in labels)
    shot(page, "search")


def test_feature_list_paginates_with_htmx_and_keyboard(page, server: str) -> None:
    page.goto(server + "/features")
    first = page.locator("table.features tbody tr").first.get_attribute("data-href")
    page.click("a[rel=next]")
    page.wait_for_url(re.compile(r"offset=50"))
    page.wait_for_function(f"document.querySelector('table.features tbody tr').dataset.href !== '{first}'")
    assert page.locator("text=51–100 of").is_visible()
    page.select_option("select[name=language]", "fr")
    page.wait_for_url(re.compile(r"language=fr"))
    page.wait_for_function(
        "[...document.querySelectorAll('table.features tbody tr td:nth-child(5)')]"
        ".every(td => td.textContent.trim().startsWith('fr'))"
    )
    page.keyboard.press("j")
    page.keyboard.press("j")
    selected = page.locator("tr.selected").get_attribute("data-href")
    page.keyboard.press("Enter")
    page.wait_for_url(re.compile(re.escape(selected) + "$"))
    shot(page, "feature-from-list")


def test_feature_list_filters_by_type(page, server: str) -> None:
    page.goto(server + "/features")
    page.select_option("select[name=type]", "phonetic")
    page.wait_for_url(re.compile(r"type=phonetic"))
    page.wait_for_function(
        "(badges => badges.length > 0 && badges.every(b => b.textContent === 'phonetic'))"
        "([...document.querySelectorAll('table.features td.label-cell .type')])"
    )
    assert (
        page.locator("table.features tbody tr").count()
        == page.locator("td.label-cell .type-phonetic").count()
    )


def test_feature_page_plays_audio_and_shows_spectrograms(page, server: str) -> None:
    page.goto(server + "/features/random")
    page.wait_for_url(re.compile(r"/features/\d+$"))
    first = page.locator("li.ex img").first
    first.scroll_into_view_if_needed()
    page.wait_for_function("img => img.complete && img.naturalWidth > 0", arg=first.element_handle())
    assert first.evaluate("img => img.naturalHeight") == 80
    assert page.locator("li.ex svg.acts polygon").count() > 0
    page.locator("a.play").first.click()
    page.wait_for_function("document.getElementById('player').currentTime > 0")
    assert page.locator("li.ex.playing .playhead").is_visible()
    shot(page, "feature-playing")
    page.keyboard.press("Escape")
    assert page.evaluate("document.getElementById('player').paused")


def test_neighbour_links_and_next_feature_key(page, server: str) -> None:
    page.goto(server + "/features/10")
    neighbour = page.locator("ol.related a").first
    href = neighbour.get_attribute("href")
    neighbour.click()
    page.wait_for_url(re.compile(re.escape(href) + "$"))
    current = int(href.rsplit("/", 1)[1])
    next_href = page.locator("a[rel=next]").get_attribute("href")
    page.keyboard.press("j")
    page.wait_for_url(re.compile(re.escape(next_href) + "$"))
    assert int(next_href.rsplit("/", 1)[1]) > current


def test_more_examples_load_in_place(page, server: str) -> None:
    page.goto(server + "/features/random")
    before = page.locator("#top-examples li.ex").count()
    page.click("#top-examples li.more a")
    page.wait_for_function(f"document.querySelectorAll('#top-examples li.ex').length > {before}")
    assert page.locator("#top-examples li.more").count() == 0


def test_clip_page_plays_and_seeks(page, server: str) -> None:
    page.goto(server + "/clips/0")
    image = page.locator("#clip-fig img")
    page.wait_for_function("img => img.complete && img.naturalWidth > 0", arg=image.element_handle())
    assert page.locator("table.timeline tr").count() > 0
    page.keyboard.press("p")
    page.wait_for_function("document.getElementById('clip-audio').currentTime > 0")
    page.locator("td.track").nth(1).click()
    page.wait_for_function("!document.getElementById('clip-audio').paused")
    shot(page, "clip", full_page=True)


def test_clip_tiers_are_keyboard_friendly(page, server: str) -> None:
    page.goto(server + "/clips/0")
    words = page.locator('.tier[data-tier="words"] button.iv')
    phones = page.locator('.tier[data-tier="phones"] button.iv')
    assert words.count() > 0 and phones.count() > 0
    spec = page.locator("#clip-fig .spec-img").bounding_box()
    tier = page.locator('.tier[data-tier="phones"]').bounding_box()
    assert abs(spec["x"] - tier["x"]) < 1 and abs(spec["width"] - tier["width"]) < 1, (
        "on the spectrogram axis"
    )
    words.first.focus()
    page.keyboard.press("ArrowRight")
    assert page.evaluate("document.activeElement.textContent") == words.nth(1).text_content()
    page.keyboard.press("ArrowDown")
    assert page.evaluate("document.activeElement.closest('.tier').dataset.tier") == "phones"
    page.keyboard.press("Enter")
    page.wait_for_function("!document.getElementById('clip-audio').paused")
    shot(page, "clip-tiers")


def test_parallel_card_plays_a_version(page, server: str) -> None:
    for feature_id in range(1, 40):
        page.goto(server + f"/features/{feature_id}")
        if page.locator("#parallel a.play").count():
            break
    else:
        pytest.fail("no feature page with a parallel card")
    assert page.locator("#parallel .spark-box svg polygon").count() > 0
    page.locator("#parallel a.play").first.click()
    page.wait_for_function("document.getElementById('player').currentTime > 0")
    assert page.locator("#parallel .spark-box .playhead").first.is_visible()
    shot(page, "feature-parallel")
