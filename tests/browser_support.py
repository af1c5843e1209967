"""Debian's chromium driven by Playwright, for the browser tests (tests/monitor/test_browser.py,
tests/web/test_browser_dashboard.py).

Skipped, with the reason, when ``/usr/bin/chromium`` or the ``playwright`` package is missing — unless
``MLS_REQUIRE_BROWSER=1``, which turns the skip into a failure (for CI images that ship the browser).
Playwright's own browser download is not used: it is not reachable everywhere, the distribution's is.
Screenshots land in ``test-artifacts/browser/`` for a human to look at.
"""

from __future__ import annotations

import os
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from datetime import date, datetime, timedelta
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


def watch_errors(page, errors: list[str]) -> None:
    """Collect the page's console errors and failed loads in ``errors``. Console errors catch CSP violations
    and script errors; failed loads are checked by URL instead, so the browser's own favicon probe does not count."""
    page.on("console", lambda message: errors.append(message.text)
            if message.type == "error" and not message.text.startswith("Failed to load resource") else None)
    page.on("response", lambda response: errors.append(f"{response.status} {response.url}")
            if response.status >= 400 and not response.url.endswith("/favicon.ico") else None)
    page.set_default_timeout(15000)


def sign_in(page, next_path: str = "/", *, language: str | None = None) -> None:
    """Sign in as the demo administrator through the login form; waits until ``next_path`` has loaded."""
    import re

    from sidecar.devstack import seed

    page.goto(f"/login?next={next_path}" + (f"&lang={language}" if language else ""))
    form = page.locator("form.login-form")
    form.locator("input[name=login]").fill(seed.DEMO_ADMIN_LOGIN)
    form.locator("input[name=password]").fill(seed.DEMO_ADMIN_PASSWORD)
    with page.expect_navigation(url=re.compile(re.escape(next_path.split("?")[0]) + r"(\?.*)?$")):
        form.locator("button[type=submit]").click()


@contextmanager
def served_demo(site_url: str, settings, start: datetime, *, users: int, levels: int, seed: int, weeks: int,
                prepare: Callable | None = None) -> Iterator:
    """A demo site with ``weeks`` weekly refreshes before today's (the trend) and whatever ``prepare(runtime)``
    adds, the sidecar serving it on a real socket: yields ``(base_url, runtime)``."""
    from sidecar.app import create_app
    from sidecar.bootstrap import build_runtime, store_url
    from sidecar.clock import FixedClock
    from sidecar.devstack.server import serve_in_thread
    from sidecar.devstack.site import build_demo_site
    from sidecar.monitor.refresh import SleeperRefresher
    from tests.stores import migrate_store

    today: date = start.date()
    build_demo_site(site_url, users=users, levels=levels, seed=seed, today=today, fresh=True)
    migrate_store(store_url(settings))
    runtime = build_runtime(settings, clock=FixedClock(start))
    refresher = SleeperRefresher(runtime)
    for weeks_ago in range(weeks, 0, -1):
        refresher.refresh_all(day=today - timedelta(weeks=weeks_ago), sync_certificates=weeks_ago == weeks)
    refresher.refresh_all()
    if prepare is not None:
        prepare(runtime)
    base_url, stop = serve_in_thread(create_app(runtime))
    try:
        yield base_url, runtime
    finally:
        stop()
        runtime.close()
