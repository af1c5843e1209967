"""Learning-monitor figures on a MemberLux site: the legacy plugin's query beside the sidecar's live query,
its read model (page, rebuild) and its CSV export, each figure saying what it compares.

    .venv/bin/python bench/sleepers.py --db-url mysql+pymysql://root@127.0.0.1:3306/NAME [--prefix wp_] [--date D]
    .venv/bin/python bench/sleepers.py --build [--users 200000] [--levels 30] [--seed 2026] [--database mls_bench_sleepers]
                                       [--mariadb mysql+pymysql://root@127.0.0.1:3306/] [--keep] [--with-indexes]
    common options: [--level T] [--repeat 30] [--legacy-repeat 1] [--no-csv]

The site is an existing MemberLux database (``--db-url``: only read, nothing is written to it; compare
stock and indexed schemas by running again after sql/indexes.sql) or one seeded by ``build_demo_site``
into ``--database`` (``--build``: 200 000 users and 30 levels give 999 999 key rows; dropped at the end
unless --keep; ``--with-indexes`` then also applies sql/indexes.sql and measures the live figures again).
The sidecar's own code reads it with an empty SQLite store in a temporary directory and a fixed clock
(10:00 UTC of ``--date``, the UTC day D every rule is evaluated for). Level T: ``--level`` or the level
with the most owned key rows. Times are wall time, p50 (and p95 where repeated) of the runs:

* legacy V3 page — the legacy plugin's count statement then rows statement (page 1, 20 rows) in the
  exact shape of legacy-plugins.md §3.4.1 (one copy: sidecar/memberlux/legacy_query.py), level T,
  window [D − 365 days, D]; ``--legacy-repeat`` runs (about a minute each on 1M keys, stock indexes);
* live query — ``live_sleeper_ids(T, D)``: the set-based statement plus the level tree, manual
  certificate holders from the store and ``wpm_status``, every sleeper of T fetched (not one page);
* certificate first sync — ``CertificateClassifier.sync()`` into the empty store (once per store);
* rebuild — ``SleeperRefresher.refresh_all`` (every level) and ``refresh_level(T)``: key rows streamed,
  the rule in Python, the level's read-model rows replaced in the store;
* read-model page — ``MonitorService.page``: first page (20 rows + total count) of T, of all levels, of
  T in the one-year window; page 50 by keyset; counts per level. Reads the store only: it does not
  include the rebuild that made the rows;
* CSV — ``mlsidecar sleepers list --format csv`` (the product's command) of every sleeper of every level
  into a file, in a child process: wall time (interpreter start-up included) and the child's peak RSS.

Ratios printed: legacy page / live query (both read the site now), legacy page / read-model page (the
read model's answer is as old as its last rebuild). The last line is one JSON object with every figure
(seconds) for comparisons across commits.
"""

from __future__ import annotations

import argparse
import json
import resource
import statistics
import subprocess
import sys
import tempfile
import time
from collections.abc import Callable
from datetime import date, timedelta
from pathlib import Path
from typing import Any

import sqlalchemy as sa

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from _common import (bench_runtime, cli, empty_store, legacy_v3_page, run_indexes_script, seed_site_database,
                     split_password, write_config)  # (bench/ is on sys.path: run as a script)
from sidecar.monitor.certificates import CertificateClassifier
from sidecar.monitor.query import live_sleeper_ids
from sidecar.monitor.refresh import SleeperRefresher
from sidecar.monitor.service import MonitorService, SleeperQuery

DATABASE = "mls_bench_sleepers"
TODAY = date(2026, 11, 24)  # the seed's day
PASSWORD_ENV = "MLS_BENCH_SLEEPERS_WP_PASSWORD"


def fmt(seconds: float) -> str:
    return f"{seconds:.2f} s" if seconds >= 1 else f"{seconds * 1000:.1f} ms"


def timed(fn: Callable[[], Any], repeat: int) -> tuple[float, float, Any]:
    """p50 and p95 of ``repeat`` runs of ``fn`` and the last run's result."""
    values, result = [], None
    for _ in range(max(1, repeat)):
        started = time.perf_counter()
        result = fn()
        values.append(time.perf_counter() - started)
    values.sort()
    return statistics.median(values), values[min(len(values) - 1, int(len(values) * 0.95))], result


def biggest_level(conn: sa.Connection, prefix: str) -> int:
    return conn.execute(sa.text(
        f"SELECT term_id FROM `{prefix}memberlux_term_keys` WHERE user_id IS NOT NULL "
        "GROUP BY term_id ORDER BY COUNT(*) DESC, term_id LIMIT 1")).scalar_one()


def csv_export(site_url: str, prefix: str, store: Path, work: Path) -> dict[str, float]:
    """The product's CSV command over every sleeper, in a child process; its wall time and peak RSS."""
    url, password = split_password(site_url)
    wordpress: dict[str, Any] = {"db_url": url, "table_prefix": prefix}
    if password is not None:
        wordpress["db_password"] = f"env:{PASSWORD_ENV}"
    config = write_config(work / "mlsidecar.toml", {
        "wordpress": wordpress,
        "memberlux": {"rest_base_url": "http://127.0.0.1:9/wp-json", "rest_user": "bench", "rest_password": "unused"},
        "store": {"url": f"sqlite:///{store}"},
    })
    out = work / "sleepers.csv"
    started = time.perf_counter()
    with out.open("wb") as handle:
        result = subprocess.run([*cli(), "--config", str(config), "sleepers", "list", "--format", "csv"],
                                stdout=handle, stderr=subprocess.PIPE, timeout=3600)
    seconds = time.perf_counter() - started
    if result.returncode != 0:
        raise SystemExit("CSV export failed:\n" + result.stderr.decode(errors="replace")[-3000:])
    with out.open("rb") as handle:
        rows = sum(1 for _ in handle) - 1
    peak_mb = resource.getrusage(resource.RUSAGE_CHILDREN).ru_maxrss / 1024  # the largest child so far
    return {"rows": rows, "seconds": seconds, "peak_rss_mb": peak_mb, "bytes": out.stat().st_size}


def main() -> None:  # one linear script
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    site = parser.add_mutually_exclusive_group(required=True)
    site.add_argument("--db-url", help="an existing site, only read: mysql+pymysql://USER@HOST:3306/NAME")
    site.add_argument("--build", action="store_true", help="seed a site into --database first")
    parser.add_argument("--prefix", default="wp_")
    parser.add_argument("--date", type=date.fromisoformat, default=None,
                        help=f"the UTC day D (default: {TODAY} with --build, today's UTC day with --db-url)")
    parser.add_argument("--users", type=int, default=200_000)
    parser.add_argument("--levels", type=int, default=30)
    parser.add_argument("--seed", type=int, default=2026)
    parser.add_argument("--database", default=DATABASE)
    parser.add_argument("--mariadb", default="mysql+pymysql://root@127.0.0.1:3306/")
    parser.add_argument("--keep", action="store_true", help="keep the built database")
    parser.add_argument("--with-indexes", action="store_true",
                        help="--build only: then apply sql/indexes.sql and measure the live figures again")
    parser.add_argument("--level", type=int, help="default: the level with the most owned key rows")
    parser.add_argument("--repeat", type=int, default=30, help="runs of each read-model figure")
    parser.add_argument("--legacy-repeat", type=int, default=1, help="runs of the legacy page and the live query")
    parser.add_argument("--no-csv", action="store_true", help="skip the CSV export")
    args = parser.parse_args()
    if args.with_indexes and not args.build:
        parser.error("--with-indexes changes the database: only with --build (with --db-url apply "
                     "sql/indexes.sql yourself and run again)")

    if args.build:
        if args.prefix != "wp_":
            parser.error("--build seeds a wp_ site")
        day = args.date or TODAY
        site_url = seed_site_database(args.mariadb, args.database, users=args.users, levels=args.levels,
                                      seed=args.seed, today=day)
    else:
        day = args.date or date(*time.gmtime()[:3])
        site_url = args.db_url
    database = sa.make_url(site_url).database
    if not database:
        parser.error("--db-url names no database (…:3306/NAME)")
    summary: dict[str, Any] = {"bench": "sleepers", "database": database, "day": day.isoformat()}
    work = Path(tempfile.mkdtemp(prefix="mls-bench-sleepers-"))
    store = empty_store(work / "store.sqlite")
    runtime = bench_runtime(site_url, args.prefix, store, day, password_env=PASSWORD_ENV)
    p = args.prefix
    try:
        with runtime.wp_engine.connect() as conn:
            server = conn.execute(sa.text("SELECT VERSION()")).scalar()
            counts = {t: conn.execute(sa.text(f"SELECT COUNT(*) FROM `{p}{t}`")).scalar()
                      for t in ("users", "memberlux_term_keys", "memberlux_certificate")}
            level = args.level or biggest_level(conn, p)
            extra = sorted(conn.execute(sa.text(
                "SELECT DISTINCT INDEX_NAME FROM information_schema.STATISTICS WHERE TABLE_SCHEMA = :d "
                "AND INDEX_NAME LIKE 'mlsidecar%'"), {"d": database}).scalars())
        summary.update(level=level, users=counts["users"], keys=counts["memberlux_term_keys"],
                       certificates=counts["memberlux_certificate"], extra_indexes=extra)
        print(f"site {database} (prefix {p}), server {server}: {counts['users']:,} users, "
              f"{counts['memberlux_term_keys']:,} key rows, {counts['memberlux_certificate']:,} certificates; "
              f"indexes added by sql/indexes.sql: {', '.join(extra) or 'none (stock)'}")
        print(f"day D {day} (UTC); level T {level}", flush=True)

        since = day - timedelta(days=365)

        def legacy_and_live(label: str) -> tuple[float, float]:
            with runtime.wp_engine.connect() as conn:
                legacy, _, (legacy_total, _rows) = timed(lambda: legacy_v3_page(conn, level, since, day, prefix=p),
                                                         args.legacy_repeat)
            print(f"{label}: legacy V3 page (count + 20 rows, 1-year window) {fmt(legacy)}  "
                  f"[{legacy_total} 'sleepers' by its rule]", flush=True)
            live, _, ids = timed(lambda: live_sleeper_ids(runtime, level, day), args.legacy_repeat)
            print(f"{label}: live query, every sleeper of T           {fmt(live)}  [{len(ids)} sleepers]; "
                  f"legacy / live = {legacy / live:,.1f}x", flush=True)
            return legacy, live

        started = time.perf_counter()
        sync = CertificateClassifier(runtime).sync()
        summary["certificate_sync_s"] = time.perf_counter() - started
        print(f"certificate first sync: {fmt(summary['certificate_sync_s'])} ({sync.summary()})", flush=True)

        summary["legacy_page_s"], summary["live_s"] = legacy_and_live("stock" if not extra else "as found")

        started = time.perf_counter()
        reports = SleeperRefresher(runtime).refresh_all(sync_certificates=False)
        summary["rebuild_all_s"] = time.perf_counter() - started
        summary["sleepers"] = sum(r.sleepers for r in reports)
        print(f"rebuild, all {len(reports)} levels: {fmt(summary['rebuild_all_s'])} "
              f"({summary['sleepers']:,} sleepers)", flush=True)
        started = time.perf_counter()
        SleeperRefresher(runtime).refresh_level(level, day)
        summary["rebuild_level_s"] = time.perf_counter() - started
        print(f"rebuild, level T alone: {fmt(summary['rebuild_level_s'])}", flush=True)

        service = MonitorService(runtime)
        pages = {
            "page_level": ("first page of T (rows + count)", SleeperQuery(levels=(level,))),
            "page_all": ("first page, all levels (rows + count)", SleeperQuery()),
            "page_window": ("first page of T, 1-year window", SleeperQuery(levels=(level,), expired_from=since,
                                                                              expired_to=day)),
        }
        for key, (label, query) in pages.items():
            p50, p95, page = timed(lambda q=query: service.page(q), args.repeat)
            summary[f"{key}_p50_s"], summary[f"{key}_p95_s"] = p50, p95
            print(f"read model, {label}: p50 {fmt(p50)}, p95 {fmt(p95)}  [{len(page.rows)} of {page.total}]")
        cursor = None
        for _ in range(49):
            cursor = service.page(SleeperQuery(levels=(level,), after=cursor)).next_cursor
            if cursor is None:
                break
        if cursor:
            p50, _, _ = timed(lambda: service.page(SleeperQuery(levels=(level,), after=cursor)), args.repeat)
            summary["page_50_p50_s"] = p50
            print(f"read model, page 50 of T by keyset: p50 {fmt(p50)}")
        summary["counts_p50_s"] = timed(service.counts_per_level, args.repeat)[0]
        print(f"read model, counts per level: p50 {fmt(summary['counts_p50_s'])}")
        print(f"ratio legacy V3 page / read-model first page of T: "
              f"{summary['legacy_page_s'] / summary['page_level_p50_s']:,.0f}x (the read model is as fresh as its "
              f"last rebuild: {fmt(summary['rebuild_level_s'])} for T, {fmt(summary['rebuild_all_s'])} for all)",
              flush=True)

        if not args.no_csv:
            export = csv_export(site_url, p, store, work)
            summary.update(csv_rows=export["rows"], csv_s=export["seconds"], csv_peak_rss_mb=export["peak_rss_mb"])
            print(f"CSV, every sleeper (mlsidecar sleepers list --format csv): {export['rows']:,} rows, "
                  f"{export['bytes'] / 2**20:.0f} MB in {fmt(export['seconds'])}; child peak RSS "
                  f"{export['peak_rss_mb']:.0f} MB", flush=True)

        if args.with_indexes:
            print(f"sql/indexes.sql applied in {run_indexes_script(site_url, p):.1f} s")
            summary["indexed_legacy_page_s"], summary["indexed_live_s"] = legacy_and_live("with sql/indexes.sql")
    finally:
        runtime.close()
        if args.build and not args.keep:
            engine = sa.create_engine(args.mariadb)
            with engine.begin() as conn:
                conn.exec_driver_sql(f"DROP DATABASE IF EXISTS `{args.database}`")
            engine.dispose()
    print(json.dumps({k: round(v, 4) if isinstance(v, float) else v for k, v in summary.items()}))


if __name__ == "__main__":
    main()
