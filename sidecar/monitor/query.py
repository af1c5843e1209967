"""The sleepers of one level as a single set-based query on the WordPress tables (legacy-plugins.md §3.8).

This is the live counterpart of the read model built by :mod:`sidecar.monitor.refresh`: tests and the
benchmark use it to prove that the model equals the rule, and the service can fall back on it when a
level has not been refreshed yet. It follows :func:`sidecar.domain.sleepers.evaluate` clause by clause:

* rows R(U,T): owned rows of the level, not banned, status ``used``/``expired``, basket rows only when
  the access policy includes them, ``date_start`` present and ``date_end`` present unless unlimited;
* grouped by user (driven by the single-column ``term_id`` index, core.md §10), keeping groups without
  an unlimited row whose ``MAX(date_end)`` X lies on or before the day D and inside the window;
* users that no longer exist are dropped by the join on ``users``; blocked users are kept and flagged;
* users with an active row of an ancestor level are dropped by a ``NOT EXISTS`` driven by ``user_id``;
* manual-certificate holders are removed in Python from the store's classified set: the certificate
  table is indexed by its primary key only, so it is never joined live.

Zero dates: the reader turns ``0000-00-00`` into ``None``; here the same rows are excluded explicitly
(MySQL/MariaDB hand zero dates over as the string, SQLite keeps dates as text).
"""

from __future__ import annotations

from collections.abc import Sequence
from datetime import date
from typing import TYPE_CHECKING, NamedTuple

import sqlalchemy as sa

from sidecar.domain.access import KEY_TYPE_BASKET
from sidecar.domain.sleepers import Window
from sidecar.memberlux.reader import ancestors_from_parents
from sidecar.memberlux.schema import parse_date
from sidecar.monitor.certificates import CertificateClassifier

if TYPE_CHECKING:
    from sidecar.bootstrap import Runtime

__all__ = ["LiveSleeper", "build_live_query", "live_sleepers", "live_sleeper_ids", "manual_certificate_users",
           "manual_certificate_pairs"]

_ZERO_DATE = "0000-00-00"
_ACTIVATED = ("used", "expired")


class LiveSleeper(NamedTuple):
    user_id: int
    expired_on: date
    blocked: bool


# --------------------------------------------------------------------------------------------------
# Manual certificates (from the store, never from the PK-only WordPress table)


def manual_certificate_users(runtime: Runtime, term_id: int) -> set[int]:
    """Users holding a live manual certificate for ``term_id``, as classified in the store."""
    return CertificateClassifier(runtime).manual_users(term_id)


def manual_certificate_pairs(runtime: Runtime) -> set[tuple[int, int]]:
    """Every (user_id, level_id) with a live manual certificate."""
    return CertificateClassifier(runtime).manual_pairs()


# --------------------------------------------------------------------------------------------------
# SQL building blocks


class _Sql:
    """Dialect-aware pieces: SQLite stores dates as text, MySQL as DATE (with zero dates)."""

    def __init__(self, dialect: str) -> None:
        self.sqlite = dialect == "sqlite"

    def day(self, column: sa.ColumnElement) -> sa.ColumnElement:
        # SQLite: date() both validates the text and drops a time part, so text comparison is by day.
        return sa.func.date(column) if self.sqlite else column

    def literal(self, value: date) -> sa.ColumnElement:
        if self.sqlite:
            return sa.literal(value.isoformat(), sa.String)
        return sa.literal(value, sa.Date)

    def present(self, column: sa.ColumnElement) -> sa.ColumnElement[bool]:
        """The date is a real day: not NULL, not a zero date (nor a zero month/day or year 0)."""
        if self.sqlite:
            return sa.and_(column.is_not(None), sa.func.date(column).is_not(None),
                           sa.not_(column.like("0000%")))
        return sa.and_(column.is_not(None), column != sa.literal(_ZERO_DATE, sa.String),
                       sa.func.year(column) > 0, sa.func.month(column) > 0, sa.func.dayofmonth(column) > 0)


def day_sql(dialect: str) -> _Sql:
    """The dialect-aware date pieces, for other set-based queries on key dates."""
    return _Sql(dialect)


def _flag(column: sa.ColumnElement) -> sa.ColumnElement:
    return sa.func.coalesce(column, 0)


def _qualifying(tk: sa.Table, sql: _Sql, include_basket: bool) -> list[sa.ColumnElement[bool]]:
    """R(U,T) filters on one alias of term_keys (user and level conditions are added by the caller)."""
    unlimited = _flag(tk.c.is_unlimited) if "is_unlimited" in tk.c else sa.literal(0)
    conditions = [
        _flag(tk.c.is_banned) == 0,
        tk.c.status.in_(_ACTIVATED),
        sql.present(tk.c.date_start),
        sa.or_(unlimited != 0, sql.present(tk.c.date_end)),
    ]
    if not include_basket:
        conditions.append(sa.or_(tk.c.key_type.is_(None), tk.c.key_type != KEY_TYPE_BASKET))
    return conditions


def _unlimited(tk: sa.Table) -> sa.ColumnElement:
    if "is_unlimited" not in tk.c:
        return sa.literal(0)
    return sa.case((_flag(tk.c.is_unlimited) != 0, 1), else_=0)


def build_live_query(runtime: Runtime, term_id: int, day: date, window: Window | None,
                     ancestors: Sequence[int]) -> sa.Select:
    """The statement behind :func:`live_sleepers` (exposed for EXPLAIN in the benchmark)."""
    schema = runtime.site
    sql = _Sql(runtime.wp_engine.dialect.name)
    include_basket = runtime.access_policy.include_basket
    keys = schema.table("memberlux_term_keys")
    users = schema.table("users")

    k = keys.alias("k")
    last_end = sa.func.max(sql.day(k.c.date_end))
    upper = min(window.end, day) if window is not None and window.end else day
    having = [sa.func.sum(_unlimited(k)) == 0, last_end <= sql.literal(upper)]
    if window is not None and window.start:
        having.append(last_end >= sql.literal(window.start))
    grouped = (
        sa.select(k.c.user_id.label("user_id"), last_end.label("expired_on"))
        .where(k.c.term_id == term_id, k.c.user_id.is_not(None), *_qualifying(k, sql, include_basket))
        .group_by(k.c.user_id)
        .having(sa.and_(*having))
        .subquery("g")
    )

    stmt = (
        sa.select(grouped.c.user_id, grouped.c.expired_on)
        .select_from(grouped.join(users, users.c.ID == grouped.c.user_id))
        .order_by(grouped.c.user_id)
    )
    if ancestors:
        a = keys.alias("a")
        unlimited = _flag(a.c.is_unlimited) != 0 if "is_unlimited" in a.c else sa.false()
        active = (
            sa.select(sa.literal(1))
            .where(a.c.user_id == grouped.c.user_id, a.c.term_id.in_(list(ancestors)),
                   *_qualifying(a, sql, include_basket),
                   sql.day(a.c.date_start) <= sql.literal(day),
                   sa.or_(unlimited, sql.day(a.c.date_end) > sql.literal(day)))
        )
        stmt = stmt.where(~active.exists())
    return stmt


def _as_date(value: object) -> date:
    parsed = parse_date(value)
    if parsed is None:  # cannot happen: the HAVING clause compares it with a real day
        raise ValueError(f"unexpected expiry value {value!r}")
    return parsed


def live_sleepers(runtime: Runtime, term_id: int, day: date, window: Window | None = None, *,
                  check_ancestors: bool = True) -> list[LiveSleeper]:
    """Sleepers of ``term_id`` on UTC day ``day`` straight from WordPress, ordered by user id.

    A level that no longer exists has no sleepers (its orphan rows are skipped, as in the refresh).
    """
    parents = runtime.reader.level_parents()
    if term_id not in parents:
        return []
    ancestors = ancestors_from_parents(parents, term_id) if check_ancestors else []
    stmt = build_live_query(runtime, term_id, day, window, ancestors)
    manual = manual_certificate_users(runtime, term_id)
    with runtime.wp_engine.connect() as conn:
        rows = conn.execute(stmt).all()
        blocked = _blocked_users(runtime, conn)
    return [
        LiveSleeper(int(row.user_id), _as_date(row.expired_on), int(row.user_id) in blocked)
        for row in rows
        if int(row.user_id) not in manual
    ]


def _blocked_users(runtime: Runtime, conn: sa.Connection) -> set[int]:
    """Users whose first ``wpm_status`` row (what get_user_meta returns) is ``inactive``.

    Read once, driven by the ``meta_key`` index: a correlated per-user sub-query with ORDER BY
    umeta_id LIMIT 1 let MariaDB pick a PRIMARY-key scan of usermeta per sleeper once a composite
    index changed its estimates (seconds instead of milliseconds).
    """
    usermeta = runtime.site.table("usermeta")
    first: dict[int, str] = {}
    for user_id, value in conn.execute(
            sa.select(usermeta.c.user_id, usermeta.c.meta_value)
            .where(usermeta.c.meta_key == "wpm_status").order_by(usermeta.c.umeta_id)):
        first.setdefault(int(user_id), (value or "").strip())
    return {user_id for user_id, value in first.items() if value == "inactive"}


def live_sleeper_ids(runtime: Runtime, term_id: int, day: date,
                     window: Window | None = None) -> list[tuple[int, date]]:
    """``(user_id, expired_on)`` of the sleepers of ``term_id`` on ``day`` (see :func:`live_sleepers`)."""
    return [(s.user_id, s.expired_on) for s in live_sleepers(runtime, term_id, day, window)]
