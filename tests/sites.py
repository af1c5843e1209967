"""WordPress sites for tests, fast: each distinct site (database kind, seed arguments) is seeded
once per test process into a template, and every test gets its own copy — a file copy on SQLite, a
table-by-table copy into the test's own database on MariaDB. Seeding itself is specified in
``tests/devstack/test_devstack_seed.py``, which always seeds for real. Empty sites and the reflection
of a site's schema are made once per process in the same way (``empty_site_schema``, ``ReflectionCache``);
``tests/memberlux/test_schema.py`` always reflects for real.
"""

from __future__ import annotations

import atexit
import json
import shutil
import tempfile
import threading
import uuid
from pathlib import Path
from typing import Any

import sqlalchemy as sa

from sidecar.devstack.seed import SeedSummary
from sidecar.devstack.site import build_demo_site
from sidecar.devstack.wpschema import build_metadata, create_site_schema
from sidecar.memberlux import schema as memberlux_schema

_lock = threading.Lock()
_templates: dict[str, tuple[str, SeedSummary]] = {}
_admin_urls: set[str] = set()


def _key(kind: str, kwargs: dict[str, Any]) -> str:
    return kind + json.dumps(kwargs, sort_keys=True, default=str)


def _server_url(url: sa.URL, database: str) -> str:
    return url.set(database=database).render_as_string(hide_password=False)


def _copy_mariadb(url: sa.URL, source: str, target: str) -> None:
    engine = sa.create_engine(_server_url(url, target))
    try:
        with engine.begin() as conn:
            conn.exec_driver_sql("SET SESSION sql_mode = 'NO_ENGINE_SUBSTITUTION'")  # zero dates, as WordPress
            conn.exec_driver_sql("SET SESSION foreign_key_checks = 0")
            tables = [row[0] for row in conn.execute(sa.text(
                "SELECT table_name FROM information_schema.tables WHERE table_schema = :s"), {"s": source})]
            for table in tables:
                conn.exec_driver_sql(f"CREATE TABLE `{target}`.`{table}` LIKE `{source}`.`{table}`")
                conn.exec_driver_sql(f"INSERT INTO `{target}`.`{table}` SELECT * FROM `{source}`.`{table}`")
    finally:
        engine.dispose()


def _drop_templates() -> None:
    for admin_url in _admin_urls:
        engine = sa.create_engine(admin_url)
        try:
            with engine.begin() as conn:
                for (name,) in conn.execute(sa.text("SELECT schema_name FROM information_schema.schemata "
                                                    "WHERE schema_name LIKE :p"), {"p": f"mls_tpl_{_RUN}_%"}):
                    conn.exec_driver_sql(f"DROP DATABASE IF EXISTS `{name}`")
        finally:
            engine.dispose()


_RUN = uuid.uuid4().hex[:8]
atexit.register(_drop_templates)


def seeded_site(url: str, **kwargs: Any) -> SeedSummary:
    """Make the empty site database at ``url`` a copy of a site seeded with ``build_demo_site(**kwargs)``."""
    parsed = sa.make_url(url)
    kind = parsed.get_backend_name()
    key = _key(kind, kwargs)
    with _lock:
        if key not in _templates:
            if kind == "sqlite":
                template = str(Path(tempfile.mkdtemp(prefix="mls-site-template-")) / "wordpress.sqlite")
                summary = build_demo_site(f"sqlite:///{template}", **kwargs)
            else:
                template = f"mls_tpl_{_RUN}_{len(_templates)}"
                admin = sa.create_engine(_server_url(parsed, ""))
                with admin.begin() as conn:
                    conn.exec_driver_sql(f"CREATE DATABASE `{template}` CHARACTER SET utf8mb4 COLLATE utf8mb4_unicode_520_ci")
                admin.dispose()
                _admin_urls.add(_server_url(parsed, ""))
                summary = build_demo_site(_server_url(parsed, template), **kwargs)
            _templates[key] = (template, summary)
        template, summary = _templates[key]
    if kind == "sqlite":
        shutil.copyfile(template, parsed.database)
    else:
        _copy_mariadb(parsed, template, parsed.database)
    return summary


# --- empty sites and their reflection --------------------------------------------------------------

_schema_templates: dict[tuple, Path] = {}


def empty_site_schema(engine: sa.Engine, prefix: str = "wp_", base_prefix: str | None = None,
                      *, without_modules: tuple[str, ...] = ()) -> sa.MetaData:
    """``create_site_schema`` for tests: on a new SQLite file the tables come from a copy of a file made
    once per test process (creating ~35 tables and their indexes costs ~0.15 s; a copy, a millisecond).
    Any other database gets the tables created for real."""
    database = engine.url.database
    if engine.url.get_backend_name() != "sqlite" or not database or database == ":memory:" \
            or (Path(database).exists() and Path(database).stat().st_size > 0):
        return create_site_schema(engine, prefix, base_prefix, without_modules=without_modules)
    key = (prefix, base_prefix, tuple(sorted(without_modules)))
    with _lock:
        if key not in _schema_templates:
            template = Path(tempfile.mkdtemp(prefix="mls-site-schema-")) / "wordpress.sqlite"
            atexit.register(shutil.rmtree, template.parent, ignore_errors=True)  # one per process: gone at its end
            template_engine = sa.create_engine(f"sqlite:///{template}")
            try:
                create_site_schema(template_engine, prefix, base_prefix, without_modules=without_modules)
            finally:
                template_engine.dispose()
            _schema_templates[key] = template
        template = _schema_templates[key]
    shutil.copyfile(template, database)
    return build_metadata(prefix, base_prefix)


class ReflectionCache:
    """``reflect_site`` once per distinct schema in a test process.

    Hundreds of tests build a runtime on one of a few identical schemas, and reflecting one costs
    ~0.1 s of CPU. The key is the schema itself (SQLite's stored DDL, MariaDB's columns, indexes and
    table options), so a test that changes a table gets a real reflection. What reflection checks in
    the data (MemberLux's unfinished key migration, certificates without templates) is checked on every
    call. Other databases are
    always reflected.
    """

    def __init__(self, reflect) -> None:
        self._reflect = reflect
        self._schemas: dict[tuple, Any] = {}

    def __call__(self, engine: sa.Engine, prefix: str, base_prefix: str | None = None):
        with engine.connect() as conn:
            fingerprint = self._fingerprint(conn)
            schema = self._schemas.get((engine.dialect.name, prefix, base_prefix, fingerprint))
            if schema is not None:
                memberlux_schema.recheck_site_data(conn, prefix, base_prefix)
        if schema is None:
            schema = self._reflect(engine, prefix, base_prefix)
            if fingerprint is not None:
                self._schemas[(engine.dialect.name, prefix, base_prefix, fingerprint)] = schema
        return schema

    @staticmethod
    def _fingerprint(conn: sa.Connection) -> tuple | None:
        if conn.dialect.name == "sqlite":
            return tuple(conn.exec_driver_sql(
                "SELECT type, name, tbl_name, sql FROM sqlite_master ORDER BY type, name"))
        if conn.dialect.name == "mysql":
            columns = conn.exec_driver_sql(
                "SELECT table_name, column_name, column_type, is_nullable, column_default, column_key, extra, "
                "collation_name FROM information_schema.columns WHERE table_schema = DATABASE() "
                "ORDER BY table_name, ordinal_position")
            indexes = conn.exec_driver_sql(
                "SELECT table_name, index_name, seq_in_index, column_name, sub_part, non_unique "
                "FROM information_schema.statistics WHERE table_schema = DATABASE() "
                "ORDER BY table_name, index_name, seq_in_index")
            tables = conn.exec_driver_sql(
                "SELECT table_name, engine, table_collation FROM information_schema.tables "
                "WHERE table_schema = DATABASE() ORDER BY table_name")
            return tuple(columns), tuple(indexes), tuple(tables)
        return None
