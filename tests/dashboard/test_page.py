"""The dashboard is the page after signing in, in Russian and English: its figures, its parameters (and the
error naming an unusable one), and the status page that moved to /status."""

from __future__ import annotations

import re
from datetime import date, datetime, timedelta, timezone

import pytest

from sidecar.dashboard.job import compute_job
from sidecar.store.dashboard_models import DashboardSnapshot
from sidecar.store.db import unit_of_work
from sidecar.store.grant_models import FAILED, SUCCEEDED, Grant
from sidecar.store.monitor_models import SleeperCount, SleeperRefresh
from tests.dashboard.support import Key, Letter, Site
from tests.reminders.school import LEVEL, OTHER_LEVEL, Browser

TODAY = date(2026, 11, 24)


@pytest.fixture
def site(school_factory) -> Site:
    school = school_factory(day=TODAY)
    school.schedule((3, 10, 30), admin_days=None)
    site = Site(school)
    x = TODAY - timedelta(days=60)
    for user in (1, 2):
        site.learner(user)
        site.key(Key(user, LEVEL, x - timedelta(days=30), x))
        site.letter(Letter(user, LEVEL, x, 1, x + timedelta(days=3)))
    site.key(Key(1, LEVEL, x + timedelta(days=5), x + timedelta(days=400)))
    now = school.clock.now()
    with unit_of_work(school.runtime.sessions) as session:
        session.add(SleeperRefresh(term_id=LEVEL, evaluated_for=TODAY, refreshed_at=now, seconds=0.1, rows_scanned=4,
                                   users_considered=2, sleepers=7, reasons={}))
        session.add(SleeperRefresh(term_id=OTHER_LEVEL, evaluated_for=TODAY, refreshed_at=now, seconds=0.1,
                                   rows_scanned=1, users_considered=1, sleepers=4, reasons={}))
        for days_ago, count in ((14, 3), (7, 5), (0, 7)):
            session.add(SleeperCount(term_id=LEVEL, day=TODAY - timedelta(days=days_ago), sleepers=count))
        for n, (status, channel) in enumerate(((SUCCEEDED, "amocrm"), (SUCCEEDED, "amocrm"), (FAILED, "api"))):
            at = datetime(2026, 11, 20, 10, n, tzinfo=timezone.utc)
            session.add(Grant(id=f"g{n}", request_hash="h", channel=channel, principal="p", meta={}, term_id=LEVEL,
                              status=status, next_attempt_at=at, created_at=at, updated_at=at))
    return site


@pytest.fixture
def web(site) -> Browser:
    """The page once the worker's dashboard job has run."""
    compute_job(site.school.runtime)
    return Browser(site.school)


def cells(page: str, css: str) -> list[str]:
    return [re.sub(r"<[^>]+>", " ", c).split()[0] for c in re.findall(rf'<td class="num {css}">(.*?)</td>', page, re.S)]


def test_signing_in_lands_on_the_dashboard(site):
    browser = Browser(site.school)   # signs in through the login form
    response = browser.client.get("/login")
    assert response.status_code == 302 and response.headers["Location"] == "/"


def test_the_dashboard_in_english_counts_sleepers_letters_grants_and_outcomes(web):
    page = web.get("/?lang=en")
    assert "What the sidecar achieves" in page
    assert re.search(r'id="sleepers-now">11<', page)                        # 7 + 4, the levels' last refreshes
    assert '<title>2026-11-17: 5 sleepers</title>' in page                  # the trend's points
    assert "<title>2026-11-20: succeeded — 2</title>" in page and "<title>2026-11-20: failed — 1</title>" in page
    assert "amoCRM webhook" in page and "API call" in page
    # Letter 1: two learners got it, one renewed within 14 days (50 %); nobody to compare on this site.
    assert cells(page, "letters-learners") == ["2", "0", "0"] and cells(page, "letters-renewed")[0] == "1"
    assert "50 %" in page
    assert "What each figure counts" in page and "Got no letter: learners whose access ended" in page
    assert 'href="/status"' in page and "Grants that need attention" in page
    # Per level: sleepers as of the refresh's day, then letters in the last 30 days and ever, steps 1-3.
    row = re.search(rf'<tr class="level-row" data-level="{LEVEL}">(.*?)</tr>', page, re.S).group(1)
    numbers = [re.sub(r"<[^>]+>", " ", c).split() for c in re.findall(r'<td class="num">(.*?)</td>', row, re.S)]
    assert numbers == [["7", "2026-11-24"], ["0"], ["0"], ["0"], ["2"], ["0"], ["0"]]


def test_the_dashboard_in_russian(web):
    page = web.get("/?lang=ru")
    assert "Чего добивается сайдкар" in page and "Что считает каждое число" in page
    assert "Получили письмо" in page and "Не получали писем (сравнение)" in page
    assert "Выдачи, требующие внимания" in page
    # The outcome window's choices are counts of days in their plural form.
    assert re.search(r'<option value="14" selected>14 дней</option>', page)
    assert re.search(r"Окно результата:\s+<a [^>]*>7 дней</a> <strong>14 дней</strong> <a [^>]*>30 дней</a>", page)


def test_one_level_and_another_window(web):
    page = web.get(f"/?lang=en&level={OTHER_LEVEL}&window=30")
    assert re.search(r'id="sleepers-now">4<', page) and "Level: Немецкий." in page
    assert cells(page, "letters-learners") == ["0", "0", "0"]
    assert "What happened within 30 days after each letter" in page
    assert "No grant was received in this period." in page


@pytest.mark.parametrize(("query", "message"), [
    ("window=9", "Outcome window 9: choose one of 7, 14, 30 days; showing 14."),
    ("level=abc", "Level abc: not a level id; showing all levels."),
    ("level=999", "There is no level 999 on the site; showing all levels."),
    ("level=%C2%B2", "Level ²: not a level id; showing all levels."),
    ("window=%E2%91%A0", "Outcome window ①: choose one of 7, 14, 30 days; showing 14."),
    ("level=" + "9" * 40, "Level 99999999999999999999: not a level id; showing all levels."),
])
def test_an_unusable_parameter_is_named_and_answers_400(web, query, message):
    page = web.get(f"/?lang=en&{query}", status=400)
    assert message in page and "What the sidecar achieves" in page


def test_the_error_in_russian(web):
    assert "Уровня 999 на сайте нет; показаны все уровни." in web.get("/?lang=ru&level=999", status=400)


def test_the_status_page_moved_to_status_and_keeps_its_place_in_the_navigation(web):
    page = web.get("/status?lang=en")
    assert "System status" in page and "Grants that need attention" in page
    assert "<title>System status · MemberLux sidecar</title>" in page
    russian = web.get("/status?lang=ru")
    assert "<title>Состояние системы · Сервис-компаньон MemberLux</title>" in russian
    for shown in (page, russian):    # commands are set as code, not in the backticks of a plain-text note
        assert "`" not in shown and "<code>mlsidecar worker</code>" in shown
    assert 'href="/">Dashboard</a>' in page and 'href="/status">Status</a>' in page
    assert "System status" not in web.get("/?lang=en")


def test_before_the_jobs_first_run_the_page_says_the_worker_computes_it(site):
    web = Browser(site.school)
    english = web.get("/?lang=en")
    assert "The worker has not computed these figures yet. It computes them when it starts and then every 60 min." in english
    assert "after-letters" not in english and "Letter days from" not in english
    assert re.search(r'id="sleepers-now">11<', english)                      # the rest of the page is there
    russian = web.get("/?lang=ru")
    assert "Фоновый процесс ещё не посчитал эти числа. Он считает их при запуске и затем каждые 60 мин." in russian


def test_the_page_shows_the_stored_figures_and_their_age_until_the_job_runs_again(site, web):
    assert cells(web.get("/?lang=en"), "letters-renewed")[0] == "1"
    assert "Computed less than a minute ago." in web.get("/?lang=en")
    assert ("The worker computed these figures at 2026-11-24 09:00 UTC in " in web.get("/?lang=en")
            and "s and computes them again every 60 min." in web.get("/?lang=en"))
    x = TODAY - timedelta(days=60)
    site.key(Key(2, LEVEL, x + timedelta(days=6), x + timedelta(days=400)))     # learner 2 renews too
    site.school.advance(seconds=60)
    page = web.get("/?lang=en")
    assert cells(page, "letters-renewed")[0] == "1" and "Computed 1 minute ago." in page   # what was stored
    assert "Посчитано 1 минуту назад." in web.get("/?lang=ru")
    site.school.advance(seconds=4 * 60)
    assert "Computed 5 minutes ago." in web.get("/?lang=en") and "Посчитано 5 минут назад." in web.get("/?lang=ru")
    assert cells(web.get(f"/?lang=en&level={LEVEL}"), "letters-renewed")[0] == "1"     # one level: the same row
    site.school.advance(seconds=17 * 60)
    assert "Посчитано 22 минуты назад." in web.get("/?lang=ru")
    compute_job(site.school.runtime)
    page = web.get("/?lang=en")
    assert cells(page, "letters-renewed")[0] == "2" and "Computed less than a minute ago." in page
    assert "at 2026-11-24 09:22 UTC" in page


def test_the_page_computes_no_comparison(site, web, monkeypatch):
    """The request only reads what the job stored: MemberLux's range queries are never asked."""
    def refuse(*_args):
        raise AssertionError("the page asked MemberLux for the comparison")

    monkeypatch.setattr(site.school.runtime.reader, "lapses", refuse)
    monkeypatch.setattr(site.school.runtime.reader, "renewal_starts", refuse)
    for query in ("", "&window=7", "&window=30", f"&level={OTHER_LEVEL}"):
        assert "computed-at" in web.get(f"/?lang=en{query}")


def test_a_level_the_stored_comparison_does_not_know_shows_nobody_measured(site, web):
    """A level made after the job's last run has no part in its rows yet: the page shows zeros for it."""
    with unit_of_work(site.school.runtime.sessions) as session:
        row = session.get(DashboardSnapshot, 14)
        row.figures = {level: steps for level, steps in row.figures.items() if level != str(LEVEL)}
    assert cells(web.get(f"/?lang=en&level={LEVEL}"), "letters-learners") == ["0", "0", "0"]
    assert cells(web.get("/?lang=en"), "letters-learners") == ["0", "0", "0"]      # all levels: the others' sum
