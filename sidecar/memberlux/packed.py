"""A whole site's key rows and users, one result row per user, packed by MySQL/MariaDB.

Reading a million key rows row by row costs the pure-Python driver about ten times what the server
needs to produce them: every column of every row is a length-coded field to decode. Grouped by user
on the server (``GROUP_CONCAT`` of each row's columns joined by control characters), the same data
comes back as one string per user, split here with ``str.split``. Values pass through the reader's
own normalisation (:func:`sidecar.memberlux.reader.key_row_from_values`), so a packed row is the row
the reader returns.

Nothing is trusted blindly: each packed group carries its row count; a group that splits into
another number of rows or fields (a value containing a separator, a result cut by
``group_concat_max_len``) is read again the ordinary way for that user alone.
MySQL/MariaDB only; :func:`supported` says whether the site's engine is one.
"""

from __future__ import annotations

from collections.abc import Iterator, Sequence
from datetime import date
from typing import TYPE_CHECKING, Any

import sqlalchemy as sa

from sidecar.domain.access import KeyRow
from sidecar.memberlux.reader import WpUser, key_row_from_values
from sidecar.memberlux.schema import parse_date

if TYPE_CHECKING:
    from sidecar.memberlux.reader import MemberLuxReader

__all__ = ["supported", "packed_key_groups", "packed_users"]

_FIELD = "\x1f"   # ASCII unit separator
_RECORD = "\x1e"  # ASCII record separator
_KEY_FIELDS = 12
#: Enough for a user with tens of thousands of keys; a longer group is cut, noticed and re-read.
_GROUP_LIMIT = 64 * 1024 * 1024
_USER_META = ("first_name", "last_name", "wpm_status")


def supported(reader: MemberLuxReader) -> bool:
    return reader.engine.dialect.name in ("mysql", "mariadb")


def _stream(reader: MemberLuxReader, sql: str, params: dict[str, Any]) -> Iterator[sa.Row[Any]]:
    with reader.engine.connect() as conn:
        conn.exec_driver_sql(f"SET SESSION group_concat_max_len = {_GROUP_LIMIT}")
        result = conn.execution_options(yield_per=2000).execute(sa.text(sql), params)
        yield from result


def packed_key_groups(reader: MemberLuxReader, *, low: int | None = None,
                      high: int | None = None) -> Iterator[tuple[int, list[KeyRow]]]:
    """``(user_id, rows)`` of every owner of key rows (optionally with ``low <= user_id <= high``), in
    user order, rows in id order: what ``key_rows`` would return per user, in one streamed query."""
    tk = reader.schema.table("memberlux_term_keys")
    km = reader.schema.table("memberlux_keys_meta")
    unlimited = "IFNULL(k.is_unlimited, '')" if "is_unlimited" in tk.c else "'0'"
    columns = ["k.id", "k.term_id", "IFNULL(k.status, '')", "IFNULL(k.key_type, '')", "IFNULL(k.is_banned, '')",
               unlimited, "IFNULL(k.duration, '')", "IFNULL(k.units, '')", "IFNULL(k.date_start, '')",
               "IFNULL(k.date_end, '')", "IFNULL(k.date_registered, '')", "IFNULL(m.activation_datetime, '')"]
    where = "k.user_id IS NOT NULL AND k.term_id IS NOT NULL"
    params: dict[str, Any] = {}
    if low is not None:
        where += " AND k.user_id >= :low"
        params["low"] = low
    if high is not None:
        where += " AND k.user_id <= :high"
        params["high"] = high
    # Table names are the reflected tables' own; every value is a bound parameter.
    sql = (f"SELECT k.user_id AS user_id, COUNT(*) AS n, "  # noqa: S608
           f"GROUP_CONCAT(CONCAT_WS('{_FIELD}', {', '.join(columns)}) ORDER BY k.id SEPARATOR '{_RECORD}') AS packed "
           f"FROM `{tk.name}` k LEFT JOIN `{km.name}` m ON m.key_id = k.id "
           f"WHERE {where} GROUP BY k.user_id ORDER BY k.user_id")
    days: dict[str, date | None] = {}
    for user_id, count, packed in _stream(reader, sql, params):
        user_id = int(user_id)
        rows = _unpack_keys(user_id, int(count), _text(packed), days)
        yield user_id, rows if rows is not None else reader.key_rows(user_id)


def _unpack_keys(user_id: int, count: int, packed: str, days: dict[str, date | None]) -> list[KeyRow] | None:
    records = packed.split(_RECORD)
    if len(records) != count:
        return None
    rows = []
    for record in records:
        fields = record.split(_FIELD)
        if len(fields) != _KEY_FIELDS:
            return None
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
    keys = ", ".join(f"'{key}'" for key in _USER_META)
    where, params = "1 = 1", dict[str, Any]()
    if low is not None:
        where += " AND u.ID >= :low"
        params["low"] = low
    if high is not None:
        where += " AND u.ID <= :high"
        params["high"] = high
    sql = (f"SELECT u.ID AS id, u.user_login AS login, u.user_email AS email, u.display_name AS display_name, "  # noqa: S608
           f"COUNT(m.umeta_id) AS n, GROUP_CONCAT(CONCAT(m.meta_key, '{_FIELD}', IFNULL(m.meta_value, '')) "
           f"ORDER BY m.umeta_id SEPARATOR '{_RECORD}') AS packed "
           f"FROM `{users.name}` u LEFT JOIN `{um.name}` m ON m.user_id = u.ID AND m.meta_key IN ({keys}) "
           f"WHERE {where} GROUP BY u.ID ORDER BY u.ID")
    for row in _stream(reader, sql, params):
        meta = _unpack_meta(int(row.n), _text(row.packed))
        if meta is None:
            user = reader.user(int(row.id))
            if user is not None:
                yield user
            continue
        yield WpUser(id=int(row.id), login=_text(row.login), email=_text(row.email),
                     display_name=_text(row.display_name), first_name=meta.get("first_name", ""),
                     last_name=meta.get("last_name", ""),
                     blocked=meta.get("wpm_status", "").strip() == "inactive")


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
