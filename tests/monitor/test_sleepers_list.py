"""The sleepers list for action: its order, pages both ways with "page N of M", page sizes, the quick filter
"expired in the last 7/30/90 days", each row's reminder chain, and clear words for bad input — on the
service (SQLite and MariaDB stores), the page (ru and en), the API and the CLI."""

from __future__ import annotations

import re
from dataclasses import replace
from datetime import datetime, timedelta, timezone

import pytest
import sqlalchemy as sa

from sidecar.bootstrap import build_runtime, store_url
from sidecar.clock import FixedClock
from sidecar.config import settings_from_mapping
from sidecar.monitor.filters import parse_filters
from sidecar.monitor.service import SORTS, SleeperQuery
from sidecar.monitor.settings import Letter, MonitorSettings
from sidecar.store.monitor_models import SleeperEntry
from sidecar.store.reminder_models import Reminder, ReminderApproval
from tests.monitor.support import API_TOKEN, START, TODAY, Monitor, flashes, link, listed
from tests.stores import migrate_store
from werkzeug.datastructures import MultiDict

BEARER = {"Authorization": f"Bearer {API_TOKEN}"}


@pytest.fixture
def listing(store_section, small_site, settings_for):
    """A signed-in monitor on the small site (39 sleepers), its store on SQLite or MariaDB."""
    settings = settings_for(small_site, store=store_section, web={"api_tokens": {"reports": API_TOKEN}})
    migrate_store(store_url(settings))
    runtime = build_runtime(settings, clock=FixedClock(START))
    monitor = Monitor(runtime)
    monitor.refresher.refresh_all()
    monitor.login()
    yield monitor
    runtime.close()


def _key(row) -> tuple:
    return (row.expired_on, row.term_id, row.user_id)   # the expiry order, ties broken by level then user


def _pages_forward(monitor: Monitor, query: SleeperQuery) -> list:
    pages = [monitor.service.page(query)]
    while pages[-1].next_cursor:
        pages.append(monitor.service.page(replace(query, after=pages[-1].next_cursor)))
        assert len(pages) < 50
    return pages


# --- order -----------------------------------------------------------------------------------------

def test_the_default_order_is_the_most_recent_expiry_first(listing):
    assert listing.service.default_order() == ("expired_on", True)
    filters, problems = parse_filters(MultiDict(), default_order=listing.service.default_order())
    assert problems == [] and (filters.sort, filters.descending) == ("expired_on", True)
    rows = [r for page in _pages_forward(listing, filters.query()) for r in page.rows]
    assert len(rows) == 39 and [_key(r) for r in rows] == sorted(map(_key, rows), reverse=True)
    assert rows[0].days_since == min(r.days_since for r in rows)


def test_another_column_without_a_direction_reads_ascending_as_links_always_did(listing):
    order = listing.service.default_order()
    email, _ = parse_filters(MultiDict({"sort": "email"}), default_order=order)
    assert (email.sort, email.descending) == ("email", False) and email.args() == {"sort": "email"}
    expiry, _ = parse_filters(MultiDict({"sort": "expired_on", "desc": "0"}), default_order=order)
    assert expiry.descending is False and expiry.args() == {"desc": "0"}
    page = listing.page("/monitor/sleepers?sort=email")
    emails = [r.email for r in listing.all_rows(sort="email", descending=False)]
    assert [u for u, _t in listed(page)] == [r.user_id for r in listing.all_rows(sort="email", descending=False)][:20]
    assert emails == sorted(emails)


def test_the_order_is_configurable(small_site, settings_for, make_runtime):
    runtime = make_runtime(settings_for(small_site, web={"sleepers_order": "email  asc"}), clock=FixedClock(START))
    monitor = Monitor(runtime)
    monitor.refresher.refresh_all()
    monitor.login()
    assert monitor.service.default_order() == ("email", False)
    emails = [r.email for r in monitor.all_rows()]
    assert emails == sorted(emails)
    page = monitor.page("/monitor/sleepers")
    assert [u for u, _t in listed(page)] == [r.user_id for r in monitor.all_rows()][:20]


def test_a_bad_configured_order_is_refused_with_its_key_and_the_choices():
    from sidecar.config import ConfigError

    with pytest.raises(ConfigError) as caught:
        settings_from_mapping({"wordpress": {"db_url": "sqlite:///x"},
                               "memberlux": {"rest_base_url": "https://school.example/wp-json"},
                               "web": {"sleepers_order": "expiry newest"}}, environ={})
    text = str(caught.value)
    assert "web.sleepers_order = 'expiry newest'" in text
    assert "'<column> asc' or '<column> desc'" in text and "expired_on, days_since, name, email, level" in text


# --- pages both ways ---------------------------------------------------------------------------------

def test_next_then_previous_reach_the_same_rows_and_count_the_pages(listing):
    query = SleeperQuery(sort="expired_on", descending=True, limit=5)
    forward = _pages_forward(listing, query)
    assert [p.page_number for p in forward] == list(range(1, 9)) and {p.pages for p in forward} == {8}
    assert [len(p.rows) for p in forward] == [5] * 7 + [4]
    assert forward[0].prev_cursor is None and forward[-1].next_cursor is None
    backward = [forward[-1]]
    while backward[-1].prev_cursor:
        backward.append(listing.service.page(replace(query, before=backward[-1].prev_cursor)))
    assert [p.page_number for p in backward] == list(range(8, 0, -1))
    assert [[_key(r) for r in p.rows] for p in backward] == [[_key(r) for r in p.rows] for p in reversed(forward)]


@pytest.mark.parametrize("sort", SORTS)
@pytest.mark.parametrize("descending", [False, True])
def test_every_order_pages_back_to_the_rows_it_paged_forward(monitor, sort, descending):
    query = SleeperQuery(sort=sort, descending=descending, limit=7)
    forward = _pages_forward(monitor, query)
    assert len(forward) == 6 and forward[-1].pages == 6
    page = forward[-1]
    for expected in reversed(forward[:-1]):
        page = monitor.service.page(replace(query, before=page.prev_cursor))
        assert [(r.user_id, r.term_id) for r in page.rows] == [(r.user_id, r.term_id) for r in expected.rows]
        assert page.page_number == expected.page_number
    assert page.prev_cursor is None


def test_going_back_when_rows_left_shows_the_first_page(listing):
    query = SleeperQuery(sort="expired_on", descending=True, limit=5)
    second = listing.service.page(replace(query, after=listing.service.page(query).next_cursor))
    gone = listing.service.page(query).rows[:2]
    with listing.runtime.sessions.begin() as session:  # as a refresh does when two learners renewed
        for row in gone:
            session.execute(sa.delete(SleeperEntry).where(SleeperEntry.user_id == row.user_id,
                                                          SleeperEntry.term_id == row.term_id))
    back = listing.service.page(replace(query, before=second.prev_cursor))
    assert back.page_number == 1 and back.prev_cursor is None and len(back.rows) == 5
    assert [_key(r) for r in back.rows] == [_key(r) for r in listing.service.page(query).rows]


def test_a_cursor_past_the_end_shows_the_last_page(listing):
    from sidecar.monitor.service import _encode_cursor

    query = SleeperQuery(sort="expired_on", descending=True, limit=20)
    last = listing.service.page(replace(query, after=listing.service.page(query).next_cursor))
    end = last.rows[-1]     # the link a page ending on the last row would have made
    beyond = listing.service.page(replace(query, after=_encode_cursor("expired_on", True, list(_key(end)))))
    assert [_key(r) for r in beyond.rows] == [_key(r) for r in last.rows]
    assert beyond.page_number == beyond.pages == 2 and beyond.next_cursor is None and beyond.prev_cursor


@pytest.mark.parametrize("size,pages", [(20, 2), (50, 1), (100, 1)])
def test_each_page_size_holds_that_many_rows(listing, size, pages):
    page = listing.service.page(SleeperQuery(descending=True, limit=size))
    assert len(page.rows) == min(size, 39) and page.pages == pages and page.page_number == 1


def test_nothing_found_is_page_one_of_one(listing):
    page = listing.service.page(SleeperQuery(search="nobody-has-this-name"))
    assert (page.rows, page.total, page.page_number, page.pages, page.prev_cursor) == ([], 0, 1, 1, None)


# --- expired in the last 7/30/90 days ------------------------------------------------------------------

@pytest.mark.parametrize("days", [7, 30, 90])
def test_the_quick_filter_counts_back_n_utc_days_and_keeps_the_nth(listing, days):
    first, second = listing.all_rows()[-2:]     # two rows moved to the edges of the window
    with listing.runtime.sessions.begin() as session:
        for row, ago in ((first, days), (second, days + 1)):
            session.execute(sa.update(SleeperEntry).where(
                SleeperEntry.user_id == row.user_id, SleeperEntry.term_id == row.term_id).values(
                expired_on=TODAY - timedelta(days=ago)))
    rows = list(listing.service.iterate(SleeperQuery(expired_within=days)))
    ids = {(r.user_id, r.term_id) for r in rows}
    assert (first.user_id, first.term_id) in ids and (second.user_id, second.term_id) not in ids
    assert all(r.days_since <= days for r in rows)
    everyone = listing.all_rows()
    assert len(rows) == sum(1 for r in everyone if r.days_since <= days)
    page = listing.service.page(SleeperQuery(expired_within=days, limit=20))
    assert page.total == len(rows)


def test_the_quick_filter_on_another_day_counts_back_from_that_day(monitor):
    day = TODAY - timedelta(days=20)      # not stored: evaluated live, filtered the same way
    everyone = list(monitor.service.iterate(SleeperQuery(), day=day))
    within = list(monitor.service.iterate(SleeperQuery(expired_within=90), day=day))
    assert len(within) > 1 and [r for r in everyone if (day - r.expired_on).days <= 90] == within
    query = SleeperQuery(expired_within=90, limit=1, descending=True)
    live = monitor.service.page(query, day=day)
    assert (live.page_number, live.pages, live.total) == (1, len(within), len(within))
    second = monitor.service.page(replace(query, after=live.next_cursor), day=day)
    assert second.page_number == 2 and second.rows[0].expired_on <= live.rows[0].expired_on
    again = monitor.service.page(replace(query, before=second.prev_cursor), day=day)
    assert [_key(r) for r in again.rows] == [_key(r) for r in live.rows] and again.page_number == 1


# --- bad input ---------------------------------------------------------------------------------------------

@pytest.mark.parametrize("query,words", [
    (SleeperQuery(after="x", before="y"), "give one cursor"),
    (SleeperQuery(expired_within=-1), "expired within must be between 0 and"),
    (SleeperQuery(before="not-a-cursor"), "invalid cursor"),
    (SleeperQuery(limit=0), "limit must be between 1 and"),
])
def test_the_service_refuses_bad_queries_in_words(monitor, query, words):
    with pytest.raises(ValueError, match=words):
        monitor.service.page(query)


def test_a_cursor_of_another_order_is_refused(monitor):
    cursor = monitor.service.page(SleeperQuery(sort="email", limit=5)).next_cursor
    with pytest.raises(ValueError, match="issued for another order"):
        monitor.service.page(SleeperQuery(sort="expired_on", before=cursor))


@pytest.mark.parametrize("language,expected", [
    ("en", ["within: expected 7, 30 or 90 days, got 8; the filter was ignored.",
            "limit: page size 0 is out of range; the default was used.",
            "before: a link names both the next and the previous page; the next page was shown."]),
    ("ru", ["within: ожидается 7, 30 или 90 дней, получено 8; фильтр не применён.",
            "limit: размер страницы 0 вне допустимого; взят размер по умолчанию.",
            "before: ссылка указывает и следующую, и предыдущую страницу; показана следующая."]),
])
def test_the_page_names_each_bad_parameter_and_shows_the_list(listing, language, expected):
    page = listing.page(f"/monitor/sleepers?within=8&limit=0&after=a&before=b&lang={language}")
    shown = flashes(page)
    for sentence in expected:
        assert sentence in shown
    assert len(listed(page)) == 20   # the bad cursor too is named, and the first page is shown
    assert any(("The page link is not valid" if language == "en" else "Ссылка на страницу недействительна") in s
               for s in shown)


def test_the_api_answers_400_naming_a_bad_quick_filter_or_cursor(listing):
    response = listing.client.get("/api/v1/sleepers?within=45", headers=BEARER)
    assert response.status_code == 400 and response.json["field"] == "within"
    assert "expected 7, 30 or 90 days, got 45" in response.json["message"]
    response = listing.client.get("/api/v1/sleepers?before=garbage", headers=BEARER)
    assert response.status_code == 400 and response.json["field"] == "before"


# --- the page, ru and en ----------------------------------------------------------------------------------

@pytest.mark.parametrize("language,words", [
    ("en", {"page": "Page {n} of 2", "prev": "« Previous page", "within": "Expired in the last:",
            "days": "30 days", "size": "Rows per page:",
            "note": "Days since expiry ≤ 30: first day without access on or after 2026-10-25 "
                    "(UTC days, counted back from 2026-11-24)."}),
    ("ru", {"page": "Страница {n} из 2", "prev": "« Предыдущая страница", "within": "Доступ закончился за последние:",
            "days": "30 дн.", "size": "Строк на странице:",
            "note": "Дней после окончания ≤ 30: первый день без доступа 2026-10-25 или позже "
                    "(дни UTC, отсчёт от 2026-11-24)."}),
])
def test_the_page_pages_both_ways_with_sizes_and_the_quick_filter(listing, language, words):
    first = listing.page(f"/monitor/sleepers?lang={language}")
    assert words["page"].format(n=1) in first and link(first, "prev") is None
    expected = [(r.user_id, r.term_id) for r in listing.all_rows()]
    assert listed(first) == expected[:20]
    second = listing.page(link(first, "next"))
    assert words["page"].format(n=2) in second and listed(second) == expected[20:]
    assert words["prev"] in second
    back = listing.page(link(second, "prev"))
    assert listed(back) == expected[:20] and words["page"].format(n=1) in back
    assert words["size"] in first
    fifty = listing.page(link(first, "size size-50"))
    assert len(listed(fifty)) == 39 and words["page"].format(n=1).replace("2", "1") in fifty
    assert words["within"] in first and words["days"] in first
    month = listing.page(link(first, "within within-30"))
    assert words["note"] in month
    assert sorted(listed(month)) == sorted((r.user_id, r.term_id) for r in listing.all_rows() if r.days_since <= 30)


def _letters_on(monitor: Monitor, term_id: int) -> None:
    service = MonitorSettings(monitor.runtime)
    letters = (Letter(3, "s1", "b1"), Letter(10, "s2", "b2"), Letter(30, "s3", "b3"))
    service.save(replace(service.effective(term_id), enabled=True, letters=letters), actor="test")


@pytest.mark.parametrize("language,words", [
    ("en", ("Letter 1 sent {day}", "Next: letter 2 on {due}", "Stopped: reminders are off for the level",
            "Stopped: the level's reminders await approval")),
    ("ru", ("Письмо 1 отправлено {day}", "Далее: письмо 2, {due}", "Остановлено: напоминания по уровню выключены",
            "Остановлено: напоминания уровня ждут одобрения")),
])
def test_each_row_shows_its_reminder_chain(listing, language, words):
    # The small site's most recent sleeper: level 7, access ended 3 days ago; letters at 3, 10 and 30 days.
    recent = next(r for r in listing.all_rows(levels=(7,)) if r.days_since == 3)
    other = next(r for r in listing.all_rows(levels=(9,)))
    now = datetime.combine(TODAY, datetime.min.time(), tzinfo=timezone.utc) + timedelta(hours=9)
    _letters_on(listing, 7)
    with listing.runtime.sessions.begin() as session:
        session.add(Reminder(user_id=recent.user_id, term_id=7, expired_on=recent.expired_on, step=1, state="sent",
                             reason="", due_on=TODAY, planned_at=now, updated_at=now, sent_at=now, attempts=1,
                             to_address="", subject="", last_error=""))
        session.add(ReminderApproval(term_id=7, approved_at=now, approved_by="test", approved_source="web"))
    page = listing.page(f"/monitor/sleepers?level=9&level=7&limit=100&lang={language}")
    cells = re.search(rf'data-user="{recent.user_id}" data-level="7">(.*?)</tr>', page, re.S).group(1)
    due = recent.expired_on + timedelta(days=10)
    assert words[0].format(day=TODAY.isoformat()) in cells and words[1].format(due=due.isoformat()) in cells
    assert "Stopped" not in cells and "Остановлено" not in cells
    off = re.search(rf'data-user="{other.user_id}" data-level="9">(.*?)</tr>', page, re.S).group(1)
    assert words[2] in off
    record = next(r for r in listing.client.get("/api/v1/sleepers?level=7", headers=BEARER).json["sleepers"]
                  if r["user_id"] == recent.user_id)
    assert record["reminders_sent"] == 1 and record["reminders"] == {
        "last_sent_step": 1, "last_sent_on": TODAY.isoformat(), "next_step": 2, "next_due": due.isoformat(),
        "stopped": None}
    with listing.runtime.sessions.begin() as session:
        session.execute(sa.delete(ReminderApproval))
    page = listing.page(f"/monitor/sleepers?level=7&lang={language}")
    cells = re.search(rf'data-user="{recent.user_id}" data-level="7">(.*?)</tr>', page, re.S).group(1)
    assert words[3] in cells and words[1].format(due=due.isoformat()) in cells


# --- API and CLI share it ---------------------------------------------------------------------------------

def test_the_api_pages_back_with_prev_urls(listing):
    first = listing.client.get("/api/v1/sleepers?limit=1&within=90", headers=BEARER).json
    assert first["page"] == 1 and first["pages"] == 3 and first["within"] == 90 and first["prev_url"] is None
    second = listing.client.get(first["next_url"], headers=BEARER).json
    assert second["page"] == 2 and "before=" in second["prev_url"] and "within=90" in second["prev_url"]
    back = listing.client.get(second["prev_url"], headers=BEARER).json
    assert back["sleepers"] == first["sleepers"] and back["page"] == 1
