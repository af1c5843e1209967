"""Helpers the bench scripts share: finding the CLI, ports, waiting for a server, writing the TOML
configuration, percentiles (bridge.py, soak.py); a seeded site in a database of its own and a page of the
legacy plugin's live sleepers query (sleepers.py, reminders.py, indexes.py).

Imported as ``_common`` because a script run as ``python bench/X.py`` has ``bench/`` first on
``sys.path``; nothing here imports ``sidecar`` at import time, so it works before a script adds the
repository root (:func:`seed_site_database` and :func:`legacy_v3_page` import the package when called).
"""

from __future__ import annotations

import json
import os
import signal
import socket
import subprocess
import sys
import time
from collections import Counter
from collections.abc import Mapping
from datetime import date
from pathlib import Path

import requests
import sqlalchemy as sa

HOST = "127.0.0.1"


def cli() -> list[str]:
    """The ``mlsidecar`` command of this interpreter's environment (``python -m`` without the script)."""
    script = Path(sys.executable).with_name("mlsidecar")
    return [str(script)] if script.exists() else [sys.executable, "-m", "sidecar.cli"]


def free_port() -> int:
    with socket.socket() as probe:
        probe.bind((HOST, 0))
        return probe.getsockname()[1]


def wait_http(url: str, processes, name: str, timeout: float) -> None:  # each script's Processes
    """Until ``url`` answers 200; stops the script when the process ``name`` exits or time runs out."""
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        process = processes.running.get(name)
        if process is not None and process.poll() is not None:
            raise SystemExit(f"{name} exited with {process.returncode}:\n{processes.tail(name)}")
        try:
            if requests.get(url, timeout=2).status_code == 200:
                return
        except requests.RequestException:
            pass
        time.sleep(0.2)
    raise SystemExit(f"{name} did not answer {url} within {timeout:.0f} s:\n{processes.tail(name)}")


def toml_value(value) -> str:
    if isinstance(value, bool):
        return "true" if value else "false"
    if isinstance(value, (int, float)):
        return repr(value)
    if isinstance(value, dict):
        return "{" + ", ".join(f"{k} = {toml_value(v)}" for k, v in value.items()) + "}"
    return json.dumps(str(value))  # a JSON string is a valid TOML basic string


def write_config(path: Path, sections: dict[str, dict]) -> Path:
    lines = []
    for section, values in sections.items():
        lines.append(f"[{section}]")
        lines.extend(f"{key} = {toml_value(value)}" for key, value in values.items())
        lines.append("")
    path.write_text("\n".join(lines), encoding="utf-8")
    return path


def split_password(url: str) -> tuple[str, str | None]:
    # The configuration refuses passwords inside URLs; they go to store.password.
    parsed = sa.make_url(url)
    if parsed.password is None:
        return url, None
    return parsed.set(password=None).render_as_string(hide_password=False), parsed.password


def percentile(values: list[float], share: float) -> float:
    if not values:
        return float("nan")
    ordered = sorted(values)
    return ordered[min(len(ordered) - 1, max(0, round(share * len(ordered)) - 1))]


def site_keys_per_grant(site_url: str, ids: list[str]) -> Counter:
    """How many site keys carry each grant id in keys_meta.utm_id (0 = not on the site), read from
    the site's own table, whatever the sidecar's store says."""
    engine = sa.create_engine(site_url)
    counts: Counter = Counter(dict.fromkeys(ids, 0))
    query = sa.text("SELECT utm_id, COUNT(*) FROM wp_memberlux_keys_meta WHERE utm_source = 'mlsidecar' "
                    "AND utm_id IN :ids GROUP BY utm_id").bindparams(sa.bindparam("ids", expanding=True))
    try:
        with engine.connect() as conn:
            for start in range(0, len(ids), 500):
                for utm_id, number in conn.execute(query, {"ids": ids[start:start + 500]}):
                    counts[utm_id] = number
    finally:
        engine.dispose()
    return counts


def site_database_url(admin_url: str, database: str) -> str:
    """The URL of ``database`` on the server of ``admin_url`` (same account), with utf8mb4 connections."""
    return (sa.make_url(admin_url).set(database=database).update_query_dict({"charset": "utf8mb4"})
            .render_as_string(hide_password=False))


def database_exists(admin_url: str, database: str) -> bool:
    engine = sa.create_engine(admin_url)
    try:
        with engine.connect() as conn:
            return bool(conn.execute(sa.text("SELECT COUNT(*) FROM information_schema.schemata WHERE schema_name = :d"),
                                     {"d": database}).scalar())
    finally:
        engine.dispose()


def seed_site_database(admin_url: str, database: str, *, users: int, levels: int, seed: int, today: date) -> str:
    """Drop and create ``database`` (utf8mb4, WordPress's collation), seed a demo site into it with
    ``build_demo_site`` (200 000 users and 30 levels give 999 999 key rows), print what was built and
    return the site's URL. The caller has put the repository root on ``sys.path``."""
    from sidecar.devstack.site import build_demo_site

    engine = sa.create_engine(admin_url)
    try:
        with engine.begin() as conn:
            conn.exec_driver_sql(f"DROP DATABASE IF EXISTS `{database}`")
            conn.exec_driver_sql(f"CREATE DATABASE `{database}` CHARACTER SET utf8mb4 COLLATE utf8mb4_unicode_520_ci")
    finally:
        engine.dispose()
    site_url = site_database_url(admin_url, database)
    started = time.perf_counter()
    summary = build_demo_site(site_url, users=users, levels=levels, seed=seed, today=today)
    print(f"site seeded in {time.perf_counter() - started:.0f} s: {summary.users} users, {summary.levels} levels, "
          f"{summary.keys} keys, {summary.certificates} certificates", flush=True)
    return site_url


def empty_store(path: Path) -> Path:
    """A new SQLite store at ``path``, migrated to the head revision."""
    from sidecar.store import db as store_db

    engine = store_db.create_store_engine(f"sqlite:///{path}")
    store_db.upgrade(engine)
    engine.dispose()
    return path


def bench_runtime(site_url: str, prefix: str, store: Path, day: date, *, password_env: str):
    """The sidecar's runtime on ``site_url`` (read-only, as in production) with the SQLite store ``store``
    (see :func:`empty_store`) and a fixed clock at 10:00 UTC of ``day``. A password inside the URL is handed
    over through the environment variable ``password_env``: the configuration refuses passwords in URLs."""
    from datetime import datetime, timedelta, timezone

    from sidecar.bootstrap import build_runtime
    from sidecar.clock import FixedClock
    from sidecar.config import settings_from_mapping

    url, password = split_password(site_url)
    config = {
        "wordpress": {"db_url": url, "table_prefix": prefix},
        "memberlux": {"rest_base_url": "http://127.0.0.1:9/wp-json", "rest_user": "bench", "rest_password": "unused"},
        "store": {"url": f"sqlite:///{store}"},
    }
    if password is not None:
        os.environ[password_env] = password
        config["wordpress"]["db_password"] = f"env:{password_env}"
    return build_runtime(settings_from_mapping(config, environ={}),
                         clock=FixedClock(datetime.combine(day, datetime.min.time(), timezone.utc) + timedelta(hours=10)))


def run_indexes_script(site_url: str, prefix: str) -> float:
    """sql/indexes.sql itself on the database of ``site_url``, as an operator runs it; returns its seconds."""
    import pymysql

    from sidecar import sqlscripts

    url = sa.make_url(site_url)
    script = sqlscripts.render((sqlscripts.SQL_DIR / "indexes.sql").read_text(), db=url.database, p=prefix)
    started = time.perf_counter()
    connection = pymysql.connect(host=url.host or "127.0.0.1", port=url.port or 3306, user=url.username or "root",
                                 password=url.password or "", database=url.database, autocommit=True)
    try:
        with connection.cursor() as cursor:
            sqlscripts.run_script(cursor, script)
    finally:
        connection.close()
    return time.perf_counter() - started


def legacy_v3_page(conn: sa.Connection, term_id: int, date_from: date, date_to: date, *, prefix: str = "wp_",
                   page: int = 1) -> tuple[int, list]:
    """One page of the legacy report as the plugin loads it: the count statement, then the rows statement,
    both from the one copy of the plugin's live query (V3) that the product uses too
    (:mod:`sidecar.memberlux.legacy_query`). The caller has put the repository root on ``sys.path``.

    PyMySQL substitutes the parameters on the client, so the server receives literals, as with
    ``$wpdb->prepare`` (dates as quoted ``'YYYY-MM-DD'`` strings, the level as an integer)."""
    from sidecar.memberlux.legacy_query import LegacyTables, legacy_v3_count, legacy_v3_rows

    tables = LegacyTables.from_prefix(prefix)
    total = legacy_v3_count(conn, term_id, date_from, date_to, tables)
    return total, legacy_v3_rows(conn, term_id, date_from, date_to, tables, page=page)


class Processes:
    """Children started by a bench script, each in its own session so gunicorn's workers go with it."""

    def __init__(self, log_dir: Path) -> None:
        self.log_dir = log_dir
        self.running: dict[str, subprocess.Popen] = {}

    def start(self, name: str, args: list[str], env: dict[str, str] | None = None) -> subprocess.Popen:
        log = open(self.log_dir / f"{name}.log", "ab")  # handed to the child
        process = subprocess.Popen(args, stdout=log, stderr=subprocess.STDOUT, cwd=self.log_dir,
                                   env={**os.environ, **(env or {})}, start_new_session=True)
        log.close()
        self.running[name] = process
        return process

    def stop(self, name: str, sig: int = signal.SIGTERM, timeout: float = 40) -> None:
        process = self.running.get(name)
        if process is None:
            return
        try:
            if process.poll() is None:
                os.killpg(process.pid, sig)
                process.wait(timeout)
        except subprocess.TimeoutExpired:
            pass
        except ProcessLookupError:
            return
        finally:
            # Not gone in time, or this wait was interrupted: leave nothing behind.
            if process.poll() is None:
                try:
                    os.killpg(process.pid, signal.SIGKILL)
                    process.wait(10)
                except (ProcessLookupError, subprocess.TimeoutExpired):
                    pass
            self.running.pop(name, None)

    def stop_all(self, *, newest_first: bool = False, signals: Mapping[str, int] | None = None) -> None:
        names = list(self.running)
        for name in reversed(names) if newest_first else names:
            self.stop(name, (signals or {}).get(name, signal.SIGTERM))

    def tail(self, name: str, lines: int = 30) -> str:
        path = self.log_dir / f"{name}.log"
        return "\n".join(path.read_text(errors="replace").splitlines()[-lines:]) if path.exists() else ""
