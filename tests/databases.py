"""Throw-away databases on the test servers (MariaDB and PostgreSQL), each with a unique name and dropped
on leaving."""

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


def without_opportunistic_tls(url: str) -> str:
    """PyMySQL tries TLS on every connection unless told otherwise, and builds a fresh SSL context with the
    system's CA store for each one (about 50 ms of CPU; the suite opens hundreds). The test server normally
    runs on loopback, where TLS adds nothing; a URL that names any ``ssl`` option is kept as it is."""
    parsed = sa.make_url(url)
    if parsed.drivername != "mysql+pymysql" or any(key.startswith("ssl") for key in parsed.query):
        return url
    return parsed.update_query_dict({"ssl_disabled": "true"}).render_as_string(hide_password=False)


@contextlib.contextmanager
def fresh_database(admin_url: str) -> Iterator[str]:
    """A fresh, empty database (URL) on the server of ``admin_url``, dropped on leaving."""
    name = f"mls_test_{uuid.uuid4().hex[:12]}"
    mysql = sa.make_url(admin_url).get_backend_name() == "mysql"
    create, drop = ((f"CREATE DATABASE `{name}` CHARACTER SET utf8mb4 COLLATE utf8mb4_unicode_520_ci",
                     f"DROP DATABASE IF EXISTS `{name}`") if mysql else
                    (f'CREATE DATABASE "{name}"', f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)'))
    admin = sa.create_engine(admin_url, isolation_level="AUTOCOMMIT")
    with admin.connect() as conn:
        conn.exec_driver_sql(create)
    try:
        yield with_database(admin_url, name)
    finally:
        with admin.connect() as conn:
            conn.exec_driver_sql(drop)
        admin.dispose()
