"""Headless Chromium for the browser tests: Debian's `chromium` driven by Playwright for Python.

Playwright's own browser download cannot work offline, so the system Chromium is launched by path with the
flags that keep it from reaching for the network. Screenshots land in test-artifacts/screenshots/.
"""

from __future__ import annotations

import shutil
from pathlib import Path

import pytest

SHOTS = Path(__file__).resolve().parents[2] / "test-artifacts" / "screenshots"
TIMEOUT_MS = 20_000
CHROMIUM_ARGS = [
    "--headless",
    "--no-sandbox",
    "--disable-gpu",
    "--disable-background-networking",
    "--disable-component-update",
    "--autoplay-policy=no-user-gesture-required",
]


@pytest.fixture(scope="session")
def browser():
    playwright_api = pytest.importorskip(
        "playwright.sync_api", reason="Playwright for Python is not installed"
    )
    executable = shutil.which("chromium")
    if executable is None:
        pytest.skip("no chromium on PATH (Debian: apt-get install chromium)")
    with playwright_api.sync_playwright() as p:
        instance = p.chromium.launch(executable_path=executable, args=CHROMIUM_ARGS)
        yield instance
        instance.close()


@pytest.fixture
def page(browser):
    """A fresh tab; the test fails if the page raised a JavaScript error."""
    # bypass_csp: Playwright's wait_for_function evaluates strings, which the pages' CSP (rightly) forbids
    context = browser.new_context(viewport={"width": 1400, "height": 1000}, bypass_csp=True)
    tab = context.new_page()
    tab.set_default_timeout(TIMEOUT_MS)
    errors: list[str] = []
    tab.on("pageerror", lambda exc: errors.append(str(exc)))
    yield tab
    context.close()
    assert not errors, f"JavaScript errors: {errors}"


def shot(page, name: str, full_page: bool = False) -> None:
    SHOTS.mkdir(parents=True, exist_ok=True)
    page.screenshot(path=str(SHOTS / f"{name}.png"), full_page=full_page)
