"""The sleepers list's paging on a large read model: first, middle, previous and last pages, page sizes and
the quick filter, as the page asks for them.

    .venv/bin/python bench/sleepers_list.py [--rows 741000] [--store sqlite|URL] [--repeat 10]

A small seeded site (20 users, 8 levels: only level names and settings are read from it) and a store whose
``mls_sleepers`` holds ``--rows`` synthetic sleepers spread over those levels and ten years of expiries.
Each figure is the p50 and p95 of ``--repeat`` calls of :meth:`MonitorService.page` (rows, total, the
page's place, the previous/next cursors and the reminder chain of every row).
"""

from __future__ import annotations

import argparse
import random
import statistics
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
from sidecar.monitor.service import MonitorService, SleeperQuery, _encode_cursor
from sidecar.store import db as store_db
from sidecar.store.monitor_models import SleeperEntry

TODAY = date(2026, 11, 24)


def fill(runtime, rows: int, levels: list[int]) -> None:
    rng = random.Random(2026)
    now = datetime.now(timezone.utc)
    table = SleeperEntry.__table__
    batch = []
    with runtime.sessions.begin() as session:
        session.execute(sa.delete(table))
    for n in range(rows):
        user = 100_000 + n // len(levels)
        batch.append({"term_id": levels[n % len(levels)], "user_id": user,
                      "expired_on": TODAY - timedelta(days=rng.randrange(0, 3650)), "last_grant": None,
                      "blocked": False, "email": f"learner{user}@example.org", "login": f"learner{user}",
                      "first_name": "Анна", "last_name": f"Иванова{user % 997}", "search_text": f"learner{user}",
                      "refreshed_at": now})
        if len(batch) == 10_000:
            with runtime.sessions.begin() as session:
                session.execute(table.insert(), batch)
            batch = []
    if batch:
        with runtime.sessions.begin() as session:
            session.execute(table.insert(), batch)


def timed(fn, repeat: int):
    values, result = [], None
    for _ in range(repeat):
        started = time.perf_counter()
        result = fn()
        values.append(time.perf_counter() - started)
    values.sort()
    return statistics.median(values), values[max(0, int(len(values) * 0.95) - 1)], result


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--rows", type=int, default=741_000)
    parser.add_argument("--store", default="sqlite", help="'sqlite' (a temporary file) or a store URL")
    parser.add_argument("--repeat", type=int, default=10)
    args = parser.parse_args()

    work = Path(tempfile.mkdtemp(prefix="mls-bench-list-"))
    site = f"sqlite:///{work / 'wordpress.sqlite'}"
    build_demo_site(site, users=20, levels=8, seed=1, today=TODAY, fresh=True)
    store = f"sqlite:///{work / 'store.sqlite'}" if args.store == "sqlite" else args.store
    engine = store_db.create_store_engine(store)
    store_db.upgrade(engine)
    engine.dispose()
    runtime = build_runtime(settings_from_mapping({
        "wordpress": {"db_url": site}, "memberlux": {"rest_base_url": "http://127.0.0.1:9/wp-json"},
        "store": {"url": store}}, environ={}))
    runtime.clock = FixedClock(datetime.combine(TODAY, datetime.min.time(), timezone.utc) + timedelta(hours=10))
    try:
        levels = [lv.term_id for lv in runtime.reader.levels()]
        started = time.perf_counter()
        fill(runtime, args.rows, levels)
        print(f"read model: {args.rows} sleepers in {len(levels)} levels ({store.split(':')[0]}), "
              f"filled in {time.perf_counter() - started:.1f} s")
        service = MonitorService(runtime)
        sort, descending = service.default_order()
        first = SleeperQuery(sort=sort, descending=descending, limit=20)
        every = list(service.iterate(replace(first, limit=1000), chunk=1000))
        middle_row = every[len(every) // 2]
        middle = replace(first, after=_encode_cursor(sort, descending, [middle_row.expired_on, middle_row.term_id,
                                                                       middle_row.user_id]))
        last_row = every[-21]
        last = replace(first, after=_encode_cursor(sort, descending, [last_row.expired_on, last_row.term_id,
                                                                     last_row.user_id]))
        cases = [
            ("first page (20, most recent first)", first),
            ("first page of 100", replace(first, limit=100)),
            ("a middle page (next)", middle),
            ("the last page (next)", last),
            ("a middle page (previous)", None),
            ("expired in the last 30 days", replace(first, expired_within=30)),
            ("one level, first page", replace(first, levels=(levels[0],))),
        ]
        for label, query in cases:
            if query is None:
                query = replace(first, before=service.page(middle).prev_cursor)
            p50, p95, page = timed(lambda q=query: service.page(q), args.repeat)
            print(f"{label:38s} p50 {p50 * 1000:7.1f} ms  p95 {p95 * 1000:7.1f} ms  "
                  f"[page {page.page_number} of {page.pages}, {len(page.rows)} rows of {page.total}]")
    finally:
        runtime.close()


if __name__ == "__main__":
    main()
