"""A small Flask app that behaves like WordPress + MemberLux over real HTTP.

It follows ``memberlux/core.md``: Application-Password Basic auth with WordPress's error bodies,
``POST /wp-json/mbl/v1/order`` (the real WooCommerce dialect, section 5, and optionally the owner's
term-id dialect), keys activated with MemberLux's arithmetic (3.2), ``keys_meta`` with query-string
UTM values (5.6), auto certificates (4), and the mbl-api webhook fan-out (6.3, 6.4).

Deliberate differences from a real site, all on the side of consistency:

* All writes of one request happen in one database transaction (MemberLux autocommits statement by
  statement, core.md 10 "Partial writes"). The webhook fan-out runs inside that transaction, at the
  point MemberLux runs it (after the key row, before ``keys_meta`` and the certificate), so a receiver
  sees none of the request's rows until the order call has answered. Receivers must re-read later,
  which is what core.md 6.3 recommends anyway.
* Failure injection can still produce partial effects: an "after" failure commits everything and then
  answers 500, like a PHP fatal late in the chain.
* No e-mails, no auto-responder subscriptions, no WooCommerce stock or sales statistics.
"""

from __future__ import annotations

import base64
import contextlib
import hmac
import json
import logging
import random
import re
import string
import threading
import time
import zoneinfo
from collections.abc import Callable, Iterator, Mapping
from dataclasses import dataclass, field
from datetime import date, datetime, timedelta, timezone
from typing import Any

import requests
import sqlalchemy as sa
from flask import Flask, Response, jsonify, request

from sidecar.devstack.seed import (
    DEMO_API_LOGIN,
    DEMO_APP_PASSWORD,
    generate_key_code,
    php_serialize,
    php_unserialize,
    wp_password_hash,
)
from sidecar.devstack.wpschema import ZERO_DATE, build_metadata
from sidecar.domain.access import KeyRow, activation_dates
from sidecar.memberlux.schema import parse_date

__all__ = ["create_emulator_app", "set_auto_activation", "add_webhook", "Faults"]

log = logging.getLogger(__name__)

Clock = Callable[[], datetime]

UTM_FIELDS = ("utm_source", "utm_medium", "utm_campaign", "utm_id", "utm_term", "utm_content")
USERMETA_FIELDS = ("phone", *(f"custom{n}" for n in range(1, 11)), "custom1textarea")
WEBHOOK_TIMEOUT_SECONDS = 5.0

_FORBIDDEN = "Sorry, you are not allowed to do that."
_CRITICAL_ERROR_HTML = """<!DOCTYPE html>
<html lang="ru-RU">
<head>
\t<meta http-equiv="Content-Type" content="text/html; charset=utf-8" />
\t<meta name="viewport" content="width=device-width">
\t<meta name='robots' content='max-image-preview:large, noindex, follow' />
\t<title>WordPress &rsaquo; Error</title>
</head>
<body id="error-page">
\t<div class="wp-die-message"><p>There has been a critical error on this website.</p><p><a href="https://wordpress.org/documentation/article/faq-troubleshooting/">Learn more about troubleshooting WordPress.</a></p></div></body>
</html>
"""
_MAINTENANCE_HTML = """<!DOCTYPE html>
<html lang="ru-RU">
<head><meta http-equiv="Content-Type" content="text/html; charset=utf-8" /><title>Maintenance</title></head>
<body id="error-page"><div class="wp-die-message"><h1>Briefly unavailable for scheduled maintenance. Check back in a minute.</h1></div></body>
</html>
"""


# --------------------------------------------------------------------------------------------------
# WordPress helpers (validation and sanitising as PHP does it)

_EMAIL_LOCAL = re.compile(r"^[a-zA-Z0-9!#$%&'*+/=?^_`{|}~.-]+$")
_DOMAIN_LABEL = re.compile(r"^[a-z0-9-]+$", re.IGNORECASE)
_PHP_NUMERIC = re.compile(r"^[ \t\n\r\v\f]*[+-]?(\d+(\.\d*)?|\.\d+)([eE][+-]?\d+)?[ \t\n\r\v\f]*$")
_PHP_INT = re.compile(r"^[ \t\n\r\v\f]*[+-]?\d+[ \t\n\r\v\f]*$")


def is_email(value: object) -> bool:
    """WordPress ``is_email`` (the checks it makes, in its order)."""
    if not isinstance(value, str) or len(value) < 6 or value.find("@", 1) == -1:
        return False
    local, domain = value.split("@", 1)
    if not _EMAIL_LOCAL.match(local) or ".." in domain:
        return False
    if domain.strip(" \t\n\r\0\x0b.") != domain:
        return False
    labels = domain.split(".")
    if len(labels) < 2:
        return False
    return all(label.strip(" \t\n\r\0\x0b-") == label and _DOMAIN_LABEL.match(label) for label in labels)


def php_is_numeric(value: object) -> bool:
    if isinstance(value, bool):
        return False
    if isinstance(value, (int, float)):
        return True
    return isinstance(value, str) and bool(_PHP_NUMERIC.match(value))


def absint(value: object) -> int:
    """PHP ``absint``: ``abs(intval())`` (``'1.9'`` -> 1, ``-5`` -> 5, ``'1e3'`` -> 1000)."""
    if isinstance(value, bool):
        return int(value)
    if isinstance(value, int):
        return abs(value)
    if isinstance(value, float):
        return abs(int(value)) if value == value and abs(value) != float("inf") else 0
    if isinstance(value, str):
        if _PHP_INT.match(value):
            return abs(int(value.strip()))
        if _PHP_NUMERIC.match(value):
            return abs(int(float(value)))
    return 0


def _whole_number(value: object) -> int | None:
    """An integer given as a JSON number or a digit string, else ``None``."""
    if isinstance(value, bool):
        return None
    if isinstance(value, int):
        return value
    if isinstance(value, str) and _PHP_INT.match(value):
        return int(value.strip())
    return None


def sanitize_text_field(value: object) -> str:
    """Close to WordPress ``sanitize_text_field``: no tags, no octets, single-line, trimmed."""
    if isinstance(value, bool):
        value = "1" if value else ""
    elif isinstance(value, (int, float)):
        value = str(value)
    elif not isinstance(value, str):
        return ""
    text = re.sub(r"<(script|style)[^>]*?>.*?</\1>", "", value, flags=re.IGNORECASE | re.DOTALL)
    text = re.sub(r"<[^>]*?>", "", text)
    text = re.sub(r"%[a-fA-F0-9]{2}", "", text)
    text = re.sub(r"[\r\n\t ]+", " ", text)
    return text.strip()


def sanitize_user(login: str) -> str:
    """WordPress ``sanitize_user`` (non-strict)."""
    text = re.sub(r"<[^>]*?>", "", login)
    text = re.sub(r"%([a-fA-F0-9][a-fA-F0-9])", "", text)
    text = re.sub(r"&.+?;", "", text)
    text = re.sub(r"[^a-zA-Z0-9 _.\-@]", "", text)
    return re.sub(r"\s+", " ", text).strip()


def _normalise_app_password(password: str) -> str:
    # WordPress shows application passwords in groups of four and ignores everything but letters/digits.
    return re.sub(r"[^a-zA-Z0-9]", "", password)


def _wp_error(code: str, message: str, status: int, **data: Any) -> Response:
    response = jsonify({"code": code, "message": message, "data": {"status": status, **data}})
    response.status_code = status
    return response


def _html(body: str, status: int, **headers: str) -> Response:
    response = Response(body, status=status, content_type="text/html; charset=UTF-8")
    for name, value in headers.items():
        response.headers[name.replace("_", "-")] = value
    return response


def _dmy(value: date | None) -> str | None:
    return None if value is None else value.strftime("%d-%m-%Y")


# --------------------------------------------------------------------------------------------------
# State


@dataclass
class Faults:
    """Failure injection, adjustable at run time through ``POST /devstack/faults``."""

    latency_seconds: float = 0.0
    failure_rate: float = 0.0
    down: bool = False
    #: Forced outcomes for the next orders, consumed in order: "before" or "after".
    fail_next: list[str] = field(default_factory=list)

    def as_dict(self) -> dict[str, Any]:
        return {"latency_seconds": self.latency_seconds, "failure_rate": self.failure_rate, "down": self.down,
                "fail_next": list(self.fail_next)}


class _Emulator:
    def __init__(self, engine: sa.Engine, *, prefix: str, base_prefix: str | None, app_passwords: Mapping[str, str],
                 dialect: str, faults: Faults, random_seed: int, clock: Clock | None,
                 webhook_timeout: float):
        if dialect not in ("woocommerce", "term_id", "both"):
            raise ValueError("dialect must be 'woocommerce', 'term_id' or 'both'")
        self.engine = engine
        self.prefix = prefix
        self.base = base_prefix or prefix
        self.md = build_metadata(prefix, base_prefix)
        self.t = {name[len(prefix):] if name.startswith(prefix) else name: table
                  for name, table in self.md.tables.items()}
        self.users = self.md.tables[f"{self.base}users"]
        self.usermeta = self.md.tables[f"{self.base}usermeta"]
        existing = set(sa.inspect(engine).get_table_names())
        self.has_hooks = f"{prefix}memberlux_hook" in existing and f"{prefix}memberlux_hook_action" in existing
        self.has_certificates = f"{prefix}memberlux_certificate" in existing
        self.has_woocommerce = f"{prefix}woocommerce_order_items" in existing
        self.app_passwords = {login.lower(): _normalise_app_password(pw) for login, pw in app_passwords.items()}
        self.dialect = dialect
        self.faults = faults
        self.fault_rng = random.Random(random_seed)
        self.code_rng = random.SystemRandom()
        self.clock: Clock = clock or (lambda: datetime.now(timezone.utc))
        self.webhook_timeout = webhook_timeout
        self.lock = threading.Lock()
        # SQLite allows one writer at a time: serialise writes instead of failing with "locked".
        self.write_lock = threading.Lock() if engine.dialect.name == "sqlite" else None
        self.orders_handled = 0
        self.caps_key = f"{prefix}capabilities"

    # -- time -----------------------------------------------------------------------------------

    def now(self) -> datetime:
        moment = self.clock()
        if moment.tzinfo is None:
            return moment.replace(tzinfo=timezone.utc)
        return moment.astimezone(timezone.utc)

    # -- database helpers -------------------------------------------------------------------------

    @contextlib.contextmanager
    def write_transaction(self) -> Iterator[sa.Connection]:
        """One request's writes, committed together (rolled back on any exception).

        SQLite takes one writer at a time, so writers queue here instead of failing with "locked".
        On MariaDB the transaction runs at READ COMMITTED: WordPress autocommits every statement and
        never holds the gap locks REPEATABLE READ would take, on which concurrent orders deadlock.
        """
        if self.write_lock is not None:
            self.write_lock.acquire()
        try:
            with self.engine.connect() as conn:
                if conn.dialect.name == "mysql":
                    conn = conn.execution_options(isolation_level="READ COMMITTED")
                with conn.begin():
                    if conn.dialect.name == "mysql":
                        # WordPress's session mode: zero dates are legal.
                        conn.exec_driver_sql("SET SESSION sql_mode = 'NO_ENGINE_SUBSTITUTION'")
                    yield conn
        finally:
            if self.write_lock is not None:
                self.write_lock.release()

    def option(self, conn: sa.Connection, name: str) -> str | None:
        options = self.t["options"]
        return conn.execute(sa.select(options.c.option_value).where(options.c.option_name == name)).scalar()

    def option_php(self, conn: sa.Connection, name: str) -> Any:
        raw = self.option(conn, name)
        if not raw:
            return None
        try:
            return php_unserialize(raw)
        except ValueError:
            return None

    def site_zone(self, conn: sa.Connection) -> timezone | zoneinfo.ZoneInfo:
        name = self.option(conn, "timezone_string")
        if name:
            try:
                return zoneinfo.ZoneInfo(name)
            except (zoneinfo.ZoneInfoNotFoundError, ValueError):
                pass
        try:
            return timezone(timedelta(hours=float(self.option(conn, "gmt_offset") or 0)))
        except ValueError:
            return timezone.utc

    def user_meta(self, conn: sa.Connection, user_id: int) -> dict[str, str]:
        um = self.usermeta
        rows = conn.execute(sa.select(um.c.meta_key, um.c.meta_value).where(um.c.user_id == user_id)
                            .order_by(um.c.umeta_id)).all()
        return {key: value for key, value in rows if key is not None}

    def set_user_meta(self, conn: sa.Connection, user_id: int, key: str, value: str) -> None:
        um = self.usermeta
        updated = conn.execute(sa.update(um).where(um.c.user_id == user_id, um.c.meta_key == key)
                               .values(meta_value=value)).rowcount
        if not updated:
            conn.execute(sa.insert(um).values(user_id=user_id, meta_key=key, meta_value=value))

    def term_meta(self, conn: sa.Connection, term_id: int) -> dict[str, str]:
        tm = self.t["termmeta"]
        rows = conn.execute(sa.select(tm.c.meta_key, tm.c.meta_value).where(tm.c.term_id == term_id)
                            .order_by(tm.c.meta_id)).all()
        return {key: value for key, value in rows if key is not None}

    def post_meta(self, conn: sa.Connection, post_id: int) -> dict[str, str]:
        pm = self.t["postmeta"]
        rows = conn.execute(sa.select(pm.c.meta_key, pm.c.meta_value).where(pm.c.post_id == post_id)
                            .order_by(pm.c.meta_id)).all()
        return {key: value for key, value in rows if key is not None}

    def level(self, conn: sa.Connection, term_id: int) -> Any:
        terms, tt = self.t["terms"], self.t["term_taxonomy"]
        return conn.execute(
            sa.select(terms.c.term_id, terms.c.name).join(tt, tt.c.term_id == terms.c.term_id)
            .where(terms.c.term_id == term_id, tt.c.taxonomy == "wpm-levels")).first()

    # -- users and capabilities ---------------------------------------------------------------------

    def _ci_equals(self, column: sa.Column, value: str) -> sa.ColumnElement[bool]:
        # WordPress compares logins and e-mails through MySQL's case-insensitive collation; a plain
        # comparison keeps the index usable there. SQLite compares bytes, hence lower() on both sides.
        if self.engine.dialect.name == "mysql":
            return column == value
        return sa.func.lower(column) == value.lower()

    def find_user_by_login(self, conn: sa.Connection, login: str) -> Any:
        u = self.users
        return conn.execute(sa.select(u).where(self._ci_equals(u.c.user_login, login))
                            .order_by(u.c.ID).limit(1)).first()

    def find_user_by_email(self, conn: sa.Connection, email: str) -> Any:
        u = self.users
        return conn.execute(sa.select(u).where(self._ci_equals(u.c.user_email, email))
                            .order_by(u.c.ID).limit(1)).first()

    def capabilities(self, conn: sa.Connection, user_id: int) -> tuple[list[str], dict[str, bool]]:
        """(roles, capabilities) from usermeta ``{prefix}capabilities`` and option ``{prefix}user_roles``."""
        um = self.usermeta
        raw = conn.execute(sa.select(um.c.meta_value).where(um.c.user_id == user_id, um.c.meta_key == self.caps_key)
                           .limit(1)).scalar()
        try:
            granted = php_unserialize(raw) if raw else {}
        except ValueError:
            granted = {}
        if not isinstance(granted, dict):
            granted = {}
        role_defs = self.option_php(conn, f"{self.prefix}user_roles") or {}
        roles: list[str] = []
        caps: dict[str, bool] = {}
        for name, on in granted.items():
            if not on:
                continue
            name = str(name)
            if name in role_defs:
                roles.append(name)
                for cap, cap_on in (role_defs[name].get("capabilities") or {}).items():
                    caps[str(cap)] = bool(cap_on) or caps.get(str(cap), False)
        # Directly granted capabilities override role capabilities, as in WP_User::get_role_caps.
        for name, on in granted.items():
            if str(name) not in role_defs:
                caps[str(name)] = bool(on)
        for role in roles:
            caps[role] = True
        return roles, caps


# --------------------------------------------------------------------------------------------------
# Request parsing


def _php_form(multi: Any) -> dict[str, Any]:
    """Form fields the way PHP parses them: ``a[]=1&a[]=2`` -> list, ``a[x]=1`` -> dict."""
    result: dict[str, Any] = {}
    for name in multi.keys():
        values = multi.getlist(name)
        match = re.match(r"^([^\[\]]+)\[([^\]]*)\]$", name)
        if not match:
            result[name] = values[-1]
            continue
        base, index = match.groups()
        container = result.get(base)
        if index == "":
            if not isinstance(container, list):
                container = []
            container.extend(values)
        else:
            if not isinstance(container, dict):
                container = {} if not isinstance(container, list) else dict(enumerate(container))
            container[index] = values[-1]
        result[base] = container
    for key, value in list(result.items()):
        if isinstance(value, dict) and all(str(k).isdigit() for k in value):
            result[key] = [value[k] for k in sorted(value, key=lambda k: int(k))]
    return result


class _BadJson(Exception):
    pass


class _Refused(Exception):
    """Carries an error response out of a write transaction, so that it rolls back."""

    def __init__(self, response: Response):
        super().__init__(response.status)
        self.response = response


def _request_params() -> tuple[dict[str, Any], dict[str, Any], dict[str, Any]]:
    """(json, form, query) parameters; WordPress looks them up in that order."""
    body: dict[str, Any] = {}
    if request.mimetype == "application/json":
        raw = request.get_data(cache=True)
        if raw.strip():
            try:
                parsed = json.loads(raw)
            except ValueError as exc:
                raise _BadJson() from exc
            if isinstance(parsed, dict):
                body = parsed
    form = _php_form(request.form) if request.form else {}
    query = _php_form(request.args)
    return body, form, query


def _lookup(name: str, *sources: Mapping[str, Any]) -> tuple[bool, Any]:
    for source in sources:
        if name in source:
            return True, source[name]
    return False, None


# --------------------------------------------------------------------------------------------------
# The app


def create_emulator_app(
    engine: sa.Engine,
    *,
    prefix: str = "wp_",
    base_prefix: str | None = None,
    app_user: str = DEMO_API_LOGIN,
    app_password: str = DEMO_APP_PASSWORD,
    dialect: str = "both",
    latency_seconds: float = 0.0,
    failure_rate: float = 0.0,
    random_seed: int = 0,
    clock: Clock | None = None,
    extra_app_passwords: Mapping[str, str] | None = None,
    webhook_timeout: float = WEBHOOK_TIMEOUT_SECONDS,
) -> Flask:
    """A WordPress + MemberLux look-alike serving the site in ``engine`` (schema and seed must exist).

    ``app_user``/``app_password``: the Application Password WordPress would hold for that account;
    ``extra_app_passwords`` adds more (login -> password), e.g. for a non-admin in tests.
    ``dialect``: which body shape ``/mbl/v1/order`` accepts: the real WooCommerce one
    (``email``/``product_id``), the owner's term-id one (``customer``/``product``/``meta``) or both.
    ``clock`` returns the current instant (aware, UTC); "today" for keys is its UTC date.
    """
    passwords = {app_user: app_password, **dict(extra_app_passwords or {})}
    emu = _Emulator(engine, prefix=prefix, base_prefix=base_prefix, app_passwords=passwords, dialect=dialect,
                    faults=Faults(latency_seconds=latency_seconds, failure_rate=failure_rate),
                    random_seed=random_seed, clock=clock, webhook_timeout=webhook_timeout)
    app = Flask(__name__)
    app.extensions["mbl_emulator"] = emu
    app.url_map.strict_slashes = False

    # -- authentication ---------------------------------------------------------------------------

    def authenticate(conn: sa.Connection) -> tuple[Any, Response | None]:
        """(user row or None, error). Only a Basic header triggers Application-Password auth."""
        header = request.headers.get("Authorization", "")
        if not header.lower().startswith("basic "):
            return None, None
        try:
            decoded = base64.b64decode(header[6:].strip(), validate=True).decode("utf-8")
        except (ValueError, UnicodeDecodeError):
            return None, None
        if ":" not in decoded:
            return None, None
        username, password = decoded.split(":", 1)
        user = emu.find_user_by_login(conn, username)
        if user is None and "@" in username:
            user = emu.find_user_by_email(conn, username)
        if user is None:
            if is_email(username):
                return None, _wp_error("invalid_email", "<strong>Error:</strong> Unknown email address. "
                                                  "Check again or try your username.", 401)
            return None, _wp_error(
                "invalid_username",
                "<strong>Error:</strong> The username <strong>" + username + "</strong> is not registered on this "
                "site. If you are unsure of your username, try your email address instead.", 401)
        expected = emu.app_passwords.get(str(user.user_login).lower())
        given = _normalise_app_password(password)
        if expected is None or not hmac.compare_digest(given.encode(), expected.encode()):
            return None, _wp_error("incorrect_password", "The provided password is an invalid application password.", 401)
        return user, None

    def require_capability(conn: sa.Connection, capability: str) -> tuple[Any, Response | None]:
        user, error = authenticate(conn)
        if error is not None:
            return None, error
        if user is None:
            return None, _wp_error("rest_forbidden", _FORBIDDEN, 401)
        _roles, caps = emu.capabilities(conn, int(user.ID))
        if not caps.get(capability):
            return None, _wp_error("rest_forbidden", _FORBIDDEN, 403)
        return user, None

    # -- REST dispatch ------------------------------------------------------------------------------

    def rest(route: str) -> Response:
        if emu.faults.down:
            return _html(_MAINTENANCE_HTML, 503, Retry_After="600")
        route = "/" + route.strip("/")
        method = request.method
        if route == "/mbl/v1/order" and method == "POST":
            return order_route()
        with engine.connect() as conn:
            user, error = authenticate(conn)
            if error is not None:
                return error
            if route == "/" and method == "GET":
                return jsonify(index_document(conn))
            if route == "/mbl/v1" and method == "GET":
                return jsonify({"namespace": "mbl/v1", "routes": _mbl_routes()})
            if route == "/wp/v2/users/me" and method == "GET":
                return users_me(conn, user)
        if route == "/mbl/v1/webhook/action" and method == "POST":
            return webhook_action_route()
        return _wp_error("rest_no_route", "No route was found matching the URL and request method.", 404)

    @app.route("/wp-json/", defaults={"route": ""}, methods=["GET", "POST", "PUT", "PATCH", "DELETE"])
    @app.route("/wp-json/<path:route>", methods=["GET", "POST", "PUT", "PATCH", "DELETE"])
    def wp_json(route: str) -> Response:
        return rest(route)

    @app.route("/", methods=["GET", "POST", "PUT", "PATCH", "DELETE"])
    @app.route("/index.php", methods=["GET", "POST", "PUT", "PATCH", "DELETE"])
    def front() -> Response:
        rest_route = request.args.get("rest_route")
        if rest_route is not None:
            return rest(rest_route)
        if emu.faults.down:
            return _html(_MAINTENANCE_HTML, 503, Retry_After="600")
        return _html("<!DOCTYPE html><html><body><h1>MemberLux emulator</h1></body></html>", 200)

    def index_document(conn: sa.Connection) -> dict[str, Any]:
        home = request.host_url.rstrip("/")
        return {
            "name": emu.option(conn, "blogname") or "",
            "description": emu.option(conn, "blogdescription") or "",
            "url": home,
            "home": home,
            "gmt_offset": emu.option(conn, "gmt_offset") or "0",
            "timezone_string": emu.option(conn, "timezone_string") or "",
            "namespaces": ["oembed/1.0", "mbl/v1", "wc/store/v1", "wc/v3", "wp/v2", "wp-site-health/v1"],
            "authentication": {"application-passwords": {"endpoints": {
                "authorization": f"{home}/wp-admin/authorize-application.php"}}},
            "routes": {
                "/": {"namespace": "", "methods": ["GET"], "endpoints": [{"methods": ["GET"], "args": {}}]},
                **_mbl_routes(),
                "/wp/v2/users/me": {"namespace": "wp/v2", "methods": ["GET", "POST", "PUT", "PATCH", "DELETE"],
                                    "endpoints": [{"methods": ["GET"], "args": {"context": {"type": "string"}}}]},
            },
        }

    def users_me(conn: sa.Connection, user: Any) -> Response:
        if user is None:
            return _wp_error("rest_not_logged_in", "You are not currently logged in.", 401)
        roles, caps = emu.capabilities(conn, int(user.ID))
        meta = emu.user_meta(conn, int(user.ID))
        home = request.host_url.rstrip("/")
        body: dict[str, Any] = {
            "id": int(user.ID),
            "name": user.display_name,
            "url": user.user_url,
            "description": meta.get("description", ""),
            "link": f"{home}/author/{user.user_nicename}/",
            "slug": user.user_nicename,
            "avatar_urls": {},
            "meta": {"persisted_preferences": []},
        }
        if request.args.get("context") == "edit":
            registered = str(user.user_registered)
            body.update({
                "username": user.user_login,
                "first_name": meta.get("first_name", ""),
                "last_name": meta.get("last_name", ""),
                "email": user.user_email,
                "locale": meta.get("locale") or "ru_RU",
                "nickname": meta.get("nickname", ""),
                "roles": roles,
                "registered_date": registered.replace(" ", "T") + "+00:00",
                "capabilities": caps,
                "extra_capabilities": {role: True for role in roles},
            })
        return jsonify(body)

    # -- the order endpoint ------------------------------------------------------------------------------

    def choose_failure() -> str | None:
        with emu.lock:
            if emu.faults.fail_next:
                return emu.faults.fail_next.pop(0)
            if emu.faults.failure_rate > 0 and emu.fault_rng.random() < emu.faults.failure_rate:
                return "before" if emu.fault_rng.random() < 0.5 else "after"
        return None

    def order_route() -> Response:
        if emu.faults.latency_seconds > 0:
            time.sleep(emu.faults.latency_seconds)
        try:
            body, form, query = _request_params()
        except _BadJson:
            return _wp_error("rest_invalid_json", "Invalid JSON body passed.", 400)
        with engine.connect() as conn:
            _user, auth_error = authenticate(conn)
            if auth_error is not None:
                return auth_error
        term_dialect = emu.dialect == "term_id" or (
            emu.dialect == "both" and (isinstance(body.get("product"), dict) or isinstance(body.get("customer"), dict)))
        if term_dialect:
            parsed = parse_term_order(body, form, query)
        else:
            parsed = parse_product_order(body, form, query)
        if isinstance(parsed, Response):
            return parsed
        with engine.connect() as conn:
            api_user, error = require_capability(conn, "manage_options")
        if error is not None:
            return error
        failure = choose_failure()
        if failure == "before":
            return _html(_CRITICAL_ERROR_HTML, 500)
        utm = {name: str(request.args.get(name))[:60] for name in UTM_FIELDS if request.args.get(name) is not None}
        try:
            with emu.write_transaction() as conn:
                if term_dialect:
                    result = handle_term_order(conn, api_user, parsed, utm)
                else:
                    result = handle_product_order(conn, api_user, parsed, utm)
                if isinstance(result, Response):
                    raise _Refused(result)
        except _Refused as refused:
            # The handlers refuse before writing anything (e.g. 404); the rollback is a formality.
            return refused.response
        with emu.lock:
            emu.orders_handled += 1
        if failure == "after":
            return _html(_CRITICAL_ERROR_HTML, 500)
        return jsonify(result)

    def parse_product_order(body: dict, form: dict, query: dict) -> dict[str, Any] | Response:
        has_email, email = _lookup("email", body, form, query)
        has_products, product_param = _lookup("product_id", body, form, query)
        missing = [name for name, present in (("email", has_email), ("product_id", has_products)) if not present]
        if missing:
            return _wp_error("rest_missing_callback_param", "Missing parameter(s): " + ", ".join(missing), 400,
                             params=missing)
        invalid: dict[str, str] = {}
        if not is_email(email):
            invalid["email"] = "Invalid parameter."
        items = product_param if isinstance(product_param, list) else [product_param]
        if not all(php_is_numeric(item) for item in items):
            invalid["product_id"] = "Invalid product_id format"
        if invalid:
            return _wp_error("rest_invalid_param", "Invalid parameter(s): " + ", ".join(invalid), 400,
                             params=invalid, details={})
        fields = {}
        for name in ("first_name", "last_name", "patronymic", *USERMETA_FIELDS):
            present, value = _lookup(name, body, form, query)
            if present:
                fields[name] = sanitize_text_field(value)
        return {"email": str(email), "product_ids": [absint(item) for item in items], "fields": fields}

    def parse_term_order(body: dict, form: dict, query: dict) -> dict[str, Any] | Response:
        customer = body.get("customer") if isinstance(body.get("customer"), dict) else {}
        product = body.get("product") if isinstance(body.get("product"), dict) else {}
        missing = [name for name, present in (("customer.email", "email" in customer),
                                              ("product.term_id", "term_id" in product)) if not present]
        if missing:
            return _wp_error("rest_missing_callback_param", "Missing parameter(s): " + ", ".join(missing), 400,
                             params=missing)
        invalid: dict[str, str] = {}
        email = customer.get("email")
        if not is_email(email):
            invalid["customer.email"] = "Invalid parameter."
        term_id = _whole_number(product.get("term_id"))
        if term_id is None or term_id <= 0:
            invalid["product.term_id"] = "Invalid parameter."
        duration = _whole_number(product.get("duration", 12))
        if duration is None or duration < 0:
            invalid["product.duration"] = "Invalid parameter."
        units_raw = str(product.get("units", "months")).strip().lower()
        if units_raw not in ("day", "days", "month", "months", "year", "years"):
            invalid["product.units"] = "Invalid parameter."
        if invalid:
            return _wp_error("rest_invalid_param", "Invalid parameter(s): " + ", ".join(invalid), 400,
                             params=invalid, details={})
        assert term_id is not None and duration is not None
        if units_raw.startswith("year"):
            duration, units = duration * 12, "months"
        elif units_raw.startswith("day"):
            units = "days"
        else:
            units = "months"
        unlimited = product.get("is_unlimited") in (True, 1, "1", "on", "yes", "true")
        fields = {name: sanitize_text_field(customer[name])
                  for name in ("first_name", "last_name", "patronymic", *USERMETA_FIELDS) if name in customer}
        meta = body.get("meta") if isinstance(body.get("meta"), dict) else {}
        return {"email": str(email), "term_id": term_id, "duration": duration, "units": units,
                "unlimited": unlimited, "fields": fields, "meta": meta}

    # -- order handlers (inside the request's transaction) ---------------------------------------------

    def handle_product_order(conn: sa.Connection, api_user: Any, order: dict, utm: dict) -> dict | Response:
        posts, tr, tt, terms = emu.t["posts"], emu.t["term_relationships"], emu.t["term_taxonomy"], emu.t["terms"]
        products = []
        for product_id in order["product_ids"]:
            # wc_get_product: any product post, whatever its status (core.md 5.3).
            post = conn.execute(sa.select(posts.c.ID, posts.c.post_title).where(
                posts.c.ID == product_id, posts.c.post_type.in_(("product", "product_variation")))).first()
            if post is None:
                response = jsonify({"error": f"Product product_id: {product_id} not found"})
                response.status_code = 404
                return response
            product_type = conn.execute(
                sa.select(terms.c.slug).select_from(tr.join(tt, tt.c.term_taxonomy_id == tr.c.term_taxonomy_id)
                                                    .join(terms, terms.c.term_id == tt.c.term_id))
                .where(tr.c.object_id == product_id, tt.c.taxonomy == "product_type").limit(1)).scalar() or "simple"
            products.append((int(post.ID), post.post_title, product_type, emu.post_meta(conn, int(post.ID))))
        now = emu.now()
        customer = find_or_create_customer(conn, order["email"], now)
        # An old payments add-on activates for the current (API) user when the customer could not be made.
        owner_id = int(customer.ID) if customer is not None else int(api_user.ID)
        if customer is not None:
            update_customer_fields(conn, int(customer.ID), order["fields"])
        order_id = create_wc_order(conn, customer, order, products, now)
        auto_activation = auto_activation_on(conn)
        cache: dict[int, list[KeyRow]] = {}
        for product_id, _title, product_type, meta in products:
            if product_type != "mbl_key":
                continue
            term_id = absint(meta.get("_mbl_key_pin_code_level_id") or 0)
            raw_duration = meta.get("_mbl_key_pin_code_duration")
            duration = absint(raw_duration) if raw_duration not in (None, "") else 12  # add-on default: 12
            # MemberLux coerces any unit but "days" to "months" on write (core.md 1.3).
            units = "days" if meta.get("_mbl_key_pin_code_units") == "days" else "months"
            unlimited = str(meta.get("_mbl_key_pin_code_is_unlimited", "")).lower() in ("on", "1", "yes")
            try:
                price = float(meta.get("_price") or 0)
            except ValueError:
                price = 0.0
            key_id = insert_new_key(conn, term_id, duration, units, unlimited, now)
            if auto_activation:
                activate(conn, key_id=key_id, user_id=owner_id, term_id=term_id, duration=duration, units=units,
                         unlimited=unlimited, now=now, source="purchase" if price > 0 else "free_item", utm=utm,
                         responsible=int(api_user.ID), cache=cache)
        if customer is not None:
            emu.set_user_meta(conn, int(customer.ID), f"mblp_order_processed_{order_id}", "1")
        return {"order": order_id}

    def handle_term_order(conn: sa.Connection, api_user: Any, order: dict, utm: dict) -> dict | Response:
        level = emu.level(conn, order["term_id"])
        if level is None:
            return _wp_error("rest_term_invalid", f"Level term_id: {order['term_id']} not found", 404)
        now = emu.now()
        customer = find_or_create_customer(conn, order["email"], now)
        if customer is None:
            return _wp_error("registration_failed", "Could not create a user for this e-mail.", 400)
        user_id = int(customer.ID)
        update_customer_fields(conn, user_id, order["fields"])
        key_id = insert_new_key(conn, order["term_id"], order["duration"], order["units"], order["unlimited"], now)
        # The owner's dialect activates directly, with the source named in its specification.
        start, end = activate(conn, key_id=key_id, user_id=user_id, term_id=order["term_id"],
                              duration=order["duration"], units=order["units"], unlimited=order["unlimited"],
                              now=now, source="api_order", utm=utm, responsible=int(api_user.ID), cache={})
        return {"ok": True, "user_id": user_id, "term_id": order["term_id"], "key_id": key_id,
                "date_end": None if order["unlimited"] else end.isoformat()}

    def auto_activation_on(conn: sa.Connection) -> bool:
        options = emu.option_php(conn, "wpm_main_options")
        if not isinstance(options, dict):
            return False
        mblp = options.get("mblp")
        return isinstance(mblp, dict) and mblp.get("auto_activation") == "on"

    def find_or_create_customer(conn: sa.Connection, email: str, now: datetime) -> Any:
        existing = emu.find_user_by_email(conn, email)
        if existing is not None:
            return existing
        local = email.split("@", 1)[0]
        base_login = sanitize_user(local)
        if not base_login or len(base_login) > 60 or len(email) > 100:
            # wp_insert_user refuses (empty or too long login, too long e-mail): no customer.
            return None
        login, suffix = base_login, 0
        while emu.find_user_by_login(conn, login) is not None:
            suffix += 1
            login = f"{base_login}{suffix}"
        users = emu.users
        nicename = re.sub(r"[^a-z0-9_-]+", "-", login.lower()).strip("-")[:50] or login[:50]
        password = "".join(emu.code_rng.choice(string.ascii_letters + string.digits) for _ in range(24))
        result = conn.execute(sa.insert(users).values(
            user_login=login, user_pass=wp_password_hash(password), user_nicename=nicename, user_email=email,
            user_url="", user_registered=now.strftime("%Y-%m-%d %H:%M:%S"), user_activation_key="", user_status=0,
            display_name=login))
        user_id = int(result.inserted_primary_key[0])
        for key, value in (("nickname", login), ("first_name", ""), ("last_name", ""), ("description", ""),
                           ("rich_editing", "true"), ("syntax_highlighting", "true"), ("comment_shortcuts", "false"),
                           ("admin_color", "fresh"), ("use_ssl", "0"), ("show_admin_bar_front", "true"),
                           ("locale", ""), (emu.caps_key, php_serialize({"customer": True})),
                           (f"{emu.prefix}user_level", "0")):
            conn.execute(sa.insert(emu.usermeta).values(user_id=user_id, meta_key=key, meta_value=value))
        return conn.execute(sa.select(users).where(users.c.ID == user_id)).first()

    def update_customer_fields(conn: sa.Connection, user_id: int, fields: dict[str, str]) -> None:
        # Only non-empty values are written; empty ones never clear anything (core.md 5.2).
        for name, value in fields.items():
            if value == "":
                continue
            emu.set_user_meta(conn, user_id, "surname" if name == "patronymic" else name, value)

    def create_wc_order(conn: sa.Connection, customer: Any, order: dict, products: list, now: datetime) -> int:
        posts, pm = emu.t["posts"], emu.t["postmeta"]
        zone = emu.site_zone(conn)
        local = now.astimezone(zone)
        local_text, gmt_text = local.strftime("%Y-%m-%d %H:%M:%S"), now.strftime("%Y-%m-%d %H:%M:%S")
        title = "Order &ndash; " + local.strftime("%B %d, %Y @ %I:%M %p").replace(" 0", " ")
        result = conn.execute(sa.insert(posts).values(
            post_author=1, post_date=local_text, post_date_gmt=gmt_text, post_content="", post_title=title,
            post_excerpt="", post_status="wc-completed", post_name="", post_modified=local_text,
            post_modified_gmt=gmt_text, post_parent=0, guid="", post_type="shop_order"))
        order_id = int(result.inserted_primary_key[0])
        conn.execute(sa.update(posts).where(posts.c.ID == order_id).values(
            post_name=f"order-{order_id}", guid=f"{request.host_url}?post_type=shop_order&p={order_id}"))
        total = 0.0
        for product_id, product_title, _type, meta in products:
            try:
                price = float(meta.get("_price") or 0)
            except ValueError:
                price = 0.0
            total += price
            if emu.has_woocommerce:
                items, itemmeta = emu.t["woocommerce_order_items"], emu.t["woocommerce_order_itemmeta"]
                item_id = int(conn.execute(sa.insert(items).values(
                    order_item_name=product_title, order_item_type="line_item", order_id=order_id)).inserted_primary_key[0])
                price_text = f"{price:g}"
                for key, value in (("_product_id", str(product_id)), ("_variation_id", "0"), ("_qty", "1"),
                                   ("_tax_class", ""), ("_line_subtotal", price_text), ("_line_subtotal_tax", "0"),
                                   ("_line_total", price_text), ("_line_tax", "0"),
                                   ("_line_tax_data", 'a:2:{s:5:"total";a:0:{}s:8:"subtotal";a:0:{}}')):
                    conn.execute(sa.insert(itemmeta).values(order_item_id=item_id, meta_key=key, meta_value=value))
        customer_meta = emu.user_meta(conn, int(customer.ID)) if customer is not None else {}
        order_key = "wc_order_" + "".join(emu.code_rng.choice(string.ascii_letters + string.digits) for _ in range(13))
        for key, value in (
            ("_customer_user", str(int(customer.ID)) if customer is not None else "0"),
            ("_order_key", order_key),
            ("_billing_email", order["email"]),
            ("_billing_first_name", customer_meta.get("first_name", "")),
            ("_billing_last_name", customer_meta.get("last_name", "")),
            ("_order_currency", emu.option(conn, "woocommerce_currency") or "RUB"),
            ("_order_total", f"{total:.2f}"),
            ("_prices_include_tax", "no"),
            ("_created_via", "rest-api"),
            ("_date_completed", str(int(now.timestamp()))),
            ("_completed_date", local_text),
            ("_recorded_sales", "yes"),
        ):
            conn.execute(sa.insert(pm).values(post_id=order_id, meta_key=key, meta_value=value))
        return order_id

    def insert_new_key(conn: sa.Connection, term_id: int, duration: int, units: str, unlimited: bool,
                       now: datetime) -> int:
        keys = emu.t["memberlux_term_keys"]
        result = conn.execute(sa.insert(keys).values(
            term_id=term_id, user_id=None, key=generate_key_code(emu.code_rng, int(now.timestamp())),
            key_type="wpm_term_keys", status="new", sent=0, is_banned=0, duration=duration, units=units,
            date_start=ZERO_DATE, date_end=ZERO_DATE, date_registered=None, is_unlimited=1 if unlimited else 0))
        return int(result.inserted_primary_key[0])

    def user_key_rows(conn: sa.Connection, user_id: int) -> list[KeyRow]:
        keys = emu.t["memberlux_term_keys"]
        rows = conn.execute(sa.select(keys).where(keys.c.user_id == user_id).order_by(keys.c.id)).all()
        return [KeyRow(key_id=int(r.id), user_id=r.user_id, term_id=r.term_id, status=r.status, key_type=r.key_type,
                       is_banned=bool(r.is_banned), is_unlimited=bool(r.is_unlimited), duration=int(r.duration),
                       units=r.units, date_start=parse_date(r.date_start), date_end=parse_date(r.date_end),
                       date_registered=parse_date(r.date_registered)) for r in rows]

    def activate(conn: sa.Connection, *, key_id: int, user_id: int, term_id: int, duration: int, units: str,
                 unlimited: bool, now: datetime, source: str, utm: dict, responsible: int,
                 cache: dict[int, list[KeyRow]]) -> tuple[date, date]:
        """MemberLux's normal activation path and its listeners, in MemberLux's order (core.md 7)."""
        keys, meta_table = emu.t["memberlux_term_keys"], emu.t["memberlux_keys_meta"]
        today = now.date()
        # User keys are cached per request and not refreshed after an activation (core.md 3.2).
        if user_id not in cache:
            cache[user_id] = user_key_rows(conn, user_id)
        same_level = [row for row in cache[user_id] if row.term_id == term_id and row.key_id != key_id]
        start, end = activation_dates(same_level, today, duration, units)
        conn.execute(sa.update(keys).where(keys.c.id == key_id).values(
            user_id=user_id, status="used", date_registered=today.isoformat(), date_start=start.isoformat(),
            date_end=end.isoformat()))
        # Adding a code resets the user's expired, non-banned rows to "used" until the next cron (3.3).
        conn.execute(sa.update(keys).where(keys.c.user_id == user_id, keys.c.is_banned == 0,
                                           keys.c.key_type == "wpm_term_keys", keys.c.status == "expired")
                     .values(status="used"))
        user = conn.execute(sa.select(emu.users).where(emu.users.c.ID == user_id)).first()
        meta = emu.user_meta(conn, user_id)
        level = emu.level(conn, term_id)
        payload = {
            "type": source,
            "email": user.user_email if user is not None else "",
            "first_name": meta.get("first_name", ""),
            "last_name": meta.get("last_name", ""),
            "patronymic": meta.get("surname", ""),
            **{name: meta.get(name, "") for name in USERMETA_FIELDS},
            "key": {
                "term_id": str(term_id),
                "name": level.name if level is not None else "",
                "is_unlimited": 1 if unlimited else 0,
                "duration": None if unlimited else str(duration),
                "units": None if unlimited else units,
                "date_start": _dmy(start),
                "date_end": None if unlimited else _dmy(end),
            },
        }
        fan_out(conn, source, payload)
        # Core writes keys_meta after the webhook listener has run. It upserts, but a key created in this
        # request cannot have a row yet, so a plain insert does the same without locking a gap.
        conn.execute(sa.insert(meta_table).values(
            key_id=key_id, activation_datetime=now.strftime("%Y-%m-%d %H:%M:%S"), source=source,
            **{name: utm.get(name) for name in UTM_FIELDS}))
        if emu.has_certificates:
            issue_auto_certificate(conn, user_id, term_id, today, responsible)
        return start, end

    def issue_auto_certificate(conn: sa.Connection, user_id: int, term_id: int, today: date, responsible: int) -> None:
        level_meta = emu.term_meta(conn, term_id)
        if level_meta.get("_mblc_how_to_issue") != "auto":
            return
        insert_certificate(conn, user_id, term_id, level_meta, date_issue=today, create_date=today,
                           responsible=responsible)

    def insert_certificate(conn: sa.Connection, user_id: int, term_id: int, level_meta: dict[str, str], *,
                           date_issue: date, create_date: date, responsible: int) -> int:
        meta = emu.user_meta(conn, user_id)
        course = level_meta.get("_mblc_course_name", "")
        custom = {"field1": level_meta.get("_mblc_field1", ""), "field2": level_meta.get("_mblc_field2", "")}
        result = conn.execute(sa.insert(emu.t["memberlux_certificate"]).values(
            user_id=user_id, wpmlevel_id=term_id, certificate_name=course[:100],
            certificate_template_id=absint(level_meta.get("_mblc_template_id") or 0),
            graduate_first_name=meta.get("first_name", "")[:60], graduate_last_name=meta.get("last_name", "")[:60],
            graduate_surname=meta.get("surname", "")[:60], date_issue=date_issue.isoformat(),
            series=level_meta.get("_mblc_certificate_series", "")[:20], number=f"{user_id:05d}",
            responsible_person=responsible, create_date=create_date.isoformat(), course_name=course[:256],
            custom_fields=php_serialize(custom)))
        return int(result.inserted_primary_key[0])

    # -- webhooks --------------------------------------------------------------------------------------

    def matching_hooks(conn: sa.Connection, source: str) -> list[tuple[int, str]]:
        if not emu.has_hooks:
            return []
        hook, action = emu.t["memberlux_hook"], emu.t["memberlux_hook_action"]
        rows = conn.execute(
            sa.select(hook.c.id, hook.c.destination, hook.c.sort).join(action, action.c.hook_id == hook.c.id)
            .where(action.c.action.in_((source, "all"))).order_by(hook.c.sort, hook.c.id)).all()
        seen: set[int] = set()
        result = []
        for row in rows:
            if row.id not in seen:
                seen.add(row.id)
                result.append((int(row.id), row.destination))
        return result

    def deliver(destinations: list[tuple[int, str]], payload: dict) -> None:
        body = json.dumps(payload, ensure_ascii=False).encode("utf-8")
        for hook_id, url in destinations:
            try:
                requests.post(url, data=body, timeout=emu.webhook_timeout, verify=False,
                              headers={"Content-Type": "application/json; charset=utf-8",
                                       "User-Agent": "WordPress/6.8.1; " + request.host_url.rstrip("/")})
            except requests.RequestException as exc:
                # MemberLux ignores delivery errors; we only leave a trace for whoever debugs a test.
                log.warning("webhook %s to %s failed: %s", hook_id, url, exc)

    def fan_out(conn: sa.Connection, source: str, payload: dict) -> None:
        destinations = matching_hooks(conn, source)
        if destinations:
            deliver(destinations, payload)

    def webhook_action_route() -> Response:
        # Public and unauthenticated, like the real route (core.md 6.3 "Security").
        data = request.get_json(silent=True) or {}
        actions = data.get("actions") if isinstance(data, dict) else None
        if not isinstance(actions, list):
            return jsonify({"ok": False})
        with engine.connect() as conn:
            for payload in actions:
                if isinstance(payload, dict):
                    fan_out(conn, str(payload.get("type", "")), payload)
        return jsonify({"ok": True})

    # -- devstack endpoints ---------------------------------------------------------------------------

    @app.get("/devstack/health")
    def health() -> Response:
        return jsonify({"status": "ok", "down": emu.faults.down, "dialect": emu.dialect,
                        "orders_handled": emu.orders_handled, "now": emu.now().isoformat()})

    @app.route("/devstack/faults", methods=["GET", "POST"])
    def faults() -> Response:
        with engine.connect() as conn:
            _user, error = require_capability(conn, "manage_options")
        if error is not None:
            return error
        if request.method == "POST":
            data = request.get_json(silent=True)
            if not isinstance(data, dict):
                data = request.form.to_dict()
            with emu.lock:
                try:
                    if "latency_seconds" in data:
                        emu.faults.latency_seconds = max(0.0, float(data["latency_seconds"]))
                    if "failure_rate" in data:
                        emu.faults.failure_rate = min(1.0, max(0.0, float(data["failure_rate"])))
                    if "down" in data:
                        emu.faults.down = data["down"] in (True, 1, "1", "true", "on", "yes")
                    if "fail_next" in data:
                        outcomes = data["fail_next"]
                        outcomes = [outcomes] if isinstance(outcomes, str) else list(outcomes or [])
                        if any(item not in ("before", "after") for item in outcomes):
                            raise ValueError("fail_next items must be 'before' or 'after'")
                        emu.faults.fail_next = outcomes
                except (TypeError, ValueError) as exc:
                    return _wp_error("invalid_fault", str(exc), 400)
        return jsonify(emu.faults.as_dict())

    @app.post("/devstack/certificates")
    def manual_certificate() -> Response:
        """Manual issue as the certificates module's admin page does it (core.md 4)."""
        if not emu.has_certificates:
            return _wp_error("rest_no_route", "The certificates module is not installed.", 404)
        data = request.get_json(silent=True)
        if not isinstance(data, dict):
            data = request.form.to_dict()
        try:
            with emu.write_transaction() as conn:
                issuer, error = require_capability(conn, "certificate-delivery")
                if error is not None:
                    raise _Refused(error)
                user_id = absint(data.get("user_id"))
                level_id = absint(data.get("level_id", data.get("term_id")))
                if conn.execute(sa.select(emu.users.c.ID).where(emu.users.c.ID == user_id)).first() is None:
                    raise _Refused(_wp_error("invalid_user", f"User {user_id} not found", 404))
                if emu.level(conn, level_id) is None:
                    raise _Refused(_wp_error("invalid_level", f"Level {level_id} not found", 404))
                level_meta = emu.term_meta(conn, level_id)
                if level_meta.get("_mblc_has_certificate") != "yes":
                    raise _Refused(_wp_error("no_certificate", f"Level {level_id} does not issue certificates", 400))
                roles, _caps = emu.capabilities(conn, int(issuer.ID))
                if "administrator" not in roles and level_meta.get("_mblc_how_to_issue") == "auto":
                    # Coaches may issue only for levels whose certificates are issued by hand.
                    raise _Refused(_wp_error("rest_forbidden", _FORBIDDEN, 403))
                today = emu.now().date()
                try:
                    date_issue = date.fromisoformat(str(data["date_issue"])) if data.get("date_issue") else today
                except ValueError:
                    raise _Refused(_wp_error("rest_invalid_param", "Invalid parameter(s): date_issue", 400,
                                             params={"date_issue": "Expected YYYY-MM-DD"})) from None
                certificate_id = insert_certificate(conn, user_id, level_id, level_meta, date_issue=date_issue,
                                                    create_date=today, responsible=int(issuer.ID))
        except _Refused as refused:
            return refused.response
        return jsonify({"certificate_id": certificate_id, "user_id": user_id, "level_id": level_id,
                        "date_issue": date_issue.isoformat(), "create_date": today.isoformat(),
                        "responsible_person": int(issuer.ID)})

    return app


def _mbl_routes() -> dict[str, Any]:
    def route(methods: list[str], args: dict[str, Any] | None = None) -> dict[str, Any]:
        return {"namespace": "mbl/v1", "methods": methods, "endpoints": [{"methods": methods, "args": args or {}}]}

    return {
        "/mbl/v1": {"namespace": "mbl/v1", "methods": ["GET"], "endpoints": [{"methods": ["GET"], "args": {}}]},
        "/mbl/v1/order": route(["POST"], {
            "email": {"required": True}, "product_id": {"required": True},
            **{name: {"required": False} for name in ("first_name", "last_name", "patronymic", *USERMETA_FIELDS)}}),
        "/mbl/v1/webhook/form": route(["POST"]),
        "/mbl/v1/webhook/(?P<id>\\d+)": route(["DELETE"]),
        "/mbl/v1/webhook/action": route(["POST"]),
    }


# --------------------------------------------------------------------------------------------------
# Site tweaks for tests and the demo


def set_auto_activation(engine: sa.Engine, enabled: bool, *, prefix: str = "wp_") -> None:
    """Switch ``wpm_main_options['mblp']['auto_activation']`` (payments add-on) on or off."""
    options = build_metadata(prefix).tables[f"{prefix}options"]
    with engine.begin() as conn:
        raw = conn.execute(sa.select(options.c.option_value).where(options.c.option_name == "wpm_main_options")).scalar()
        value = php_unserialize(raw) if raw else {}
        if not isinstance(value, dict):
            value = {}
        mblp = value.get("mblp") if isinstance(value.get("mblp"), dict) else {}
        mblp["auto_activation"] = "on" if enabled else "off"
        value["mblp"] = mblp
        serialized = php_serialize(value)
        if raw is None:
            conn.execute(sa.insert(options).values(option_name="wpm_main_options", option_value=serialized,
                                                   autoload="yes"))
        else:
            conn.execute(sa.update(options).where(options.c.option_name == "wpm_main_options")
                         .values(option_value=serialized))


def add_webhook(engine: sa.Engine, destination: str, actions: tuple[str, ...] = ("all",), *,
                prefix: str = "wp_", sort: int | None = None) -> int:
    """Register an mbl-api webhook (``memberlux_hook`` + ``memberlux_hook_action`` rows); returns its id."""
    md = build_metadata(prefix)
    hook, action = md.tables[f"{prefix}memberlux_hook"], md.tables[f"{prefix}memberlux_hook_action"]
    with engine.begin() as conn:
        if sort is None:
            sort = int(conn.execute(sa.select(sa.func.coalesce(sa.func.max(hook.c.sort), 0))).scalar()) + 1
        hook_id = int(conn.execute(sa.insert(hook).values(
            destination=destination, sort=sort, created_at=datetime.now(timezone.utc).strftime("%Y-%m-%d %H:%M:%S"),
            active=1)).inserted_primary_key[0])
        for name in actions:
            conn.execute(sa.insert(action).values(hook_id=hook_id, action=name))
    return hook_id
