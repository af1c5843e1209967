"""The legacy learning-monitor plugin's live query (V3) as ``sidecar.memberlux.legacy_query`` runs it: the
shape of legacy-plugins.md §3.4.1, table names that can only be names, the plugin's paging, and the
statement time limit of MariaDB and MySQL."""

from __future__ import annotations

from datetime import date

import pytest
import sqlalchemy as sa

from sidecar.memberlux.legacy_query import (
    HARD_CODED,
    PER_PAGE,
    LegacyQueryFailed,
    LegacyQueryTimeout,
    LegacyTables,
    legacy_v3_count,
    legacy_v3_rows,
    legacy_v3_statements,
    statement_timeout,
)
from sidecar.memberlux.schema import SiteSchema
from tests.sites import empty_site_schema

LEVEL = 5


def _sql(statement, dialect=None) -> str:
    """The statement as the server receives it (PyMySQL puts the values in as literals), on one line."""
    from sqlalchemy.dialects import mysql

    bound = statement.params(t=LEVEL, a="2026-11-01", b="2026-11-30")
    text = str(bound.compile(dialect=dialect or mysql.dialect(), compile_kwargs={"literal_binds": True}))
    return " ".join(text.split())


def test_the_statements_keep_the_shape_of_the_live_plugin():
    count, rows = (_sql(s) for s in legacy_v3_statements(page=2))
    shared = [
        "FROM wp_users AS u INNER JOIN (SELECT wp_memberlux_term_keys.user_id AS user_id, "
        "max(wp_memberlux_term_keys.date_end) AS last_date_end FROM wp_memberlux_term_keys "
        "WHERE wp_memberlux_term_keys.term_id = 5 AND wp_memberlux_term_keys.is_banned = 0 "
        "GROUP BY wp_memberlux_term_keys.user_id) AS lk ON lk.user_id = u.`ID`",
        "LEFT OUTER JOIN wp_memberlux_certificate AS c ON c.user_id = u.`ID` AND c.wpmlevel_id = 5",
        "WHERE u.user_status = 0 AND c.certificate_id IS NULL AND lk.last_date_end BETWEEN '2026-11-01' AND '2026-11-30'",
        "AND NOT (EXISTS (SELECT 1 FROM wp_memberlux_term_keys AS k2 WHERE k2.user_id = u.`ID` AND k2.term_id = 5 "
        "AND k2.is_banned = 0 AND (k2.is_unlimited = 1 OR k2.date_end > lk.last_date_end)))",
    ]
    assert count.startswith("SELECT count(*) AS count_1 FROM wp_users AS u")
    for piece in shared:
        assert piece in count and piece in rows
    assert rows.startswith("SELECT u.`ID`, u.user_email, um_fn.meta_value AS first_name, um_ln.meta_value AS last_name, "
                           "k_last.date_start AS last_date_start, lk.last_date_end, 0 AS reminders_sent")
    assert ("INNER JOIN wp_memberlux_term_keys AS k_last ON k_last.user_id = u.`ID` AND k_last.term_id = 5 "
            "AND k_last.is_banned = 0 AND k_last.date_end = lk.last_date_end") in rows
    assert "LEFT OUTER JOIN wp_usermeta AS um_fn ON um_fn.user_id = u.`ID` AND um_fn.meta_key = 'first_name'" in rows
    assert "LEFT OUTER JOIN wp_usermeta AS um_ln ON um_ln.user_id = u.`ID` AND um_ln.meta_key = 'last_name'" in rows
    assert rows.endswith("ORDER BY lk.last_date_end ASC LIMIT 20, 20")      # page 2; no tie-breaker
    assert _sql(legacy_v3_statements(page=None)[1]).endswith("ORDER BY lk.last_date_end ASC")
    with pytest.raises(ValueError, match="pages start at 1"):
        legacy_v3_statements(page=0)


def test_table_names_come_from_the_site_and_can_only_be_names():
    multisite = SiteSchema(prefix="wp_2_", base_prefix="wp_", metadata=sa.MetaData(), tables={}, features={})
    assert LegacyTables.of_site(multisite) == LegacyTables(
        users="wp_users", usermeta="wp_usermeta", term_keys="wp_2_memberlux_term_keys",
        certificate="wp_2_memberlux_certificate")
    assert LegacyTables.from_prefix("wp_") == HARD_CODED and HARD_CODED.hard_coded
    assert not LegacyTables.from_prefix("school_").hard_coded
    assert "FROM school_users AS u" in _sql(legacy_v3_statements(LegacyTables.from_prefix("school_"))[0])
    for bad in ("wp_users u; DROP TABLE wp_users", "", "wp-users", "x" * 65):
        with pytest.raises(ValueError, match="not a plain table name"):
            LegacyTables(users=bad, usermeta="wp_usermeta", term_keys="wp_memberlux_term_keys",
                         certificate="wp_memberlux_certificate")


@pytest.fixture
def site(tmp_path):
    """25 learners whose access to LEVEL ended between 1 and 25 November; learner 1 has two keys ending
    that day (a tie)."""
    engine = sa.create_engine(f"sqlite:///{tmp_path / 'wordpress.sqlite'}")
    md = empty_site_schema(engine)
    users = [{"ID": u, "user_login": f"u{u}", "user_email": f"u{u}@example.org"} for u in range(1, 26)]
    keys = [{"id": u, "term_id": LEVEL, "user_id": u, "key": f"k{u}", "status": "used", "duration": 1,
             "units": "months", "date_start": f"2026-10-{u:02d}", "date_end": f"2026-11-{u:02d}"} for u in range(1, 26)]
    keys.append({"id": 26, "term_id": LEVEL, "user_id": 1, "key": "k26", "status": "used", "duration": 1,
                 "units": "months", "date_start": "2026-10-05", "date_end": "2026-11-01"})
    with engine.begin() as conn:
        conn.execute(md.tables["wp_users"].insert(), users)
        conn.execute(md.tables["wp_memberlux_term_keys"].insert(), keys)
    yield engine
    engine.dispose()


def test_count_and_pages_as_the_plugin_loads_them(site):
    a, b = date(2026, 11, 1), date(2026, 11, 30)
    with site.connect() as conn:
        assert legacy_v3_count(conn, LEVEL, a, b) == 25                       # per learner
        first, second = legacy_v3_rows(conn, LEVEL, a, b, page=1), legacy_v3_rows(conn, LEVEL, a, b, page=2)
        every = legacy_v3_rows(conn, LEVEL, a, b)
        assert (len(first), len(second), len(every)) == (PER_PAGE, 26 - PER_PAGE, 26)     # the tie repeats learner 1
        assert [r.user_id for r in every].count(1) == 2
        assert every[0].email == "u1@example.org" and str(every[-1].last_date_end).startswith("2026-11-25")
        # Both days of the window are included.
        assert legacy_v3_count(conn, LEVEL, date(2026, 11, 2), date(2026, 11, 3)) == 2
        with pytest.raises(ValueError, match="pages start at 1"):
            legacy_v3_rows(conn, LEVEL, a, b, page=0)


def test_a_statement_the_database_refuses_is_a_legacy_query_failure(tmp_path):
    engine = sa.create_engine(f"sqlite:///{tmp_path / 'empty.sqlite'}")
    try:
        with engine.connect() as conn, pytest.raises(LegacyQueryFailed, match="no such table: wp_users"):
            legacy_v3_count(conn, LEVEL, date(2026, 1, 1), date(2026, 2, 1))
    finally:
        engine.dispose()


class _Dialect:
    def __init__(self, name: str, mariadb: bool) -> None:
        self.name, self.is_mariadb = name, mariadb


class _Connection:
    """Records what ``statement_timeout`` sends; answers the session variable's current value."""

    def __init__(self, name: str = "mysql", *, mariadb: bool, previous: object = 0, fail: Exception | None = None):
        self.dialect, self.previous, self.fail, self.sent = _Dialect(name, mariadb), previous, fail, []

    def execute(self, statement, params=None):
        if self.fail is not None:
            raise self.fail
        self.sent.append((str(statement), params))
        return type("Result", (), {"scalar": lambda _self: self.previous})()


def test_mariadb_limits_each_statement_with_max_statement_time_and_restores_it():
    conn = _Connection(mariadb=True, previous=2.5)
    with statement_timeout(conn, 45) as limited:
        assert limited
        assert conn.sent == [("SELECT @@SESSION.max_statement_time", None),
                             ("SET SESSION max_statement_time = :value", {"value": 45.0})]
    assert conn.sent[-1] == ("SET SESSION max_statement_time = :value", {"value": 2.5})


def test_mysql_limits_each_statement_with_max_execution_time_in_milliseconds():
    conn = _Connection(mariadb=False)
    with statement_timeout(conn, 0.25) as limited:
        assert limited
    assert conn.sent == [("SELECT @@SESSION.max_execution_time", None),
                         ("SET SESSION max_execution_time = :value", {"value": 250}),
                         ("SET SESSION max_execution_time = :value", {"value": 0})]


def test_no_limit_asked_or_none_available():
    for conn, seconds in ((_Connection(mariadb=True), None), (_Connection(mariadb=True), 0),
                          (_Connection("sqlite", mariadb=False), 30)):
        with statement_timeout(conn, seconds) as limited:
            assert not limited
        assert conn.sent == []


@pytest.mark.parametrize("code", [1969, 3024])
def test_a_statement_stopped_by_the_limit_is_a_timeout(code):
    stopped = sa.exc.OperationalError("SELECT COUNT(*) …", {}, Exception(code, "Query execution was interrupted"))
    with pytest.raises(LegacyQueryTimeout, match="interrupted"):
        legacy_v3_count(_Connection(mariadb=True, fail=stopped), LEVEL, date(2026, 1, 1), date(2026, 2, 1))
