"""The first page counts the grants that need an administrator and links to them; the grant list filters the
unsettled ones (sidecar/bridge/attention.py is the one rule behind both)."""

from __future__ import annotations

import re
import secrets
from datetime import datetime, timedelta, timezone

import pytest
import sqlalchemy as sa

from sidecar.clock import FixedClock
from sidecar.store.db import unit_of_work
from sidecar.store.grant_models import FAILED, SUCCEEDED, UNKNOWN, Grant
from tests.admin_pages import AdminBrowser

NOW = datetime(2026, 11, 24, 10, 0, tzinfo=timezone.utc)


def add_grant(runtime, status: str, *, settle_until: datetime | None = None) -> str:
    grant_id = "g" + secrets.token_hex(8)
    with unit_of_work(runtime.sessions) as session:
        session.add(Grant(id=grant_id, request_hash="h", channel="api", principal="api_key:crm", meta={},
                          email=f"{grant_id}@example.org", term_id=7, duration=1, units="months", status=status,
                          attempts=1, next_attempt_at=NOW, settle_until=settle_until, created_at=NOW, updated_at=NOW,
                          completed_at=NOW if status in (FAILED, SUCCEEDED) else None))
    return grant_id


@pytest.fixture
def browser(small_site, settings_for, make_runtime) -> AdminBrowser:
    runtime = make_runtime(settings_for(small_site), clock=FixedClock(NOW))
    return AdminBrowser(runtime)


def count_link(page: str, kind: str) -> tuple[str, str]:
    found = re.search(rf'<a href="([^"]+)" class="attention-{kind}">(\d+)</a>', page)
    assert found, f"no {kind} count on the page"
    return found.group(1), found.group(2)


def listed(page: str) -> set[str]:
    return set(re.findall(r'href="/admin/grants/(g[0-9a-z]+)"', page))


def test_the_first_page_counts_failed_and_unsettled_grants_and_links_to_them(browser):
    runtime = browser.runtime
    page = browser.get("/?lang=en")
    assert "Grants that need attention" in page
    assert count_link(page, "failed") == ("/admin/grants?status=failed", "0")
    assert count_link(page, "unsettled") == ("/admin/grants?unsettled=1", "0")
    assert "A failed grant can be retried" not in page

    failed = [add_grant(runtime, FAILED), add_grant(runtime, FAILED)]
    stuck = add_grant(runtime, UNKNOWN, settle_until=NOW - timedelta(minutes=30))
    add_grant(runtime, UNKNOWN, settle_until=NOW + timedelta(minutes=5))   # still within its settle time
    add_grant(runtime, SUCCEEDED)
    page = browser.get("/?lang=en")
    failed_url, failed_count = count_link(page, "failed")
    unsettled_url, unsettled_count = count_link(page, "unsettled")
    assert (failed_count, unsettled_count) == ("2", "1")
    assert "A failed grant can be retried or cancelled on its page" in page
    assert listed(browser.get(failed_url)) == set(failed)
    assert listed(browser.get(unsettled_url)) == {stuck}


def test_the_counts_are_shown_in_russian_too(browser):
    add_grant(browser.runtime, FAILED)
    page = browser.get("/?lang=ru")
    assert "Выдачи, требующие внимания" in page and "Не удались" in page
    assert count_link(page, "failed")[1] == "1"


def test_the_unsettled_filter_follows_the_clock(browser):
    runtime = browser.runtime
    grant_id = add_grant(runtime, UNKNOWN, settle_until=NOW + timedelta(minutes=5))
    assert listed(browser.get("/admin/grants?unsettled=1")) == set()
    runtime.clock.instant = NOW + timedelta(minutes=5, seconds=166)   # settle time + poll + the claim lease, passed
    page = browser.get("/admin/grants?unsettled=1")
    assert listed(page) == {grant_id}
    assert 'name="unsettled" value="1" checked' in page               # the form shows the filter is on


def test_a_bad_unsettled_value_is_explained_and_ignored(browser):
    failed = add_grant(browser.runtime, FAILED)
    page = browser.get("/admin/grants?unsettled=yes&lang=en")
    assert "Unknown value of unsettled: yes (use 1); the filter was ignored." in page
    assert failed in listed(page)


def test_the_filter_is_kept_in_the_links_of_the_list(browser):
    runtime = browser.runtime
    for _ in range(3):
        add_grant(runtime, UNKNOWN, settle_until=NOW - timedelta(hours=1))
    add_grant(runtime, FAILED)
    page = browser.get("/admin/grants?unsettled=1&per_page=2")
    next_page = re.search(r'<a href="([^"]+)" class="next"', page)
    assert next_page and "unsettled=1" in next_page.group(1)
    rest = browser.get(next_page.group(1))
    with runtime.sessions() as session:
        unsettled = set(session.scalars(sa.select(Grant.id).where(Grant.status == UNKNOWN)))
    assert listed(page) | listed(rest) == unsettled


def _chips(page: str) -> dict[str, tuple[str, str]]:
    """Each status chip's state: (its count, its link)."""
    return {state: (count, url) for url, state, count in re.findall(
        r'<a href="([^"]+)" class="chip chip-(\w+)[^"]*"[^>]*>.*?<span class="count">(\d+)</span></a>', page, re.S)}


def test_with_the_unsettled_filter_the_chips_count_only_what_the_list_shows(browser):
    runtime = browser.runtime
    stuck = [add_grant(runtime, UNKNOWN, settle_until=NOW - timedelta(hours=1)) for _ in range(2)]
    add_grant(runtime, UNKNOWN, settle_until=NOW + timedelta(minutes=5))    # still within its settle time
    for _ in range(3):
        add_grant(runtime, SUCCEEDED)
    add_grant(runtime, FAILED)
    everything = _chips(browser.get("/admin/grants?lang=en"))
    assert (everything["all"][0], everything["succeeded"][0], everything["unknown"][0]) == ("7", "3", "3")
    page = browser.get("/admin/grants?unsettled=1&lang=en")
    chips = _chips(page)
    assert listed(page) == set(stuck)
    assert (chips["all"][0], chips["unknown"][0], chips["succeeded"][0], chips["failed"][0]) == ("2", "2", "0", "0")
    for state, (count, url) in chips.items():                    # every chip leads to as many grants as it says
        assert len(listed(browser.get(url))) == int(count), state


def test_the_unsettled_checkbox_uses_the_filter_forms_inline_check_style(browser):
    page = browser.get("/admin/grants?lang=en")
    label = re.search(r'<label class="([^"]+)"><input type="checkbox" name="unsettled"', page)
    assert label and label.group(1) == "inline-check"          # app.css: .filters label.inline-check
