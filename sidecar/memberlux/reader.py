"""The read queries against a MemberLux site.

SELECT only, built with SQLAlchemy Core on the reflected tables of :class:`SiteSchema`. Values
come back normalised (zero dates -> ``None``, NULL flags -> ``False``...) as plain dataclasses, so
the domain never sees a driver quirk. Two things are never selected: ``memberlux_auto_auth`` (not
even reflected) and ``users.user_pass`` outside :meth:`MemberLuxReader.password_hash_for_login`.

Orphans (key or certificate rows whose user or level was deleted) are normal data: look-ups for
the missing user or level simply return nothing.
"""

from __future__ import annotations

from collections.abc import Iterable, Iterator, Mapping
from dataclasses import dataclass, field
from datetime import date
from typing import Any

import sqlalchemy as sa

from sidecar.domain.access import (
    KEY_STATUS_EXPIRED,
    KEY_STATUS_NEW,
    KEY_STATUS_USED,
    KEY_TYPE_BASKET,
    KEY_TYPE_TERM,
    UNITS_DAYS,
    UNITS_MONTHS,
    KeyRow,
)
from sidecar.memberlux.schema import SiteSchema, cannot_store, parse_date, parse_datetime
from sidecar.memberlux.wpdata import SiteTimezone, WpDataError, capabilities, maybe_unserialize, site_timezone

__all__ = [
    "LEVEL_TAXONOMY",
    "Level",
    "WpUser",
    "Post",
    "CertificateRow",
    "PasswordRecord",
    "OrphanCounts",
    "ancestors_from_parents",
    "MemberLuxReader",
]

LEVEL_TAXONOMY = "wpm-levels"
_STATUSES = frozenset({KEY_STATUS_NEW, KEY_STATUS_USED, KEY_STATUS_EXPIRED})
_KEY_TYPES = frozenset({KEY_TYPE_TERM, KEY_TYPE_BASKET})
_IN_CHUNK = 500  # bound IN (...) lists; MySQL handles more, but plans and packets stay small


@dataclass(frozen=True, slots=True)
class Level:
    """An access level: a term of the ``wpm-levels`` taxonomy. ``parent`` 0 = top level."""

    term_id: int
    name: str
    slug: str
    parent: int


@dataclass(frozen=True, slots=True)
class WpUser:
    id: int
    login: str
    email: str
    display_name: str
    first_name: str
    last_name: str
    blocked: bool  # usermeta wpm_status = 'inactive': no access whatever the keys say


@dataclass(frozen=True, slots=True)
class Post:
    id: int
    title: str
    type: str
    status: str


@dataclass(frozen=True, slots=True)
class CertificateRow:
    """A row of ``memberlux_certificate`` (certificates module). ``custom_fields`` is decoded."""

    certificate_id: int
    user_id: int
    level_id: int
    certificate_name: str
    template_id: int | None
    graduate_first_name: str
    graduate_last_name: str
    graduate_surname: str  # patronymic
    date_issue: date | None
    create_date: date | None
    series: str
    number: str
    responsible_person: int | None
    course_name: str
    custom_fields: dict[str, Any] = field(default_factory=dict)


@dataclass(frozen=True)
class PasswordRecord:
    """What an admin login check needs; the hash stays out of reprs and logs."""

    user_id: int
    login: str
    password_hash: str = field(repr=False)


@dataclass(frozen=True, slots=True)
class OrphanCounts:
    """Activated key rows pointing at a deleted user or a deleted level."""

    missing_user: int
    missing_level: int


def ancestors_from_parents(parents: Mapping[int, int], term_id: int) -> list[int]:
    """Ancestors of ``term_id``, nearest first, from a ``{term_id: parent}`` map.

    Stops at a top level (parent 0), at a parent that is not a level any more, and at a cycle
    (WordPress does not prevent one when parents are edited directly in the database).
    """
    result: list[int] = []
    seen = {term_id}
    current = parents.get(term_id, 0)
    while current and current in parents and current not in seen:
        result.append(current)
        seen.add(current)
        current = parents[current]
    return result


def _chunks(values: Iterable[int], size: int = _IN_CHUNK) -> Iterator[list[int]]:
    batch: list[int] = []
    for value in values:
        batch.append(value)
        if len(batch) == size:
            yield batch
            batch = []
    if batch:
        yield batch


def _text(value: Any) -> str:
    return "" if value is None else str(value)


def _same_text(stored: str, wanted: str) -> bool:
    """Re-checked in Python: some collations (utf8mb4_unicode_ci) treat all emoji as equal."""
    return stored.strip().casefold() == wanted.casefold()


def _key_row(row: sa.Row[Any]) -> KeyRow:
    return key_row_from_values(
        int(row.id), None if row.user_id is None else int(row.user_id),
        None if row.term_id is None else int(row.term_id), row.status, row.key_type, row.is_banned,
        row.is_unlimited, row.duration, row.units, row.date_start, row.date_end, row.date_registered,
        row.activation_datetime)


def _flag_value(value: Any) -> bool:
    # Drivers hand flags over as ints; packed rows (sidecar.memberlux.packed) as their decimal text.
    if isinstance(value, str):
        return bool(int(value)) if value.strip() else False
    return bool(value)


def key_row_from_values(key_id: int, user_id: int | None, term_id: int | None, status: Any, key_type: Any,
                        is_banned: Any, is_unlimited: Any, duration: Any, units: Any, date_start: Any,
                        date_end: Any, date_registered: Any, activated_at: Any) -> KeyRow:
    """One key row, normalised: unknown statuses read ``new``, unknown types a plain key, NULL flags false."""
    return KeyRow(
        key_id=key_id,
        user_id=user_id,
        term_id=term_id,
        status=status if status in _STATUSES else KEY_STATUS_NEW,
        key_type=key_type if key_type in _KEY_TYPES else KEY_TYPE_TERM,
        is_banned=_flag_value(is_banned),
        is_unlimited=_flag_value(is_unlimited),
        duration=int(duration or 0),
        # MemberLux coerces every unit other than 'days' to 'months' on write; mirror that.
        units=UNITS_DAYS if units == UNITS_DAYS else UNITS_MONTHS,
        date_start=parse_date(date_start),
        date_end=parse_date(date_end),
        date_registered=parse_date(date_registered),
        activated_at=parse_datetime(activated_at),
    )


class MemberLuxReader:
    """Read-only queries on one site. Thread-safe: every call takes its own pooled connection."""

    def __init__(self, engine: sa.Engine, schema: SiteSchema) -> None:
        self.engine = engine
        self.schema = schema
        self._casefold_sql = engine.dialect.name == "sqlite"

    # --- options ---------------------------------------------------------------------------------

    def option(self, name: str, default: Any = None, *, unserialize: bool = False) -> Any:
        """The raw ``option_value`` (or ``default``); ``unserialize=True`` applies ``maybe_unserialize``."""
        value = self.options([name]).get(name)
        if value is None:
            return default
        return maybe_unserialize(value) if unserialize else value

    def options(self, names: Iterable[str]) -> dict[str, str]:
        """Raw values of the named options that exist."""
        options = self.schema.table("options")
        wanted = list(dict.fromkeys(names))
        if not wanted:
            return {}
        stmt = sa.select(options.c.option_name, options.c.option_value).where(options.c.option_name.in_(wanted))
        with self.engine.connect() as conn:
            return {row.option_name: _text(row.option_value) for row in conn.execute(stmt)}

    def network_meta(self, key: str) -> list[tuple[int, str]]:
        """``(site_id, raw meta_value)`` of every ``{base prefix}sitemeta`` row with this key (one per network).

        The table exists only on multisite and is not reflected: the SELECT-only account of
        ``sql/readonly-user.sql`` is not granted it, and on MySQL a refused SELECT cannot be told apart
        from a missing table. Database errors reach the caller, which decides what they mean.
        """
        sitemeta = sa.table(self.schema.base_prefix + "sitemeta", sa.column("site_id"), sa.column("meta_key"),
                            sa.column("meta_value"))
        stmt = (sa.select(sitemeta.c.site_id, sitemeta.c.meta_value).where(sitemeta.c.meta_key == key)
                .order_by(sitemeta.c.site_id))
        with self.engine.connect() as conn:
            return [(int(row.site_id or 0), _text(row.meta_value)) for row in conn.execute(stmt)]

    def site_timezone(self) -> SiteTimezone:
        """The zone from WordPress settings; a configured override is the caller's business."""
        values = self.options(["timezone_string", "gmt_offset"])
        return site_timezone(values.get("timezone_string"), values.get("gmt_offset"))

    # --- levels ----------------------------------------------------------------------------------

    def _levels_stmt(self) -> sa.Select[Any]:
        terms, tt = self.schema.table("terms"), self.schema.table("term_taxonomy")
        stmt = (
            sa.select(terms.c.term_id, terms.c.name, terms.c.slug, tt.c.parent)
            .join(tt, tt.c.term_id == terms.c.term_id)
            .where(tt.c.taxonomy == LEVEL_TAXONOMY)
        )
        if "custom_order" in tt.c:  # MemberLux's own ordering column (core.md 1.1)
            stmt = stmt.order_by(tt.c.custom_order)
        return stmt.order_by(terms.c.name, terms.c.term_id)

    @staticmethod
    def _level(row: sa.Row[Any]) -> Level:
        return Level(int(row.term_id), _text(row.name), _text(row.slug), int(row.parent or 0))

    def levels(self) -> list[Level]:
        with self.engine.connect() as conn:
            return [self._level(row) for row in conn.execute(self._levels_stmt())]

    def level(self, term_id: int) -> Level | None:
        stmt = self._levels_stmt().where(self.schema.table("terms").c.term_id == term_id)
        with self.engine.connect() as conn:
            row = conn.execute(stmt).first()
        return None if row is None else self._level(row)

    def level_parents(self) -> dict[int, int]:
        tt = self.schema.table("term_taxonomy")
        stmt = sa.select(tt.c.term_id, tt.c.parent).where(tt.c.taxonomy == LEVEL_TAXONOMY)
        with self.engine.connect() as conn:
            return {int(row.term_id): int(row.parent or 0) for row in conn.execute(stmt)}

    def ancestors(self, term_id: int) -> list[int]:
        """Ancestor level ids, nearest first (keys of any of them also open ``term_id``)."""
        return ancestors_from_parents(self.level_parents(), term_id)

    def _first_meta(self, stmt: sa.Select[Any]) -> dict[str, str]:
        """``{meta_key: meta_value}`` of a (meta_key, meta_value) select ordered by meta id.

        The first row wins for a repeated key, as WordPress's ``get_*_meta(..., single=true)`` does;
        rows without a key (possible in hand-edited tables) are skipped.
        """
        meta: dict[str, str] = {}
        with self.engine.connect() as conn:
            for row in conn.execute(stmt):
                if row.meta_key is not None:
                    meta.setdefault(row.meta_key, _text(row.meta_value))
        return meta

    def level_meta(self, term_id: int) -> dict[str, str]:
        """termmeta of a level; for repeated keys the first row wins, as in ``get_term_meta``."""
        tm = self.schema.table("termmeta")
        stmt = (
            sa.select(tm.c.meta_key, tm.c.meta_value)
            .where(tm.c.term_id == term_id)
            .order_by(tm.c.meta_id)
        )
        return self._first_meta(stmt)

    def existing_level_ids(self, term_ids: Iterable[int]) -> set[int]:
        tt = self.schema.table("term_taxonomy")
        found: set[int] = set()
        with self.engine.connect() as conn:
            for batch in _chunks(dict.fromkeys(term_ids)):
                stmt = sa.select(tt.c.term_id).where(tt.c.taxonomy == LEVEL_TAXONOMY, tt.c.term_id.in_(batch))
                found.update(int(v) for v in conn.execute(stmt).scalars())
        return found

    # --- users -----------------------------------------------------------------------------------

    _USER_META = ("first_name", "last_name", "wpm_status")

    def _user_columns(self) -> list[sa.Column[Any]]:
        users = self.schema.table("users")
        # Explicit list: user_pass must never ride along by accident.
        return [users.c.ID, users.c.user_login, users.c.user_email, users.c.display_name]

    def _users(self, conn: sa.Connection, where: sa.ColumnElement[bool]) -> list[WpUser]:
        users, um = self.schema.table("users"), self.schema.table("usermeta")
        rows = conn.execute(sa.select(*self._user_columns()).where(where).order_by(users.c.ID)).all()
        if not rows:
            return []
        meta: dict[int, dict[str, str]] = {}
        for batch in _chunks(int(r.ID) for r in rows):
            stmt = (
                sa.select(um.c.user_id, um.c.meta_key, um.c.meta_value)
                .where(um.c.user_id.in_(batch), um.c.meta_key.in_(self._USER_META))
                .order_by(um.c.umeta_id)
            )
            for m in conn.execute(stmt):
                meta.setdefault(int(m.user_id), {}).setdefault(m.meta_key, _text(m.meta_value))
        return [
            WpUser(
                id=int(r.ID), login=_text(r.user_login), email=_text(r.user_email),
                display_name=_text(r.display_name),
                first_name=meta.get(int(r.ID), {}).get("first_name", ""),
                last_name=meta.get(int(r.ID), {}).get("last_name", ""),
                blocked=meta.get(int(r.ID), {}).get("wpm_status", "").strip() == "inactive",
            )
            for r in rows
        ]

    def user_statuses(self, user_ids: Iterable[int]) -> dict[int, int]:
        """WordPress's own ``users.user_status`` of existing users (0 for all but accounts a multisite network
        marked as spam; MemberLux's block flag is usermeta ``wpm_status``, not this)."""
        users = self.schema.table("users")
        result: dict[int, int] = {}
        with self.engine.connect() as conn:
            for batch in _chunks(dict.fromkeys(user_ids)):
                for user_id, status in conn.execute(sa.select(users.c.ID, users.c.user_status)
                                                    .where(users.c.ID.in_(batch))):
                    result[int(user_id)] = int(status or 0)
        return result

    def user_meta(self, user_id: int, keys: Iterable[str]) -> dict[str, str]:
        """Raw usermeta values of one user (first row wins for repeated keys, as ``get_user_meta``)."""
        um = self.schema.table("usermeta")
        wanted = list(dict.fromkeys(keys))
        if not wanted:
            return {}
        stmt = (sa.select(um.c.meta_key, um.c.meta_value)
                .where(um.c.user_id == user_id, um.c.meta_key.in_(wanted)).order_by(um.c.umeta_id))
        return self._first_meta(stmt)

    def post(self, post_id: int) -> Post | None:
        posts = self.schema.table("posts")
        stmt = sa.select(posts.c.ID, posts.c.post_title, posts.c.post_type, posts.c.post_status).where(posts.c.ID == post_id)
        with self.engine.connect() as conn:
            row = conn.execute(stmt).first()
        return None if row is None else Post(int(row.ID), _text(row.post_title), _text(row.post_type),
                                             _text(row.post_status))

    def post_meta(self, post_id: int) -> dict[str, str]:
        """Raw postmeta of one post (first row wins for repeated keys, as ``get_post_meta``)."""
        pm = self.schema.table("postmeta")
        stmt = sa.select(pm.c.meta_key, pm.c.meta_value).where(pm.c.post_id == post_id).order_by(pm.c.meta_id)
        return self._first_meta(stmt)

    def user(self, user_id: int) -> WpUser | None:
        with self.engine.connect() as conn:
            found = self._users(conn, self.schema.table("users").c.ID == user_id)
        return found[0] if found else None

    def users(self, user_ids: Iterable[int]) -> dict[int, WpUser]:
        """Several users at once (for reports); missing ids are simply absent."""
        result: dict[int, WpUser] = {}
        users = self.schema.table("users")
        with self.engine.connect() as conn:
            for batch in _chunks(dict.fromkeys(user_ids)):
                result.update((u.id, u) for u in self._users(conn, users.c.ID.in_(batch)))
        return result

    def _ci_equals(self, column: sa.Column[Any], value: str) -> sa.ColumnElement[bool]:
        # MySQL compares with the column's case-insensitive collation and uses the index; SQLite
        # gets the Python casefold registered by connect_wordpress.
        if self._casefold_sql:
            folded = value.casefold()
            # The look-up scans the table: the Python function runs only for values with a character
            # outside printable ASCII, where SQLite's lower() (ASCII only) is not casefold. For the others
            # lower() is casefold, and lower(x) == folded also implies casefold(x) == folded.
            return sa.or_(sa.func.lower(column) == folded,
                          sa.and_(column.op("GLOB")("*[^ -~]*"), sa.func.casefold(column) == folded))
        return column == value

    def user_by_email(self, email: str) -> WpUser | None:
        """Case-insensitive look-up; the lowest user id wins if WordPress let duplicates in."""
        return self._user_by("user_email", email)

    def user_by_login(self, login: str) -> WpUser | None:
        """Case-insensitive look-up by ``user_login`` (WordPress keeps logins unique)."""
        return self._user_by("user_login", login)

    def user_id_by_email(self, email: str) -> int | None:
        """The id of the user :meth:`user_by_email` finds, without reading the user's meta (one query)."""
        wanted = email.strip()
        users = self.schema.table("users")
        if not wanted or cannot_store(users.c.user_email, wanted):
            return None
        stmt = (sa.select(users.c.ID, users.c.user_email).where(self._ci_equals(users.c.user_email, wanted))
                .order_by(users.c.ID))
        with self.engine.connect() as conn:
            rows = conn.execute(stmt).all()
        return next((int(r.ID) for r in rows if _same_text(_text(r.user_email), wanted)), None)

    def _user_by(self, column_name: str, value: str) -> WpUser | None:
        wanted = value.strip()
        column = self.schema.table("users").c[column_name]
        # Sites upgraded from before WordPress 4.2 may still have a utf8mb3 users table.
        if not wanted or cannot_store(column, wanted):
            return None
        with self.engine.connect() as conn:
            found = self._users(conn, self._ci_equals(column, wanted))
        attribute = {"user_email": "email", "user_login": "login"}[column_name]
        matches = [u for u in found if _same_text(getattr(u, attribute), wanted)]
        return matches[0] if matches else None

    def find_users(self, text: str, limit: int = 20) -> list[WpUser]:
        """Users whose login, e-mail, display name, first or last name contains ``text`` (case-insensitive),
        lowest ids first, at most ``limit``: an administrator looking for a learner by what they remember."""
        wanted = " ".join(text.split())
        users, um = self.schema.table("users"), self.schema.table("usermeta")
        if not wanted:
            return []
        pattern = "%" + wanted.casefold().replace("\\", "\\\\").replace("%", "\\%").replace("_", "\\_") + "%"

        def contains(column: sa.Column[Any]) -> sa.ColumnElement[bool]:
            folded = sa.func.casefold(column) if self._casefold_sql else sa.func.lower(column)
            return folded.like(pattern, escape="\\")

        # Two bounded queries, merged: the lowest ``limit`` ids of the union are among each one's lowest.
        by_account = (sa.select(users.c.ID).where(sa.or_(contains(users.c.user_login), contains(users.c.user_email),
                                                         contains(users.c.display_name)))
                      .order_by(users.c.ID).limit(limit))
        by_name = (sa.select(um.c.user_id).where(um.c.meta_key.in_(("first_name", "last_name")),
                                                  contains(um.c.meta_value))
                   .group_by(um.c.user_id).order_by(um.c.user_id).limit(limit))
        with self.engine.connect() as conn:
            ids = sorted({int(i) for i in conn.execute(by_account).scalars()}
                         | {int(i) for i in conn.execute(by_name).scalars()})[:limit]
            return self._users(conn, users.c.ID.in_(ids)) if ids else []

    def mailing_unsubscribed_ids(self, user_ids: Iterable[int] | None = None) -> set[int]:
        """Users who clicked unsubscribe in a MemberLux auto-responder letter (a ``memberlux_user_mailing_list``
        row in status ``unsubscribe``, for any level: core.md §8 knows no other "do not mail" flag). Empty
        without the auto-responder module."""
        if not self.schema.has("memberlux_user_mailing_list"):
            return set()
        uml = self.schema.table("memberlux_user_mailing_list")
        stmt = sa.select(uml.c.user_id).where(uml.c.status == "unsubscribe").distinct()
        with self.engine.connect() as conn:
            if user_ids is None:
                return {int(u) for u in conn.execute(stmt).scalars()}
            found: set[int] = set()
            for batch in _chunks(dict.fromkeys(user_ids)):
                found.update(int(u) for u in conn.execute(stmt.where(uml.c.user_id.in_(batch))).scalars())
            return found

    def existing_user_ids(self, user_ids: Iterable[int]) -> set[int]:
        users = self.schema.table("users")
        found: set[int] = set()
        with self.engine.connect() as conn:
            for batch in _chunks(dict.fromkeys(user_ids)):
                found.update(int(v) for v in conn.execute(sa.select(users.c.ID).where(users.c.ID.in_(batch))).scalars())
        return found

    def user_roles(self, user_id: int, capabilities_prefix: str | None = None) -> set[str]:
        """Roles from usermeta ``{prefix}capabilities``; on multisite pass the site prefix (default)."""
        um = self.schema.table("usermeta")
        key = f"{capabilities_prefix if capabilities_prefix is not None else self.schema.prefix}capabilities"
        stmt = (
            sa.select(um.c.meta_value)
            .where(um.c.user_id == user_id, um.c.meta_key == key)
            .order_by(um.c.umeta_id)
            .limit(1)
        )
        with self.engine.connect() as conn:
            return capabilities(conn.execute(stmt).scalar())

    def password_hash_for_login(self, login_or_email: str) -> PasswordRecord | None:
        """The stored hash for an admin login; by login first, then by e-mail, as WordPress does."""
        users = self.schema.table("users")
        wanted = login_or_email.strip()
        if not wanted or cannot_store(users.c.user_login, wanted):
            return None
        columns = (users.c.ID, users.c.user_login, users.c.user_email, users.c.user_pass)
        with self.engine.connect() as conn:
            for column, attr in ((users.c.user_login, "user_login"), (users.c.user_email, "user_email")):
                stmt = sa.select(*columns).where(self._ci_equals(column, wanted)).order_by(users.c.ID)
                for row in conn.execute(stmt):
                    if _text(getattr(row, attr)).strip().casefold() == wanted.casefold():
                        return PasswordRecord(int(row.ID), _text(row.user_login), _text(row.user_pass))
        return None

    # --- keys ------------------------------------------------------------------------------------

    def _key_stmt(self) -> sa.Select[Any]:
        tk, km = self.schema.table("memberlux_term_keys"), self.schema.table("memberlux_keys_meta")
        # is_unlimited was added by ALTER TABLE in 2.9.9.9.5; a site that skipped the repair lacks it.
        unlimited = tk.c.is_unlimited if "is_unlimited" in tk.c else sa.literal(0)
        return (
            sa.select(
                tk.c.id, tk.c.user_id, tk.c.term_id, tk.c.status, tk.c.key_type, tk.c.is_banned,
                unlimited.label("is_unlimited"), tk.c.duration, tk.c.units, tk.c.date_start,
                tk.c.date_end, tk.c.date_registered, km.c.activation_datetime,
            )
            .select_from(tk.outerjoin(km, km.c.key_id == tk.c.id))
            # Rows without an owner or a level cannot grant anything (unused codes, basket anomalies).
            .where(tk.c.user_id.is_not(None), tk.c.term_id.is_not(None))
        )

    def key_rows(self, user_id: int, term_ids: Iterable[int] | None = None) -> list[KeyRow]:
        """All key rows of a user (optionally only for some levels), oldest first."""
        tk = self.schema.table("memberlux_term_keys")
        stmt = self._key_stmt().where(tk.c.user_id == user_id)
        if term_ids is not None:
            ids = list(dict.fromkeys(term_ids))
            if not ids:
                return []
            stmt = stmt.where(tk.c.term_id.in_(ids))
        with self.engine.connect() as conn:
            return [_key_row(row) for row in conn.execute(stmt.order_by(tk.c.id))]

    def key_rows_of_users(self, user_ids: Iterable[int], term_ids: Iterable[int]) -> dict[int, list[KeyRow]]:
        """Rows of several users on some levels, by user, oldest first (a query per 500 users, driven by
        ``user_id``); users without rows are absent."""
        tk = self.schema.table("memberlux_term_keys")
        levels = list(dict.fromkeys(term_ids))
        result: dict[int, list[KeyRow]] = {}
        if not levels:
            return result
        with self.engine.connect() as conn:
            for batch in _chunks(dict.fromkeys(user_ids)):
                stmt = self._key_stmt().where(tk.c.user_id.in_(batch), tk.c.term_id.in_(levels))
                for raw in conn.execute(stmt.order_by(tk.c.user_id, tk.c.id)):
                    row = _key_row(raw)
                    if row.user_id is not None:
                        result.setdefault(row.user_id, []).append(row)
        return result

    def key_rows_by_ids(self, key_ids: Iterable[int]) -> list[KeyRow]:
        """Owned key rows by primary key, in id order."""
        tk = self.schema.table("memberlux_term_keys")
        rows: list[KeyRow] = []
        with self.engine.connect() as conn:
            for chunk in _chunks(dict.fromkeys(key_ids)):
                rows.extend(_key_row(row) for row in conn.execute(self._key_stmt().where(tk.c.id.in_(chunk))))
        return sorted(rows, key=lambda r: r.key_id)

    def keys_after(self, last_id: int, term_ids: Iterable[int], limit: int = 1000) -> list[KeyRow]:
        """Owned key rows of these levels with ``id > last_id``, in id order (the primary key)."""
        tk = self.schema.table("memberlux_term_keys")
        ids = list(dict.fromkeys(term_ids))
        if not ids:
            return []
        stmt = self._key_stmt().where(tk.c.id > last_id, tk.c.term_id.in_(ids)).order_by(tk.c.id).limit(limit)
        with self.engine.connect() as conn:
            return [_key_row(row) for row in conn.execute(stmt)]

    def owned_keys_between(self, after_id: int, up_to_id: int, limit: int = 1000) -> list[KeyRow]:
        """Owned key rows of every level with ``after_id < id <= up_to_id``, in id order (a primary-key range)."""
        tk = self.schema.table("memberlux_term_keys")
        stmt = self._key_stmt().where(tk.c.id > after_id, tk.c.id <= up_to_id).order_by(tk.c.id).limit(limit)
        with self.engine.connect() as conn:
            return [_key_row(row) for row in conn.execute(stmt)]

    def activated_keys_starting_in(self, ranges: Iterable[tuple[date, date]]) -> list[KeyRow]:
        """Activated (``used``/``expired``) owned rows whose ``date_start`` lies in one of the inclusive
        ``(first, last)`` ranges, in id order: index ranges of ``date_start`` (core.md 1.3); the status
        drops unused codes, whose placeholder dates the caller's ranges should leave out (3.3)."""
        tk = self.schema.table("memberlux_term_keys")
        spans = [sa.and_(tk.c.date_start >= first, tk.c.date_start <= last) for first, last in ranges]
        if not spans:
            return []
        stmt = (self._key_stmt()
                .where(sa.or_(*spans), tk.c.status.in_((KEY_STATUS_USED, KEY_STATUS_EXPIRED)))
                .order_by(tk.c.id))
        with self.engine.connect() as conn:
            return [_key_row(row) for row in conn.execute(stmt)]

    def _renewing_rows(self, keys: sa.FromClause, term_ids: list[int]) -> sa.ColumnElement[bool]:
        """Rows that decide access (core.md 3.5): owned, of these levels, not banned, activated; basket
        rows included, as MemberLux's own access check does.

        Every column here is wrapped in COALESCE, which keeps its single-column index out of the plan:
        the callers' date range (and ``user_id`` for a learner's other rows) is what narrows the scan,
        while an index on ``status`` or ``term_id`` would walk most of the table (SQLite, without
        statistics, picks them otherwise)."""
        return sa.and_(sa.func.coalesce(keys.c.user_id, 0) > 0, sa.func.coalesce(keys.c.term_id, 0).in_(term_ids),
                       sa.func.coalesce(keys.c.is_banned, 0) == 0,
                       sa.func.coalesce(keys.c.status, KEY_STATUS_NEW).in_((KEY_STATUS_USED, KEY_STATUS_EXPIRED)))

    def renewal_starts(self, term_ids: Iterable[int], first: date, last: date) -> list[tuple[int, int, date]]:
        """``(user_id, term_id, date_start)`` of every key row of these levels that decides access and
        opens at least one day, starting between ``first`` and ``last`` (both included): an index range
        of ``date_start``. For a learner whose access had lapsed, ``date_start`` is the activation day (3.2)."""
        tk = self.schema.table("memberlux_term_keys")
        levels = list(dict.fromkeys(term_ids))
        if not levels:
            return []
        unlimited = tk.c.is_unlimited if "is_unlimited" in tk.c else sa.literal(0)
        stmt = sa.select(tk.c.user_id, tk.c.term_id, tk.c.date_start).where(
            tk.c.date_start >= first, tk.c.date_start <= last, self._renewing_rows(tk, levels),
            sa.or_(unlimited == 1, tk.c.date_end > tk.c.date_start))
        with self.engine.connect() as conn:
            return [(int(u), int(t), day) for u, t, start in conn.execute(stmt)
                    if (day := parse_date(start)) is not None]

    def lapses(self, ranges: Mapping[int, tuple[date, date]]) -> list[tuple[int, int, date, date | None]]:
        """``(user_id, term_id, X, renewed_on)`` for every level of ``ranges`` and every day X in its range
        (both ends included) on which an existing learner's access to the level ended and was not carried
        on: X is the ``date_end`` of a limited row that opens at least one day, and no row of the same user
        and level (unlimited, or ending after X) starts on or before X. ``renewed_on`` is the start of the
        learner's first later row of the level that opens at least one day (None: none yet).

        One statement: an index range of ``date_end``, each candidate checked against its learner's other
        rows through the ``user_id`` index."""
        if not ranges:
            return []
        tk, users = self.schema.table("memberlux_term_keys"), self.schema.table("users")
        levels = list(ranges)
        by_range: dict[tuple[date, date], list[int]] = {}
        for level, span in ranges.items():
            by_range.setdefault(span, []).append(level)
        other, later = tk.alias("carried_on"), tk.alias("renewal")

        def unlimited(table: sa.FromClause) -> sa.ColumnElement[Any]:
            return table.c.is_unlimited if "is_unlimited" in table.c else sa.literal(0)

        def same_learner(table: sa.FromClause) -> sa.ColumnElement[bool]:
            # Through the user_id index (COALESCE keeps term_id's index out of the plan).
            return sa.and_(table.c.user_id == tk.c.user_id, self._renewing_rows(table, levels),
                           sa.func.coalesce(table.c.term_id, 0) == tk.c.term_id)

        carried_on = sa.exists().where(same_learner(other), other.c.date_start <= tk.c.date_end,
                                       sa.or_(unlimited(other) == 1, other.c.date_end > tk.c.date_end))
        renewed_on = (sa.select(sa.func.min(later.c.date_start))
                      .where(same_learner(later), later.c.date_start >= tk.c.date_end,
                             sa.or_(unlimited(later) == 1, later.c.date_end > later.c.date_start))
                      .scalar_subquery())
        in_range = sa.or_(*(sa.and_(sa.func.coalesce(tk.c.term_id, 0).in_(ids), tk.c.date_end >= first,
                                    tk.c.date_end <= last) for (first, last), ids in by_range.items()))
        stmt = (sa.select(tk.c.user_id, tk.c.term_id, tk.c.date_end, renewed_on.label("renewed_on"))
                .join(users, users.c.ID == tk.c.user_id)
                .where(tk.c.date_end >= min(first for first, _last in by_range),
                       tk.c.date_end <= max(last for _first, last in by_range), in_range,
                       self._renewing_rows(tk, levels), unlimited(tk) == 0, tk.c.date_end > tk.c.date_start,
                       ~carried_on))
        # Rows ending on the same day (two grants in one request) give one lapse; deduplicated here rather
        # than by DISTINCT, which would sort the whole result in a temporary table.
        found: dict[tuple[int, int, date], date | None] = {}
        with self.engine.connect() as conn:
            for u, t, end, renewed in conn.execute(stmt):
                if (day := parse_date(end)) is not None:
                    found[(int(u), int(t), day)] = parse_date(renewed)
        return [(u, t, day, renewed) for (u, t, day), renewed in found.items()]

    def activation_sources(self, key_ids: Iterable[int]) -> dict[int, str | None]:
        """``keys_meta.source`` of these keys (None where it is NULL); keys without a ``keys_meta`` row are absent.

        Core writes the source (``''`` when the caller gave none) as the last part of an activation; the
        auto-responder's earlier row leaves it NULL (core.md 1.4, 7).
        """
        km = self.schema.table("memberlux_keys_meta")
        found: dict[int, str | None] = {}
        with self.engine.connect() as conn:
            for chunk in _chunks(dict.fromkeys(key_ids)):
                stmt = sa.select(km.c.key_id, km.c.source).where(km.c.key_id.in_(chunk))
                found.update((int(r.key_id), None if r.source is None else _text(r.source)) for r in conn.execute(stmt))
        return found

    def hooks(self) -> list[tuple[int, str, list[str]]]:
        """MemberLux's outbound webhooks: (id, destination, subscribed sources) in delivery order."""
        self.schema.require("webhooks")
        hook, action = self.schema.table("memberlux_hook"), self.schema.table("memberlux_hook_action")
        with self.engine.connect() as conn:
            rows = conn.execute(sa.select(hook.c.id, hook.c.destination).order_by(hook.c.sort, hook.c.id)).all()
            actions: dict[int, list[str]] = {}
            for hook_id, name in conn.execute(sa.select(action.c.hook_id, action.c.action).order_by(action.c.action)):
                actions.setdefault(int(hook_id), []).append(_text(name))
        return [(int(r.id), _text(r.destination), actions.get(int(r.id), [])) for r in rows]

    def max_key_id(self) -> int:
        tk = self.schema.table("memberlux_term_keys")
        with self.engine.connect() as conn:
            return int(conn.execute(sa.select(sa.func.max(tk.c.id))).scalar() or 0)

    def key_sources(self, user_id: int, term_ids: Iterable[int]) -> list[tuple[int, str]]:
        """(level, ``keys_meta.source``) of a user's keys, e.g. to find keys a legacy plugin granted."""
        tk, km = self.schema.table("memberlux_term_keys"), self.schema.table("memberlux_keys_meta")
        stmt = (sa.select(tk.c.term_id, km.c.source).join(km, km.c.key_id == tk.c.id)
                .where(tk.c.user_id == user_id, tk.c.term_id.in_(list(term_ids))))
        with self.engine.connect() as conn:
            return [(int(row.term_id), _text(row.source)) for row in conn.execute(stmt)]

    def key_rows_for_level(self, term_id: int, *, chunk_size: int = 2000) -> Iterator[KeyRow]:
        """Every owned row of a level, grouped by user (ordered by user_id, id), streamed.

        A server-side cursor keeps memory flat on levels with 10^5 rows; the connection stays
        checked out until the iterator is exhausted or closed.
        """
        tk = self.schema.table("memberlux_term_keys")
        stmt = self._key_stmt().where(tk.c.term_id == term_id).order_by(tk.c.user_id, tk.c.id)
        with self.engine.connect() as conn:
            result = conn.execution_options(yield_per=chunk_size).execute(stmt)
            for row in result:
                yield _key_row(row)

    def is_orphan(self, row: KeyRow) -> bool:
        """True when the row's user or level no longer exists (such rows grant nothing)."""
        if row.user_id is None or row.term_id is None:
            return True
        return not self.existing_user_ids([row.user_id]) or not self.existing_level_ids([row.term_id])

    def count_orphan_keys(self) -> OrphanCounts:
        """For the doctor: full scans of term_keys, do not call per request."""
        tk = self.schema.table("memberlux_term_keys")
        users, tt = self.schema.table("users"), self.schema.table("term_taxonomy")
        no_user = (
            sa.select(sa.func.count())
            .select_from(tk.outerjoin(users, users.c.ID == tk.c.user_id))
            .where(tk.c.user_id.is_not(None), users.c.ID.is_(None))
        )
        no_level = (
            sa.select(sa.func.count())
            .select_from(tk.outerjoin(tt, sa.and_(tt.c.term_id == tk.c.term_id, tt.c.taxonomy == LEVEL_TAXONOMY)))
            .where(tk.c.term_id.is_not(None), tk.c.user_id.is_not(None), tt.c.term_taxonomy_id.is_(None))
        )
        with self.engine.connect() as conn:
            return OrphanCounts(int(conn.execute(no_user).scalar_one()), int(conn.execute(no_level).scalar_one()))

    # --- certificates ----------------------------------------------------------------------------

    def latest_certificate_id(self) -> int | None:
        self.schema.require("certificates")
        cert = self.schema.table("memberlux_certificate")
        with self.engine.connect() as conn:
            value = conn.execute(sa.select(sa.func.max(cert.c.certificate_id))).scalar()
        return None if value is None else int(value)

    def certificates_after(self, last_id: int, limit: int = 500) -> list[CertificateRow]:
        """Certificates with ``certificate_id > last_id`` in id order (the PK is the only index)."""
        self.schema.require("certificates")
        cert = self.schema.table("memberlux_certificate")
        stmt = (
            sa.select(cert)
            .where(cert.c.certificate_id > last_id)
            .order_by(cert.c.certificate_id)
            .limit(limit)
        )
        with self.engine.connect() as conn:
            return [_certificate(row._mapping) for row in conn.execute(stmt)]

    def certificate_ids_by_user(self, level_id: int) -> dict[int, list[int]]:
        """Ids of the level's certificates by user, automatic ones included: one scan of a table indexed by
        its primary key only (core.md 10)."""
        self.schema.require("certificates")
        cert = self.schema.table("memberlux_certificate")
        stmt = (sa.select(cert.c.user_id, cert.c.certificate_id).where(cert.c.wpmlevel_id == level_id)
                .order_by(cert.c.certificate_id))
        result: dict[int, list[int]] = {}
        with self.engine.connect() as conn:
            for user_id, certificate_id in conn.execute(stmt):
                if user_id is not None:
                    result.setdefault(int(user_id), []).append(int(certificate_id))
        return result

    # --- diagnostics -----------------------------------------------------------------------------

    def count_rows(self, short_name: str) -> int:
        table = self.schema.table(short_name)
        with self.engine.connect() as conn:
            return int(conn.execute(sa.select(sa.func.count()).select_from(table)).scalar_one())


def _optional_int(value: Any) -> int | None:
    return None if value is None else int(value)


def _certificate(m: Mapping[Any, Any]) -> CertificateRow:
    try:
        fields = maybe_unserialize(m.get("custom_fields"))
    except WpDataError:
        fields = None
    return CertificateRow(
        certificate_id=int(m["certificate_id"]),
        user_id=int(m["user_id"]),
        level_id=int(m["wpmlevel_id"]),
        certificate_name=_text(m.get("certificate_name")),
        template_id=_optional_int(m.get("certificate_template_id")),
        graduate_first_name=_text(m.get("graduate_first_name")),
        graduate_last_name=_text(m.get("graduate_last_name")),
        graduate_surname=_text(m.get("graduate_surname")),
        date_issue=parse_date(m.get("date_issue")),
        create_date=parse_date(m.get("create_date")),
        series=_text(m.get("series")),
        number=_text(m.get("number")),
        responsible_person=_optional_int(m.get("responsible_person")),
        course_name=_text(m.get("course_name")),
        custom_fields=fields if isinstance(fields, dict) else {},
    )

