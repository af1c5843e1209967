"""Outbound webhooks against a real local receiver: signatures checked with the library's verifier,
the retry schedule under a fake clock, receiver down then up, endpoints switched off, SSRF refusals."""

from __future__ import annotations

from datetime import datetime, timedelta, timezone

import pytest
import sqlalchemy as sa
from standardwebhooks.webhooks import Webhook, WebhookVerificationError

from sidecar.clock import FixedClock
from sidecar.store.db import unit_of_work
from sidecar.store.webhook_models import WebhookAttempt, WebhookEndpoint
from sidecar.webhooks import endpoints as endpoint_store
from sidecar.webhooks.delivery import MAX_ATTEMPTS, RETRY_SCHEDULE, WebhookDeliverer, redeliver
from sidecar.webhooks.events import json_schema
from sidecar.webhooks.ssrf import DestinationRefused, check_destination
from tests.contention import CONTENTION, failing_once
from tests.webhooks.support import NOW, SECRET, Receiver, deliveries, endpoint, fire

OLD_SECRET = "whsec_C2FVsBQIhrscChlQIMV+b5sSYspob7oD"



@pytest.fixture
def hooks(small_site, settings_for, make_runtime):
    """A runtime whose webhooks may reach loopback (the receiver), with a clock we move."""
    settings = settings_for(small_site, webhooks={"allow_private_destinations": ["127.0.0.1"],
                                                  "disable_after_failures": 2})
    return make_runtime(settings, clock=FixedClock(NOW))


@pytest.fixture
def live(small_site, settings_for, make_runtime):
    """The same on the real clock, for the library's verifier (it checks the timestamp)."""
    return make_runtime(settings_for(small_site, webhooks={"allow_private_destinations": ["127.0.0.1"]}))


def test_a_delivery_is_signed_per_standard_webhooks_and_verifies(hooks, receiver):
    endpoint(hooks, receiver.url)
    event_id = fire(hooks)
    assert WebhookDeliverer(hooks).run_once() == 1
    [(headers, body)] = receiver.received
    assert headers["Webhook-Id"] == event_id and headers["Content-Type"] == "application/json; charset=utf-8"
    # The library's verifier compares the timestamp with the real clock (next test); here the clock is
    # fixed, so the signature is recomputed for the timestamp sent.
    wh = Webhook(SECRET)
    expected = wh.sign(event_id, datetime.fromtimestamp(int(headers["Webhook-Timestamp"]), timezone.utc), body.decode())
    assert headers["Webhook-Signature"] == expected
    import json

    payload = json.loads(body)
    assert payload["id"] == event_id and payload["type"] == "grant.failed" and payload["data"]["grant_id"] == "g1"
    assert set(payload) == set(json_schema("grant.failed")["required"])
    assert deliveries(hooks)[0].state == "succeeded"


def test_the_library_verifier_accepts_a_live_delivery(live, receiver):
    """With the real clock, the receiver side verifies exactly as an integrator would."""
    endpoint(live, receiver.url)
    fire(live)
    WebhookDeliverer(live).run_once()
    [(headers, body)] = receiver.received
    lowered = {k.lower(): v for k, v in headers.items()}
    assert Webhook(SECRET).verify(body, lowered)["type"] == "grant.failed"
    with pytest.raises(WebhookVerificationError):
        Webhook(OLD_SECRET).verify(body, lowered)


def test_during_rotation_both_secrets_sign(live, receiver):
    endpoint_id = endpoint(live, receiver.url)
    new = endpoint_store.rotate_secret(live, endpoint_id, actor="admin")
    fire(live)
    WebhookDeliverer(live).run_once()
    [(headers, body)] = receiver.received
    lowered = {k.lower(): v for k, v in headers.items()}
    assert len(lowered["webhook-signature"].split()) == 2
    Webhook(new).verify(body, lowered)
    Webhook(SECRET).verify(body, lowered)           # the old secret still verifies during the grace period


def test_retry_schedule_then_failed_and_the_endpoint_switched_off(hooks, receiver):
    receiver.status = 503
    endpoint(hooks, receiver.url)
    fire(hooks)
    deliverer = WebhookDeliverer(hooks)
    waits = []
    for attempt in range(1, MAX_ATTEMPTS + 1):
        assert deliverer.run_once() == 1
        [delivery] = deliveries(hooks)
        if attempt < MAX_ATTEMPTS:
            assert delivery.state == "pending" and delivery.last_status == 503
            waits.append(delivery.next_attempt_at - hooks.clock.now())
            assert deliverer.run_once() == 0            # not before its time
            hooks.clock.instant = delivery.next_attempt_at
    assert waits == list(RETRY_SCHEDULE)
    assert sum(RETRY_SCHEDULE, timedelta()) > timedelta(hours=24)
    [delivery] = deliveries(hooks)
    assert delivery.state == "failed" and delivery.attempts == MAX_ATTEMPTS
    with hooks.sessions() as session:
        attempts = list(session.scalars(sa.select(WebhookAttempt)))
        assert len(attempts) == MAX_ATTEMPTS and attempts[0].response_excerpt == "thanks"
        assert session.scalar(sa.select(WebhookEndpoint.consecutive_failures)) == 1
    fire(hooks)                                            # a second delivery fails for good too
    for _ in range(MAX_ATTEMPTS):
        hooks.clock.instant += timedelta(hours=11)
        deliverer.run_once()
    with hooks.sessions() as session:
        row = session.scalar(sa.select(WebhookEndpoint))
    assert row.enabled is False and "2 deliveries in a row failed" in row.disabled_reason
    assert fire(hooks) is None                             # nobody listens any more


def test_receiver_down_then_up(hooks, receiver):
    url = receiver.url
    receiver.stop()
    endpoint(hooks, url)
    fire(hooks)
    deliverer = WebhookDeliverer(hooks)
    deliverer.run_once()
    [delivery] = deliveries(hooks)
    assert delivery.state == "pending" and "ConnectionError" in delivery.last_error
    up = Receiver()
    try:
        with unit_of_work(hooks.sessions) as session:
            session.execute(sa.update(WebhookEndpoint).values(url=up.url))
        hooks.clock.instant = delivery.next_attempt_at
        deliverer.run_once()
        assert deliveries(hooks)[0].state == "succeeded" and len(up.received) == 1
    finally:
        up.stop()


def test_redirects_are_not_followed(hooks, receiver):
    receiver.redirect_to = "http://169.254.169.254/latest/meta-data/"
    endpoint(hooks, receiver.url)
    fire(hooks)
    WebhookDeliverer(hooks).run_once()
    [delivery] = deliveries(hooks)
    assert delivery.last_status == 302 and "redirects are not followed" in delivery.last_error
    assert len(receiver.received) == 1


def test_events_go_only_where_they_are_wanted(hooks, receiver):
    endpoint(hooks, receiver.url, events=["program.completed"])
    assert fire(hooks) is None
    assert deliveries(hooks) == []


def test_redeliver_queues_a_finished_delivery_again(hooks, receiver):
    endpoint(hooks, receiver.url)
    fire(hooks)
    deliverer = WebhookDeliverer(hooks)
    deliverer.run_once()
    delivery_id = deliveries(hooks)[0].id
    assert redeliver(hooks, delivery_id, actor="admin")
    deliverer.run_once()
    assert len(receiver.received) == 2 and receiver.received[0][0]["Webhook-Id"] == receiver.received[1][0]["Webhook-Id"]


def test_a_crashed_worker_leaves_the_delivery_to_be_tried_again(hooks, receiver):
    endpoint(hooks, receiver.url)
    fire(hooks)
    deliverer = WebhookDeliverer(hooks)
    [delivery] = deliveries(hooks)
    assert deliverer._claim(delivery.id)                    # claimed ... and the process dies
    assert deliverer.run_once() == 0
    hooks.clock.instant += timedelta(minutes=3)             # the lease ran out
    assert deliverer.run_once() == 1 and deliveries(hooks)[0].state == "succeeded"


# --- SSRF ----------------------------------------------------------------------------------------

def resolver_for(mapping):
    return lambda host, port: mapping[host]


@pytest.mark.parametrize("url", [
    "http://127.0.0.1/hook", "http://localhost.localdomain/", "http://10.0.0.5/", "http://172.16.3.4/",
    "http://192.168.1.1/", "http://169.254.169.254/latest/meta-data/", "http://100.64.0.1/", "http://0.0.0.0/",
    "http://[::1]/", "http://[fe80::1]/", "http://[fd00::1]/", "http://[::ffff:127.0.0.1]/", "http://[64:ff9b::a00:1]/",
    "http://[2002:c0a8:101::]/", "http://224.0.0.1/",
])
def test_internal_destinations_are_refused(url):
    resolver = resolver_for({"localhost.localdomain": ["127.0.0.1"]})
    with pytest.raises(DestinationRefused, match="internal address"):
        check_destination(url, resolver=resolver)


def test_names_resolving_to_private_addresses_are_refused_even_if_one_is_public():
    resolver = resolver_for({"hooks.example.com": ["93.184.216.34", "10.0.0.7"], "ok.example.com": ["93.184.216.34"]})
    with pytest.raises(DestinationRefused, match="10.0.0.7"):
        check_destination("https://hooks.example.com/x", resolver=resolver)
    assert check_destination("https://ok.example.com/x", resolver=resolver) == ["93.184.216.34"]


def test_allow_list_by_name_or_network_and_url_rules():
    resolver = resolver_for({"crm.internal": ["10.1.2.3"]})
    assert check_destination("http://crm.internal/", ["crm.internal"], resolver) == ["10.1.2.3"]
    assert check_destination("http://crm.internal/", ["10.0.0.0/8"], resolver) == ["10.1.2.3"]
    with pytest.raises(DestinationRefused, match="credentials"):
        check_destination("https://user:pw@example.com/")
    with pytest.raises(DestinationRefused, match="not an http"):
        check_destination("ftp://example.com/")


def test_a_refused_destination_is_a_failed_attempt_with_the_reason(hooks):
    endpoint(hooks, "http://192.168.10.10/hook")
    fire(hooks)
    WebhookDeliverer(hooks).run_once()
    [delivery] = deliveries(hooks)
    assert "destination refused" in delivery.last_error and delivery.state == "pending"


def test_deliveries_of_a_switched_off_endpoint_wait_and_resume(hooks, receiver):
    endpoint_id = endpoint(hooks, receiver.url)
    fire(hooks)
    endpoint_store.set_enabled(hooks, endpoint_id, False, actor="admin")
    assert WebhookDeliverer(hooks).run_once() == 0 and deliveries(hooks)[0].state == "pending"
    endpoint_store.set_enabled(hooks, endpoint_id, True, actor="admin")
    assert WebhookDeliverer(hooks).run_once() == 1 and len(receiver.received) == 1


def test_an_automatic_switch_off_of_a_file_endpoint_survives_a_restart(small_site, settings_for, make_runtime):
    settings = settings_for(small_site, webhooks={"endpoints": [
        {"name": "crm", "url": "https://hooks.example.com/x", "secret": SECRET}]})
    runtime = make_runtime(settings, clock=FixedClock(NOW))
    endpoint_store.sync_config(runtime)
    with unit_of_work(runtime.sessions) as session:
        row = session.scalar(sa.select(WebhookEndpoint))
        row.enabled, row.disabled_reason, row.consecutive_failures = False, "switched off after 20 failures", 20
        endpoint_id = row.id
    endpoint_store.sync_config(runtime)                    # the worker restarts
    with runtime.sessions() as session:
        assert session.get(WebhookEndpoint, endpoint_id).enabled is False
    endpoint_store.set_enabled(runtime, endpoint_id, True, actor="admin")   # fixed: the admin switches it on
    with runtime.sessions() as session:
        row = session.get(WebhookEndpoint, endpoint_id)
        assert row.enabled and row.consecutive_failures == 0 and row.disabled_reason == ""
    with pytest.raises(endpoint_store.EndpointRejected):
        endpoint_store.set_enabled(runtime, endpoint_id, False, actor="admin")   # the file decides that


@pytest.mark.mariadb
@pytest.mark.parametrize("code, message", CONTENTION)
def test_a_delivery_whose_record_the_store_rolled_back_is_recorded_again_not_sent_again(
        small_site, settings_for, make_runtime, mariadb_database, receiver, code, message):
    runtime = make_runtime(settings_for(small_site, store={"url": mariadb_database},
                                        webhooks={"allow_private_destinations": ["127.0.0.1"]}), clock=FixedClock(NOW))
    endpoint(runtime, receiver.url)
    fire(runtime)
    recording = lambda sql, _p: sql.startswith("INSERT INTO mls_webhook_attempts")  # noqa: E731
    with failing_once(runtime.store_engine, recording, code, message) as failed:
        assert WebhookDeliverer(runtime).run_once() == 1
    assert failed, "the injected failure never happened"
    assert len(receiver.received) == 1
    [delivery] = deliveries(runtime)
    assert delivery.state == "succeeded" and delivery.attempts == 1 and delivery.claimed_until is None
    with runtime.sessions() as session:
        assert session.scalar(sa.select(sa.func.count()).select_from(WebhookAttempt)) == 1
    # Nothing left for a later run: the receiver is not called again.
    assert WebhookDeliverer(runtime).run_once() == 0 and len(receiver.received) == 1
