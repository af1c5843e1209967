"""A level's key rows as the rebuild and the trend backfill read them: grouped per user, in batches of
users, with the same users' rows of the ancestor levels fetched per batch."""

from __future__ import annotations

import itertools
from collections.abc import Iterable, Iterator, Sequence
from typing import TYPE_CHECKING

from sidecar.domain.access import KeyRow
from sidecar.memberlux.reader import _key_row

if TYPE_CHECKING:
    from sidecar.memberlux.reader import MemberLuxReader

#: Users per batch: one users query and one ancestor-rows query per batch.
USER_BATCH = 500


def user_batches(rows: Iterable[KeyRow], size: int) -> Iterator[list[tuple[int, list[KeyRow]]]]:
    """``(user_id, rows)`` groups of a stream ordered by user, ``size`` users at a time (rows without a
    user, i.e. unused codes, are skipped)."""
    groups = ((user_id, list(group)) for user_id, group in itertools.groupby(rows, key=lambda r: r.user_id)
              if user_id is not None)
    while True:
        batch = list(itertools.islice(groups, size))
        if not batch:
            return
        yield batch


def ancestor_key_rows(reader: MemberLuxReader, user_ids: Sequence[int], ancestors: Sequence[int]) -> dict[int, list[KeyRow]]:
    """Rows of the ancestor levels for a batch of users, with one query driven by ``user_id``."""
    if not ancestors or not user_ids:
        return {}
    tk = reader.schema.table("memberlux_term_keys")
    # The reader's own statement and normalisation, so the rows read exactly like the level's.
    stmt = (
        reader._key_stmt()
        .where(tk.c.user_id.in_(list(user_ids)), tk.c.term_id.in_(list(ancestors)))
        .order_by(tk.c.user_id, tk.c.id)
    )
    result: dict[int, list[KeyRow]] = {}
    with reader.engine.connect() as conn:
        for raw in conn.execute(stmt):
            row = _key_row(raw)
            if row.user_id is not None:
                result.setdefault(row.user_id, []).append(row)
    return result
