"""Seeded WordPress sites for tests, fast: each distinct site (database kind, seed arguments) is seeded
once per test process into a template, and every test gets its own copy — a file copy on SQLite, a
table-by-table copy into the test's own database on MariaDB. Seeding itself is specified in
``tests/devstack/test_devstack_seed.py``, which always seeds for real.
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
