"""The legacy plugin ml-grant-bridge as the emulator serves it when asked (legacy-plugins.md 1.3-1.8): its
HMAC check and answers, its key rows, and the copy a web server's ``mirror`` rule would send elsewhere."""

from __future__ import annotations

import json
import time
from urllib.parse import urlencode

import pytest
import sqlalchemy as sa
from flask import Flask, request

from sidecar.devstack.emulator import create_emulator_app
from sidecar.devstack.legacy_bridge import LegacyGrantBridge, legacy_hmac
from sidecar.devstack.server import serve_in_thread

SECRET = "legacy-shared-secret-for-devstack-tests"
ROUTE = "/wp-json/mlgb/v1/grant"


@pytest.fixture
def site(small_site):
    engine = sa.create_engine(small_site, connect_args={"timeout": 30, "check_same_thread": False})
    yield engine
    engine.dispose()


def signed(client, body: dict | str, *, form: bool = False, stamp: str | None = None, secret: str = SECRET):
    raw = (urlencode(body) if form else json.dumps(body)).encode() if isinstance(body, dict) else body.encode()
    stamp = stamp if stamp is not None else str(int(time.time()))
    return client.post(ROUTE, data=raw, headers={"X-MLGB-Timestamp": stamp, "X-MLGB-Signature": legacy_hmac(secret, stamp, raw)},
                       content_type="application/x-www-form-urlencoded" if form else "application/json")


def keys_of(engine, email: str) -> list:
    with engine.connect() as conn:
        return conn.execute(sa.text(
            "SELECT k.id, k.term_id, k.duration, k.units, k.date_registered, m.source FROM wp_memberlux_term_keys k "
            "JOIN wp_users u ON u.ID = k.user_id LEFT JOIN wp_memberlux_keys_meta m ON m.key_id = k.id "
            "WHERE lower(u.user_email) = lower(:e) ORDER BY k.id"), {"e": email}).all()


def test_the_route_exists_only_when_asked_for(site):
    plain = create_emulator_app(site).test_client()
    assert plain.post(ROUTE, json={}).get_json()["code"] == "rest_no_route"


def test_headers_signature_and_window_are_checked_in_the_plugins_order(site):
    client = create_emulator_app(site, legacy_hmac_secret=SECRET).test_client()
    body = {"email": "a@example.org", "key": {"term_id": 7, "duration": 1, "units": "months"}}
    assert client.post(ROUTE, json=body).status_code == 401
    assert client.post(ROUTE, json=body).get_json() == {"error": "hmac_headers_missing"}
    assert signed(client, body, secret="another-secret").get_json() == {"error": "invalid_hmac"}
    old = signed(client, body, stamp=str(int(time.time()) - 301))
    assert (old.status_code, old.get_json()) == (401, {"error": "timestamp_expired"})
    assert signed(client, body, stamp="soon").get_json() == {"error": "timestamp_expired"}
    bad = signed(client, {"email": "a@example.org", "key": "7"})
    assert (bad.status_code, bad.get_json()) == (400, {"error": "invalid_input"})


def test_a_new_user_gets_a_key_on_the_registration_path_and_the_answer_has_no_user(site):
    client = create_emulator_app(site, legacy_hmac_secret=SECRET).test_client()
    answer = signed(client, {"email": "New.Person@example.org", "key": {"term_id": 7, "duration": 1, "units": "day"}})
    assert (answer.status_code, answer.get_json()) == (200, {"ok": True})
    [key] = keys_of(site, "new.person@example.org")
    # "day" is not exactly "days": stored as months; the registration path leaves date_registered NULL.
    assert (key.term_id, key.duration, key.units, key.date_registered, key.source) == (
        7, 1, "months", None, "bulk_operations_add")


def test_a_form_body_is_read_like_json(site):
    client = create_emulator_app(site, legacy_hmac_secret=SECRET).test_client()
    answer = signed(client, {"email": "form@example.org", "key[term_id]": "7", "key[duration]": "3",
                             "key[units]": "days"}, form=True)
    assert answer.get_json() == {"ok": True}
    assert [(k.duration, k.units) for k in keys_of(site, "form@example.org")] == [(3, "days")]


def test_an_existing_user_same_day_repeat_deletes_the_first_key_and_answers_the_code(site):
    client = create_emulator_app(site, legacy_hmac_secret=SECRET).test_client()
    body = {"email": "twice@example.org", "key": {"term_id": 7, "duration": 1, "units": "months"}}
    signed(client, body)                       # creates the user (its key: date_registered NULL)
    second = signed(client, {**body, "pad": 1}).get_json()
    assert second["ok"] is True and second["status"] == "created" and second["code"]
    first_two = [k.id for k in keys_of(site, body["email"])]
    assert len(first_two) == 2                 # the first key is never matched (NULL date_registered): stacked
    signed(client, {**body, "pad": 2})
    after = [k.id for k in keys_of(site, body["email"])]
    assert len(after) == 2 and after[0] == first_two[0] and after[1] != first_two[1]   # same-day delete + insert


def test_failures_are_answered_200_and_write_no_key(site):
    app = create_emulator_app(site, legacy_hmac_secret=SECRET)
    client = app.test_client()
    body = {"email": "unlucky@example.org", "key": {"term_id": 7, "duration": 1, "units": "months"}}
    signed(client, body)
    app.extensions["legacy_grant_bridge"].fail = "key_generation_failed"
    answer = signed(client, {**body, "pad": 1})
    assert answer.status_code == 200 and answer.get_json()["ok"] is False
    assert len(keys_of(site, body["email"])) == 1
    with pytest.raises(ValueError):
        LegacyGrantBridge(app.extensions["mbl_emulator"], fail="nonsense")


def test_every_request_is_mirrored_with_its_body_and_signature(site):
    copies: list[tuple[bytes, dict]] = []
    receiver = Flask("mirror-receiver")

    @receiver.post(ROUTE)
    def take():
        copies.append((request.get_data(), dict(request.headers)))
        return "ignored", 500

    url, stop = serve_in_thread(receiver)
    try:
        client = create_emulator_app(site, legacy_hmac_secret=SECRET, legacy_mirror_url=url + ROUTE).test_client()
        answer = signed(client, {"email": "mirrored@example.org", "key": {"term_id": 7, "duration": 1, "units": "months"}})
    finally:
        stop()
    assert answer.get_json() == {"ok": True}   # the copy's answer changes nothing
    [(raw, headers)] = copies
    assert json.loads(raw)["email"] == "mirrored@example.org"
    assert headers["X-Mlgb-Signature"] == legacy_hmac(SECRET, headers["X-Mlgb-Timestamp"], raw)
