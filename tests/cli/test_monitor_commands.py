"""`mlsidecar explain` and `mlsidecar sleepers refresh|list`: text, JSON and CSV output, errors, progress."""

from __future__ import annotations

import csv
import io
import json
from datetime import date, datetime, timedelta, timezone

import pytest
import sqlalchemy as sa
from click.testing import CliRunner

from sidecar.bootstrap import build_runtime, store_url
from sidecar.cli import cli
from sidecar.clock import FixedClock
from sidecar.monitor.certificates import CertificateClassifier
from sidecar.monitor.refresh import SleeperRefresher
from sidecar.monitor.service import MonitorService, SleeperQuery
from sidecar.monitor.csv_export import CSV_COLUMNS
from sidecar.store.monitor_models import CertificateClassRow, SleeperCount, SleeperEntry, SleeperRefresh
from tests.stores import migrate_store

SEEDED_DAY = date(2026, 11, 24)


@pytest.fixture
def settings(small_site, settings_for):
    built = settings_for(small_site)
    migrate_store(store_url(built))
    return built


@pytest.fixture
def run(settings):
    """Invoke the CLI with these settings already loaded (as `--config` would)."""

    def invoke(*args: str):
        return CliRunner().invoke(cli, list(args), obj={"settings": settings}, catch_exceptions=False)

    return invoke


@pytest.fixture
def runtime(settings):
    built = build_runtime(settings)  # the real clock, like the commands themselves
    try:
        yield built
    finally:
        built.close()


def sleeper_of(runtime, term_id: int):
    """A learner who sleeps in ``term_id`` on the seeded day, judged live (independent of any refresh)."""
    service = MonitorService(runtime)
    for user_id in range(1, 100):
        try:
            explanation = service.explain(user_id, term_id, SEEDED_DAY)
        except LookupError:
            continue
        if explanation.is_sleeper:
            return explanation
    raise AssertionError(f"no sleeper in level {term_id}")


# --- explain ---------------------------------------------------------------------------------------------

def test_explain_text_shows_the_verdict_and_the_rows(run, runtime):
    e = sleeper_of(runtime, 7)
    result = run("explain", "--user", str(e.user.id), "--level", "7", "--date", "2026-11-24")
    assert result.exit_code == 0, result.output
    out = result.output
    assert f"user      {e.user.id} {e.user.login} <{e.user.email}>" in out
    assert "level     7 Английский с нуля" in out
    assert "day       2026-11-24 (UTC)" in out
    assert "verdict   sleeper (SLEEPER)" in out
    assert f"Sleeper: access ended on {e.verdict.expired_on}" in out
    assert f"keys of the level ({len(e.keys)}):" in out
    header = next(line for line in out.splitlines() if line.startswith("KEY"))
    assert header.split()[:6] == ["KEY", "LEVEL", "STATUS", "START", "END", "ACTIVATED"]
    for key in e.keys:
        assert any(line.startswith(f"{key.key_id} ") for line in out.splitlines()), key.key_id
    assert "certificates" in out

    by_email = run("explain", "--user", e.user.email.upper(), "--level", "7", "--date", "2026-11-24")
    assert by_email.exit_code == 0 and f"user      {e.user.id} " in by_email.output


def test_explain_json(run, runtime):
    e = sleeper_of(runtime, 9)
    result = run("explain", "--user", str(e.user.id), "--level", "9", "--date", "2026-11-24", "--format", "json")
    assert result.exit_code == 0, result.output
    data = json.loads(result.output)
    assert data["reason"] == "sleeper" and data["is_sleeper"] is True
    assert data["user"]["id"] == e.user.id and data["level"] == {"id": 9, "name": "Бизнес-английский"}
    assert data["day"] == "2026-11-24" and data["expired_on"] == e.verdict.expired_on.isoformat()
    assert data["days_since_expiry"] == (SEEDED_DAY - e.verdict.expired_on).days
    assert [k["key_id"] for k in data["keys"]] == [k.key_id for k in e.keys]
    assert {"date_start", "date_end", "counts", "note", "banned", "basket", "unlimited"} <= set(data["keys"][0])
    assert data["summary"].startswith("Sleeper:")


def test_explain_before_the_expiry_is_not_a_sleeper(run, runtime):
    e = sleeper_of(runtime, 7)
    day_before = e.verdict.last_access_day.isoformat()
    data = json.loads(run("explain", "--user", str(e.user.id), "--level", "7", "--date", day_before,
                          "--format", "json").output)
    assert data["reason"] in ("active", "renewed") and data["is_sleeper"] is False


def test_explain_shows_manual_certificates(run, runtime):
    CertificateClassifier(runtime).sync()
    with runtime.sessions() as session:
        manual = session.query(CertificateClassRow).filter_by(cls="manual", level_id=7).all()
    service = MonitorService(runtime)
    holder = next(c for c in manual if service.explain(c.user_id, 7, SEEDED_DAY).reason == "manual_certificate")
    result = run("explain", "--user", str(holder.user_id), "--level", "7", "--date", "2026-11-24")
    assert "verdict   manual_certificate" in result.output
    assert "holds a manual certificate" in result.output
    line = next(line for line in result.output.splitlines() if line.startswith(f"{holder.certificate_id} "))
    assert line.split()[1] == "manual"


def test_explain_errors(run):
    unknown_user = run("explain", "--user", "999999", "--level", "7")
    assert unknown_user.exit_code == 1 and "no WordPress user with id 999999" in unknown_user.output
    unknown_email = run("explain", "--user", "nobody@example.invalid", "--level", "7")
    assert unknown_email.exit_code == 1 and "nobody@example.invalid" in unknown_email.output
    unknown_level = run("explain", "--user", "8", "--level", "4242")
    assert unknown_level.exit_code == 1 and "no access level with id 4242" in unknown_level.output
    bad_date = run("explain", "--user", "8", "--level", "7", "--date", "24.11.2026")
    assert bad_date.exit_code == 2


# --- sleepers refresh / list ------------------------------------------------------------------------------

def test_refresh_all_with_progress_then_one_level(run, runtime):
    result = run("sleepers", "refresh")
    assert result.exit_code == 0, result.output
    assert "refreshing levels" in result.stderr
    lines = result.stdout.splitlines()
    assert lines[0].split() == ["LEVEL", "NAME", "SLEEPERS", "USERS", "ROWS", "SECONDS"]
    assert {line.split()[0] for line in lines[1:5]} == {"7", "8", "9", "10"}
    counts = MonitorService(runtime).counts_per_level()
    assert lines[-1].startswith(f"4 level(s), {sum(counts.values())} sleepers")

    one = run("sleepers", "refresh", "--level", "9")
    assert one.exit_code == 0 and one.stdout.splitlines()[1].split()[0] == "9"
    assert one.stdout.splitlines()[-1].startswith("1 level(s)")
    missing = run("sleepers", "refresh", "--level", "4242")
    assert missing.exit_code == 2 and "no access level 4242" in missing.output


def test_list_table_json_and_csv(run, runtime):
    assert run("sleepers", "refresh").exit_code == 0
    service = MonitorService(runtime)
    everyone = list(service.iterate(SleeperQuery(sort="expired_on", descending=True)))  # web.sleepers_order
    assert everyone

    table = run("sleepers", "list", "--limit", "5")
    assert table.exit_code == 0, table.output
    lines = table.stdout.splitlines()
    assert lines[0].split()[:4] == ["USER", "EMAIL", "FIRST", "NAME"]
    assert [int(line.split()[0]) for line in lines[1:]] == [r.user_id for r in everyone[:5]]
    assert f"5 of {len(everyone)}" in table.stderr and "more: add --after " in table.stderr

    data = json.loads(run("sleepers", "list", "--format", "json", "--limit", "10").output)
    assert data["total"] == len(everyone) and len(data["sleepers"]) == 10 and data["next_cursor"]
    again = json.loads(run("sleepers", "list", "--format", "json", "--limit", "10", "--after", data["next_cursor"]).output)
    assert [r["user_id"] for r in data["sleepers"] + again["sleepers"]] == [r.user_id for r in everyone[:20]]

    exported = run("sleepers", "list", "--format", "csv")
    rows = list(csv.reader(io.StringIO(exported.stdout)))
    assert rows[0] == list(CSV_COLUMNS) and len(rows) == len(everyone) + 1
    assert len(list(csv.reader(io.StringIO(run("sleepers", "list", "--format", "csv", "--limit", "3").stdout)))) == 4


def test_list_filters(run, runtime):
    assert run("sleepers", "refresh").exit_code == 0
    service = MonitorService(runtime)
    level7 = list(service.iterate(SleeperQuery(levels=(7,), descending=True)))
    data = json.loads(run("sleepers", "list", "--level", "7", "--format", "json", "--limit", "1000").output)
    assert [(r["user_id"], r["level_id"]) for r in data["sleepers"]] == [(r.user_id, 7) for r in level7]

    target = level7[0]
    day = target.expired_on.isoformat()
    window = json.loads(run("sleepers", "list", "--from", day, "--to", day, "--format", "json").output)
    assert window["sleepers"] and all(r["expired_on"] == day for r in window["sleepers"])
    found = json.loads(run("sleepers", "list", "-q", target.last_name, "--format", "json").output)
    assert target.user_id in {r["user_id"] for r in found["sleepers"]}
    emails = [r["email"] for r in json.loads(run("sleepers", "list", "--sort", "email", "--desc", "--format", "json",
                                                 "--limit", "1000").output)["sleepers"]]
    assert emails == sorted(emails, reverse=True)
    assert run("sleepers", "list", "-q", "no-such-learner-anywhere").output.strip() == "no sleepers match"


def test_list_pages_back_counts_pages_and_filters_recent_expiries(run, runtime):
    assert run("sleepers", "refresh").exit_code == 0

    def listing(*args: str) -> dict:
        result = run("sleepers", "list", "--format", "json", *args)
        assert result.exit_code == 0, result.output
        return json.loads(result.stdout)

    first = listing("--limit", "10")
    expiries = [r["expired_on"] for r in first["sleepers"]]
    assert expiries == sorted(expiries, reverse=True) and first["page"] == 1 and first["prev_cursor"] is None
    assert first["pages"] == -(-first["total"] // 10)
    second = listing("--limit", "10", "--after", first["next_cursor"])
    assert second["page"] == 2 and second["prev_cursor"]
    assert listing("--limit", "10", "--before", second["prev_cursor"])["sleepers"] == first["sleepers"]
    table = run("sleepers", "list", "--limit", "10", "--after", first["next_cursor"])
    assert "page 2 of" in table.stderr and "previous page: add --before " in table.stderr
    oldest = listing("--asc", "--limit", "3")["sleepers"]
    assert [r["expired_on"] for r in oldest] == sorted(r["expired_on"] for r in oldest)
    days = max(r["days_since"] for r in listing("--limit", "1")["sleepers"])
    recent = listing("--within", str(days), "--limit", "1000")
    assert recent["sleepers"] and all(r["days_since"] <= days for r in recent["sleepers"])
    assert recent["total"] == sum(1 for r in listing("--limit", "1000")["sleepers"] if r["days_since"] <= days)
    both = run("sleepers", "list", "--after", "a", "--before", "b")
    assert both.exit_code == 2 and "give one cursor" in both.output


def test_backfill_reconstructs_the_weeks_before_and_keeps_counted_days(run, runtime):
    assert run("sleepers", "refresh").exit_code == 0
    today = runtime.clock.today_utc()
    with runtime.sessions() as session:
        counted = {(t, d): n for t, d, n in session.execute(
            sa.select(SleeperCount.term_id, SleeperCount.day, SleeperCount.sleepers)
            .where(SleeperCount.reconstructed.is_(False)))}
        first = session.scalar(sa.select(sa.func.min(SleeperCount.day)))
    assert {d for _t, d in counted} == {today}
    assert first == today - timedelta(weeks=12) + timedelta(days=1)   # the first refresh reconstructed 12 weeks
    result = run("sleepers", "backfill", "--weeks", "2", "--level", "7")
    assert result.exit_code == 0, result.output
    assert "LEVEL" in result.stdout and "1 level(s) reconstructed over 2 week(s)" in result.stdout
    with runtime.sessions() as session:
        rows = session.execute(sa.select(SleeperCount.day, SleeperCount.sleepers, SleeperCount.reconstructed)
                               .where(SleeperCount.term_id == 7, SleeperCount.day >= today - timedelta(days=13))
                               .order_by(SleeperCount.day)).all()
    assert [r.day for r in rows] == [today - timedelta(days=n) for n in range(13, -1, -1)]
    assert all(r.reconstructed for r in rows[:-1]) and rows[-1] == (today, counted[(7, today)], False)
    wrong = run("sleepers", "backfill", "--weeks", "0")
    assert wrong.exit_code == 2 and "--weeks" in wrong.output
    missing = run("sleepers", "backfill", "--level", "4242")
    assert missing.exit_code == 2 and "there is no access level 4242" in missing.output


def test_list_errors(run):
    assert run("sleepers", "list", "--level", "4242").exit_code == 2
    backwards = run("sleepers", "list", "--from", "2026-02-01", "--to", "2026-01-01")
    assert backwards.exit_code == 2 and "ends before it starts" in backwards.output
    bad_cursor = run("sleepers", "list", "--after", "garbage")
    assert bad_cursor.exit_code == 2 and "invalid cursor" in bad_cursor.output


# --- sleepers refresh / list as of a day (--date) ---------------------------------------------------------

TODAY = date(2027, 1, 15)  # the commands' clock below: some learners seeded on SEEDED_DAY have lapsed since


@pytest.fixture
def clock():
    return FixedClock(datetime(2027, 1, 15, 9, 30, tzinfo=timezone.utc))


@pytest.fixture
def run_at(settings, clock):
    """Invoke the CLI with the clock on ``TODAY`` (UTC)."""

    def invoke(*args: str):
        return CliRunner().invoke(cli, list(args), obj={"settings": settings, "clock": clock}, catch_exceptions=False)

    return invoke


@pytest.fixture
def runtime_at(settings, clock):
    built = build_runtime(settings, clock=clock)
    try:
        yield built
    finally:
        built.close()


def listing(run_at, *args: str) -> dict:
    result = run_at("sleepers", "list", "--format", "json", "--limit", "1000", *args)
    assert result.exit_code == 0, result.output
    return json.loads(result.stdout)


def stored_state(runtime) -> tuple:
    with runtime.sessions() as session:
        return (sorted(session.execute(sa.select(SleeperEntry.term_id, SleeperEntry.user_id, SleeperEntry.expired_on))
                       .tuples()),
                sorted(session.execute(sa.select(SleeperRefresh.term_id, SleeperRefresh.evaluated_for)).tuples()),
                sorted(session.execute(sa.select(SleeperCount.term_id, SleeperCount.day)).tuples()))


def test_list_as_of_another_day_is_that_day_s_list_not_the_stored_report(run_at, runtime_at):
    assert run_at("sleepers", "refresh").exit_code == 0  # the stored report: today's
    today = listing(run_at)
    assert today["source"] == "report" and today["as_of"] is None
    lapsed_since = {(r["user_id"], r["level_id"]) for r in today["sleepers"] if r["expired_on"] > "2026-11-24"}
    assert lapsed_since, "the seeded site should have learners whose access ended after the seeded day"

    then = listing(run_at, "--date", "2026-11-24")
    assert then["as_of"] == "2026-11-24" and then["source"] == "live"
    assert then["sleepers"] and all(r["expired_on"] <= "2026-11-24" for r in then["sleepers"])
    assert not lapsed_since & {(r["user_id"], r["level_id"]) for r in then["sleepers"]}
    assert all(r["days_since"] == (SEEDED_DAY - date.fromisoformat(r["expired_on"])).days for r in then["sleepers"])

    # Exactly what a refresh for that day stores, row for row and in the same order.
    SleeperRefresher(runtime_at).refresh_all(day=SEEDED_DAY)
    stored = listing(run_at, "--date", "2026-11-24")
    assert stored["source"] == "report"
    assert stored["sleepers"] == then["sleepers"] and stored["total"] == then["total"]


def test_list_as_of_today_reads_the_report_built_for_today(run_at):
    assert run_at("sleepers", "refresh").exit_code == 0
    assert listing(run_at, "--date", TODAY.isoformat()) == {**listing(run_at), "as_of": TODAY.isoformat()}


def test_list_as_of_a_day_pages_filters_and_sorts_like_the_report(run_at, runtime_at):
    assert run_at("sleepers", "refresh").exit_code == 0  # today's report; certificates classified
    live = {}
    for args in (("--level", "7"), ("--sort", "name", "--desc"), ("--sort", "level"), ("--from", "2026-10-01")):
        live[args] = listing(run_at, "--date", "2026-11-24", *args)
        assert live[args]["source"] == "live" and live[args]["sleepers"], args
    paged, cursor = [], None
    while True:
        page = listing(run_at, "--date", "2026-11-24", "--sort", "name", "--desc", "--limit", "7",
                       *(("--after", cursor) if cursor else ()))
        paged += page["sleepers"]
        assert page["total"] == live[("--sort", "name", "--desc")]["total"]
        cursor = page["next_cursor"]
        if not cursor:
            break
    assert paged == live[("--sort", "name", "--desc")]["sleepers"]

    SleeperRefresher(runtime_at).refresh_all(day=SEEDED_DAY)
    for args, expected in live.items():
        stored = listing(run_at, "--date", "2026-11-24", *args)
        assert stored["source"] == "report" and stored["sleepers"] == expected["sleepers"], args

    table = run_at("sleepers", "list", "--date", "2026-12-01", "--limit", "3")
    assert table.exit_code == 0, table.output
    assert "as of 2026-12-01 (UTC, evaluated live)" in table.stderr
    exported = run_at("sleepers", "list", "--date", "2026-12-01", "--format", "csv")
    assert len(list(csv.reader(io.StringIO(exported.stdout)))) == listing(run_at, "--date", "2026-12-01")["total"] + 1


def test_list_date_must_be_a_calendar_day(run_at):
    for bad in ("24.11.2026", "2026-02-30", "20261124", "today"):
        result = run_at("sleepers", "list", "--date", bad)
        assert result.exit_code == 2, bad
        assert f"Invalid value for '--date': '{bad}' is not a calendar day written YYYY-MM-DD" in result.output


def test_refresh_for_another_day_is_only_previewed(run_at, runtime_at):
    refused = run_at("sleepers", "refresh", "--date", "2026-11-24")
    assert refused.exit_code == 2
    assert "2026-11-24 is not today (2027-01-15, UTC): another day can only be previewed: add --dry-run" \
        in refused.output

    assert run_at("sleepers", "refresh", "--date", TODAY.isoformat()).exit_code == 0  # today: a real refresh
    before = stored_state(runtime_at)
    assert {day for _, day in before[1]} == {TODAY}

    preview = run_at("sleepers", "refresh", "--date", "2026-11-24", "--dry-run")
    assert preview.exit_code == 0, preview.output
    assert "evaluating levels for 2026-11-24" in preview.stderr
    lines = preview.stdout.splitlines()
    assert lines[-1].endswith("evaluated for 2026-11-24 (UTC); dry run: nothing stored, the report is unchanged")
    counts = {int(line.split()[0]): int(line.split()[-4]) for line in lines[1:-1]}
    then = listing(run_at, "--date", "2026-11-24")["sleepers"]
    assert counts == {t: sum(1 for r in then if r["level_id"] == t) for t in counts}
    assert stored_state(runtime_at) == before  # rows, refresh records and history untouched

    one = run_at("sleepers", "refresh", "--level", "9", "--date", "2026-11-24", "--dry-run")
    assert one.exit_code == 0 and [line.split()[0] for line in one.stdout.splitlines()[1:-1]] == ["9"]
    assert stored_state(runtime_at) == before
