"""The /live page in headless Chromium: upload a clip, see its analysis, steer it, see three transcripts.

Real app over HTTP (uvicorn), tiny random Whisper + a small random SAE; Debian's chromium through Playwright.
"""

from __future__ import annotations

import json
import urllib.parse

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

        # a link with ?spec= fills the steering panel (what "send to steering" on other pages opens)
        spec = '{"toward_language": "fr", "method": "dom", "strength": 0.4}'
        page.goto(server.url + "/live?spec=" + urllib.parse.quote(spec))
        page.wait_for_selector("#live-by-language", state="visible")
        assert page.locator("#live-method").input_value() == "dom"
        assert page.locator("#live-language").input_value() == "fr"
        assert json.loads(page.locator("#live-spec").input_value())["strength"] == 0.4
        # this server has no atlas, so no presets: the preset panel says how to make them
        assert page.locator("#live-preset option").count() == 0
