"""The programs' JSON API: enrol a learner from a CRM or a form, read an enrolment's progress.

* ``POST /api/v1/programs/<id>/enrolments`` — ``{"user": id or e-mail, "grant_first": bool}``;
  201 when enrolled now, 200 when the learner was enrolled already (enrolling is idempotent).
* ``GET /api/v1/programs/<id>/enrolments/<enrolment_id>`` — status and timeline.

Callers authenticate with a bridge key (``X-API-Key``, ``bridge.api_keys``) or a bearer token
(``Authorization: Bearer``, ``web.api_tokens``), and the credential must carry the scope: ``enrol``
to enrol (a plain bridge key has it, a plain bearer token only reads), ``enrol`` or ``read`` to read
an enrolment. No CSRF token: the blueprint is exempt, so a browser session never authorises the POST
(a cookie would make it forgeable); an administrator's session may read. Every answer is JSON with
``ok``; failures carry a stable ``code``.
"""

from __future__ import annotations

import json
import logging
from datetime import datetime
from typing import Any

from flask import Blueprint, Response, jsonify, request, url_for
from sqlalchemy.exc import OperationalError

from sidecar.bridge.auth import API_KEY
from sidecar.bridge.service import IntakeRejected
from sidecar.config import Credential, scopes_of
from sidecar.programs import status
from sidecar.programs.catalog import ProgramCatalog
from sidecar.programs.progression import EnrolmentRefused, Progression
from sidecar.web import app_singleton, current_runtime
from sidecar.web.api import api_error as _error
from sidecar.web.api import matching_name
from sidecar.web.auth import csrf_exempt, current_admin

log = logging.getLogger(__name__)

blueprint = Blueprint("programs_api", __name__)
csrf_exempt(blueprint)

MAX_ID_DIGITS = 18      # larger ids exist nowhere and would overflow the databases' integers
MAX_USER_REF = 200


def _matches(presented: str, secrets: dict) -> str | None:
    # A key being rotated answers to both of its values (Credential.values), under one name.
    return matching_name(presented, ((name, value) for name, secret in secrets.items()
                                     for value in (secret.values() if isinstance(secret, Credential) else [secret.reveal()])))


def principal(*, session_allowed: bool, scopes: tuple[str, ...]) -> tuple[str | None, Response | None]:
    """``("api_key:<name>" | "token:<name>" | "admin:<login>", None)`` or ``(None, a 401/403 answer)``.

    A key or token must carry one of ``scopes``; an administrator's session (where allowed) may do anything.
    """
    settings = current_runtime().settings
    key = request.headers.get(API_KEY, "")
    if key:
        name = _matches(key, settings.bridge.api_keys)
        if name is None:
            return None, _error(401, "invalid_api_key", "the API key is not valid")
        return _scoped(f"api_key:{name}", f"bridge.api_keys.{name}", settings.bridge.api_keys[name], scopes)
    header = request.headers.get("Authorization", "")
    if header:
        scheme, _, sent = header.partition(" ")
        if scheme.lower() != "bearer" or not sent.strip():
            return None, _error(401, "bad_authorization", "use 'Authorization: Bearer <token>' or X-API-Key")
        name = _matches(sent.strip(), settings.web.api_tokens)
        if name is None:
            return None, _error(401, "bad_token", "the bearer token is not valid")
        return _scoped(f"token:{name}", f"web.api_tokens.{name}", settings.web.api_tokens[name], scopes)
    admin = current_admin() if session_allowed else None
    if admin is not None:
        return f"admin:{admin.login}", None
    return None, _error(401, "authentication_required", f"send {API_KEY} or 'Authorization: Bearer <token>'")


def _scoped(who: str, setting: str, secret: Any, wanted: tuple[str, ...]) -> tuple[str | None, Response | None]:
    held = scopes_of(secret)
    if held & set(wanted):
        return who, None
    log.warning("programs API: %s lacks the scope %s", who, " or ".join(wanted))
    answer = _error(403, "insufficient_scope",
                    f"the credential {setting} lacks the scope {' or '.join(repr(w) for w in wanted)} (it has: "
                    f"{', '.join(sorted(held)) or 'none'}); the operator grants it with "
                    f"{setting} = {{ ..., scopes = [..., \"{wanted[0]}\"] }}", required_scope=wanted[0])
    # RFC 6750 §3.1: the client learns which scope it would need.
    answer.headers["WWW-Authenticate"] = f'Bearer realm="mlsidecar", error="insufficient_scope", scope="{wanted[0]}"'
    return None, answer


def _id(raw: str) -> int | None:
    return int(raw) if raw.isdecimal() and len(raw) <= MAX_ID_DIGITS and int(raw) > 0 else None


def _request_body() -> tuple[dict[str, Any] | None, Response | None]:
    try:
        body = json.loads(request.get_data(cache=False) or b"")
    except (UnicodeDecodeError, ValueError) as exc:  # ValueError: also a number of 4300+ digits
        return None, _error(400, "malformed_json", f"the body is not JSON ({str(exc)[:200]})")
    if not isinstance(body, dict):
        return None, _error(400, "invalid_input", 'expected a JSON object: {"user": id or e-mail, "grant_first": bool}')
    user = body.get("user")
    if isinstance(user, bool) or not isinstance(user, (int, str)):
        return None, _error(400, "invalid_input", "'user' is required: a WordPress user id or an e-mail address",
                            field="user")
    text = str(user).strip()
    if not text or len(text) > MAX_USER_REF or (text.isdecimal() and len(text) > MAX_ID_DIGITS) \
            or (isinstance(user, int) and user <= 0) or (not text.isdecimal() and "@" not in text):
        return None, _error(400, "invalid_input", "'user' must be a positive user id or an e-mail address",
                            field="user")
    if body.get("grant_first") is not None and not isinstance(body["grant_first"], bool):
        return None, _error(400, "invalid_input", "'grant_first' must be true or false", field="grant_first")
    return {"user": int(text) if text.isdecimal() else text, "grant_first": body.get("grant_first")}, None


@blueprint.errorhandler(OperationalError)
def _store_unavailable(exc: OperationalError) -> Response:
    log.error("programs API: database unavailable: %s", str(exc).splitlines()[0][:200])
    response = _error(503, "store_unavailable", "the sidecar's database is unavailable; retry shortly")
    response.headers["Retry-After"] = "30"
    return response


@blueprint.post("/api/v1/programs/<program_id>/enrolments")
def api_enrol(program_id: str) -> Response:
    who, denied = principal(session_allowed=False, scopes=("enrol",))
    if denied is not None:
        return denied
    body, invalid = _request_body()
    if invalid is not None:
        return invalid
    runtime = current_runtime()
    number = _id(program_id)
    try:
        if number is None:
            raise LookupError(program_id)
        ProgramCatalog(runtime).get(number)
    except LookupError:
        return _error(404, "not_found", f"no program {program_id[:40]}")
    progression: Progression = app_singleton("mlsidecar.progression", Progression)
    try:
        user = progression.find_user(body["user"])
    except LookupError:
        return _error(422, "unknown_user", f"no WordPress user {body['user']}")
    try:
        result = progression.enrol(number, user.id, source="api", actor=str(who), grant_first=body["grant_first"])
    except EnrolmentRefused as exc:
        return _error(422, "program_archived", str(exc))
    except LookupError as exc:      # the program or the user vanished a moment ago
        return _error(404, "not_found", str(exc))
    except IntakeRejected as exc:
        return _error(422, exc.code, f"step 1 cannot be granted: {exc.message}")
    status_url = url_for(".api_enrolment", program_id=number, enrolment_id=result.enrolment_id)
    answer = jsonify({"ok": True, "enrolment_id": result.enrolment_id, "created": result.created,
                      "grant_id": result.grant_id, "status_url": status_url})
    answer.status_code = 201 if result.created else 200
    answer.headers["Location"] = status_url
    answer.headers["Cache-Control"] = "no-store"
    return answer


@blueprint.get("/api/v1/programs/<program_id>/enrolments/<enrolment_id>")
def api_enrolment(program_id: str, enrolment_id: str) -> Response:
    _who, denied = principal(session_allowed=True, scopes=("enrol", "read"))
    if denied is not None:
        return denied
    runtime = current_runtime()
    program_number, enrolment_number = _id(program_id), _id(enrolment_id)
    found = status.enrolment(runtime, enrolment_number) if enrolment_number is not None else None
    if found is None or found.program_id != program_number:
        return _error(404, "not_found", f"no enrolment {enrolment_id[:40]} in program {program_id[:40]}")
    total = len(ProgramCatalog(runtime).get(found.program_id).definition.steps)
    answer = jsonify({
        "ok": True, "enrolment_id": found.id, "program_id": found.program_id, "user_id": found.user_id,
        "status": found.status, "step": found.current_step + 1, "total_steps": total,
        "step_since": found.step_since.isoformat(), "source": found.source,
        "enrolled_at": _moment(found.enrolled_at), "completed_at": _moment(found.completed_at),
        "timeline": [{"at": _moment(e.at), "kind": e.kind, "step": e.step, "certificate_id": e.certificate_id,
                      "grant_id": e.grant_id, "detail": e.detail} for e in status.timeline(runtime, found.id)],
    })
    answer.headers["Cache-Control"] = "no-store"
    return answer


def _moment(value: datetime | None) -> str | None:
    return value.isoformat().replace("+00:00", "Z") if value is not None else None
