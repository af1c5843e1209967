"""Workers recording attempts of different grants at the same moment, on SQLite and MariaDB.

Every pass records what it did as numbered attempt rows of its grant. On MariaDB an INSERT that counts
the grant's stored attempts in its own SELECT takes shared locks on the rows it reads and the table's
AUTO-INC lock for the whole statement; two of them deadlock, and the loser's transaction (the site's
answer with it) is rolled back, leaving the grant ``delivering`` until its claim expires. These tests
run many passes at once and require every grant delivered in its own pass, numbered without gaps; and
each bookkeeping step of a pass (the claim, the mark before the order, the record of the answer) that the
server rolls back because of a concurrent transaction runs again in the same pass.
"""

from __future__ import annotations

import threading
from concurrent.futures import ThreadPoolExecutor

import pytest
import sqlalchemy as sa

from sidecar.store.grant_models import GrantAttempt
from tests.bridge.support import Bridge, brief_body
from tests.contention import CONTENTION, failing_once

WORKERS = 8
GRANTS = 48


@pytest.fixture
def bridge(store_section, make_bridge) -> Bridge:
    return make_bridge(store=store_section)


def test_concurrent_passes_deliver_every_grant_in_its_own_pass(bridge):
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


#: Statements of one delivery, each the first of its kind in a pass: the claim, the ``delivering`` mark
#: committed before the order, and the record of the site's answer with the key found.
STEPS = {
    "claim": lambda sql, p: sql.startswith("UPDATE mls_grants") and p.get("claim_expires_at") is not None,
    "mark": lambda sql, p: sql.startswith("UPDATE mls_grants") and p.get("status") == "delivering",
    "record": lambda sql, p: sql.startswith("INSERT INTO mls_grant_attempts"),
}


@pytest.fixture
def mariadb_bridge(mariadb_database, make_bridge) -> Bridge:
    return make_bridge(store={"url": mariadb_database})


@pytest.mark.mariadb
@pytest.mark.parametrize("step", list(STEPS))
@pytest.mark.parametrize("code, message", CONTENTION)
def test_a_step_the_store_rolled_back_for_contention_runs_again_in_the_same_pass(mariadb_bridge, step, code, message):
    bridge = mariadb_bridge
    grant_id = bridge.api(brief_body()).get_json()["grant_id"]
    orders_before = bridge.orders_handled()
    with failing_once(bridge.runtime.store_engine, STEPS[step], code, message) as failed:
        step_done = bridge.deliverer().process_by_id(grant_id)
    assert failed, "the injected failure never happened"
    assert step_done is not None and step_done.status == "succeeded"
    assert bridge.orders_handled() == orders_before + 1           # ordered once, not again
    assert len(bridge.keys_of_grant(grant_id)) == 1
    with bridge.runtime.sessions() as session:
        rows = session.execute(sa.select(GrantAttempt.number, GrantAttempt.kind)
                               .where(GrantAttempt.grant_id == grant_id).order_by(GrantAttempt.number)).all()
    assert [tuple(r) for r in rows] == [(1, "order"), (2, "confirm")]
    grant = bridge.grant(grant_id)
    assert grant.claimed_by is None and grant.claim_expires_at is None


@pytest.mark.mariadb
def test_a_store_error_that_is_not_contention_is_not_retried(mariadb_bridge):
    bridge = mariadb_bridge
    grant_id = bridge.api(brief_body()).get_json()["grant_id"]
    statements: list[str] = []
    sa.event.listen(bridge.runtime.store_engine, "before_cursor_execute",
                    lambda _c, _cur, statement, *_a: statements.append(statement))
    with failing_once(bridge.runtime.store_engine, STEPS["record"], 1146, "Table 'mls_grant_attempts' doesn't exist"):
        with pytest.raises(sa.exc.OperationalError):
            bridge.deliverer().process(bridge.deliverer().claim(grant_id))
    assert sum(s.startswith("INSERT INTO mls_grant_attempts") for s in statements) == 1
    assert bridge.grant(grant_id).status == "delivering"   # left for the lookup after the claim expires
