"""Learning-monitor pages: overview, sleepers table (sorts, keyset pages, filters), CSV export, user page, i18n."""

from __future__ import annotations

import csv
import html
import io
import re
from datetime import timedelta

import pytest
import sqlalchemy as sa

from sidecar.memberlux.reader import Level
from sidecar.monitor.service import SORTS, SleeperRow
from sidecar.monitor.charts import sparkline
from sidecar.monitor.csv_export import CSV_COLUMNS, csv_chunks
from sidecar.monitor.display import level_tree
from sidecar.store.monitor_models import CertificateClassRow
from tests.monitor.support import LEVELS, START, TODAY, csrf_in, flashes, link, listed, walk


# --- overview -----------------------------------------------------------------------------------------

def test_overview_lists_every_level_with_its_count_trend_and_refresh_time(monitor):
    page = monitor.page("/monitor")
    counts = monitor.service.counts_per_level()
    assert counts == {7: 12, 8: 7, 9: 20, 10: 0}
    for term_id, name in LEVELS.items():
        row = re.search(rf'<tr class="level-row[^"]*" data-level="{term_id}">(.*?)</tr>', page, re.S).group(1)
        assert name in row
        assert f'href="/monitor/sleepers?level={term_id}" class="count">{counts[term_id]}</a>' in row
        assert '<svg class="spark"' in row
        # Refreshed at 10:00 UTC: 13:00 in the site's zone (Moscow), UTC alongside.
        assert "2026-11-24 13:00" in row and "2026-11-24 10:00 UTC" in row
        assert "stale" not in row
    assert "Refreshed (Europe/Moscow)" in page
    assert "All sleepers (39)" in page
    assert 'href="/monitor">Sleepers</a>' in page  # the nav link


def test_every_level_and_the_list_say_how_fresh_the_report_is(monitor):
    monitor.clock.instant = START + timedelta(seconds=12)
    page = monitor.page("/monitor")
    for term_id in LEVELS:
        row = re.search(rf'<tr class="level-row[^"]*" data-level="{term_id}">(.*?)</tr>', page, re.S).group(1)
        assert "as of 12 seconds ago" in row
    # A change scan a minute later makes every level current as of that scan.
    monitor.clock.instant = START + timedelta(minutes=1)
    assert monitor.refresher.refresh_stale(timedelta(days=1)).kind == "idle"
    monitor.clock.instant = START + timedelta(minutes=1, seconds=1)
    page = monitor.page("/monitor")
    assert page.count("as of 1 second ago") == len(LEVELS)
    assert "as of 1 second ago" in monitor.page("/monitor/sleepers?level=7")
    monitor.clock.instant = START + timedelta(hours=3, minutes=1)
    assert "проверено 3 часа назад" in monitor.page("/monitor?lang=ru")
    monitor.clock.instant = START + timedelta(minutes=22)
    assert "as of 21 minutes ago" in monitor.page("/monitor/sleepers?lang=en")


def test_overview_flags_levels_not_refreshed_for_a_day(monitor):
    monitor.clock.instant = START - timedelta(days=2)
    monitor.refresher.refresh_level(7, TODAY - timedelta(days=2))
    monitor.clock.instant = START
    page = monitor.page("/monitor")
    stale = re.search(r'<tr class="level-row stale" data-level="7">(.*?)</tr>', page, re.S)
    assert stale and 'class="badge badge-warn"' in stale.group(1)
    assert not re.search(r'<tr class="level-row stale" data-level="8">', page)
    assert any("not refreshed in the last 24 hours" in text and "Is <code>mlsidecar worker</code> running?" in text
               for text in flashes(page))
    assert any("Английский с нуля" in text for text in flashes(monitor.page("/monitor/sleepers?level=7")))


def test_trend_sparkline_draws_the_daily_counts(monitor):
    for weeks_ago in (3, 2, 1):
        monitor.refresher.refresh_all(day=TODAY - timedelta(weeks=weeks_ago), sync_certificates=False)
    monitor.refresher.refresh_all()
    page = monitor.page("/monitor")
    row = re.search(r'data-level="9">(.*?)</tr>', page, re.S).group(1)
    points = re.search(r'<polyline class="spark-line" points="([^"]+)"', row).group(1).split()
    assert len(points) == 4
    xs = [float(p.split(",")[0]) for p in points]
    assert xs == sorted(xs) and xs[-1] == 256.0  # today at the right edge
    assert "from" in row and "20 on 2026-11-24" in row  # the accessible label
    # The weeks before the first refresh were reconstructed: drawn dashed, each day's count on hover.
    assert re.search(r'<polyline class="spark-line spark-rebuilt" points="[^"]+"', row)
    assert "<title>2026-11-24: 20</title>" in row
    assert re.search(r"<title>2026-10-2\d: \d+ \(reconstructed from key dates\)</title>", row)
    assert ">2026-09-02</text>" in row and ">2026-11-24</text>" in row  # the x axis: first day and today


def test_sparkline_edge_cases():
    assert "—" in sparkline([], TODAY)
    one = sparkline([(TODAY, 0)], TODAY)
    assert "<circle" in one and "<polyline" not in one
    flat = sparkline([(TODAY - timedelta(days=7), 5), (TODAY, 5)], TODAY)
    assert flat.count("<polyline") == 1


def test_level_tree_puts_children_under_their_parent_and_survives_cycles():
    levels = [Level(1, "A", "a", 0), Level(2, "A: module", "a-m", 1), Level(3, "B", "b", 0),
              Level(4, "A: module: part", "a-m-p", 2), Level(5, "orphan", "o", 99),
              Level(6, "loop-1", "l1", 7), Level(7, "loop-2", "l2", 6)]
    tree = [(level.term_id, depth) for level, depth in level_tree(levels)]
    assert tree[:5] == [(1, 0), (2, 1), (4, 2), (3, 0), (5, 0)]
    assert sorted(t for t, _ in tree) == [1, 2, 3, 4, 5, 6, 7]


def test_refresh_buttons_refresh_and_say_how_long_it_took(monitor):
    page = monitor.page("/monitor")
    token = csrf_in(page)
    response = monitor.client.post("/monitor/refresh", data={"csrf_token": token, "level": "7"})
    assert response.status_code == 302 and response.headers["Location"].endswith("/monitor")
    text = flashes(monitor.page("/monitor"))
    assert any(re.search(r"Level «Английский с нуля» refreshed in \d+\.\d\d s: 12 sleepers", t) for t in text), text

    monitor.client.post("/monitor/refresh", data={"csrf_token": token})
    assert any(re.search(r"4 levels refreshed in \d+\.\d\d s: 39 sleepers in total", t)
               for t in flashes(monitor.page("/monitor")))

    monitor.client.post("/monitor/refresh", data={"csrf_token": token, "level": "999"})
    assert any("no level 999" in t for t in flashes(monitor.page("/monitor")))
    assert monitor.client.post("/monitor/refresh", data={"level": "7"}).status_code == 403  # no CSRF token


def test_pages_need_an_admin_session(build_monitor):
    anonymous = build_monitor()
    for url in ("/monitor", "/monitor/sleepers", "/monitor/sleepers.csv", "/monitor/users/8"):
        response = anonymous.client.get(url)
        assert response.status_code == 302 and "/login" in response.headers["Location"], url
    assert anonymous.client.post("/monitor/refresh").status_code in (302, 403)


# --- the table ---------------------------------------------------------------------------------------

def test_table_shows_twenty_rows_a_page_with_the_total_and_next_first_links(monitor):
    page = monitor.page("/monitor/sleepers")
    assert "Found: 39." in page
    rows = listed(page)
    assert len(rows) == 20
    assert link(page, "first") is None
    second = monitor.page(link(page, "next"))
    assert len(listed(second)) == 19 and link(second, "next") is None
    assert link(second, "first") == "/monitor/sleepers"
    expected = [(r.user_id, r.term_id) for r in monitor.all_rows()]
    assert rows + listed(second) == expected  # default: the configured order, most recent expiry first
    expiries = [r.expired_on for r in monitor.all_rows()]
    assert expiries == sorted(expiries, reverse=True)


def test_columns_of_a_row(monitor):
    row = next(r for r in monitor.all_rows(levels=(7,)) if r.last_grant)
    page = monitor.page("/monitor/sleepers?level=7")
    cells = re.search(rf'<tr class="sleeper[^"]*" data-user="{row.user_id}" data-level="7">(.*?)</tr>', page, re.S).group(1)
    assert f'<a href="/monitor/users/{row.user_id}" class="user-link">{row.user_id}</a>' in cells
    for value in (row.email, row.first_name, row.last_name, row.last_grant.isoformat(), row.expired_on.isoformat(),
                  f"last access {row.last_access_day.isoformat()}", str(row.days_since), LEVELS[7]):
        assert value in cells, value
    assert (row.expired_on - row.last_access_day).days == 1
    assert (TODAY - row.expired_on).days == row.days_since


def test_blocked_learners_carry_a_badge(monitor):
    with monitor.runtime.sessions.begin() as session:  # as a refresh does for a blocked account
        session.execute(sa.text("UPDATE mls_sleepers SET blocked = 1 WHERE user_id = "
                                "(SELECT MIN(user_id) FROM mls_sleepers WHERE term_id = 8) AND term_id = 8"))
    page = monitor.page("/monitor/sleepers?level=8")
    assert page.count('class="badge badge-blocked"') == 1
    assert re.search(r'<tr class="sleeper blocked"', page)


@pytest.mark.parametrize("sort", SORTS)
@pytest.mark.parametrize("descending", [False, True])
def test_every_sort_both_ways_pages_stably_and_completely(monitor, sort, descending):
    everyone = {(r.user_id, r.term_id): r for r in monitor.all_rows()}
    url = f"/monitor/sleepers?sort={sort}&limit=7" + ("&desc=1" if descending else "&desc=0")
    seen, pages = walk(monitor, url)
    assert pages == 6
    assert len(seen) == len(set(seen)) == len(everyone) == 39  # nothing repeated, nothing skipped
    assert set(seen) == set(everyone)
    key = {
        "expired_on": lambda r: r.expired_on,
        "days_since": lambda r: r.days_since,
        "name": lambda r: (r.last_name, r.first_name),
        "email": lambda r: r.email,
        "level": lambda r: r.level_name.casefold(),
    }[sort]
    values = [key(everyone[pair]) for pair in seen]
    assert values == sorted(values, reverse=descending)
    # Reading the same pages again gives the same rows in the same order.
    assert walk(monitor, url)[0] == seen


@pytest.mark.parametrize("column,sort", [("email", "email"), ("last_name", "name"), ("expired_on", "expired_on"),
                                         ("days_since", "days_since"), ("level", "level")])
def test_sort_headers_toggle_the_direction(monitor, column, sort):
    page = monitor.page("/monitor/sleepers?level=7&search=a")
    first = link(page, f"sort sort-{column}")
    # The default order is expired_on descending: its header turns it round.
    assert f"sort={sort}" in first or (sort == "expired_on" and "desc=0" in first)
    assert "level=7" in first and "search=a" in first  # filters survive
    clicked = monitor.page(first)
    header = re.search(rf'<th class="sortable[^"]* sorted"[^>]*>\s*<a href="([^"]+)" class="sort sort-{column}"', clicked)
    assert header, "the clicked column is not marked as sorted"
    again = monitor.page(header.group(1))
    rows_one, rows_two = listed(clicked), listed(again)
    assert sorted(rows_one) == sorted(rows_two) and rows_one
    if len(set(rows_one)) > 1 and sort != "level":
        assert rows_one != rows_two  # the other direction
    assert ('aria-sort="descending"' in clicked) != ('aria-sort="descending"' in again)


def test_search_by_name_and_email(monitor):
    target = monitor.all_rows(levels=(9,))[3]
    for term in (target.last_name, target.last_name.upper(), target.email.split("@")[0], target.email):
        rows = listed(monitor.page(f"/monitor/sleepers?search={term}"))
        assert (target.user_id, 9) in rows, term
        assert len(rows) < 39
    both = listed(monitor.page(f"/monitor/sleepers?search={target.first_name} {target.last_name}"))
    assert (target.user_id, 9) in both
    page = monitor.page("/monitor/sleepers?search=nobody-has-this-name")
    assert listed(page) == [] and "No sleepers match these filters." in page and "Found: 0." in page


def test_level_filter_one_or_several(monitor):
    assert {t for _u, t in walk(monitor, "/monitor/sleepers?level=7")[0]} == {7}
    assert len(walk(monitor, "/monitor/sleepers?level=7")[0]) == 12
    assert len(walk(monitor, "/monitor/sleepers?level=7&level=8")[0]) == 19
    page = monitor.page("/monitor/sleepers?level=7&level=8")
    assert re.search(r'<option value="7" selected>', page) and re.search(r'<option value="8" selected>', page)
    bad = monitor.page("/monitor/sleepers?level=4242")
    assert "Found: 39." in bad and any("4242" in text for text in flashes(bad))


def test_expiry_window_includes_both_ends(monitor):
    everyone = monitor.all_rows(sort="expired_on", descending=False)
    day = everyone[10].expired_on
    same_day = sorted((r.user_id, r.term_id) for r in everyone if r.expired_on == day)
    rows = walk(monitor, f"/monitor/sleepers?expired_from={day}&expired_to={day}")[0]
    assert sorted(rows) == same_day
    later = [r for r in everyone if r.expired_on > day]
    start, end = later[0].expired_on, later[-1].expired_on
    expected = sorted((r.user_id, r.term_id) for r in everyone if start <= r.expired_on <= end)
    assert sorted(walk(monitor, f"/monitor/sleepers?expired_from={start}&expired_to={end}")[0]) == expected
    page = monitor.page(f"/monitor/sleepers?expired_from={start}")
    assert f'name="expired_from" value="{start}"' in page
    assert "Expired between" in page and ">and" in page.replace("\n", "").replace("  ", "")


def test_unusable_filters_are_dropped_and_explained(monitor):
    page = monitor.page("/monitor/sleepers?expired_from=yesterday&sort=height&desc=maybe&limit=9999")
    assert "Found: 39." in page and len(listed(page)) == 20
    text = " ".join(flashes(page))
    assert "yesterday" in text and "height" in text and "maybe" in text and "9999" in text
    backwards = monitor.page("/monitor/sleepers?expired_from=2026-01-02&expired_to=2026-01-01")
    assert any("before it starts" in t for t in flashes(backwards))
    mangled = monitor.page("/monitor/sleepers?after=not-a-cursor")
    assert len(listed(mangled)) == 20 and any("page link is not valid" in t for t in flashes(mangled))
    other_order = link(monitor.page("/monitor/sleepers"), "next").replace("?", "?sort=email&")
    assert any("page link is not valid" in t for t in flashes(monitor.page(other_order)))


# --- CSV ------------------------------------------------------------------------------------------

def parse_csv(text: str, delimiter: str = ",") -> list[list[str]]:
    return list(csv.reader(io.StringIO(text), delimiter=delimiter))


def test_csv_export_streams_every_row_with_a_header(monitor):
    response = monitor.client.get("/monitor/sleepers.csv")
    assert response.status_code == 200 and response.is_streamed
    assert response.headers["Content-Type"] == "text/csv; charset=utf-8"
    assert response.headers["Content-Disposition"] == 'attachment; filename="sleepers-2026-11-24.csv"'
    assert response.headers["Cache-Control"] == "no-store"
    text = response.get_data(as_text=True)
    assert not text.startswith("\ufeff")
    rows = parse_csv(text)
    assert rows[0] == list(CSV_COLUMNS)
    assert len(rows) == 40  # more than one page: all 39
    expected = monitor.all_rows()
    assert [(int(r[0]), int(r[5])) for r in rows[1:]] == [(r.user_id, r.term_id) for r in expected]
    first = dict(zip(rows[0], rows[1], strict=True))
    assert first["expired_on"] == expected[0].expired_on.isoformat()
    assert first["level_name"] == expected[0].level_name and first["blocked"] in ("0", "1")


def test_csv_export_keeps_the_filters_of_the_page(monitor):
    page = monitor.page("/monitor/sleepers?level=7&sort=email&desc=1&within=90&after=ignored")
    url = link(page, "export")
    assert "level=7" in url and "sort=email" in url and "desc=1" in url and "within=90" in url and "after" not in url
    response = monitor.client.get(url)
    assert response.headers["Content-Disposition"] == 'attachment; filename="sleepers-level-7-2026-11-24.csv"'
    rows = parse_csv(response.get_data(as_text=True))[1:]
    emails = [r[1] for r in rows]
    assert len(rows) == 1 and {r[5] for r in rows} == {"7"}    # level 7 has one expiry in the last 90 days
    response = monitor.client.get(url.replace("&within=90", ""))
    emails = [r[1] for r in parse_csv(response.get_data(as_text=True))[1:]]
    assert len(emails) == 12 and emails == sorted(emails, reverse=True)


def test_excel_variant_has_a_bom_and_semicolons(monitor):
    page = monitor.page("/monitor/sleepers?level=9")
    url = link(page, "export-excel")
    assert "excel=1" in url and "level=9" in url
    response = monitor.client.get(url)
    raw = response.get_data()
    assert raw.startswith("\ufeff".encode("utf-8"))
    text = raw.decode("utf-8")[1:]
    assert text.splitlines()[0] == ";".join(CSV_COLUMNS)
    rows = parse_csv(text, ";")
    assert len(rows) == 21 and all(len(r) == len(CSV_COLUMNS) for r in rows)
    assert any(re.search("[а-яё]", r[3] + r[4], re.I) for r in rows[1:])  # Cyrillic names survive


def test_both_variants_neutralise_formulas_and_keep_numbers():
    row = SleeperRow(user_id=1, email="=1+2@x.example", login="x", first_name="=HYPERLINK(\"http://evil\")",
                     last_name="-Smith", term_id=7, level_name="L", expired_on=TODAY, last_access_day=TODAY,
                     days_since=-3, last_grant=None, blocked=True, reminders_sent=2)
    excel = parse_csv("".join(csv_chunks([row], excel=True))[1:], ";")[1]
    assert excel[1] == "'=1+2@x.example" and excel[3].startswith("'=HYPERLINK") and excel[4] == "'-Smith"
    plain = parse_csv("".join(csv_chunks([row])))[1]
    assert plain[1] == "'=1+2@x.example" and plain[3].startswith("'=HYPERLINK") and plain[4] == "'-Smith"
    assert plain[0] == "1" and plain[5] == "7" and plain[9] == "-3" and plain[11] == "1" and plain[12] == "2"


def test_csv_is_written_in_chunks():
    rows = [SleeperRow(user_id=i, email=f"u{i}@x.example", login="", first_name="", last_name="", term_id=7,
                       level_name="L", expired_on=TODAY, last_access_day=TODAY, days_since=0, last_grant=None,
                       blocked=False, reminders_sent=0) for i in range(450)]
    chunks = list(csv_chunks(iter(rows), batch=200))
    assert len(chunks) == 3 and chunks[0].startswith("user_id,")
    assert len(parse_csv("".join(chunks))) == 451


# --- the user page -------------------------------------------------------------------------------

def test_user_page_shows_keys_certificates_and_verdicts(monitor):
    sleeper = monitor.all_rows(levels=(7,))[0]
    page = monitor.page(f"/monitor/users/{sleeper.user_id}")
    keys = monitor.runtime.reader.key_rows(sleeper.user_id)
    assert keys
    for key in keys:
        assert re.search(rf'<td class="num">{key.key_id}\b', page), key.key_id
    assert sleeper.email in page
    section = re.search(r'<section class="grid-wrap level-section" id="level-7".*?</section>', page, re.S).group(0)
    assert 'class="badge verdict verdict-sleeper"' in section
    ago = "1 day ago" if sleeper.days_since == 1 else f"{sleeper.days_since} days ago"
    assert f"Sleeper: access ended on {sleeper.expired_on} ({ago})" in section
    assert '<svg class="timeline"' in section and 'class="today"' in section
    assert "Certificates" in section
    assert ">yes" in section  # listed in the report
    for term_id in {k.term_id for k in keys}:
        assert f'id="level-{term_id}"' in page
    # The way back keeps the filters of the list the admin came from, and only such a list.
    came_from = "http://localhost/monitor/sleepers?level=7&sort=email"
    back = monitor.client.get(f"/monitor/users/{sleeper.user_id}", headers={"Referer": came_from})
    assert f'<a href="{html.escape(came_from)}">' in back.get_data(as_text=True)
    elsewhere = monitor.client.get(f"/monitor/users/{sleeper.user_id}", headers={"Referer": "https://evil.example/x"})
    assert '<a href="/monitor/sleepers">' in elsewhere.get_data(as_text=True)


def test_user_page_shows_manual_certificates_and_their_verdict(monitor):
    with monitor.runtime.sessions() as session:
        manual = session.scalars(sa.select(CertificateClassRow).where(
            CertificateClassRow.cls == "manual", CertificateClassRow.deleted_at.is_(None),
            CertificateClassRow.level_id == 7)).all()
    holder = next(c for c in manual
                  if monitor.service.explain(c.user_id, 7).reason == "manual_certificate")
    page = monitor.page(f"/monitor/users/{holder.user_id}")
    section = re.search(r'id="level-7".*?</section>', page, re.S).group(0)
    assert 'verdict-manual_certificate' in section
    assert "holds a manual certificate for this level" in section
    cert = re.search(rf'<tr class="certificate">\s*<td class="num">{holder.certificate_id}</td>(.*?)</tr>', section, re.S)
    assert cert and 'class="badge cert-manual">manual<' in cert.group(1)
    assert "The level issues certificates by hand." in cert.group(1) or "chosen by hand" in cert.group(1) \
        or "was activated by the user that day" in cert.group(1)


def test_user_page_of_an_active_learner_and_a_missing_one(monitor):
    explanation = None
    for user_id in range(1, 80):
        try:
            candidate = monitor.service.explain(user_id, 9)
        except LookupError:
            continue
        if candidate.reason == "active":
            explanation = candidate
            break
    assert explanation is not None
    page = monitor.page(f"/monitor/users/{explanation.user.id}")
    section = re.search(r'id="level-9".*?</section>', page, re.S).group(0)
    assert "verdict-active" in section and "Active: a key opens the level on 2026-11-24" in section
    assert "opens the level today" in section
    # Its access is told as it stands on the day: open until a day, never "expired" on a future one.
    until = explanation.access_until
    assert until is not None and until > explanation.day
    assert f"Access active until</th><td>{until.isoformat()}" in section.replace("\n", "")
    assert "Expired on" not in section
    assert monitor.client.get("/monitor/users/999999").status_code == 404


# --- languages ----------------------------------------------------------------------------------------

RAW_KEY = re.compile(r"\b(?:monitor|nav)\.[a-z_]+(?:\.[a-z_]+)*\b")


def test_russian_rendering(monitor):
    sleeper = monitor.all_rows(levels=(7,))[0]
    table = monitor.page("/monitor/sleepers?lang=ru")
    for text in ("Спящие ученики (сони)", "Срок истёк после", "и до", "Найдено: 39.", "ID пользователя", "Эл. почта",
                 "Имя", "Фамилия", "Последняя выдача", "Срок истёк", "Напоминаний отправлено", "Выгрузить CSV",
                 "Следующая страница »", "доступ до"):
        assert text in table, text
    overview = monitor.page("/monitor")  # the cookie keeps the language
    assert "Пересчитать все уровни" in overview and "Пересчитано (Europe/Moscow)" in overview
    user = monitor.page(f"/monitor/users/{sleeper.user_id}")
    assert "Спящий: доступ закончился" in user and "Ключи" in user and "Сертификаты" in user
    assert monitor.page("/monitor/sleepers?search=nobody-at-all").count("Сони не найдены.") == 1
    assert "Спящие ученики</a>" in overview  # the nav link


@pytest.mark.parametrize("lang", ["en", "ru"])
def test_no_raw_translation_keys(monitor, lang):
    sleeper = monitor.all_rows(levels=(7,))[0]
    for url in ("/monitor", "/monitor/sleepers?expired_from=bad&sort=bad", "/monitor/sleepers?search=zzz-none",
                f"/monitor/users/{sleeper.user_id}"):
        page = monitor.page(f"{url}{'&' if '?' in url else '?'}lang={lang}")
        text = re.sub(r'(href|action|src)="[^"]*"', "", page)
        assert not RAW_KEY.search(text), (url, RAW_KEY.search(text).group(0))
