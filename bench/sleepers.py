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
* rebuild — ``SleeperIncrements.rebuild``: every user's key rows (packed per user by the server) and
  users streamed once, the rule in Python for every level, each level's changed rows written to the store.
  "first" runs on the empty store (every row written, and each level's first trend backfill: once per
  store); "warm" is the daily reconciling rebuild (same rows: next to nothing written), with its memory: the
  peak RSS of this process during it (VmHWM reset before; this process evaluates one share of the users,
  merges every share's sleepers and writes the store) and of the largest pass process it started; ``refresh_level(T)``:
  the per-level path the "refresh" button of one level uses;
* change scan — ``SleeperIncrements.run`` as the worker runs it every ``schedule.sleepers_scan_seconds``
  (30 s by default): certificate sync, the site's digests (three ``GROUP BY`` statements on the server), the
  store's manual certificates; "idle" when nothing changed (p50 of 3). With ``--scratch`` (the database may
  be written: one built by this project's generator) the increment is measured too: four changes of a
  sleeper of T written to the site (a renewal in place, a stacked renewal by a new key, a block flag, a
  renamed learner) — the scan that takes them in, from its start to the commit of the model, checked in the
  report; the latency from a change to the report is at most the scan interval plus that; the changes are
  then undone (and taken in again);
* read-model page — ``MonitorService.page``: first page (20 rows + total count) of T, of all levels, of
  T in the one-year window; page 50 by keyset; counts per level. Reads the store only: it does not
  include the rebuild that made the rows;
* CSV — ``mlsidecar sleepers list --format csv`` (the product's command) of every sleeper of every level
  into a file, in a child process: wall time (interpreter start-up included) and the child's peak RSS.

Ratios printed: legacy page / live query (both read the site now), legacy page / read-model page (the
read model's answer is as old as its last change scan). ``--with-indexes`` (with ``--build`` or
``--scratch``) then applies sql/indexes.sql and measures the figures that read the site again (legacy,
live, rebuild, scan, increment); read-model pages and the CSV read the store only. The last line is one JSON object with every figure
(seconds) for comparisons across commits.
"""

from __future__ import annotations

import argparse
import json
import os
import resource
import statistics
import subprocess
import sys
import tempfile
import threading
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
from sidecar.monitor.increments import SleeperIncrements, missed_total
from sidecar.monitor.refresh import SleeperRefresher
from sidecar.store.monitor_models import SleeperEntry
from sidecar.monitor.service import MonitorService, SleeperQuery

DATABASE = "mls_bench_sleepers"
TODAY = date(2026, 11, 24)  # the seed's day
PASSWORD_ENV = "MLS_BENCH_SLEEPERS_WP_PASSWORD"


def fmt(seconds: float) -> str:
    return f"{seconds:.2f} s" if seconds >= 1 else f"{seconds * 1000:.1f} ms"


def reset_peak_rss() -> bool:
    """Start this process's peak RSS (VmHWM) afresh (Linux: ``echo 5 > /proc/self/clear_refs``)."""
    try:
        Path("/proc/self/clear_refs").write_text("5")
        return True
    except OSError:
        return False


def peak_rss_mb() -> float:
    """This process's peak RSS since :func:`reset_peak_rss` (VmHWM), else since it started (ru_maxrss)."""
    try:
        for line in Path("/proc/self/status").read_text().splitlines():
            if line.startswith("VmHWM:"):
                return int(line.split()[1]) / 1024
    except OSError:
        pass
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024


class ChildrenPeakRss:
    """The peak RSS (VmHWM) of each child process started while it watches, sampled from /proc every 20 ms.

    Neither ``RUSAGE_CHILDREN`` nor ``wait4`` would do: on Linux a child's ``ru_maxrss`` counts the RSS its
    parent had when it forked, so a small child of a large process reads as large. VmHWM belongs to the
    child's own address space once it has exec'd (samples before are skipped). A child's growth in its last
    20 ms may be missed."""

    def __init__(self) -> None:
        self.peaks: dict[int, float] = {}
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._watch, name="peak-rss", daemon=True)

    def __enter__(self) -> ChildrenPeakRss:
        self._thread.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self._stop.set()
        self._thread.join()

    @property
    def largest_mb(self) -> float:
        return max(self.peaks.values(), default=0.0)

    def _watch(self) -> None:
        me = os.getpid()
        own_command = Path(f"/proc/{me}/cmdline").read_bytes()
        while True:
            for pid in self._children(me):
                try:
                    # Between fork and exec a child still has this process's memory (and command line).
                    if Path(f"/proc/{pid}/cmdline").read_bytes() == own_command:
                        continue
                    status = Path(f"/proc/{pid}/status").read_text()
                except OSError:
                    continue
                for line in status.splitlines():
                    if line.startswith("VmHWM:"):
                        self.peaks[pid] = max(self.peaks.get(pid, 0.0), int(line.split()[1]) / 1024)
            if self._stop.wait(0.02):
                return

    @staticmethod
    def _children(me: int) -> list[int]:
        found = []
        for task in Path(f"/proc/{me}/task").glob("*/children"):
            try:
                found.extend(int(pid) for pid in task.read_text().split())
            except OSError:
                continue
        return found


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
    out, errors = work / "sleepers.csv", work / "sleepers.csv.err"
    started = time.perf_counter()
    with out.open("wb") as handle, errors.open("wb") as error_handle, ChildrenPeakRss() as peaks:
        child = subprocess.run([*cli(), "--config", str(config), "sleepers", "list", "--format", "csv"],
                               stdout=handle, stderr=error_handle, timeout=3600)
    seconds = time.perf_counter() - started
    if child.returncode != 0:
        raise SystemExit("CSV export failed:\n" + errors.read_text(errors="replace")[-3000:])
    with out.open("rb") as handle:
        rows = sum(1 for _ in handle) - 1
    peak_mb = peaks.largest_mb
    return {"rows": rows, "seconds": seconds, "peak_rss_mb": peak_mb, "bytes": out.stat().st_size}


def explain_live(runtime, level: int, day: date, label: str) -> None:
    """Why the live query cannot answer a first page in milliseconds: the server's own account (MariaDB's
    ``ANALYZE FORMAT=JSON``) of how it reads the key table. An exact count of T's sleepers needs every key
    row of T (a user's latest end decides); with single-column indexes only, that is either a lookup per
    row through the ``term_id`` index or a scan of the table."""
    from sidecar.memberlux.reader import ancestors_from_parents
    from sidecar.monitor.query import build_live_query

    stmt = build_live_query(runtime, level, day, None, ancestors_from_parents(runtime.reader.level_parents(), level))
    sql = str(stmt.compile(runtime.wp_engine, compile_kwargs={"literal_binds": True}))
    with runtime.wp_engine.connect() as conn:
        plan = json.loads(conn.execute(sa.text("ANALYZE FORMAT=JSON " + sql)).scalar())
        level_rows = conn.execute(sa.text(f"SELECT COUNT(*) FROM `{runtime.site.table('memberlux_term_keys').name}` "
                                          "WHERE term_id = :t"), {"t": level}).scalar()
    tables = []

    def walk(node: Any) -> None:
        if isinstance(node, dict):
            table = node.get("table")
            if isinstance(table, dict) and table.get("table_name") in ("k", "a"):
                tables.append(table)
            for value in node.values():
                walk(value)
        elif isinstance(node, list):
            for value in node:
                walk(value)

    walk(plan)
    total = plan.get("query_block", {}).get("r_total_time_ms", 0.0)
    for table in tables:
        stats = table.get("r_engine_stats", {})
        print(f"{label}: live query plan, table {table['table_name']}: access {table.get('access_type')} "
              f"(key {table.get('key', '-')}), rows read {table.get('r_rows', '?'):,} for {level_rows:,} key rows "
              f"of T, {table.get('r_table_time_ms', 0):.0f} ms reading ({stats.get('pages_read_time_ms', 0):.0f} ms "
              f"of it from disk); whole statement {total:.0f} ms", flush=True)


class SiteSide:
    """The figures that read the site itself: the warm rebuild, the idle scan, the increment."""

    def __init__(self, runtime, increments, level: int, day: date, interval: int, *, writable: bool,
                 prefix: str) -> None:
        self.runtime, self.increments, self.level, self.day = runtime, increments, level, day
        self.interval, self.writable, self.p = interval, writable, prefix

    def measure(self, label: str, key: str) -> dict[str, Any]:
        figures: dict[str, Any] = {}
        reset = reset_peak_rss()
        started = time.perf_counter()
        with ChildrenPeakRss() as children:
            outcome = self.increments.rebuild(self.day, sync_certificates=False)
        figures[f"{key}rebuild_warm_s"] = time.perf_counter() - started
        figures[f"{key}rebuild_warm_parent_peak_rss_mb"] = parent = peak_rss_mb()
        figures[f"{key}rebuild_pass_child_peak_rss_mb"] = child = children.largest_mb
        print(f"{label}: rebuild, warm (the daily reconciliation; rows the scans missed: "
              f"{missed_total(outcome.missed)}): {fmt(figures[f'{key}rebuild_warm_s'])}; peak RSS: this process "
              f"{parent:.0f} MB ({'during the warm rebuild' if reset else 'since it started: no /proc/self/clear_refs'}"
              f"; it evaluates one share of the users, merges every share, writes the store), the largest pass "
              f"process it started {child:.0f} MB", flush=True)
        idle, _, outcome = timed(lambda: self.increments.run(timedelta(days=1)), 3)
        assert outcome.kind == "idle", outcome.summary()
        figures[f"{key}scan_idle_s"] = idle
        print(f"{label}: change scan, nothing changed: p50 {fmt(idle)}", flush=True)
        if not self.writable:
            print(f"{label}: increment not measured (the site is only read; --scratch allows writing)")
            return figures
        learners = self._sleepers()
        undo = self._change(learners)
        started = time.perf_counter()
        outcome = self.increments.run(timedelta(days=1))
        figures[f"{key}increment_s"] = seconds = time.perf_counter() - started
        self._check_visible(learners, outcome)
        figures[f"{key}latency_bound_s"] = self.interval + seconds
        print(f"{label}: increment — 4 sleepers of T changed ({outcome.summary()}): scan {fmt(seconds)}; "
              f"change -> report at most {self.interval} s + {fmt(seconds)}", flush=True)
        undo()
        self.increments.run(timedelta(days=1))
        return figures

    def _sleepers(self) -> tuple[int, int, int, int, int]:
        """Four sleepers of T (renewed in place, renewed by a new key, blocked, given a new e-mail) and the
        key of the first that ends last."""
        keys = self.runtime.site.table("memberlux_term_keys")
        with self.runtime.sessions() as session:
            users = session.execute(sa.select(SleeperEntry.user_id).where(SleeperEntry.term_id == self.level,
                                                                          SleeperEntry.blocked.is_(False))
                                    .order_by(SleeperEntry.user_id).limit(4)).scalars().all()
        with self.runtime.wp_engine.connect() as conn:
            key_id = conn.execute(sa.select(keys.c.id).where(keys.c.user_id == users[0], keys.c.term_id == self.level)
                                  .order_by(keys.c.date_end.desc()).limit(1)).scalar()
        return users[0], users[1], users[2], users[3], key_id

    def _change(self, learners: tuple[int, int, int, int, int]) -> Callable[[], None]:
        in_place, stacked, blocked, renamed, key_id = learners
        p, today = self.p, self.day
        writer = sa.create_engine(self.runtime.wp_engine.url)
        with writer.begin() as conn:
            old_end = conn.execute(sa.text(f"SELECT date_end FROM `{p}memberlux_term_keys` WHERE id = :k"),
                                   {"k": key_id}).scalar()
            conn.execute(sa.text(f"UPDATE `{p}memberlux_term_keys` SET date_end = :e WHERE id = :k"),
                         {"e": today + timedelta(days=30), "k": key_id})
            new_key = conn.execute(sa.text(
                f"INSERT INTO `{p}memberlux_term_keys` (term_id, user_id, `key`, key_type, status, sent, is_banned, "
                f"duration, units, date_start, date_end, date_registered, is_unlimited) VALUES (:t, :u, 'bench-renewal', "
                f"'wpm_term_keys', 'used', 0, 0, 30, 'days', :s, :e, :s, 0)"),
                {"t": self.level, "u": stacked, "s": today, "e": today + timedelta(days=30)}).lastrowid
            status = conn.execute(sa.text(f"SELECT umeta_id, meta_value FROM `{p}usermeta` WHERE user_id = :u "
                                          f"AND meta_key = 'wpm_status' ORDER BY umeta_id LIMIT 1"), {"u": blocked}).first()
            if status is None:
                meta_id = conn.execute(sa.text(f"INSERT INTO `{p}usermeta` (user_id, meta_key, meta_value) "
                                               f"VALUES (:u, 'wpm_status', 'inactive')"), {"u": blocked}).lastrowid
            else:
                conn.execute(sa.text(f"UPDATE `{p}usermeta` SET meta_value = 'inactive' WHERE umeta_id = :m"),
                             {"m": status.umeta_id})
            conn.execute(sa.text(f"UPDATE `{p}users` SET user_email = CONCAT('renamed.', user_email) WHERE ID = :u"),
                         {"u": renamed})

        def undo() -> None:
            with writer.begin() as conn:
                conn.execute(sa.text(f"UPDATE `{p}memberlux_term_keys` SET date_end = :e WHERE id = :k"),
                             {"e": old_end, "k": key_id})
                conn.execute(sa.text(f"DELETE FROM `{p}memberlux_term_keys` WHERE id = :k"), {"k": new_key})
                if status is None:
                    conn.execute(sa.text(f"DELETE FROM `{p}usermeta` WHERE umeta_id = :m"), {"m": meta_id})
                else:
                    conn.execute(sa.text(f"UPDATE `{p}usermeta` SET meta_value = :v WHERE umeta_id = :m"),
                                 {"v": status.meta_value, "m": status.umeta_id})
                conn.execute(sa.text(f"UPDATE `{p}users` SET user_email = SUBSTRING(user_email, 9) WHERE ID = :u"),
                             {"u": renamed})
            writer.dispose()
        return undo

    def _check_visible(self, learners: tuple[int, int, int, int, int], outcome) -> None:
        in_place, stacked, blocked, renamed, _key = learners
        with self.runtime.sessions() as session:
            rows = {int(r.user_id): r for r in session.execute(sa.select(SleeperEntry).where(
                SleeperEntry.term_id == self.level, SleeperEntry.user_id.in_(learners[:4]))).scalars()}
        seen = (in_place not in rows, stacked not in rows, rows[blocked].blocked,
                rows[renamed].email.startswith("renamed."))
        assert all(seen), f"the increment did not take every change in: {seen} ({outcome.summary()})"


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
    parser.add_argument("--scratch", action="store_true",
                        help="the --db-url database may be written (built by this project's generator): measure "
                             "the increment, allow --with-indexes")
    parser.add_argument("--scan-interval", type=int, default=30, help="the worker's scan interval, for the bound")
    args = parser.parse_args()
    if args.with_indexes and not (args.build or args.scratch):
        parser.error("--with-indexes changes the database: only with --build or --scratch (with --db-url apply "
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
            pool_mb = conn.execute(sa.text("SELECT @@innodb_buffer_pool_size")).scalar() / 2**20
            counts = {t: conn.execute(sa.text(f"SELECT COUNT(*) FROM `{p}{t}`")).scalar()
                      for t in ("users", "memberlux_term_keys", "memberlux_certificate")}
            level = args.level or biggest_level(conn, p)
            extra = sorted(conn.execute(sa.text(
                "SELECT DISTINCT INDEX_NAME FROM information_schema.STATISTICS WHERE TABLE_SCHEMA = :d "
                "AND INDEX_NAME LIKE 'mlsidecar%'"), {"d": database}).scalars())
        summary.update(buffer_pool_mb=pool_mb, level=level, users=counts["users"], keys=counts["memberlux_term_keys"],
                       certificates=counts["memberlux_certificate"], extra_indexes=extra)
        print(f"site {database} (prefix {p}), server {server} (InnoDB buffer pool {pool_mb:,.0f} MB): {counts['users']:,} users, "
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
            explain_live(runtime, level, day, label)
            return legacy, live

        started = time.perf_counter()
        sync = CertificateClassifier(runtime).sync()
        summary["certificate_sync_s"] = time.perf_counter() - started
        print(f"certificate first sync: {fmt(summary['certificate_sync_s'])} ({sync.summary()})", flush=True)

        summary["legacy_page_s"], summary["live_s"] = legacy_and_live("stock" if not extra else "as found")

        increments = SleeperIncrements(runtime)
        started = time.perf_counter()
        outcome = increments.rebuild(day, sync_certificates=False)
        summary["rebuild_first_s"] = time.perf_counter() - started
        summary["sleepers"] = sum(r.sleepers for r in outcome.reports)
        print(f"rebuild, first, into the empty store (with each level's trend backfill): "
              f"{fmt(summary['rebuild_first_s'])} ({summary['sleepers']:,} sleepers)", flush=True)
        started = time.perf_counter()
        SleeperRefresher(runtime).refresh_level(level, day)
        summary["rebuild_level_s"] = time.perf_counter() - started
        print(f"rebuild, level T alone (per-level path): {fmt(summary['rebuild_level_s'])}", flush=True)
        site_side = SiteSide(runtime, increments, level, day, args.scan_interval,
                             writable=args.build or args.scratch, prefix=p)
        summary.update(site_side.measure("stock" if not extra else "as found", ""))

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
              f"last change scan, every {args.scan_interval} s: {fmt(summary['scan_idle_s'])} when nothing changed; "
              f"the daily rebuild {fmt(summary['rebuild_warm_s'])})", flush=True)

        if not args.no_csv:
            export = csv_export(site_url, p, store, work)
            summary.update(csv_rows=export["rows"], csv_s=export["seconds"], csv_peak_rss_mb=export["peak_rss_mb"])
            print(f"CSV, every sleeper (mlsidecar sleepers list --format csv): {export['rows']:,} rows, "
                  f"{export['bytes'] / 2**20:.0f} MB in {fmt(export['seconds'])}; child peak RSS "
                  f"{export['peak_rss_mb']:.0f} MB", flush=True)

        if args.with_indexes:
            print(f"sql/indexes.sql applied in {run_indexes_script(site_url, p):.1f} s")
            summary["indexed_legacy_page_s"], summary["indexed_live_s"] = legacy_and_live("with sql/indexes.sql")
            summary.update(site_side.measure("with sql/indexes.sql", "indexed_"))
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
