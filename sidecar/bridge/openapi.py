"""The OpenAPI 3.1 description of the bridge's public HTTP interface, served at ``GET /openapi.json``.

Written by hand rather than derived from the routes: the interesting part of the contract (which
bodies are accepted, which error codes come back and with what body) lives in the parsers, the
service and the auth module, not in the route declarations. ``tests/bridge/test_openapi.py`` keeps
it honest: every bridge route must appear here, and a schemathesis run against the app checks that
the answers match what is documented.
"""

from __future__ import annotations

import copy
from functools import lru_cache
from importlib import metadata
from typing import Any

from flask import Blueprint, Response, jsonify

from sidecar.store.grant_models import ALL_STATES, SHADOW_OUTCOMES

blueprint = Blueprint("openapi", __name__)

JSON = "application/json"
FORM = "application/x-www-form-urlencoded"
_ERROR = "#/components/schemas/Error"


def _ref(kind: str, name: str) -> dict[str, str]:
    return {"$ref": f"#/components/{kind}/{name}"}


def _nullable(schema: dict[str, Any]) -> dict[str, Any]:
    """``schema`` or ``null`` (JSON Schema 2020-12 style, as OpenAPI 3.1 uses)."""
    return {"anyOf": [schema, {"type": "null"}]}


# --- schemas ------------------------------------------------------------------------------------
_WHOLE_NUMBER = {
    "description": "A whole number, as a JSON number or a string of digits (CRMs often send strings).",
    "oneOf": [
        {"type": "integer"},
        {"type": "string", "pattern": r"^\s*\+?[0-9]+\s*$", "maxLength": 20},
    ],
}

_UNITS = {
    "type": "string",
    "maxLength": 20,
    "description": "Units of `duration`: day(s), month(s) or year(s) — also d/m/y and the Russian words "
                   "(день, дней, месяц, месяцев, год, лет, …); case-insensitive. Years become months. "
                   "Default: months.",
    "examples": ["months", "days", "years", "месяцев"],
}

_PERSON_FIELDS: dict[str, Any] = {
    "first_name": {"type": "string", "maxLength": 200},
    "last_name": {"type": "string", "maxLength": 200},
    "patronymic": {"type": "string", "maxLength": 200},
    "phone": {"type": "string", "maxLength": 60},
}

_COMMON_FIELDS: dict[str, Any] = {
    "external_id": {
        "type": "string", "maxLength": 190,
        "description": "The sender's deal id. Makes the request idempotent unless an `Idempotency-Key` "
                       "header is sent: the same deal is granted once, and the same id with a different "
                       "payload is refused (409).",
    },
    "source": {"type": "string", "maxLength": 100, "description": "Free label of the sender, kept with the grant."},
    "meta": {
        "type": "object",
        "description": "Free data kept with the grant. `amo_lead_id` (a positive integer) makes the request "
                       "idempotent per amoCRM lead when there is neither a header key nor an `external_id`.",
        "properties": {"amo_lead_id": _WHOLE_NUMBER},
    },
}

_SCHEMAS: dict[str, Any] = {
    "BriefGrantRequest": {
        "title": "Brief-style grant request",
        "type": "object",
        "required": ["user", "grant"],
        "properties": {
            "user": {
                "type": "object",
                "required": ["email"],
                "properties": {"email": {"type": "string", "format": "email", "maxLength": 100}, **_PERSON_FIELDS},
            },
            "grant": {
                "type": "object",
                "required": ["term_id", "duration"],
                "properties": {
                    "term_id": {**_WHOLE_NUMBER, "description": "Access level (term id of `wpm-levels`)."},
                    "duration": {**_WHOLE_NUMBER, "description": "Length of the access, 1 day to 10 years."},
                    "units": _UNITS,
                },
            },
            **_COMMON_FIELDS,
        },
        "examples": [{
            "user": {"email": "student@example.org", "first_name": "Anna"},
            "grant": {"term_id": 12, "duration": 6, "units": "months"},
            "external_id": "deal-100500",
            "source": "crm",
        }],
    },
    "LegacyGrantRequest": {
        "title": "Legacy bridge request",
        "description": "The body of the old WordPress bridge plugin (`mlgb/v1/grant`), kept for existing senders.",
        "type": "object",
        "required": ["email", "key"],
        "properties": {
            # A body with either of these is read as brief-style, never as legacy.
            "user": False,
            "grant": False,
            "email": {"type": "string", "format": "email", "maxLength": 100},
            "key": {
                "type": "object",
                "required": ["term_id", "duration"],
                "properties": {"term_id": _WHOLE_NUMBER, "duration": _WHOLE_NUMBER, "units": _UNITS},
            },
            **_PERSON_FIELDS,
            **_COMMON_FIELDS,
        },
        "examples": [{
            "email": "student@example.org",
            "key": {"term_id": 12, "duration": 30, "units": "days"},
            "meta": {"amo_lead_id": 31337},
        }],
    },
    "GrantRequest": {
        "oneOf": [_ref("schemas", "BriefGrantRequest"), _ref("schemas", "LegacyGrantRequest")],
    },
    "FieldError": {
        "type": "object",
        "required": ["field", "code", "message"],
        "properties": {
            "field": {"type": "string", "description": "The field as the sender named it, e.g. `grant.term_id`."},
            "code": {"type": "string", "examples": ["required", "invalid_email", "invalid_level", "invalid_units",
                                                    "invalid_duration", "unknown_level"]},
            "message": {"type": "string"},
        },
    },
    "Error": {
        "title": "Error",
        "description": "Every failure: `ok` is false, `code` is stable and meant for programs, `message` for "
                       "people. Some codes add fields: `errors` (422), `grant_id` (409 idempotency_conflict), "
                       "`products` (422 no_product); `error` repeats the legacy plugin's error name.",
        "type": "object",
        "required": ["ok", "code", "message"],
        "properties": {
            "ok": {"const": False},
            "code": {"type": "string"},
            "message": {"type": "string"},
            "errors": {"type": "array", "items": _ref("schemas", "FieldError")},
            "error": {"type": "string", "description": "The legacy plugin's error field, for callers that read it."},
            "grant_id": {"type": "string"},
            "products": {"type": "array", "items": {"type": "string"}},
        },
    },
    "Grant": {
        "title": "Grant",
        "description": "A requested grant and where its delivery stands. The access code is never shown.",
        "type": "object",
        "required": ["grant_id", "status", "channel", "source", "external_id", "amo_lead_id", "email", "term_id",
                     "duration", "units", "product_id", "user_id", "key_id", "date_start", "date_end",
                     "unlimited", "order_id", "attempts", "last_error", "shadow_outcome", "created_at", "updated_at",
                     "completed_at", "status_url"],
        "properties": {
            "grant_id": {"type": "string", "maxLength": 32,
                         "description": "Also stored as `utm_id` in MemberLux's keys_meta for the key it activated."},
            "status": {"enum": list(ALL_STATES)},
            "channel": {"type": "string", "examples": ["api", "legacy", "amocrm"]},
            "source": _nullable({"type": "string"}),
            "external_id": _nullable({"type": "string"}),
            "amo_lead_id": _nullable({"type": "integer"}),
            "email": _nullable({"type": "string"}),
            "term_id": _nullable({"type": "integer"}),
            "duration": _nullable({"type": "integer"}),
            "units": _nullable({"enum": ["days", "months"]}),
            "product_id": _nullable({"type": "integer"}),
            "user_id": _nullable({"type": "integer"}),
            "key_id": _nullable({"type": "integer"}),
            "date_start": _nullable({"type": "string", "format": "date"}),
            "date_end": _nullable({"type": "string", "format": "date"}),
            "unlimited": {"type": "boolean"},
            "order_id": _nullable({"type": "integer"}),
            "attempts": {"type": "integer", "minimum": 0},
            "last_error": _nullable({"type": "string"}),
            "shadow_outcome": _nullable({"enum": list(SHADOW_OUTCOMES),
                                         "description": "Shadow mode only (status `shadow`/`shadowed`): what the "
                                                        "legacy plugin did for this request; no order is sent."}),
            "created_at": {"type": "string", "format": "date-time"},
            "updated_at": {"type": "string", "format": "date-time"},
            "completed_at": _nullable({"type": "string", "format": "date-time"}),
            "status_url": {"type": "string", "description": "Path of `GET /api/v1/grants/{ref}` for this grant."},
        },
    },
    "GrantAccepted": {
        "description": "202: recorded, the worker delivers it; 200: already final (a replay, or `wait` was given).",
        "allOf": [{"type": "object", "required": ["ok"], "properties": {"ok": {"const": True}}},
                  _ref("schemas", "Grant")],
    },
    "GrantFailure": {
        "description": "The grant failed: its record, with the failure as an error.",
        "allOf": [{"$ref": _ERROR}, _ref("schemas", "Grant")],
    },
    "GrantState": {
        "description": "`ok` is false when the grant failed.",
        "allOf": [{"type": "object", "required": ["ok"], "properties": {"ok": {"type": "boolean"}}},
                  _ref("schemas", "Grant")],
    },
    "EnrolmentRequest": {
        "title": "Enrolment request",
        "type": "object",
        "required": ["user"],
        "properties": {
            "user": {"description": "The learner: a WordPress user id, or the e-mail of an existing user.",
                     "oneOf": [{"type": "integer", "minimum": 1},
                               {"type": "string", "minLength": 1, "maxLength": 200}]},
            "grant_first": {"type": "boolean",
                            "description": "Grant step 1 now; default: the program's own setting."},
        },
        "examples": [{"user": "student@example.org", "grant_first": True}, {"user": 42}],
    },
    "Enrolment": {
        "title": "Enrolment",
        "description": "200: the learner was enrolled already (nothing changed); 201: enrolled now.",
        "type": "object",
        "required": ["ok", "enrolment_id", "created", "grant_id", "status_url"],
        "properties": {
            "ok": {"const": True},
            "enrolment_id": {"type": "integer"},
            "created": {"type": "boolean"},
            "grant_id": _nullable({"type": "string", "description": "Step 1's grant, when this enrolment made one."}),
            "status_url": {"type": "string"},
        },
    },
    "EnrolmentState": {
        "title": "Enrolment state",
        "type": "object",
        "required": ["ok", "enrolment_id", "program_id", "user_id", "status", "step", "total_steps", "step_since",
                     "source", "enrolled_at", "completed_at", "timeline"],
        "properties": {
            "ok": {"const": True},
            "enrolment_id": {"type": "integer"},
            "program_id": {"type": "integer"},
            "user_id": {"type": "integer"},
            "status": {"enum": ["active", "completed", "withdrawn"]},
            "step": {"type": "integer", "minimum": 1, "description": "The learner's current step (1-based)."},
            "total_steps": {"type": "integer"},
            "step_since": {"type": "string", "format": "date"},
            "source": {"type": "string", "examples": ["api", "ui", "cli", "legacy", "first_level"]},
            "enrolled_at": {"type": "string", "format": "date-time"},
            "completed_at": _nullable({"type": "string", "format": "date-time"}),
            "timeline": {"type": "array", "items": {
                "type": "object",
                "required": ["at", "kind", "step", "certificate_id", "grant_id", "detail"],
                "properties": {
                    "at": {"type": "string", "format": "date-time"},
                    "kind": {"type": "string", "examples": ["enrolled", "step_granted", "completed", "ignored",
                                                            "withdrawn", "imported"]},
                    "step": _nullable({"type": "integer"}),
                    "certificate_id": _nullable({"type": "integer"}),
                    "grant_id": _nullable({"type": "string"}),
                    "detail": {"type": "object"},
                },
            }},
        },
    },
    "AmoIgnored": {
        "type": "object",
        "required": ["ok", "ignored", "lead_id"],
        "properties": {"ok": {"const": True}, "ignored": {"const": "pipeline_or_status_filtered"},
                       "lead_id": {"type": "integer"}},
    },
    "AmoWebhook": {
        "description": "amoCRM's lead webhook. The lead id is read from the first of `leads[status][0][id]`, "
                       "`leads[0][id]`, `lead_id` that is present; "
                       "`status_id` and `pipeline_id` from the same element. The rest is ignored.",
        "type": "object",
        "additionalProperties": True,
        "examples": [{"leads[status][0][id]": "4200", "leads[status][0][status_id]": "142",
                      "leads[status][0][pipeline_id]": "7"}],
    },
}

# --- parameters, headers, responses ------------------------------------------------------------
_PARAMETERS: dict[str, Any] = {
    "IdempotencyKey": {
        "name": "Idempotency-Key", "in": "header", "required": False,
        "description": "1-150 printable characters. Takes precedence over `external_id` and `meta.amo_lead_id`: "
                       "a request with a key already used returns the first grant (same payload) or 409 "
                       "(different payload).",
        "schema": {"type": "string", "minLength": 1, "maxLength": 150},
    },
    "Wait": {
        "name": "wait", "in": "query", "required": False,
        "description": "Seconds to wait for the delivery before answering (capped by `bridge.max_wait_seconds`). "
                       "The grant is delivered inside the request if no worker holds it; the answer is 200 when "
                       "it succeeded in time, 502 when the site refused it, 202 when it is still on its way.",
        "schema": {"type": "number", "minimum": 0},
    },
    "GrantRef": {
        "name": "ref", "in": "path", "required": True,
        "description": "A grant id, or an `external_id` (the newest grant with it).",
        "schema": {"type": "string", "minLength": 1, "maxLength": 190},
    },
    "ProgramId": {
        "name": "program_id", "in": "path", "required": True,
        "description": "The program's id (the sidecar's, shown on its page).", "schema": {"type": "integer", "minimum": 1},
    },
    "EnrolmentId": {
        "name": "enrolment_id", "in": "path", "required": True, "schema": {"type": "integer", "minimum": 1},
    },
    "AmoToken": {
        "name": "token", "in": "path", "required": True,
        "description": "`bridge.amocrm.path_token`: amoCRM cannot sign its webhooks, so the URL is the credential.",
        "schema": {"type": "string", "minLength": 1, "maxLength": 200},
    },
}

_HEADERS: dict[str, Any] = {
    "Location": {"description": "Path of the grant's status resource.", "schema": {"type": "string"}},
    "IdempotentReplayed": {
        "description": "`true` when the answer is the grant of an earlier, identical request.",
        "schema": {"const": "true"},
    },
    "RetryAfter": {"description": "Seconds to wait before retrying.", "schema": {"type": "string"}},
    "RequestId": {"description": "Correlation id, echoed from the request's `X-Request-ID` or made up.",
                  "schema": {"type": "string"}},
}


def _error_response(description: str, codes: list[str], *, schema: dict[str, Any] | None = None,
                    headers: dict[str, Any] | None = None) -> dict[str, Any]:
    content_schema = schema or {"$ref": _ERROR}
    response: dict[str, Any] = {
        "description": description + " Codes: " + ", ".join(f"`{c}`" for c in codes) + ".",
        "content": {JSON: {"schema": content_schema}},
    }
    if headers:
        response["headers"] = headers
    return response


_RESPONSES: dict[str, Any] = {
    "GrantAccepted": {
        "description": "Recorded: the worker delivers it. A replay of a grant still on its way answers the same, "
                       "with `Idempotent-Replayed: true`.",
        "headers": {"Location": _ref("headers", "Location"), "Idempotent-Replayed": _ref("headers", "IdempotentReplayed")},
        "content": {JSON: {"schema": _ref("schemas", "GrantAccepted")}},
    },
    "GrantFinal": {
        "description": "The grant is final: delivered while the request waited (`wait`), or a replay of a "
                       "delivered (or cancelled) grant.",
        "headers": {"Location": _ref("headers", "Location"), "Idempotent-Replayed": _ref("headers", "IdempotentReplayed")},
        "content": {JSON: {"schema": _ref("schemas", "GrantAccepted")}},
    },
    "BadRequest": _error_response(
        "The body or a parameter cannot be used.",
        ["empty_body", "malformed_json", "malformed_form", "unrecognized_payload", "invalid_input", "invalid_wait",
         "invalid_idempotency_key"]),
    "Unauthenticated": _error_response(
        "No usable credential.",
        ["authentication_required", "hmac_headers_missing", "hmac_not_configured", "signature_headers_missing",
         "signature_not_configured", "timestamp_expired"]),
    "Forbidden": _error_response(
        "The credential is wrong, or it lacks the `grant` scope (`insufficient_scope`).",
        ["invalid_api_key", "invalid_hmac", "invalid_signature", "insufficient_scope"]),
    "IntakeConflict": _error_response(
        "The request conflicts with an earlier one: the idempotency key was used with a different payload "
        "(`grant_id` names the first grant), the signed request or webhook-id was already received, or the "
        "replayed deal's grant failed (the body then also carries the grant).",
        ["idempotency_conflict", "replayed_request", "grant_failed"]),
    "PayloadTooLarge": _error_response("The body is larger than `bridge.max_body_bytes`.", ["payload_too_large"]),
    "UnsupportedMediaType": _error_response(
        "Only `application/json` (or `+json`) and `application/x-www-form-urlencoded` are read.",
        ["unsupported_media_type"]),
    "Unprocessable": _error_response(
        "Well-formed but not grantable: invalid fields (`errors`), a level the site does not have, or no "
        "WooCommerce `mbl_key` product for this level and term (`products` lists the level's products).",
        ["validation_failed", "unknown_level", "no_product"]),
    "DeliveryFailed": _error_response(
        "Only with `wait`: the site refused the order while the request waited; the body carries the grant.",
        ["delivery_failed"], schema=_ref("schemas", "GrantFailure")),
    "StoreUnavailable": _error_response(
        "The sidecar's database is unavailable; nothing was recorded, send again later.", ["store_unavailable"],
        headers={"Retry-After": _ref("headers", "RetryAfter")}),
    "NotFound": _error_response("No such resource.", ["not_found"]),
}

_CREDENTIALS: list[dict[str, list[str]]] = [
    {"apiKey": []},
    {"mlgbTimestamp": [], "mlgbSignature": []},
    {"webhookId": [], "webhookTimestamp": [], "webhookSignature": []},
]

_SECURITY_SCHEMES: dict[str, Any] = {
    "apiKey": {"type": "apiKey", "in": "header", "name": "X-API-Key",
               "description": "One of the named keys of `bridge.api_keys` (scopes `grant` and `enrol` unless it names "
                              "fewer). A key sees only the grants it created."},
    "mlgbTimestamp": {"type": "apiKey", "in": "header", "name": "X-MLGB-Timestamp",
                      "description": "Legacy signed requests: Unix time of the request, within "
                                     "`bridge.replay_window_seconds` of the server clock."},
    "mlgbSignature": {"type": "apiKey", "in": "header", "name": "X-MLGB-Signature",
                      "description": "Legacy signed requests: lowercase hex HMAC-SHA256 with `bridge.hmac_secret` "
                                     "over `timestamp + \".\" + raw body`. Each signature is accepted once."},
    "webhookId": {"type": "apiKey", "in": "header", "name": "webhook-id",
                  "description": "Standard Webhooks: message id, accepted once."},
    "webhookTimestamp": {"type": "apiKey", "in": "header", "name": "webhook-timestamp",
                         "description": "Standard Webhooks: Unix time of the message."},
    "webhookSignature": {"type": "apiKey", "in": "header", "name": "webhook-signature",
                         "description": "Standard Webhooks: `v1,<base64 HMAC-SHA256>` with one of "
                                        "`bridge.standard_webhook_secrets` over `id.timestamp.body`."},
    "bearerToken": {"type": "http", "scheme": "bearer",
                    "description": "One of the named tokens of `web.api_tokens`: scope `read` unless it names more "
                                   "(`enrol` for enrolling)."},
    "adminSession": {"type": "apiKey", "in": "cookie", "name": "session",
                     "description": "A signed-in administrator of the sidecar's web interface (status reads only)."},
}


# --- operations --------------------------------------------------------------------------------
def _intake_operation(operation_id: str, summary: str, description: str, *, deprecated: bool = False,
                      extra_parameters: list[dict[str, Any]] | None = None,
                      extra_responses: dict[str, Any] | None = None) -> dict[str, Any]:
    body_schema = _ref("schemas", "GrantRequest")
    operation: dict[str, Any] = {
        "operationId": operation_id,
        "tags": ["grants"],
        "summary": summary,
        "description": description,
        "security": copy.deepcopy(_CREDENTIALS),
        "parameters": [*(extra_parameters or []), _ref("parameters", "IdempotencyKey"), _ref("parameters", "Wait")],
        "requestBody": {
            "required": True,
            "content": {
                JSON: {"schema": body_schema},
                # PHP-style brackets, as WordPress reads forms: user[email]=…&grant[term_id]=5
                FORM: {"schema": body_schema,
                       "encoding": {name: {"style": "deepObject", "explode": True}
                                    for name in ("user", "grant", "key", "meta")}},
            },
        },
        "responses": {
            "200": _ref("responses", "GrantFinal"),
            "202": _ref("responses", "GrantAccepted"),
            "400": _ref("responses", "BadRequest"),
            "401": _ref("responses", "Unauthenticated"),
            "403": _ref("responses", "Forbidden"),
            "409": _ref("responses", "IntakeConflict"),
            "413": _ref("responses", "PayloadTooLarge"),
            "415": _ref("responses", "UnsupportedMediaType"),
            "422": _ref("responses", "Unprocessable"),
            "502": _ref("responses", "DeliveryFailed"),
            "503": _ref("responses", "StoreUnavailable"),
            **(extra_responses or {}),
        },
    }
    if deprecated:
        operation["deprecated"] = True
    return operation


_INTAKE_TEXT = ("Accepts a grant request — brief-style `{user, grant}` or the legacy bridge's `{email, key}`, "
                "as JSON or as a form — authenticated by an API key, a legacy HMAC signature or a Standard "
                "Webhooks signature. A valid request is recorded durably and answered 202; the worker orders "
                "it from MemberLux. Requests are idempotent by `Idempotency-Key`, else `external_id`, else "
                "`meta.amo_lead_id`.")
_LEGACY_TEXT = _INTAKE_TEXT + " This is the old plugin's URL, for senders that cannot be changed."


def _status_operation(operation_id: str, *, deprecated: bool = False) -> dict[str, Any]:
    operation: dict[str, Any] = {
        "operationId": operation_id,
        "tags": ["grants"],
        "summary": "Read a grant's state",
        "description": "The credential that created the grant (signatures cover the empty body) or an administrator's "
                       "session. Another credential's grant answers 404, as if it did not exist.",
        "security": copy.deepcopy(_CREDENTIALS) + [{"adminSession": []}],
        "parameters": [_ref("parameters", "GrantRef")],
        "responses": {
            "200": {"description": "The grant.", "content": {JSON: {"schema": _ref("schemas", "GrantState")}}},
            "401": _ref("responses", "Unauthenticated"),
            "403": _ref("responses", "Forbidden"),
            "404": _error_response("No grant with this id or external_id created by this credential.", ["not_found"]),
            "409": _error_response("The signed request or webhook-id was already received.", ["replayed_request"]),
            "503": _ref("responses", "StoreUnavailable"),
        },
    }
    if deprecated:
        operation["deprecated"] = True
    return operation


def _amo_install_operation(operation_id: str) -> dict[str, Any]:
    return {
        "operationId": operation_id,
        "tags": ["amocrm"],
        "summary": "amoCRM integration install callback",
        "parameters": [_ref("parameters", "AmoToken")],
        "responses": {
            "200": {"description": "Acknowledged.", "content": {"text/plain": {"schema": {"const": "OK"}}}},
            "403": _error_response("The peer is not in `bridge.amocrm.ip_allowlist`.", ["forbidden_ip"]),
            "404": _error_response("amoCRM intake is off, or the token is wrong.", ["not_found"]),
        },
    }


_PROGRAM_CREDENTIALS: list[dict[str, list[str]]] = [{"apiKey": []}, {"bearerToken": []}]


def _program_operations() -> dict[str, Any]:
    unauthenticated = _error_response(
        "No usable credential, or a wrong one.",
        ["authentication_required", "invalid_api_key", "bad_authorization", "bad_token"])
    return {
        "/api/v1/programs/{program_id}/enrolments": {"post": {
            "operationId": "enrolLearner",
            "tags": ["programs"],
            "summary": "Enrol a learner in a program",
            "description": "Idempotent: enrolling a learner again changes nothing and answers 200 with the existing "
                           "enrolment. With `grant_first` (or the program's setting) step 1 is granted through the "
                           "outbox like any grant.",
            "security": copy.deepcopy(_PROGRAM_CREDENTIALS),
            "parameters": [_ref("parameters", "ProgramId")],
            "requestBody": {"required": True, "content": {JSON: {"schema": _ref("schemas", "EnrolmentRequest")}}},
            "responses": {
                "200": {"description": "Enrolled already.", "content": {JSON: {"schema": _ref("schemas", "Enrolment")}}},
                "201": {"description": "Enrolled now.", "headers": {"Location": _ref("headers", "Location")},
                        "content": {JSON: {"schema": _ref("schemas", "Enrolment")}}},
                "400": _error_response("The body is not a JSON object with a usable `user` and `grant_first`.",
                                       ["malformed_json", "invalid_input"]),
                "401": unauthenticated,
                "403": _error_response("The key or token lacks the `enrol` scope.", ["insufficient_scope"]),
                "404": _error_response("No such program.", ["not_found"]),
                "422": _error_response(
                    "The learner cannot be enrolled: no such WordPress user, the program is archived, or step 1 "
                    "cannot be granted (the bridge's code, e.g. `no_product`).",
                    ["unknown_user", "program_archived", "no_product", "unknown_level", "validation_failed"]),
                "503": _ref("responses", "StoreUnavailable"),
            },
        }},
        "/api/v1/programs/{program_id}/enrolments/{enrolment_id}": {"get": {
            "operationId": "getEnrolment",
            "tags": ["programs"],
            "summary": "Read an enrolment: status, step and timeline",
            "security": copy.deepcopy(_PROGRAM_CREDENTIALS) + [{"adminSession": []}],
            "parameters": [_ref("parameters", "ProgramId"), _ref("parameters", "EnrolmentId")],
            "responses": {
                "200": {"description": "The enrolment.",
                        "content": {JSON: {"schema": _ref("schemas", "EnrolmentState")}}},
                "401": unauthenticated,
                "403": _error_response("The key or token has neither the `read` nor the `enrol` scope.",
                                       ["insufficient_scope"]),
                "404": _error_response("No such enrolment in this program.", ["not_found"]),
                "503": _ref("responses", "StoreUnavailable"),
            },
        }},
    }


def _public_operations() -> dict[str, Any]:
    """The other routes reachable without an admin session (documented so they are fuzzed too)."""
    hint_error = {"type": "object", "required": ["error", "message"],
                  "properties": {"error": {"type": "string"}, "message": {"type": "string"}}}
    html = {"text/html": {"schema": {"type": "string"}}}
    text = {"text/plain": {"schema": {"type": "string"}}}
    token = {"name": "token", "in": "path", "required": True, "schema": {"type": "string"}}
    read_error = _error_response("Bad parameters or credentials.",
                                 ["invalid_parameter", "tokens_not_configured", "bad_authorization", "bad_token",
                                  "unauthorized"])
    return {
        "/hooks/memberlux/{token}": {"post": {
            "operationId": "memberluxWebhook", "tags": ["memberlux"],
            "summary": "MemberLux's own webhook (a hint, confirmed in the database before use)",
            "parameters": [token],
            "requestBody": {"required": True, "content": {JSON: {"schema": {"type": "object"}}}},
            "responses": {
                "202": {"description": "Stored (or already stored: `duplicate`).", "content": {JSON: {"schema": {
                    "type": "object", "required": ["hint_id", "duplicate"],
                    "properties": {"hint_id": {"type": "integer"}, "duplicate": {"type": "boolean"}}}}}},
                "400": {"description": "Not a JSON object.", "content": {JSON: {"schema": hint_error}}},
                "404": {"description": "Wrong path token, or the hook is not configured.",
                        "content": {JSON: {"schema": hint_error}}},
                "413": {"description": "Payload over 64 KiB.", "content": {JSON: {"schema": hint_error}}},
                "503": {"description": "The store is unavailable.", "content": {JSON: {"schema": hint_error}}},
            },
        }},
        "/unsubscribe/{token}": {
            "get": {"operationId": "unsubscribePage", "tags": ["reminders"],
                    "summary": "The learner's unsubscribe confirmation page (a GET never unsubscribes)",
                    "parameters": [token],
                    "responses": {"200": {"description": "Confirmation page.", "content": html},
                                  "404": {"description": "Not a link we made.", "content": html},
                                  "503": {"description": "Links are not configured.", "content": html}}},
            "post": {"operationId": "unsubscribe", "tags": ["reminders"],
                     "summary": "Unsubscribe: the page's form, or RFC 8058 one-click (`List-Unsubscribe=One-Click`)",
                     "parameters": [token],
                     "requestBody": {"content": {FORM: {"schema": {"type": "object", "properties": {
                         "List-Unsubscribe": {"type": "string"}, "confirm": {"type": "string"}}}}}},
                     "responses": {"200": {"description": "Unsubscribed.", "content": {**html, **text}},
                                   "400": {"description": "Neither one-click nor the page's form.", "content": html},
                                   "404": {"description": "Not a link we made.", "content": html},
                                   "503": {"description": "Links are not configured.", "content": html}}},
        },
        "/api/v1/sleepers": {"get": {
            "operationId": "listSleepers", "tags": ["monitor"], "summary": "The sleepers report (read API)",
            "security": [{"bearerToken": []}, {"adminSession": []}],
            "parameters": [{"name": name, "in": "query", "required": False, "schema": {"type": "string"}}
                           for name in ("level", "expired_from", "expired_to", "search", "sort", "desc", "after",
                                        "limit")],
            "responses": {"200": {"description": "A page of sleepers.", "content": {JSON: {"schema": {"type": "object"}}}},
                          "400": read_error, "401": read_error, "403": read_error,
                          "503": _ref("responses", "StoreUnavailable")},
        }},
        "/metrics": {"get": {
            "operationId": "metrics", "tags": ["operations"], "summary": "Prometheus metrics",
            "security": [{"bearerToken": []}],
            "responses": {"200": {"description": "Prometheus text format.", "content": text},
                          "401": {"description": "No or wrong bearer token.", "content": text},
                          "403": {"description": "The token lacks the `read` scope.", "content": text}},
        }},
    }


def _build() -> dict[str, Any]:
    try:
        version = metadata.version("mlsidecar")
    except metadata.PackageNotFoundError:
        version = "0"
    legacy_slash = {"description": "The same route with a trailing slash (WordPress accepts both)."}
    paths: dict[str, Any] = {
        "/api/v1/grants": {"post": _intake_operation("createGrant", "Request a grant", _INTAKE_TEXT)},
        "/mlgb/v1/grant": {"post": _intake_operation("createGrantLegacy", "Request a grant (legacy URL)", _LEGACY_TEXT)},
        "/mlgb/v1/grant/": {**legacy_slash, "post": _intake_operation(
            "createGrantLegacySlash", "Request a grant (legacy URL)", _LEGACY_TEXT)},
        "/wp-json/mlgb/v1/grant": {"post": _intake_operation(
            "createGrantWpJson", "Request a grant (legacy WordPress URL)",
            _LEGACY_TEXT + " A reverse proxy in front of WordPress routes this URL to the sidecar.")},
        "/wp-json/mlgb/v1/grant/": {**legacy_slash, "post": _intake_operation(
            "createGrantWpJsonSlash", "Request a grant (legacy WordPress URL)", _LEGACY_TEXT)},
        "/": {"post": _intake_operation(
            "createGrantRestRoute", "Request a grant (WordPress without pretty permalinks)",
            _LEGACY_TEXT + " Only with `?rest_route=/mlgb/v1/grant`; any other `rest_route` is 404.",
            extra_parameters=[{"name": "rest_route", "in": "query", "required": True,
                               "schema": {"enum": ["/mlgb/v1/grant", "/mlgb/v1/grant/"]}}],
            extra_responses={"404": _error_response("`rest_route` names no route of the sidecar.",
                                                    ["rest_no_route"])})},
        "/api/v1/grants/{ref}": {"get": _status_operation("getGrant")},
        "/mlgb/v1/grants/{ref}": {"get": _status_operation("getGrantLegacy")},
        "/hooks/amocrm/{token}": {"post": {
            "operationId": "amocrmWebhook",
            "tags": ["amocrm"],
            "summary": "amoCRM lead webhook",
            "description": "Set as the webhook of the pipeline stage that grants access. The lead and its contact "
                           "are read from amoCRM's API (now, and by the worker if amoCRM is slow), then granted "
                           "like any request. One grant per lead (or per lead and status, "
                           "`bridge.amocrm.idempotency`). Stages outside `pipeline_ids`/`status_ids` are "
                           "acknowledged and ignored.",
            "parameters": [_ref("parameters", "AmoToken")],
            "requestBody": {"required": True, "content": {
                FORM: {"schema": _ref("schemas", "AmoWebhook")},
                JSON: {"schema": {"type": "object"}},
            }},
            "responses": {
                "200": {"description": "The stage is filtered out (ignored), or a replay of a delivered lead.",
                        "content": {JSON: {"schema": {"anyOf": [_ref("schemas", "AmoIgnored"),
                                                                _ref("schemas", "GrantAccepted")]}}}},
                "202": _ref("responses", "GrantAccepted"),
                "400": _error_response("The body holds no usable lead id.",
                                       ["empty_body", "malformed_json", "malformed_form", "lead_id_missing",
                                        "lead_id_invalid"]),
                "403": _error_response("The peer is not in `bridge.amocrm.ip_allowlist`.", ["forbidden_ip"]),
                "404": _error_response("amoCRM intake is off, or the token is wrong.", ["not_found"]),
                "409": _error_response("The lead's idempotency key was used by a different request.",
                                       ["idempotency_conflict"]),
                "413": _ref("responses", "PayloadTooLarge"),
                "415": _ref("responses", "UnsupportedMediaType"),
                "422": _error_response("The lead cannot be granted (missing or invalid fields, unknown level or "
                                       "product); the code names the reason.",
                                       ["validation_failed", "unknown_level", "no_product", "lead_rejected"]),
                "503": _ref("responses", "StoreUnavailable"),
            },
        }},
        "/hooks/amocrm/{token}/install": {"get": _amo_install_operation("amocrmInstallGet"),
                                          "post": _amo_install_operation("amocrmInstallPost")},
        "/healthz": {"get": {
            "operationId": "healthz", "tags": ["operations"], "summary": "Liveness (touches no database)",
            "responses": {"200": {"description": "The process answers.", "content": {JSON: {"schema": {
                "type": "object", "required": ["status"], "properties": {"status": {"const": "ok"}}}}}}},
        }},
        "/readyz": {"get": {
            "operationId": "readyz", "tags": ["operations"], "summary": "Readiness: WordPress database and store answer",
            "responses": {
                "200": {"description": "Ready.", "content": {JSON: {"schema": {
                    "type": "object", "required": ["status"], "properties": {"status": {"const": "ready"}}}}}},
                "503": {"description": "A database does not answer.", "content": {JSON: {"schema": {
                    "type": "object", "required": ["status", "problems"],
                    "properties": {"status": {"const": "unavailable"},
                                   "problems": {"type": "object", "additionalProperties": {"type": "string"}}}}}}},
            },
        }},
        **_program_operations(),
        **_public_operations(),
        "/openapi.json": {"get": {
            "operationId": "openapi", "tags": ["operations"], "summary": "This document",
            "responses": {"200": {"description": "OpenAPI 3.1 document.",
                                  "content": {JSON: {"schema": {"type": "object"}}}}},
        }},
    }
    return {
        "openapi": "3.1.0",
        "jsonSchemaDialect": "https://spec.openapis.org/oas/3.1/dialect/base",
        "info": {
            "title": "mlsidecar grant bridge",
            "version": version,
            "description": "Grant intake for a WordPress site running MemberLux: CRMs and payment forms request "
                           "access, the sidecar records it durably and orders it from MemberLux exactly once; "
                           "learners are enrolled in bundle programs. Every JSON answer has `ok`; every failure has a "
                           "stable `code` and is never 2xx.",
        },
        "tags": [{"name": "grants"}, {"name": "amocrm"}, {"name": "programs"}, {"name": "operations"}],
        "paths": paths,
        "components": {
            "schemas": _SCHEMAS,
            "parameters": _PARAMETERS,
            "headers": _HEADERS,
            "responses": _RESPONSES,
            "securitySchemes": _SECURITY_SCHEMES,
        },
    }


@lru_cache(maxsize=1)
def _cached() -> dict[str, Any]:
    return _build()


def openapi_document() -> dict[str, Any]:
    """The document as a fresh dict (callers may change their copy)."""
    return copy.deepcopy(_cached())


@blueprint.get("/openapi.json")
def openapi_json() -> Response:
    response = jsonify(_cached())
    response.headers["Cache-Control"] = "public, max-age=300"
    return response
