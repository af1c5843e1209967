"""What changed on the site since the last look, in user-id buckets, without any column that says so.

MemberLux keeps no "updated at" on the rows the sleeper rule reads and rewrites them in place
(core.md §3.3: status flips, renewals that extend a row, bans; §13: statement by statement). So the
scan compares digests: for every bucket of ``BUCKET`` consecutive user ids, a count and an XOR of CRC32s
of each row's relevant columns, for

* ``keys`` — owned rows of ``{p}memberlux_term_keys`` with their ``keys_meta`` activation time (a new
  key, a renewal, a status flip, a ban, an edited date all change their user's bucket);
* ``users`` — ``ID``, login and e-mail of ``{p}users`` (a deleted user changes the bucket too);
* ``meta`` — the ``first_name``, ``last_name`` and ``wpm_status`` usermeta rows (names, the block flag);
* ``manual`` — the store's live manual certificates (user, level), after the certificate sync.

On MySQL/MariaDB the digests are one ``GROUP BY`` each, computed by the server (a scan of the table,
no rows sent back but one per bucket); elsewhere (SQLite sites of the test suite and the demo) the
rows are streamed and hashed here. The two never meet: a store keeps the digests of one site.

A write the scan sees half done leaves a digest that differs again once the write completes, so the
bucket is evaluated once more at the next scan: statement-by-statement writes are not missed.
The day rolling over (00:00 UTC) changes the rule's day, not the rows: :func:`users_crossing` lists
the users whose rows start or end between the two days.
"""

from __future__ import annotations

import zlib
from collections.abc import Iterable, Mapping
from datetime import date
from typing import TYPE_CHECKING

import sqlalchemy as sa

from sidecar.monitor.query import day_sql

if TYPE_CHECKING:
    from sidecar.bootstrap import Runtime

__all__ = ["BUCKET", "Digests", "changed_buckets", "site_digests", "manual_digest", "users_crossing",
           "bucket_ranges"]

#: Users per bucket: a changed bucket costs the evaluation of at most this many users.
BUCKET = 256

#: family -> {bucket: [rows, xor of crc32]}
Digests = dict[str, dict[int, list[int]]]

_KEY_COLUMNS = ("id", "user_id", "term_id", "status", "key_type", "is_banned", "is_unlimited", "duration",
                "units", "date_start", "date_end", "date_registered")
_USER_META = ("first_name", "last_name", "wpm_status")
_NULL = "\x00"


def _is_mysql(runtime: Runtime) -> bool:
    return runtime.wp_engine.dialect.name in ("mysql", "mariadb")


def site_digests(runtime: Runtime) -> Digests:
    """Per-bucket digests of the key rows, the users and their names/flags, as the site has them now."""
    site = runtime.site
    keys, meta = site.table("memberlux_term_keys"), site.table("memberlux_keys_meta")
    users, usermeta = site.table("users"), site.table("usermeta")
    key_columns = [keys.c[name] for name in _KEY_COLUMNS if name in keys.c] + [meta.c.activation_datetime]
    key_source = keys.outerjoin(meta, meta.c.key_id == keys.c.id)
    families = {
        "keys": (keys.c.user_id, key_columns, key_source, keys.c.user_id.is_not(None)),
        "users": (users.c.ID, [users.c.ID, users.c.user_login, users.c.user_email], users, sa.true()),
        "meta": (usermeta.c.user_id, [usermeta.c.umeta_id, usermeta.c.user_id, usermeta.c.meta_key,
                                      usermeta.c.meta_value], usermeta, usermeta.c.meta_key.in_(_USER_META)),
    }
    digests: Digests = {}
    with runtime.wp_engine.connect() as conn:
        for family, (owner, columns, source, where) in families.items():
            if _is_mysql(runtime):
                digests[family] = _server_digest(conn, owner, columns, source, where)
            else:
                digests[family] = _streamed_digest(conn, owner, columns, source, where)
    return digests


def _server_digest(conn: sa.Connection, owner, columns, source, where) -> dict[int, list[int]]:
    # IFNULL keeps NULL apart from "" and keeps every column in its place (CONCAT_WS skips NULLs).
    text = sa.func.concat_ws("|", *[sa.func.ifnull(sa.cast(c, sa.String), _NULL) for c in columns])
    bucket = sa.func.floor(owner / BUCKET).label("bucket")
    stmt = (sa.select(bucket, sa.func.count(), sa.func.bit_xor(sa.func.crc32(text)))
            .select_from(source).where(where).group_by(sa.text("bucket")))
    return {int(b): [int(n), int(x)] for b, n, x in conn.execute(stmt)}


def _streamed_digest(conn: sa.Connection, owner, columns, source, where) -> dict[int, list[int]]:
    stmt = sa.select(owner.label("owner"), *columns).select_from(source).where(where)
    result: dict[int, list[int]] = {}
    for row in conn.execution_options(yield_per=5000).execute(stmt):
        text = "|".join(_NULL if v is None else str(v) for v in row[1:])
        entry = result.setdefault(int(row[0]) // BUCKET, [0, 0])
        entry[0] += 1
        entry[1] ^= zlib.crc32(text.encode())
    return result


def manual_digest(pairs: Iterable[tuple[int, int]]) -> dict[int, list[int]]:
    """Per-bucket digest of the (user, level) pairs holding a live manual certificate."""
    result: dict[int, list[int]] = {}
    for user_id, level_id in pairs:
        entry = result.setdefault(int(user_id) // BUCKET, [0, 0])
        entry[0] += 1
        entry[1] ^= zlib.crc32(f"{user_id}|{level_id}".encode())
    return result


def changed_buckets(before: Mapping[str, Mapping[int, list[int]]], after: Digests) -> set[int]:
    """Buckets whose digest differs in any family (appeared, vanished or changed)."""
    changed: set[int] = set()
    for family, now in after.items():
        then = {int(b): list(v) for b, v in before.get(family, {}).items()}
        for bucket in then.keys() | now.keys():
            if then.get(bucket) != now.get(bucket):
                changed.add(bucket)
    return changed


def bucket_ranges(buckets: Iterable[int]) -> list[tuple[int, int]]:
    """Inclusive user-id ranges covering the buckets, neighbours merged."""
    ranges: list[tuple[int, int]] = []
    for bucket in sorted(set(buckets)):
        low, high = bucket * BUCKET, bucket * BUCKET + BUCKET - 1
        if ranges and ranges[-1][1] + 1 == low:
            ranges[-1] = (ranges[-1][0], high)
        else:
            ranges.append((low, high))
    return ranges


def users_crossing(runtime: Runtime, after: date, up_to: date) -> set[int]:
    """Users with a key row that starts or ends on a UTC day in ``(after, up_to]``: moving the rule's day
    from ``after`` to ``up_to`` can change their verdicts and nobody else's (index ranges on
    ``date_start`` and ``date_end``, core.md §10)."""
    keys = runtime.site.table("memberlux_term_keys")
    sql = day_sql(runtime.wp_engine.dialect.name)
    low, high = sql.literal(after), sql.literal(up_to)
    found: set[int] = set()
    with runtime.wp_engine.connect() as conn:
        for column in (keys.c.date_start, keys.c.date_end):
            day = sql.day(column)
            stmt = sa.select(keys.c.user_id).distinct().where(day > low, day <= high, keys.c.user_id.is_not(None))
            found.update(int(u) for u in conn.execute(stmt).scalars())
    return found
