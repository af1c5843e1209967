"""Specification of grant delivery under faults: at most one key per grant, whatever fails and when.

The MemberLux emulator's fault controls stand in for a site that is down, slow, or fails after writing
the order (legacy-plugins.md 4.3 "durable retry"; core.md 5.6 "treat timeouts and 5xx as unknown outcome,
confirm in the database before retrying"). Time moves by swapping ``runtime.clock`` for a ``FixedClock``.
"""

from __future__ import annotations

import json
import random
import signal
import subprocess
import sys
import time
from datetime import datetime, timedelta, timezone
from pathlib import Path

import sqlalchemy as sa

from sidecar.bridge.outbox import CONFIRM_ATTEMPTS, OutboxRunner
from sidecar.clock import FixedClock
from sidecar.devstack.emulator import set_auto_activation
from sidecar.store import db as store_db
from sidecar.store.grant_models import GrantAttempt
from tests.bridge.test_intake import (  # noqa: F401 - make_bridge and bridge are fixtures
    API_KEYS, PRODUCT_1_MONTH, Bridge, brief_body, bridge, make_bridge,
)

ROOT = Path(__file__).resolve().parents[2]


def freeze(bridge: Bridge, at: datetime | None = None) -> FixedClock:
    clock = FixedClock(at or datetime.now(timezone.utc))
    bridge.runtime.clock = clock
    return clock


def attempts(bridge: Bridge, grant_id: str) -> list[tuple[str, str]]:
    with bridge.runtime.sessions() as session:
        rows = session.scalars(sa.select(GrantAttempt).where(GrantAttempt.grant_id == grant_id)
                               .order_by(GrantAttempt.number))
        return [(a.kind, a.outcome) for a in rows]


def wait_until(condition, timeout: float = 20.0, interval: float = 0.05):
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        value = condition()
        if value:
            return value
        time.sleep(interval)
    raise AssertionError("condition not reached in time")


def test_site_down_keeps_the_grant_queued_with_growing_backoff_then_it_lands(bridge):
    clock = freeze(bridge)
    grant_id = bridge.api(brief_body()).get_json()["grant_id"]
    bridge.set_faults(down=True)
    deliverer = bridge.deliverer(rng=random.Random(3))

    delays = []
    for attempt in (1, 2, 3):
        before = clock.now()
        steps = deliverer.run_once()
        assert [s.grant_id for s in steps] == [grant_id]
        grant = bridge.grant(grant_id)
        assert (grant.status, grant.attempts, grant.outcome_unknown) == ("queued", attempt, True)
        assert grant.claimed_by is None
        assert "503" in grant.last_error
        delays.append((grant.next_attempt_at - before).total_seconds())
        assert deliverer.run_once() == []  # not due before the backoff has passed
        clock.instant = grant.next_attempt_at + timedelta(seconds=1)
    base = bridge.runtime.settings.bridge.retry_base_seconds
    for number, delay in enumerate(delays):
        assert 0.5 * base * 2 ** number <= delay <= 1.5 * base * 2 ** number
    assert bridge.orders_handled() == 0 and bridge.keys_of_grant(grant_id) == []

    bridge.set_faults(down=False)
    steps = deliverer.run_once()
    assert [s.status for s in steps] == ["succeeded"]
    assert len(bridge.keys_of_grant(grant_id)) == 1
    assert bridge.orders_handled() == 1
    # Each pass after an unknown outcome looked the grant up before ordering again.
    assert attempts(bridge, grant_id) == [("order", "unknown"), ("lookup", "not_found"), ("order", "unknown"),
                                          ("lookup", "not_found"), ("order", "unknown"), ("lookup", "not_found"),
                                          ("order", "ok"), ("confirm", "found")]


def test_order_written_but_answered_500_is_confirmed_without_a_second_order(bridge):
    clock = freeze(bridge)
    grant_id = bridge.api(brief_body()).get_json()["grant_id"]
    orders_before = bridge.shop_orders()
    bridge.set_faults(fail_next=["after"])
    deliverer = bridge.deliverer()
    deliverer.run_once()
    grant = bridge.grant(grant_id)
    assert (grant.status, grant.outcome_unknown) == ("queued", True)
    assert len(bridge.keys_of_grant(grant_id)) == 1  # the site did grant

    clock.instant = grant.next_attempt_at + timedelta(seconds=1)
    steps = deliverer.run_once()
    assert [s.status for s in steps] == ["succeeded"]
    assert bridge.orders_handled() == 1
    assert bridge.shop_orders() == orders_before + 1
    keys = bridge.keys_of_grant(grant_id)
    assert len(keys) == 1
    assert bridge.grant(grant_id).key_id == keys[0].id
    assert attempts(bridge, grant_id) == [("order", "unknown"), ("lookup", "found")]


def test_order_failing_before_any_write_is_ordered_again_once(bridge):
    clock = freeze(bridge)
    grant_id = bridge.api(brief_body()).get_json()["grant_id"]
    bridge.set_faults(fail_next=["before"])
    deliverer = bridge.deliverer()
    deliverer.run_once()
    assert bridge.keys_of_grant(grant_id) == []
    clock.instant = bridge.grant(grant_id).next_attempt_at + timedelta(seconds=1)
    deliverer.run_once()
    assert bridge.grant(grant_id).status == "succeeded"
    assert len(bridge.keys_of_grant(grant_id)) == 1
    assert bridge.orders_handled() == 1


_DOOMED_WORKER = """
import json, sys
from sidecar.bootstrap import build_runtime
from sidecar.bridge.outbox import GrantDeliverer
from sidecar.config import settings_from_mapping

runtime = build_runtime(settings_from_mapping(json.loads(sys.argv[1]), environ={}))
GrantDeliverer(runtime, holder="doomed-worker").run_once()
print("finished", flush=True)
"""


def test_worker_killed_mid_call_leaves_exactly_one_key(bridge, small_site, emulator):
    grant_id = bridge.api(brief_body()).get_json()["grant_id"]
    base_url, user, password, _engine = emulator
    settings = {"wordpress": {"db_url": small_site},
                "memberlux": {"rest_base_url": base_url + "/wp-json", "rest_user": user, "rest_password": password,
                              "timeout_seconds": 30},
                "store": {"url": bridge.runtime.settings.store.url},
                "bridge": {"api_keys": dict(API_KEYS)}}
    bridge.set_faults(latency_seconds=2.0)
    worker = subprocess.Popen([sys.executable, "-c", _DOOMED_WORKER, json.dumps(settings)], cwd=ROOT,
                              stdout=subprocess.PIPE, stderr=subprocess.PIPE)
    try:
        wait_until(lambda: bridge.grant(grant_id).status == "delivering", timeout=30)
        time.sleep(0.5)  # the order request is on the wire; the site sleeps before answering
        assert worker.poll() is None, worker.communicate()
        worker.send_signal(signal.SIGKILL)
        worker.wait(timeout=10)
    finally:
        if worker.poll() is None:
            worker.kill()
            worker.wait(timeout=10)
    assert worker.returncode == -signal.SIGKILL
    assert b"finished" not in worker.stdout.read()

    grant = bridge.grant(grant_id)
    assert (grant.status, grant.outcome_unknown, grant.claimed_by) == ("delivering", True, "doomed-worker")
    deliverer = bridge.deliverer()
    assert deliverer.run_once() == []  # the dead worker's claim still holds
    wait_until(lambda: bridge.orders_handled() == 1, timeout=15)  # the site finished the order anyway
    bridge.set_faults(latency_seconds=0)

    freeze(bridge, grant.claim_expires_at + timedelta(seconds=1))
    steps = deliverer.run_once()
    assert [(s.grant_id, s.status) for s in steps] == [(grant_id, "succeeded")]
    assert len(bridge.keys_of_grant(grant_id)) == 1
    assert bridge.orders_handled() == 1
    assert attempts(bridge, grant_id) == [("lookup", "found")]


def test_permanent_refusal_fails_the_grant_with_the_reason_and_is_not_retried(bridge):
    clock = freeze(bridge)
    grant_id = bridge.api(brief_body()).get_json()["grant_id"]
    bridge.site("DELETE FROM wp_posts WHERE ID = :id", id=PRODUCT_1_MONTH)
    deliverer = bridge.deliverer()
    steps = deliverer.run_once()
    assert [s.status for s in steps] == ["failed"]
    grant = bridge.grant(grant_id)
    assert grant.status == "failed"
    assert "404" in grant.last_error and f"product_id: {PRODUCT_1_MONTH} not found" in grant.last_error
    assert grant.completed_at is not None
    clock.instant += timedelta(days=3)
    assert deliverer.run_once() == []
    assert bridge.grant(grant_id).attempts == 1
    assert bridge.keys_of_grant(grant_id) == []


def test_gives_up_after_give_up_after_hours(make_bridge):
    bridge = make_bridge(give_up_after_hours=1)
    clock = freeze(bridge)
    start = clock.now()
    grant_id = bridge.api(brief_body()).get_json()["grant_id"]
    bridge.set_faults(down=True)
    deliverer = bridge.deliverer()
    deliverer.run_once()
    clock.instant = start + timedelta(minutes=50)
    deliverer.run_once()
    assert bridge.grant(grant_id).status == "queued"  # still inside the hour
    clock.instant = start + timedelta(minutes=61)
    steps = deliverer.run_once()
    assert [s.status for s in steps] == ["failed"]
    grant = bridge.grant(grant_id)
    assert grant.status == "failed" and grant.completed_at is not None
    assert grant.last_error.startswith("gave up after 3 attempts over 1 h")
    clock.instant += timedelta(days=1)
    assert deliverer.run_once() == []


def test_confirm_phase_never_orders_again(bridge):
    set_auto_activation(bridge.site_engine, False, prefix="wp_")
    clock = freeze(bridge)
    grant_id = bridge.api(brief_body()).get_json()["grant_id"]
    keys_before = bridge.key_count()
    deliverer = bridge.deliverer()
    statuses = []
    for _ in range(CONFIRM_ATTEMPTS + 3):
        for step in deliverer.run_once():
            statuses.append(step.status)
        clock.instant += timedelta(hours=1)
    assert statuses == ["confirming"] * (CONFIRM_ATTEMPTS - 1) + ["failed"]
    grant = bridge.grant(grant_id)
    assert grant.status == "failed"
    assert "auto-activation" in grant.last_error and "not ordered again" in grant.last_error
    assert bridge.orders_handled() == 1
    assert attempts(bridge, grant_id) == [("order", "ok")] + [("confirm", "not_found")] * CONFIRM_ATTEMPTS
    # The add-on generated one key and left it unused: nothing more, nothing less.
    new_rows = bridge.site("SELECT status, user_id FROM wp_memberlux_term_keys ORDER BY id DESC LIMIT 1")
    assert bridge.key_count() == keys_before + 1
    assert (new_rows[0].status, new_rows[0].user_id) == ("new", None)


def test_store_unavailable_answers_503_with_retry_after_and_recovers(bridge, tmp_path):
    working = bridge.runtime.sessions
    broken = sa.create_engine(f"sqlite:///{tmp_path / 'no-such-directory' / 'store.sqlite'}")
    bridge.runtime.sessions = store_db.session_factory(broken)
    try:
        for response in (bridge.api(brief_body()), bridge.api(brief_body(external_id="deal-503")),
                         bridge.signed({"email": "a@example.org", "key": {"term_id": 7, "duration": 1}})):
            assert response.status_code == 503
            assert response.headers["Retry-After"].isdigit()
            assert response.get_json()["code"] == "store_unavailable"
            assert response.get_json()["ok"] is False
    finally:
        bridge.runtime.sessions = working
        broken.dispose()
    response = bridge.api(brief_body(external_id="deal-503"))
    assert response.status_code == 202
    assert len(bridge.grants()) == 1


def test_outbox_runner_with_four_threads_delivers_twenty_grants_once_each(bridge):
    grant_ids = [bridge.api(brief_body(external_id=f"bulk-{n}")).get_json()["grant_id"] for n in range(20)]
    bridge.set_faults(latency_seconds=0.2)
    runner = OutboxRunner(bridge.deliverer(holder="runner"), concurrency=4, poll_seconds=0.05)
    runner.start()
    try:
        wait_until(lambda: all(bridge.grant(g).status == "succeeded" for g in grant_ids), timeout=60, interval=0.1)
    finally:
        runner.stop(timeout=30)
    assert bridge.orders_handled() == 20
    for grant_id in grant_ids:
        assert len(bridge.keys_of_grant(grant_id)) == 1
    with bridge.runtime.sessions() as session:
        orders = list(session.scalars(sa.select(GrantAttempt).where(GrantAttempt.kind == "order")))
    assert len(orders) == 20
    intervals = sorted((a.started_at, a.finished_at) for a in orders)
    overlapping = max(sum(1 for s, f in intervals if s <= start < f) for start, _ in intervals)
    assert overlapping >= 2  # the orders really ran side by side
