"""The /live page in headless Chromium: upload a clip, see its analysis, steer it, see three transcripts.

Real app over HTTP (uvicorn), tiny random Whisper + a small random SAE; Debian's chromium through Playwright.
"""

from __future__ import annotations

import pytest

from tests.browser.conftest import shot
from tests.fixtures.audio import audio_bytes, speechlike
from tests.fixtures.live_server import LiveServer, live_app

pytestmark = pytest.mark.browser


def test_upload_analyse_and_steer_shows_three_transcripts(data_root, tmp_path, page) -> None:
    clip = tmp_path / "hello.wav"
    clip.write_bytes(audio_bytes(speechlike(2.0)))
    with LiveServer(live_app(data_root)) as server:
        page.goto(server.url + "/live")
        page.set_input_files("#live-file", str(clip))
        page.click("#live-analyze")
        page.wait_for_selector("#live-transcript", timeout=60_000)
        assert page.locator(".live-langs tr").count() >= 1
        assert page.locator("img.live-spectrogram").is_visible()

        page.locator(".live-add").first.click()  # steer with the clip's strongest feature
        assert page.locator(".live-feature").count() == 1
        page.eval_on_selector(
            ".live-feature input[type=range]",
            "el => { el.value = '2'; el.dispatchEvent(new Event('input', {bubbles: true})); }",
        )
        assert page.locator(".live-feature output").inner_text() == "2"

        page.click("#live-steer")
        page.wait_for_selector(".live-steer-result", timeout=60_000)
        cards = page.locator(".live-steer-result .live-transcript")
        assert cards.count() == 3
        assert [cards.nth(i).get_attribute("data-kind") for i in range(3)] == [
            "baseline",
            "reconstructed",
            "steered",
        ]
        shot(page, "live-steered", full_page=True)

        page.click("text=English → Spanish (difference of means)")
        assert page.locator("#live-by-language").is_visible()
        assert page.locator("#live-method").input_value() == "dom"
