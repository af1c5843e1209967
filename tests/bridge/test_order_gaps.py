"""Specification: a timed-out order is never ordered twice, whichever gap of the site's writes it is in.

A real order writes, each statement on its own (core.md 13): the user, the WooCommerce order, the
key, the auto-responder's ``keys_meta`` row, four e-mails, the webhook fan-out, core's ``keys_meta``
with our ``utm_id``, the auto certificate, the add-on's "processed" mark. The emulator pauses the
order before each of those steps while the sidecar's call times out, so the sidecar looks for traces
with the site stopped exactly there; then the site either finishes (PHP went on after the caller left)
or dies at that point (a PHP-FPM restart). Every case ends with exactly one key for the learner's
level, and the sidecar never orders while an earlier call could still be writing.
"""

from __future__ import annotations

import json
import signal
import subprocess
import sys
import time
from datetime import datetime, timedelta, timezone
from pathlib import Path

import pytest
import requests

from sidecar.clock import FixedClock
from sidecar.memberlux.rest import MemberLuxRestClient
from tests.bridge.support import LEVEL, Bridge, brief_body

ROOT = Path(__file__).resolve().parents[2]
STEPS = ("user", "order", "key", "autoresponder", "mails", "webhooks", "keys_meta", "certificate", "processed")
#: What the sidecar may conclude while the site stands still before each step.
SEEN_WHILE_PAUSED = {
    "user": "unknown", "order": "unknown",               # nothing of ours yet: keep looking, never order
    "key": "confirming",                                  # a WooCommerce order for the customer
    "autoresponder": "confirming", "mails": "confirming",  # ... and an activated key being written
    "webhooks": "confirming", "keys_meta": "confirming",
    "certificate": "succeeded", "processed": "succeeded",  # keys_meta carries our utm_id
}


def paused(bridge: Bridge) -> list[dict]:
    return requests.get(bridge.emulator_url + "/devstack/health", timeout=10).json()["paused"]


def wait_paused(bridge: Bridge, step: str, timeout: float = 15.0) -> None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if any(p.get("paused_before") == step for p in paused(bridge)):
            return
        time.sleep(0.02)
    raise AssertionError(f"no order paused before {step}: {paused(bridge)}")


def wait_idle(bridge: Bridge, timeout: float = 15.0) -> None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if not requests.get(bridge.emulator_url + "/devstack/health", timeout=10).json()["running"]:
            return
        time.sleep(0.02)
    raise AssertionError("the site is still running an order")


def level_keys(bridge: Bridge, email: str) -> list:
    """The learner's activated keys of the level, whatever keys_meta says of them."""
    return bridge.site("SELECT k.id, m.utm_id FROM wp_memberlux_term_keys k JOIN wp_users u ON u.ID = k.user_id "
                       "LEFT JOIN wp_memberlux_keys_meta m ON m.key_id = k.id "
                       "WHERE u.user_email = :e AND k.term_id = :t AND k.status = 'used' ORDER BY k.id",
                       e=email, t=LEVEL)


def run_until_final(bridge: Bridge, clock: FixedClock, deliverer, grant_id: str) -> str:
    for _ in range(200):
        deliverer.run_once()
        grant = bridge.grant(grant_id)
        if grant.status in ("succeeded", "duplicated", "failed"):
            return grant.status
        clock.instant = max(clock.instant, grant.next_attempt_at + timedelta(seconds=1))
    raise AssertionError(f"not final: {bridge.grant(grant_id).status}")


def start_timed_out_order(bridge: Bridge, step: str):
    """Accept a grant, let its order call time out while the site is paused before ``step``."""
    clock = FixedClock(datetime.now(timezone.utc))
    bridge.runtime.clock = clock
    grant_id = bridge.api(brief_body()).get_json()["grant_id"]
    bridge.set_faults(pause_before=[step])
    impatient = MemberLuxRestClient(bridge.emulator_url + "/wp-json", bridge.api_user, bridge.api_password, timeout=0.5)
    deliverer = bridge.deliverer(rest_client=impatient)
    deliverer.run_once()
    wait_paused(bridge, step)
    assert bridge.grant(grant_id).status == "unknown"
    return clock, deliverer, grant_id


@pytest.mark.parametrize("step", STEPS)
def test_timeout_while_the_site_is_paused_before_a_step_then_finishes(bridge, step):
    clock, deliverer, grant_id = start_timed_out_order(bridge, step)
    email = bridge.grant(grant_id).email
    # The sidecar looks while the site stands still: it never orders, and concludes only what it can.
    for _ in range(3):
        clock.instant = bridge.grant(grant_id).next_attempt_at + timedelta(seconds=1)
        deliverer.run_once()
        assert bridge.orders_handled() == 0
    assert bridge.grant(grant_id).status == SEEN_WHILE_PAUSED[step]
    bridge.set_faults(pause_before=[], release=True)  # PHP goes on to the end
    wait_idle(bridge)
    assert run_until_final(bridge, clock, deliverer, grant_id) == "succeeded"
    keys = level_keys(bridge, email)
    assert [k.utm_id for k in keys] == [grant_id]
    assert bridge.grant(grant_id).key_id == keys[0].id
    assert bridge.orders_handled() == 1
    assert bridge.grant(grant_id).orders_sent == 1


@pytest.mark.parametrize("step", STEPS)
def test_timeout_while_the_site_is_paused_before_a_step_then_dies_there(bridge, step):
    clock, deliverer, grant_id = start_timed_out_order(bridge, step)
    email = bridge.grant(grant_id).email
    settle_until = bridge.grant(grant_id).settle_until
    bridge.set_faults(pause_before=[], halt=True)  # the PHP worker is killed at this point
    wait_idle(bridge)
    statuses = []
    while bridge.grant(grant_id).status not in ("succeeded", "failed", "duplicated"):
        before = bridge.orders_handled()
        deliverer.run_once()
        if bridge.orders_handled() > before:
            # A new order only once no earlier call can still be writing.
            assert clock.now() >= settle_until
        statuses.append(bridge.grant(grant_id).status)
        clock.instant = bridge.grant(grant_id).next_attempt_at + timedelta(seconds=1)
    assert bridge.grant(grant_id).status == "succeeded", bridge.grant(grant_id).last_error
    keys = level_keys(bridge, email)
    assert len(keys) == 1, keys
    assert bridge.grant(grant_id).key_id == keys[0].id
    if STEPS.index(step) <= STEPS.index("key"):
        # Nothing activated before the PHP worker died: one new order after the settle time.
        assert bridge.grant(grant_id).orders_sent == 2 and keys[0].utm_id == grant_id
    else:
        # The key was activated: it is the grant's, even if keys_meta never got our utm_id.
        assert bridge.grant(grant_id).orders_sent == 1
        assert keys[0].utm_id == (grant_id if STEPS.index(step) > STEPS.index("keys_meta") else None)


_DOOMED_WORKER = """
import json, sys
from sidecar.bootstrap import build_runtime
from sidecar.bridge.outbox import GrantDeliverer
from sidecar.config import settings_from_mapping

runtime = build_runtime(settings_from_mapping(json.loads(sys.argv[1]), environ={}))
GrantDeliverer(runtime, holder="doomed-worker").run_once()
print("finished", flush=True)
"""


@pytest.mark.parametrize("step", STEPS)
def test_worker_killed_while_the_site_is_before_a_step_leaves_exactly_one_key(bridge, small_site, step):
    grant_id = bridge.api(brief_body()).get_json()["grant_id"]
    email = bridge.grant(grant_id).email
    settings = {"wordpress": {"db_url": small_site},
                "memberlux": {"rest_base_url": bridge.emulator_url + "/wp-json", "rest_user": bridge.api_user,
                              "rest_password": bridge.api_password, "timeout_seconds": 30},
                "store": {"url": bridge.runtime.settings.store.url}}
    bridge.set_faults(pause_before=[step])
    worker = subprocess.Popen([sys.executable, "-c", _DOOMED_WORKER, json.dumps(settings)], cwd=ROOT,
                              stdout=subprocess.PIPE, stderr=subprocess.PIPE)
    try:
        wait_paused(bridge, step, timeout=30)
        assert worker.poll() is None, worker.communicate()
        worker.send_signal(signal.SIGKILL)  # kill -9 while its order call waits on the site
        worker.wait(timeout=10)
    finally:
        if worker.poll() is None:
            worker.kill()
            worker.wait(timeout=10)
    assert worker.returncode == -signal.SIGKILL and b"finished" not in worker.stdout.read()
    grant = bridge.grant(grant_id)
    assert grant.status == "delivering" and grant.claimed_by.startswith("doomed-worker:")

    bridge.set_faults(pause_before=[], release=True)  # PHP goes on after the caller died
    wait_idle(bridge)
    clock = FixedClock(grant.claim_expires_at + timedelta(seconds=1))
    bridge.runtime.clock = clock
    assert run_until_final(bridge, clock, bridge.deliverer(), grant_id) == "succeeded"
    assert [k.utm_id for k in level_keys(bridge, email)] == [grant_id]
    assert bridge.orders_handled() == 1


def test_a_site_dying_between_order_and_key_again_and_again_is_ordered_until_the_key_comes(bridge):
    clock, deliverer, grant_id = start_timed_out_order(bridge, "key")
    email = bridge.grant(grant_id).email
    for _ in range(2):  # the site dies right before the key, twice in a row
        bridge.set_faults(halt=True)
        wait_idle(bridge)
        # Settled, the order without key on a site that makes keys is ordered again: that call, too,
        # times out with the site paused before the key.
        for _pass in range(100):
            clock.instant = bridge.grant(grant_id).next_attempt_at + timedelta(seconds=1)
            deliverer.run_once()
            if paused(bridge):
                break
        wait_paused(bridge, "key")
    bridge.set_faults(pause_before=[], release=True)
    wait_idle(bridge)
    assert run_until_final(bridge, clock, deliverer, grant_id) == "succeeded"
    assert [k.utm_id for k in level_keys(bridge, email)] == [grant_id]
    assert bridge.grant(grant_id).orders_sent == 3
    assert bridge.grant(grant_id).meta["reorders_without_key"] == 2


def test_an_order_without_key_on_a_site_whose_payments_add_on_is_off_is_not_ordered_again(bridge):
    from sidecar.devstack.emulator import set_payments_addon

    set_payments_addon(bridge.site_engine, False, prefix="wp_")
    clock = FixedClock(datetime.now(timezone.utc))
    bridge.runtime.clock = clock
    grant_id = bridge.api(brief_body()).get_json()["grant_id"]
    bridge.set_faults(fail_next=["after"])  # the order is written, then a 500: outcome unknown
    deliverer = bridge.deliverer()
    assert run_until_final(bridge, clock, deliverer, grant_id) == "failed"
    grant = bridge.grant(grant_id)
    assert "MEMBERLUX PAYMENTS is not active" in grant.last_error and "not ordered again" in grant.last_error
    assert clock.now() >= grant.settle_until
    assert bridge.orders_handled() == 1 and grant.orders_sent == 1
