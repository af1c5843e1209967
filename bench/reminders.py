"""Reminders figures on a large MariaDB site: read-model refresh, planning, steady state, dry run, sending.

    .venv/bin/python bench/reminders.py [--users 200000] [--levels 30] [--mariadb mysql+pymysql://root@127.0.0.1:3306/]
                                        [--reuse] [--keep] [--send N] [--profile]

Builds (or, with --reuse, reuses) a seeded site in the MariaDB database ``mls_bench_reminders`` and a
SQLite store in a temporary directory. With --reuse and no ``mls_bench_reminders``, the database of
bench/sleepers.py (``mls_bench_sleepers``, same seed and day by default) is used instead when it
exists: planning only reads WordPress, so sharing it is safe, and it is never dropped by this script.
A database kept by bench/sleepers.py may carry sql/indexes.sql; the figures say which indexes were
present.

Every level gets a 3-letter schedule (3, 10 and 30 days after access ended) and an admin digest (7
days after the last letter) through our store's overrides (MonitorSettings.save; WordPress tables are
never written). Then, each phase in a fresh child process so that its peak RSS (ru_maxrss) is its own:

a. the read-model refresh planning starts with on a new store: full certificate sync + every level;
b. planning proper: ReminderPlanner.plan() for today on that fresh read model — **the figure against
   the target (≤ 30 s, ≤ 200 MB)**; the ledger starts empty, so every sleeper of the catch-up window
   gets a decision;
c. the next day: the read model rebuilt for the new UTC day (what the worker does after 00:00 UTC,
   timed apart), then planning again with the ledger populated (the steady state);
d. a dry run for a day 30 days ahead, evaluated live from MariaDB (no read model, nothing recorded);
e. with --send N (run right after b, as a reminders run sends right after planning): the first N
   planned letters sent to a local aiosmtpd server started here (letters/second).

--profile re-runs phase b (and e) under cProfile on a copy of the store taken before it, and prints
the top functions. Loopback only; the database is dropped at the end unless --keep (or --reuse, which keeps it).
"""

from __future__ import annotations

import argparse
import json
import shutil
import subprocess
import sys
import tempfile
import time
from dataclasses import replace
from datetime import date, datetime, timedelta, timezone
from pathlib import Path

import sqlalchemy as sa

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from sidecar.bootstrap import build_runtime
from sidecar.clock import FixedClock
from sidecar.config import settings_from_mapping
from sidecar.devstack.site import build_demo_site
from sidecar.monitor.settings import Letter, MonitorSettings
from sidecar.reminders.approval import approve
from sidecar.store import db as store_db

DATABASE = "mls_bench_reminders"
SHARED_DATABASE = "mls_bench_sleepers"      # bench/sleepers.py's site, same seed and day by default
TODAY = date(2026, 11, 24)
AT = timedelta(hours=9)                     # the run time of the day (schedule.reminders_at), UTC here
TARGET_SECONDS, TARGET_MB = 30.0, 200.0
LETTER_DAYS = (3, 10, 30)
ADMIN_DAYS = 7

SUBJECT = "Напоминание {n}: [course_name]"
BODY = ("<p>Здравствуйте, {{ first_name }}!</p><p>Доступ к курсу «[course_name]» закончился [expired_date] "
        "({{ days_since_expiry }} дн. назад).</p>{% if is_bundle_course %}<p>Это шаг программы "
        "«[bundle_name]».</p>{% endif %}<p><a href=\"{{ renewal_url }}\">Продлить доступ</a></p>")
ADMIN_SUBJECT = "Не продлили доступ: [course_name] ({{ learner_count }})"
ADMIN_BODY = "<p>Ученики, получившие все письма и не продлившие доступ к «[course_name]»:</p>{{ learner_table }}"


def instant(day: date) -> datetime:
    return datetime.combine(day, datetime.min.time(), timezone.utc) + AT


# --- child processes ------------------------------------------------------------------------------------

def child_main(spec: dict) -> dict:
    """One phase in this (fresh) process; returns its figures. Runs with ``--child``."""
    import resource

    from sidecar.monitor.certificates import CertificateClassifier
    from sidecar.monitor.refresh import SleeperRefresher
    from sidecar.reminders.planner import ReminderPlanner
    from sidecar.reminders.sender import ReminderSender

    clock = FixedClock(datetime.fromisoformat(spec["now"]))
    # The tree may gain a migration while a long run goes on (other work in the same checkout).
    engine = store_db.create_store_engine(spec["config"]["store"]["url"])
    store_db.upgrade(engine)
    engine.dispose()
    runtime = build_runtime(settings_from_mapping(spec["config"], environ={}), clock=clock)
    rss_before = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
    phase, out = spec["phase"], {}
    profiler = None
    if spec.get("profile"):
        import cProfile

        profiler = cProfile.Profile()
        profiler.enable()
    started = time.perf_counter()
    try:
        if phase == "refresh":
            sync = CertificateClassifier(runtime).sync(batch=5000)
            out["sync_seconds"] = sync.seconds
            out["sync"] = sync.summary()
            max_age = timedelta(minutes=runtime.settings.schedule.sleepers_max_age_minutes)
            levels_started = time.perf_counter()
            reports = SleeperRefresher(runtime).refresh_stale(max_age)
            out["levels_seconds"] = time.perf_counter() - levels_started
            out["levels"] = len(reports)
            out["rows_scanned"] = sum(r.rows_scanned for r in reports)
            out["sleepers"] = sum(r.sleepers for r in reports)
        elif phase == "plan":
            day = date.fromisoformat(spec["day"]) if spec.get("day") else None
            report = ReminderPlanner(runtime).plan(day, dry_run=spec.get("dry_run", False))
            out["counts"] = report.counts()
            out["levels"] = len(report.levels)
            out["levels_off"] = len(report.levels_off)
            out["duplicates"] = report.duplicates
            out["day"] = report.day.isoformat()
        elif phase == "send":
            report = ReminderSender(runtime).send_due(limit=spec["limit"])
            out.update(sent=report.sent, skipped=report.skipped, retrying=report.retrying, failed=report.failed,
                       stopped=report.stopped)
        else:
            raise SystemExit(f"unknown phase {phase}")
    finally:
        seconds = time.perf_counter() - started
        if profiler is not None:
            import pstats

            profiler.disable()
            profiler.dump_stats(spec["profile"])
        runtime.close()
    out.update(seconds=seconds, rss_before_mb=rss_before / 1024,
               peak_rss_mb=resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024)
    if profiler is not None:
        import io

        text = []
        for sort in ("cumulative", "tottime"):
            buffer = io.StringIO()
            pstats.Stats(spec["profile"], stream=buffer).strip_dirs().sort_stats(sort).print_stats(25)
            text.append(buffer.getvalue())
        out["profile"] = "\n".join(text)
    return out


def in_child(phase: str, config: dict, now: datetime, **params: object) -> dict:
    spec = {"phase": phase, "config": config, "now": now.isoformat(), **params}
    result = subprocess.run([sys.executable, __file__, "--child", json.dumps(spec, default=str)],
                            capture_output=True, text=True, timeout=3600)
    if result.returncode != 0:
        raise SystemExit(f"phase {phase} failed:\n" + result.stderr[-4000:])
    return json.loads(result.stdout.strip().splitlines()[-1])


# --- the parent -----------------------------------------------------------------------------------------

def enable_schedules(runtime) -> int:
    """A 3-letter schedule and an admin digest on every level, as overrides in our store."""
    service = MonitorSettings(runtime)
    levels = [level.term_id for level in runtime.reader.levels()]
    for term_id in levels:
        current = service.effective(term_id)
        letters = tuple(Letter(days, SUBJECT.format(n=n), BODY) for n, days in enumerate(LETTER_DAYS, start=1))
        service.save(replace(current, enabled=True, letters=letters, admin_days_after_last=ADMIN_DAYS,
                             admin_email="manager@school.example", admin_subject=ADMIN_SUBJECT,
                             admin_body=ADMIN_BODY), actor="bench")
        approve(runtime, term_id, actor="bench", source="bench", review=None)   # measured as a school that sends
    return len(levels)


def copy_store(source: Path, target: Path) -> None:
    """A consistent copy of a SQLite store in WAL mode (a file copy would miss the -wal part)."""
    import sqlite3

    src, dst = sqlite3.connect(source), sqlite3.connect(target)
    try:
        src.backup(dst)
    finally:
        src.close()
        dst.close()


def ledger_states(runtime) -> dict[str, int]:
    from sidecar.store.reminder_models import Reminder

    with runtime.sessions() as session:
        rows = session.execute(sa.select(Reminder.state, sa.func.count()).group_by(Reminder.state)).all()
    return {state: int(n) for state, n in sorted(rows)}


def counts_text(counts: dict[str, int]) -> str:
    return ", ".join(f"{k} {v}" for k, v in counts.items()) or "nothing"


def figure(label: str, result: dict, extra: str = "") -> tuple[str, str, str, str]:
    return (label, f"{result['seconds']:.1f} s", f"{result['peak_rss_mb']:.0f} MB", extra)


def print_table(rows: list[tuple[str, str, str, str]]) -> None:
    widths = [max(len(r[i]) for r in rows) for i in range(3)]
    for row in rows:
        print(f"  {row[0]:<{widths[0]}}  {row[1]:>{widths[1]}}  {row[2]:>{widths[2]}}  {row[3]}")


def start_smtp():
    """A counting aiosmtpd server on loopback; returns (controller, port, counter)."""
    import socket

    from aiosmtpd.controller import Controller

    class Counter:
        def __init__(self) -> None:
            self.messages = 0

        async def handle_DATA(self, server, session, envelope):  # noqa: N802 - aiosmtpd's hook name
            self.messages += 1
            return "250 Message accepted for delivery"

    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        port = probe.getsockname()[1]
    counter = Counter()
    controller = Controller(counter, hostname="127.0.0.1", port=port)
    controller.start()
    return controller, port, counter


def main() -> None:  # one linear script
    if len(sys.argv) == 3 and sys.argv[1] == "--child":
        print(json.dumps(child_main(json.loads(sys.argv[2])), default=str))
        return
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--users", type=int, default=200_000)
    parser.add_argument("--levels", type=int, default=30)
    parser.add_argument("--seed", type=int, default=2026)
    parser.add_argument("--mariadb", default="mysql+pymysql://root@127.0.0.1:3306/")
    parser.add_argument("--database", default=DATABASE, help="name of the bench database")
    parser.add_argument("--reuse", action="store_true",
                        help=f"reuse {DATABASE} (else {SHARED_DATABASE} of bench/sleepers.py) if it exists, and keep it")
    parser.add_argument("--keep", action="store_true", help="keep the bench database afterwards")
    parser.add_argument("--send", type=int, default=0, metavar="N", help="send N planned letters to a local SMTP server")
    parser.add_argument("--profile", action="store_true", help="profile phase b (planning) with cProfile")
    args = parser.parse_args()
    command = "$ .venv/bin/python bench/reminders.py " + " ".join(sys.argv[1:])

    admin = sa.make_url(args.mariadb)
    admin_engine = sa.create_engine(args.mariadb)
    with admin_engine.connect() as conn:
        existing = set(conn.execute(sa.text("SELECT schema_name FROM information_schema.schemata "
                                            "WHERE schema_name IN (:a, :b)"), {"a": args.database, "b": SHARED_DATABASE}).scalars())
    database = args.database
    if database == SHARED_DATABASE and not args.reuse:
        raise SystemExit(f"{SHARED_DATABASE} belongs to bench/sleepers.py: use it with --reuse only")
    if args.reuse and database == DATABASE and DATABASE not in existing and SHARED_DATABASE in existing:
        database = SHARED_DATABASE
    site_url = admin.set(database=database).update_query_dict({"charset": "utf8mb4"}).render_as_string(hide_password=False)
    if not (args.reuse and database in existing):
        with admin_engine.begin() as conn:
            conn.exec_driver_sql(f"DROP DATABASE IF EXISTS `{database}`")
            conn.exec_driver_sql(f"CREATE DATABASE `{database}` CHARACTER SET utf8mb4 COLLATE utf8mb4_unicode_520_ci")
        started = time.perf_counter()
        summary = build_demo_site(site_url, users=args.users, levels=args.levels, seed=args.seed, today=TODAY)
        print(f"site seeded in {time.perf_counter() - started:.0f} s: {summary.users} users, {summary.levels} levels, "
              f"{summary.keys} keys, {summary.certificates} certificates", flush=True)
    else:
        print(f"reusing the database {database}", flush=True)

    work = Path(tempfile.mkdtemp(prefix="mls-bench-reminders-"))
    store_path = work / "store.sqlite"
    controller = send_config = before_send = None
    config = {
        "wordpress": {"db_url": site_url, "table_prefix": "wp_"},
        "memberlux": {"rest_base_url": "http://127.0.0.1:9/wp-json", "rest_user": "bench", "rest_password": "unused"},
        "store": {"url": f"sqlite:///{store_path}"},
        "web": {"public_url": "http://127.0.0.1:8080", "secret_key": "bench-secret-key-not-for-production"},
    }
    engine = store_db.create_store_engine(config["store"]["url"])
    store_db.upgrade(engine)
    engine.dispose()
    runtime = build_runtime(settings_from_mapping(config, environ={}), clock=FixedClock(instant(TODAY)))
    rows: list[tuple[str, str, str, str]] = [("phase", "time", "peak RSS", "")]
    try:
        with runtime.wp_engine.connect() as conn:
            keys = conn.execute(sa.text("SELECT COUNT(*) FROM wp_memberlux_term_keys")).scalar()
            owned = conn.execute(sa.text("SELECT COUNT(*) FROM wp_memberlux_term_keys WHERE user_id IS NOT NULL")).scalar()
            certs = conn.execute(sa.text("SELECT COUNT(*) FROM wp_memberlux_certificate")).scalar()
            users = conn.execute(sa.text("SELECT COUNT(*) FROM wp_users")).scalar()
            extra_indexes = conn.execute(sa.text(
                "SELECT COUNT(DISTINCT index_name) FROM information_schema.statistics "
                "WHERE table_schema = :d AND index_name LIKE 'mlsidecar%'"), {"d": database}).scalar()
        indexes = "with sql/indexes.sql" if extra_indexes else "stock indexes"
        print(f"data ({database}, MariaDB, {indexes}): {users} users, {keys} key rows ({owned} owned by a user), "
              f"{certs} certificates")
        levels = enable_schedules(runtime)
        print(f"schedules: letters {'/'.join(map(str, LETTER_DAYS))} days after access ended + admin digest "
              f"{ADMIN_DAYS} days after the last letter, on all {levels} levels (store overrides); "
              f"catch_up_days {runtime.settings.reminders.catch_up_days}", flush=True)

        today, tomorrow = TODAY, TODAY + timedelta(days=1)
        refresh = in_child("refresh", config, instant(today))
        print(f"a. read model for {today}: certificate sync {refresh['sync_seconds']:.1f} s ({refresh['sync']}); "
              f"{refresh['levels']} levels rebuilt in {refresh['levels_seconds']:.1f} s, {refresh['rows_scanned']} rows "
              f"scanned, {refresh['sleepers']} sleepers", flush=True)
        rows.append(figure("a. read-model refresh (cert sync + every level)", refresh))

        before_plan = work / "store-before-plan.sqlite"
        copy_store(store_path, before_plan)
        plan = in_child("plan", config, instant(today))
        met = plan["seconds"] <= TARGET_SECONDS and plan["peak_rss_mb"] <= TARGET_MB
        print(f"b. planning {plan['day']} on the fresh read model ({plan['levels']} levels): {counts_text(plan['counts'])}"
              f"; ledger {counts_text(ledger_states(runtime))}", flush=True)
        rows.append(figure("b. planning, first run (empty ledger)", plan,
                           f"target <= {TARGET_SECONDS:.0f} s, <= {TARGET_MB:.0f} MB: {'met' if met else 'MISSED'}"))

        if args.send:
            controller, port, counter = start_smtp()
            send_config = {**config, "smtp": {"host": "127.0.0.1", "port": port, "security": "none",
                                              "from_address": "school@example.org", "max_per_minute": 10000}}
            before_send = work / "store-before-send.sqlite"
            copy_store(store_path, before_send)
            sent = in_child("send", send_config, instant(today) + timedelta(minutes=5), limit=args.send)
            rate = sent["sent"] / sent["seconds"] if sent["seconds"] else 0.0
            print(f"e. sending up to {args.send}: sent {sent['sent']} (server received {counter.messages}), skipped "
                  f"{sent['skipped'] or 0}, retrying {sent['retrying']}, failed {sent['failed']}"
                  f"{'; stopped: ' + sent['stopped'] if sent['stopped'] else ''}", flush=True)
            rows.append(figure(f"e. send {sent['sent']} letters", sent,
                               f"{rate:.1f} letters/s (smtp.max_per_minute 10000 caps at 166/s)"))

        refresh2 = in_child("refresh", config, instant(tomorrow))
        print(f"c. read model for {tomorrow}: {refresh2['levels']} levels rebuilt in {refresh2['levels_seconds']:.1f} s "
              f"(certificate sync {refresh2['sync_seconds']:.1f} s)", flush=True)
        rows.append(figure("c. read-model rebuild for the next UTC day", refresh2))
        plan2 = in_child("plan", config, instant(tomorrow))
        print(f"c. planning {plan2['day']} (ledger populated): {counts_text(plan2['counts'])}; duplicates "
              f"{plan2['duplicates']}; "
              f"ledger {counts_text(ledger_states(runtime))}", flush=True)
        rows.append(figure("c. planning, next day (steady state)", plan2, "same target"))

        ahead = tomorrow + timedelta(days=30)
        dry = in_child("plan", config, instant(tomorrow), day=ahead.isoformat(), dry_run=True)
        print(f"d. dry run for {ahead} (live from MariaDB, nothing recorded): {counts_text(dry['counts'])}", flush=True)
        rows.append(figure(f"d. dry run {ahead}, live", dry))

        print()
        print(f"figures ({users} users, {keys} keys, {levels} levels, {indexes}; each phase a fresh process, peak RSS "
              f"= its ru_maxrss, including ~{plan['rss_before_mb']:.0f} MB of interpreter, imports and runtime):")
        print_table(rows)
        print(command)

        if args.profile:
            profile_path = work / "plan.prof"
            profiled = in_child("plan", {**config, "store": {"url": f"sqlite:///{before_plan}"}}, instant(today),
                                profile=str(profile_path))
            print(f"\nprofile of phase b (cProfile, {profiled['seconds']:.1f} s with the profiler on):")
            print(profiled["profile"])
            if args.send:
                profiled = in_child("send", {**send_config, "store": {"url": f"sqlite:///{before_send}"}},
                                    instant(today) + timedelta(minutes=5), limit=args.send,
                                    profile=str(work / "send.prof"))
                print(f"\nprofile of phase e (cProfile, {profiled['sent']} letters in {profiled['seconds']:.1f} s "
                      f"with the profiler on):")
                print(profiled["profile"])
    finally:
        if controller is not None:
            controller.stop()
        runtime.close()
        shutil.rmtree(work, ignore_errors=True)
        if not (args.keep or args.reuse) and database != SHARED_DATABASE:
            with admin_engine.begin() as conn:
                conn.exec_driver_sql(f"DROP DATABASE IF EXISTS `{database}`")
        admin_engine.dispose()


if __name__ == "__main__":
    main()
