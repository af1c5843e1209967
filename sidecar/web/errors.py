"""Application-wide error answers: a database that does not answer, and any unhandled exception.

Both answer without detail (no traceback, no exception text, nothing from the request echoed): JSON
for machine routes, a small bilingual page for people. The page does not extend ``base.html``: the
navigation asks the store for the signed-in administrator, and the store may be what failed.
"""

from __future__ import annotations

import logging

import sqlalchemy as sa
from flask import Flask, Response, make_response, render_template, request
from werkzeug.exceptions import HTTPException, InternalServerError, NotFound

from sidecar.logs import loggable_path
from sidecar.web.api import api_error
from sidecar.web.i18n import translate

log = logging.getLogger(__name__)

#: Seconds a client is asked to wait when a database does not answer (as the write endpoints do).
RETRY_AFTER_SECONDS = 30

_MYSQL_NO_SUCH_TABLE = 1146

# Paths called by programs, never by a person's browser: they get JSON whatever they accept.
_MACHINE_PREFIXES = ("/api/", "/mlgb/", "/wp-json/", "/hooks/", "/metrics", "/readyz", "/healthz", "/openapi.json")


def is_database_unavailable(exc: BaseException) -> bool:
    """Did a database (our store or WordPress) fail to answer, rather than refuse a statement?

    OperationalError covers refused and dropped connections, unknown databases and unreadable SQLite
    files; TimeoutError is an exhausted pool; InterfaceError a connection the driver already closed.
    """
    if isinstance(exc, (sa.exc.OperationalError, sa.exc.InterfaceError, sa.exc.TimeoutError)):
        return True
    if not isinstance(exc, sa.exc.DBAPIError):
        return False
    # A MySQL database dropped under a running app: its pooled connections answer "table doesn't
    # exist" (1146) while new ones get "unknown database" (1049, an OperationalError).
    code = exc.orig.args[0] if exc.orig is not None and getattr(exc.orig, "args", None) else None
    return exc.connection_invalidated or code == _MYSQL_NO_SUCH_TABLE


def _wants_machine_answer() -> bool:
    if request.path.startswith(_MACHINE_PREFIXES) or "rest_route" in request.args:
        return True
    return request.accept_mimetypes.best_match(["text/html", "application/json"]) == "application/json"


def _page(status: int, kind: str) -> Response:
    response = make_response(render_template("error.html", kind=kind), status)
    response.headers["Cache-Control"] = "no-store"
    return response


def unavailable_response() -> Response:
    if _wants_machine_answer():
        response = api_error(503, "store_unavailable", "a database of the sidecar is unavailable; retry shortly")
    else:
        response = _page(503, "unavailable")
    response.headers["Retry-After"] = str(RETRY_AFTER_SECONDS)
    return response


def init_app(app: Flask) -> None:
    @app.errorhandler(NotFound)
    def _not_found(exc: NotFound):
        # An address no route takes (/reminders/approvals/abc: the id converter refuses it) says so in
        # the page's language, as the pages' own 404s (no level 999) do; Werkzeug's text is English.
        if exc.description == NotFound.description and not _wants_machine_answer():
            exc.description = translate("error.not_found.text")
        return exc

    @app.errorhandler(Exception)
    def _unhandled(exc: Exception):
        if isinstance(exc, HTTPException) and not isinstance(exc, InternalServerError):
            return exc  # 4xx and the like keep Flask's own answers
        original = exc.original_exception if isinstance(exc, InternalServerError) else exc
        if original is not None and is_database_unavailable(original):
            # One line, no traceback: an outage is not a bug, and the exception's text may hold SQL.
            log.error("database unavailable on %s %s: %s", request.method, loggable_path(request.path),
                      type(original).__name__ + ": " + str(getattr(original, "orig", "") or "")[:200])
            return unavailable_response()
        if original is not None:
            # The usual "Exception on <path>" record, through the scrubbing log filter.
            app.log_exception((type(original), original, original.__traceback__))
        if _wants_machine_answer():
            return api_error(500, "internal_error", "internal error; the request id is in the X-Request-ID header")
        return _page(500, "internal")
