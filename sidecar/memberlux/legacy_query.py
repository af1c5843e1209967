"""The legacy learning-monitor plugin's live sleepers query ("V3"), in its real shape.

legacy-plugins.md §3.4.1 describes the two statements the plugin (ml-learning-monitor, class
``MLM_Database``) runs for each page of its report: a count and a page of rows. A benchmark or a
side-by-side that claims "legacy" must run this shape, not a cleaner equivalent, so this module is the one
copy of it, shared by ``mlsidecar legacy compare`` and the benchmarks (``bench/_common.py``).

What is kept exactly: the derived table ``lk`` (``MAX(date_end)`` over the level's non-banned rows of any
status and key type, grouped by user), the INNER JOIN of users on it, the certificate anti-join as a LEFT
JOIN on user and level (automatic certificates included), ``user_status = 0``, ``BETWEEN`` on the two
window days (both inclusive), the correlated ``NOT EXISTS`` that can only ever match an unlimited row, and
for the rows the INNER JOIN back to the row(s) ending on the maximum (a tie repeats the user), the two
LEFT JOINs of first and last name and ``ORDER BY lk.last_date_end`` without a tie-breaker.

What differs from the plugin, on purpose:

* table names: the plugin hard-codes ``wp_`` (it fails on any other prefix, §3.7.2); here each name is
  given (the site's reflected names, or a prefix) and validated as a plain identifier before it is put
  into the text;
* values: bound parameters instead of ``$wpdb->prepare``'s literals. PyMySQL substitutes them on the
  client, so the server still receives literals of the same types: the level as an integer, the days as
  quoted ``'YYYY-MM-DD'`` strings (what the plugin's date inputs send);
* paging: ``paged=False`` drops ``LIMIT 20 OFFSET …`` so that one execution returns every page at once.
  Paging through the plugin's unstable order could repeat or skip users (§3.7.6); the whole result is what
  every page together is meant to show.
"""

from __future__ import annotations

import contextlib
import re
from collections.abc import Iterator
from dataclasses import dataclass
from datetime import date
from typing import Any

import sqlalchemy as sa

from sidecar.memberlux.schema import SiteSchema

__all__ = [
    "PER_PAGE",
    "HARD_CODED",
    "LegacyTables",
    "LegacyQueryFailed",
    "LegacyQueryTimeout",
    "LegacyRow",
    "legacy_v3_statements",
    "legacy_v3_count",
    "legacy_v3_rows",
    "statement_timeout",
    "supports_statement_timeout",
]

#: The plugin's page size (``PER_PAGE``).
PER_PAGE = 20

_IDENTIFIER = re.compile(r"[A-Za-z0-9_]{1,64}")
#: Server errors of a statement stopped by its time limit: MariaDB (max_statement_time), MySQL
#: (max_execution_time).
_TIMEOUT_ERRORS = frozenset({1969, 3024})


class LegacyQueryFailed(RuntimeError):
    """The database refused or failed the legacy statement (a missing table, a lost connection...)."""


class LegacyQueryTimeout(LegacyQueryFailed):
    """The legacy statement ran longer than the time limit and the server stopped it."""


def _checked(name: str) -> str:
    if not _IDENTIFIER.fullmatch(name):
        raise ValueError(f"not a plain table name: {name!r} (letters, digits and underscores only)")
    return name


@dataclass(frozen=True)
class LegacyTables:
    """The four tables the query reads, by their full names (validated: put into the statement's text)."""

    users: str
    usermeta: str
    term_keys: str
    certificate: str

    def __post_init__(self) -> None:
        for name in (self.users, self.usermeta, self.term_keys, self.certificate):
            _checked(name)

    @classmethod
    def from_prefix(cls, prefix: str = "wp_", users_prefix: str | None = None) -> LegacyTables:
        """The names under ``prefix`` (``users_prefix`` for users/usermeta on a multisite network)."""
        base = prefix if users_prefix is None else users_prefix
        return cls(users=base + "users", usermeta=base + "usermeta", term_keys=prefix + "memberlux_term_keys",
                   certificate=prefix + "memberlux_certificate")

    @classmethod
    def of_site(cls, site: SiteSchema) -> LegacyTables:
        """The site's own names: where the plugin says ``wp_users``, the site's users table, and so on."""
        return cls(users=site.full_name("users"), usermeta=site.full_name("usermeta"),
                   term_keys=site.full_name("memberlux_term_keys"),
                   certificate=site.full_name("memberlux_certificate"))

    @property
    def hard_coded(self) -> bool:
        """Whether these are the names the plugin hard-codes (``wp_…``): elsewhere the plugin itself fails."""
        return self == HARD_CODED


#: The names the plugin hard-codes.
HARD_CODED = LegacyTables.from_prefix("wp_")


# The lk derived table, the certificate anti-join by LEFT JOIN, and the WHERE both statements share.
_FROM = """
    FROM {users} u
    INNER JOIN (SELECT user_id, MAX(date_end) AS last_date_end FROM {term_keys}
                WHERE term_id = :t AND is_banned = 0 GROUP BY user_id) lk ON lk.user_id = u.ID
    LEFT JOIN {certificate} c ON c.user_id = u.ID AND c.wpmlevel_id = :t
"""
_ROWS_JOINS = """
    INNER JOIN {term_keys} k_last ON k_last.user_id = u.ID AND k_last.term_id = :t
                                  AND k_last.is_banned = 0 AND k_last.date_end = lk.last_date_end
    LEFT JOIN {usermeta} um_fn ON um_fn.user_id = u.ID AND um_fn.meta_key = 'first_name'
    LEFT JOIN {usermeta} um_ln ON um_ln.user_id = u.ID AND um_ln.meta_key = 'last_name'
"""
_WHERE = """
    WHERE u.user_status = 0 AND c.certificate_id IS NULL AND lk.last_date_end BETWEEN :a AND :b
      AND NOT EXISTS (SELECT 1 FROM {term_keys} k2 WHERE k2.user_id = u.ID AND k2.term_id = :t
                      AND k2.is_banned = 0 AND (k2.is_unlimited = 1 OR k2.date_end > lk.last_date_end))
"""
_COLUMNS = ("SELECT u.ID, u.user_email, um_fn.meta_value AS first_name, um_ln.meta_value AS last_name,"
            " k_last.date_start AS last_date_start, lk.last_date_end, 0 AS reminders_sent")


def legacy_v3_statements(tables: LegacyTables | None = None, *,
                         paged: bool = True) -> tuple[str, str]:
    """The count and rows statements as text; parameters ``:t`` (level), ``:a``/``:b`` (days) and, when
    ``paged``, ``:o`` (offset of the page: ``(page - 1) * 20``)."""
    tables = tables or HARD_CODED
    names = {"users": tables.users, "usermeta": tables.usermeta, "term_keys": tables.term_keys,
             "certificate": tables.certificate}
    joins, where = _FROM.format(**names), _WHERE.format(**names)
    count = "SELECT COUNT(*)" + joins + where
    rows = _COLUMNS + joins + _ROWS_JOINS.format(**names) + where + "    ORDER BY lk.last_date_end ASC"
    if paged:
        rows += f" LIMIT {PER_PAGE} OFFSET :o"
    return count, rows


def _params(term_id: int, date_from: date, date_to: date) -> dict[str, Any]:
    # As $wpdb->prepare: %d for the level, %s for the days the form sends (YYYY-MM-DD).
    return {"t": int(term_id), "a": date_from.isoformat(), "b": date_to.isoformat()}


@dataclass(frozen=True)
class LegacyRow:
    """One row of the rows statement, as the database returned it (dates may be text, or a zero date)."""

    user_id: int
    email: str
    first_name: str
    last_name: str
    last_date_start: Any
    last_date_end: Any


def _execute(conn: sa.Connection, statement: str, params: dict[str, Any]) -> sa.CursorResult[Any]:
    try:
        return conn.execute(sa.text(statement), params)
    except sa.exc.DBAPIError as exc:
        code = exc.orig.args[0] if exc.orig is not None and exc.orig.args else None
        if code in _TIMEOUT_ERRORS:
            raise LegacyQueryTimeout(str(exc.orig)) from exc
        raise LegacyQueryFailed(str(exc.orig if exc.orig is not None else exc).splitlines()[0]) from exc


def legacy_v3_count(conn: sa.Connection, term_id: int, date_from: date, date_to: date,
                    tables: LegacyTables | None = None) -> int:
    """The plugin's «Найдено: N»: the count statement."""
    count, _rows = legacy_v3_statements(tables)
    return int(_execute(conn, count, _params(term_id, date_from, date_to)).scalar() or 0)


def legacy_v3_rows(conn: sa.Connection, term_id: int, date_from: date, date_to: date,
                   tables: LegacyTables | None = None, *, page: int | None = None) -> list[LegacyRow]:
    """The rows statement: page ``page`` (20 rows, as the plugin loads it), or with ``None`` every page in
    one execution."""
    _count, rows = legacy_v3_statements(tables, paged=page is not None)
    params = _params(term_id, date_from, date_to)
    if page is not None:
        if page < 1:
            raise ValueError("pages start at 1")
        params["o"] = (page - 1) * PER_PAGE
    return [
        LegacyRow(int(r[0]), "" if r[1] is None else str(r[1]), "" if r[2] is None else str(r[2]),
                  "" if r[3] is None else str(r[3]), r[4], r[5])
        for r in _execute(conn, rows, params)
    ]


# --------------------------------------------------------------------------------------------------
# A time limit per statement


def supports_statement_timeout(conn: sa.Connection) -> bool:
    """MariaDB (``max_statement_time``) and MySQL (``max_execution_time``) can stop a long statement."""
    return conn.dialect.name == "mysql"


@contextlib.contextmanager
def statement_timeout(conn: sa.Connection, seconds: float | None) -> Iterator[bool]:
    """Statements on ``conn`` inside the block are stopped by the server after ``seconds``.

    Yields whether a limit is in force: ``False`` when ``seconds`` is ``None`` or 0, or on SQLite, which has
    no such setting. The session's previous value is put back afterwards: the connection returns to a pool.
    A session variable, not a write: it works in the read-only session and for a SELECT-only account.
    """
    if not seconds or not supports_statement_timeout(conn):
        yield False
        return
    mariadb = bool(getattr(conn.dialect, "is_mariadb", False))
    variable, value = (("max_statement_time", f"{float(seconds):.3f}") if mariadb
                       else ("max_execution_time", str(max(1, round(seconds * 1000)))))
    previous = conn.exec_driver_sql(f"SELECT @@SESSION.{variable}").scalar()
    conn.exec_driver_sql(f"SET SESSION {variable} = {value}")
    try:
        yield True
    finally:
        conn.exec_driver_sql(f"SET SESSION {variable} = {float(previous or 0) if mariadb else int(previous or 0)}")
