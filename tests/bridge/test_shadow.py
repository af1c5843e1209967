"""Specification of the bridge's shadow mode (issue 19; legacy-plugins.md 1.5-1.8).

With ``bridge.mode = "shadow"`` a CRM request is accepted exactly as in live mode but no order is sent;
the old plugin (here ``sidecar.devstack.legacy_bridge``, writing key rows the way ml-grant-bridge does)
answers the same request, and the worker watches the emulated WordPress database for its key until
``bridge.shadow_window_minutes`` have passed, then records the outcome with its evidence.
"""

from __future__ import annotations

import json
import re
import time
from datetime import datetime, timedelta, timezone

import pytest
import sqlalchemy as sa

from sidecar.clock import FixedClock
from sidecar.devstack.legacy_bridge import LegacyGrantBridge
from sidecar.devstack.site_model import MemberLuxSite
from sidecar.store.models import AuditEvent
from tests.bridge.support import LEVEL, bridge_section, legacy_body, new_email, one_lead, post_event

WINDOW = 30


@pytest.fixture
def shadow(make_bridge):
    """(bridge in shadow mode on a fixed clock, legacy stand-in on the same site and clock)."""
    bridge = make_bridge(mode="shadow", shadow_window_minutes=WINDOW)
    clock = FixedClock(datetime.now(timezone.utc))
    bridge.runtime.clock = clock
    site = MemberLuxSite(bridge.site_engine, app_passwords={}, clock=lambda: clock.instant)
    return bridge, clock, site


def both(bridge, site, body, **legacy):
    """The CRM request, mirrored: the old plugin answers it, the sidecar records it."""
    status, answer = LegacyGrantBridge(site, **legacy).handle(body)
    response = bridge.signed(body)
    assert response.status_code == 202, response.get_json()
    return response.get_json()["grant_id"], (status, answer)


def finish(bridge, clock) -> None:
    """Let the watch window pass and the worker conclude."""
    clock.instant += timedelta(minutes=WINDOW, seconds=1)
    bridge.deliver()


def actions(bridge, grant_id: str) -> list[str]:
    with bridge.runtime.sessions() as session:
        return list(session.scalars(sa.select(AuditEvent.action).where(AuditEvent.subject_id == grant_id)
                                    .order_by(AuditEvent.id)))


def test_shadow_request_is_recorded_as_live_but_no_order_reaches_the_site(shadow):
    bridge, clock, _site = shadow
    orders_before, keys_before = bridge.orders_handled(), bridge.key_count()
    response = bridge.signed(legacy_body(), query_string={"wait": "5"})
    assert response.status_code == 202
    body = response.get_json()
    assert body["ok"] is True and body["status"] == "shadow"
    grant = bridge.grant(body["grant_id"])
    assert grant.meta["shadow"] is True and grant.channel == "legacy"

    bridge.deliver()
    assert bridge.grant(grant.id).status == "shadow"       # still watching inside the window
    finish(bridge, clock)
    assert bridge.orders_handled() == orders_before
    assert bridge.key_count() == keys_before
    assert (bridge.grant(grant.id).status, bridge.grant(grant.id).shadow_outcome) == ("shadowed", "legacy_missing")


def test_a_repeated_request_is_deduplicated_in_shadow_mode_too(shadow):
    bridge, _clock, _site = shadow
    body = legacy_body(external_id="deal-77")
    first = bridge.signed(body).get_json()
    _clock.instant += timedelta(seconds=1)          # another signature: the same signature twice is a replay
    second = bridge.signed(body)
    assert second.headers.get("Idempotent-Replayed") == "true"
    assert second.get_json()["grant_id"] == first["grant_id"]


def test_the_key_the_old_plugin_wrote_for_a_new_user_is_matched(shadow):
    bridge, clock, site = shadow
    body = legacy_body(email=new_email("newcomer"))
    grant_id, (status, answer) = both(bridge, site, body)
    assert (status, answer) == (200, {"ok": True})
    bridge.deliver()
    finish(bridge, clock)
    grant = bridge.grant(grant_id)
    assert (grant.status, grant.shadow_outcome) == ("shadowed", "matched")
    user_id = site.find_user_by_email(body["email"]).ID
    key = bridge.site("SELECT id, date_registered FROM wp_memberlux_term_keys WHERE user_id = :u", u=user_id)
    assert len(key) == 1 and key[0].date_registered is None    # the registration path
    assert (grant.user_id, grant.key_id) == (user_id, key[0].id)
    assert grant.meta["shadow_result"] == {"outcome": "matched", "reason": f"key {key[0].id}", "key_ids": [key[0].id]}
    assert "shadow.key_seen" in actions(bridge, grant_id) and "shadow.matched" in actions(bridge, grant_id)


def test_the_user_may_appear_only_after_the_request(shadow):
    bridge, clock, site = shadow
    body = legacy_body(email=new_email("late"))
    grant_id = bridge.signed(body).get_json()["grant_id"]
    bridge.deliver()                                # no such user yet
    clock.instant += timedelta(minutes=5)
    LegacyGrantBridge(site).handle(body)            # the old plugin was slow
    finish(bridge, clock)
    assert bridge.grant(grant_id).shadow_outcome == "matched"


def test_the_same_day_delete_and_insert_of_the_old_plugin_is_legacy_extra(shadow):
    bridge, clock, site = shadow
    email = new_email("regular")
    site.create_user(email, clock.instant)
    body = legacy_body(email=email)
    grant_id, (status, answer) = both(bridge, site, body)
    assert status == 200 and answer["status"] == "created"
    bridge.deliver()
    first_key = bridge.grant(grant_id).meta["shadow_watch"]["keys"][0]["key_id"]
    clock.instant += timedelta(minutes=2)
    # The CRM sends it again: the sidecar gives the same grant back, the old plugin deletes and re-inserts.
    again, _ = both(bridge, site, body)
    assert again == grant_id
    rows = bridge.site("SELECT id FROM wp_memberlux_term_keys WHERE user_id = :u", u=answer["user_id"])
    assert [r.id for r in rows] != [first_key] and len(rows) == 1
    finish(bridge, clock)
    grant = bridge.grant(grant_id)
    assert (grant.status, grant.shadow_outcome) == ("shadowed", "legacy_extra")
    assert grant.meta["shadow_result"]["key_ids"] == [first_key, rows[0].id]
    assert "shadow.key_vanished" in actions(bridge, grant_id)


def test_a_key_of_another_duration_is_legacy_different(shadow):
    bridge, clock, site = shadow
    body = legacy_body(email=new_email("differ"), duration=1)
    LegacyGrantBridge(site).handle(legacy_body(email=body["email"], duration=3))
    grant_id = bridge.signed(body).get_json()["grant_id"]
    finish(bridge, clock)
    grant = bridge.grant(grant_id)
    assert (grant.status, grant.shadow_outcome) == ("shadowed", "legacy_different")
    assert "3 months" in grant.meta["shadow_result"]["reason"]


def test_a_failure_the_old_plugin_answered_200_is_legacy_missing(shadow):
    bridge, clock, site = shadow
    email = new_email("unlucky")
    site.create_user(email, clock.instant)
    grant_id, (status, answer) = both(bridge, site, legacy_body(email=email), fail="key_generation_failed")
    assert status == 200 and answer["ok"] is False
    finish(bridge, clock)
    assert bridge.grant(grant_id).shadow_outcome == "legacy_missing"


def test_a_key_from_before_the_request_does_not_count(shadow):
    bridge, clock, site = shadow
    body = legacy_body(email=new_email("earlier"))
    LegacyGrantBridge(site).handle(body)
    clock.instant += timedelta(minutes=10)
    grant_id = bridge.signed(body).get_json()["grant_id"]
    finish(bridge, clock)
    assert bridge.grant(grant_id).shadow_outcome == "legacy_missing"


def test_an_amocrm_lead_accepted_in_shadow_mode_is_watched_not_ordered(make_bridge, fake_amo):
    from tests.bridge.support import AMO_TOKEN, PATH_TOKEN

    leads, contacts, _email = one_lead(lead_id=301, contact_id=401)
    fake = fake_amo(leads=leads, contacts=contacts)
    bridge = make_bridge(bridge=bridge_section(mode="shadow", amocrm={
        "enabled": True, "base_url": fake.base_url, "token": AMO_TOKEN, "path_token": PATH_TOKEN}))
    orders_before = bridge.orders_handled()
    body = post_event(bridge, 301).get_json()
    bridge.deliver()
    bridge.deliver()
    grant = bridge.grant(body["grant_id"])
    assert grant.status == "shadow" and grant.term_id == LEVEL
    assert bridge.orders_handled() == orders_before


def test_mode_must_be_live_or_shadow(make_bridge):
    with pytest.raises(Exception, match="live"):
        make_bridge(mode="mirror")


# --- mlsidecar shadow report -----------------------------------------------------------------------------

def report(bridge, *args: str):
    from click.testing import CliRunner

    from sidecar.cli import cli

    return CliRunner().invoke(cli, ["shadow", "report", *args], obj={"settings": bridge.runtime.settings})


def test_the_report_counts_outcomes_and_lists_every_mismatch_with_its_rows(shadow):
    bridge, clock, site = shadow
    matched, _ = both(bridge, site, legacy_body(email=new_email("ok")))
    email = new_email("twice")
    site.create_user(email, clock.instant)
    extra, _ = both(bridge, site, legacy_body(email=email))
    bridge.deliver()
    clock.instant += timedelta(minutes=1)
    both(bridge, site, legacy_body(email=email))
    missing = bridge.signed(legacy_body(email=new_email("nothing"))).get_json()["grant_id"]
    finish(bridge, clock)
    watching = bridge.signed(legacy_body(email=new_email("later"))).get_json()["grant_id"]

    result = report(bridge, "--format", "json")
    assert result.exit_code == 0, result.output
    data = json.loads(result.output)
    assert data["counts"] == {"matched": 1, "legacy_missing": 1, "legacy_different": 0, "legacy_extra": 1}
    assert data["watching"] == 1
    listed = {m["grant_id"]: m for m in data["mismatches"]}
    assert set(listed) == {extra, missing} and matched not in listed and watching not in listed
    assert listed[extra]["email"] == email and len(listed[extra]["keys"]) == 2
    assert [k["vanished"] for k in listed[extra]["keys"]] == [True, False]

    table = report(bridge)
    assert table.exit_code == 0
    assert extra in table.output and "(deleted again)" in table.output and "legacy_missing" in table.output


def test_the_report_since_a_day_leaves_earlier_requests_out(shadow):
    bridge, clock, _site = shadow
    bridge.signed(legacy_body())
    finish(bridge, clock)
    tomorrow = (clock.instant + timedelta(days=2)).date().isoformat()
    data = json.loads(report(bridge, "--since", tomorrow, "--format", "json").output)
    assert data["counts"] == {"matched": 0, "legacy_missing": 0, "legacy_different": 0, "legacy_extra": 0}
    assert data["mismatches"] == []


def test_the_report_refuses_a_malformed_day(shadow):
    bridge, _clock, _site = shadow
    result = report(bridge, "--since", "last week")
    assert result.exit_code == 2 and "--since" in result.output


# --- the page ---------------------------------------------------------------------------------------------

def test_the_page_shows_the_counts_and_the_mismatches_in_both_languages(shadow):
    from tests.admin_pages import AdminPages

    bridge, clock, site = shadow
    both(bridge, site, legacy_body(email=new_email("fine")))
    different = new_email("differ")
    LegacyGrantBridge(site).handle(legacy_body(email=different, duration=3))
    bridge.signed(legacy_body(email=different, duration=1))
    finish(bridge, clock)
    _app, client = AdminPages.signed_in(bridge.runtime)

    listing = client.get("/admin/grants").get_data(as_text=True)
    assert 'href="/admin/shadow"' in listing

    page = client.get("/admin/shadow", headers={"Accept-Language": "en"}).get_data(as_text=True)
    counts = dict(re.findall(r'<tr class="outcome-(\w+)"><td>[^<]*</td><td class="num">(\d+)</td>', page))
    assert counts == {"matched": "1", "legacy_missing": "0", "legacy_different": "1", "legacy_extra": "0",
                      "watching": "0"}
    assert "Mismatches (1)" in page and different in page and "3 mo." in page
    assert page.count('class="legacy-key"') == 1

    russian = client.get("/admin/shadow", headers={"Accept-Language": "ru"}).get_data(as_text=True)
    assert "старый плагин выдал другое" in russian and "Расхождения (1)" in russian


def test_the_page_explains_a_malformed_day_instead_of_failing(shadow):
    from tests.admin_pages import AdminPages

    bridge, _clock, _site = shadow
    _app, client = AdminPages.signed_in(bridge.runtime)
    response = client.get("/admin/shadow?since=yesterday", headers={"Accept-Language": "en"})
    assert response.status_code == 200
    assert "yesterday" in response.get_data(as_text=True) and 'role="alert"' in response.get_data(as_text=True)


# --- the rehearsal: the old plugin answers, its requests are mirrored to the bridge -------------------------

def test_rehearsal_requests_mirrored_from_the_old_plugin_end_matched_or_mismatched(shadow):
    from sidecar.devstack.emulator import create_emulator_app
    from sidecar.devstack.server import serve_in_thread
    from tests.bridge.support import HMAC_SECRET, LEGACY_URL
    from sidecar.devstack.legacy_bridge import legacy_hmac

    def sign_legacy(client, body: dict, *, secret: str):
        """What the old amoCRM relay sends to the old plugin's route."""
        raw, stamp = json.dumps(body).encode(), str(int(time.time()))
        return client.post(LEGACY_URL, data=raw, content_type="application/json",
                           headers={"X-MLGB-Timestamp": stamp, "X-MLGB-Signature": legacy_hmac(secret, stamp, raw)})

    bridge, clock, _site = shadow
    sidecar_url, stop = serve_in_thread(bridge.app)
    try:
        legacy_site = create_emulator_app(bridge.site_engine, legacy_hmac_secret=HMAC_SECRET,
                                          legacy_mirror_url=sidecar_url + LEGACY_URL)
        crm = legacy_site.test_client()
        fine = legacy_body(email=new_email("fine"))
        assert sign_legacy(crm, fine, secret=HMAC_SECRET).get_json() == {"ok": True}
        legacy_site.extensions["legacy_grant_bridge"].fail = "memberlux_registration_failed"
        lost = legacy_body(email=new_email("lost"))
        assert sign_legacy(crm, lost, secret=HMAC_SECRET).get_json()["ok"] is False
    finally:
        stop()
    outcomes = {}
    finish(bridge, clock)
    for grant in bridge.grants():
        outcomes[grant.email] = (grant.channel, grant.status, grant.shadow_outcome)
    assert outcomes == {fine["email"]: ("legacy", "shadowed", "matched"),
                        lost["email"]: ("legacy", "shadowed", "legacy_missing")}


def test_after_the_switch_to_live_a_shadow_grant_is_never_ordered_and_a_repeat_gets_it_back(shadow):
    bridge, clock, _site = shadow
    body = legacy_body(external_id="deal-switch")
    grant_id = bridge.signed(body).get_json()["grant_id"]
    settings = bridge.runtime.settings
    bridge.runtime.settings = settings.model_copy(update={"bridge": settings.bridge.model_copy(update={"mode": "live"})})
    orders_before = bridge.orders_handled()
    clock.instant += timedelta(seconds=1)
    repeat = bridge.signed(body)
    assert repeat.get_json()["grant_id"] == grant_id and repeat.get_json()["status"] == "shadow"
    finish(bridge, clock)
    assert bridge.orders_handled() == orders_before
    assert bridge.grant(grant_id).status == "shadowed"
    fresh = bridge.signed(legacy_body()).get_json()
    assert fresh["status"] == "queued"               # live again for new requests
