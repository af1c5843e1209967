"""Throw-away databases on the test servers."""

from __future__ import annotations

import contextlib
import uuid
from collections.abc import Iterator

import sqlalchemy as sa


def with_database(admin_url: str, name: str) -> str:
    url = sa.make_url(admin_url).set(database=name)
    if url.drivername.startswith("mysql"):
        url = url.update_query_dict({"charset": "utf8mb4"})
    return url.render_as_string(hide_password=False)


@contextlib.contextmanager
def fresh_mariadb_database(admin_url: str) -> Iterator[str]:
    """A fresh, empty MariaDB database (URL), dropped on leaving."""
    name = f"mls_test_{uuid.uuid4().hex[:12]}"
    admin = sa.create_engine(admin_url)
    with admin.begin() as conn:
        conn.exec_driver_sql(f"CREATE DATABASE `{name}` CHARACTER SET utf8mb4 COLLATE utf8mb4_unicode_520_ci")
    try:
        yield with_database(admin_url, name)
    finally:
        with admin.begin() as conn:
            conn.exec_driver_sql(f"DROP DATABASE IF EXISTS `{name}`")
        admin.dispose()
