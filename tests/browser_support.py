"""Debian's chromium driven by Playwright, for the browser tests (tests/monitor/test_browser.py,
tests/web/test_browser_dashboard.py).

Skipped, with the reason, when ``/usr/bin/chromium`` or the ``playwright`` package is missing — unless
``MLS_REQUIRE_BROWSER=1``, which turns the skip into a failure (for CI images that ship the browser).
Playwright's own browser download is not used: it is not reachable everywhere, the distribution's is.
Screenshots land in ``test-artifacts/browser/`` for a human to look at.
"""

from __future__ import annotations

import os
from collections.abc import Iterator
from pathlib import Path

import pytest

CHROMIUM = Path("/usr/bin/chromium")
CHROMIUM_ARGS = ["--headless", "--no-sandbox", "--disable-gpu", "--disable-quic", "--no-first-run",
                 "--disable-background-networking", "--disable-component-update", "--disable-sync"]
ARTIFACTS = Path(__file__).resolve().parents[1] / "test-artifacts" / "browser"


def missing_browser() -> str | None:
    if not CHROMIUM.exists():
        return f"{CHROMIUM} not found (apt-get install chromium)"
    try:
        import playwright.sync_api  # noqa: F401
    except ImportError:
        return "the playwright package is not installed (pip install -e '.[dev]')"
    return None


def launched_browser() -> Iterator:
    """The body of a module-scoped ``browser`` fixture: a launched chromium, or a skip (a failure when required)."""
    problem = missing_browser()
    if problem:
        if os.environ.get("MLS_REQUIRE_BROWSER") == "1":
            pytest.fail(f"browser test required (MLS_REQUIRE_BROWSER=1) but {problem}", pytrace=False)
        pytest.skip(f"browser test skipped: {problem}; set MLS_REQUIRE_BROWSER=1 to make this a failure")
    from playwright.sync_api import sync_playwright

    with sync_playwright() as p:
        launched = p.chromium.launch(executable_path=str(CHROMIUM), args=CHROMIUM_ARGS, headless=True)
        try:
            yield launched
        finally:
            launched.close()


def shot(page, name: str) -> None:
    ARTIFACTS.mkdir(parents=True, exist_ok=True)
    page.screenshot(path=str(ARTIFACTS / f"{name}.png"), full_page=True)
