"""What the JSON APIs (sleepers, programs) share: the error body and the secret comparison.

One place, so every API answers failures in the same shape (``ok: false`` with a stable ``code``)
and compares presented credentials the same constant-time way.
"""

from __future__ import annotations

import hmac
from collections.abc import Iterable
from typing import Any

from flask import Response, jsonify


def api_error(status: int, code: str, message: str, **extra: Any) -> Response:
    """A JSON failure: never cached; a 401 names the bearer scheme (RFC 6750)."""
    response = jsonify({"ok": False, "code": code, "message": message, **extra})
    response.status_code = status
    response.headers["Cache-Control"] = "no-store"
    if status == 401:
        response.headers["WWW-Authenticate"] = 'Bearer realm="mlsidecar"'
    return response


def matching_name(presented: str, secrets: Iterable[tuple[str, str]]) -> str | None:
    """The name of the (last) secret equal to ``presented``, or ``None``.

    No early exit: every secret costs one comparison, so the timing does not tell which one matched.
    """
    sent = presented.encode("utf-8", "replace")
    matched = None
    for name, secret in secrets:
        if hmac.compare_digest(secret.encode("utf-8"), sent):
            matched = name
    return matched
