"""The dashboard in a real browser at 1366 px, in Russian and English: signing in lands on it, its two charts
are drawn (with a tooltip title on every point and bar), the figures' explanations are there, the form
switches the level and the window, and nothing breaks the CSP. Screenshots:
test-artifacts/browser/20-dashboard-en.png, 20-dashboard-ru.png, 20-dashboard-level-en.png."""

from __future__ import annotations

from datetime import datetime, timedelta, timezone

import pytest
import sqlalchemy as sa

from sidecar.dashboard.job import compute_job
from sidecar.dashboard.service import TREND_DAYS
from sidecar.store.db import unit_of_work
from sidecar.store.grant_models import FAILED, SUCCEEDED, Grant
from sidecar.store.monitor_models import SleeperCount
from tests.browser_support import launched_browser, served_demo, shot, sign_in, watch_errors
from tests.dashboard.support import letters_after_lapses

START = datetime(2026, 11, 24, 10, 0, tzinfo=timezone.utc)
TODAY = START.date()


@pytest.fixture(scope="module")
def browser():
    yield from launched_browser()


def _letters_and_grants(runtime) -> None:
    level = runtime.reader.levels()[0].term_id
    assert letters_after_lapses(runtime, level, TODAY, TODAY - timedelta(days=120)) > 0
    with unit_of_work(runtime.sessions) as session:
        for n in range(12):
            at = START - timedelta(days=n % 6, minutes=n)
            session.add(Grant(id=f"g{n:03d}", request_hash="h", channel=("amocrm", "api")[n % 2], principal="p",
                              meta={}, term_id=level, status=FAILED if n % 5 == 0 else SUCCEEDED, next_attempt_at=at,
                              created_at=at, updated_at=at))
    compute_job(runtime)      # what the worker does when it starts: the page reads the comparison it stores


@pytest.fixture
def served(tmp_path, settings_for):
    """A demo site with six weekly refreshes (the trend), letters on one level and grants over the last days."""
    site = f"sqlite:///{tmp_path / 'wordpress.sqlite'}"
    with served_demo(site, settings_for(site), START, users=200, levels=5, seed=4, weeks=6,
                     prepare=_letters_and_grants) as served:
        yield served


@pytest.mark.slow
def test_the_dashboard_in_a_browser_in_both_languages(browser, served):
    base_url, runtime = served
    with unit_of_work(runtime.sessions) as session:
        # One dot per day with a count in the chart's 90 days: the six weekly refreshes, today's, and the
        # days the first refresh reconstructed before it.
        days = session.scalar(sa.select(sa.func.count(sa.distinct(SleeperCount.day)))
                              .where(SleeperCount.day >= TODAY - timedelta(days=TREND_DAYS)))
    assert days > 7
    errors: list[str] = []
    for language in ("en", "ru"):
        context = browser.new_context(base_url=base_url, locale=f"{language}-{language.upper()}",
                                      viewport={"width": 1366, "height": 900})
        page = context.new_page()
        watch_errors(page, errors)
        try:
            sign_in(page, "/", language=language)
            assert page.locator("svg.chart-line-chart circle.chart-dot").count() == days
            assert page.locator("svg.chart-line-chart circle.chart-dot title").first.text_content()
            assert page.locator("svg.chart-bar-chart rect.chart-bar").count() >= 6
            assert page.locator("table.after-letters tr.step-row").count() == 3
            assert page.locator("ul.definitions li").count() == 7
            assert page.locator("p.computed-at").count() == 1
            # The chart is drawn to the page's width and its axis labels are visible.
            box = page.locator("svg.chart-line-chart").bounding_box()
            assert box is not None and box["width"] > 400
            assert page.locator("svg.chart-line-chart text.chart-tick-x").count() == 3
            shot(page, f"20-dashboard-{language}")
            if language == "en":
                assert "What the sidecar achieves" in page.content()
                first_level = runtime.reader.levels()[0]
                page.select_option("select[name=level]", str(first_level.term_id))
                page.select_option("select[name=window]", "30")
                page.click("form.dashboard-filters button[type=submit]")
                page.wait_for_url(f"**/?level={first_level.term_id}&window=30")
                assert f"Level: {first_level.name}." in page.content()
                assert "What happened within 30 days after each letter" in page.content()
                shot(page, "20-dashboard-level-en")
            else:
                assert "Чего добивается сайдкар" in page.content()
        finally:
            context.close()
    assert errors == []
