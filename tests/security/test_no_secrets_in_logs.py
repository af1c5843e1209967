"""Secrets never reach the logs or the operator's screens: every configured secret is given a
recognisable value, the paths that handle credentials run (good and bad ones), and every log
record and printed configuration is searched for those values."""

from __future__ import annotations

import json
import logging

import pytest
import requests

from sidecar.app import create_app
from sidecar.config import describe_settings
from sidecar.doctor import Doctor, render_table
from tests.strong_secrets import strong_secret

SECRETS = {
    "api_key": strong_secret("SECRET-api-key-7f3a9"),
    "hmac": strong_secret("SECRET-hmac-0c1d2"),
    "web": strong_secret("SECRET-web-session-key-99aa"),
    "token": strong_secret("SECRET-bearer-token-55"),
    "hook": strong_secret("SECRET-memberlux-hook-token-31"),
    "smtp": "SECRET-smtp-password-8",
}


@pytest.fixture
def app_and_runtime(small_site, emulator, settings_for, make_runtime):
    settings = settings_for(
        small_site, emulator,
        bridge={"api_keys": {"crm": SECRETS["api_key"]}, "hmac_secret": SECRETS["hmac"]},
        web={"secret_key": SECRETS["web"], "api_tokens": {"reports": SECRETS["token"]}, "public_url": "https://s.example"},
        webhooks={"memberlux_path_token": SECRETS["hook"]},
        smtp={"host": "127.0.0.1", "port": 9, "security": "none", "from_address": "s@example.org", "username": "u",
              "password": SECRETS["smtp"]},
    )
    runtime = make_runtime(settings)
    return create_app(runtime, testing=True), runtime, emulator


def test_no_configured_secret_is_logged_or_shown(app_and_runtime, caplog):
    app, runtime, emulator = app_and_runtime
    caplog.set_level(logging.DEBUG)
    client = app.test_client()
    grant = {"user": {"email": "leak.check@example.com"}, "grant": {"term_id": 7, "duration": 1, "units": "months"}}
    client.post("/api/v1/grants", json=grant, headers={"X-API-Key": SECRETS["api_key"]})
    client.post("/api/v1/grants", json=grant, headers={"X-API-Key": SECRETS["api_key"] + "x"})
    client.post("/wp-json/mlgb/v1/grant", data=json.dumps({"email": "a@example.com"}),
                headers={"X-MLGB-Timestamp": "1", "X-MLGB-Signature": "00"}, content_type="application/json")
    client.get("/api/v1/sleepers", headers={"Authorization": f"Bearer {SECRETS['token']}"})
    client.get("/api/v1/sleepers", headers={"Authorization": f"Bearer {SECRETS['token']}-wrong"})
    client.post(f"/hooks/memberlux/{SECRETS['hook']}", json={"type": "purchase", "email": "a@example.com"})
    client.post(f"/hooks/memberlux/{SECRETS['hook']}-wrong", json={})
    client.post("/login", data={"login": "admin", "password": "not-the-password"})
    # The REST client with a wrong Application Password (its error is logged).
    base_url, user, _password, _engine = emulator
    requests.get(base_url + "/wp-json/wp/v2/users/me", auth=(user, "wrong"), timeout=5)
    shown = json.dumps(describe_settings(runtime.settings), default=str)
    doctor = Doctor(runtime.settings)
    try:
        shown += render_table(list(doctor.run()))
    finally:
        doctor.close()
    text = caplog.text + shown
    leaked = [name for name, value in SECRETS.items() if value in text]
    assert leaked == [], f"secrets in logs or output: {leaked}"
    assert runtime.settings.memberlux.rest_password.reveal() not in text
