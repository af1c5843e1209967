"""A whole site's key rows and users, one result row per user, packed by MySQL/MariaDB.

Reading a million key rows row by row costs the pure-Python driver about ten times what the server
needs to produce them: every column of every row is a length-coded field to decode. Grouped by user
on the server (``GROUP_CONCAT`` of each row's columns joined by control characters), the same data
comes back as one string per user, split here with ``str.split``. Values pass through the reader's
own normalisation (:func:`sidecar.memberlux.reader.key_row_from_values`), so a packed row is the row
the reader returns. A whole-site pass needs only what the sleeper rule reads of each row:
:func:`packed_key_facts` makes those facts from the text directly, equal to ``row_facts`` of the reader's
rows (tests/memberlux/test_packed.py).

Nothing is trusted blindly: each packed group carries its row count; a group that splits into
another number of rows or fields (a value containing a separator, a result cut by
``group_concat_max_len``) is read again the ordinary way for that user alone.
MySQL/MariaDB only; :func:`supported` says whether the site's engine is one.
"""

from __future__ import annotations

from collections.abc import Iterator, Sequence
from datetime import date, datetime
from typing import TYPE_CHECKING, Any

import sqlalchemy as sa
from sqlalchemy.ext.compiler import compiles

from sidecar.domain.access import AccessPolicy, KeyRow, utc_day
from sidecar.domain.sleepers import RowFacts, key_facts, row_facts
from sidecar.memberlux.reader import WpUser, _flag_value, key_row_from_values
from sidecar.memberlux.schema import parse_date, parse_datetime

if TYPE_CHECKING:
    from sidecar.memberlux.reader import MemberLuxReader

__all__ = ["supported", "packed_key_groups", "packed_key_facts", "packed_users"]

_FIELD = "\x1f"   # ASCII unit separator
_RECORD = "\x1e"  # ASCII record separator
_KEY_FIELDS = 12
_USER_META = ("first_name", "last_name", "wpm_status")


def supported(reader: MemberLuxReader) -> bool:
    return reader.engine.dialect.name in ("mysql", "mariadb")


class _GroupConcat(sa.sql.expression.ColumnElement[str]):
    """MySQL's ``GROUP_CONCAT(value ORDER BY key SEPARATOR 'sep')`` (SQLAlchemy has no ordered form)."""

    inherit_cache = False
    type = sa.Text()

    def __init__(self, value: sa.ColumnElement[Any], order_by: sa.ColumnElement[Any], separator: str) -> None:
        self.value, self.order_by, self.separator = value, order_by, separator


@compiles(_GroupConcat, "mysql")
def _compile_group_concat(element: _GroupConcat, compiler: Any, **kw: Any) -> str:
    separator = compiler.render_literal_value(element.separator, sa.String())
    return (f"GROUP_CONCAT({compiler.process(element.value, **kw)} "
            f"ORDER BY {compiler.process(element.order_by, **kw)} SEPARATOR {separator})")


def _text_of(column: sa.ColumnElement[Any]) -> sa.ColumnElement[Any]:
    # NULL and '' normalise alike for every packed column; IFNULL keeps each column in its place.
    return sa.func.ifnull(column, "")


def _stream(reader: MemberLuxReader, stmt: sa.Select[Any]) -> Iterator[sa.Row[Any]]:
    with reader.engine.connect() as conn:
        # 64 MB: enough for a user with tens of thousands of keys; a longer group is cut, noticed, re-read.
        conn.exec_driver_sql("SET SESSION group_concat_max_len = 67108864")
        result = conn.execution_options(yield_per=2000).execute(stmt)
        yield from result


def _key_groups(reader: MemberLuxReader, low: int | None, high: int | None) -> sa.Select[Any]:
    tk = reader.schema.table("memberlux_term_keys").alias("k")
    km = reader.schema.table("memberlux_keys_meta").alias("m")
    unlimited = _text_of(tk.c.is_unlimited) if "is_unlimited" in tk.c else sa.literal("0")
    columns = [tk.c.id, tk.c.term_id, _text_of(tk.c.status), _text_of(tk.c.key_type), _text_of(tk.c.is_banned),
               unlimited, _text_of(tk.c.duration), _text_of(tk.c.units), _text_of(tk.c.date_start),
               _text_of(tk.c.date_end), _text_of(tk.c.date_registered), _text_of(km.c.activation_datetime)]
    conditions: list[sa.ColumnElement[bool]] = [tk.c.user_id.is_not(None), tk.c.term_id.is_not(None)]
    if low is not None:
        conditions.append(tk.c.user_id >= low)
    if high is not None:
        conditions.append(tk.c.user_id <= high)
    return (sa.select(tk.c.user_id, sa.func.count().label("n"),
                      _GroupConcat(sa.func.concat_ws(_FIELD, *columns), tk.c.id, _RECORD).label("packed"))
            .select_from(tk.outerjoin(km, km.c.key_id == tk.c.id))
            .where(*conditions).group_by(tk.c.user_id).order_by(tk.c.user_id))


def packed_key_groups(reader: MemberLuxReader, *, low: int | None = None,
                      high: int | None = None) -> Iterator[tuple[int, list[KeyRow]]]:
    """``(user_id, rows)`` of every owner of key rows (optionally with ``low <= user_id <= high``), in
    user order, rows in id order: what ``key_rows`` would return per user, in one streamed query."""
    days: dict[str, date | None] = {}
    for user_id, count, packed in _stream(reader, _key_groups(reader, low, high)):
        user_id = int(user_id)
        rows = _unpack_keys(user_id, int(count), _text(packed), days)
        yield user_id, rows if rows is not None else reader.key_rows(user_id)


def packed_key_facts(reader: MemberLuxReader, policy: AccessPolicy, *, low: int | None = None,
                     high: int | None = None) -> Iterator[tuple[int, list[RowFacts]]]:
    """:func:`packed_key_groups` as the sleeper rule reads it: ``(user_id, [row_facts(row, policy), ...])``,
    made from the packed text without building the rows (a whole-site pass reads a million of them)."""
    days = _Days()
    for user_id, count, packed in _stream(reader, _key_groups(reader, low, high)):
        user_id = int(user_id)
        facts = _unpack_facts(int(count), _text(packed), days, policy.include_basket)
        yield user_id, facts if facts is not None else [row_facts(row, policy) for row in reader.key_rows(user_id)]


class _Days(dict[str, "date | None"]):
    """Texts of dates parsed once per pass: a site has a few thousand distinct days."""

    def __missing__(self, text: str) -> date | None:
        day = self[text] = parse_date(text)
        return day


def _split_group(count: int, packed: str) -> list[list[str]] | None:
    """The fields of each record of one user's packed group; None when it does not split into ``count``
    records of ``_KEY_FIELDS`` fields (a separator inside a value, a group cut by group_concat_max_len)."""
    records = packed.split(_RECORD)
    if len(records) != count:
        return None
    groups = [record.split(_FIELD) for record in records]
    return groups if all(len(fields) == _KEY_FIELDS for fields in groups) else None


def _unpack_facts(count: int, packed: str, days: _Days, include_basket: bool) -> list[RowFacts] | None:
    """What :func:`_unpack_keys` then :func:`row_facts` give, field for field (tests/memberlux/test_packed.py)."""
    groups = _split_group(count, packed)
    if groups is None:
        return None
    facts = []
    for fields in groups:
        _key, term_id, status, key_type, banned, unlimited, _duration, _units, start, end, registered, activated = fields
        activated_on = _activation_day(activated) if activated else None
        try:
            facts.append(key_facts(int(term_id), status, key_type,
                                   False if banned == "0" else True if banned == "1" else _flag_value(banned),
                                   False if unlimited == "0" else True if unlimited == "1" else _flag_value(unlimited),
                                   days[start], days[end], days[registered], activated_on, include_basket))
        except ValueError:
            return None
    return facts


def _activation_day(text: str) -> date | None:
    """``utc_day(parse_datetime(text))``, parsing a plain ``YYYY-MM-DD HH:MM:SS`` directly."""
    try:
        at = datetime.fromisoformat(text) if text[:4] != "0000" and text == text.strip() else parse_datetime(text)
    except ValueError:
        return None  # as parse_datetime: unreadable is no date
    if at is None:
        return None
    return at.date() if at.tzinfo is None else utc_day(at)


def _unpack_keys(user_id: int, count: int, packed: str, days: dict[str, date | None]) -> list[KeyRow] | None:
    groups = _split_group(count, packed)
    if groups is None:
        return None
    rows = []
    for fields in groups:
        key_id, term_id, status, key_type, banned, unlimited, duration, units, start, end, registered, activated = fields
        try:
            # A site has a few thousand distinct days: each text is parsed once per pass.
            first, last, registered_on = (days[t] if t in days else days.setdefault(t, parse_date(t))
                                          for t in (start, end, registered))
            rows.append(key_row_from_values(int(key_id), user_id, int(term_id), status, key_type, banned, unlimited,
                                            duration, units, first, last, registered_on, activated))
        except ValueError:
            return None
    return rows


def packed_users(reader: MemberLuxReader, *, low: int | None = None,
                 high: int | None = None) -> Iterator[WpUser]:
    """Every user (optionally with ``low <= ID <= high``) with login, e-mail, names and block flag, in
    ``ID`` order, in one streamed query."""
    users, um = reader.schema.table("users"), reader.schema.table("usermeta")
    u, m = users.alias("u"), um.alias("m")
    conditions: list[sa.ColumnElement[bool]] = []
    if low is not None:
        conditions.append(u.c.ID >= low)
    if high is not None:
        conditions.append(u.c.ID <= high)
    stmt = (sa.select(u.c.ID.label("id"), u.c.user_login.label("login"), u.c.user_email.label("email"),
                      u.c.display_name.label("display_name"), sa.func.count(m.c.umeta_id).label("n"),
                      _GroupConcat(sa.func.concat(m.c.meta_key, _FIELD, _text_of(m.c.meta_value)), m.c.umeta_id,
                                   _RECORD).label("packed"))
            .select_from(u.outerjoin(m, sa.and_(m.c.user_id == u.c.ID, m.c.meta_key.in_(_USER_META))))
            .where(*conditions).group_by(u.c.ID).order_by(u.c.ID))
    for user_id, login, email, display_name, count, packed in _stream(reader, stmt):
        meta = _unpack_meta(int(count), _text(packed))
        if meta is None:
            user = reader.user(int(user_id))
            if user is not None:
                yield user
            continue
        yield WpUser(int(user_id), _text(login), _text(email), _text(display_name), meta.get("first_name", ""),
                     meta.get("last_name", ""), meta.get("wpm_status", "").strip() == "inactive")


def _unpack_meta(count: int, packed: str) -> dict[str, str] | None:
    if count == 0:
        return {}
    entries = packed.split(_RECORD)
    if len(entries) != count:
        return None
    meta: dict[str, str] = {}
    for entry in entries:
        key, separator, value = entry.partition(_FIELD)
        if not separator or key not in _USER_META:
            return None
        meta.setdefault(key, value)  # the first row wins, as get_user_meta
    return meta


def _text(value: object) -> str:
    if value.__class__ is str:
        return value
    if value is None:
        return ""
    if isinstance(value, bytes):
        return value.decode("utf-8", "replace")
    return str(value)


def merge_users(users: Iterator[WpUser], ids: Sequence[int], pending: list[WpUser]) -> dict[int, WpUser]:
    """The users among ascending ``ids`` from the ascending ``users`` stream (``pending`` carries the one
    read past the batch to the next call)."""
    found: dict[int, WpUser] = {}
    wanted = set(ids)
    last = ids[-1] if ids else -1
    while True:
        user = pending.pop() if pending else next(users, None)
        if user is None:
            return found
        if user.id > last:
            pending.append(user)
            return found
        if user.id in wanted:
            found[user.id] = user
