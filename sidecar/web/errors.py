"""Application-wide error answers: refused requests (4xx), a database that does not answer, and any
unhandled exception.

Machine routes get the APIs' JSON error shape (``ok: false``, a stable ``code``, a message). People get
a page in the normal frame, in their language: with the navigation when an administrator is signed in,
without it for anyone else, so an error never shows an anonymous visitor more than the sign-in page
does. Nothing from the request is echoed and no traceback or exception text is shown. When a database
is down, the administrator is only known if this request loaded them before it failed: the frame never
asks the failed store again.
"""

from __future__ import annotations

import logging

import sqlalchemy as sa
from flask import Flask, Response, g, make_response, render_template, request
from werkzeug.exceptions import HTTPException, InternalServerError

from sidecar.logs import loggable_path
from sidecar.web.api import api_error
from sidecar.web.auth import Admin, current_admin
from sidecar.web.i18n import gettext

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


def status_texts(status: int) -> tuple[str, str]:
    """The title and the usual explanation of an error status, in the page's language."""
    if status == 400:
        return gettext("The request could not be read"), gettext("The sidecar could not understand this request. Go back, reload the page "
                                                                 "and try again.")
    if status == 403:
        return gettext("Not allowed"), gettext("This action is not allowed. If you followed a form, reload its page and try again.")
    if status == 404:
        return gettext("Page not found"), gettext("There is no page at this address. Check the link, or start again from the navigation.")
    if status == 405:
        return gettext("Not available this way"), gettext("This address does not take this kind of request: a button's action cannot be "
                                                          "opened as a link. Go back to the page and use its button.")
    if status == 413:
        return gettext("Request too large"), gettext("The data sent is larger than the sidecar accepts.")
    if status == 429:
        return gettext("Too many requests"), gettext("Too many requests in a short time. Wait a little and try again.")
    if status == 503:
        return gettext("Temporarily unavailable"), gettext("A database of the sidecar does not answer. Nothing was changed; try again in a "
                                                           "minute.")
    if status >= 500:
        return gettext("Something went wrong"), gettext("The sidecar could not handle this request. The error is in its log; try again "
                                                        "later.")
    return gettext("The request was refused"), gettext("The sidecar could not answer this request. Go back and try again.")


def _framing_admin(*, may_ask_store: bool) -> Admin | None:
    """The administrator the page's frame is drawn for, or ``None``; never raises.

    ``may_ask_store=False`` (a database is down): only an administrator this request already loaded
    counts, so the page does not wait on the failed database a second time. Whatever is decided is
    cached for the request, so the template's own ``current_admin()`` reads the same answer.
    """
    if "mls_admin" in g:
        return g.mls_admin
    admin = None
    if may_ask_store:
        try:
            admin = current_admin()
        except Exception as exc:  # noqa: BLE001 - the error page must still render, without the navigation
            log.warning("error page %s drawn without the navigation: the session could not be checked (%s)",
                        loggable_path(request.path), type(exc).__name__)
    g.mls_admin = admin
    return admin


def _page(status: int, text: str | None = None, *, may_ask_store: bool = True) -> Response:
    title, usual = status_texts(status)
    signed_in = _framing_admin(may_ask_store=may_ask_store) is not None
    response = make_response(render_template("error.html", status=status, title=title, text=text or usual,
                                             signed_in=signed_in), status)
    response.headers["Cache-Control"] = "no-store"
    return response


def _custom_description(exc: HTTPException) -> str | None:
    """The page's own explanation (``abort(404, description=...)``), or ``None`` for Werkzeug's English one."""
    description = exc.description
    return description if description and description != type(exc).description else None


def _http_error(exc: HTTPException) -> Response:
    status = exc.code or 500
    if _wants_machine_answer():
        code = (exc.name or "error").lower().replace(" ", "_").replace("'", "")
        response = api_error(status, code, _custom_description(exc) or (exc.description or exc.name or ""))
    else:
        response = _page(status, _custom_description(exc))
    # What the status itself promises: Allow on a 405, Retry-After on a 429, WWW-Authenticate on a 401.
    for name, value in exc.get_headers():
        if name.lower() != "content-type":
            response.headers[name] = value
    return response


def unavailable_response() -> Response:
    if _wants_machine_answer():
        response = api_error(503, "store_unavailable", "a database of the sidecar is unavailable; retry shortly")
    else:
        response = _page(503, may_ask_store=False)
    response.headers["Retry-After"] = str(RETRY_AFTER_SECONDS)
    return response


def init_app(app: Flask) -> None:
    @app.errorhandler(Exception)
    def _unhandled(exc: Exception):
        if isinstance(exc, HTTPException) and not isinstance(exc, InternalServerError):
            if exc.code is None or exc.code < 400:
                return exc  # redirects raised by routing are answers, not errors
            return _http_error(exc)
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
        return _page(500)
