"""The monitor in a real browser: Debian's chromium driven by Playwright against the app on a real socket.

Skipped, with the reason, when ``/usr/bin/chromium`` or the ``playwright`` package is missing — unless
``MLS_REQUIRE_BROWSER=1``, which turns the skip into a failure (for CI images that ship the browser).
Playwright's own browser download is not used: it is not reachable everywhere, the distribution's is.
Screenshots land in ``test-artifacts/browser/`` for a human to look at.
"""

from __future__ import annotations

import csv
import io
import re
from datetime import datetime, timezone

import pytest
import sqlalchemy as sa

from sidecar.monitor.service import MonitorService, SleeperQuery
from sidecar.monitor.csv_export import CSV_COLUMNS
from sidecar.store.monitor_models import CertificateClassRow
from tests.browser_support import ARTIFACTS, launched_browser, served_demo, sign_in, watch_errors
from tests.browser_support import shot as _shot

START = datetime(2026, 11, 24, 10, 0, tzinfo=timezone.utc)
TODAY = START.date()
BUSY_LEVEL = 10  # "Йога для начинающих": 53 sleepers on this site, three pages of 20


@pytest.fixture(scope="module")
def browser():
    yield from launched_browser()


@pytest.fixture
def served(tmp_path, settings_for):
    """A bigger site than the shared one (levels with sub-levels, a level over two pages), served for real."""
    site = f"sqlite:///{tmp_path / 'wordpress.sqlite'}"
    with served_demo(site, settings_for(site), START, users=300, levels=8, seed=2, weeks=11) as served:
        yield served


def _rows(page) -> list[tuple[int, int]]:
    return [(int(row.get_attribute("data-user")), int(row.get_attribute("data-level")))
            for row in page.locator("table.sleepers tbody tr.sleeper").all()]


def _richest_certificate_holder(runtime) -> int:
    """The certificate holder with keys on the most levels (ties: the lowest id)."""
    with runtime.sessions() as session:
        holders = set(session.scalars(sa.select(CertificateClassRow.user_id)))
    assert holders, "the seeded site should have certificates"
    levels = {user: len({row.term_id for row in runtime.reader.key_rows(user)}) for user in holders}
    return min(holders, key=lambda user: (-levels[user], user))


@pytest.mark.slow
def test_admin_walks_through_the_monitor(browser, served):
    base_url, runtime = served
    service = MonitorService(runtime)
    level_rows = list(service.iterate(SleeperQuery(levels=(BUSY_LEVEL,))))
    assert len(level_rows) > 40

    context = browser.new_context(base_url=base_url, locale="en-US", viewport={"width": 1360, "height": 900},
                                  accept_downloads=True)
    page = context.new_page()
    errors: list[str] = []
    watch_errors(page, errors)
    try:
        sign_in(page, "/monitor")

        # The overview: every level, sub-levels indented, counts, trend charts.
        assert page.locator("h1").inner_text() == "Learning monitor: levels"
        assert page.locator("tr.level-row").count() == 8
        assert page.locator("td.depth-1").count() >= 1
        assert page.locator("svg.spark polyline.spark-line:not(.spark-rebuilt)").count() == 8
        busy = page.locator(f'tr.level-row[data-level="{BUSY_LEVEL}"]')
        assert busy.locator("a.count").inner_text() == str(len(level_rows))
        _shot(page, "01-overview")

        # Refresh one level from its button: the flash says how long it took.
        busy.locator("button").click()
        page.wait_for_url(re.compile(r"/monitor$"))
        assert re.search(r"refreshed in \d+\.\d\d s", page.locator(".flash-ok").inner_text())

        # Open the busy level's sleepers: 20 rows, the total, the legacy window filter.
        page.locator(f'tr.level-row[data-level="{BUSY_LEVEL}"] a.count').click()
        page.wait_for_url(re.compile(rf"/monitor/sleepers\?level={BUSY_LEVEL}$"))
        assert page.locator(".found").inner_text().startswith(f"Found: {len(level_rows)}.")
        assert len(_rows(page)) == 20
        _shot(page, "02-level-sleepers")

        # Sort by last name, then the other way round.
        page.click("a.sort-last_name")
        page.wait_for_url(re.compile(r"sort=name"))
        by_name = {(r.user_id, r.term_id): (r.last_name, r.first_name) for r in level_rows}
        names = [by_name[pair] for pair in _rows(page)]
        assert names == sorted(names)
        assert page.locator("th.sorted").get_attribute("aria-sort") == "ascending"
        page.click("a.sort-last_name")
        page.wait_for_url(re.compile(r"desc=1"))
        names = [by_name[pair] for pair in _rows(page)]
        assert names == sorted(names, reverse=True)
        first_page = _rows(page)
        _shot(page, "03-sorted-by-name-desc")

        # Next page: new rows, still in order, and a way back to the first page.
        page.click("a.next")
        page.wait_for_url(re.compile(r"after="))
        second_page = _rows(page)
        assert len(second_page) == 20 and not set(second_page) & set(first_page)
        assert by_name[second_page[0]] <= by_name[first_page[-1]]
        assert page.locator("a.first").count() == 1
        _shot(page, "04-next-page")

        # Search for one learner by last name.
        target = level_rows[5]
        page.fill("input[name=search]", target.last_name)
        page.click("form.filters button[type=submit]")
        page.wait_for_url(re.compile(r"search="))
        found = _rows(page)
        assert (target.user_id, BUSY_LEVEL) in found
        assert all(target.last_name in text for text in page.locator("table.sleepers tbody tr td:nth-child(4)").all_inner_texts())
        _shot(page, "05-search")

        # Export what is shown: the download carries the filters.
        with page.expect_download() as download_info:
            page.click("a.export")
        download = download_info.value
        assert re.fullmatch(rf"sleepers-level-{BUSY_LEVEL}-2026-11-24\.csv", download.suggested_filename)
        saved = ARTIFACTS / download.suggested_filename
        download.save_as(str(saved))
        rows = list(csv.reader(io.StringIO(saved.read_text(encoding="utf-8"))))
        assert rows[0] == list(CSV_COLUMNS)
        assert {int(r[0]) for r in rows[1:]} == {u for u, _t in found}

        # The learner's page: keys on a time line, certificates, a verdict per level.
        page.click(f'a.user-link:text-is("{target.user_id}")')
        page.wait_for_url(re.compile(rf"/monitor/users/{target.user_id}$"))
        section = page.locator(f"#level-{BUSY_LEVEL}")
        assert section.locator(".verdict-sleeper").count() == 1
        assert section.locator("p.verdict-text").inner_text().startswith("Sleeper: access ended on")
        assert section.locator("svg.timeline rect.bar").count() >= 1
        assert section.locator("table.keys tbody tr").count() >= 1
        _shot(page, "06-user")

        # A learner with keys on several levels and certificates: one section per level.
        rich = _richest_certificate_holder(runtime)
        page.goto(f"/monitor/users/{rich}")
        assert page.locator("section.level-section").count() >= 2
        assert page.locator("table.certificates tr.certificate").count() >= 1
        assert page.locator("span.verdict").count() == page.locator("section.level-section").count()
        _shot(page, "07-user-with-certificates")

        # Russian: labels translated, Cyrillic data rendered.
        page.goto(f"/monitor/users/{target.user_id}")
        page.click(".lang a:text-is('RU')")
        page.wait_for_load_state()
        assert "Спящий: доступ закончился" in page.locator(f"#level-{BUSY_LEVEL} p.verdict-text").inner_text()
        _shot(page, "08-user-ru")
        page.goto(f"/monitor/users/{rich}")
        _shot(page, "09-user-with-certificates-ru")
        page.goto(f"/monitor/sleepers?level={BUSY_LEVEL}")
        assert "Срок истёк после" in page.locator("form.filters").inner_text()
        assert page.locator("table.sleepers th").first.inner_text() == "ID пользователя"
        _shot(page, "10-sleepers-ru")
        page.goto("/monitor")
        _shot(page, "11-overview-ru")

        # A phone's width (390 px), in Russian (the longer labels) and English: the top bar wraps inside the
        # screen, so every section, the language switch and Sign out stay on the dark bar and reachable.
        page.set_viewport_size({"width": 390, "height": 844})
        for language, shot in (("ru", "12-top-bar-390-ru"), ("en", "13-top-bar-390-en")):
            page.goto(f"/?lang={language}")
            assert page.evaluate("document.documentElement.scrollWidth") <= 390
            bar = page.locator("header.top").bounding_box()
            for item in page.locator("header.top nav a, header.top .lang, header.top .account button").all():
                box = item.bounding_box()
                assert box["x"] >= 0 and box["x"] + box["width"] <= 390, (item.inner_text(), box)
                assert bar["y"] <= box["y"] and box["y"] + box["height"] <= bar["y"] + bar["height"], (item.inner_text(), box)
            _shot(page, shot)
        assert not errors, errors  # no CSP violations or script errors
    finally:
        context.close()
