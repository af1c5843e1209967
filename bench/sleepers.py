"""Learning-monitor figures on a large MariaDB site, with the stock MemberLux indexes and with sql/indexes.sql.

    .venv/bin/python bench/sleepers.py [--users 200000] [--levels 30] [--mariadb mysql+pymysql://root@127.0.0.1:3306/]
                                       [--reuse] [--keep] [--repeat 30]

Builds (or, with --reuse, reuses) a seeded site in the MariaDB database ``mls_bench_sleepers``, a
SQLite store in a temporary directory, then prints:

* certificate classification (full first sync) and read-model refresh of every level: the time a
  rebuild takes bounds how stale the report can be (refreshed on demand and by the worker);
* the report the UI shows, from the read model: first page (rows + total count) of the biggest level
  and of all levels, p50/p95 over --repeat runs, a deep page (page 50 by keyset), counts per level;
* the full CSV export of every sleeper, in a child process: time and peak RSS;
* the live set-based SQL query of the same level, and the legacy plugin's live query (V3, in the exact
  shape of legacy-plugins.md §3.4.1: count + first page, one-year window) on the same data, as a ratio;
* the same live queries again after applying sql/indexes.sql (bench/indexes.py measures each index).

Loopback only; the database is dropped at the end unless --keep (or --reuse, which keeps it).
"""

from __future__ import annotations

import argparse
import json
import statistics
import subprocess
import sys
import tempfile
import time
from datetime import date, datetime, timedelta, timezone
from pathlib import Path

import pymysql
import sqlalchemy as sa

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from _common import database_exists, legacy_v3_page, seed_site_database, site_database_url  # (bench/ is on sys.path)
from sidecar import sqlscripts
from sidecar.bootstrap import build_runtime
from sidecar.clock import FixedClock
from sidecar.config import settings_from_mapping
from sidecar.monitor.certificates import CertificateClassifier
from sidecar.monitor.query import live_sleeper_ids
from sidecar.monitor.refresh import SleeperRefresher
from sidecar.monitor.service import MonitorService, SleeperQuery
from sidecar.store import db as store_db

DATABASE = "mls_bench_sleepers"
TODAY = date(2026, 11, 24)


def ms(seconds: float) -> str:
    return f"{seconds * 1000:.1f} ms"


def timed(fn, repeat: int) -> tuple[float, float, object]:
    values, result = [], None
    for _ in range(repeat):
        started = time.perf_counter()
        result = fn()
        values.append(time.perf_counter() - started)
    values.sort()
    return statistics.median(values), values[min(len(values) - 1, int(len(values) * 0.95))], result


def export_in_child(config: dict, out_rows: Path) -> dict:
    """Stream every sleeper to CSV in a fresh process, so its peak RSS is the export's alone."""
    code = f"""
import csv, json, resource, sys, time
sys.path.insert(0, {str(ROOT)!r})
from sidecar.bootstrap import build_runtime
from sidecar.config import settings_from_mapping
from sidecar.monitor.service import MonitorService, SleeperQuery
runtime = build_runtime(settings_from_mapping(json.loads({json.dumps(json.dumps(config))}), environ={{}}))
service = MonitorService(runtime)
rss_before = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
started = time.perf_counter()
count = 0
with open({str(out_rows)!r}, "w", newline="", encoding="utf-8") as handle:
    writer = csv.writer(handle)
    writer.writerow(["user_id", "email", "first_name", "last_name", "level", "expired_on", "days_since", "last_grant"])
    for row in service.iterate(SleeperQuery(limit=500), chunk=1000):
        writer.writerow([row.user_id, row.email, row.first_name, row.last_name, row.level_name, row.expired_on,
                         row.days_since, row.last_grant])
        count += 1
print(json.dumps({{"rows": count, "seconds": time.perf_counter() - started,
                  "rss_before_mb": rss_before / 1024, "peak_rss_mb": resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024}}))
"""
    result = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=900)
    if result.returncode != 0:
        raise SystemExit("export failed:\n" + result.stderr[-3000:])
    return json.loads(result.stdout.strip().splitlines()[-1])


def main() -> None:  # one linear script
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--users", type=int, default=200_000)
    parser.add_argument("--levels", type=int, default=30)
    parser.add_argument("--seed", type=int, default=2026)
    parser.add_argument("--mariadb", default="mysql+pymysql://root@127.0.0.1:3306/")
    parser.add_argument("--repeat", type=int, default=30)
    parser.add_argument("--reuse", action="store_true", help="reuse an existing bench database (and keep it)")
    parser.add_argument("--keep", action="store_true", help="keep the bench database afterwards")
    args = parser.parse_args()

    admin = sa.make_url(args.mariadb)
    admin_engine = sa.create_engine(args.mariadb)
    if args.reuse and database_exists(args.mariadb, DATABASE):
        site_url = site_database_url(args.mariadb, DATABASE)
    else:
        site_url = seed_site_database(args.mariadb, DATABASE, users=args.users, levels=args.levels, seed=args.seed,
                                      today=TODAY)
    work = Path(tempfile.mkdtemp(prefix="mls-bench-sleepers-"))
    config = {
        "wordpress": {"db_url": site_url, "table_prefix": "wp_"},
        "memberlux": {"rest_base_url": "http://127.0.0.1:9/wp-json", "rest_user": "bench", "rest_password": "unused"},
        "store": {"url": f"sqlite:///{work / 'store.sqlite'}"},
    }
    engine = store_db.create_store_engine(config["store"]["url"])
    store_db.upgrade(engine)
    engine.dispose()
    runtime = build_runtime(settings_from_mapping(config, environ={}))
    runtime.clock = FixedClock(datetime.combine(TODAY, datetime.min.time(), timezone.utc) + timedelta(hours=10))
    try:
        with runtime.wp_engine.connect() as conn:
            keys = conn.execute(sa.text("SELECT COUNT(*) FROM wp_memberlux_term_keys")).scalar()
            certs = conn.execute(sa.text("SELECT COUNT(*) FROM wp_memberlux_certificate")).scalar()
            users = conn.execute(sa.text("SELECT COUNT(*) FROM wp_users")).scalar()
        print(f"data: {users} users, {keys} key rows, {certs} certificates, {args.levels} levels (MariaDB, stock indexes)")

        started = time.perf_counter()
        sync = CertificateClassifier(runtime).sync(batch=5000)
        print(f"certificate classes: first full sync {time.perf_counter() - started:.1f} s ({sync.summary()})")

        started = time.perf_counter()
        reports = SleeperRefresher(runtime).refresh_all(sync_certificates=False)
        total = time.perf_counter() - started
        slowest = max(reports, key=lambda r: r.seconds)
        print(f"read model: all {len(reports)} levels rebuilt in {total:.1f} s (slowest level {slowest.term_id}: "
              f"{slowest.seconds:.2f} s for {slowest.rows_scanned} rows); sleepers {sum(r.sleepers for r in reports)}")

        service = MonitorService(runtime)
        counts = service.counts_per_level()
        biggest = max(counts, key=counts.get)
        print(f"biggest level {biggest}: {counts[biggest]} sleepers")

        p50, p95, page = timed(lambda: service.page(SleeperQuery(levels=(biggest,))), args.repeat)
        print(f"first page, one level (rows + count):  p50 {ms(p50)}, p95 {ms(p95)}  [{len(page.rows)} rows of {page.total}]")
        p50, p95, page = timed(lambda: service.page(SleeperQuery()), args.repeat)
        print(f"first page, all levels (rows + count): p50 {ms(p50)}, p95 {ms(p95)}  [{len(page.rows)} rows of {page.total}]")
        window = SleeperQuery(levels=(biggest,), expired_from=TODAY - timedelta(days=365), expired_to=TODAY)
        p50, p95, page = timed(lambda: service.page(window), args.repeat)
        print(f"first page, one level, 1-year window:  p50 {ms(p50)}, p95 {ms(p95)}  [{page.total} in window]")
        cursor = None
        for _ in range(49):
            cursor = service.page(SleeperQuery(levels=(biggest,), after=cursor)).next_cursor
            if cursor is None:
                break
        if cursor:
            p50, p95, _ = timed(lambda: service.page(SleeperQuery(levels=(biggest,), after=cursor)), args.repeat)
            print(f"page 50 by keyset (rows + count):      p50 {ms(p50)}, p95 {ms(p95)}")
        p50, p95, _ = timed(service.counts_per_level, args.repeat)
        print(f"counts per level:                      p50 {ms(p50)}, p95 {ms(p95)}")

        export = export_in_child(config, work / "export.csv")
        print(f"CSV export of every sleeper: {export['rows']} rows in {export['seconds']:.2f} s; peak RSS "
              f"{export['peak_rss_mb']:.0f} MB (process after start-up {export['rss_before_mb']:.0f} MB)")

        def live_and_legacy(label: str) -> tuple[float, float]:
            reps = max(3, args.repeat // 10)
            p50_live, _, ids = timed(lambda: live_sleeper_ids(runtime, biggest, TODAY), reps)
            with runtime.wp_engine.connect() as conn:
                p50_legacy, _, (legacy_total, _rows) = timed(
                    lambda: legacy_v3_page(conn, biggest, TODAY - timedelta(days=365), TODAY), reps)
            print(f"{label}: live correct query {ms(p50_live)} ({len(ids)} sleepers); legacy V3 count + page "
                  f"{ms(p50_legacy)} ({legacy_total} 'sleepers' by its rule)")
            return p50_live, p50_legacy

        live_stock, legacy_stock = live_and_legacy("stock indexes")
        first_page_p50 = timed(lambda: service.page(SleeperQuery(levels=(biggest,))), args.repeat)[0]
        print(f"ratio legacy V3 page / our first page: {legacy_stock / first_page_p50:,.0f}x")

        script = sqlscripts.render((sqlscripts.SQL_DIR / "indexes.sql").read_text(), db=DATABASE, p="wp_")
        started = time.perf_counter()
        connection = pymysql.connect(host=admin.host or "127.0.0.1", port=admin.port or 3306,
                                     user=admin.username or "root", password=admin.password or "",
                                     database=DATABASE, autocommit=True)
        with connection.cursor() as cursor_:
            sqlscripts.run_script(cursor_, script)
        connection.close()
        print(f"sql/indexes.sql applied in {time.perf_counter() - started:.1f} s")
        live_and_legacy("with sql/indexes.sql")
        started = time.perf_counter()
        SleeperRefresher(runtime).refresh_level(biggest)
        print(f"read model refresh of the biggest level with sql/indexes.sql: {time.perf_counter() - started:.2f} s")
    finally:
        runtime.close()
        if not (args.keep or args.reuse):
            with admin_engine.begin() as conn:
                conn.exec_driver_sql(f"DROP DATABASE IF EXISTS `{DATABASE}`")
        admin_engine.dispose()


if __name__ == "__main__":
    main()
