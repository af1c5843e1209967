"""The sleepers list for action in a real browser (see test_browser.py for how the browser is found): the
default order, Next then Previous with "page N of M", 50 rows a page and the quick filter "expired in the
last 30 days", in English and Russian. Screenshots: test-artifacts/browser/30-sleepers-*.png."""

from __future__ import annotations

import re

import pytest

from sidecar.monitor.service import MonitorService, SleeperQuery
from tests.browser_support import shot, sign_in, watch_errors
from tests.monitor.test_browser import BUSY_LEVEL, _rows, browser, served  # noqa: F401 - fixtures

WORDS = {
    "en": {"page": "Page {n} of {m}", "within": "Days since expiry ≤ 30"},
    "ru": {"page": "Страница {n} из {m}", "within": "Дней после окончания ≤ 30"},
}


@pytest.mark.slow
def test_admin_pages_the_sleepers_both_ways_with_sizes_and_the_quick_filter(browser, served):  # noqa: F811
    base_url, runtime = served
    expected = [(r.user_id, r.term_id) for r in MonitorService(runtime).iterate(
        SleeperQuery(levels=(BUSY_LEVEL,), sort="expired_on", descending=True))]
    recent = {(r.user_id, r.term_id) for r in MonitorService(runtime).iterate(
        SleeperQuery(levels=(BUSY_LEVEL,), expired_within=30))}
    assert 40 < len(expected) <= 60, "the busy level should fill three pages of 20 and two of 50"
    pages = -(-len(expected) // 20)

    context = browser.new_context(base_url=base_url, locale="en-US", viewport={"width": 1360, "height": 900})
    page = context.new_page()
    errors: list[str] = []
    watch_errors(page, errors)
    try:
        sign_in(page, "/monitor")
        for language, words in WORDS.items():
            # Default order: the most recent expiry first.
            page.goto(f"/monitor/sleepers?level={BUSY_LEVEL}&lang={language}")
            assert _rows(page) == expected[:20]
            assert page.locator(".page-of").inner_text() == words["page"].format(n=1, m=pages)
            assert page.locator("a.prev").count() == 0
            shot(page, f"30-sleepers-default-order-{language}")

            # Next, then Previous: the same rows as before.
            page.click("a.next")
            page.wait_for_url(re.compile(r"after="))
            assert _rows(page) == expected[20:40]
            assert page.locator(".page-of").inner_text() == words["page"].format(n=2, m=pages)
            shot(page, f"30-sleepers-next-{language}")
            page.click("a.prev")
            page.wait_for_url(re.compile(r"before="))
            assert _rows(page) == expected[:20]
            assert page.locator(".page-of").inner_text() == words["page"].format(n=1, m=pages)
            shot(page, f"30-sleepers-previous-{language}")

            # 50 rows a page.
            page.click("a.size-50")
            page.wait_for_url(re.compile(r"limit=50"))
            assert _rows(page) == expected[:50]
            assert page.locator(".page-of").inner_text() == words["page"].format(n=1, m=-(-len(expected) // 50))
            assert page.locator("a.size-50").get_attribute("aria-current") == "true"
            shot(page, f"30-sleepers-50-a-page-{language}")

            # Expired in the last 30 days.
            page.click("a.within-30")
            page.wait_for_url(re.compile(r"within=30"))
            assert set(_rows(page)) == recent
            assert words["within"] in page.locator(".within-note").inner_text()
            shot(page, f"30-sleepers-last-30-days-{language}")
        assert not errors, errors
    finally:
        context.close()
