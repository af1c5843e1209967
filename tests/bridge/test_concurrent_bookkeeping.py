"""Workers recording attempts of different grants at the same moment, on SQLite and MariaDB.

Every pass records what it did as numbered attempt rows of its grant. On MariaDB an INSERT that counts
the grant's stored attempts in its own SELECT takes shared locks on the rows it reads and the table's
AUTO-INC lock for the whole statement; two of them deadlock, and the loser's transaction (the site's
answer with it) is rolled back, leaving the grant ``delivering`` until its claim expires. These tests
run many passes at once and require every grant delivered in its own pass, numbered without gaps; and
a record the server rolls back because of a concurrent transaction is written again in the same pass.
"""

from __future__ import annotations

import threading
from concurrent.futures import ThreadPoolExecutor
from contextlib import contextmanager

import pymysql
import pytest
import sqlalchemy as sa

from sidecar.store.grant_models import GrantAttempt
from tests.bridge.support import Bridge, brief_body

WORKERS = 8
GRANTS = 48


@pytest.fixture
def bridge(store_section, make_bridge) -> Bridge:
    return make_bridge(store=store_section)


def test_concurrent_passes_deliver_every_grant_in_its_own_pass(bridge, caplog):
    grant_ids = [bridge.api(brief_body()).get_json()["grant_id"] for _ in range(GRANTS)]
    start = threading.Barrier(WORKERS)
    deliverers = [bridge.deliverer(holder=f"worker-{n}") for n in range(WORKERS)]

    def work(n: int) -> list:
        start.wait()
        return [deliverers[n].process_by_id(grant_id) for grant_id in grant_ids[n::WORKERS]]

    with ThreadPoolExecutor(WORKERS) as pool:
        steps = [step for done in pool.map(work, range(WORKERS)) for step in done]

    assert [s.status for s in steps] == ["succeeded"] * GRANTS
    assert [g.status for g in bridge.grants()] == ["succeeded"] * GRANTS
    with bridge.runtime.sessions() as session:
        numbers: dict[str, list[int]] = {}
        for grant_id, number in session.execute(
                sa.select(GrantAttempt.grant_id, GrantAttempt.number).order_by(GrantAttempt.grant_id, GrantAttempt.number)):
            numbers.setdefault(grant_id, []).append(number)
    assert set(numbers) == set(grant_ids)
    assert all(found == list(range(1, len(found) + 1)) for found in numbers.values()), numbers


@contextmanager
def failing_once(engine: sa.Engine, table: str, error: Exception):
    """The first INSERT into ``table`` fails with the driver's ``error``, as SQLAlchemy raises it."""
    failed: list[str] = []

    def before(_conn, _cursor, statement: str, parameters, *_args) -> None:
        if not failed and statement.startswith(f"INSERT INTO {table}"):
            failed.append(statement)
            raise sa.exc.OperationalError(statement, parameters, error)

    sa.event.listen(engine, "before_cursor_execute", before)
    try:
        yield failed
    finally:
        sa.event.remove(engine, "before_cursor_execute", before)


@pytest.fixture
def mariadb_bridge(mariadb_database, make_bridge) -> Bridge:
    return make_bridge(store={"url": mariadb_database})


@pytest.mark.mariadb
@pytest.mark.parametrize("code, message", [
    (1213, "Deadlock found when trying to get lock; try restarting transaction"),
    (1467, "Failed to read auto-increment value from storage engine"),
    (1205, "Lock wait timeout exceeded; try restarting transaction"),
])
def test_an_answer_whose_record_the_store_rolled_back_is_recorded_again_in_the_same_pass(mariadb_bridge, code, message):
    bridge = mariadb_bridge
    grant_id = bridge.api(brief_body()).get_json()["grant_id"]
    orders_before = bridge.orders_handled()
    with failing_once(bridge.runtime.store_engine, "mls_grant_attempts",
                      pymysql.err.OperationalError(code, message)) as failed:
        step = bridge.deliverer().process_by_id(grant_id)
    assert failed, "the injected failure never happened"
    assert step is not None and step.status == "succeeded"
    assert bridge.orders_handled() == orders_before + 1           # ordered once, not again
    assert len(bridge.keys_of_grant(grant_id)) == 1
    with bridge.runtime.sessions() as session:
        rows = session.execute(sa.select(GrantAttempt.number, GrantAttempt.kind, GrantAttempt.outcome)
                               .where(GrantAttempt.grant_id == grant_id).order_by(GrantAttempt.number)).all()
    assert [(n, kind) for n, kind, _outcome in rows] == [(1, "order"), (2, "confirm")]


@pytest.mark.mariadb
def test_a_store_error_that_is_not_contention_is_not_retried(mariadb_bridge):
    bridge = mariadb_bridge
    grant_id = bridge.api(brief_body()).get_json()["grant_id"]
    statements: list[str] = []
    sa.event.listen(bridge.runtime.store_engine, "before_cursor_execute",
                    lambda _c, _cur, statement, *_a: statements.append(statement))
    with failing_once(bridge.runtime.store_engine, "mls_grant_attempts",
                      pymysql.err.OperationalError(1146, "Table 'mls_grant_attempts' doesn't exist")):
        with pytest.raises(sa.exc.OperationalError):
            bridge.deliverer().process(bridge.deliverer().claim(grant_id))
    assert sum(s.startswith("INSERT INTO mls_grant_attempts") for s in statements) == 1
    assert bridge.grant(grant_id).status == "delivering"   # left for the lookup after the claim expires
