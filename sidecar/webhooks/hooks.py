"""``POST /hooks/memberlux/<path token>``: MemberLux's webhook deliveries, stored as hints (see
:mod:`sidecar.webhooks.inbound`). The answer is immediate: MemberLux waits for it inside the
learner's activating request."""

from __future__ import annotations

import logging

from flask import Blueprint, Response, jsonify, request
from sqlalchemy.exc import OperationalError

from sidecar.web import current_runtime
from sidecar.web.auth import csrf_exempt

from .inbound import MAX_BODY, HintRejected, parse, store, token_matches

log = logging.getLogger(__name__)
blueprint = Blueprint("memberlux_hooks", __name__)
csrf_exempt(blueprint)


def _error(status: int, code: str, message: str) -> Response:
    answer = jsonify({"error": code, "message": message})
    answer.status_code = status
    return answer


@blueprint.post("/hooks/memberlux/<token>")
def memberlux_hook(token: str) -> Response:
    runtime = current_runtime()
    if not token_matches(runtime, token):
        # 404, not 401: the URL itself is the secret, and a wrong one is simply not a route.
        log.warning("MemberLux hook with an unknown path token from %s", request.remote_addr)
        return _error(404, "not_found", "Not Found")
    if (request.content_length or 0) > MAX_BODY:
        return _error(413, "too_large", f"payloads are at most {MAX_BODY} bytes")
    try:
        payload = parse(request.get_data(cache=False)[: MAX_BODY + 1])
        stored = store(runtime, payload)
    except HintRejected as exc:
        return _error(exc.status, exc.code, exc.message)
    except OperationalError:
        log.exception("MemberLux hook not stored: the store is unavailable")
        answer = _error(503, "store_unavailable", "try again later")
        answer.headers["Retry-After"] = "30"
        return answer
    answer = jsonify({"hint_id": stored.hint_id, "duplicate": stored.duplicate})
    answer.status_code = 202
    return answer
