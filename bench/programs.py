"""Bundle-program watcher figures on a MariaDB site with a million certificates.

    .venv/bin/python bench/programs.py [--certificates 1000000] [--new 1000] [--users 20000] [--levels 12]
                                       [--mariadb mysql+pymysql://root@127.0.0.1:3306/] [--store sqlite|mariadb]
                                       [--repeat 50] [--reuse] [--keep] [--profile] [--database mls_bench_programs]

Builds (or, with --reuse, reuses) the MariaDB database ``mls_bench_programs`` (--database): a site seeded by
sidecar.devstack (users with e-mails, levels, ``mbl_key`` products of 1/3/12 months per level), three
of its levels switched to manual certificates (``_mblc_has_certificate`` = yes, ``_mblc_how_to_issue``
= employee), and ``{p}memberlux_certificate`` topped up to --certificates rows with one
``INSERT … SELECT`` over MariaDB's SEQUENCE engine (issue dates spread over five years, all levels).
The store is a SQLite file in a temporary directory (--store mariadb: the MariaDB database
``mls_bench_programs_store``, i.e. the site's name + ``_store``). Then, each measured phase in a fresh child process so that its peak
RSS (ru_maxrss) is its own:

a. the first full classifier sync of every certificate (a one-off at install; no program exists yet,
   so history is classified, not queued);
   then, in this process: a 3-step program on the three manual levels (with a legacy webhook URL and
   a notification address, so every step also emits ``program.step_granted`` into the webhook outbox),
   --new learners enrolled through Progression.enrol (step 1 not granted); half of them are moved to
   step 2 directly in the store (as if they had passed step 1 earlier);
b. the worker's poll with nothing new — Progression.watch() (classifier sync + enrolment on
   activation + inbox) — --repeat times after 3 warm-up polls: p50/p95/max; **target ≤ 10 ms**; and the
   round trips per poll to each database (MariaDB: every command pymysql sends — statements, COMMIT/ROLLBACK
   and the pool's pre-ping; a SQLite store: its statements, named ``sqlite``);
c. --new manual certificates inserted for the enrolled learners at their current step's level
   (issued today by the coach), then Progression.watch() repeated until every grant is queued: the
   time of each poll, the total, and the count of ``mls_grants`` rows with channel ``program``;
d. the poll with nothing new again, a minute after that burst (the burst's ids are still inside the
   RESCAN_AGE re-read window) and after RESCAN_AGE (back to steady state).

--profile re-runs phase b under cProfile, and (SQLite store) phase c on a copy of the store taken
before it, and prints the top functions. Loopback only; the databases
are dropped at the end unless --keep (or --reuse, which keeps the site; the store is always fresh).
"""

from __future__ import annotations

import argparse
import json
import shutil
import statistics
import subprocess
import sys
import tempfile
import time
from datetime import date, datetime, timedelta, timezone
from pathlib import Path

import sqlalchemy as sa

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from sidecar.bootstrap import build_runtime
from sidecar.clock import FixedClock
from sidecar.config import settings_from_mapping
from sidecar.devstack.site import build_demo_site
from sidecar.store import db as store_db

DATABASE = "mls_bench_programs"
STORE_DATABASE = "mls_bench_programs_store"
TODAY = date(2026, 11, 24)
T0 = datetime.combine(TODAY, datetime.min.time(), timezone.utc) + timedelta(hours=9)   # the install's first sync
TARGET_MS = 10.0
STEP_TERMS = ((1, "months"), (1, "months"), (3, "months"))  # products the seed makes for every level
LEVELS_OPTION = "mls_bench_program_levels"
COACH = 3  # the seed's coach account (sidecar.devstack.seed.COACH_ID)


def pct(values: list[float], q: float) -> float:
    ordered = sorted(values)
    return ordered[min(len(ordered) - 1, int(len(ordered) * q))]


# --- child processes ------------------------------------------------------------------------------------

def child_main(spec: dict) -> dict:
    """One phase in this (fresh) process; returns its figures. Runs with ``--child``."""
    import resource

    from sidecar.monitor.certificates import CertificateClassifier
    from sidecar.programs.progression import Progression

    clock = FixedClock(datetime.fromisoformat(spec["now"]))
    runtime = build_runtime(settings_from_mapping(spec["config"], environ={}), clock=clock)
    phase, out = spec["phase"], {}
    try:
        if phase == "sync":
            rss_before = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
            started = time.perf_counter()
            report = CertificateClassifier(runtime).sync(batch=spec.get("batch", 1000))
            out.update(seconds=time.perf_counter() - started, summary=report.summary(), complete=report.complete)
        elif phase == "idle":
            for _ in range(3):  # warm-up: pools connected, statements compiled
                Progression(runtime).watch()
                clock.instant += timedelta(seconds=1)
            rss_before = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
            profiler = start_profile(spec)
            values, last, trips = [], "", RoundTrips(runtime)
            for _ in range(spec["repeat"]):
                started = time.perf_counter()
                last = Progression(runtime).watch()
                values.append(time.perf_counter() - started)
                clock.instant += timedelta(seconds=1)
            stop_profile(profiler, out)
            per_poll = {name: count / spec["repeat"] for name, count in trips.take().items()}
            out.update(values=values, last=last, round_trips=per_poll)
        elif phase == "burst":
            rss_before = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
            from sidecar.store.program_models import ProgramInbox

            profiler = start_profile(spec)

            polls: list[dict] = []
            while True:
                started = time.perf_counter()
                summary = Progression(runtime).watch()
                seconds = time.perf_counter() - started
                with runtime.sessions() as session:
                    inbox = int(session.scalar(sa.select(sa.func.count()).select_from(ProgramInbox)))
                polls.append({"seconds": seconds, "summary": summary, "grants": program_grants(runtime),
                              "inbox": inbox})
                # The worker's next poll comes schedule.certificate_poll_seconds later.
                clock.instant += timedelta(seconds=runtime.settings.schedule.certificate_poll_seconds)
                if polls[-1]["grants"] >= spec["expect"] or len(polls) >= 10 or (
                        inbox == 0 and len(polls) > 1 and polls[-1]["grants"] == polls[-2]["grants"]):
                    break
            stop_profile(profiler, out)
            out["polls"] = polls
        else:
            raise SystemExit(f"unknown phase {phase}")
    finally:
        runtime.close()
    out.update(rss_before_mb=rss_before / 1024, peak_rss_mb=resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024)
    return out


class RoundTrips:
    """Round trips of this process to each database, by database name.

    MariaDB: every command pymysql sends and waits an answer for (queries, COMMIT/ROLLBACK, the pool's
    pre-ping), counted in ``Connection._execute_command``. SQLite (in process, no round trip): the
    statements SQLAlchemy executes on the store engine, under the name ``sqlite``.
    """

    def __init__(self, runtime) -> None:
        import pymysql.connections

        self.counts: dict[str, int] = {}
        original = pymysql.connections.Connection._execute_command
        counts = self.counts

        def counted(conn, command, sql):
            name = conn.db.decode() if isinstance(conn.db, bytes) else str(conn.db)
            counts[name] = counts.get(name, 0) + 1
            return original(conn, command, sql)

        pymysql.connections.Connection._execute_command = counted
        if runtime.store_engine.dialect.name == "sqlite":
            sa.event.listen(runtime.store_engine, "before_cursor_execute",
                            lambda *_: counts.__setitem__("sqlite", counts.get("sqlite", 0) + 1))

    def take(self) -> dict[str, int]:
        taken = dict(self.counts)
        self.counts.clear()
        return taken


def start_profile(spec: dict):
    if not spec.get("profile"):
        return None
    import cProfile

    profiler = cProfile.Profile()
    profiler.enable()
    return profiler


def stop_profile(profiler, out: dict) -> None:
    if profiler is None:
        return
    import io
    import pstats

    profiler.disable()
    text = []
    for sort in ("cumulative", "tottime"):
        buffer = io.StringIO()
        pstats.Stats(profiler, stream=buffer).strip_dirs().sort_stats(sort).print_stats(30)
        text.append(buffer.getvalue())
    out["profile"] = "\n".join(text)


def in_child(phase: str, config: dict, now: datetime, **params: object) -> dict:
    spec = {"phase": phase, "config": config, "now": now.isoformat(), **params}
    result = subprocess.run([sys.executable, __file__, "--child", json.dumps(spec, default=str)],
                            capture_output=True, text=True, timeout=7200)
    if result.returncode != 0:
        raise SystemExit(f"phase {phase} failed:\n" + result.stderr[-4000:])
    return json.loads(result.stdout.strip().splitlines()[-1])


def program_grants(runtime) -> int:
    from sidecar.store.grant_models import Grant

    with runtime.sessions() as session:
        return int(session.scalar(sa.select(sa.func.count()).select_from(Grant).where(Grant.channel == "program")))


# --- the site -------------------------------------------------------------------------------------------

def build_site(site_url: str, *, users: int, levels: int, certificates: int, seed: int) -> list[int]:
    """Seed a site, switch three levels to manual certificates, top the certificates up to ``certificates``."""
    started = time.perf_counter()
    summary = build_demo_site(site_url, users=users, levels=levels, seed=seed, today=TODAY)
    print(f"site seeded in {time.perf_counter() - started:.0f} s: {summary.users} users, {summary.levels} levels, "
          f"{summary.keys} keys, {summary.certificates} certificates", flush=True)
    engine = sa.create_engine(site_url)
    chosen = [lv for lv in summary.level_ids if lv not in summary.parent_of][:3]
    with engine.connect() as conn:
        conn.exec_driver_sql("SET SESSION sql_mode = 'NO_ENGINE_SUBSTITUTION'")
        for term_id in chosen:
            conn.execute(sa.text("DELETE FROM wp_termmeta WHERE term_id = :t AND meta_key IN "
                                 "('_mblc_has_certificate', '_mblc_how_to_issue')"), {"t": term_id})
            conn.execute(sa.text("INSERT INTO wp_termmeta (term_id, meta_key, meta_value) VALUES "
                                 "(:t, '_mblc_has_certificate', 'yes'), (:t, '_mblc_how_to_issue', 'employee')"),
                         {"t": term_id})
        # Remembered for --reuse (an option no plugin reads).
        conn.execute(sa.text("INSERT INTO wp_options (option_name, option_value, autoload) VALUES (:n, :v, 'no')"),
                     {"n": LEVELS_OPTION, "v": ",".join(map(str, chosen))})
        have = conn.execute(sa.text("SELECT COUNT(*) FROM wp_memberlux_certificate")).scalar()
        missing = max(0, certificates - int(have))
        conn.exec_driver_sql("DROP TABLE IF EXISTS mls_bench_users")
        conn.exec_driver_sql("CREATE TABLE mls_bench_users (n INT PRIMARY KEY, id BIGINT UNSIGNED) "
                             f"SELECT ROW_NUMBER() OVER (ORDER BY ID) - 1 AS n, ID AS id FROM wp_users WHERE ID > {COACH}")
        n_users = conn.execute(sa.text("SELECT COUNT(*) FROM mls_bench_users")).scalar()
        conn.commit()
        level_list = ", ".join(str(v) for v in summary.level_ids)
        started = time.perf_counter()
        chunk = 200_000
        for first in range(1, missing + 1, chunk):
            last = min(missing, first + chunk - 1)
            # Insert days spread over five years; one in ten printed with an earlier date; a third by the coach.
            day = f"DATE_SUB(DATE('{TODAY - timedelta(days=1)}'), INTERVAL MOD(s.seq * 37, 1825) DAY)"
            conn.exec_driver_sql(f"""
                INSERT INTO wp_memberlux_certificate
                    (user_id, wpmlevel_id, certificate_name, certificate_template_id, graduate_first_name,
                     graduate_last_name, date_issue, series, number, responsible_person, create_date, course_name)
                SELECT u.id, ELT(1 + MOD(s.seq * 31, {len(summary.level_ids)}), {level_list}), 'Сертификат', 1,
                       'Имя', 'Фамилия', IF(MOD(s.seq, 10) = 0, DATE_SUB({day}, INTERVAL 3 DAY), {day}),
                       'ML-BENCH', CONCAT('B', s.seq), IF(MOD(s.seq, 3) = 0, {COACH}, NULL), {day}, 'Курс'
                FROM seq_{first}_to_{last} s
                JOIN mls_bench_users u ON u.n = MOD(s.seq * 7919, {n_users})
            """)
            conn.commit()
            print(f"  certificates: {last}/{missing} added", flush=True)
        conn.exec_driver_sql("DROP TABLE mls_bench_users")
        conn.commit()
    print(f"certificates topped up by {missing} in {time.perf_counter() - started:.0f} s", flush=True)
    engine.dispose()
    return chosen


# --- the parent -----------------------------------------------------------------------------------------

def copy_store(source: Path, target: Path) -> None:
    """A consistent copy of a SQLite store in WAL mode (a file copy would miss the -wal part)."""
    import sqlite3

    with sqlite3.connect(source) as src, sqlite3.connect(target) as dst:
        src.backup(dst)


def create_program(runtime, levels: list[int]) -> int:
    from sidecar.domain.programs import Step
    from sidecar.programs.catalog import ProgramCatalog, ProgramDefinition

    steps = tuple(Step(level, duration, units) for level, (duration, units) in zip(levels, STEP_TERMS, strict=False))
    view = ProgramCatalog(runtime).create(ProgramDefinition(
        name="Бенчмарк: три шага", steps=steps, notify_email="manager@school.example",
        notify_step_subject="[user_login] → шаг [next_step]", webhook_url="https://crm.example.org/program-hook"),
        actor="bench")
    return view.id


def enrol_learners(runtime, program_id: int, count: int) -> list[tuple[int, int, int]]:
    """``count`` learners enrolled (step 1 not granted); the second half moved to step 2. Returns
    (enrolment id, user id, 0-based step)."""
    from sidecar.programs.progression import Progression
    from sidecar.store.program_models import Enrolment

    with runtime.wp_engine.connect() as conn:
        users = list(conn.execute(sa.text(
            f"SELECT ID FROM wp_users WHERE ID > {COACH} AND user_email <> '' ORDER BY ID LIMIT :n"), {"n": count}).scalars())
    progression = Progression(runtime)
    enrolled = []
    for user_id in users:
        result = progression.enrol(program_id, int(user_id), source="cli", actor="bench", grant_first=False)
        enrolled.append(result.enrolment_id)
    moved = enrolled[len(enrolled) // 2:]
    with runtime.sessions.begin() as session:
        session.execute(sa.update(Enrolment).where(Enrolment.id.in_(moved)).values(current_step=1))
    steps = {e: (1 if e in set(moved) else 0) for e in enrolled}
    return [(e, int(u), steps[e]) for e, u in zip(enrolled, users, strict=True)]


def insert_certificates(site_url: str, learners: list[tuple[int, int, int]], levels: list[int]) -> tuple[int, int]:
    """One manual certificate (issued today by the coach) per learner, at the level of the learner's step
    (written as MemberLux would; the sidecar's own WordPress connection is read-only)."""
    rows = [{"user_id": user_id, "level": levels[step], "number": f"N{enrolment_id}"}
            for enrolment_id, user_id, step in learners]
    engine = sa.create_engine(site_url)
    with engine.begin() as conn:
        before = conn.execute(sa.text("SELECT MAX(certificate_id) FROM wp_memberlux_certificate")).scalar()
        conn.execute(sa.text(
            "INSERT INTO wp_memberlux_certificate (user_id, wpmlevel_id, certificate_name, certificate_template_id,"
            " graduate_first_name, graduate_last_name, date_issue, series, number, responsible_person, create_date,"
            f" course_name) VALUES (:user_id, :level, 'Сертификат', 1, 'Имя', 'Фамилия', '{TODAY}', 'ML-NEW',"
            f" :number, {COACH}, '{TODAY}', 'Курс')"), rows)
        after = conn.execute(sa.text("SELECT MAX(certificate_id) FROM wp_memberlux_certificate")).scalar()
    engine.dispose()
    return int(before), int(after)


def ms(seconds: float) -> str:
    return f"{seconds * 1000:.1f} ms"


def idle_line(result: dict) -> tuple[str, str]:
    values = result["values"]
    trips = ", ".join(f"{name} {count:g}" for name, count in sorted(result["round_trips"].items()))
    return (f"p50 {ms(statistics.median(values))}, p95 {ms(pct(values, 0.95))}, max {ms(max(values))}, "
            f"min {ms(min(values))} over {len(values)} polls; round trips per poll: {trips}",
            f"{result['peak_rss_mb']:.0f} MB")


def main() -> None:  # one linear script
    global DATABASE, STORE_DATABASE
    if len(sys.argv) == 3 and sys.argv[1] == "--child":
        print(json.dumps(child_main(json.loads(sys.argv[2])), default=str))
        return
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--certificates", type=int, default=1_000_000)
    parser.add_argument("--new", type=int, default=1000, help="new certificates of enrolled learners (phase c)")
    parser.add_argument("--users", type=int, default=20_000)
    parser.add_argument("--levels", type=int, default=12)
    parser.add_argument("--seed", type=int, default=2026)
    parser.add_argument("--mariadb", default="mysql+pymysql://root@127.0.0.1:3306/")
    parser.add_argument("--store", choices=("sqlite", "mariadb"), default="sqlite")
    parser.add_argument("--repeat", type=int, default=50)
    parser.add_argument("--reuse", action="store_true", help="reuse an existing bench site (and keep it)")
    parser.add_argument("--keep", action="store_true", help="keep the bench databases afterwards")
    parser.add_argument("--profile", action="store_true", help="profile phase b with cProfile")
    parser.add_argument("--database", default=DATABASE, help="name of the bench site's MariaDB database")
    args = parser.parse_args()
    DATABASE, STORE_DATABASE = args.database, args.database + "_store"
    command = "$ .venv/bin/python bench/programs.py " + " ".join(sys.argv[1:])

    admin = sa.make_url(args.mariadb)
    site_url = admin.set(database=DATABASE).update_query_dict({"charset": "utf8mb4"}).render_as_string(hide_password=False)
    admin_engine = sa.create_engine(args.mariadb)
    with admin_engine.connect() as conn:
        exists = conn.execute(sa.text("SELECT COUNT(*) FROM information_schema.schemata WHERE schema_name = :d"),
                              {"d": DATABASE}).scalar()
    work = Path(tempfile.mkdtemp(prefix="mls-bench-programs-"))
    if args.store == "sqlite":
        store_url = f"sqlite:///{work / 'store.sqlite'}"
    else:
        store_url = admin.set(database=STORE_DATABASE).render_as_string(hide_password=False)
        with admin_engine.begin() as conn:
            conn.exec_driver_sql(f"DROP DATABASE IF EXISTS `{STORE_DATABASE}`")
            conn.exec_driver_sql(f"CREATE DATABASE `{STORE_DATABASE}` CHARACTER SET utf8mb4 COLLATE utf8mb4_unicode_ci")
    runtime = None
    try:
        if not (args.reuse and exists):
            with admin_engine.begin() as conn:
                conn.exec_driver_sql(f"DROP DATABASE IF EXISTS `{DATABASE}`")
                conn.exec_driver_sql(f"CREATE DATABASE `{DATABASE}` CHARACTER SET utf8mb4 COLLATE utf8mb4_unicode_520_ci")
            levels = build_site(site_url, users=args.users, levels=args.levels, certificates=args.certificates,
                                seed=args.seed)
        else:
            print(f"reusing the database {DATABASE}", flush=True)
            engine = sa.create_engine(site_url)
            with engine.begin() as conn:
                text = conn.execute(sa.text("SELECT option_value FROM wp_options WHERE option_name = :n"),
                                    {"n": LEVELS_OPTION}).scalar()
                # Certificates added by an earlier run's phase c are history now; leave them.
            engine.dispose()
            levels = [int(v) for v in (text or "").split(",") if v]
            if len(levels) != 3:
                raise SystemExit(f"{DATABASE} was not built by this script (no {LEVELS_OPTION}); drop it or run without --reuse")

        config = {
            "wordpress": {"db_url": site_url, "table_prefix": "wp_"},
            "memberlux": {"rest_base_url": "http://127.0.0.1:9/wp-json", "rest_user": "bench", "rest_password": "unused"},
            "store": {"url": store_url},
        }
        engine = store_db.create_store_engine(store_url)
        store_db.upgrade(engine)
        engine.dispose()
        clock = FixedClock(T0)
        runtime = build_runtime(settings_from_mapping(config, environ={}), clock=clock)
        with runtime.wp_engine.connect() as conn:
            certs = conn.execute(sa.text("SELECT COUNT(*) FROM wp_memberlux_certificate")).scalar()
            users = conn.execute(sa.text("SELECT COUNT(*) FROM wp_users")).scalar()
            keys = conn.execute(sa.text("SELECT COUNT(*) FROM wp_memberlux_term_keys")).scalar()
        store_kind = "SQLite file" if args.store == "sqlite" else f"MariaDB database {STORE_DATABASE}"
        print(f"data: {users} users, {keys} key rows, {certs} certificates (MariaDB, stock indexes); store: {store_kind}",
              flush=True)
        rows: list[tuple[str, str, str]] = [("phase", "time", "peak RSS")]

        sync = in_child("sync", config, T0)
        print(f"a. first full classifier sync: {sync['seconds']:.1f} s ({sync['summary']})", flush=True)
        rows.append(("a. first full classifier sync (one-off at install)", f"{sync['seconds']:.1f} s",
                      f"{sync['peak_rss_mb']:.0f} MB"))

        clock.instant = T0 + timedelta(minutes=30)
        started = time.perf_counter()
        program_id = create_program(runtime, levels)
        learners = enrol_learners(runtime, program_id, args.new)
        print(f"program {program_id}: levels {' → '.join(map(str, levels))}; {len(learners)} learners enrolled in "
              f"{time.perf_counter() - started:.1f} s ({sum(1 for *_, s in learners if s == 0)} on step 1, "
              f"{sum(1 for *_, s in learners if s == 1)} on step 2)", flush=True)

        idle = in_child("idle", config, T0 + timedelta(hours=1), repeat=args.repeat)
        met = statistics.median(idle["values"]) * 1000 <= TARGET_MS and pct(idle["values"], 0.95) * 1000 <= TARGET_MS
        print(f"b. poll with nothing new (Progression.watch): {idle_line(idle)[0]}; "
              f"target <= {TARGET_MS:.0f} ms: {'met' if met else 'MISSED'}\n   last: {idle['last']}", flush=True)
        rows.append(("b. poll, nothing new (p50/p95/max)", f"{ms(statistics.median(idle['values']))} / "
                     f"{ms(pct(idle['values'], 0.95))} / {ms(max(idle['values']))}", f"{idle['peak_rss_mb']:.0f} MB"))

        burst_at = T0 + timedelta(hours=2)
        clock.instant = burst_at
        before_burst = work / "store-before-burst.sqlite"
        if args.profile and args.store == "sqlite":
            copy_store(work / "store.sqlite", before_burst)
        first_id, last_id = insert_certificates(site_url, learners, levels)
        burst = in_child("burst", config, burst_at + timedelta(seconds=5), expect=len(learners))
        total = sum(p["seconds"] for p in burst["polls"])
        grants = burst["polls"][-1]["grants"]
        print(f"c. {len(learners)} new manual certificates (ids above {first_id}, up to {last_id}): {len(burst['polls'])} poll(s) "
              f"until {grants} grants with channel 'program' were queued, {total:.2f} s in all", flush=True)
        for n, poll in enumerate(burst["polls"], start=1):
            print(f"   poll {n}: {poll['seconds']:.2f} s, {poll['grants']} grants so far, {poll['inbox']} left in the "
                  f"inbox — {poll['summary']}", flush=True)
        rows.append((f"c. {len(learners)} new certificates → {grants} grants queued ({len(burst['polls'])} polls)",
                     f"{total:.2f} s", f"{burst['peak_rss_mb']:.0f} MB"))
        with runtime.sessions() as session:
            from sidecar.store.webhook_models import WebhookDelivery, WebhookEvent

            events = session.scalar(sa.select(sa.func.count()).select_from(WebhookEvent))
            deliveries = session.scalar(sa.select(sa.func.count()).select_from(WebhookDelivery))
        print(f"   outbox: {program_grants(runtime)} program grants, {events} webhook events, {deliveries} deliveries",
              flush=True)

        after = burst_at + timedelta(seconds=5 + 60 * len(burst["polls"]))
        recent = in_child("idle", config, after, repeat=max(5, args.repeat // 5))
        print(f"d. poll, nothing new, {int((after - burst_at).total_seconds())} s after the burst (its ids re-read): "
              f"{idle_line(recent)[0]}", flush=True)
        rows.append(("d. poll, nothing new, just after the burst", f"{ms(statistics.median(recent['values']))} / "
                     f"{ms(pct(recent['values'], 0.95))} / {ms(max(recent['values']))}", f"{recent['peak_rss_mb']:.0f} MB"))
        settled = in_child("idle", config, burst_at + timedelta(minutes=15), repeat=args.repeat)
        print(f"d. poll, nothing new, 15 min after the burst: {idle_line(settled)[0]}", flush=True)
        rows.append(("d. poll, nothing new, 15 min after the burst", f"{ms(statistics.median(settled['values']))} / "
                     f"{ms(pct(settled['values'], 0.95))} / {ms(max(settled['values']))}", f"{settled['peak_rss_mb']:.0f} MB"))

        print()
        print(f"figures ({certs} certificates, {users} users, store: {store_kind}; each phase a fresh process, peak "
              f"RSS = its ru_maxrss, including ~{idle['rss_before_mb']:.0f} MB of interpreter, imports and runtime):")
        widths = [max(len(r[i]) for r in rows) for i in range(3)]
        for row in rows:
            print(f"  {row[0]:<{widths[0]}}  {row[1]:>{widths[1]}}  {row[2]:>{widths[2]}}")
        print(command)

        if args.profile:
            profiled = in_child("idle", config, burst_at + timedelta(minutes=20), repeat=args.repeat, profile=True)
            print(f"\nprofile of phase b ({args.repeat} polls, p50 {ms(statistics.median(profiled['values']))} with the "
                  "profiler on):")
            print(profiled["profile"])
            if args.store == "sqlite":
                profiled = in_child("burst", {**config, "store": {"url": f"sqlite:///{before_burst}"}},
                                    burst_at + timedelta(seconds=5), expect=len(learners), profile=True)
                print(f"\nprofile of phase c on a copy of the store taken before it ({len(profiled['polls'])} polls, "
                      f"{sum(p['seconds'] for p in profiled['polls']):.1f} s with the profiler on):")
                print(profiled["profile"])
    finally:
        if runtime is not None:
            runtime.close()
        shutil.rmtree(work, ignore_errors=True)
        with admin_engine.begin() as conn:
            if not (args.keep or args.reuse):
                conn.exec_driver_sql(f"DROP DATABASE IF EXISTS `{DATABASE}`")
            if args.store == "mariadb" and not args.keep:
                conn.exec_driver_sql(f"DROP DATABASE IF EXISTS `{STORE_DATABASE}`")
        admin_engine.dispose()


if __name__ == "__main__":
    main()
