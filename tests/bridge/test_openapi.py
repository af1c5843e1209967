"""The OpenAPI document of the bridge: valid, complete, and true to what the app answers.

The last point is checked with schemathesis against the WSGI app (no sockets for the sidecar; the
emulated site and the fake amoCRM are real HTTP servers on loopback): generated requests, valid and
invalid, must never get a 5xx, and every answer must have a documented status, content type and body.
"""

from __future__ import annotations

import base64
import re
import zlib
from collections import Counter
from typing import Any
from urllib.parse import urlencode

import pytest
import schemathesis
from hypothesis import HealthCheck, Phase, given, settings
from openapi_spec_validator import validate
from schemathesis.checks import not_a_server_error
from schemathesis.specs.openapi.checks import (
    content_type_conformance,
    response_schema_conformance,
    status_code_conformance,
)

from sidecar.app import create_app
from sidecar.bootstrap import build_runtime, store_url
from sidecar.bridge.blueprint import grant_view
from sidecar.bridge.openapi import openapi_document
from sidecar.bridge.service import BridgeService
from tests.bridge.support import AMO_TOKEN
from tests.stores import migrate_store
from tests.strong_secrets import strong_secret

API_KEY = strong_secret("openapi-test-key")
AMO_PATH_TOKEN = "amo-path-token-for-openapi-tests"
MEMBERLUX_PATH_TOKEN = "memberlux-path-token-for-openapi-tests"
READ_TOKEN = strong_secret("read-token-for-openapi-tests")
CHECKS = [not_a_server_error, status_code_conformance, content_type_conformance, response_schema_conformance]
# Credential headers schemathesis fills with random values (the document's security schemes).
LEGACY = ("X-MLGB-Timestamp", "X-MLGB-Signature")
STANDARD_WEBHOOKS = ("webhook-id", "webhook-timestamp", "webhook-signature")


@pytest.fixture
def bridge_app(small_site, emulator, settings_for, fake_amo):
    amo = fake_amo()
    settings = settings_for(small_site, emulator, bridge={
        "api_keys": {"tests": API_KEY},
        "hmac_secret": strong_secret("legacy-hmac-secret-for-tests"),
        # Configured so that generated signature headers are checked, not refused as "not enabled".
        "standard_webhook_secrets": {"tests": "whsec_" + base64.b64encode(b"standard-webhooks-test-secret").decode()},
        # A waiting request delivers inline; keep the worst case (a grant that does not become final) short.
        "max_wait_seconds": 2,
        "amocrm": {"enabled": True, "base_url": amo.base_url, "token": AMO_TOKEN, "path_token": AMO_PATH_TOKEN},
    }, web={"public_url": "https://sidecar.example", "api_tokens": {"tests": READ_TOKEN}},
        webhooks={"memberlux_path_token": MEMBERLUX_PATH_TOKEN})
    migrate_store(store_url(settings))
    runtime = build_runtime(settings)
    try:
        yield create_app(runtime, testing=True), runtime
    finally:
        runtime.close()


def _grantable(runtime) -> tuple[int, int, str]:
    """(term_id, duration, units) of a live product of the demo site, so a request can succeed."""
    products = [p for p in BridgeService(runtime).catalog.products()
                if p.level_id and not p.unlimited and p.status == "publish"]
    assert products, "the demo site has no published mbl_key product"
    product = min(products, key=lambda p: p.product_id)
    return product.level_id, product.duration, product.units


def _php_pairs(value: Any, prefix: str = "") -> list[tuple[str, str]]:
    """``{"key": {"term_id": 5}}`` -> ``[("key[term_id]", "5")]``: forms as PHP (and the bridge) read them."""
    if isinstance(value, (dict, list)):
        items = value.items() if isinstance(value, dict) else enumerate(value)
        return [pair for key, item in items for pair in _php_pairs(item, f"{prefix}[{key}]" if prefix else str(key))]
    if isinstance(value, bool):
        return [(prefix, "1" if value else "")]
    return [(prefix, "" if value is None else str(value))]


def _send(case, **kwargs):
    """Call the app; object bodies of form requests are sent in PHP bracket notation (the document's
    deepObject encoding), which schemathesis does not apply to request bodies by itself."""
    if case.media_type == "application/x-www-form-urlencoded" and isinstance(case.body, dict):
        kwargs["data"] = urlencode(_php_pairs(case.body))
    return case.call(**kwargs)


def _checked(case):
    response = _send(case)
    case.validate_response(response, checks=CHECKS)
    return response


def _openapi_path(rule: str) -> str:
    return re.sub(r"<(?:[^:<>]+:)?([^<>]+)>", r"{\1}", rule)


def test_document_is_valid_openapi_3_1(bridge_app):
    app, _runtime = bridge_app
    document = openapi_document()
    assert document["openapi"].startswith("3.1")
    validate(document)
    served = app.test_client().get("/openapi.json")
    assert served.status_code == 200 and served.mimetype == "application/json"
    assert served.json == document


def test_every_bridge_route_is_documented(bridge_app):
    app, _runtime = bridge_app
    paths = openapi_document()["paths"]
    routes = [(rule.rule, method.lower()) for rule in app.url_map.iter_rules()
              if rule.endpoint.split(".")[0] in ("bridge", "health", "openapi", "programs_api", "memberlux_hooks",
                                                 "metrics")
              or rule.endpoint in ("reminders.unsubscribe_page", "reminders.unsubscribe_post", "monitor.api_sleepers")
              for method in rule.methods - {"HEAD", "OPTIONS"}]
    assert len(routes) >= 12
    missing = [f"{method.upper()} {rule}" for rule, method in routes
               if method not in paths.get(_openapi_path(rule), {})]
    assert not missing, f"routes missing from the OpenAPI document: {missing}"
    documented = {(path, method) for path, item in paths.items() for method in item
                  if method in ("get", "post", "put", "patch", "delete")}
    assert documented == {(_openapi_path(rule), method) for rule, method in routes}


def test_grant_schema_lists_exactly_the_fields_of_grant_view(bridge_app):
    app, runtime = bridge_app
    grant_schema = openapi_document()["components"]["schemas"]["Grant"]
    term_id, duration, units = _grantable(runtime)
    response = app.test_client().post("/api/v1/grants", headers={"X-API-Key": API_KEY}, json={
        "user": {"email": "schema-check@example.org"}, "grant": {"term_id": term_id, "duration": duration,
                                                                  "units": units}})
    assert response.status_code == 202, response.json
    with app.test_request_context():
        view = grant_view(BridgeService(runtime).get(response.json["grant_id"]))
    assert set(grant_schema["properties"]) == set(view) == set(grant_schema["required"])


def test_documented_happy_paths_conform(bridge_app):
    """The answers random generation rarely reaches: accepted, replayed, delivered while waiting, conflict."""
    app, runtime = bridge_app
    schema = schemathesis.openapi.from_wsgi("/openapi.json", app)
    term_id, duration, units = _grantable(runtime)
    headers = {"X-API-Key": API_KEY}
    intake = schema["/api/v1/grants"]["POST"]
    status = schema["/api/v1/grants/{ref}"]["GET"]
    body = {"user": {"email": "happy@example.org", "first_name": "Анна"},
            "grant": {"term_id": term_id, "duration": duration, "units": units}, "external_id": "deal-1"}

    first = _checked(intake.Case(body=body, media_type="application/json", headers=headers))
    assert first.status_code == 202
    replay = _checked(intake.Case(body=body, media_type="application/json", headers=headers))
    assert replay.status_code == 202 and replay.headers["idempotent-replayed"] == ["true"]
    changed = {**body, "grant": {**body["grant"], "duration": duration + 1}}
    conflict = _checked(intake.Case(body=changed, media_type="application/json", headers=headers))
    assert conflict.status_code == 409 and conflict.json()["code"] == "idempotency_conflict"

    legacy_body = {"email": "waiting@example.org", "key": {"term_id": term_id, "duration": duration, "units": units},
                   "external_id": "deal-2"}
    waited = _checked(schema["/mlgb/v1/grant"]["POST"].Case(
        body=legacy_body, media_type="application/x-www-form-urlencoded", headers=headers, query={"wait": 2}))
    assert waited.status_code == 200 and waited.json()["status"] == "succeeded", waited.json()

    read = _checked(status.Case(path_parameters={"ref": "deal-2"}, headers=headers))
    assert read.status_code == 200 and read.json()["key_id"] is not None
    missing = _checked(status.Case(path_parameters={"ref": "no-such-deal"}, headers=headers))
    assert missing.status_code == 404
    unknown = {"user": {"email": "x@example.org"}, "grant": {"term_id": 999999, "duration": 1}}
    rejected = _checked(intake.Case(body=unknown, media_type="application/json", headers=headers))
    assert rejected.status_code == 422 and rejected.json()["errors"]


def _fuzz(operation, mode, examples: int, tally: Counter, statuses: Counter) -> None:
    # A random path token only ever meets 404; the configured one lets the webhook body be fuzzed.
    tokens = {"/hooks/amocrm/": AMO_PATH_TOKEN, "/hooks/memberlux/": MEMBERLUX_PATH_TOKEN}
    token = next((t for prefix, t in tokens.items() if operation.path.startswith(prefix)), None)
    fixed = {"path_parameters": {"token": token}} if token else {}
    strategy = operation.as_strategy(generation_mode=mode, **fixed)

    @settings(max_examples=examples, deadline=None, derandomize=True, database=None, print_blob=False,
              suppress_health_check=list(HealthCheck), phases=[Phase.explicit, Phase.generate, Phase.shrink])
    @given(case=strategy)
    def run(case) -> None:
        tally[operation.label] += 1
        # Half the cases carry only the valid API key, so they reach validation; the others keep the
        # generated legacy or Standard Webhooks headers, so the signature checks get fuzzed too (the
        # legacy headers win over the others, the API key over Standard Webhooks).
        # Chosen from the case itself, so a failing example replays with the same credentials.
        turn = zlib.crc32(repr((case.body, case.query, sorted((case.headers or {}).items()))).encode()) % 4
        drop = {0: LEGACY + STANDARD_WEBHOOKS, 1: LEGACY + STANDARD_WEBHOOKS, 2: STANDARD_WEBHOOKS,
                3: LEGACY + ("X-API-Key",)}[turn]
        for name in drop:
            if case.headers:
                case.headers.pop(name, None)
        response = _send(case, headers={"X-API-Key": API_KEY} if turn != 3 else None)
        statuses[response.status_code] += 1
        assert response.status_code < 500, f"{operation.label}: {response.status_code} {response.text[:500]}"
        case.validate_response(response, checks=CHECKS)

    run()


@pytest.mark.slow
def test_schemathesis_finds_no_server_error(bridge_app):
    app, _runtime = bridge_app
    schema = schemathesis.openapi.from_wsgi("/openapi.json", app)
    tally: Counter = Counter()
    statuses: Counter = Counter()
    for result in schema.get_all_operations():
        operation = result.ok()
        intake = operation.method.upper() == "POST" and "amocrm" not in operation.path
        _fuzz(operation, schemathesis.GenerationMode.POSITIVE, 80 if intake else 40, tally, statuses)
        # Something left to make invalid once the amoCRM path token is fixed?
        has_inputs = bool(operation.body) or any(p.name != "token" for p in operation.iter_parameters())
        if has_inputs:
            _fuzz(operation, schemathesis.GenerationMode.NEGATIVE, 40 if intake else 20, tally, statuses)
    total = sum(tally.values())
    # Every public endpoint of the document (intake, hooks, unsubscribe, read APIs, metrics): at least
    # 1 000 generated requests in all, and not one server error.
    assert total >= 1000, (total, tally)
    assert not [code for code in statuses if code >= 500], statuses
    # Generation must get past authentication and parsing, or this run proves little.
    assert statuses[422] > 0 and statuses[400] > 0, statuses
