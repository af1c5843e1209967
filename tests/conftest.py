"""Shared fixtures: database servers, throwaway databases, and the "must MariaDB run?" policy.

MariaDB-backed tests are marked ``mariadb``. In CI (``CI=true``) or with ``MLS_REQUIRE_MARIADB=1``
an unreachable server fails those tests; elsewhere they are skipped with the reason shown in the
summary (pytest runs with ``-ra``).
"""

from __future__ import annotations

import os
import uuid
from collections.abc import Iterator

import pytest
import sqlalchemy as sa

MARIADB_ADMIN_URL = os.environ.get("MLS_TEST_MARIADB_URL", "mysql+pymysql://root@127.0.0.1:3306/")
POSTGRES_ADMIN_URL = os.environ.get("MLS_TEST_POSTGRES_URL", "postgresql+psycopg://postgres@127.0.0.1:5432/postgres")


def mariadb_required() -> bool:
    return os.environ.get("CI", "").lower() in {"1", "true", "yes"} or os.environ.get("MLS_REQUIRE_MARIADB") == "1"


def _server_unreachable(url: str) -> str | None:
    try:
        engine = sa.create_engine(url, connect_args={"connect_timeout": 3} if url.startswith("mysql") else {})
        with engine.connect() as conn:
            conn.exec_driver_sql("SELECT 1")
        engine.dispose()
        return None
    except Exception as exc:  # noqa: BLE001 - any failure means "not reachable" here
        return f"{type(exc).__name__}: {str(exc).splitlines()[0][:200]}"


@pytest.fixture(scope="session")
def mariadb_admin_url() -> str:
    problem = _server_unreachable(MARIADB_ADMIN_URL)
    if problem:
        message = f"MariaDB at {MARIADB_ADMIN_URL} unreachable ({problem})"
        if mariadb_required():
            pytest.fail(message + "; MariaDB tests are mandatory in CI", pytrace=False)
        pytest.skip(message + "; set MLS_TEST_MARIADB_URL or start MariaDB to run these tests")
    return MARIADB_ADMIN_URL


def _with_database(admin_url: str, name: str) -> str:
    url = sa.make_url(admin_url).set(database=name)
    if url.drivername.startswith("mysql"):
        url = url.update_query_dict({"charset": "utf8mb4"})
    return url.render_as_string(hide_password=False)


@pytest.fixture
def mariadb_database(mariadb_admin_url: str) -> Iterator[str]:
    """A fresh, empty MariaDB database (URL), dropped after the test."""
    name = f"mls_test_{uuid.uuid4().hex[:12]}"
    admin = sa.create_engine(mariadb_admin_url)
    with admin.begin() as conn:
        conn.exec_driver_sql(f"CREATE DATABASE `{name}` CHARACTER SET utf8mb4 COLLATE utf8mb4_unicode_520_ci")
    try:
        yield _with_database(mariadb_admin_url, name)
    finally:
        with admin.begin() as conn:
            conn.exec_driver_sql(f"DROP DATABASE IF EXISTS `{name}`")
        admin.dispose()


@pytest.fixture(scope="session")
def postgres_admin_url() -> str:
    problem = _server_unreachable(POSTGRES_ADMIN_URL)
    if problem:
        pytest.skip(f"PostgreSQL at {POSTGRES_ADMIN_URL} unreachable ({problem})")
    return POSTGRES_ADMIN_URL


@pytest.fixture
def postgres_database(postgres_admin_url: str) -> Iterator[str]:
    name = f"mls_test_{uuid.uuid4().hex[:12]}"
    admin = sa.create_engine(postgres_admin_url, isolation_level="AUTOCOMMIT")
    with admin.connect() as conn:
        conn.exec_driver_sql(f'CREATE DATABASE "{name}"')
    try:
        yield _with_database(postgres_admin_url, name)
    finally:
        with admin.connect() as conn:
            conn.exec_driver_sql(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)')
        admin.dispose()


@pytest.fixture(params=["sqlite", pytest.param("mariadb", marks=pytest.mark.mariadb)])
def site_db_url(request: pytest.FixtureRequest, tmp_path) -> str:
    """An empty database for a WordPress site, on SQLite and on MariaDB."""
    if request.param == "sqlite":
        return f"sqlite:///{tmp_path / 'wordpress.sqlite'}"
    return request.getfixturevalue("mariadb_database")
