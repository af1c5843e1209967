"""Specification of the amoCRM webhook intake end to end (legacy-plugins.md 1.4 b, 1.8, 1.11 items 1 and 14, 4.1).

amoCRM posts to ``/hooks/amocrm/<path token>``; the lead and its contact are read from a fake amoCRM API
served over real HTTP, and the grant is delivered to the MemberLux emulator.
"""

from __future__ import annotations

from datetime import timedelta

import pytest

from sidecar.bridge.reasons import last_error
from sidecar.clock import FixedClock
from tests.bridge.support import (
    HOOK, LEVEL, PIPELINE, WON, bridge_section, legacy_body, one_lead, post_event,
)


def test_form_webhook_reads_the_lead_and_the_grant_is_delivered(amo_bridge):
    leads, contacts, email = one_lead()
    bridge, fake = amo_bridge(leads=leads, contacts=contacts)
    response = post_event(bridge, 101)
    assert response.status_code == 202, response.get_json()
    body = response.get_json()
    assert body["ok"] is True and body["status"] == "queued"
    assert ("/api/v4/leads/101", "with=contacts") in fake.requests
    assert ("/api/v4/contacts/201", "") in fake.requests
    grant = bridge.grant(body["grant_id"])
    assert (grant.channel, grant.amo_lead_id, grant.email, grant.term_id, grant.duration, grant.units) == (
        "amocrm", 101, email, LEVEL, 1, "months")
    assert (grant.first_name, grant.last_name) == ("Ольга", "Смирнова")
    assert grant.meta["amo_contact_id"] == 201 and grant.meta["amo_status_id"] == WON

    bridge.deliver()
    keys = bridge.keys_of_grant(grant.id)
    assert len(keys) == 1
    assert keys[0].term_id == LEVEL
    assert (keys[0].utm_medium, keys[0].utm_campaign) == ("amocrm", "amocrm")
    owner = bridge.site("SELECT user_email FROM wp_users WHERE ID = :id", id=keys[0].user_id)[0][0]
    assert owner == email
    assert bridge.grant(grant.id).status == "succeeded"


def test_json_webhook_body_is_accepted_too(amo_bridge):
    leads, contacts, _ = one_lead(lead_id=102)
    bridge, _fake = amo_bridge(leads=leads, contacts=contacts)
    response = bridge.client.post(HOOK, json={"leads": {"status": [{"id": 102, "status_id": WON}]}})
    assert response.status_code == 202
    assert bridge.grant(response.get_json()["grant_id"]).amo_lead_id == 102


def test_wrong_path_token_is_404_and_reads_nothing(amo_bridge):
    leads, contacts, _ = one_lead()
    bridge, fake = amo_bridge(leads=leads, contacts=contacts)
    for path in ("/hooks/amocrm/amo-path-token-7c1e9f0a2c", "/hooks/amocrm/x", f"{HOOK}x"):
        response = post_event(bridge, 101, path=path)
        assert response.status_code == 404, path
    assert fake.requests == []
    assert bridge.grants() == []


def test_webhook_is_404_while_the_amocrm_intake_is_disabled(make_bridge):
    bridge = make_bridge(**bridge_section())
    assert post_event(bridge, 101).status_code == 404


def test_install_callback_answers_ok(amo_bridge):
    bridge, _fake = amo_bridge()
    for method in (bridge.client.get, bridge.client.post):
        response = method(f"{HOOK}/install")
        assert response.status_code == 200
        assert response.get_data(as_text=True) == "OK"
    assert bridge.client.get("/hooks/amocrm/wrong-token-000000000/install").status_code == 404


def test_ip_allow_list_refuses_other_peers(amo_bridge):
    leads, contacts, _ = one_lead()
    bridge, fake = amo_bridge(leads=leads, contacts=contacts, ip_allowlist=["10.0.0.0/8"])
    response = post_event(bridge, 101)
    assert response.status_code == 403
    assert response.get_json()["error"] == "Forbidden (IP)"
    assert fake.requests == [] and bridge.grants() == []


@pytest.mark.parametrize("header", ["X-Forwarded-For", "CF-Connecting-IP", "X-Real-IP"])
def test_spoofed_client_ip_headers_do_not_pass_the_allow_list(amo_bridge, header):
    leads, contacts, _ = one_lead()
    bridge, _fake = amo_bridge(leads=leads, contacts=contacts, ip_allowlist=["10.0.0.0/8"])
    response = post_event(bridge, 101, headers={header: "10.1.2.3"})
    assert response.status_code == 403
    assert bridge.grants() == []


def test_allow_listed_peer_is_accepted(amo_bridge):
    leads, contacts, _ = one_lead()
    bridge, _fake = amo_bridge(leads=leads, contacts=contacts, ip_allowlist=["10.0.0.0/8", "192.0.2.1"])
    response = post_event(bridge, 101, environ_base={"REMOTE_ADDR": "10.20.30.40"})
    assert response.status_code == 202
    assert bridge.grant(response.get_json()["grant_id"]).source_ip == "10.20.30.40"
    assert post_event(bridge, 101, environ_base={"REMOTE_ADDR": "192.0.2.2"}).status_code == 403


def test_pipeline_and_status_filters_ignore_other_stages_with_200(amo_bridge):
    leads, contacts, _ = one_lead()
    bridge, fake = amo_bridge(leads=leads, contacts=contacts, pipeline_ids=[PIPELINE], status_ids=[WON])
    other_status = post_event(bridge, 101, status_id=143)
    other_pipeline = post_event(bridge, 101, pipeline_id=7000002)
    for response in (other_status, other_pipeline):
        assert response.status_code == 200
        assert response.get_json() == {"ok": True, "ignored": "pipeline_or_status_filtered", "lead_id": 101}
    assert fake.requests == [] and bridge.grants() == []
    assert post_event(bridge, 101).status_code == 202
    assert len(bridge.grants()) == 1


def test_lead_with_a_course_without_level_id_is_422_and_the_grant_failed(amo_bridge):
    leads, contacts, _ = one_lead(course="Английский с нуля")
    bridge, _fake = amo_bridge(leads=leads, contacts=contacts)
    response = post_event(bridge, 101)
    assert response.status_code == 422
    body = response.get_json()
    assert body["ok"] is False
    grant = bridge.grant(body["grant_id"])
    assert grant.status == "failed"
    assert "course_invalid" in grant.last_error and "(<level id>)" in grant.last_error
    assert bridge.deliver() == []  # a failed grant is not retried


@pytest.mark.parametrize("fields,code,reason", [
    ({"units": "недель"}, "validation_failed", "lead.units"),
    ({"duration": "шесть"}, "lead_rejected", "duration_invalid"),
    ({"course": "Несуществующий курс (99999)"}, "unknown_level", "does not exist"),
])
def test_unusable_leads_are_422_with_the_reason(amo_bridge, fields, code, reason):
    leads, contacts, _ = one_lead(**fields)
    bridge, _fake = amo_bridge(leads=leads, contacts=contacts)
    response = post_event(bridge, 101)
    assert response.status_code == 422
    assert response.get_json()["code"] == code
    grant = bridge.grant(response.get_json()["grant_id"])
    assert grant.status == "failed"
    assert reason in grant.last_error
    assert reason in response.get_json()["message"]
    said = last_error(grant)                    # the same, as a message for the admin pages
    assert said.english() == grant.last_error
    if code in ("validation_failed", "unknown_level"):
        assert said.code == "grants.lead_rejected_fields" and said.params["lead"] == 101


def test_amocrm_api_down_answers_202_and_the_worker_fetches_later(amo_bridge):
    leads, contacts, email = one_lead()
    bridge, fake = amo_bridge(leads=leads, contacts=contacts)
    fake.app.config["FAIL_NEXT"] = 1
    response = post_event(bridge, 101)
    assert response.status_code == 202
    grant = bridge.grant(response.get_json()["grant_id"])
    assert grant.status == "fetching"
    assert grant.email is None
    assert "amoCRM" in grant.last_error and "503" in grant.last_error
    assert grant.next_attempt_at > bridge.runtime.clock.now()  # retried later, with backoff

    bridge.runtime.clock = FixedClock(bridge.runtime.clock.now() + timedelta(minutes=5))
    steps = bridge.deliver()
    assert [s.status for s in steps] == ["succeeded"]
    grant = bridge.grant(grant.id)
    assert grant.email == email
    assert len(bridge.keys_of_grant(grant.id)) == 1


def test_same_lead_posted_twice_gives_one_grant(amo_bridge):
    leads, contacts, _ = one_lead()
    bridge, fake = amo_bridge(leads=leads, contacts=contacts)
    first = post_event(bridge, 101)
    second = post_event(bridge, 101)
    assert first.status_code == 202 and second.status_code == 202
    assert second.headers["Idempotent-Replayed"] == "true"
    assert second.get_json()["grant_id"] == first.get_json()["grant_id"]
    assert len(bridge.grants()) == 1
    assert [path for path, _ in fake.requests].count("/api/v4/leads/101") == 1
    bridge.deliver()
    third = post_event(bridge, 101, status_id=143)  # another stage of the same deal
    assert third.status_code == 200 and third.get_json()["status"] == "succeeded"
    assert len(bridge.keys_of_grant(first.get_json()["grant_id"])) == 1


def test_lead_status_idempotency_grants_again_for_a_new_status(amo_bridge):
    leads, contacts, _ = one_lead()
    bridge, _fake = amo_bridge(leads=leads, contacts=contacts, idempotency="lead_status")
    first = post_event(bridge, 101, status_id=142)
    repeat = post_event(bridge, 101, status_id=142)
    renewal = post_event(bridge, 101, status_id=150)
    assert repeat.get_json()["grant_id"] == first.get_json()["grant_id"]
    assert renewal.status_code == 202
    assert renewal.get_json()["grant_id"] != first.get_json()["grant_id"]
    assert {g.idempotency_key for g in bridge.grants()} == {"amocrm:lead:101:status:142", "amocrm:lead:101:status:150"}


def test_legacy_relay_request_for_the_same_lead_does_not_grant_again(amo_bridge):
    leads, contacts, email = one_lead(lead_id=555)
    bridge, _fake = amo_bridge(leads=leads, contacts=contacts)
    first = post_event(bridge, 555)
    assert first.status_code == 202
    relayed = bridge.signed(legacy_body(email, meta={"amo_lead_id": 555, "amo_contact_id": 201}))
    # The relay sees success (2xx) for a deal already granted, and nothing is granted twice.
    assert relayed.status_code in (200, 202) and relayed.headers["Idempotent-Replayed"] == "true"
    assert relayed.get_json()["grant_id"] == first.get_json()["grant_id"]
    assert len(bridge.grants()) == 1


@pytest.mark.parametrize("form", [{}, {"leads[status][0][id]": "abc"}, {"account[id]": "1"}])
def test_webhook_without_a_usable_lead_id_is_400(amo_bridge, form):
    bridge, fake = amo_bridge()
    response = bridge.client.post(HOOK, data=form)
    assert response.status_code == 400
    assert response.get_json()["ok"] is False
    assert fake.requests == [] and bridge.grants() == []
