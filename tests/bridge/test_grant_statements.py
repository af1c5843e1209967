"""What one delivered grant costs the store, counted: commits and statements, on SQLite and MariaDB.

A grant ordered once and found at once is three commits (the claim, the ``delivering`` mark before the
call, the answer with its read-back and the success), one look for a rival order of the same customer
between the last two, one count of the grant's attempts before numbering the new ones, and no statement
that only reads back what the worker itself just wrote. The
figures in time live in bench/bridge.py (phase 4, "overhead").
"""

from __future__ import annotations

from collections import Counter
from contextlib import contextmanager
from datetime import datetime, timezone

import pytest
import sqlalchemy as sa

from sidecar.clock import FixedClock
from sidecar.store.grant_models import Grant, GrantAttempt
from tests.bridge.support import Bridge, brief_body


@pytest.fixture
def bridge(store_section, make_bridge) -> Bridge:
    return make_bridge(store=store_section)


@contextmanager
def counted(engine: sa.Engine):
    """Store statements by kind and table, and commits, during the block."""
    counts: Counter[str] = Counter()

    def statement(_conn, _cursor, text: str, *_args) -> None:
        words = text.split()
        verb = words[0].upper()
        if verb == "SELECT" and "count(" in text.lower() and "INSERT" not in text:
            counts["SELECT count"] += 1
        table = next((w for w in words if w.startswith("mls_")), "?").split("(")[0].split(".")[0].rstrip(",")
        counts[f"{verb} {table}"] += 1

    def commit(_conn) -> None:
        counts["COMMIT"] += 1

    sa.event.listen(engine, "before_cursor_execute", statement)
    sa.event.listen(engine, "commit", commit)
    try:
        yield counts
    finally:
        sa.event.remove(engine, "before_cursor_execute", statement)
        sa.event.remove(engine, "commit", commit)


def test_a_delivered_grant_is_three_commits_and_no_read_back_of_its_own_writes(bridge):
    bridge.runtime.clock = FixedClock(datetime.now(timezone.utc))
    grant_id = bridge.api(brief_body()).get_json()["grant_id"]
    deliverer = bridge.deliverer()
    with counted(bridge.runtime.store_engine) as counts:
        step = deliverer.process_by_id(grant_id)
    assert step is not None and step.status == "succeeded"
    assert counts["COMMIT"] == 3
    # Attempts numbered after a plain count (an INSERT ... SELECT counting them deadlocks on MariaDB).
    assert counts["SELECT count"] == 1
    # The claim's read of the row and the look for a rival of the same customer: nothing else reads grants.
    assert counts["SELECT mls_grants"] == 2
    # The claim, the mark, the final state.
    assert counts["UPDATE mls_grants"] == 3
    assert counts["INSERT mls_grant_attempts"] == 1   # the answer and the read-back, one statement


def test_the_grant_a_pass_returns_is_the_stored_row(bridge):
    bridge.runtime.clock = FixedClock(datetime.now(timezone.utc))
    grant_id = bridge.api(brief_body()).get_json()["grant_id"]
    deliverer = bridge.deliverer()
    grant = deliverer.claim(grant_id)
    returned = deliverer.deliver(grant)
    stored = bridge.grant(grant_id)
    columns = [c.key for c in sa.inspect(Grant).column_attrs]
    assert returned.status == "succeeded"

    whole_seconds = bridge.runtime.store_engine.dialect.name != "sqlite"

    def same(value):
        # Stored instants come back naive UTC, and in whole seconds on MariaDB (DATETIME columns).
        if isinstance(value, datetime):
            value = value.replace(tzinfo=None, microsecond=0 if whole_seconds else value.microsecond)
        return value

    assert {c: same(getattr(returned, c)) for c in columns} == {c: same(getattr(stored, c)) for c in columns}


def test_attempts_are_numbered_after_the_stored_ones_one_or_two_at_a_time(bridge):
    clock = FixedClock(datetime.now(timezone.utc))
    bridge.runtime.clock = clock
    first = bridge.api(brief_body()).get_json()["grant_id"]
    other = bridge.api(brief_body()).get_json()["grant_id"]
    deliverer = bridge.deliverer()
    grant, rival = deliverer.claim(first), deliverer.claim(other)
    now = clock.now()
    deliverer._attempt(grant, "lookup", "not_found", now)
    deliverer._attempt(rival, "lookup", "not_found", now)
    deliverer._attempt(grant, "lookup", "not_found", now)
    deliverer._attempt(grant, "order", "ok", now, then={"kind": "confirm", "outcome": "found", "started": now})
    deliverer._attempt(grant, "confirm", "not_found", now)
    with bridge.runtime.sessions() as session:
        numbered = [(a.grant_id, a.number, a.kind) for a in session.scalars(
            sa.select(GrantAttempt).order_by(GrantAttempt.grant_id, GrantAttempt.number))]
    assert [n for g, n, _k in numbered if g == first] == [1, 2, 3, 4, 5]
    assert [k for g, _n, k in numbered if g == first] == ["lookup", "lookup", "order", "confirm", "confirm"]
    assert [n for g, n, _k in numbered if g == other] == [1]
