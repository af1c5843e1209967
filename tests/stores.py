"""Migrated stores for tests, fast: the real migrations run once per test process into a template
(a SQLite file, a MariaDB database), and every store a test asks for is a copy of it: a file copy, or
each table re-created from the template's own ``SHOW CREATE TABLE`` (keys, foreign keys and options
included) and its rows (the migration version). A copy takes milliseconds to a few hundred; migrating a
fresh store takes a tenth of a second on SQLite and seconds on MariaDB, and the suite makes hundreds.
Other databases are migrated for real. The migrations themselves are specified in ``tests/store``,
which always runs them.
"""

from __future__ import annotations

import atexit
import shutil
import tempfile
import threading
import uuid
from pathlib import Path

import sqlalchemy as sa

from sidecar.store import db as store_db

_template: Path | None = None
_mariadb_templates: dict[str, str] = {}     # server URL -> template database
_lock = threading.Lock()


def _sqlite_template() -> Path:
    global _template
    with _lock:
        if _template is None:
            path = Path(tempfile.mkdtemp(prefix="mls-store-template-")) / "store.sqlite"
            engine = store_db.create_store_engine(f"sqlite:///{path}")
            try:
                store_db.upgrade(engine)
            finally:
                engine.dispose()
            _template = path
        return _template


def migrate_store(url: str) -> None:
    """Bring the (new, empty) store at ``url`` to the current schema."""
    parsed = sa.make_url(url)
    database = parsed.database
    if parsed.get_backend_name() == "sqlite" and database and database != ":memory:" and not Path(database).exists():
        shutil.copyfile(_sqlite_template(), database)
        return
    if parsed.get_backend_name() == "mysql" and database:
        _copy_mariadb_template(parsed)
        return
    engine = store_db.create_store_engine(url)
    try:
        store_db.upgrade(engine)
    finally:
        engine.dispose()


def _server(url: sa.URL, database: str) -> str:
    return url.set(database=database).render_as_string(hide_password=False)


def _mariadb_template(url: sa.URL) -> str:
    server = _server(url, "")
    with _lock:
        if server not in _mariadb_templates:
            name = f"mls_tpl_store_{uuid.uuid4().hex[:12]}"
            _on_server(server, f"CREATE DATABASE `{name}` CHARACTER SET utf8mb4 COLLATE utf8mb4_unicode_520_ci")
            atexit.register(_on_server, server, f"DROP DATABASE IF EXISTS `{name}`")
            engine = store_db.create_store_engine(_server(url, name))
            try:
                store_db.upgrade(engine)
            finally:
                engine.dispose()
            _mariadb_templates[server] = name
        return _mariadb_templates[server]


def _copy_mariadb_template(url: sa.URL) -> None:
    template = _mariadb_template(url)
    engine = sa.create_engine(_server(url, url.database or ""))
    try:
        with engine.begin() as conn:
            conn.exec_driver_sql("SET SESSION foreign_key_checks = 0")
            tables = [row[0] for row in conn.execute(sa.text(
                "SELECT table_name FROM information_schema.tables WHERE table_schema = :s"), {"s": template})]
            for table in tables:
                ddl = conn.exec_driver_sql(f"SHOW CREATE TABLE `{template}`.`{table}`").one()[1]
                conn.exec_driver_sql(ddl)
                conn.exec_driver_sql(f"INSERT INTO `{table}` SELECT * FROM `{template}`.`{table}`")  # the version row
    finally:
        engine.dispose()


def _on_server(server: str, statement: str) -> None:
    admin = sa.create_engine(server)
    try:
        with admin.begin() as conn:
            conn.exec_driver_sql(statement)
    finally:
        admin.dispose()
