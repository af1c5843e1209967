"""Each index of sql/indexes.sql measured alone against what the sidecar runs, and against the legacy query.

    .venv/bin/python bench/indexes.py --db-url mysql+pymysql://root@127.0.0.1:3306/NAME [--prefix wp_]
    .venv/bin/python bench/indexes.py --build [--users 200000] [--levels 30] [--seed 2026] [--database mls_bench_indexes]
                                      [--mariadb mysql+pymysql://root@127.0.0.1:3306/] [--keep]
    common options: [--repeat 5] [--sample 200] [--level T] [--date 2026-11-24] [--index TABLE:NAME:COL,COL ...]

The site is an existing MemberLux database (``--db-url``: an account allowed to ALTER and ANALYZE its
tables) or one seeded by ``build_demo_site`` into ``--database`` (``--build``: 200 000 users and 30
levels give 999 999 key rows; dropped at the end unless --keep). The sidecar's own code reads it, with
a SQLite store in a temporary directory and a fixed clock (10:00 UTC of ``--date``); the certificates
are classified once, before any timing.

Configurations: the stock schema (no ``mlsidecar_*`` index), each index of sql/indexes.sql alone (and
each ``--index`` candidate), all of sql/indexes.sql (the script itself, as an operator runs it). Setting
one up: drop every ``mlsidecar_*`` index, add the configuration's, ANALYZE TABLE the three tables
involved. Only indexes whose name starts with ``mlsidecar_`` are ever dropped or added; at the end the
database gets back exactly the ``mlsidecar_*`` indexes it had at the start.

``--repeat`` rounds; every round visits every configuration in turn and runs each workload there: a
warm-up run (the configuration's pages into the buffer pool), then the timed run. A workload whose first
run took longer than ``--warm-up-limit`` (5 s) gets no warm-up: it reads far more than a warm-up would
leave cached, and doubling it would double the bench. A figure is the median (p50) of a workload's
``--repeat`` timed runs in one configuration: background load on a shared machine falls on every
configuration alike instead of on whichever ran during it. Workloads, on the level with
the most owned key rows (or ``--level``); times are wall time of the whole call:

* live (whole call) — ``live_sleeper_ids(level, day)``: level tree, manual-certificate holders from the
  store, the set-based SQL statement with every row fetched, the ``wpm_status`` read;
* live SQL alone — only the statement of ``build_live_query`` (same level, day and ancestors), executed
  and every row fetched;
* rebuild — ``SleeperRefresher.refresh_level(level, day)``: the level's key rows streamed in user order,
  users and ancestor-level rows per 500 users, the rule in Python, the level's read-model rows replaced
  in the SQLite store;
* certificate first sync — ``CertificateClassifier.sync()`` into a fresh store: every certificate read by
  ``certificate_id``, the keys of auto-level pairs by ``user_id IN … AND term_id IN …``;
* legacy V3 page — the legacy plugin's count statement then rows statement (page 1, 20 rows) in the
  exact shape of legacy-plugins.md §3.4.1, level as above, window [day − 365 days, day];
* level stream — ``MemberLuxReader.key_rows_for_level(level)`` read to the end (no rule evaluated);
* ended in window — ``SELECT user_id, date_end … WHERE term_id = level AND date_end BETWEEN day − 365 AND
  day``, every row fetched (claimed by the old comment; the sidecar sends no such statement);
* per-user look-ups, each run = ``--sample`` users of the level, figure = run time / users:
  access check ``reader.key_rows(user, [level])`` (explain, inbound webhooks); trace keys
  ``TraceReader.keys(user, level, grant id)`` (the bridge, while an order's outcome is unknown);
  certificate by (user, level) ``SELECT certificate_id … WHERE user_id = U AND wpmlevel_id = level``
  (the sidecar sends no such statement);
* utm_id look-up — ``SELECT key_id … WHERE utm_id = <grant id absent from the site>`` (the sidecar
  sends no such statement: the bridge settles an unknown outcome with trace keys, driven by the user).

Printed: progress per configuration, then one table (index | workload | stock p50 | with index p50 |
ratio) with, for every index alone, the live query, the rebuild, the certificate sync, the legacy page
and the look-ups on that index's table, and every workload for all indexes together; then the size and
build time of each index. Prints figures; asserts nothing.
"""

from __future__ import annotations

import argparse
import random
import re
import shutil
import signal
import statistics
import sys
import tempfile
import time
from collections.abc import Callable
from dataclasses import dataclass
from datetime import date, timedelta
from pathlib import Path
from typing import NamedTuple

import sqlalchemy as sa

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from _common import bench_runtime, empty_store, legacy_v3_page, run_indexes_script, seed_site_database  # (bench/ on sys.path)
from sidecar import sqlscripts
from sidecar.bootstrap import Runtime
from sidecar.memberlux.reader import ancestors_from_parents
from sidecar.monitor.certificates import CertificateClassifier
from sidecar.monitor.query import build_live_query, live_sleeper_ids
from sidecar.monitor.refresh import SleeperRefresher

DATABASE = "mls_bench_indexes"
TODAY = date(2026, 11, 24)          # the seed's day (bench/sleepers.py, bench/reminders.py)
ABSENT_GRANT = "g01bench00000000000000000"
TABLES = ("memberlux_term_keys", "memberlux_keys_meta", "memberlux_certificate")
PASSWORD_ENV = "MLS_BENCH_INDEXES_WP_PASSWORD"


@dataclass(frozen=True)
class Index:
    table: str          # without the prefix
    name: str
    columns: tuple[str, ...]   # each "col" or "col(N)"
    unique: bool = False

    def ddl(self, on: str) -> str:
        kind = "UNIQUE INDEX" if self.unique else "INDEX"
        cols = ", ".join(re.sub(r"^(\w+)", r"`\1`", c) for c in self.columns)
        return f"ALTER TABLE {on} ADD {kind} `{self.name}` ({cols}), ALGORITHM=INPLACE, LOCK=NONE"


def script_indexes(script: str) -> list[Index]:
    """The indexes sql/indexes.sql adds, in file order (each block sets @t and @idx, then ADD INDEX)."""
    found = []
    for block in script.split("SET @t = ")[1:]:
        table = re.match(r"'([^']+)'", block).group(1)
        name = re.search(r"SET @idx = '([^']+)'", block).group(1)
        columns = re.search(r"ADD INDEX `', @idx, '` \(((?:[^()]|\([0-9]+\))*)\)", block).group(1)
        found.append(Index(table, name, tuple(c.strip() for c in columns.split(","))))
    return found


def candidate(text: str) -> Index:
    table, name, columns = text.split(":")
    if not name.startswith("mlsidecar_"):
        raise SystemExit(f"--index {text}: the name must start with mlsidecar_")
    return Index(table, name, tuple(c.strip() for c in columns.split(",")))


# --- the database's mlsidecar_* indexes ---------------------------------------------------------------

class Indexes:
    """Adds and drops ``mlsidecar_*`` indexes, and nothing else, on one site's tables."""

    def __init__(self, engine: sa.Engine, database: str, prefix: str) -> None:
        self.engine, self.database, self.prefix = engine, database, prefix
        with engine.connect() as conn:
            self.tables = [t for t in TABLES if conn.execute(sa.text(
                "SELECT COUNT(*) FROM information_schema.TABLES WHERE TABLE_SCHEMA = :d AND TABLE_NAME = :t"),
                {"d": database, "t": prefix + t}).scalar()]

    def on(self, table: str) -> str:
        return f"`{self.database}`.`{self.prefix}{table}`"

    def current(self) -> list[Index]:
        with self.engine.connect() as conn:
            rows = conn.execute(sa.text(
                "SELECT TABLE_NAME, INDEX_NAME, COLUMN_NAME, SUB_PART, NON_UNIQUE FROM information_schema.STATISTICS "
                "WHERE TABLE_SCHEMA = :d AND INDEX_NAME LIKE 'mlsidecar\\_%' ORDER BY TABLE_NAME, INDEX_NAME, SEQ_IN_INDEX"),
                {"d": self.database}).all()
        grouped: dict[tuple[str, str], list] = {}
        for table, name, column, sub_part, non_unique in rows:
            grouped.setdefault((table, name), []).append((column, sub_part, non_unique))
        result = []
        for (table, name), cols in grouped.items():
            if not table.startswith(self.prefix):
                continue
            result.append(Index(table[len(self.prefix):], name,
                                tuple(c if s is None else f"{c}({s})" for c, s, _ in cols), unique=not cols[0][2]))
        return result

    def _execute(self, sql: str) -> float:
        started = time.perf_counter()
        with self.engine.connect() as conn:
            conn.exec_driver_sql(sql)
        return time.perf_counter() - started

    def drop_all(self) -> None:
        for index in self.current():
            assert index.name.startswith("mlsidecar_")
            self._execute(f"ALTER TABLE {self.on(index.table)} DROP INDEX `{index.name}`, ALGORITHM=INPLACE, LOCK=NONE")

    def add(self, index: Index) -> float | None:
        """Seconds the build took; None when the table is missing (an optional module)."""
        if index.table not in self.tables:
            return None
        return self._execute(index.ddl(self.on(index.table)))

    def analyze(self) -> None:
        with self.engine.connect() as conn:
            for table in self.tables:
                conn.exec_driver_sql(f"ANALYZE TABLE {self.on(table)}").all()

    def size_mb(self, index: Index) -> float | None:
        with self.engine.connect() as conn:
            pages = conn.execute(sa.text(
                "SELECT stat_value FROM mysql.innodb_index_stats WHERE database_name = :d AND table_name = :t "
                "AND index_name = :i AND stat_name = 'size'"),
                {"d": self.database, "t": self.prefix + index.table, "i": index.name}).scalar()
            page_size = conn.execute(sa.text("SELECT @@innodb_page_size")).scalar()
        return None if pages is None else pages * page_size / 1e6


# --- workloads -------------------------------------------------------------------------------------------

class SelfTimed(NamedTuple):
    """A workload's result with the seconds of its measured part (its set-up left out)."""

    result: object
    seconds: float


@dataclass(frozen=True)
class Workload:
    key: str
    label: str
    fn: Callable[[], object]
    tables: tuple[str, ...]       # the tables whose indexes it is reported with ("" = with every index)
    per: int = 1                  # a run's time is divided by this (per-user look-ups)


def make_runtime(site_url: str, prefix: str, store: Path, day: date) -> Runtime:
    return bench_runtime(site_url, prefix, store, day, password_env=PASSWORD_ENV)


def workloads(runtime: Runtime, work: Path, site_url: str, prefix: str, level: int, day: date,
              sample: list[int]) -> list[Workload]:
    reader, p = runtime.reader, prefix
    parents = reader.level_parents()
    ancestors = ancestors_from_parents(parents, level)
    statement = build_live_query(runtime, level, day, None, ancestors)
    since = day - timedelta(days=365)
    traces = runtime.trace_reader()
    template = empty_store(work / "empty.sqlite")
    runs = iter(range(1_000_000))

    def live_sql() -> int:
        with runtime.wp_engine.connect() as conn:
            return len(conn.execute(statement).all())

    def rebuild() -> int:
        return SleeperRefresher(runtime).refresh_level(level, day, parents=parents).sleepers

    def certificate_sync() -> SelfTimed:
        store = work / f"sync-{next(runs)}.sqlite"
        shutil.copyfile(template, store)
        fresh = make_runtime(site_url, prefix, store, day)
        try:
            started = time.perf_counter()
            report = CertificateClassifier(fresh).sync()  # the worker's batch size
            return SelfTimed(f"{report.new} classified", time.perf_counter() - started)
        finally:
            fresh.close()
            store.unlink()

    def legacy() -> tuple[int, int]:
        with runtime.wp_engine.connect() as conn:
            total, rows = legacy_v3_page(conn, level, since, day, prefix=prefix)
        return total, len(rows)

    def stream() -> int:
        return sum(1 for _ in reader.key_rows_for_level(level))

    def ended_in_window() -> int:
        with runtime.wp_engine.connect() as conn:
            return len(conn.execute(sa.text(
                f"SELECT user_id, date_end FROM {p}memberlux_term_keys WHERE term_id = :t AND date_end BETWEEN :a AND :b"),
                {"t": level, "a": since.isoformat(), "b": day.isoformat()}).all())

    def access_checks() -> int:
        return sum(len(reader.key_rows(user, [level])) for user in sample)

    def trace_keys() -> int:
        return sum(len(traces.keys(user, level, ABSENT_GRANT)) for user in sample)

    def utm_lookup() -> int:
        with runtime.wp_engine.connect() as conn:
            return len(conn.execute(sa.text(f"SELECT key_id FROM {p}memberlux_keys_meta WHERE utm_id = :g"),
                                    {"g": ABSENT_GRANT}).all())

    def certificate_pairs() -> int:
        found = 0
        with runtime.wp_engine.connect() as conn:
            for user in sample:
                found += len(conn.execute(sa.text(
                    f"SELECT certificate_id FROM {p}memberlux_certificate WHERE user_id = :u AND wpmlevel_id = :t"),
                    {"u": user, "t": level}).all())
        return found

    n = len(sample)
    certificates = runtime.site.has("memberlux_certificate")
    found = [
        Workload("live", "live sleepers query (whole call)", lambda: len(live_sleeper_ids(runtime, level, day)), ("",)),
        Workload("live_sql", "live SQL statement alone", live_sql, ("",)),
        Workload("rebuild", "read-model rebuild of the level", rebuild, ("",)),
        Workload("sync", "certificate first sync (fresh store)", certificate_sync, ("",)),
        *([Workload("legacy", "legacy V3 page (count + 20 rows)", legacy, ("",))] if certificates else []),
        Workload("stream", "level stream key_rows_for_level", stream, ("memberlux_term_keys",)),
        Workload("ended", "ended in window [not sent by the sidecar]", ended_in_window, ("memberlux_term_keys",)),
        Workload("access", f"access check key_rows(U,[T]), per user of {n}", access_checks, ("memberlux_term_keys",), n),
        Workload("traces", f"trace keys (bridge), per user of {n}", trace_keys,
                 ("memberlux_term_keys", "memberlux_keys_meta"), n),
        Workload("utm", "keys_meta by utm_id alone, absent id [not sent by the sidecar]", utm_lookup,
                 ("memberlux_keys_meta",)),
    ]
    if certificates:  # the legacy query and this look-up need the certificates module's table
        found.append(Workload("cert", f"certificate by (user, level), per user of {n} [not sent by the sidecar]",
                              certificate_pairs, ("memberlux_certificate",), n))
    return found


def run_once(workload: Workload) -> tuple[float, object]:
    """Seconds of one run (per look-up for the per-user workloads) and its result."""
    started = time.perf_counter()
    result = workload.fn()
    elapsed = time.perf_counter() - started
    if isinstance(result, SelfTimed):
        result, elapsed = result
    return elapsed / workload.per, result


def fmt(seconds: float) -> str:
    if seconds >= 10:
        return f"{seconds:.1f} s"
    if seconds >= 1:
        return f"{seconds:.2f} s"
    if seconds >= 0.01:
        return f"{seconds * 1000:.0f} ms"
    return f"{seconds * 1000:.2f} ms"


# --- main -------------------------------------------------------------------------------------------------

def main() -> None:  # one linear script
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    site = parser.add_mutually_exclusive_group(required=True)
    site.add_argument("--db-url", help="an existing site: mysql+pymysql://root@127.0.0.1:3306/NAME")
    site.add_argument("--build", action="store_true", help="seed a site into --database first")
    parser.add_argument("--prefix", default="wp_")
    parser.add_argument("--users", type=int, default=200_000)
    parser.add_argument("--levels", type=int, default=30)
    parser.add_argument("--seed", type=int, default=2026)
    parser.add_argument("--database", default=DATABASE)
    parser.add_argument("--mariadb", default="mysql+pymysql://root@127.0.0.1:3306/")
    parser.add_argument("--keep", action="store_true", help="keep the built database")
    parser.add_argument("--repeat", type=int, default=5)
    parser.add_argument("--sample", type=int, default=200, help="users per run of the per-user look-ups")
    parser.add_argument("--level", type=int, help="default: the level with the most owned key rows")
    parser.add_argument("--date", type=date.fromisoformat, default=TODAY, help="the day D (UTC)")
    parser.add_argument("--index", action="append", default=[], metavar="TABLE:NAME:COL,COL",
                        help="also measure this mlsidecar_* index alone (table without the prefix)")
    parser.add_argument("--warm-up-limit", type=float, default=5.0, metavar="SECONDS",
                        help="no warm-up run for a workload whose first run took longer")
    parser.add_argument("--skip", action="append", default=[], metavar="WORKLOAD",
                        help="leave a workload out (live, live_sql, rebuild, sync, legacy, stream, ended, access, "
                             "traces, utm, cert)")
    args = parser.parse_args()
    command = "$ .venv/bin/python bench/indexes.py " + " ".join(sys.argv[1:])
    signal.signal(signal.SIGTERM, lambda *_: sys.exit(143))  # so the indexes are put back on `kill`

    if args.build:
        if args.prefix != "wp_":
            raise SystemExit("--build seeds a wp_ site")
        site_url = seed_site_database(args.mariadb, args.database, users=args.users, levels=args.levels,
                                      seed=args.seed, today=args.date)
    else:
        site_url = args.db_url
    url = sa.make_url(site_url)
    database = url.database
    engine = sa.create_engine(site_url)
    indexes = Indexes(engine, database, args.prefix)
    original = indexes.current()
    in_script = script_indexes((sqlscripts.SQL_DIR / "indexes.sql").read_text())
    alone = in_script + [candidate(text) for text in args.index]
    work = Path(tempfile.mkdtemp(prefix="mls-bench-indexes-"))
    runtime = None
    try:
        with engine.connect() as conn:
            server = conn.execute(sa.text("SELECT VERSION(), @@innodb_buffer_pool_size")).one()
            counts = {t: conn.execute(sa.text(f"SELECT COUNT(*) FROM {indexes.on(t)}")).scalar() for t in indexes.tables}
            users = conn.execute(sa.text(f"SELECT COUNT(*) FROM `{database}`.`{args.prefix}users`")).scalar()
            level = args.level or conn.execute(sa.text(
                f"SELECT term_id FROM {indexes.on('memberlux_term_keys')} WHERE user_id IS NOT NULL "
                "GROUP BY term_id ORDER BY COUNT(*) DESC, term_id LIMIT 1")).scalar()
            level_rows = conn.execute(sa.text(
                f"SELECT COUNT(*), COUNT(DISTINCT user_id) FROM {indexes.on('memberlux_term_keys')} "
                "WHERE term_id = :t AND user_id IS NOT NULL"), {"t": level}).one()
            members = sorted(conn.execute(sa.text(
                f"SELECT DISTINCT user_id FROM {indexes.on('memberlux_term_keys')} WHERE term_id = :t "
                "AND user_id IS NOT NULL"), {"t": level}).scalars())
        sample = random.Random(args.seed).sample(members, min(args.sample, len(members)))
        print(f"site {database} (prefix {args.prefix}): {users} users, "
              + ", ".join(f"{t} {n:,} rows" for t, n in counts.items()))
        print(f"server {server[0]}, InnoDB buffer pool {server[1] / 2**20:.0f} MB; level {level}: {level_rows[0]:,} owned "
              f"key rows of {level_rows[1]:,} users; day {args.date}; {args.repeat} rounds")
        print("mlsidecar_* indexes at the start: " + (", ".join(i.name for i in original) or "none"), flush=True)

        runtime = make_runtime(site_url, args.prefix, empty_store(work / "store.sqlite"), args.date)
        started = time.perf_counter()
        sync = CertificateClassifier(runtime).sync()
        print(f"certificates classified in {time.perf_counter() - started:.1f} s ({sync.summary()})", flush=True)
        jobs = [w for w in workloads(runtime, work, site_url, args.prefix, level, args.date, sample)
                if w.key not in args.skip]

        configurations: list[tuple[str, list[Index] | None]] = [("stock", [])]
        configurations += [(index.name, [index]) for index in alone if index.table in indexes.tables]
        configurations += [("all of sql/indexes.sql", None)]
        runs: dict[str, dict[str, list[float]]] = {name: {job.key: [] for job in jobs} for name, _ in configurations}
        outputs: dict[str, set[str]] = {job.key: set() for job in jobs}
        builds: dict[str, list[float]] = {}
        sizes: dict[str, float | None] = {}
        first_run: dict[str, float] = {}
        for round_ in range(1, args.repeat + 1):
            for name, chosen in configurations:
                indexes.drop_all()
                if chosen is None:
                    built = f"sql/indexes.sql ran in {run_indexes_script(site_url, args.prefix):.1f} s"
                else:
                    for index in chosen:
                        builds.setdefault(index.name, []).append(indexes.add(index))
                    built = f"built in {builds[chosen[0].name][-1]:.1f} s" if chosen else "no mlsidecar_* index"
                indexes.analyze()
                for index in chosen or []:
                    sizes[index.name] = indexes.size_mb(index)
                line = []
                for job in jobs:
                    if first_run.get(job.key, 0.0) * job.per < args.warm_up_limit:
                        run_once(job)  # warm-up: the configuration's pages into the buffer pool
                    seconds, result = run_once(job)
                    first_run.setdefault(job.key, seconds)
                    runs[name][job.key].append(seconds)
                    outputs[job.key].add(repr(result))
                    line.append(f"{job.key} {fmt(seconds)}")
                print(f"round {round_}/{args.repeat} {name} ({built}): " + ", ".join(line), flush=True)
    finally:
        if runtime is not None:
            runtime.close()
        indexes.drop_all()
        for index in original:
            indexes.add(index)
        indexes.analyze()
        restored = sorted(i.name for i in indexes.current())
        engine.dispose()
        shutil.rmtree(work, ignore_errors=True)
        print(f"\nmlsidecar_* indexes restored: {', '.join(restored) or 'none'}", flush=True)
        if args.build and not args.keep:
            admin = sa.create_engine(args.mariadb)
            with admin.begin() as conn:
                conn.exec_driver_sql(f"DROP DATABASE IF EXISTS `{args.database}`")
            admin.dispose()
            print(f"database {args.database} dropped")

    p50 = {name: {key: statistics.median(values) for key, values in figures.items()} for name, figures in runs.items()}
    per = {job.key: job.per for job in jobs}
    print(f"\n{command}")
    print(f"level {level} ({level_rows[0]:,} owned key rows of {level_rows[1]:,} users), day {args.date}; each figure: "
          f"p50 of {args.repeat} runs, one per round, each after a warm-up run (none for runs over "
          f"{args.warm_up_limit:g} s: {', '.join(k for k, v in first_run.items() if v * per[k] >= args.warm_up_limit) or '-'}); "
          "every round visits every configuration "
          f"in turn (background load hits all alike); per-user look-ups: one run = {len(sample)} users, figure = "
          f"run time / users; ratio = stock / with index (> 1: faster with it)")
    print(f"{'index':<26} {'workload':<64} {'stock p50':>10} {'with p50':>10} {'ratio':>7}")
    for name, chosen in configurations[1:]:
        tables = {i.table for i in chosen} if chosen else None
        for job in jobs:
            if tables is not None and "" not in job.tables and not tables & set(job.tables):
                continue
            before, after = p50["stock"][job.key], p50[name][job.key]
            print(f"{name:<26} {job.label:<64} {fmt(before):>10} {fmt(after):>10} {before / after:>6.2f}x")
    print("spread of the stock runs (min .. max): "
          + ", ".join(f"{job.key} {fmt(min(runs['stock'][job.key]))} .. {fmt(max(runs['stock'][job.key]))}" for job in jobs))
    differing = [key for key, seen in outputs.items() if len(seen) > 1]
    print("results identical in every configuration and round (sleepers, rows, counts): "
          + ("yes" if not differing else "NO: " + ", ".join(differing)))
    for index in alone:
        if index.name in sizes:
            size = sizes[index.name]
            print(f"{index.name} on {index.table} ({', '.join(index.columns)}): built in "
                  f"{statistics.median(builds[index.name]):.1f} s (p50), {'?' if size is None else f'{size:.0f}'} MB")

if __name__ == "__main__":
    main()
