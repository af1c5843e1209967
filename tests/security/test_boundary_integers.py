"""Finding: 500 instead of 4xx on huge integers.

``"term_id": "99999999999999999999999"`` on the MemberLux hook was a DataError on MariaDB, and
``"term_id": 2**70`` on ``POST /api/v1/grants`` an OverflowError: a 500 each. Every numeric field of
every public endpoint is now range-checked at the edge (ids positive and within a signed 64-bit
integer, counts and durations within their own bounds) and answered with a 4xx naming the field.

The fuzz pass below takes the endpoints from the app's own ``url_map`` (so a new endpoint is fuzzed
without being listed here) and sends boundary numbers — as JSON numbers and as numeric strings — in
every path variable, in every numeric query parameter the views read, and in every numeric field of
the bodies the public endpoints take (grant intake in all auth styles, amoCRM hook, MemberLux hook,
programs API, admin forms). No answer may be a server error, on SQLite and on MariaDB.
"""

from __future__ import annotations

import base64
import contextlib
import functools
import json
import re
import shutil
import uuid
from collections.abc import Iterator
from datetime import date, datetime, timezone
from typing import Any
from urllib.parse import urlencode

import pytest
import sqlalchemy as sa
from standardwebhooks.webhooks import Webhook

from sidecar.app import create_app
from sidecar.bootstrap import build_runtime, store_url
from sidecar.bridge.auth import legacy_signature
from sidecar.config import settings_from_mapping
from sidecar.devstack import seed
from sidecar.devstack.emulator import create_emulator_app
from sidecar.devstack.seed import DEMO_API_LOGIN
from sidecar.devstack.server import serve_in_thread
from tests.bridge.fake_amocrm import create_fake_amocrm
from tests.databases import fresh_database
from tests.sites import seeded_site
from tests.stores import migrate_store

API_KEY = "boundary-api-key-0123456789abcdef"
HMAC_SECRET = "boundary-hmac-secret-0123456789abcdef"
SW_SECRET = "whsec_" + base64.b64encode(b"boundary-standard-webhooks-secret").decode()
READ_TOKEN = "boundary-read-token-0123456789abcdef"
AMO_TOKEN = "boundary-amo-token-0123456789abcdef"
AMO_PATH = "boundary-amo-path-token-0123456789"
ML_PATH = "boundary-memberlux-path-token-0123456789"
GRANT_ROUTES = ("/api/v1/grants", "/wp-json/mlgb/v1/grant", "/wp-json/mlgb/v1/grant/", "/mlgb/v1/grant",
                "/mlgb/v1/grant/", "/")
LEVEL = 7                       # a level of the seeded site with a product, so a valid request gets far
SMALL_SITE = {"users": 60, "levels": 4, "seed": 7, "today": date(2026, 11, 24)}

# One value of each class, at its edges: the largest id and one past it, far past it, below the smallest
# BIGINT, zero and negative, floats, and texts that int() or json refuse or read differently.
NUMBERS: list[Any] = [2**63, 2**63 - 1, 2**70, 10**40, -(2**63) - 1, -1, 0, 1e308, 1.5]
TEXTS = [str(2**63), "99999999999999999999999", "-1", "NaN", "Infinity", "0x10", "1_000", " 7 ", "\u0663",
         "\u00b2", "\u2460", "9" * 5000]
VALUES: list[Any] = NUMBERS + TEXTS
# The query parameters and form fields the views read as numbers (grep request.args / request.form).
NUMERIC_NAMES = ("level", "limit", "user", "user_id", "after", "before", "offset", "step", "letter", "page",
                 "per_page", "id", "one", "rows", "term_id", "days", "order_id", "wait", "program_id", "status_code",
                 "admin_days_after_last", "letters.1.days", "letters.2.days", "steps-1-term_id", "steps-1-duration")


def _php_pairs(value: Any, prefix: str = "") -> list[tuple[str, str]]:
    if isinstance(value, dict):
        return [p for k, v in value.items() for p in _php_pairs(v, f"{prefix}[{k}]" if prefix else str(k))]
    return [(prefix, value if isinstance(value, str) else json.dumps(value))]


@pytest.fixture(scope="module", params=["sqlite", pytest.param("mariadb", marks=pytest.mark.mariadb)])
def target(request, tmp_path_factory, small_site_template) -> Iterator[tuple[Any, Any, Any]]:
    """(app, admin client, runtime) on a seeded site and a store, both SQLite or both MariaDB; built once per
    backend for the module (the tests only add grants and hook records, which none of them counts)."""
    with contextlib.ExitStack() as stack:
        if request.param == "sqlite":
            folder = tmp_path_factory.mktemp("boundary")
            shutil.copyfile(small_site_template, folder / "wordpress.sqlite")
            site_url = f"sqlite:///{folder / 'wordpress.sqlite'}"
            store = {"url": f"sqlite:///{folder / 'store.sqlite'}"}
        else:
            admin_url = request.getfixturevalue("mariadb_admin_url")
            site_url = stack.enter_context(fresh_database(admin_url))
            seeded_site(site_url, **SMALL_SITE)
            store = {"url": stack.enter_context(fresh_database(admin_url))}
        connect = {"timeout": 30, "check_same_thread": False} if site_url.startswith("sqlite") else {}
        engine = sa.create_engine(site_url, connect_args=connect)
        stack.callback(engine.dispose)
        password = "boundary-app-password-0000"
        emulator_app = create_emulator_app(engine, app_user=DEMO_API_LOGIN, app_password=password)
        emulator_url, stop_emulator = serve_in_thread(emulator_app)
        stack.callback(stop_emulator)
        stack.callback(emulator_app.extensions["mbl_emulator"].shutdown)
        amo_url, stop_amo = serve_in_thread(create_fake_amocrm({}, {}, AMO_TOKEN))
        stack.callback(stop_amo)
        settings = settings_from_mapping({
            "wordpress": {"db_url": site_url}, "store": store,
            "memberlux": {"rest_base_url": emulator_url + "/wp-json", "rest_user": DEMO_API_LOGIN,
                          "rest_password": password, "timeout_seconds": 30},
            "bridge": {"api_keys": {"tests": API_KEY}, "hmac_secret": HMAC_SECRET,
                       "standard_webhook_secrets": {"tests": SW_SECRET}, "max_wait_seconds": 0,
                       "amocrm": {"enabled": True, "base_url": amo_url, "token": AMO_TOKEN, "path_token": AMO_PATH}},
            "web": {"secret_key": "boundary-secret-key-not-for-production", "public_url": "https://sidecar.example",
                    "api_tokens": {"tests": READ_TOKEN}},
            "webhooks": {"memberlux_path_token": ML_PATH}}, environ={})
        migrate_store(store_url(settings))
        runtime = build_runtime(settings)
        stack.callback(runtime.close)
        app = create_app(runtime, testing=True)
        admin = app.test_client()
        page = admin.get("/login").get_data(as_text=True)
        token = re.search(r'name="csrf_token" value="([^"]+)"', page).group(1)
        assert admin.post("/login", data={"csrf_token": token, "login": seed.DEMO_ADMIN_LOGIN,
                                          "password": seed.DEMO_ADMIN_PASSWORD}).status_code == 302
        yield app, admin, runtime


def _csrf(app, client) -> str:
    cookie = client.get_cookie(app.config["SESSION_COOKIE_NAME"])
    return _csrf_in_cookie(app, cookie.value) if cookie is not None else ""


@functools.lru_cache(maxsize=16)
def _csrf_in_cookie(app, value: str) -> str:
    # Read from the session cookie as the app reads it, once per cookie value: session_transaction() builds
    # a request context and signs the cookie again on every call, and the pass asks twice per form post.
    session = app.session_interface.get_signing_serializer(app).loads(value)
    return session.get("csrf", "")  # sidecar.web.auth keeps the token under this key


def _bodies(rule: str, value: Any) -> list[tuple[str, bytes, dict[str, str]]]:
    """(content type, raw body, headers) for each style of request the endpoint takes, ``value`` in every
    numeric field."""
    now = datetime.now(timezone.utc)
    stamp = str(int(now.timestamp()))
    out: list[tuple[str, bytes, dict[str, str]]] = []
    if rule in GRANT_ROUTES:
        # One numeric field at a time, the others valid, so that each field's own check is reached.
        for field in ("term_id", "duration", "amo_lead_id"):
            numbers = {"term_id": LEVEL, "duration": 1, "amo_lead_id": 31337, field: value}
            email = f"b{uuid.uuid4().hex[:8]}@example.com"
            brief = {"user": {"email": email}, "external_id": uuid.uuid4().hex, "meta": {"amo_lead_id": numbers["amo_lead_id"]},
                     "grant": {"term_id": numbers["term_id"], "duration": numbers["duration"], "units": "days"}}
            legacy = {"email": email, "meta": {"amo_lead_id": numbers["amo_lead_id"]},
                      "key": {"term_id": numbers["term_id"], "duration": numbers["duration"], "units": "days"}}
            for body in (brief, legacy):
                raw = json.dumps(body).encode()
                form = urlencode(_php_pairs(body)).encode()
                out.append(("application/x-www-form-urlencoded", form, {
                    "X-MLGB-Timestamp": stamp, "X-MLGB-Signature": legacy_signature(HMAC_SECRET, stamp, form)}))
                out.append(("application/json", raw, {"X-MLGB-Timestamp": stamp,
                                                      "X-MLGB-Signature": legacy_signature(HMAC_SECRET, stamp, raw)}))
                if rule != "/api/v1/grants":
                    continue                          # the legacy routes share the parser; auth styles differ
                out.append(("application/json", raw, {"X-API-Key": API_KEY}))
                out.append(("application/x-www-form-urlencoded", form, {"X-API-Key": API_KEY}))
                msg_id = "msg_" + uuid.uuid4().hex
                out.append(("application/json", raw, {
                    "webhook-id": msg_id, "webhook-timestamp": stamp,
                    "webhook-signature": Webhook(SW_SECRET).sign(msg_id, now, raw.decode())}))
    elif rule.startswith("/hooks/amocrm/"):
        text = value if isinstance(value, str) else json.dumps(value)
        for name in ("leads[status][0][id]", "leads[status][0][status_id]", "leads[status][0][pipeline_id]",
                     "account[id]", "leads[add][0][id]"):
            pairs = [("leads[status][0][id]", "101"), ("leads[status][0][status_id]", "142"),
                     ("leads[status][0][pipeline_id]", "7000001"), ("account[id]", "31000001")]
            pairs = [(k, text if k == name else v) for k, v in pairs] + ([(name, text)] if "add" in name else [])
            out.append(("application/x-www-form-urlencoded", urlencode(pairs).encode(), {}))
        out.append(("application/json", json.dumps({"leads": {"status": [{"id": value, "status_id": value,
                                                                           "pipeline_id": value}]}}).encode(), {}))
    elif rule.startswith("/hooks/memberlux/"):
        for key in ({"term_id": value}, {"term_id": value, "user_id": value, "key_id": value}):
            body = {"type": "key_activated", "email": "learner@example.com", "user_id": value, "key": key}
            out.append(("application/json", json.dumps(body).encode(), {}))
    elif rule.startswith("/api/v1/programs/"):
        for body in ({"user": value}, {"user": value, "grant_first": True}):
            out.append(("application/json", json.dumps(body).encode(), {"X-API-Key": API_KEY}))
            out.append(("application/json", json.dumps(body).encode(), {"Authorization": f"Bearer {READ_TOKEN}"}))
    return out


def _path_values(rule, text: str) -> dict[str, str]:
    values = {}
    for name in rule.arguments:
        if name == "token":
            values[name] = AMO_PATH if "amocrm" in rule.rule else ML_PATH if "memberlux" in rule.rule else text
        else:
            values[name] = text
    return values


def _url(rule, text: str) -> str | None:
    path = rule.rule
    for name, value in _path_values(rule, text).items():
        path = re.sub(rf"<(?:[^:<>]+:)?{name}>", value, path)
    if "<" in path or not re.fullmatch(r"[\x21-\x7e]+", path):
        return None
    return path


def _fuzz(app, admin, rule, method: str, value: Any) -> list[str]:
    text = value if isinstance(value, str) else json.dumps(value)
    url = _url(rule, text.strip() or "0")
    if url is None:
        return []
    query = urlencode([(name, text) for name in NUMERIC_NAMES])
    failures = []
    anonymous = app.test_client()
    requests_: list[tuple[Any, str, dict[str, Any]]] = []
    if method == "GET":
        for client in (admin, anonymous):
            requests_.append((client, f"{url}?{query}", {}))
        requests_.append((anonymous, f"{url}?{query}", {"headers": {"Authorization": f"Bearer {READ_TOKEN}"}}))
        requests_.append((anonymous, f"{url}?{query}", {"headers": {"X-API-Key": API_KEY}}))
    else:
        form = dict.fromkeys(NUMERIC_NAMES, text)
        requests_.append((admin, url, {"data": {**form, "csrf_token": _csrf(app, admin)}}))
        requests_.append((admin, f"{url}?{query}", {"data": {**form, "csrf_token": _csrf(app, admin)}}))
        for n, (content_type, raw, headers) in enumerate(_bodies(rule.rule, value)):
            requests_.append((anonymous, url if n else f"{url}?{query}",
                              {"data": raw, "content_type": content_type, "headers": headers}))
            signed = {"X-MLGB-Signature", "webhook-signature"} & set(headers)
            if isinstance(value, str) and value.isascii() and value.isdigit() and "json" in content_type and not signed:
                # The same digits as a JSON number literal (5000 digits: Python's json refuses to convert them).
                literal = raw.replace(json.dumps(value).encode(), value.encode())
                requests_.append((anonymous, url, {"data": literal, "content_type": content_type, "headers": headers}))
    for client, target_url, kwargs in requests_:
        where = f"{method} {target_url[:100]} {str(kwargs.get('data', ''))[:160]}"
        try:
            # The test app re-raises what production would answer with a 500 (TESTING propagates).
            response = client.open(target_url, method=method, **kwargs)
            response.get_data()                       # a streamed body fails while it is read
        except Exception as exc:  # noqa: BLE001 - every exception here is a server error
            failures.append(f"{where} -> {type(exc).__name__}: {str(exc)[:120]}")
            continue
        if response.status_code >= 500:
            failures.append(f"{where} -> {response.status_code}")
    return failures


@pytest.mark.slow
def test_boundary_integers_never_cause_a_server_error(target):
    app, admin, _runtime = target
    rules = [r for r in app.url_map.iter_rules() if r.endpoint != "static"]
    assert any(r.rule == "/api/v1/grants" for r in rules) and any("memberlux" in r.rule for r in rules)
    failures: list[str] = []
    exercised = set()
    for rule in rules:
        for method in sorted((rule.methods or set()) - {"HEAD", "OPTIONS"}):
            if rule.rule == "/logout":
                continue                      # would end the admin's session for the rest of the pass
            for value in VALUES:
                failures += _fuzz(app, admin, rule, method, value)
            exercised.add((rule.rule, method))
    assert len(exercised) >= 60, sorted(exercised)
    assert failures == [], "\n".join(failures[:300]) + f"\n({len(failures)} server errors)"


def test_boundary_integers_the_reported_memberlux_hook_is_a_400_naming_the_field(target):
    app, _admin, _runtime = target
    body = {"type": "purchase", "email": "learner@example.com", "key": {"term_id": "99999999999999999999999"}}
    response = app.test_client().post(f"/hooks/memberlux/{ML_PATH}", json=body)
    assert response.status_code == 400 and "key.term_id" in response.get_json()["message"]


@pytest.mark.parametrize("field", ["term_id", "duration", "amo_lead_id"])
def test_boundary_integers_the_reported_grant_field_is_a_4xx_naming_the_field(target, field):
    app, _admin, _runtime = target
    numbers = {"term_id": LEVEL, "duration": 1, "amo_lead_id": 31337, field: 2**70}
    body = {"user": {"email": f"r{uuid.uuid4().hex[:8]}@example.com"}, "meta": {"amo_lead_id": numbers["amo_lead_id"]},
            "grant": {"term_id": numbers["term_id"], "duration": numbers["duration"], "units": "days"}}
    response = app.test_client().post("/api/v1/grants", json=body, headers={"X-API-Key": API_KEY})
    assert response.status_code in (400, 422), response.get_data(as_text=True)
    assert field in response.get_data(as_text=True)


def test_boundary_integers_a_path_id_beyond_64_bits_is_no_route(target):
    _app, admin, _runtime = target
    assert admin.get(f"/monitor/users/{2**63}").status_code == 404
    assert admin.get(f"/monitor/users/{2**63 - 1}").status_code in (200, 404)
