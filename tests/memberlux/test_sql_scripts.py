"""The shipped SQL scripts run on MariaDB and do what their comments promise."""

from __future__ import annotations

import re
import uuid
from collections.abc import Iterator
from pathlib import Path

import pymysql
import pytest
import sqlalchemy as sa

from sidecar import sqlscripts
from tests.sites import empty_site_schema
from sidecar.memberlux.schema import connect_wordpress, reflect_site
from sidecar.sqlscripts import render, split_statements

SQL_DIR = Path(__file__).resolve().parents[2] / "sql"


def run_script(conn: pymysql.connections.Connection, script: str) -> None:
    with conn.cursor() as cursor:
        sqlscripts.run_script(cursor, script)


def _connect(admin_url: str, database: str, user: str | None = None, password: str = "") -> pymysql.Connection:
    url = sa.make_url(admin_url)
    return pymysql.connect(host=url.host or "127.0.0.1", port=url.port or 3306,
                           user=user or url.username or "root",
                           password=password if user else (url.password or ""),
                           database=database, autocommit=True, charset="utf8mb4")


@pytest.fixture
def site_db(mariadb_database: str) -> Iterator[tuple[str, str]]:
    yield mariadb_database, sa.make_url(mariadb_database).database


@pytest.fixture
def readonly_account(mariadb_admin_url) -> Iterator[tuple[str, str]]:
    user, password = f"mls_ro_{uuid.uuid4().hex[:10]}", f"test-{uuid.uuid4().hex}"
    yield user, password
    conn = _connect(mariadb_admin_url, "mysql")
    try:
        with conn.cursor() as cursor:
            cursor.execute(f"DROP USER IF EXISTS '{user}'@'%'")
    finally:
        conn.close()


def test_splitter_respects_quotes_and_comments():
    script = "SET @a = 'x;y'; -- a comment; with semicolon\nSELECT `b;c`, \"d;e\";\n# hash; comment\nDO 0;"
    assert split_statements(script) == ["SET @a = 'x;y'", 'SELECT `b;c`, "d;e"', "DO 0"]


def test_scripts_have_obviously_fake_password_and_no_auto_auth_grant():
    script = (SQL_DIR / "readonly-user.sql").read_text()
    assert "CHANGE-ME" in re.search(r"^SET @ro_password = '([^']*)';", script, re.M).group(1)
    assert "auto_auth" not in "".join(s for s in split_statements(script) if "@t" in s)


@pytest.mark.mariadb
@pytest.mark.parametrize("without_modules", [(), ("certificates", "webhooks", "auto_responder", "woocommerce")])
def test_readonly_user_can_select_but_not_write(mariadb_admin_url, site_db, readonly_account, without_modules):
    url, database = site_db
    writer = sa.create_engine(url)
    md = empty_site_schema(writer, "wpt_", without_modules=without_modules)
    with writer.begin() as conn:
        conn.execute(md.tables["wpt_memberlux_term_keys"].insert().values(term_id=1, user_id=1, key="K", duration=1))
        conn.execute(md.tables["wpt_memberlux_auto_auth"].insert().values(user_id=1, secret="s3cret"))
    writer.dispose()
    user, password = readonly_account

    script = render((SQL_DIR / "readonly-user.sql").read_text(), db=database, p="wpt_", base_p="wpt_",
                    ro_user=user, ro_host="%", ro_password=password)
    admin = _connect(mariadb_admin_url, database)
    try:
        run_script(admin, script)
        run_script(admin, script)  # re-running is harmless
    finally:
        admin.close()

    ro = _connect(mariadb_admin_url, database, user, password)
    try:
        with ro.cursor() as cursor:
            cursor.execute("SELECT COUNT(*) FROM wpt_memberlux_term_keys")
            assert cursor.fetchone() == (1,)
            with pytest.raises(pymysql.err.OperationalError) as denied:
                cursor.execute("INSERT INTO wpt_memberlux_term_keys (`key`, duration) VALUES ('X', 1)")
            assert denied.value.args[0] == 1142  # command denied
            with pytest.raises(pymysql.err.OperationalError):
                cursor.execute("UPDATE wpt_memberlux_term_keys SET duration = 2")
            with pytest.raises(pymysql.err.OperationalError):
                cursor.execute("SELECT secret FROM wpt_memberlux_auto_auth")
    finally:
        ro.close()

    # The sidecar starts with nothing more than this account.
    ro_url = sa.make_url(url).set(username=user, password=password)
    engine = connect_wordpress(ro_url.render_as_string(hide_password=False))
    try:
        site = reflect_site(engine, "wpt_")
        assert all(site.features.values()) is (not without_modules)
    finally:
        engine.dispose()


def _indexes(conn: pymysql.Connection, database: str) -> dict[tuple[str, str], list[str]]:
    with conn.cursor() as cursor:
        cursor.execute(
            "SELECT TABLE_NAME, INDEX_NAME, COLUMN_NAME FROM information_schema.STATISTICS "
            "WHERE TABLE_SCHEMA = %s AND INDEX_NAME LIKE 'mlsidecar%%' ORDER BY TABLE_NAME, INDEX_NAME, SEQ_IN_INDEX",
            (database,),
        )
        found: dict[tuple[str, str], list[str]] = {}
        for table, index, column in cursor.fetchall():
            found.setdefault((table, index), []).append(column)
        return found


@pytest.mark.mariadb
@pytest.mark.parametrize("without_modules", [(), ("certificates",)])
def test_indexes_script_is_idempotent_and_skips_missing_tables(mariadb_admin_url, site_db, without_modules):
    url, database = site_db
    writer = sa.create_engine(url)
    empty_site_schema(writer, "wpt_", without_modules=without_modules)
    writer.dispose()
    script = render((SQL_DIR / "indexes.sql").read_text(), db=database, p="wpt_")
    admin = _connect(mariadb_admin_url, database)
    try:
        run_script(admin, script)
        run_script(admin, script)
        found = _indexes(admin, database)
    finally:
        admin.close()
    expected = {} if without_modules else {("wpt_memberlux_certificate", "mlsidecar_user_level"): ["user_id", "wpmlevel_id"]}
    assert found == expected


def test_every_index_is_documented():
    script = (SQL_DIR / "indexes.sql").read_text()
    blocks = script.split("-- ---- ")[2:]  # after the settings block
    assert len(blocks) == 1
    for block in blocks:
        assert "Quer" in block and "Gain:" in block and "Cost:" in block, block[:60]
