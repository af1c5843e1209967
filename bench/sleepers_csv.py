"""CSV export of the whole sleepers report: the command and the download, on a SQLite and a MariaDB store.

    .venv/bin/python bench/sleepers_csv.py [--rows 741824] [--store sqlite,mariadb]
                                           [--mariadb mysql+pymysql://root@127.0.0.1:3306/]
                                           [--database mls_bench_sleepers_csv] [--reminders 0.1] [--keep]

No MemberLux site of a million keys is needed: the export reads only the read model (``mls_sleepers``)
and the letters ledger (``mls_reminders``) of the store, plus the level names from the site. So the
script seeds a small demo site (a SQLite file: 60 users, 4 levels, for the names and the admin login),
migrates each store (a SQLite file in a temporary directory; the MariaDB database --database), and fills
its read model with --rows synthetic sleepers spread over the site's levels by bulk insert (multi-row
INSERTs of 10,000 rows; about one row in 50 holds text that needs quoting or the formula guard), plus a
sent letter for a --reminders share of them. Then, per store, each in a fresh child process whose
output goes to a file in the temporary directory:

* **cli**: ``mlsidecar --config … sleepers list --format csv > file``. *seconds*: from starting the
  child to its exit — interpreter start, imports, reading the configuration, reflecting the site,
  the export itself and writing the file; *CPU*: the child's user + system time over the same span;
  *peak RSS*: the child's ru_maxrss (``os.wait4``).
* **http**: a child builds the runtime and the WSGI app (``create_app``), signs in with the demo
  administrator through the test client, then GETs ``/monitor/sleepers.csv`` unbuffered and writes
  each streamed chunk to the file as it comes. *seconds*: from sending the request to the last chunk
  written (no socket: the WSGI stream itself, without gunicorn or a network); *CPU*: the child's
  process time over the same span; *peak RSS*: the child's ru_maxrss, start-up included.

Neither includes the database server's own work (MariaDB's sort and the letters' look-ups run in
``mariadbd``); with pymysql, the store's pure-Python driver, decoding the rows is most of the child's CPU.
Under the CLI, the day the export is computed for is the real clock's; under the WSGI child, 2026-11-24
(so the "days since" column, and the byte counts, differ a little between the two).

*rows*: data lines in the file (read back with ``csv.reader``; the header is not counted), *bytes*: the
file's size, *rows/s*: rows / seconds. One JSON line ``{"summary": …}`` at the end. The databases and
files are removed afterwards unless --keep.
"""

from __future__ import annotations

import argparse
import csv
import json
import os
import shutil
import subprocess
import sys
import tempfile
import time
from datetime import date, datetime, timedelta, timezone
from pathlib import Path

import sqlalchemy as sa

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from _common import cli, write_config

TODAY = date(2026, 11, 24)
NOW = datetime(2026, 11, 24, 10, 0, tzinfo=timezone.utc)
BATCH = 10_000
ODD = ("=HYPERLINK(\"http://x\")", "O'Brien, \"Jr\"", "line\nbreak", "+7 999", "-минус", "@home", "Ёлка")


def fill(store_url: str, rows: int, levels: list[int], reminders: float) -> float:
    """``rows`` sleepers over ``levels`` (and letters sent for a share of them); returns the seconds taken."""
    from sidecar.store import db as store_db
    from sidecar.store.monitor_models import SleeperEntry
    from sidecar.store.reminder_models import Reminder

    engine = store_db.create_store_engine(store_url)
    store_db.upgrade(engine)
    started = time.perf_counter()
    every = max(1, round(1 / reminders)) if reminders > 0 else 0
    with engine.begin() as conn:
        sleepers, letters = [], []
        for n in range(rows):
            term_id, user_id = levels[n % len(levels)], 10 + n // len(levels)
            odd = ODD[n % len(ODD)] if n % 50 == 0 else ""
            expired_on = TODAY - timedelta(days=1 + n % 900)
            sleepers.append({
                "term_id": term_id, "user_id": user_id, "expired_on": expired_on,
                "last_grant": None if n % 3 else expired_on - timedelta(days=365), "blocked": n % 97 == 0,
                "email": f"learner{user_id}@example.org", "login": odd or f"learner{user_id}",
                "first_name": odd or "Мария", "last_name": f"Иванова{n % 1000}",
                "search_text": f"learner{user_id}", "refreshed_at": NOW})
            if every and n % every == 0:
                letters.append({"user_id": user_id, "term_id": term_id, "expired_on": expired_on, "step": 1,
                                "state": "sent", "due_on": expired_on, "planned_at": NOW, "updated_at": NOW})
            if len(sleepers) == BATCH or n == rows - 1:
                conn.execute(sa.insert(SleeperEntry), sleepers)
                if letters:
                    conn.execute(sa.insert(Reminder), letters)
                sleepers, letters = [], []
    seconds = time.perf_counter() - started
    engine.dispose()
    return seconds


def http_child(config: str, target: str) -> None:
    """Runs in the child: the WSGI app, a signed-in client, the download written as it streams."""
    import re

    from sidecar.app import create_app
    from sidecar.bootstrap import build_runtime
    from sidecar.clock import FixedClock
    from sidecar.config import load_settings
    from sidecar.devstack import seed

    runtime = build_runtime(load_settings(config), clock=FixedClock(NOW))
    client = create_app(runtime).test_client()
    token = re.search(r'name="csrf_token" value="([^"]+)"', client.get("/login").get_data(as_text=True)).group(1)
    answer = client.post("/login", data={"csrf_token": token, "login": seed.DEMO_ADMIN_LOGIN,
                                         "password": seed.DEMO_ADMIN_PASSWORD})
    assert answer.status_code == 302, answer.status_code
    started, cpu = time.perf_counter(), time.process_time()
    response = client.get("/monitor/sleepers.csv", buffered=False)
    assert response.status_code == 200 and response.is_streamed
    with open(target, "wb") as out:
        for chunk in response.response:
            out.write(chunk if isinstance(chunk, bytes) else chunk.encode("utf-8"))
    response.close()
    print(json.dumps({"seconds": time.perf_counter() - started, "cpu": time.process_time() - cpu}))


def run_child(command: list[str], stdout) -> tuple[float, float, float, str]:
    """(seconds from start to exit, the child's CPU seconds (user + system), its peak RSS in MB, its stdout
    when piped)."""
    started = time.perf_counter()
    process = subprocess.Popen(command, stdout=stdout, stderr=subprocess.PIPE, env={**os.environ, "TZ": "UTC"})
    _pid, status, usage = os.wait4(process.pid, 0)
    seconds = time.perf_counter() - started
    errors = process.stderr.read().decode(errors="replace")
    process.stderr.close()
    output = process.stdout.read().decode() if process.stdout is not None else ""
    if os.waitstatus_to_exitcode(status) != 0:
        raise SystemExit(f"{' '.join(command)} failed:\n{errors[-3000:]}")
    return seconds, usage.ru_utime + usage.ru_stime, usage.ru_maxrss / 1024, output


def count_rows(path: Path) -> int:
    with open(path, encoding="utf-8-sig", newline="") as f:
        return sum(1 for _ in csv.reader(f)) - 1


def main() -> None:
    if len(sys.argv) == 4 and sys.argv[1] == "--http-child":
        http_child(sys.argv[2], sys.argv[3])
        return
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--rows", type=int, default=741_824)
    parser.add_argument("--store", default="sqlite,mariadb", help="comma-separated: sqlite, mariadb")
    parser.add_argument("--mariadb", default="mysql+pymysql://root@127.0.0.1:3306/")
    parser.add_argument("--database", default="mls_bench_sleepers_csv", help="the MariaDB store's database")
    parser.add_argument("--reminders", type=float, default=0.1, help="share of sleepers with a letter sent")
    parser.add_argument("--keep", action="store_true")
    args = parser.parse_args()
    command_line = "$ .venv/bin/python bench/sleepers_csv.py " + " ".join(sys.argv[1:])
    from sidecar.devstack.site import build_demo_site

    work = Path(tempfile.mkdtemp(prefix="mls-bench-csv-"))
    admin = sa.create_engine(args.mariadb)
    stores = [s.strip() for s in args.store.split(",") if s.strip()]
    results = []
    try:
        site = f"sqlite:///{work / 'wordpress.sqlite'}"
        build_demo_site(site, today=TODAY, fresh=True, users=60, levels=4, seed=7)
        engine = sa.create_engine(site)
        with engine.connect() as conn:
            levels = [int(v) for v in conn.execute(sa.text(
                "SELECT term_id FROM wp_term_taxonomy WHERE taxonomy = 'wpm-levels' ORDER BY term_id")).scalars()]
        engine.dispose()
        for kind in stores:
            if kind == "sqlite":
                store_url = f"sqlite:///{work / 'store.sqlite'}"
            elif kind == "mariadb":
                with admin.begin() as conn:
                    conn.exec_driver_sql(f"DROP DATABASE IF EXISTS `{args.database}`")
                    conn.exec_driver_sql(f"CREATE DATABASE `{args.database}` CHARACTER SET utf8mb4 "
                                         "COLLATE utf8mb4_unicode_520_ci")
                store_url = sa.make_url(args.mariadb).set(database=args.database).render_as_string(hide_password=False)
            else:
                raise SystemExit(f"unknown store {kind!r}")
            seconds = fill(store_url, args.rows, levels, args.reminders)
            print(f"{kind}: {args.rows} sleepers filled in {seconds:.1f} s (levels {levels})", flush=True)
            config = str(write_config(work / f"{kind}.toml", {
                "wordpress": {"db_url": site},
                "memberlux": {"rest_base_url": "http://127.0.0.1:9/wp-json", "rest_user": "bench",
                              "rest_password": "unused"},
                "store": {"url": store_url},
                "web": {"secret_key": "bench-secret-key-not-for-production-0123456789"},
            }))
            for path_name in ("cli", "http"):
                target = work / f"{kind}-{path_name}.csv"
                if path_name == "cli":
                    with open(target, "wb") as out:
                        seconds, cpu, rss, _ = run_child(
                            [*cli(), "--config", config, "sleepers", "list", "--format", "csv"], out)
                else:
                    _, _, rss, output = run_child([sys.executable, __file__, "--http-child", config, str(target)],
                                                  subprocess.PIPE)
                    timing = json.loads(output.strip().splitlines()[-1])
                    seconds, cpu = timing["seconds"], timing["cpu"]
                with open(target, "rb") as f:
                    size = f.seek(0, 2)
                rows = count_rows(target)
                result = {"store": kind, "path": path_name, "rows": rows, "seconds": round(seconds, 2),
                          "rows_per_s": round(rows / seconds), "cpu_seconds": round(cpu, 2), "bytes": size,
                          "peak_rss_mb": round(rss)}
                results.append(result)
                print(f"  {path_name:4}: {rows} rows in {seconds:.1f} s = {rows / seconds:,.0f} rows/s "
                      f"(CPU {cpu:.1f} s), {size / 1e6:.1f} MB, peak RSS {rss:.0f} MB", flush=True)
                if not args.keep:
                    target.unlink()
            if kind == "mariadb" and not args.keep:
                with admin.begin() as conn:
                    conn.exec_driver_sql(f"DROP DATABASE IF EXISTS `{args.database}`")
        print(command_line)
        print(json.dumps({"summary": {"rows_filled": args.rows, "results": results}}))
    finally:
        admin.dispose()
        if not args.keep:
            shutil.rmtree(work, ignore_errors=True)


if __name__ == "__main__":
    main()
