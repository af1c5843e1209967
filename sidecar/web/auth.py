"""Admin login: WordPress administrators sign in with their WordPress credentials, checked read-only.

Nothing is written to WordPress. The password is verified against ``users.user_pass`` through the
reader; the account must hold ``manage_options`` on this site (core.md 12) and must not be blocked by
MemberLux (``wpm_status`` = ``inactive``). The session is Flask's signed cookie carrying a random
session id; the id's row in our store (:class:`AdminSession`) is checked on every request, so signing
out ends the session for every copy of the cookie. The account is re-checked against WordPress every
few minutes, so demoting or blocking an administrator, or changing their password, in WordPress ends
their sidecar session shortly after.

Also here, for every other blueprint: :func:`login_required`, :func:`current_admin`, and the CSRF
guard (:func:`csrf_protect`, :func:`csrf_exempt`, :func:`csrf_token`).
"""

from __future__ import annotations

import functools
import hashlib
import hmac
import logging
import math
import re
import secrets
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from datetime import datetime, timedelta, timezone
from typing import Any, TypeVar
from urllib.parse import urlsplit

import bcrypt
import sqlalchemy as sa
from flask import (
    Blueprint,
    Flask,
    abort,
    flash,
    g,
    jsonify,
    make_response,
    redirect,
    render_template,
    request,
    session,
    url_for,
)
from sqlalchemy.orm import Session, sessionmaker

from sidecar.bootstrap import Runtime
from sidecar.clock import Clock
from sidecar.memberlux.passwords import verify_wordpress_password
from sidecar.memberlux.reader import MemberLuxReader, PasswordRecord, WpUser
from sidecar.memberlux.wpdata import WpDataError, php_truthy
from sidecar.store.db import unit_of_work
from sidecar.web import current_runtime
from sidecar.store.models import AdminSession, AuditEvent, LoginAttempt
from sidecar.web.i18n import gettext

__all__ = [
    "blueprint",
    "Admin",
    "current_admin",
    "login_required",
    "csrf_protect",
    "csrf_exempt",
    "csrf_token",
    "check_administrator",
    "role_grants",
    "LoginThrottle",
    "account_subject",
    "SESSION_LIFETIME",
    "RECHECK_INTERVAL",
]

log = logging.getLogger(__name__)

blueprint = Blueprint("auth", __name__)

#: Absolute lifetime of an admin session, counted from the login.
SESSION_LIFETIME = timedelta(hours=12)
#: How stale the "still an administrator" verdict cached in the session may get.
RECHECK_INTERVAL = timedelta(minutes=5)
REQUIRED_CAPABILITY = "manage_options"

THROTTLE_WINDOW = timedelta(minutes=15)
# Failures are counted per account *and* address: an attacker who knows the admin's login locks out
# only their own address, never the admin at theirs.
MAX_FAILURES_PER_LOGIN = 5
# Higher than the per-account limit: several admins behind one office NAT must not lock each other out,
# yet one address spraying many login names is still stopped.
MAX_FAILURES_PER_IP = 20
# The backstop against guessing from many addresses: once an account has this many failures in the
# window from anywhere, every address gets only MAX_FAILURES_UNDER_ATTACK tries at it. That slows a
# distributed attack down without locking anybody out: an address that has not failed still gets in.
MAX_FAILURES_PER_ACCOUNT = 20
MAX_FAILURES_UNDER_ATTACK = 2

CSRF_FIELD = "csrf_token"
CSRF_HEADER = "X-CSRF-Token"
_UNSAFE_METHODS = frozenset({"POST", "PUT", "PATCH", "DELETE"})
_EXEMPT_MARK = "_mls_csrf_exempt"

_SESSION_ADMIN = "admin"
_SESSION_CSRF = "csrf"
_MAX_LOGIN_LENGTH = 255  # longer than any user_login (60) or user_email (100) column
_MAX_NEXT_LENGTH = 2000
# Backslashes and control characters (C0 and DEL), which browsers rewrite (see safe_next); one regex scan, as
# every redirect to the login page checks its next path and a per-character loop in Python showed in profiles.
_UNSAFE_IN_NEXT = re.compile(r"[\\\x00-\x1f\x7f]")
_PHP_TRIM = " \t\n\r\0\x0b"  # what PHP's trim() removes; wp_authenticate() trims the password with it
# Used only when a role map option is missing altogether (core.md 12: manage_options is the administrator's).
_FALLBACK_ROLE_CAPABILITIES = {"administrator": frozenset({REQUIRED_CAPABILITY})}

F = TypeVar("F", bound=Callable[..., Any])
T = TypeVar("T")


@dataclass(frozen=True)
class Admin:
    """The administrator behind the current request."""

    user_id: int
    login: str
    display_name: str
    logged_in_at: datetime


# --------------------------------------------------------------------------------------------------
# Who counts as an administrator


def role_grants(roles: set[str], role_map: Mapping[str, Any] | None, capability: str) -> bool:
    """Does any of ``roles`` carry ``capability`` in the ``{prefix}user_roles`` map?

    Follows ``WP_User::has_cap`` for role capabilities: a capability counts when its value is truthy.
    Capabilities granted to a single user directly in usermeta are not considered: the reader exposes
    only the keys of that map, and without the values a ``false`` (a denial) would look like a grant.
    """
    if role_map is None:
        return any(capability in _FALLBACK_ROLE_CAPABILITIES.get(role, ()) for role in roles)
    for role in roles:
        definition = role_map.get(role)
        if not isinstance(definition, Mapping):
            continue
        granted = definition.get("capabilities")
        if isinstance(granted, Mapping) and php_truthy(granted.get(capability, False)):
            return True
    return False


def _role_map(reader: MemberLuxReader) -> Mapping[str, Any] | None:
    """The site's role definitions; ``None`` when the option is absent, ``{}`` when unreadable."""
    name = f"{reader.schema.prefix}user_roles"
    try:
        value = reader.option(name, unserialize=True)
    except WpDataError:
        log.error("option %s is not valid PHP-serialized data: nobody can sign in until it is repaired", name)
        return {}
    if value is None:
        return None
    if not isinstance(value, Mapping):
        log.error("option %s is not a role map: nobody can sign in until it is repaired", name)
        return {}
    return value


def check_administrator(reader: MemberLuxReader, user_id: int) -> tuple[WpUser | None, str | None]:
    """``(user, None)`` for an active administrator, else ``(user or None, reason)``.

    Reasons (for the audit log, never for the visitor): ``unknown_login``, ``blocked``, ``not_admin``.
    """
    user = reader.user(user_id)
    if user is None:
        return None, "unknown_login"
    if user.blocked:
        return user, "blocked"
    # user_roles() reads the site prefix's capabilities key, which is the right one on multisite too.
    if not role_grants(reader.user_roles(user_id), _role_map(reader), REQUIRED_CAPABILITY):
        return user, "not_admin"
    return user, None


@functools.cache
def _decoy_hash() -> str:
    # Unknown logins are checked against this, so they cost about as much as a real modern hash and
    # response times do not tell which logins exist.
    hashed = bcrypt.hashpw(secrets.token_bytes(32).hex().encode(), bcrypt.gensalt(10)).decode("ascii")
    return "$wp$2y$" + hashed[4:]


@dataclass(frozen=True)
class LoginOutcome:
    user: WpUser | None  # set only on success
    user_id: int | None  # known whenever the login matched an account
    refusal: str | None  # audit reason; None on success
    password_hash: str | None = None  # set only on success: its fingerprint ends the session when it changes


def find_account(reader: MemberLuxReader, login_name: str) -> PasswordRecord | None:
    """The account a login name or e-mail denotes (as WordPress looks it up), or ``None``."""
    return reader.password_hash_for_login(login_name) if len(login_name) <= _MAX_LOGIN_LENGTH else None


def authenticate(reader: MemberLuxReader, record: PasswordRecord | None, password: str) -> LoginOutcome:
    if record is None:
        verify_wordpress_password(password, _decoy_hash())
        return LoginOutcome(None, None, "unknown_login")
    if not verify_wordpress_password(password, record.password_hash):
        return LoginOutcome(None, record.user_id, "bad_password")
    user, refusal = check_administrator(reader, record.user_id)
    if refusal is not None:
        return LoginOutcome(None, record.user_id, refusal)
    return LoginOutcome(user, record.user_id, None, record.password_hash)


# --------------------------------------------------------------------------------------------------
# Throttling, shared by every web worker through the store


def login_subject(login_name: str) -> str:
    """How an unknown login name is keyed in the throttle: case-folded like WordPress's look-up, then hashed."""
    return hashlib.sha256(login_name.strip().casefold().encode("utf-8", "replace")).hexdigest()


def account_subject(user_id: int | None, login_name: str) -> str:
    """One throttle key per account, however it is typed (login or e-mail, any case).

    A name that matches no account is keyed by its normalised form, so guessing unknown names is
    counted too without telling which names exist.
    """
    if user_id is not None:
        return hashlib.sha256(f"wp-user:{user_id}".encode()).hexdigest()
    return login_subject(login_name)


def _pair_subject(account: str, ip: str) -> str:
    return hashlib.sha256(f"{account}\n{ip}".encode("utf-8", "replace")).hexdigest()


class LoginThrottle:
    """Failed logins per (account, client IP), per client IP, and per account within a sliding window.

    Only the first two lock: the per-account count only lowers the per-address allowance (see
    :data:`MAX_FAILURES_PER_ACCOUNT`), so nobody can lock an administrator out from elsewhere.
    """

    def __init__(self, sessions: sessionmaker[Session], clock: Clock) -> None:
        self.sessions = sessions
        self.clock = clock

    @staticmethod
    def _times(db: Session, bucket: str, subject: str, since: datetime) -> list[datetime]:
        stmt = (
            sa.select(LoginAttempt.attempted_at)
            .where(LoginAttempt.bucket == bucket, LoginAttempt.subject == subject, LoginAttempt.attempted_at > since)
            .order_by(LoginAttempt.attempted_at)
        )
        return list(db.execute(stmt).scalars())

    def retry_after(self, ip: str, account: str) -> int | None:
        """Seconds until another attempt is allowed, or ``None`` when attempts are allowed now."""
        now = self.clock.now()
        since = now - THROTTLE_WINDOW
        with self.sessions() as db:
            under_attack = len(self._times(db, "account", account, since)) >= MAX_FAILURES_PER_ACCOUNT
            pair_limit = MAX_FAILURES_UNDER_ATTACK if under_attack else MAX_FAILURES_PER_LOGIN
            limits = [("ip", ip[:64], MAX_FAILURES_PER_IP), ("pair", _pair_subject(account, ip), pair_limit)]
            wait = 0.0
            for bucket, subject, limit in limits:
                times = self._times(db, bucket, subject, since)
                if len(times) >= limit:
                    # Allowed again once enough failures have aged out to leave room for one more.
                    freed_at = times[len(times) - limit] + THROTTLE_WINDOW
                    wait = max(wait, (freed_at - now).total_seconds())
        return max(1, math.ceil(wait)) if wait > 0 else None

    def record_failure(self, ip: str, account: str) -> None:
        now = self.clock.now()
        with unit_of_work(self.sessions) as db:
            for bucket, subject in (("ip", ip[:64]), ("pair", _pair_subject(account, ip)), ("account", account)):
                db.add(LoginAttempt(bucket=bucket, subject=subject, attempted_at=now))
            # Pruning on the failure path keeps the table as small as the window without a scheduled job.
            db.execute(sa.delete(LoginAttempt).where(LoginAttempt.attempted_at <= now - THROTTLE_WINDOW))

    def clear_login(self, ip: str, account: str) -> None:
        """After a success: this address's failures at this account are forgotten (the others stay)."""
        with unit_of_work(self.sessions) as db:
            db.execute(sa.delete(LoginAttempt).where(LoginAttempt.bucket == "pair",
                                                     LoginAttempt.subject == _pair_subject(account, ip)))


# --------------------------------------------------------------------------------------------------
# Sessions


def _runtime() -> Runtime:
    # Not sidecar.app.runtime_of: sidecar.app imports this module.
    return current_runtime()


def _session_row_id(sid: str) -> str:
    return hashlib.sha256(sid.encode("utf-8", "replace")).hexdigest()


def _fingerprint(password_hash: str) -> str:
    return hashlib.sha256(password_hash.encode("utf-8", "replace")).hexdigest()


def _end_session(reason: str | None = None) -> None:
    """Clear the cookie and, with a reason, end the session's row for every copy of the cookie."""
    data = session.get(_SESSION_ADMIN)
    sid = data.get("sid") if isinstance(data, dict) else None
    if reason is not None and isinstance(sid, str):
        # The row first: if the store fails here (503), the browser keeps its cookie and can sign out
        # again, rather than believing it is signed out while copies of the cookie still work.
        runtime = _runtime()
        with unit_of_work(runtime.sessions) as db:
            db.execute(sa.update(AdminSession)
                       .where(AdminSession.id == _session_row_id(sid), AdminSession.ended_at.is_(None))
                       .values(ended_at=runtime.clock.now(), end_reason=reason[:20]))
    session.clear()
    g.pop("mls_admin", None)


def _password_fingerprint_now(reader: MemberLuxReader, user: WpUser) -> str | None:
    record = reader.password_hash_for_login(user.login)
    if record is None or record.user_id != user.id:
        return None
    return _fingerprint(record.password_hash)


def _load_admin() -> Admin | None:
    data = session.get(_SESSION_ADMIN)
    if not isinstance(data, dict):
        return None
    runtime = _runtime()
    now_at = runtime.clock.now()
    now = now_at.timestamp()
    try:
        user_id = int(data["id"])
        logged_in = float(data["at"])
        checked = float(data["checked"])
        sid = str(data["sid"])
    except (KeyError, TypeError, ValueError):
        _end_session()  # includes cookies from before server-side sessions: sign in again
        return None
    if now - logged_in > SESSION_LIFETIME.total_seconds():
        _end_session("expired")
        return None
    with runtime.sessions() as db:
        row = db.get(AdminSession, _session_row_id(sid))
        if row is not None:
            db.expunge(row)
    if row is None or row.ended_at is not None or row.expires_at <= now_at or row.user_id != user_id:
        # Signed out (maybe in another browser that had a copy of this cookie), or never known here.
        _end_session()
        return None
    if abs(now - checked) >= RECHECK_INTERVAL.total_seconds():
        user, refusal = check_administrator(runtime.reader, user_id)
        if user is not None and refusal is None and _password_fingerprint_now(runtime.reader, user) \
                != row.password_fingerprint:
            refusal = "password_changed"
        if user is None or refusal is not None:
            log.info("admin session of user %s ended: %s", user_id, refusal)
            _end_session(refusal or "unknown_login")
            return None
        data = {**data, "login": user.login, "name": user.display_name or user.login, "checked": now}
        session[_SESSION_ADMIN] = data
    return Admin(user_id=user_id, login=str(data.get("login", "")), display_name=str(data.get("name", "")),
                 logged_in_at=datetime.fromtimestamp(logged_in, timezone.utc))


_UNSET = object()


def current_admin() -> Admin | None:
    """The signed-in administrator, or ``None``. Cached for the request."""
    cached = g.get("mls_admin", _UNSET)
    if cached is _UNSET:
        cached = _load_admin()
        g.mls_admin = cached
    return cached  # type: ignore[return-value]


def _start_session(user: WpUser, now: datetime, password_hash: str) -> None:
    session.clear()  # a fresh CSRF token too: nothing from before the login carries over
    sid = secrets.token_urlsafe(32)
    runtime = _runtime()
    with unit_of_work(runtime.sessions) as db:
        db.add(AdminSession(id=_session_row_id(sid), user_id=user.id, created_at=now,
                            expires_at=now + SESSION_LIFETIME, password_fingerprint=_fingerprint(password_hash)))
        # Pruned on sign-in: the table holds at most the sessions of the last lifetime.
        db.execute(sa.delete(AdminSession).where(AdminSession.expires_at <= now))
    session[_SESSION_ADMIN] = {
        "id": user.id,
        "sid": sid,
        "login": user.login,
        "name": user.display_name or user.login,
        "at": now.timestamp(),
        "checked": now.timestamp(),
    }
    session[_SESSION_CSRF] = secrets.token_urlsafe(32)
    g.pop("mls_admin", None)


def safe_next(value: str | None) -> str | None:
    """``value`` if it is a path on this site, else ``None`` (no open redirects)."""
    if not value or len(value) > _MAX_NEXT_LENGTH:
        return None
    # Browsers read "\" as "/" and drop tabs/newlines, turning "/\evil" or "/\t/evil" into "//evil".
    if _UNSAFE_IN_NEXT.search(value):
        return None
    if not value.startswith("/") or value.startswith("//"):
        return None
    parts = urlsplit(value)
    if parts.scheme or parts.netloc:
        return None
    return value


def _wants_json() -> bool:
    return request.accept_mimetypes.best_match(["text/html", "application/json"]) == "application/json"


def login_required(view: F) -> F:
    """Send visitors without an admin session to the login page (JSON clients get a 401)."""

    @functools.wraps(view)
    def wrapped(*args: Any, **kwargs: Any) -> Any:
        if current_admin() is None:
            if _wants_json():
                return jsonify(error="login required"), 401
            target = None
            if request.method in ("GET", "HEAD"):
                # script_root: the path prefix when served under e.g. /mlsidecar/ behind a proxy.
                target = safe_next(request.script_root + request.full_path.rstrip("?"))
            return redirect(url_for("auth.login", next=target))
        return view(*args, **kwargs)

    return wrapped  # type: ignore[return-value]


# --------------------------------------------------------------------------------------------------
# CSRF


def csrf_token() -> str:
    """The session's CSRF token, created on first use; put it in every form that POSTs."""
    token = session.get(_SESSION_CSRF)
    if not isinstance(token, str) or len(token) < 32:
        token = secrets.token_urlsafe(32)
        session[_SESSION_CSRF] = token
    return token


def csrf_exempt(target: T) -> T:
    """Mark a view function, or a whole Blueprint, as a machine endpoint without CSRF tokens.

    Only for endpoints authenticated by other means (signatures, API keys), never for UI forms.
    """
    setattr(target, _EXEMPT_MARK, True)
    return target


def _is_exempt(app: Flask) -> bool:
    if request.url_rule is None:  # 404/405: nothing would run, let routing answer
        return True
    view = app.view_functions.get(request.endpoint or "")
    if view is not None and getattr(view, _EXEMPT_MARK, False):
        return True
    return any(getattr(app.blueprints.get(name), _EXEMPT_MARK, False) for name in request.blueprints)


def csrf_protect(app: Flask) -> None:
    """Reject unsafe requests without the session's token (form field or header) with 403 Forbidden."""

    @app.before_request
    def _check_csrf() -> None:
        if request.method not in _UNSAFE_METHODS or _is_exempt(app):
            return
        expected = session.get(_SESSION_CSRF)
        sent = request.headers.get(CSRF_HEADER) or request.form.get(CSRF_FIELD)
        if (isinstance(expected, str) and isinstance(sent, str)
                and hmac.compare_digest(expected.encode("utf-8"), sent.encode("utf-8"))):
            return
        log.warning("CSRF token missing or wrong on %s %s from %s", request.method, request.path, request.remote_addr)
        abort(403, description=gettext("The form has expired or did not come from this site. Reload the page and try again."))


@blueprint.app_context_processor
def _template_helpers() -> dict[str, Any]:
    return {"current_admin": current_admin, "csrf_token": csrf_token}


# --------------------------------------------------------------------------------------------------
# Routes


def _audit(action: str, actor: str, subject_id: int | None, reason: str | None) -> None:
    runtime = _runtime()
    details: dict[str, Any] = {"user_agent": (request.user_agent.string or "")[:200]}
    if reason:
        details["reason"] = reason
    with unit_of_work(runtime.sessions) as db:
        db.add(AuditEvent(
            occurred_at=runtime.clock.now(), subject_type="admin",
            subject_id=str(subject_id) if subject_id is not None else "unknown",
            action=action, actor=actor[:120] or "-", source_ip=(request.remote_addr or "")[:45] or None,
            request_id=g.get("request_id"), details=details,
        ))


def _form(next_url: str | None, login_name: str = "", error: str | None = None, status: int = 200):
    response = make_response(render_template("login.html", next_url=next_url, login_name=login_name, error=error),
                             status)
    response.headers["Cache-Control"] = "no-store"
    return response


@blueprint.route("/login", methods=["GET", "POST"])
def login():
    next_url = safe_next(request.values.get("next"))
    if request.method == "GET":
        if current_admin() is not None:
            return redirect(next_url or url_for("dashboard.index"))
        return _form(next_url)

    runtime = _runtime()
    login_name = request.form.get("login", "").strip()
    password = request.form.get("password", "").strip(_PHP_TRIM)
    if not login_name or not password:
        return _form(next_url, login_name, gettext("Enter your login and password."))

    ip = request.remote_addr or "unknown"
    record = find_account(runtime.reader, login_name)
    account = account_subject(record.user_id if record else None, login_name)
    throttle = LoginThrottle(runtime.sessions, runtime.clock)
    wait = throttle.retry_after(ip, account)
    if wait is not None:
        # Not recorded as another failure, or an attacker could keep an address locked out for good.
        log.warning("admin login throttled for %s (retry in %d s)", ip, wait)
        response = _form(next_url, login_name, gettext("Too many failed attempts. Try again in {minutes} "
                                                       "min.", minutes=math.ceil(wait / 60)), 429)
        response.headers["Retry-After"] = str(wait)
        return response

    outcome = authenticate(runtime.reader, record, password)
    if outcome.user is None or outcome.password_hash is None:
        throttle.record_failure(ip, account)
        _audit("login.failed", login_name, outcome.user_id, outcome.refusal)
        log.info("admin login refused from %s: %s", ip, outcome.refusal)
        # One message for every refusal: it must not reveal whether the login exists or the password was right.
        return _form(next_url, login_name, gettext("Sign-in failed: wrong login or password, or this account may not use the sidecar."))

    throttle.clear_login(ip, account)
    _start_session(outcome.user, runtime.clock.now(), outcome.password_hash)
    _audit("login.succeeded", outcome.user.login, outcome.user.id, None)
    log.info("admin %s signed in from %s", outcome.user.login, ip)
    return redirect(next_url or url_for("dashboard.index"))


@blueprint.post("/logout")
def logout():
    # The row ends too: a copy of this cookie (another browser, a stolen one) gets the login page from now on.
    _end_session("logout")
    flash(gettext("You are signed out. Copies of that session's cookie no longer work "
                  "either."), "ok")  # said on the login page the browser is sent to
    return redirect(url_for("auth.login"))
