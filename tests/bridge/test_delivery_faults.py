"""Specification of grant delivery under faults: at most one key per grant, whatever fails and when.

The MemberLux emulator's fault controls stand in for a site that is down, slow, or fails after writing
the order (legacy-plugins.md 4.3 "durable retry"; core.md 5.6 and 13: a timed-out order keeps running
on the site, so an unknown outcome is looked for until it has settled, never ordered again before).
Time moves by swapping ``runtime.clock`` for a ``FixedClock``.
"""

from __future__ import annotations

import json
import random
import time
from datetime import datetime, timedelta, timezone
from pathlib import Path

import pytest
import sqlalchemy as sa

from sidecar.bridge.outbox import OutboxRunner
from sidecar.bridge.reasons import last_error
from sidecar.bridge.service import BridgeService
from sidecar.clock import FixedClock
from sidecar.devstack.emulator import set_auto_activation
from sidecar.memberlux.rest import Customer, MemberLuxRestClient
from sidecar.store import audit
from sidecar.store import db as store_db
from sidecar.store.grant_models import GrantAttempt
from sidecar.store.db import unit_of_work
from sidecar.store.webhook_models import WebhookEndpoint, WebhookEvent
from sidecar.webhooks.events import SCHEMAS
from tests.bridge.support import PRODUCT_1_MONTH, Bridge, brief_body

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


def listen(bridge: Bridge) -> None:
    """An endpoint for every event, so that emitted events are stored (nobody listening: none kept)."""
    now = datetime.now(timezone.utc)
    with unit_of_work(bridge.runtime.sessions) as session:
        session.add(WebhookEndpoint(name="all", url="https://hooks.example.com/x", events=["*"],
                                    secret="whsec_MfKQ9r8GKYqrTwjUPD8ILPZIo2LaLaSw", source="ui", created_at=now,
                                    updated_at=now, consecutive_failures=0))


def events(bridge: Bridge, kind: str) -> list[dict]:
    with bridge.runtime.sessions() as session:
        return [e.data for e in session.scalars(sa.select(WebhookEvent).where(WebhookEvent.type == kind)
                                                .order_by(WebhookEvent.created_at))]


def wait_until(condition, timeout: float = 20.0, interval: float = 0.05):
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        value = condition()
        if value:
            return value
        time.sleep(interval)
    raise AssertionError("condition not reached in time")


def client(bridge: Bridge, timeout: float = 30.0, url: str | None = None) -> MemberLuxRestClient:
    return MemberLuxRestClient(url or bridge.emulator_url + "/wp-json", bridge.api_user, bridge.api_password,
                               timeout=timeout)


def settle(bridge: Bridge) -> timedelta:
    return timedelta(seconds=bridge.runtime.settings.bridge.settle_seconds)


def run_until_final(bridge: Bridge, clock: FixedClock, grant_id: str, deliverer=None, limit: int = 500) -> list[str]:
    """Run the worker pass after pass, moving the clock to each next attempt, until the grant is final."""
    deliverer = deliverer or bridge.deliverer()
    statuses: list[str] = []
    for _ in range(limit):
        statuses.extend(step.status for step in deliverer.run_once())
        grant = bridge.grant(grant_id)
        if grant.status in ("succeeded", "duplicated", "failed", "cancelled"):
            return statuses
        clock.instant = max(clock.instant, grant.next_attempt_at + timedelta(seconds=1))
    raise AssertionError(f"grant {grant_id} not final after {limit} passes: {statuses[-5:]}")


def test_unreachable_site_keeps_the_grant_queued_with_growing_backoff_then_it_lands(bridge):
    clock = freeze(bridge)
    grant_id = bridge.api(brief_body()).get_json()["grant_id"]
    closed_port = bridge.deliverer(rng=random.Random(3), rest_client=client(bridge, url="http://127.0.0.1:9/wp-json"))

    delays = []
    for attempt in (1, 2, 3):
        before = clock.now()
        steps = closed_port.run_once()
        assert [s.grant_id for s in steps] == [grant_id]
        grant = bridge.grant(grant_id)
        # Nothing left this process: a plain retry later, no settle time, nothing counted as sent.
        assert (grant.status, grant.attempts, grant.orders_sent, grant.outcome_unknown) == ("queued", attempt, 0, False)
        assert grant.claimed_by is None and grant.settle_until is None
        assert "unreachable" in grant.last_error
        delays.append((grant.next_attempt_at - before).total_seconds())
        assert closed_port.run_once() == []  # not due before the backoff has passed
        clock.instant = grant.next_attempt_at + timedelta(seconds=1)
    base = bridge.runtime.settings.bridge.retry_base_seconds
    for number, delay in enumerate(delays):
        assert 0.5 * base * 2 ** number <= delay <= 1.5 * base * 2 ** number
    assert bridge.orders_handled() == 0 and bridge.keys_of_grant(grant_id) == []

    steps = bridge.deliverer().run_once()
    assert [s.status for s in steps] == ["succeeded"]
    assert len(bridge.keys_of_grant(grant_id)) == 1
    assert bridge.orders_handled() == 1
    assert attempts(bridge, grant_id) == [("order", "unreachable")] * 3 + [("order", "ok"), ("confirm", "found")]


def test_a_site_in_maintenance_mode_is_an_unknown_outcome_looked_for_until_settled(bridge):
    clock = freeze(bridge)
    grant_id = bridge.api(brief_body()).get_json()["grant_id"]
    bridge.set_faults(down=True)
    deliverer = bridge.deliverer()
    deliverer.run_once()
    grant = bridge.grant(grant_id)
    assert (grant.status, grant.orders_sent) == ("unknown", 1) and "503" in grant.last_error
    bridge.set_faults(down=False)
    assert run_until_final(bridge, clock, grant_id, deliverer)[-1] == "succeeded"
    assert clock.now() >= grant.settle_until  # not ordered again before the settle time
    assert bridge.orders_handled() == 1 and len(bridge.keys_of_grant(grant_id)) == 1


def test_order_written_but_answered_500_is_confirmed_by_its_key_without_a_second_order(bridge):
    clock = freeze(bridge)
    grant_id = bridge.api(brief_body()).get_json()["grant_id"]
    orders_before = bridge.shop_orders()
    bridge.set_faults(fail_next=["after"])
    deliverer = bridge.deliverer()
    deliverer.run_once()
    grant = bridge.grant(grant_id)
    assert (grant.status, grant.outcome_unknown, grant.orders_sent) == ("unknown", True, 1)
    assert grant.settle_until >= clock.now() + settle(bridge) - timedelta(seconds=1)
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


def test_unknown_outcome_without_any_trace_is_ordered_again_only_after_the_settle_time(bridge):
    clock = freeze(bridge)
    grant_id = bridge.api(brief_body()).get_json()["grant_id"]
    bridge.set_faults(fail_next=["before"])  # a PHP fatal before any write: the site did nothing
    deliverer = bridge.deliverer()
    deliverer.run_once()
    settle_until = bridge.grant(grant_id).settle_until
    looks = 0
    while True:
        clock.instant = bridge.grant(grant_id).next_attempt_at + timedelta(seconds=1)
        if clock.now() >= settle_until:
            break
        deliverer.run_once()
        looks += 1
        assert bridge.grant(grant_id).status == "unknown"
        assert bridge.orders_handled() == 0
    poll = bridge.runtime.settings.bridge.unknown_poll_seconds
    # Looked once per poll interval (the test moves the clock one second past each due time).
    assert looks >= bridge.runtime.settings.bridge.settle_seconds // (poll + 1) - 1

    steps = deliverer.run_once()
    assert [s.status for s in steps] == ["succeeded"]
    assert len(bridge.keys_of_grant(grant_id)) == 1
    assert bridge.orders_handled() == 1
    trail = attempts(bridge, grant_id)
    assert trail[0] == ("order", "unknown") and set(trail[1:-3]) == {("lookup", "not_found")}
    assert trail[-3:] == [("lookup", "settled"), ("order", "ok"), ("confirm", "found")]


def test_a_timed_out_order_that_the_site_finishes_later_is_confirmed_not_ordered_again(bridge):
    clock = freeze(bridge)
    grant_id = bridge.api(brief_body()).get_json()["grant_id"]
    bridge.set_faults(latency_seconds=2.0)
    impatient = bridge.deliverer(rest_client=client(bridge, timeout=0.5))
    impatient.run_once()
    grant = bridge.grant(grant_id)
    assert grant.status == "unknown"
    assert bridge.keys_of_grant(grant_id) == []  # the site is still at work

    clock.instant = grant.next_attempt_at + timedelta(seconds=1)
    impatient.run_once()  # looked too early: nothing yet, and nothing is ordered
    assert bridge.grant(grant_id).status == "unknown" and bridge.orders_handled() == 0
    wait_until(lambda: bridge.orders_handled() == 1, timeout=15)
    bridge.set_faults(latency_seconds=0)

    clock.instant = bridge.grant(grant_id).next_attempt_at + timedelta(seconds=1)
    assert [s.status for s in impatient.run_once()] == ["succeeded"]
    assert len(bridge.keys_of_grant(grant_id)) == 1 and bridge.orders_handled() == 1


def test_a_stray_second_key_with_the_grants_id_is_never_a_silent_success(bridge):
    freeze(bridge)
    listen(bridge)
    grant_id = bridge.api(brief_body()).get_json()["grant_id"]
    email = bridge.grant(grant_id).email
    # An earlier call of this grant that the site finished after all (e.g. beyond the settle time).
    client(bridge).order_product(Customer(email), PRODUCT_1_MONTH, grant_id)
    steps = bridge.deliver()
    assert [s.status for s in steps] == ["duplicated"]
    keys = [k.id for k in bridge.keys_of_grant(grant_id)]
    assert len(keys) == 2
    grant = bridge.grant(grant_id)
    assert grant.status == "duplicated" and grant.meta["duplicate_keys"] == keys
    assert str(keys[0]) in grant.last_error and str(keys[1]) in grant.last_error
    [duplicated] = events(bridge, "grant.duplicated")
    assert duplicated["key_ids"] == keys and set(duplicated) == set(SCHEMAS["grant.duplicated"])
    assert [k["key_id"] for k in duplicated["keys"]] == keys
    assert [e["grant_id"] for e in events(bridge, "grant.succeeded")] == [grant_id]  # the access is there


def test_a_late_second_key_of_a_grant_ordered_twice_is_caught_after_its_success(bridge):
    clock = freeze(bridge)
    listen(bridge)
    grant_id = bridge.api(brief_body()).get_json()["grant_id"]
    bridge.set_faults(fail_next=["before"])
    deliverer = bridge.deliverer()
    assert run_until_final(bridge, clock, grant_id, deliverer)[-1] == "succeeded"
    grant = bridge.grant(grant_id)
    assert grant.orders_sent == 2
    assert grant.verify_until == clock.now() + settle(bridge)
    assert [s.status for s in deliverer.verify_recent()] == ["succeeded"]  # re-read: still one key

    # The first call, which had left no trace, lands after all.
    client(bridge).order_product(Customer(grant.email), PRODUCT_1_MONTH, grant_id)
    steps = deliverer.verify_recent()
    assert [(s.grant_id, s.status) for s in steps] == [(grant_id, "duplicated")]
    assert len(events(bridge, "grant.succeeded")) == 1 and len(events(bridge, "grant.duplicated")) == 1
    assert deliverer.verify_recent() == []


def test_a_grant_ordered_once_is_not_watched_after_its_success(bridge):
    freeze(bridge)
    grant_id = bridge.api(brief_body()).get_json()["grant_id"]
    bridge.deliver()
    assert bridge.grant(grant_id).verify_until is None
    assert bridge.deliverer().verify_recent() == []


def test_a_worker_whose_claim_expired_writes_nothing_over_the_new_holder(bridge):
    clock = freeze(bridge)
    grant_id = bridge.api(brief_body()).get_json()["grant_id"]
    slow = bridge.deliverer(holder="stalled-worker")
    stale_copy = slow.claim(grant_id)
    assert stale_copy is not None
    clock.instant = stale_copy.claim_expires_at + timedelta(seconds=1)  # stalled past its lease
    assert [s.status for s in bridge.deliverer(holder="second-worker").run_once()] == ["succeeded"]

    step = slow.process(stale_copy)  # wakes up and carries on from what it had read
    assert step.outcome == "claim_lost"
    grant = bridge.grant(grant_id)
    assert grant.status == "succeeded" and grant.orders_sent == 1 and grant.claimed_by is None
    assert bridge.orders_handled() == 1 and len(bridge.keys_of_grant(grant_id)) == 1


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
    deliverer = bridge.deliverer(rest_client=client(bridge, url="http://127.0.0.1:9/wp-json"))
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
    said = last_error(grant)                    # the same, as a message for the admin pages
    assert (said.code, said.params["attempts"], said.params["reason"].code) == ("grants.gave_up", 3, "grants.unreachable")
    assert said.english() == grant.last_error
    clock.instant += timedelta(days=1)
    assert deliverer.run_once() == []


def test_an_order_that_never_gets_a_key_is_read_back_until_settled_and_never_ordered_again(bridge):
    set_auto_activation(bridge.site_engine, False, prefix="wp_")
    clock = freeze(bridge)
    grant_id = bridge.api(brief_body()).get_json()["grant_id"]
    keys_before = bridge.key_count()
    statuses = run_until_final(bridge, clock, grant_id)
    assert set(statuses[:-1]) == {"confirming"} and statuses[-1] == "failed"
    grant = bridge.grant(grant_id)
    assert clock.now() >= grant.settle_until
    assert "auto-activation" in grant.last_error and "not ordered again" in grant.last_error
    assert f"#{grant.order_id}" in grant.last_error
    assert bridge.orders_handled() == 1
    trail = attempts(bridge, grant_id)
    assert trail[0] == ("order", "ok") and set(trail[1:]) == {("confirm", "not_found")}
    # The add-on generated one key and left it unused: nothing more, nothing less.
    new_rows = bridge.site("SELECT status, user_id FROM wp_memberlux_term_keys ORDER BY id DESC LIMIT 1")
    assert bridge.key_count() == keys_before + 1
    assert (new_rows[0].status, new_rows[0].user_id) == ("new", None)


def test_admin_retry_of_an_order_without_key_looks_for_the_key_first_then_orders_anew(bridge):
    set_auto_activation(bridge.site_engine, False, prefix="wp_")
    clock = freeze(bridge)
    grant_id = bridge.api(brief_body()).get_json()["grant_id"]
    assert run_until_final(bridge, clock, grant_id)[-1] == "failed"
    set_auto_activation(bridge.site_engine, True, prefix="wp_")
    BridgeService(bridge.runtime).retry(grant_id, actor="admin")
    assert [s.status for s in bridge.deliver()] == ["succeeded"]
    assert bridge.orders_handled() == 2 and len(bridge.keys_of_grant(grant_id)) == 1
    assert attempts(bridge, grant_id)[-3:] == [("lookup", "settled"), ("order", "ok"), ("confirm", "found")]


def test_store_unavailable_answers_503_with_retry_after_and_recovers(bridge, tmp_path):
    working, working_engine = bridge.runtime.sessions, bridge.runtime.store_engine
    broken = sa.create_engine(f"sqlite:///{tmp_path / 'no-such-directory' / 'store.sqlite'}")
    bridge.runtime.sessions = store_db.session_factory(broken)
    bridge.runtime.store_engine = broken   # the intake's shared commits write through the engine
    try:
        for response in (bridge.api(brief_body()), bridge.api(brief_body(external_id="deal-503")),
                         bridge.signed({"email": "a@example.org", "key": {"term_id": 7, "duration": 1}})):
            assert response.status_code == 503
            assert response.headers["Retry-After"].isdigit()
            assert response.get_json()["code"] == "store_unavailable"
            assert response.get_json()["ok"] is False
    finally:
        bridge.runtime.sessions, bridge.runtime.store_engine = working, working_engine
        broken.dispose()
    response = bridge.api(brief_body(external_id="deal-503"))
    assert response.status_code == 202
    assert len(bridge.grants()) == 1


@pytest.mark.slow
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


def test_a_duplicated_grant_is_shown_to_the_admin_in_the_ui_the_cli_and_the_metrics(bridge, admin_pages):
    from click.testing import CliRunner

    from sidecar.cli import cli
    from sidecar.web.metrics import StoreCollector

    freeze(bridge)
    grant_id = bridge.api(brief_body()).get_json()["grant_id"]
    client(bridge).order_product(Customer(bridge.grant(grant_id).email), PRODUCT_1_MONTH, grant_id)
    assert [s.status for s in bridge.deliver()] == ["duplicated"]
    keys = [k.id for k in bridge.keys_of_grant(grant_id)]

    _app, browser = admin_pages.signed_in(bridge.runtime)
    page = browser.get(f"/admin/grants/{grant_id}").get_data(as_text=True)
    assert 'class="flash flash-error"' in page and all(f"key {key}" in page for key in keys)
    listed = browser.get("/admin/grants?status=duplicated").get_data(as_text=True)
    assert grant_id in listed

    runner = CliRunner()
    shown = runner.invoke(cli, ["grants", "list", "--status", "duplicated", "--format", "json"],
                          obj={"settings": bridge.runtime.settings}, catch_exceptions=False)
    assert shown.exit_code == 0 and [g["id"] for g in json.loads(shown.output)["grants"]] == [grant_id]
    detail = runner.invoke(cli, ["grants", "show", grant_id, "--format", "json"],
                           obj={"settings": bridge.runtime.settings}, catch_exceptions=False)
    assert json.loads(detail.output)["grant"]["meta"]["duplicate_keys"] == keys

    figures = {tuple(sample.labels.items()): sample.value for family in StoreCollector(bridge.runtime).collect()
               if family.name == "mlsidecar_grants" for sample in family.samples}
    assert figures[(("status", "duplicated"),)] == 1
    assert figures[(("status", "unknown"),)] == 0  # every state is a series, zeros included


def test_store_lost_right_after_the_site_answered_leaves_a_grant_that_is_confirmed_not_ordered_again(bridge):
    clock = freeze(bridge)
    grant_id = bridge.api(brief_body()).get_json()["grant_id"]
    doomed = bridge.deliverer(holder="worker-with-dying-store")
    record = doomed._attempt

    def store_dies_on_the_answer(grant, kind, outcome, *args, **kwargs):
        if kind == "order":
            raise sa.exc.OperationalError("UPDATE mls_grants", {}, Exception("server has gone away"))
        return record(grant, kind, outcome, *args, **kwargs)

    doomed._attempt = store_dies_on_the_answer
    try:
        doomed.run_once()
    except sa.exc.OperationalError:
        pass
    grant = bridge.grant(grant_id)
    assert (grant.status, grant.orders_sent) == ("delivering", 1)
    assert grant.claimed_by.startswith("worker-with-dying-store:")
    assert len(bridge.keys_of_grant(grant_id)) == 1  # the site did its part

    clock.instant = grant.claim_expires_at + timedelta(seconds=1)
    assert [s.status for s in bridge.deliver()] == ["succeeded"]
    assert bridge.orders_handled() == 1 and len(bridge.keys_of_grant(grant_id)) == 1
    assert attempts(bridge, grant_id) == [("order", "interrupted"), ("lookup", "found")]


def test_an_answered_order_whose_key_is_there_is_recorded_with_it_in_one_commit(bridge):
    freeze(bridge)
    grant_id = bridge.api(brief_body()).get_json()["grant_id"]
    commits = []

    def committed(_conn) -> None:
        commits.append(1)

    sa.event.listen(bridge.runtime.store_engine, "commit", committed)
    try:
        assert [s.status for s in bridge.deliver()] == ["succeeded"]
    finally:
        sa.event.remove(bridge.runtime.store_engine, "commit", committed)
    # The claim, the mark before the call, then the answer with the read-back and the success together.
    assert len(commits) == 3
    assert attempts(bridge, grant_id) == [("order", "ok"), ("confirm", "found")]
    grant = bridge.grant(grant_id)
    assert grant.meta["order_answered"] is True and grant.order_id is not None
    with bridge.runtime.sessions() as session:
        trail = [a.action for a in audit.trail(session, "grant", grant_id)]
    assert trail[-2:] == ["order.ok", "grant.succeeded"]


def test_a_failed_read_of_the_site_after_the_answer_records_the_answer_first(bridge):
    clock = freeze(bridge)
    grant_id = bridge.api(brief_body()).get_json()["grant_id"]
    doomed = bridge.deliverer(holder="worker-with-dying-site-reads")

    def site_gone(grant):
        raise sa.exc.OperationalError("SELECT wp_users", {}, Exception("server has gone away"))

    doomed._evidence = site_gone
    with pytest.raises(sa.exc.OperationalError):
        doomed.run_once()
    grant = bridge.grant(grant_id)
    # What keeps the grant from ever being ordered again without a key is recorded: the site answered.
    assert (grant.status, grant.orders_sent, grant.meta.get("order_answered")) == ("confirming", 1, True)
    assert attempts(bridge, grant_id) == [("order", "ok")]

    clock.instant = grant.claim_expires_at + timedelta(seconds=1)
    assert [s.status for s in bridge.deliver()] == ["succeeded"]
    assert bridge.orders_handled() == 1 and len(bridge.keys_of_grant(grant_id)) == 1


def test_look_ups_of_earlier_calls_come_before_new_orders(bridge):
    clock = freeze(bridge)
    bridge.set_faults(fail_next=["after"])
    unknown = bridge.api(brief_body()).get_json()["grant_id"]
    bridge.deliver()  # its call was answered 500: outcome unknown
    queued = [bridge.api(brief_body(external_id=f"later-{n}")).get_json()["grant_id"] for n in range(3)]
    clock.instant = bridge.grant(unknown).next_attempt_at + timedelta(seconds=1)
    # The queued grants were due earlier (when they were accepted); the look-up still goes first.
    assert bridge.deliverer().due(limit=1) == [unknown]
    assert set(bridge.deliverer().due(limit=10)[1:]) == set(queued)


def test_in_slow_mode_every_grant_ends_with_exactly_one_key(make_bridge):
    """Every order takes longer than the call's deadline; the site finishes each after the caller left.

    The settle time must exceed the longest an order can still be running (as bridge.settle_seconds must on
    a real site): here an order needs about 2 s alone, many times that on a loaded test machine; 30 s is
    never waited for while the traces turn up, only if one never did."""
    bridge = make_bridge(settle_seconds=30, unknown_poll_seconds=1)
    grant_ids = [bridge.api(brief_body(external_id=f"slow-{n}")).get_json()["grant_id"] for n in range(8)]
    bridge.set_faults(latency_seconds=1.2, latency_jitter_seconds=0.6)
    impatient = client(bridge, timeout=0.5)
    runner = OutboxRunner(bridge.deliverer(holder="slow-mode", rest_client=impatient), concurrency=4, poll_seconds=0.05)
    runner.start()
    try:
        wait_until(lambda: all(bridge.grant(g).status == "succeeded" for g in grant_ids), timeout=90, interval=0.2)
    finally:
        runner.stop(timeout=30)
    assert bridge.orders_handled() == 8
    for grant_id in grant_ids:
        assert len(bridge.keys_of_grant(grant_id)) == 1
        assert bridge.grant(grant_id).orders_sent == 1
    assert {a for g in grant_ids for a in attempts(bridge, g) if a[0] == "order"} == {("order", "unknown")}
