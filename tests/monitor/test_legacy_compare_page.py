"""The page ``/monitor/legacy``: the old plugin's report side by side with the sidecar's, in both languages.

The figures themselves are specified in ``test_legacy_compare.py``; here: the form, the page showing
the comparison's counts and differences, its CSV, every unusable parameter refused with a clear message,
one comparison at a time, the old query's failures, sign-in, and that nothing is written anywhere.
"""

from __future__ import annotations

import csv
import hashlib
import io
import re
from datetime import date
from pathlib import Path

import pytest
import sqlalchemy as sa

from sidecar.domain.legacy_compare import CompareReason
from sidecar.memberlux.legacy_query import LegacyQueryFailed, LegacyQueryTimeout
from sidecar.monitor import legacy_compare
from sidecar.monitor.legacy_compare import CSV_COLUMNS, compare
from sidecar.store.monitor_models import CertificateClassRow, SleeperEntry
from sidecar.web.i18n import gettext

URL = "/monitor/legacy?level=9&from=2025-01-01&to=2027-12-31"


def differences_in(page: str) -> dict[int, str]:
    return {int(u): r for u, r in re.findall(r'<tr class="difference" data-user="(\d+)" data-reason="(\w+)"', page)}


def counts_in(page: str) -> dict[str, int]:
    return {r: int(n) for r, n in re.findall(r'<tr class="reason[^"]*" data-reason="(\w+)" data-count="(\d+)"', page)}


def test_the_form_asks_for_a_level_a_window_and_a_day(monitor):
    page = monitor.page("/monitor/legacy")
    assert gettext("The old plugin's report, side by side", "en") in page
    assert "it is stopped here after 45 s per statement" in page
    assert "On the server, <code>mlsidecar legacy compare</code> waits longer." in page
    assert '<select name="level" required>' in page and 'value="9">' in page
    for name in ("from", "to", "date"):
        assert f'<input type="date" name="{name}"' in page
    assert not differences_in(page) and 'class="grid legacy-reasons"' not in page
    assert 'href="/monitor/legacy"' in monitor.page("/monitor")     # linked from the overview


def test_the_page_shows_the_counts_per_reason_and_the_differences(monitor):
    page = monitor.page(URL)
    expected = compare(monitor.runtime, 9, date_from=date(2025, 1, 1),
                       date_to=date(2027, 12, 31))
    assert expected.differences, "the seeded window reaches into the future: the old report lists active learners"
    assert counts_in(page) == expected.counts
    assert list(counts_in(page)) == [reason.value for reason in CompareReason]
    assert differences_in(page) == {row.user_id: row.reason.value for row in expected.differences}
    assert f"«Найдено»: {expected.legacy_count}" in page
    assert f"In both: {expected.in_both}. Only in the old report: {expected.only_legacy}." in page
    assert "Every difference has a known reason." in page
    assert gettext("Only in the old report: access has not ended on the day evaluated; the old window reached past today, and the old "
                   "query never compares with today.", "en") in page


def test_the_page_in_russian(monitor):
    page = monitor.page(URL + "&lang=ru")
    assert "Отчёт старого плагина рядом с нашим" in page
    assert gettext("Only in the old report: access has not ended on the day evaluated; the old window reached past today, and the old "
                   "query never compares with today.", "ru") in page
    assert "У каждого расхождения есть известная причина." in page
    assert "В старом отчёте" in page and "Срок истёк после" in page


def test_the_csv_holds_every_difference_without_running_the_queries_again(monitor, monkeypatch):
    page = monitor.page(URL)
    csv_url = re.search(r'<a href="([^"]+)" class="export"', page).group(1)
    assert csv_url.startswith("/monitor/legacy.csv?")

    def not_again(*args, **kwargs):
        raise AssertionError("the comparison of the page was run again")

    monkeypatch.setattr(legacy_compare, "compare", not_again)
    response = monitor.client.get(csv_url.replace("&amp;", "&"))
    assert response.status_code == 200
    assert response.headers["Content-Type"] == "text/csv; charset=utf-8"
    assert response.headers["Cache-Control"] == "no-store"
    rows = list(csv.reader(io.StringIO(response.get_data(as_text=True))))
    assert tuple(rows[0]) == CSV_COLUMNS
    assert {int(r[0]): r[6] for r in rows[1:]} == differences_in(page)


def test_a_long_list_is_capped_on_the_page(monitor, monkeypatch):
    from sidecar.monitor import views

    monkeypatch.setattr(views, "LEGACY_SHOWN", 2)
    page = monitor.page(URL)
    total = len(compare(monitor.runtime, 9, date_from=date(2025, 1, 1),
                        date_to=date(2027, 12, 31)).differences)
    assert len(differences_in(page)) == 2
    assert f"The first 2 of {total} differences are shown; the CSV holds them all." in page


@pytest.mark.parametrize("query, message", [
    ("from=2026-01-01", "Choose a level."),
    ("level=abc", "abc is not a level id."),
    ("level=99999999999999999999", "is not a level id."),
    ("level=999", "There is no level 999 on the site."),
    ("level=9&from=2026-13-01", "from: not a date: 2026-13-01 (use YYYY-MM-DD)."),
    ("level=9&date=tomorrow", "date: not a date: tomorrow (use YYYY-MM-DD)."),
    ("level=9&from=2026-12-01&to=2026-11-01", "The window ends on 2026-11-01, before it starts on 2026-12-01"),
])
def test_unusable_parameters_are_refused_with_a_clear_message(monitor, query, message):
    response = monitor.client.get(f"/monitor/legacy?{query}")
    assert response.status_code == 400
    page = response.get_data(as_text=True)
    assert message in page.replace("&#39;", "'")
    assert not differences_in(page)
    csv_response = monitor.client.get(f"/monitor/legacy.csv?{query}")
    assert csv_response.status_code == 400 and message in csv_response.get_data(as_text=True)


def test_unusable_parameters_in_russian(monitor):
    page = monitor.client.get("/monitor/legacy?level=999&lang=ru").get_data(as_text=True)
    assert "Уровня 999 на сайте нет." in page


def test_one_comparison_at_a_time(monitor):
    assert legacy_compare._running.acquire(blocking=False)
    try:
        response = monitor.client.get(URL)
        csv_response = monitor.client.get("/monitor/legacy.csv?level=9")
    finally:
        legacy_compare._running.release()
    assert response.status_code == 429 and response.headers["Retry-After"] == "30"
    assert "Another comparison is running; try again in a minute." in response.get_data(as_text=True)
    assert csv_response.status_code == 429
    assert monitor.client.get(URL).status_code == 200      # free again


@pytest.mark.parametrize("error, message", [
    (LegacyQueryTimeout("stopped"), "ran longer than 45 s and the database stopped it. Run “mlsidecar legacy compare --level 9”"),
    (LegacyQueryFailed("Table 'site.wp_memberlux_certificate' doesn't exist"),
     "The old report's query fails on this site: Table 'site.wp_memberlux_certificate' doesn't exist"),
])
def test_the_old_querys_failures_are_said_plainly(monitor, monkeypatch, error, message):
    def failing(*args, **kwargs):
        raise error

    monkeypatch.setattr(legacy_compare, "compare", failing)
    response = monitor.client.get(URL)
    assert response.status_code == 503
    assert message in response.get_data(as_text=True).replace("&#39;", "'")


def test_the_page_needs_a_signed_in_administrator(build_monitor):
    anonymous = build_monitor()
    response = anonymous.client.get(URL)
    assert response.status_code == 302 and "/login" in response.headers["Location"]
    assert anonymous.client.get("/monitor/legacy.csv?level=9").status_code == 302


def _digest(path: Path) -> str:
    return hashlib.sha256(path.read_bytes()).hexdigest()


def test_nothing_is_written_anywhere(monitor):
    site_file = Path(monitor.runtime.settings.wordpress.db_url.removeprefix("sqlite:///"))
    before = _digest(site_file)
    with monitor.runtime.sessions() as session:
        stored = (session.scalar(sa.select(sa.func.count()).select_from(CertificateClassRow)),
                  session.scalar(sa.select(sa.func.count()).select_from(SleeperEntry)))
    monitor.page(URL)
    monitor.client.get(URL.replace("/monitor/legacy?", "/monitor/legacy.csv?"))
    assert _digest(site_file) == before
    with monitor.runtime.sessions() as session:
        assert (session.scalar(sa.select(sa.func.count()).select_from(CertificateClassRow)),
                session.scalar(sa.select(sa.func.count()).select_from(SleeperEntry))) == stored
