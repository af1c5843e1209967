"""The dashboard's computation on an existing MemberLux database: one JSON line of figures.

    .venv/bin/python bench/dashboard.py --db-url mysql+pymysql://root@127.0.0.1:3306/mls_bench_1m
                                        [--prefix wp_] [--date 2026-11-24] [--store-url URL]
                                        [--repeat 5] [--window 14] [--started-days 180]

The MemberLux database is only read. The store is a new SQLite file in a temporary directory unless
--store-url names another (it is migrated; an existing ledger there is left as it is and added to).

What it generates in the store, before timing anything:

* every other level (in ``term_id`` order) gets the three learner letters 3, 10 and 30 days after
  access ended (MonitorSettings overrides, as an administrator would save them); the other levels
  have none: they are the comparison group's levels;
* on the levels with letters, reminders "started" --started-days before --date: for every access that
  ended on those levels (``MemberLuxReader.lapses``) and every step whose day X + delay lies from that
  start to the day before --date, a letter in state ``sent`` on that day, when the learner was still a
  sleeper then (no renewal starting between X and that day), as the reminders would have sent it.
  Before that start the same levels have no letter: their comparison period.

Timed, each the median (p50) of --repeat runs after one untimed warm-up:

* ``job_p50_s``: the worker's ``dashboard.after_letters`` job (``sidecar.dashboard.job.compute_job``):
  "what happened after each letter" for every outcome window (7, 14, 30 days) and all levels — the
  levels and their letter settings, the two MemberLux range queries (key starts and lapses of the
  period, asked once for all windows), the store's letters and manual certificates, the matching in
  memory per window — and the three rows written to ``mls_dashboard_snapshots``. ``job_seconds_stored``
  is the time the last run recorded there (the same computation, without the store write), as the
  page shows it;
* ``page_p50_s`` (at least 5 runs): what one request of the page (``/?window=--window``, all levels, English) does once
  signed in: the view (``sidecar.dashboard.views.index``) in a request context — the store's sleepers,
  trend, grants, letter counts, alerts and the stored comparison, the levels, the two charts and the
  HTML — without the sign-in check and the WSGI server. It computes no comparison: it reads the row the
  job stored.
"""

from __future__ import annotations

import argparse
import json
import statistics
import sys
import tempfile
import time
from dataclasses import replace
from datetime import date, datetime, time as day_time, timedelta, timezone
from pathlib import Path

import sqlalchemy as sa

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from sidecar.bootstrap import build_runtime
from sidecar.clock import FixedClock
from sidecar.config import settings_from_mapping
from sidecar.app import create_app
from sidecar.dashboard import job, snapshots, views
from sidecar.dashboard.outcomes import PERIOD_DAYS
from sidecar.domain.letter_outcomes import WINDOW_CHOICES
from sidecar.monitor.settings import Letter, MonitorSettings
from sidecar.store import db as store_db
from sidecar.store.reminder_models import Reminder

DELAYS = (3, 10, 30)
BATCH = 5000
#: The page is timed at least this many times: it is quick, and one run says little.
PAGE_RUNS = 5


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--db-url", required=True, help="SQLAlchemy URL of the MemberLux database (read only)")
    parser.add_argument("--prefix", default="wp_", help="WordPress table prefix (default wp_)")
    parser.add_argument("--date", type=date.fromisoformat, default=datetime.now(timezone.utc).date(),
                        help="the UTC day the dashboard is computed for, YYYY-MM-DD (default today)")
    parser.add_argument("--store-url", help="our store (default: a new SQLite file in a temporary directory)")
    parser.add_argument("--repeat", type=int, default=5, help="timed runs per figure (default 5)")
    parser.add_argument("--window", type=int, default=14, choices=WINDOW_CHOICES, help="outcome window in days")
    parser.add_argument("--started-days", type=int, default=180,
                        help="days before --date the reminders of the levels with letters started (default 180)")
    args = parser.parse_args(argv)
    if args.repeat < 1:
        parser.error("--repeat must be at least 1")
    if not 0 < args.started_days <= PERIOD_DAYS:
        parser.error(f"--started-days must be between 1 and {PERIOD_DAYS}")
    return args


def runtime_for(args: argparse.Namespace, store_url: str):
    engine = store_db.create_store_engine(store_url)
    store_db.upgrade(engine)
    engine.dispose()
    config = {"wordpress": {"db_url": args.db_url, "table_prefix": args.prefix},
              "memberlux": {"rest_base_url": "http://127.0.0.1:9/wp-json", "rest_user": "bench", "rest_password": "unused"},
              "store": {"url": store_url},
              "web": {"secret_key": "bench-secret-key-not-for-production"}}
    instant = datetime.combine(args.date, day_time(12), tzinfo=timezone.utc)
    return build_runtime(settings_from_mapping(config, environ={}), clock=FixedClock(instant))


def generate_ledger(runtime, today: date, started_days: int) -> dict:
    """Letters for the levels with reminders, as described in the module's doc; returns what it made."""
    levels = sorted(lv.term_id for lv in runtime.reader.levels())
    with_letters = levels[::2]
    settings = MonitorSettings(runtime)
    for term_id in with_letters:
        current = settings.effective(term_id)
        letters = tuple(Letter(d, f"Reminder {n}", "<p>Your access ended.</p>") for n, d in enumerate(DELAYS, start=1))
        settings.save(replace(current, enabled=True, letters=letters), actor="bench")
    started = today - timedelta(days=started_days)
    lapses = runtime.reader.lapses(dict.fromkeys(with_letters, (started - timedelta(days=max(DELAYS)), today)))
    rows = []
    for user, level, expired_on, renewed_on in lapses:
        for step, delay in enumerate(DELAYS, start=1):
            day = expired_on + timedelta(days=delay)
            if not started <= day < today or (renewed_on is not None and renewed_on < day):
                continue
            at = datetime.combine(day, day_time(9), tzinfo=timezone.utc)
            rows.append({"user_id": user, "term_id": level, "expired_on": expired_on, "step": step, "state": "sent",
                         "due_on": day, "planned_at": at, "updated_at": at, "sent_at": at, "attempts": 1,
                         "to_address": f"learner{user}@example.invalid"})
    with runtime.sessions() as session:
        for first in range(0, len(rows), BATCH):
            session.execute(sa.insert(Reminder), rows[first:first + BATCH])
        session.commit()
    return {"levels": len(levels), "levels_with_letters": len(with_letters), "lapses_on_those_levels": len(lapses),
            "letters_generated": len(rows), "reminders_started": started.isoformat()}


def p50(repeat: int, work) -> float:
    work()  # warm-up: connections, reflection caches, the database's buffer pool
    times = []
    for _ in range(repeat):
        began = time.perf_counter()
        work()
        times.append(time.perf_counter() - began)
    return round(statistics.median(times), 3)


def main(argv: list[str] | None = None) -> None:
    args = parse_args(argv)
    store_url = args.store_url or f"sqlite:///{Path(tempfile.mkdtemp(prefix='mls-bench-dashboard-')) / 'store.sqlite'}"
    runtime = runtime_for(args, store_url)
    try:
        began = time.perf_counter()
        made = generate_ledger(runtime, args.date, args.started_days)
        made["ledger_seconds"] = round(time.perf_counter() - began, 1)
        job_p50_s = p50(args.repeat, lambda: job.compute_job(runtime))   # the warm-up stores the first result
        with runtime.sessions() as session:
            stored = snapshots.load(session, args.window)
        assert stored is not None, "the job stored no comparison"
        total = stored.after.total()
        app = create_app(runtime)

        def page() -> None:
            with app.test_request_context(f"/?window={args.window}&lang=en"):
                body, status = views.index.__wrapped__()
                assert status == 200 and "computed-at" in body, "the page did not show the stored comparison"

        summary = {
            "date": args.date.isoformat(), "window_days": args.window, "repeat": args.repeat,
            "store": sa.make_url(store_url).get_backend_name(), **made,
            "letters_measured": sum(s.letters.learners for s in total),
            "comparison_measured": sum(s.no_letter.learners for s in total),
            "per_step": {s.step: {"letters": s.letters.learners, "letters_renewed": s.letters.renewed,
                                  "no_letter": s.no_letter.learners, "no_letter_renewed": s.no_letter.renewed}
                         for s in total},
            "job_p50_s": job_p50_s, "job_seconds_stored": round(stored.seconds, 3),
            "page_p50_s": p50(max(args.repeat, PAGE_RUNS), page),
        }
        print(json.dumps(summary), flush=True)
    finally:
        runtime.close()


if __name__ == "__main__":
    main()
