"""HTTP intake of the grant bridge: thin routes around ``BridgeService`` and ``GrantDeliverer``.

Routes (all answer JSON with ``ok`` and, on failure, a stable ``code``; failures are never 2xx):

* ``POST /wp-json/mlgb/v1/grant``, ``POST /mlgb/v1/grant``, ``POST /?rest_route=/mlgb/v1/grant`` — the
  legacy URLs (a reverse proxy maps the first to the sidecar), ``POST /api/v1/grants`` — the same
  intake under its own name. Legacy and brief-style bodies, JSON or form, any of the credentials of
  ``sidecar.bridge.auth``.
* ``GET /mlgb/v1/grants/<id or external_id>`` (also under ``/api/v1/grants/``).
* ``POST /hooks/amocrm/<path token>`` and its install callback ``/hooks/amocrm/<path token>/install``.
"""

from __future__ import annotations

import hmac
import ipaddress
import logging
import time
from typing import Any

from flask import Blueprint, Response, jsonify, request, url_for
from sqlalchemy.exc import OperationalError

from sidecar.store.grant_models import FAILED, FINAL_STATES, SHADOW_STATES, Grant
from sidecar.web import app_singleton, current_runtime
from sidecar.web.auth import csrf_exempt, current_admin

from .amocrm import AmoPayloadError, extract_lead_event
from .auth import AuthError, Principal, authenticate, require_scope
from .outbox import GrantDeliverer
from .parsers import PayloadError, decode_body, parse_grant_body
from .service import BridgeService, IntakeContext, IntakeRejected

log = logging.getLogger(__name__)
blueprint = Blueprint("bridge", __name__)
csrf_exempt(blueprint)

LEGACY_ROUTE = "/mlgb/v1/grant"


_runtime = current_runtime


def bridge_service() -> BridgeService:
    """The app's one BridgeService (its level and product caches are shared by every request)."""
    return app_singleton("mlsidecar.bridge", BridgeService)


_service = bridge_service


def _deliverer() -> GrantDeliverer:
    return app_singleton("mlsidecar.deliverer", lambda runtime: GrantDeliverer(runtime, bridge_service()))


@blueprint.errorhandler(OperationalError)
def _store_unavailable(exc: OperationalError) -> Response:
    # Nothing was recorded, so nothing is lost: the sender must retry (a CRM that sees 503 does).
    log.error("grant intake: database unavailable: %s", str(exc).splitlines()[0][:200])
    response = _error(503, "store_unavailable", "the sidecar's database is unavailable; retry shortly")
    response.headers["Retry-After"] = "30"
    return response


def grant_view(grant: Grant) -> dict[str, Any]:
    """The public representation of a grant. The access code is never part of it."""
    return {
        "grant_id": grant.id,
        "status": grant.status,
        "channel": grant.channel,
        "source": grant.source_label,
        "external_id": grant.external_id,
        "amo_lead_id": grant.amo_lead_id,
        "email": grant.email,
        "term_id": grant.term_id,
        "duration": grant.duration,
        "units": grant.units,
        "product_id": grant.product_id,
        "user_id": grant.user_id,
        "key_id": grant.key_id,
        "date_start": grant.date_start.isoformat() if grant.date_start else None,
        "date_end": grant.date_end.isoformat() if grant.date_end else None,
        "unlimited": grant.is_unlimited,
        "order_id": grant.order_id,
        "attempts": grant.attempts,
        "last_error": grant.last_error,
        "shadow_outcome": grant.shadow_outcome,
        "created_at": grant.created_at.isoformat(),
        "updated_at": grant.updated_at.isoformat(),
        "completed_at": grant.completed_at.isoformat() if grant.completed_at else None,
        "status_url": url_for("bridge.grant_status", ref=grant.id),
    }


def _error(status: int, code: str, message: str, *, legacy_error: str | None = None, **extra: Any) -> Response:
    body: dict[str, Any] = {"ok": False, "code": code, "message": message, **extra}
    if legacy_error:
        body["error"] = legacy_error  # the old plugin's field, for direct callers that read it
    response = jsonify(body)
    response.status_code = status
    return response


def _read_body() -> bytes:
    limit = _runtime().settings.bridge.max_body_bytes
    if request.content_length is not None and request.content_length > limit:
        raise PayloadError(413, "payload_too_large", f"the body exceeds {limit} bytes")
    body = request.get_data(cache=True)
    if len(body) > limit:
        raise PayloadError(413, "payload_too_large", f"the body exceeds {limit} bytes")
    return body


def _wait_seconds() -> float:
    raw = request.args.get("wait")
    if raw is None:
        return 0.0
    try:
        value = float(raw)
    except ValueError:
        raise PayloadError(400, "invalid_wait", "wait must be a number of seconds") from None
    if value < 0:
        raise PayloadError(400, "invalid_wait", "wait must not be negative")
    return min(value, float(_runtime().settings.bridge.max_wait_seconds))


def _answer(grant: Grant, *, replayed: bool, waited: bool) -> Response:
    view = grant_view(grant)
    if grant.status == FAILED:
        # A replay of a failed deal is a conflict the sender cannot fix by resending; a delivery that
        # failed while the sender waited is the site's answer passed on.
        status, code = (409, "grant_failed") if replayed and not waited else (502, "delivery_failed")
        response = jsonify({"ok": False, "code": code, "message": grant.last_error, **view})
        response.status_code = status
    else:
        response = jsonify({"ok": True, **view})
        response.status_code = 200 if grant.status in FINAL_STATES else 202
    response.headers["Location"] = view["status_url"]
    if replayed:
        response.headers["Idempotent-Replayed"] = "true"
    return response


def _wait_for(grant: Grant, seconds: float) -> Grant:
    """Deliver now in this request if nobody else holds the grant, then wait until it is final."""
    deadline = time.monotonic() + seconds
    deliverer = _deliverer()
    while time.monotonic() < deadline:
        deliverer.process_by_id(grant.id)
        current = _service().get(grant.id)
        if current is None or current.status in FINAL_STATES:
            return current or grant
        time.sleep(min(0.2, max(0.0, deadline - time.monotonic())))
    return _service().get(grant.id) or grant


def _intake(channel: str) -> Response:
    runtime = _runtime()
    try:
        wait = _wait_seconds()
        body = _read_body()
        principal = authenticate(request.headers, body, runtime.settings.bridge, runtime.sessions, runtime.clock.now())
        require_scope(principal, "grant")
        parsed = parse_grant_body(decode_body(body, request.content_type))
        context = IntakeContext(channel=channel if principal.kind != "hmac" else "legacy", principal=principal,
                                source_ip=request.remote_addr, idempotency_header=request.headers.get("Idempotency-Key"),
                                extra_meta={})
        accepted = _service().accept(parsed, context)
    except AuthError as exc:
        log.info("grant intake refused: %s (%s)", exc.code, request.remote_addr)
        return _error(exc.status, exc.code, exc.message, legacy_error=exc.legacy_error)
    except PayloadError as exc:
        return _error(exc.status, exc.code, exc.message, legacy_error=exc.legacy_error)
    except IntakeRejected as exc:
        return _error(exc.status, exc.code, exc.message,
                      errors=[{"field": e.field, "code": e.code, "message": e.message} for e in exc.errors], **exc.extra)
    grant = accepted.grant
    # A shadow grant has nothing to wait for: no order is sent, its outcome comes after the watch window.
    if wait > 0 and grant.status not in FINAL_STATES and grant.status not in SHADOW_STATES:
        grant = _wait_for(grant, wait)
        return _answer(grant, replayed=accepted.replayed, waited=True)
    return _answer(grant, replayed=accepted.replayed, waited=wait > 0)


@blueprint.post("/wp-json/mlgb/v1/grant")
@blueprint.post("/wp-json/mlgb/v1/grant/")
@blueprint.post(LEGACY_ROUTE)
@blueprint.post(LEGACY_ROUTE + "/")
def legacy_grant() -> Response:
    return _intake("api")


@blueprint.post("/")
def rest_route_grant() -> Response:
    # WordPress without pretty permalinks: /?rest_route=/mlgb/v1/grant
    if request.args.get("rest_route", "").rstrip("/") != LEGACY_ROUTE:
        return _error(404, "rest_no_route", "no route matches this URL and method")
    return _intake("api")


@blueprint.post("/api/v1/grants")
def api_grant() -> Response:
    return _intake("api")


@blueprint.get("/mlgb/v1/grants/<ref>")
@blueprint.get("/api/v1/grants/<ref>")
def grant_status(ref: str) -> Response:
    runtime = _runtime()
    if current_admin() is None:
        try:
            principal = authenticate(request.headers, request.get_data(cache=True), runtime.settings.bridge,
                                     runtime.sessions, runtime.clock.now())
            require_scope(principal, "grant")
        except AuthError as exc:
            return _error(exc.status, exc.code, exc.message)
        # A credential sees only the grants it created: another one's are answered as if they did not exist.
        grant = _service().get(ref, owner=str(principal))
    else:
        grant = _service().get(ref)
    if grant is None:
        return _error(404, "not_found", f"no grant with id or external_id '{ref}'")
    response = jsonify({"ok": grant.status != FAILED, **grant_view(grant)})
    return response


# --- amoCRM -----------------------------------------------------------------------------------------
def _amo_allowed(token: str) -> Response | None:
    amo = _runtime().settings.bridge.amocrm
    expected = amo.path_token.reveal() if amo.enabled and amo.path_token else None
    if expected is None or not hmac.compare_digest(expected.encode(), token.encode("utf-8", "replace")):
        return _error(404, "not_found", "no route matches this URL")
    if amo.ip_allowlist:
        try:
            peer = ipaddress.ip_address(request.remote_addr or "")
        except ValueError:
            peer = None
        if peer is None or not any(peer in ipaddress.ip_network(net, strict=False) for net in amo.ip_allowlist):
            log.warning("amoCRM webhook from %s refused by the IP allow-list", request.remote_addr)
            return _error(403, "forbidden_ip", "Forbidden (IP)", legacy_error="Forbidden (IP)")
    return None


@blueprint.route("/hooks/amocrm/<token>/install", methods=["GET", "POST"])
def amo_install(token: str) -> Response:
    refused = _amo_allowed(token)
    if refused is not None:
        return refused
    return Response("OK", mimetype="text/plain")


@blueprint.post("/hooks/amocrm/<token>")
def amo_webhook(token: str) -> Response:
    refused = _amo_allowed(token)
    if refused is not None:
        return refused
    runtime = _runtime()
    amo = runtime.settings.bridge.amocrm
    try:
        payload = decode_body(_read_body(), request.content_type or "application/x-www-form-urlencoded")
        event = extract_lead_event(payload)
    except PayloadError as exc:
        return _error(exc.status, exc.code, exc.message, legacy_error="Invalid webhook body")
    except AmoPayloadError as exc:
        return _error(400, exc.code, exc.message, legacy_error="lead_id not found")
    if (amo.pipeline_ids and event.pipeline_id not in amo.pipeline_ids) or \
            (amo.status_ids and event.status_id not in amo.status_ids):
        # Not an error: amoCRM sends every stage change; only the configured stages grant.
        return jsonify(ok=True, ignored="pipeline_or_status_filtered", lead_id=event.lead_id)
    principal = Principal("amocrm", "path_token")
    try:
        accepted = _service().accept_amo_lead(
            event.lead_id, event.status_id, event.pipeline_id,
            IntakeContext(channel="amocrm", principal=principal, source_ip=request.remote_addr))
    except IntakeRejected as exc:
        return _error(exc.status, exc.code, exc.message, **exc.extra)
    grant = accepted.grant
    if not accepted.replayed:
        # Read the lead now so a bad lead is answered as an error while amoCRM is listening; if
        # amoCRM's API is slow or down, the worker keeps trying.
        _fetch_inline(grant)
        grant = _service().get(grant.id) or grant
    if grant.status == FAILED:
        return _error(422, (grant.meta or {}).get("rejection", "lead_rejected"), grant.last_error or "lead rejected",
                      grant_id=grant.id)
    return _answer(grant, replayed=accepted.replayed, waited=False)


def _fetch_inline(grant: Grant) -> None:
    deliverer = _deliverer()
    claimed = deliverer.claim(grant.id)
    if claimed is None:
        return
    fetched = deliverer.fetch_crm_data(claimed)
    if fetched.status not in FINAL_STATES:
        # Hand the delivery itself to the worker: the order call takes seconds.
        deliverer.release(fetched)
