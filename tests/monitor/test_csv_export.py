"""The sleepers CSV, from the command line and from the download, is byte for byte the report's rows
written one by one (``csv_chunks`` over ``MonitorService.iterate``): same columns, quoting, formula guard,
filters and order — on a read model holding odd values (quotes, separators, line breaks, text starting
= + - @ or a tab, full-width signs, non-Latin letters, empty fields), on SQLite and MariaDB stores."""

from __future__ import annotations

import csv
import io
from datetime import timedelta
from urllib.parse import urlencode

import pytest
from click.testing import CliRunner

from sidecar.bootstrap import build_runtime, store_url
from sidecar.cli import cli
from sidecar.clock import FixedClock
from sidecar.monitor.csv_export import csv_chunks
from sidecar.monitor.service import SleeperQuery
from sidecar.store.monitor_models import SleeperEntry
from sidecar.store.reminder_models import Reminder
from tests.monitor.support import START, TODAY, Monitor
from tests.stores import migrate_store

ODD = [
    ("=HYPERLINK(\"http://x\";\"y\")", "+7 999", "-минус", "@sum"),
    ("O'Brien, \"Jr\"", "line\nbreak", "tab\tinside", "semi;colon"),
    ("\tstarts with a tab", "\r=1", "\uff1dfull width", "\uff0b1"),
    ("Ёлка 🎄", "日本語", "", "a=b"),
    ("-5", "@", "'=1", "trailing space "),
]


def _plant(runtime) -> None:
    """Odd sleepers beside the refreshed ones, and letters sent for some (steps 1-3 count, 4 and unsent do not)."""
    now = START
    with runtime.sessions.begin() as session:
        for n, (first, last, login, email) in enumerate(ODD):
            for term_id in (7, 9):
                user_id = 900 + n
                session.merge(SleeperEntry(
                    term_id=term_id, user_id=user_id, expired_on=TODAY - timedelta(days=3 * n + term_id % 2),
                    last_grant=None if n % 2 else TODAY - timedelta(days=400), blocked=n == 2,
                    email=email, login=login, first_name=first, last_name=last,
                    search_text=f"{first} {last} {email} {login}".lower(), refreshed_at=now))
        expired = TODAY - timedelta(days=3 + 1)   # user 901, level 7 (3 * 1 + 7 % 2)
        for step, state in ((1, "sent"), (2, "sent"), (3, "failed"), (4, "sent")):
            session.add(Reminder(user_id=901, term_id=7, expired_on=expired, step=step, state=state, due_on=TODAY,
                                 planned_at=now, updated_at=now))
        session.add(Reminder(user_id=903, term_id=9, expired_on=TODAY - timedelta(days=10), step=1, state="sent",
                             due_on=TODAY, planned_at=now, updated_at=now))


@pytest.fixture
def planted(store_section, small_site, settings_for):
    settings = settings_for(small_site, store=store_section)
    migrate_store(store_url(settings))
    runtime = build_runtime(settings, clock=FixedClock(START))
    monitor = Monitor(runtime)
    monitor.refresher.refresh_all()
    _plant(runtime)
    monitor.login()
    yield monitor, settings
    runtime.close()


def reference(monitor: Monitor, query: SleeperQuery, *, excel: bool = False, limit: int | None = None) -> str:
    """The export as it has always been written: the service's rows, one writer call per row."""
    rows = list(monitor.service.iterate(query))
    return "".join(csv_chunks(rows[:limit] if limit else rows, excel=excel))


QUERIES = [
    ({}, {}),
    ({"sort": "email"}, {"sort": "email", "descending": False}),
    ({"sort": "name", "desc": "1"}, {"sort": "name", "descending": True}),
    ({"sort": "level"}, {"sort": "level", "descending": False}),
    ({"sort": "days_since", "desc": "1"}, {"sort": "days_since", "descending": True}),
    ({"level": "7"}, {"levels": (7,)}),
    ({"level": ["9", "7"], "sort": "expired_on", "desc": "0"}, {"levels": (9, 7), "descending": False}),
    ({"search": "o'brien"}, {"search": "o'brien"}),
    ({"search": "日本語"}, {"search": "日本語"}),
    ({"expired_from": (TODAY - timedelta(days=9)).isoformat(), "expired_to": TODAY.isoformat()},
     {"expired_from": TODAY - timedelta(days=9), "expired_to": TODAY}),
    ({"within": "7"}, {"expired_within": 7}),
]


def _query(monitor: Monitor, fields: dict) -> SleeperQuery:
    sort, descending = monitor.service.default_order()
    return SleeperQuery(**{"sort": sort, "descending": descending, **fields})


def _cli_args(params: dict) -> list[str]:
    names = {"level": "--level", "sort": "--sort", "search": "--search", "expired_from": "--from", "expired_to": "--to",
             "within": "--within"}
    args: list[str] = []
    for name, value in params.items():
        if name == "desc":
            args.append("--desc" if value == "1" else "--asc")
            continue
        for one in value if isinstance(value, list) else [value]:
            args += [names[name], one]
    return args


@pytest.mark.parametrize(("params", "fields"), QUERIES)
def test_the_download_is_the_reference_export(planted, params, fields):
    monitor, _settings = planted
    expected = reference(monitor, _query(monitor, fields))
    assert expected.count("\r\n") > 1 or fields.get("search")
    response = monitor.client.get("/monitor/sleepers.csv?" + urlencode(params, doseq=True))
    assert response.status_code == 200 and response.is_streamed
    assert response.get_data(as_text=True) == expected
    excel = monitor.client.get("/monitor/sleepers.csv?" + urlencode({**params, "excel": "1"}, doseq=True))
    assert excel.get_data(as_text=True) == reference(monitor, _query(monitor, fields), excel=True)


@pytest.mark.parametrize(("params", "fields"), QUERIES)
def test_the_command_is_the_reference_export(planted, params, fields):
    monitor, settings = planted
    result = CliRunner().invoke(cli, ["sleepers", "list", "--format", "csv", *_cli_args(params)],
                                obj={"settings": settings, "clock": FixedClock(START)}, catch_exceptions=False)
    assert result.exit_code == 0, result.output
    assert result.stdout_bytes.decode() == reference(monitor, _query(monitor, fields))


def test_the_command_honours_limit_and_a_cursor(planted):
    monitor, settings = planted
    sort, descending = monitor.service.default_order()
    page = monitor.service.page(SleeperQuery(sort=sort, descending=descending, limit=5))

    def run(*args: str) -> str:
        result = CliRunner().invoke(cli, ["sleepers", "list", "--format", "csv", *args],
                                    obj={"settings": settings, "clock": FixedClock(START)}, catch_exceptions=False)
        assert result.exit_code == 0, result.output
        return result.stdout_bytes.decode()

    assert run("--limit", "7") == reference(monitor, _query(monitor, {}), limit=7)
    after = _query(monitor, {"after": page.next_cursor})
    assert run("--after", page.next_cursor) == reference(monitor, after)
    assert run("--after", page.next_cursor, "--limit", "3") == reference(monitor, after, limit=3)


def test_the_sample_really_is_odd(planted):
    """The comparisons above would prove little on tame values: the sample holds what needs care."""
    monitor, _settings = planted
    text = reference(monitor, _query(monitor, {}))
    for needle in ('"O\'Brien, ""Jr"""', '"line\nbreak"', "'=HYPERLINK", "'+7 999", "'-минус", "'@sum", "'\t",
                   "'\uff1dfull width", "日本語", "Ёлка 🎄", ",a=b,", "'-5"):
        assert needle in text, needle
    rows = list(csv.reader(io.StringIO(text, newline="")))
    counts = {(row[0], row[5]): row[-1] for row in rows[1:]}
    assert counts[("901", "7")] == "2" and counts[("901", "9")] == "0" and counts[("903", "9")] == "1"
    assert all(len(row) == len(rows[0]) for row in rows)


@pytest.mark.mariadb
def test_on_mariadb_a_paused_download_keeps_its_rows_and_the_connection_goes_back_as_it_came(
        small_site, settings_for, mariadb_database):
    """The rows stream as the download is read: MariaDB is told to wait for a paused reader (an hour, not
    net_write_timeout's 60 s) on that connection only, and the setting is undone when the export ends or
    is abandoned (the browser closed)."""
    import sqlalchemy as sa

    from sidecar.monitor.csv_export import export_chunks
    from sidecar.monitor.service import STREAM_WRITE_TIMEOUT_SECONDS

    settings = settings_for(small_site, store={"url": mariadb_database})
    migrate_store(store_url(settings))
    runtime = build_runtime(settings, clock=FixedClock(START))
    try:
        Monitor(runtime).refresher.refresh_all()
        _plant(runtime)
        service = Monitor(runtime).service
        seen: list[str] = []
        sa.event.listen(runtime.store_engine, "before_cursor_execute",
                        lambda _c, _cur, statement, *_rest: seen.append(" ".join(statement.split())[:60]))
        chunks = export_chunks(service, _query(Monitor(runtime), {}))
        next(chunks)
        with runtime.store_engine.connect() as other:   # another pooled connection is not touched
            assert other.exec_driver_sql("SELECT @@session.net_write_timeout").scalar() != STREAM_WRITE_TIMEOUT_SECONDS
        chunks.close()                                   # the download abandoned half-way
        setting = [s for s in seen if s.startswith("SET SESSION net_write_timeout")]
        assert setting == [f"SET SESSION net_write_timeout = {STREAM_WRITE_TIMEOUT_SECONDS}",
                           "SET SESSION net_write_timeout = DEFAULT"]
        assert seen.index(setting[0]) < next(i for i, s in enumerate(seen) if s.startswith("SELECT mls_sleepers"))
        with runtime.store_engine.connect() as conn:
            timeouts = conn.exec_driver_sql("SELECT @@session.net_write_timeout, @@global.net_write_timeout").one()
        assert timeouts[0] == timeouts[1]
    finally:
        runtime.close()
