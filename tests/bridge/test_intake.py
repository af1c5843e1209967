"""Specification of the grant intake over HTTP (legacy-plugins.md 1.3, 1.4 a, 1.7, 1.8, 4.1, 4.3).

Requests go through the Flask test client of the real app; grants are delivered by ``GrantDeliverer``
to the MemberLux emulator over real HTTP, and the result is checked in the site database. The helpers
live in ``support.py``, the ``bridge`` fixtures in ``conftest.py``.
"""

from __future__ import annotations

import base64
import json
import time
from datetime import timedelta

import pytest

from sidecar.bridge.auth import legacy_signature
from tests.bridge.support import (
    API_KEYS, DAYS_LEVEL, HMAC_SECRET, LEGACY_URL, LEVEL, PRODUCT_1_MONTH, brief_body, legacy_body, new_email, utc_today,
)
from tests.strong_secrets import strong_secret


def error_fields(response) -> dict[str, str]:
    return {e["field"]: e["code"] for e in response.get_json().get("errors", [])}


# --- legacy signed requests -----------------------------------------------------------------------------

def test_legacy_signed_json_is_accepted_and_delivered_with_the_right_dates(bridge):
    email = new_email()
    response = bridge.signed(legacy_body(email, term_id=DAYS_LEVEL, duration=30, units="days"))
    assert response.status_code == 202
    body = response.get_json()
    assert body["ok"] is True and body["status"] == "queued"
    assert response.headers["Location"].endswith(body["grant_id"])

    steps = bridge.deliver()
    assert [(s.grant_id, s.status) for s in steps] == [(body["grant_id"], "succeeded")]
    keys = bridge.keys_of_grant(body["grant_id"])
    assert len(keys) == 1
    key = keys[0]
    today = utc_today()
    assert key.status == "used" and key.term_id == DAYS_LEVEL
    assert (key.duration, key.units) == (30, "days")
    assert str(key.date_start) == today.isoformat()
    assert str(key.date_end) == (today + timedelta(days=30)).isoformat()
    assert str(key.date_registered) == today.isoformat()
    owner = bridge.site("SELECT user_email FROM wp_users WHERE ID = :id", id=key.user_id)
    assert owner[0][0] == email
    grant = bridge.grant(body["grant_id"])
    assert (grant.status, grant.key_id, grant.user_id) == ("succeeded", key.id, key.user_id)
    assert grant.date_end == today + timedelta(days=30)
    assert grant.channel == "legacy"


def test_legacy_signed_form_body_with_php_brackets_is_accepted(bridge):
    email = new_email()
    response = bridge.signed(legacy_body(email, term_id=DAYS_LEVEL, duration=30, units="days",
                                         meta={"note": "form"}), form=True)
    assert response.status_code == 202, response.get_json()
    grant_id = response.get_json()["grant_id"]
    grant = bridge.grant(grant_id)
    assert (grant.email, grant.term_id, grant.duration, grant.units) == (email, DAYS_LEVEL, 30, "days")
    assert grant.meta.get("note") == "form"  # meta kept for audit (legacy-plugins 4.1)
    bridge.deliver()
    assert len(bridge.keys_of_grant(grant_id)) == 1


@pytest.mark.parametrize("url", ["/wp-json/mlgb/v1/grant", "/mlgb/v1/grant", "/?rest_route=/mlgb/v1/grant",
                                 "/wp-json/mlgb/v1/grant/", "/api/v1/grants"])
def test_every_intake_url_accepts_a_signed_request(bridge, url):
    response = bridge.signed(legacy_body(), url=url)
    assert response.status_code == 202, (url, response.get_json())
    assert bridge.grant(response.get_json()["grant_id"]).status == "queued"


def test_root_url_without_the_legacy_rest_route_is_not_an_intake(bridge):
    response = bridge.signed(legacy_body(), url="/?rest_route=/mlgb/v1/other")
    assert response.status_code == 404
    assert response.get_json()["code"] == "rest_no_route"
    assert bridge.grants() == []


# --- legacy authentication: order and names of the errors ---------------------------------------------

def test_missing_signature_headers_are_401_hmac_headers_missing(bridge):
    raw = json.dumps(legacy_body()).encode()
    for headers in ({}, {"X-MLGB-Timestamp": str(int(time.time()))}, {"X-MLGB-Signature": "ab" * 32}):
        response = bridge.client.post(LEGACY_URL, data=raw, content_type="application/json", headers=headers)
        assert response.status_code == 401, headers
        assert response.get_json()["error"] == "hmac_headers_missing"
        assert response.get_json()["ok"] is False
    assert bridge.grants() == []


def test_bad_signature_is_403_invalid_hmac(bridge):
    response = bridge.signed(legacy_body(), secret="another-secret")
    assert response.status_code == 403
    assert response.get_json()["error"] == "invalid_hmac"


def test_signature_over_a_different_body_is_refused(bridge):
    body = legacy_body()
    stamp = str(int(time.time()))
    signature = legacy_signature(HMAC_SECRET, stamp, json.dumps(body).encode())
    tampered = dict(body, key={"term_id": LEVEL, "duration": 12, "units": "months"})
    response = bridge.signed(tampered, timestamp=stamp, signature=signature)
    assert response.status_code == 403
    assert bridge.grants() == []


def test_upper_case_hex_signature_is_refused(bridge):
    body = legacy_body()
    stamp = str(int(time.time()))
    signature = legacy_signature(HMAC_SECRET, stamp, json.dumps(body).encode())
    assert signature != signature.upper()
    response = bridge.signed(body, timestamp=stamp, signature=signature.upper())
    assert response.status_code == 403
    assert response.get_json()["error"] == "invalid_hmac"


def test_sha256_prefixed_signature_is_refused(bridge):
    body = legacy_body()
    stamp = str(int(time.time()))
    signature = "sha256=" + legacy_signature(HMAC_SECRET, stamp, json.dumps(body).encode())
    assert bridge.signed(body, timestamp=stamp, signature=signature).status_code == 403


@pytest.mark.parametrize("offset", [-301, 301, -3600])
def test_timestamp_outside_five_minutes_is_401_timestamp_expired(bridge, offset):
    response = bridge.signed(legacy_body(), timestamp=int(time.time()) + offset)
    assert response.status_code == 401
    assert response.get_json()["error"] == "timestamp_expired"


@pytest.mark.parametrize("offset", [-290, 290])
def test_timestamp_inside_five_minutes_either_way_is_accepted(bridge, offset):
    assert bridge.signed(legacy_body(), timestamp=int(time.time()) + offset).status_code == 202


@pytest.mark.parametrize("stamp", ["abc", "12e8", "0x6900", "1.7e9"])
def test_non_numeric_timestamp_is_refused(bridge, stamp):
    # Correctly signed, but PHP's (int) cast makes it 0: outside the window.
    response = bridge.signed(legacy_body(), timestamp=stamp)
    assert response.status_code == 401
    assert response.get_json()["error"] == "timestamp_expired"
    assert bridge.grants() == []


def test_empty_timestamp_counts_as_missing(bridge):
    response = bridge.signed(legacy_body(), timestamp="")
    assert response.status_code == 401
    assert response.get_json()["error"] == "hmac_headers_missing"


def test_signature_checked_before_the_clock(bridge):
    # Legacy order: headers -> signature (403) -> clock (401). A bad signature with an old stamp is 403.
    response = bridge.signed(legacy_body(), timestamp=int(time.time()) - 10_000, secret="wrong")
    assert response.status_code == 403
    assert response.get_json()["error"] == "invalid_hmac"


def test_replay_of_the_same_signed_request_is_409(bridge):
    body = json.dumps(legacy_body()).encode()
    stamp = str(int(time.time()))
    first = bridge.signed(body, timestamp=stamp)
    second = bridge.signed(body, timestamp=stamp)
    assert first.status_code == 202
    assert second.status_code == 409
    assert second.get_json()["code"] == "replayed_request"
    assert len(bridge.grants()) == 1


def test_query_string_parameters_are_never_used(bridge):
    body = {"key": {"term_id": LEVEL, "duration": 1, "units": "months"}}
    response = bridge.signed(body, url=LEGACY_URL + "?email=" + new_email())
    assert response.status_code == 422
    assert error_fields(response) == {"email": "required"}
    assert bridge.grants() == []


def test_missing_hmac_secret_is_a_refusal_not_a_crash(make_bridge):
    bridge = make_bridge(bridge={"api_keys": dict(API_KEYS)})
    response = bridge.signed(legacy_body())
    assert response.status_code == 401
    assert response.get_json()["code"] == "hmac_not_configured"


# --- API keys -----------------------------------------------------------------------------------------

def test_unauthenticated_request_is_401(bridge):
    response = bridge.api(brief_body(), key=None)
    assert response.status_code == 401
    assert response.get_json()["code"] == "authentication_required"


def test_wrong_api_key_is_403(bridge):
    response = bridge.api(brief_body(), key="not-a-configured-key")
    assert response.status_code == 403
    assert response.get_json()["code"] == "invalid_api_key"
    assert bridge.grants() == []


def test_each_named_api_key_is_accepted_and_recorded_as_the_principal(bridge):
    for name, key in API_KEYS.items():
        response = bridge.api(brief_body(), key=key)
        assert response.status_code == 202
        assert bridge.grant(response.get_json()["grant_id"]).principal == f"api_key:{name}"


def test_key_rotation_accepts_old_and_new_key_together(make_bridge):
    old_key, new_key = strong_secret("old-key"), strong_secret("new-key")
    bridge = make_bridge(api_keys={"crm": {"key": new_key, "previous_key": old_key}})
    deal = brief_body(external_id="deal-rotated")
    first = bridge.api(deal, key=old_key)
    assert first.status_code == 202
    # The same name owns the grant whichever value sent it: the deal is not granted twice during a rotation.
    again = bridge.api(deal, key=new_key)
    assert again.status_code == 202 and again.get_json()["grant_id"] == first.get_json()["grant_id"]
    assert bridge.grant(first.get_json()["grant_id"]).principal == "api_key:crm"
    assert bridge.api(brief_body(), key=new_key[:-1] + "x").status_code == 403


# --- Standard Webhooks ----------------------------------------------------------------------------------

def test_standard_webhooks_signature_is_accepted(bridge):
    response = bridge.standard_webhook(brief_body())
    assert response.status_code == 202, response.get_json()
    assert bridge.grant(response.get_json()["grant_id"]).principal == "standard_webhooks:sender"


def test_standard_webhooks_bad_signature_is_403(bridge):
    other = "whsec_" + base64.b64encode(b"some-other-secret-entirely-0000").decode()
    response = bridge.standard_webhook(brief_body(), secret=other)
    assert response.status_code == 403
    assert response.get_json()["code"] == "invalid_signature"
    assert bridge.grants() == []


@pytest.mark.parametrize("signature", ["garbage", "v1,not-base64!!", "v1"])
def test_standard_webhooks_malformed_signature_header_is_403(bridge, signature):
    response = bridge.standard_webhook(brief_body(), signature=signature)
    assert response.status_code == 403
    assert bridge.grants() == []


def test_standard_webhooks_reused_webhook_id_is_409(bridge):
    first = bridge.standard_webhook(brief_body(), msg_id="msg_fixed_1")
    second = bridge.standard_webhook(brief_body(), msg_id="msg_fixed_1")
    assert first.status_code == 202
    assert second.status_code == 409
    assert second.get_json()["code"] == "replayed_request"
    assert len(bridge.grants()) == 1


# --- idempotency ------------------------------------------------------------------------------------------

def test_same_external_id_and_payload_returns_the_original_grant(bridge):
    body = brief_body(external_id="deal-1001")
    first = bridge.api(body)
    second = bridge.api(body)
    assert first.status_code == 202 and second.status_code == 202
    assert "Idempotent-Replayed" not in first.headers
    assert second.headers["Idempotent-Replayed"] == "true"
    assert second.get_json()["grant_id"] == first.get_json()["grant_id"]
    assert len(bridge.grants()) == 1


def test_replay_after_delivery_answers_200_with_the_result(bridge):
    body = brief_body(external_id="deal-1002")
    grant_id = bridge.api(body).get_json()["grant_id"]
    bridge.deliver()
    again = bridge.api(body)
    assert again.status_code == 200
    assert again.headers["Idempotent-Replayed"] == "true"
    assert again.get_json()["status"] == "succeeded" and again.get_json()["grant_id"] == grant_id
    assert len(bridge.keys_of_grant(grant_id)) == 1


def test_same_external_id_with_a_different_payload_is_409(bridge):
    email = new_email()
    first = bridge.api(brief_body(email, external_id="deal-1003"))
    conflict = bridge.api(brief_body(email, duration=3, external_id="deal-1003"))
    assert conflict.status_code == 409
    assert conflict.get_json()["code"] == "idempotency_conflict"
    assert conflict.get_json()["grant_id"] == first.get_json()["grant_id"]
    assert len(bridge.grants()) == 1


def test_payload_equality_ignores_key_order_and_email_domain_case(bridge):
    first = bridge.api({"external_id": "deal-1004", "user": {"email": "Order.Test@Example.ORG"},
                        "grant": {"term_id": LEVEL, "duration": 1, "units": "months"}})
    second = bridge.api({"grant": {"units": "месяц", "duration": "1", "term_id": str(LEVEL)},
                         "user": {"email": "Order.Test@example.org"}, "external_id": "deal-1004"})
    assert second.status_code == 202
    assert second.headers.get("Idempotent-Replayed") == "true"
    assert second.get_json()["grant_id"] == first.get_json()["grant_id"]


def test_idempotency_key_header_makes_a_request_idempotent(bridge):
    body = brief_body()
    first = bridge.api(body, headers={"Idempotency-Key": "checkout-77"})
    second = bridge.api(body, headers={"Idempotency-Key": "checkout-77"})
    other = bridge.api(brief_body(), headers={"Idempotency-Key": "checkout-77"})
    assert second.get_json()["grant_id"] == first.get_json()["grant_id"]
    assert second.headers["Idempotent-Replayed"] == "true"
    assert other.status_code == 409
    assert bridge.grant(first.get_json()["grant_id"]).idempotency_key == "api_key:crm|hdr:checkout-77"


# --- requests without any id: a repeat within the window is the same request -------------------------

def test_a_request_without_any_id_repeated_within_the_window_gets_the_first_grant(bridge):
    body = brief_body()
    first = bridge.api(body)
    again = bridge.api({**body, "user": {**body["user"], "first_name": "Анна"}})   # names aside, the same grant
    assert first.status_code == 202 and again.get_json()["grant_id"] == first.get_json()["grant_id"]
    # Another level, another term or another learner is another grant; so is the same one from another credential.
    others = [bridge.api(brief_body(email=body["user"]["email"], duration=3)),
              bridge.api(brief_body(email=body["user"]["email"].upper(), term_id=DAYS_LEVEL, duration=30, units="days")),
              bridge.api(brief_body()),
              bridge.signed(legacy_body(body["user"]["email"]))]
    ids = {r.get_json()["grant_id"] for r in others}
    assert len(ids) == 4 and first.get_json()["grant_id"] not in ids
    bridge.deliver()
    assert len(bridge.keys_of_grant(first.get_json()["grant_id"])) == 1


def test_a_repeat_after_the_window_or_with_the_window_off_is_a_new_grant(make_bridge):
    from datetime import datetime, timezone

    from sidecar.clock import FixedClock

    bridge = make_bridge(same_request_window_seconds=600)
    start = datetime(2026, 11, 24, 10, 9, 59, tzinfo=timezone.utc)          # the last second of a window
    bridge.runtime.clock = FixedClock(start)
    body = brief_body()
    first = bridge.api(body).get_json()["grant_id"]
    bridge.runtime.clock = FixedClock(start + timedelta(seconds=2))          # the next window: found all the same
    assert bridge.api(body).get_json()["grant_id"] == first
    bridge.runtime.clock = FixedClock(start + timedelta(seconds=601))        # older than the window
    assert bridge.api(body).get_json()["grant_id"] != first

    off = make_bridge(same_request_window_seconds=0)
    body = brief_body()
    assert off.api(body).get_json()["grant_id"] != off.api(body).get_json()["grant_id"]
    assert len([g for g in off.grants() if g.email == body["user"]["email"]]) == 2


def test_invalid_idempotency_key_header_is_400(bridge):
    response = bridge.api(brief_body(), headers={"Idempotency-Key": "x" * 151})
    assert response.status_code == 400
    assert response.get_json()["code"] == "invalid_idempotency_key"


def test_legacy_amo_lead_id_shares_the_amocrm_key_space(bridge):
    email = new_email()
    first = bridge.signed(legacy_body(email, meta={"amo_lead_id": 4242, "amo_contact_id": 1}))
    assert first.status_code == 202
    grant = bridge.grant(first.get_json()["grant_id"])
    assert grant.idempotency_key == "amocrm:lead:4242"
    assert grant.amo_lead_id == 4242
    replay = bridge.signed(legacy_body(email, meta={"amo_lead_id": "4242"}))
    assert replay.get_json()["grant_id"] == grant.id
    assert replay.headers["Idempotent-Replayed"] == "true"
    changed = bridge.signed(legacy_body(email, duration=3, meta={"amo_lead_id": 4242}))
    assert changed.status_code == 409
    assert len(bridge.grants()) == 1


# --- validation against the request and the site -------------------------------------------------------

def test_invalid_fields_are_422_with_field_errors_in_the_senders_names(bridge):
    legacy = bridge.signed({"email": "not-an-email", "key": {"term_id": 0, "duration": -1, "units": "weeks"}})
    assert legacy.status_code == 422
    assert legacy.get_json()["code"] == "validation_failed"
    assert error_fields(legacy) == {"email": "invalid_email", "key.term_id": "invalid_level",
                                    "key.duration": "invalid_duration", "key.units": "invalid_units"}
    brief = bridge.api({"user": {"email": "a b@example.org"}, "grant": {"term_id": "x", "duration": 0}})
    assert brief.status_code == 422
    assert error_fields(brief) == {"user.email": "invalid_email", "grant.term_id": "invalid_level",
                                   "grant.duration": "invalid_duration"}
    assert bridge.grants() == []


def test_unknown_level_is_422(bridge):
    response = bridge.api(brief_body(term_id=99999))
    assert response.status_code == 422
    assert response.get_json()["code"] == "unknown_level"
    assert bridge.grants() == []


def test_unknown_level_error_names_the_senders_field(bridge):
    legacy = bridge.signed(legacy_body(term_id=99999))
    assert error_fields(legacy) == {"key.term_id": "unknown_level"}
    brief = bridge.api(brief_body(term_id=99999))
    assert error_fields(brief) == {"grant.term_id": "unknown_level"}


def test_no_product_for_the_term_is_422_listing_the_levels_products(bridge):
    response = bridge.api(brief_body(term_id=LEVEL, duration=2, units="months"))
    assert response.status_code == 422
    body = response.get_json()
    assert body["code"] == "no_product"
    listed = " ".join(body["products"])
    for product_id in (3, 4, 5, 17):
        assert f"#{product_id} " in listed
    assert "#7 " not in listed  # a product of another level
    assert "#3 " in body["message"]
    assert bridge.grants() == []


def test_years_are_granted_as_months(bridge):
    response = bridge.api(brief_body(duration=1, units="год"))
    assert response.status_code == 202
    grant = bridge.grant(response.get_json()["grant_id"])
    assert (grant.duration, grant.units, grant.product_id) == (12, "months", 5)


@pytest.mark.parametrize("body,content_type,status,code", [
    (b"", "application/json", 400, "empty_body"),
    (b"{not json", "application/json", 400, "malformed_json"),
    (b"[1, 2]", "application/json", 400, "malformed_json"),
    (b'{"hello": "world"}', "application/json", 400, "unrecognized_payload"),
    (b'{"email": "a@example.org", "key": 5}', "application/json", 400, "invalid_input"),
    (b"email=a@example.org", "text/plain", 415, "unsupported_media_type"),
])
def test_unusable_bodies_are_refused(bridge, body, content_type, status, code):
    response = bridge.api(body, content_type=content_type)
    assert response.status_code == status
    assert response.get_json()["code"] == code
    assert response.get_json()["ok"] is False


def test_body_over_max_body_bytes_is_413(make_bridge):
    bridge = make_bridge(max_body_bytes=2048)
    body = brief_body(meta={"padding": "x" * 4096})
    response = bridge.api(body)
    assert response.status_code == 413
    assert response.get_json()["code"] == "payload_too_large"
    assert bridge.grants() == []
    assert bridge.api(brief_body()).status_code == 202


# --- synchronous answer and status -----------------------------------------------------------------------

def test_wait_answers_200_with_the_result_and_never_the_access_code(bridge):
    response = bridge.api(brief_body(term_id=DAYS_LEVEL, duration=30, units="days"), query_string={"wait": "10"})
    assert response.status_code == 200, response.get_json()
    body = response.get_json()
    assert body["ok"] is True and body["status"] == "succeeded"
    keys = bridge.keys_of_grant(body["grant_id"])
    assert len(keys) == 1
    assert body["user_id"] == keys[0].user_id
    assert body["term_id"] == DAYS_LEVEL
    assert body["key_id"] == keys[0].id
    assert body["date_end"] == (utc_today() + timedelta(days=30)).isoformat()
    code = bridge.key_code(keys[0].id)
    assert len(code) >= 8
    assert code not in response.get_data(as_text=True)
    assert code.lower() not in response.get_data(as_text=True).lower()
    assert "code" not in body  # the legacy plugin returned the access code under this name


def test_invalid_wait_is_400(bridge):
    assert bridge.api(brief_body(), query_string={"wait": "soon"}).status_code == 400
    assert bridge.api(brief_body(), query_string={"wait": "-1"}).status_code == 400
    assert bridge.grants() == []


def test_status_by_id_and_by_external_id(bridge):
    created = bridge.api(brief_body(external_id="crm-deal-9")).get_json()
    by_id = bridge.status(created["grant_id"])
    by_external = bridge.status("crm-deal-9")
    assert by_id.status_code == 200 and by_external.status_code == 200
    assert by_id.get_json()["grant_id"] == by_external.get_json()["grant_id"] == created["grant_id"]
    assert by_id.get_json()["status"] == "queued"
    bridge.deliver()
    assert bridge.status("crm-deal-9").get_json()["status"] == "succeeded"
    legacy_path = bridge.client.get(f"/mlgb/v1/grants/{created['grant_id']}", headers={"X-API-Key": API_KEYS["crm"]})
    assert legacy_path.status_code == 200
    # Another key's grant does not exist for this one (tests/security/test_grants_per_credential.py).
    assert bridge.status(created["grant_id"], key=API_KEYS["shop"]).status_code == 404


def test_status_requires_authentication(bridge):
    created = bridge.api(brief_body(external_id="crm-deal-10")).get_json()
    assert bridge.status(created["grant_id"], key=None).status_code == 401
    assert bridge.status(created["grant_id"], key="wrong").status_code == 403
    assert bridge.status("no-such-grant").status_code == 404


# --- failures are never 2xx ----------------------------------------------------------------------------------

def test_delivery_failure_while_waiting_is_502(bridge):
    assert bridge.api(brief_body()).status_code == 202  # the product catalogue is now cached
    bridge.site("DELETE FROM wp_posts WHERE ID = :id", id=PRODUCT_1_MONTH)  # deleted after that, as in wp-admin
    response = bridge.api(brief_body(external_id="deal-gone"), query_string={"wait": "5"})
    assert response.status_code == 502
    body = response.get_json()
    assert body["code"] == "delivery_failed" and body["ok"] is False
    assert body["status"] == "failed"
    assert "404" in body["message"]


def test_failed_grant_replayed_is_409_not_2xx(bridge):
    body = brief_body(external_id="deal-fail-1")
    grant_id = bridge.api(body).get_json()["grant_id"]
    bridge.site("DELETE FROM wp_posts WHERE ID = :id", id=PRODUCT_1_MONTH)
    bridge.deliver()
    assert bridge.grant(grant_id).status == "failed"
    again = bridge.api(body)
    assert again.status_code == 409
    assert again.get_json()["code"] == "grant_failed" and again.get_json()["ok"] is False
    status = bridge.status(grant_id)
    assert status.get_json()["ok"] is False


def test_every_refusal_is_non_2xx_with_ok_false(bridge):
    stamp = int(time.time())
    refusals = [
        bridge.api(brief_body(), key=None),
        bridge.api(brief_body(), key="wrong"),
        bridge.signed(legacy_body(), secret="wrong"),
        bridge.signed(legacy_body(), timestamp=stamp - 1000),
        bridge.api(brief_body(email="nobody")),
        bridge.api(brief_body(term_id=99999)),
        bridge.api(brief_body(duration=5)),
        bridge.api(b"", content_type="application/json"),
        bridge.api(b"x=1", content_type="text/plain"),
    ]
    for response in refusals:
        assert response.status_code >= 400, response.get_json()
        assert response.get_json()["ok"] is False
        assert response.get_json()["code"]
    assert bridge.grants() == []


# --- the intake writes first and finds replays by their key ----------------------------------------------------

def test_a_replay_finds_its_grant_after_the_product_is_gone(bridge):
    body = brief_body(external_id="deal-product-gone")
    first = bridge.api(body).get_json()
    bridge.site("DELETE FROM wp_posts WHERE ID = :id", id=PRODUCT_1_MONTH)
    bridge.app.extensions["mlsidecar.bridge"].catalog.invalidate()  # the site is read again: no product now
    assert bridge.api(brief_body(external_id="deal-new-after")).get_json()["code"] == "no_product"
    again = bridge.api(body)
    assert again.status_code == 202
    assert again.get_json()["grant_id"] == first["grant_id"]
    assert again.headers["Idempotent-Replayed"] == "true"
    assert len(bridge.grants()) == 1


def test_a_new_grant_is_answered_with_the_stored_defaults(bridge):
    answer = bridge.api(brief_body(external_id="deal-defaults")).get_json()
    stored = bridge.status(answer["grant_id"]).get_json()
    for name in ("unlimited", "attempts", "status", "product_id", "email", "created_at"):
        assert answer[name] == stored[name], name
    assert answer["unlimited"] is False and answer["attempts"] == 0


def test_one_deal_sent_twice_at_once_is_one_grant_with_its_audit_trail_once(bridge):
    from concurrent.futures import ThreadPoolExecutor

    import sqlalchemy as sa

    from sidecar.store.models import AuditEvent

    body = brief_body(external_id="deal-twice-at-once")

    def post(_n):
        with bridge.app.test_client() as client:
            return client.post("/api/v1/grants", json=body, headers={"X-API-Key": API_KEYS["crm"]})

    with ThreadPoolExecutor(4) as pool:
        answers = list(pool.map(post, range(8)))
    assert {a.status_code for a in answers} == {202}
    assert len({a.get_json()["grant_id"] for a in answers}) == 1
    assert sum(a.headers.get("Idempotent-Replayed") == "true" for a in answers) == 7
    grant_id = answers[0].get_json()["grant_id"]
    with bridge.runtime.sessions() as session:
        actions = list(session.scalars(sa.select(AuditEvent.action).where(AuditEvent.subject_id == grant_id)))
    assert sorted(actions) == ["intake.product_chosen", "intake.received", "intake.validated"]
