"""MemberLux activity as outbound events: ``access.activated`` from any source (checkout, activation code,
MemberLux's webhook, the key scan), ``access.expired`` and ``certificate.issued`` — each once, none for
history, every body valid against its published schema, and end to end against the emulator."""

from __future__ import annotations

import json
from datetime import date, datetime, timedelta, timezone

import jsonschema
import pytest
import requests
import sqlalchemy as sa
from standardwebhooks.webhooks import Webhook

from sidecar.app import create_app
from sidecar.bridge.service import BridgeService
from sidecar.clock import FixedClock
from sidecar.devstack.emulator import add_webhook
from sidecar.devstack.server import serve_in_thread
from sidecar.monitor.certificates import ANNOUNCE_AFTER, CertificateClassifier
from sidecar.monitor.refresh import SleeperRefresher
from sidecar.store.db import unit_of_work
from sidecar.store.monitor_models import CertificateClassRow, WatchState
from sidecar.store.webhook_models import AccessActivation, AccessExpiry, WebhookEvent
from sidecar.webhooks.access import EXPIRY_SINCE, KEY_CURSOR, SINCE, AccessAnnouncer
from sidecar.webhooks.delivery import WebhookDeliverer
from sidecar.webhooks.events import body, json_schema
from sidecar.webhooks.inbound import process_hints, store
from tests.webhooks.support import SECRET, endpoint

TOKEN = "hook-token-not-for-production-123"


# --- helpers ----------------------------------------------------------------------------------------------

def listen(runtime, *events: str, url: str = "https://hooks.example.com/in") -> int:
    return endpoint(runtime, url, events=events or ("*",), name="listener-" + "-".join(events or ("all",)))


def events(runtime, event_type: str) -> list[WebhookEvent]:
    with runtime.sessions() as session:
        return list(session.scalars(sa.select(WebhookEvent).where(WebhookEvent.type == event_type)
                                    .order_by(WebhookEvent.created_at, WebhookEvent.id)))


def assert_valid(event: WebhookEvent) -> dict:
    """The body as sent, checked against the published schema (formats included)."""
    sent = json.loads(json.dumps(body(event)))
    jsonschema.Draft202012Validator(json_schema(event.type), format_checker=jsonschema.FormatChecker()).validate(sent)
    return sent["data"]


def state(runtime, name: str) -> int | None:
    with runtime.sessions() as session:
        row = session.get(WatchState, name)
        return None if row is None else int(row.value)


def product(runtime):
    """A published, limited key product of a level: what a learner buys at checkout."""
    return min((p for p in BridgeService(runtime).catalog.products()
                if p.status == "publish" and p.level_id and not p.unlimited), key=lambda p: p.product_id)


def checkout(emulator, product_id: int, email: str) -> None:
    """A paid WooCommerce order completed for the customer (the emulator's checkout: the payments add-on
    activates a new key for the order's customer, core.md 5.3, 5.4)."""
    base_url, user, password, _engine = emulator
    answer = requests.post(base_url + "/wp-json/mbl/v1/order", json={"email": email, "product_id": product_id},
                           auth=(user, password), timeout=30)
    assert answer.status_code == 200, answer.text


def enter_code(emulator, user_id: int) -> tuple[int, int]:
    """A learner enters a code generated in advance on the activation page; (key id, level)."""
    base_url, user, password, engine = emulator
    with engine.connect() as conn:
        key_id, code, term_id = conn.execute(sa.text(
            "SELECT id, `key`, term_id FROM wp_memberlux_term_keys WHERE status = 'new' AND user_id IS NULL "
            "AND key_type = 'wpm_term_keys' AND is_banned = 0 "
            "AND term_id IN (SELECT term_id FROM wp_term_taxonomy WHERE taxonomy = 'wpm-levels') ORDER BY id LIMIT 1")).one()
    answer = requests.post(base_url + "/devstack/activate", json={"user_id": user_id, "code": code},
                           auth=(user, password), timeout=30)
    assert answer.status_code == 200, answer.text
    assert answer.json()["key_id"] == key_id            # the pre-created row, activated in place
    return key_id, term_id


def site_sql(emulator, sql: str, **params) -> None:
    with emulator[3].begin() as conn:
        conn.execute(sa.text(sql), params)


def newest_key(emulator, email: str) -> int:
    with emulator[3].connect() as conn:
        return conn.execute(sa.text(
            "SELECT k.id FROM wp_memberlux_term_keys k JOIN wp_users u ON u.ID = k.user_id "
            "WHERE u.user_email = :e ORDER BY k.id DESC LIMIT 1"), {"e": email}).scalar_one()


@pytest.fixture
def site(small_site, emulator, settings_for, make_runtime):
    return make_runtime(settings_for(small_site, emulator, webhooks={"memberlux_path_token": TOKEN})), emulator


# --- access.activated: the key scan ---------------------------------------------------------------------------

def test_the_first_scan_announces_nothing_then_each_activation_once_from_checkout_and_from_a_code(site):
    runtime, emulator = site
    listen(runtime, "access.activated")
    announcer = AccessAnnouncer(runtime)
    first = announcer.scan()
    assert first.started and events(runtime, "access.activated") == []          # the site's history
    assert state(runtime, KEY_CURSOR) == runtime.reader.max_key_id()
    bought = product(runtime)
    checkout(emulator, bought.product_id, "buyer@example.com")
    code_key, code_level = enter_code(emulator, 5)
    report = announcer.scan()
    assert (report.announced, report.waiting) == (2, 0)
    by_key = {e.data["key_id"]: assert_valid(e) for e in events(runtime, "access.activated")}
    checkout_key = newest_key(emulator, "buyer@example.com")
    assert set(by_key) == {checkout_key, code_key}
    bought_data = by_key[checkout_key]
    assert bought_data["email"] == "buyer@example.com" and bought_data["term_id"] == bought.level_id
    assert (bought_data["source"], bought_data["memberlux_source"]) == ("key_scan", "")   # REST orders: '' (core.md 13)
    assert bought_data["level_name"] and bought_data["activated_on"] == runtime.clock.today_utc().isoformat()
    assert bought_data["is_unlimited"] is False and bought_data["date_start"] and bought_data["date_end"]
    code_data = by_key[code_key]
    assert (code_data["user_id"], code_data["term_id"], code_data["memberlux_source"]) == (5, code_level, "activation_page")
    for _ in range(2):
        assert announcer.scan().announced == 0
    assert len(events(runtime, "access.activated")) == 2


def test_activations_from_before_the_first_scan_are_history_for_good(site):
    runtime, emulator = site
    listen(runtime, "access.activated")
    checkout(emulator, product(runtime).product_id, "early@example.com")
    AccessAnnouncer(runtime).scan()
    AccessAnnouncer(runtime).scan()
    assert events(runtime, "access.activated") == []
    with runtime.sessions() as session:
        claim = session.get(AccessActivation, newest_key(emulator, "early@example.com"))
    assert (claim.found_by, claim.event_id) == ("baseline", None)


def test_with_nobody_listening_the_scan_reads_nothing_and_a_later_listener_starts_from_then(site):
    runtime, emulator = site
    assert not AccessAnnouncer(runtime).scan().listening
    assert state(runtime, KEY_CURSOR) is None
    checkout(emulator, product(runtime).product_id, "unheard@example.com")
    listen(runtime, "access.activated")
    AccessAnnouncer(runtime).scan()                            # starts now: the order above is history
    assert AccessAnnouncer(runtime).scan().announced == 0
    with unit_of_work(runtime.sessions) as session:            # the endpoint goes: the scan forgets its place
        session.execute(sa.text("UPDATE mls_webhook_endpoints SET enabled = 0"))
    assert not AccessAnnouncer(runtime).scan().listening
    assert (state(runtime, KEY_CURSOR), state(runtime, SINCE)) == (None, None)


def test_an_activation_still_being_written_waits_for_core_s_keys_meta(site):
    runtime, emulator = site
    listen(runtime, "access.activated")
    announcer = AccessAnnouncer(runtime)
    announcer.scan()
    checkout(emulator, product(runtime).product_id, "halfway@example.com")
    key_id = newest_key(emulator, "halfway@example.com")
    # As between MemberLux's statements: the key row is written, core's keys_meta source not yet.
    site_sql(emulator, "UPDATE wp_memberlux_keys_meta SET source = NULL WHERE key_id = :k", k=key_id)
    report = announcer.scan()
    assert (report.announced, report.waiting) == (0, 1)
    assert state(runtime, KEY_CURSOR) < key_id                 # it is read again next time
    site_sql(emulator, "UPDATE wp_memberlux_keys_meta SET source = 'purchase' WHERE key_id = :k", k=key_id)
    assert announcer.scan().announced == 1
    [event] = events(runtime, "access.activated")
    assert event.data["key_id"] == key_id and event.data["memberlux_source"] == "purchase"
    assert state(runtime, KEY_CURSOR) >= key_id


# --- access.activated: MemberLux's webhook, and never twice with the scan ---------------------------------------

def hint_for(emulator, email: str, kind: str = "purchase") -> dict:
    """What MemberLux posts for the learner's newest key (core.md 6.4)."""
    with emulator[3].connect() as conn:
        row = conn.execute(sa.text(
            "SELECT k.term_id, k.date_start, k.date_end FROM wp_memberlux_term_keys k JOIN wp_users u ON u.ID = k.user_id "
            "WHERE u.user_email = :e ORDER BY k.id DESC LIMIT 1"), {"e": email}).one()

    def dmy(value) -> str:
        return date.fromisoformat(str(value)).strftime("%d-%m-%Y")

    return {"type": kind, "email": email, "first_name": "", "last_name": "", "patronymic": "",
            "key": {"term_id": str(row.term_id), "name": "", "is_unlimited": 0, "duration": "1", "units": "months",
                    "date_start": dmy(row.date_start), "date_end": dmy(row.date_end)}}


def test_a_confirmed_hint_announces_the_activation_and_the_scan_does_not_repeat_it(site):
    runtime, emulator = site
    listen(runtime, "access.activated")
    AccessAnnouncer(runtime).scan()
    checkout(emulator, product(runtime).product_id, "hinted@example.com")
    store(runtime, hint_for(emulator, "hinted@example.com", "purchase"))
    assert process_hints(runtime)["confirmed"] == 1
    [event] = events(runtime, "access.activated")
    data = assert_valid(event)
    assert data["key_id"] == newest_key(emulator, "hinted@example.com")
    assert data["source"] == "memberlux_webhook:purchase" and data["memberlux_source"] == ""
    assert AccessAnnouncer(runtime).scan().announced == 0
    assert len(events(runtime, "access.activated")) == 1


def test_a_hint_after_the_scan_announced_the_key_announces_nothing(site):
    runtime, emulator = site
    listen(runtime, "access.activated")
    AccessAnnouncer(runtime).scan()
    checkout(emulator, product(runtime).product_id, "scanned@example.com")
    assert AccessAnnouncer(runtime).scan().announced == 1
    store(runtime, hint_for(emulator, "scanned@example.com", ""))
    assert process_hints(runtime)["confirmed"] == 1
    assert [e.data["source"] for e in events(runtime, "access.activated")] == ["key_scan"]


# --- end to end: checkout in the emulator → MemberLux's webhook → access.activated at a receiver --------------------

@pytest.mark.slow
def test_checkout_in_the_emulator_reaches_a_receiver_as_a_signed_access_activated(
        small_site, emulator, settings_for, make_runtime, receiver):
    runtime = make_runtime(settings_for(small_site, emulator, webhooks={
        "memberlux_path_token": TOKEN, "allow_private_destinations": ["127.0.0.1"]}))
    sidecar_url, stop = serve_in_thread(create_app(runtime))
    try:
        # The school's MemberLux → Webhooks setting, subscribed to "all" (docs/webhooks.md).
        add_webhook(emulator[3], f"{sidecar_url}/hooks/memberlux/{TOKEN}", ("all",))
        endpoint(runtime, receiver.url, events=["access.activated"])
        bought = product(runtime)
        checkout(emulator, bought.product_id, "e2e.buyer@example.com")
        assert process_hints(runtime)["confirmed"] == 1
        assert WebhookDeliverer(runtime).run_once() == 1
    finally:
        stop()
    [(headers, raw)] = receiver.received
    sent = Webhook(SECRET).verify(raw, {k.lower(): v for k, v in headers.items()})   # signature and timestamp
    jsonschema.Draft202012Validator(json_schema("access.activated"), format_checker=jsonschema.FormatChecker()).validate(sent)
    assert sent["type"] == "access.activated" and headers["Webhook-Id"] == sent["id"]
    assert sent["data"]["email"] == "e2e.buyer@example.com" and sent["data"]["term_id"] == bought.level_id
    assert sent["data"]["source"] == "memberlux_webhook:" and sent["data"]["key_id"] == newest_key(emulator, "e2e.buyer@example.com")
    # The scan, started afterwards and run again, never sends it a second time.
    AccessAnnouncer(runtime).scan()
    AccessAnnouncer(runtime).scan()
    assert WebhookDeliverer(runtime).run_once() == 0 and len(receiver.received) == 1


# --- access.expired ---------------------------------------------------------------------------------------------------

START = datetime(2026, 11, 24, 12, tzinfo=timezone.utc)


def _level_with_lapses(runtime, refresher, later: date):
    """A level and the learners whose access to it ends after START's day and by ``later``."""
    parents = runtime.reader.level_parents()
    for level in runtime.reader.levels():
        ended = [e for e in refresher.evaluate_level(level.term_id, later, parents=parents).ended()
                 if START.date() < e.expired_on <= later]
        if len(ended) >= 2:
            return level.term_id, ended
    raise AssertionError("the seeded site should have learners whose access ends soon")


def test_access_expired_once_per_end_of_access_with_certificate_holders_flagged(small_site, settings_for, make_runtime):
    clock = FixedClock(START)
    runtime = make_runtime(settings_for(small_site), clock=clock)
    listen(runtime, "access.expired")
    refresher = SleeperRefresher(runtime)
    later = START.date() + timedelta(days=60)
    term_id, ended = _level_with_lapses(runtime, refresher, later)
    refresher.refresh_level(term_id)
    assert events(runtime, "access.expired") == []                         # ends until today are history
    assert state(runtime, EXPIRY_SINCE) == date(2026, 11, 25).toordinal()
    graduate = ended[0]
    with unit_of_work(runtime.sessions) as session:                         # a manual certificate of the level
        session.add(CertificateClassRow(certificate_id=990001, user_id=graduate.user_id, level_id=term_id, cls="manual",
                                        reason="test", date_issue=START.date(), create_date=START.date(),
                                        responsible_person=1, fingerprint="x", first_seen_at=START, checked_at=START))
    clock.instant = datetime.combine(later, datetime.min.time(), timezone.utc) + timedelta(hours=1)
    refresher.refresh_level(term_id)
    announced = {e.data["user_id"]: assert_valid(e) for e in events(runtime, "access.expired")}
    assert {e.user_id for e in ended} <= set(announced)
    assert announced[graduate.user_id]["certificate_class"] == "manual"
    assert announced[graduate.user_id]["expired_on"] == graduate.expired_on.isoformat()
    assert announced[ended[1].user_id]["certificate_class"] in (None, "auto")
    assert all(d["term_id"] == term_id and d["level_name"] for d in announced.values())
    refresher.refresh_level(term_id)                                       # a rebuild repeats nothing
    SleeperRefresher(runtime).refresh_level(term_id)
    refresher.refresh_level(term_id, later + timedelta(days=30))            # another day than today: nothing
    assert len(events(runtime, "access.expired")) == len(announced)
    with runtime.sessions() as session:
        assert session.scalar(sa.select(sa.func.count()).select_from(AccessExpiry)) == len(announced)


def test_nobody_listening_to_expiries_means_a_fresh_start_later(small_site, settings_for, make_runtime):
    runtime = make_runtime(settings_for(small_site), clock=FixedClock(START))
    refresher = SleeperRefresher(runtime)
    term_id = runtime.reader.levels()[0].term_id
    listen(runtime, "access.expired")
    refresher.refresh_level(term_id)
    assert state(runtime, EXPIRY_SINCE) is not None
    with unit_of_work(runtime.sessions) as session:
        session.execute(sa.text("UPDATE mls_webhook_endpoints SET enabled = 0"))
    refresher.refresh_level(term_id)
    assert state(runtime, EXPIRY_SINCE) is None


# --- certificate.issued -----------------------------------------------------------------------------------------------

def _certificate_level(emulator, mode: str) -> int:
    with emulator[3].connect() as conn:
        levels = conn.execute(sa.text(
            "SELECT m.term_id FROM wp_termmeta m WHERE m.meta_key = '_mblc_has_certificate' AND m.meta_value = 'yes' "
            "ORDER BY m.term_id")).scalars().all()
        modes = dict(conn.execute(sa.text(
            "SELECT term_id, meta_value FROM wp_termmeta WHERE meta_key = '_mblc_how_to_issue'")).all())
    fitting = [t for t in levels if (modes.get(t) == "auto") == (mode == "auto")]
    if fitting:
        return fitting[0]
    site_sql(emulator, "INSERT INTO wp_termmeta (term_id, meta_key, meta_value) VALUES (:t, '_mblc_how_to_issue', 'auto')",
             t=levels[0])
    return levels[0]


def test_certificate_issued_for_each_new_certificate_with_its_class_and_never_for_history(site):
    runtime, emulator = site
    listen(runtime, "certificate.issued")
    classifier = CertificateClassifier(runtime)
    classifier.sync()
    assert events(runtime, "certificate.issued") == []                      # the certificates already there
    assert state(runtime, ANNOUNCE_AFTER) == (runtime.reader.latest_certificate_id() or 0)
    base_url, user, password, _engine = emulator
    manual_level = _certificate_level(emulator, "manual")
    issued = requests.post(base_url + "/devstack/certificates", auth=(user, password), timeout=30, json={
        "user_id": 5, "level_id": manual_level, "date_issue": "2026-11-20"})
    assert issued.status_code == 200, issued.text
    auto_level = _certificate_level(emulator, "auto")
    auto_product = min(p.product_id for p in BridgeService(runtime).catalog.products()
                       if p.level_id == auto_level and not p.unlimited)
    checkout(emulator, auto_product, "graduate@example.com")              # MemberLux issues an auto certificate
    CertificateClassifier(runtime).sync()
    by_id = {e.data["certificate_id"]: assert_valid(e) for e in events(runtime, "certificate.issued")}
    manual = by_id[issued.json()["certificate_id"]]
    assert (manual["user_id"], manual["term_id"], manual["certificate_class"]) == (5, manual_level, "manual")
    assert manual["date_issue"] == "2026-11-20" and manual["email"] and manual["level_name"]
    [auto] = [d for d in by_id.values() if d["email"] == "graduate@example.com"]
    assert (auto["term_id"], auto["certificate_class"]) == (auto_level, "auto")
    CertificateClassifier(runtime).sync()
    CertificateClassifier(runtime).revalidate()
    assert len(events(runtime, "certificate.issued")) == len(by_id) == 2
