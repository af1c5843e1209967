"""Exactly-once under real concurrency, with the store on MariaDB (several sidecar processes share one store).

The unique ``mls_grants.idempotency_key`` decides between simultaneous requests for the same deal, and
conditional UPDATEs (claims) decide between simultaneous deliverers; neither relies on there being a
single process (grant_models.py).
"""

from __future__ import annotations

import threading
from collections import Counter

import pytest
import sqlalchemy as sa

from sidecar.bridge.auth import Principal
from sidecar.bridge.parsers import parse_grant_body
from sidecar.bridge.service import BridgeService, IntakeContext
from sidecar.store import db as store_db
from sidecar.store.grant_models import Grant, GrantAttempt
from tests.bridge.support import brief_body, new_email

pytestmark = pytest.mark.mariadb


@pytest.fixture
def mariadb_bridge(make_bridge, mariadb_database):
    bridge = make_bridge(store={"url": mariadb_database})
    assert bridge.runtime.store_engine.dialect.name == "mysql"
    assert store_db.is_current(bridge.runtime.store_engine)
    return bridge


def run_together(count: int, work) -> tuple[list, list[BaseException]]:
    barrier = threading.Barrier(count)
    results, errors, lock = [], [], threading.Lock()

    def runner(index: int) -> None:
        try:
            barrier.wait(10)
            outcome = work(index)
            with lock:
                results.append(outcome)
        except BaseException as exc:  # noqa: BLE001 - reported by the test
            with lock:
                errors.append(exc)

    threads = [threading.Thread(target=runner, args=(n,)) for n in range(count)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join(60)
    return results, errors


def test_sixteen_simultaneous_requests_for_one_deal_make_one_grant(mariadb_bridge):
    bridge = mariadb_bridge
    service = BridgeService(bridge.runtime)
    parsed = parse_grant_body(brief_body(new_email("race"), external_id="deal-race-16"))
    context = IntakeContext(channel="api", principal=Principal("api_key", "crm"))

    results, errors = run_together(16, lambda _n: service.accept(parsed, context))
    assert errors == []
    assert len(results) == 16
    ids = {acceptance.grant.id for acceptance in results}
    assert len(ids) == 1
    assert sum(1 for acceptance in results if not acceptance.replayed) == 1
    with bridge.runtime.sessions() as session:
        assert session.scalar(sa.select(sa.func.count()).select_from(Grant)) == 1

    bridge.deliver()
    (grant_id,) = ids
    assert bridge.grant(grant_id).status == "succeeded"
    assert len(bridge.keys_of_grant(grant_id)) == 1


def test_sixteen_simultaneous_copies_of_a_request_without_any_id_make_one_grant(mariadb_bridge):
    bridge = mariadb_bridge
    service = BridgeService(bridge.runtime)
    parsed = parse_grant_body(brief_body(new_email("no-id")))       # no external_id, no Idempotency-Key
    context = IntakeContext(channel="api", principal=Principal("api_key", "crm"))

    results, errors = run_together(16, lambda _n: service.accept(parsed, context))
    assert errors == [] and len(results) == 16
    assert len({acceptance.grant.id for acceptance in results}) == 1
    assert sum(1 for acceptance in results if not acceptance.replayed) == 1


def test_sixteen_simultaneous_conflicting_requests_never_merge(mariadb_bridge):
    bridge = mariadb_bridge
    service = BridgeService(bridge.runtime)
    email = new_email("conflict")
    context = IntakeContext(channel="api", principal=Principal("api_key", "crm"))

    def accept(index: int):
        # Two different payloads under one external id: the loser must be refused, never merged.
        duration = 1 if index % 2 else 3
        return service.accept(parse_grant_body(brief_body(email, duration=duration, external_id="deal-x")), context)

    results, errors = run_together(16, accept)
    assert len(results) + len(errors) == 16
    assert {type(e).__name__ for e in errors} <= {"IntakeRejected"}
    assert all(e.status == 409 for e in errors)
    with bridge.runtime.sessions() as session:
        grants = list(session.scalars(sa.select(Grant)))
    assert len(grants) == 1
    assert {acceptance.grant.id for acceptance in results} == {grants[0].id}
    assert {acceptance.grant.duration for acceptance in results} == {grants[0].duration}


def test_two_deliverers_racing_claim_each_grant_once(mariadb_bridge):
    bridge = mariadb_bridge
    grant_ids = [bridge.api(brief_body(external_id=f"deal-{n}")).get_json()["grant_id"] for n in range(12)]
    bridge.set_faults(latency_seconds=0.05)
    deliverers = [bridge.deliverer(holder=f"worker-{n}") for n in range(2)]

    results, errors = run_together(2, lambda n: deliverers[n].run_once(limit=50))
    assert errors == []
    processed = Counter(step.grant_id for steps in results for step in steps)
    assert set(processed) == set(grant_ids)
    assert set(processed.values()) == {1}
    for grant_id in grant_ids:
        assert bridge.grant(grant_id).status == "succeeded"
        assert len(bridge.keys_of_grant(grant_id)) == 1
    assert bridge.orders_handled() == 12
    with bridge.runtime.sessions() as session:
        workers = {}
        for attempt in session.scalars(sa.select(GrantAttempt)):
            workers.setdefault(attempt.grant_id, set()).add(attempt.worker)
    assert all(len(names) == 1 for names in workers.values())  # one worker per grant, start to finish
