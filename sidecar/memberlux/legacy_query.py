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

* built with SQLAlchemy Core, like every statement of the service, so no value reaches the text: the
  same tables, aliases, joins and conditions, with identifiers quoted by the dialect where it needs to;
* table names: the plugin hard-codes ``wp_`` (it fails on any other prefix, §3.7.2); here each name is
  given (the site's reflected names, or a prefix) and must be a plain identifier;
* values: bound parameters instead of ``$wpdb->prepare``'s literals. PyMySQL substitutes them on the
  client, so the server still receives literals of the same types: the level as an integer, the days as
  quoted ``'YYYY-MM-DD'`` strings (what the plugin's date inputs send);
* paging: ``page=None`` drops ``LIMIT 20 OFFSET …`` so that one execution returns every page at once.
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
from sqlalchemy.sql.selectable import NamedFromClause

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


def _table(name: str, *columns: str, alias: str) -> NamedFromClause:
    return sa.table(name, *(sa.column(c) for c in columns)).alias(alias)


def legacy_v3_statements(tables: LegacyTables | None = None, *,
                         page: int | None = 1) -> tuple[sa.Select[Any], sa.Select[Any]]:
    """The count and rows statements; parameters ``t`` (level), ``a`` and ``b`` (the days).

    ``page``: the rows of that page (``LIMIT 20 OFFSET (page - 1) * 20``, as the plugin loads them), or with
    ``None`` every page in one execution.
    """
    tables = tables or HARD_CODED
    if page is not None and page < 1:
        raise ValueError("pages start at 1")
    t, a, b = sa.bindparam("t", type_=sa.Integer), sa.bindparam("a", type_=sa.String), sa.bindparam("b", type_=sa.String)
    keys = ("user_id", "term_id", "is_banned", "is_unlimited", "date_start", "date_end")
    u = _table(tables.users, "ID", "user_email", "user_status", alias="u")
    tk = sa.table(tables.term_keys, *(sa.column(c) for c in keys))
    k2, k_last = tk.alias("k2"), tk.alias("k_last")
    c = _table(tables.certificate, "certificate_id", "user_id", "wpmlevel_id", alias="c")
    um_fn = _table(tables.usermeta, "user_id", "meta_key", "meta_value", alias="um_fn")
    um_ln = _table(tables.usermeta, "user_id", "meta_key", "meta_value", alias="um_ln")

    # lk: the latest end over the level's non-banned rows, whatever their status or type, per user.
    lk = (sa.select(tk.c.user_id, sa.func.max(tk.c.date_end).label("last_date_end"))
          .where(tk.c.term_id == t, tk.c.is_banned == 0).group_by(tk.c.user_id).subquery("lk"))
    joined = (u.join(lk, lk.c.user_id == u.c.ID)
              .outerjoin(c, sa.and_(c.c.user_id == u.c.ID, c.c.wpmlevel_id == t)))
    # The "later end" branch can never be true: lk is the maximum. Only unlimited rows exclude anyone.
    later = sa.exists(sa.select(sa.literal_column("1")).select_from(k2).where(
        k2.c.user_id == u.c.ID, k2.c.term_id == t, k2.c.is_banned == 0,
        sa.or_(k2.c.is_unlimited == 1, k2.c.date_end > lk.c.last_date_end)))
    where = sa.and_(u.c.user_status == 0, c.c.certificate_id.is_(None), lk.c.last_date_end.between(a, b), ~later)

    count = sa.select(sa.func.count()).select_from(joined).where(where)
    rows = (
        sa.select(u.c.ID, u.c.user_email, um_fn.c.meta_value.label("first_name"), um_ln.c.meta_value.label("last_name"),
                  k_last.c.date_start.label("last_date_start"), lk.c.last_date_end,
                  sa.literal_column("0").label("reminders_sent"))
        .select_from(
            joined.join(k_last, sa.and_(k_last.c.user_id == u.c.ID, k_last.c.term_id == t, k_last.c.is_banned == 0,
                                        k_last.c.date_end == lk.c.last_date_end))
            .outerjoin(um_fn, sa.and_(um_fn.c.user_id == u.c.ID, um_fn.c.meta_key == "first_name"))
            .outerjoin(um_ln, sa.and_(um_ln.c.user_id == u.c.ID, um_ln.c.meta_key == "last_name")))
        .where(where)
        .order_by(lk.c.last_date_end.asc())          # no tie-breaker, as the plugin
    )
    if page is not None:
        rows = rows.limit(PER_PAGE).offset((page - 1) * PER_PAGE)
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


def _execute(conn: sa.Connection, statement: sa.Select[Any], params: dict[str, Any]) -> sa.CursorResult[Any]:
    try:
        return conn.execute(statement, params)
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
    _count, rows = legacy_v3_statements(tables, page=page)
    params = _params(term_id, date_from, date_to)
    return [
        LegacyRow(int(r[0]), "" if r[1] is None else str(r[1]), "" if r[2] is None else str(r[2]),
                  "" if r[3] is None else str(r[3]), r[4], r[5])
        for r in _execute(conn, rows, params)
    ]


# --------------------------------------------------------------------------------------------------
# A time limit per statement


# MariaDB's limit in seconds (fractions allowed), MySQL's in milliseconds (SELECT statements only). The
# value is a bound parameter: PyMySQL puts it into the statement as a number.
_MARIADB_READ = sa.text("SELECT @@SESSION.max_statement_time")
_MARIADB_WRITE = sa.text("SET SESSION max_statement_time = :value")
_MYSQL_READ = sa.text("SELECT @@SESSION.max_execution_time")
_MYSQL_WRITE = sa.text("SET SESSION max_execution_time = :value")


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
    if getattr(conn.dialect, "is_mariadb", False):
        read, write, value = _MARIADB_READ, _MARIADB_WRITE, round(float(seconds), 3)
    else:
        read, write, value = _MYSQL_READ, _MYSQL_WRITE, max(1, round(float(seconds) * 1000))
    previous = conn.execute(read).scalar()
    conn.execute(write, {"value": value})
    try:
        yield True
    finally:
        conn.execute(write, {"value": previous if previous is not None else 0})
