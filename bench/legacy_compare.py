"""How long `mlsidecar legacy compare` takes on a large site, next to what it stands in for.

    .venv/bin/python bench/legacy_compare.py --db-url mysql+pymysql://root@127.0.0.1:3306/mls_bench_indexes
                                             [--prefix wp_] [--level T] [--date 2026-11-24] [--days 365]

Read-only on the site (``--db-url``: any account that may SELECT; e.g. the 1 000 000-key site that
``bench/indexes.py --build --keep`` leaves in ``mls_bench_indexes``). The sidecar's own code reads it, with a
SQLite store in a temporary directory and a fixed clock (10:00 UTC of ``--date``). Setup, not timed: the
certificates are classified into the store and the level's read model is built. Then, once each (on a
million keys the legacy query runs for a minute, so no repeat):

* legacy V3 page — what the old plugin runs to show one page: its count statement and its rows statement
  for page 1 (legacy-plugins.md §3.4.1), window [D − ``--days``, D], on the level with the most owned key
  rows (or ``--level``);
* sidecar page — the report's first page of the same level and window from the read model (rows + count);
* comparison — :func:`sidecar.monitor.legacy_compare.compare` for the same level and window: the legacy
  count and every page of its rows, the live sidecar query, the reasons; with its own split of the time.

Printed: the three times, the ratio comparison / (legacy page + sidecar page), and the comparison's counts
per reason. Prints figures; asserts nothing.
"""

from __future__ import annotations

import argparse
import sys
import tempfile
import time
from datetime import date, timedelta
from pathlib import Path

import sqlalchemy as sa

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from _common import bench_runtime, empty_store, legacy_v3_page  # (bench/ is on sys.path: run as a script)
from sidecar.monitor.certificates import CertificateClassifier
from sidecar.monitor.legacy_compare import compare
from sidecar.monitor.refresh import SleeperRefresher
from sidecar.monitor.service import MonitorService, SleeperQuery

PASSWORD_ENV = "MLS_BENCH_LEGACY_COMPARE_WP_PASSWORD"


def biggest_level(runtime) -> int:
    keys = runtime.site.table("memberlux_term_keys")
    with runtime.wp_engine.connect() as conn:
        return int(conn.execute(sa.select(keys.c.term_id).where(keys.c.user_id.is_not(None))
                                .group_by(keys.c.term_id).order_by(sa.func.count().desc()).limit(1)).scalar_one())


def main() -> None:  # one linear script
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--db-url", required=True, help="the site: mysql+pymysql://root@127.0.0.1:3306/NAME")
    parser.add_argument("--prefix", default="wp_")
    parser.add_argument("--level", type=int, help="default: the level with the most owned key rows")
    parser.add_argument("--date", type=date.fromisoformat, default=date(2026, 11, 24), help="the day D (UTC)")
    parser.add_argument("--days", type=int, default=365, help="the window: [D - days, D]")
    args = parser.parse_args()

    with tempfile.TemporaryDirectory(prefix="mls-bench-compare-") as work:
        runtime = bench_runtime(args.db_url, args.prefix, empty_store(Path(work) / "store.sqlite"), args.date,
                                password_env=PASSWORD_ENV)
        try:
            level = args.level or biggest_level(runtime)
            since = args.date - timedelta(days=args.days)
            started = time.perf_counter()
            CertificateClassifier(runtime).sync()
            SleeperRefresher(runtime).refresh_level(level, args.date)
            print(f"level {level}, window {since} .. {args.date}; setup (certificates classified, read model "
                  f"built) in {time.perf_counter() - started:.1f} s", flush=True)

            started = time.perf_counter()
            with runtime.wp_engine.connect() as conn:
                total, _rows = legacy_v3_page(conn, level, since, args.date, prefix=args.prefix)
            legacy_page = time.perf_counter() - started
            print(f"legacy V3 page (count + 20 rows):        {legacy_page:8.2f} s  [{total} 'sleepers' by its rule]",
                  flush=True)

            started = time.perf_counter()
            page = MonitorService(runtime).page(SleeperQuery(levels=(level,), expired_from=since, expired_to=args.date))
            sidecar_page = time.perf_counter() - started
            print(f"sidecar first page (rows + count):       {sidecar_page:8.2f} s  [{page.total} sleepers]", flush=True)

            started = time.perf_counter()
            c = compare(runtime, level, day=args.date, date_from=since, date_to=args.date, timeout=None)
            whole = time.perf_counter() - started
            s = c.seconds
            print(f"comparison (legacy count + every row, sidecar live, reasons): {whole:.2f} s  [legacy "
                  f"{s['legacy']:.2f} s, sidecar {s['sidecar']:.2f} s, reasons {s['reasons']:.2f} s]")
            print(f"ratio comparison / (legacy page + sidecar page): {whole / (legacy_page + sidecar_page):.2f}")
            print(f"legacy: count {c.legacy_count}, {c.legacy_rows} rows for {c.legacy_users} learners; sidecar "
                  f"{c.sidecar_users}; in both {c.in_both}, only legacy {c.only_legacy}, only sidecar {c.only_sidecar}")
            print("reasons: " + ", ".join(f"{reason} {n}" for reason, n in c.counts.items()))
        finally:
            runtime.close()


if __name__ == "__main__":
    main()
