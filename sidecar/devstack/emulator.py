"""A Flask app that behaves like WordPress + MemberLux over real HTTP - including its bad days.

It follows ``memberlux/core.md``: Application-Password Basic auth with WordPress's error bodies,
``POST /wp-json/mbl/v1/order`` (the real WooCommerce dialect, section 5, and optionally the owner's
term-id dialect), the order path written statement by statement in the real order (13, 7, 8; see
``order_path``), the mbl-api webhook fan-out (6.3, 6.4), PHP session locks, and a proxy in front.

How a request runs, as on a PHP-FPM site behind nginx:

* Every WordPress request is handed to a "PHP worker" thread. The worker starts the PHP session
  (waiting for its lock when the request carries a known ``PHPSESSID``), does the work, and only then
  releases the session. The HTTP thread waits for the worker's answer.
* If the caller disconnects or times out, the worker goes on to the end. With
  ``gateway_timeout_seconds`` the HTTP thread answers 504 like nginx once that much time has passed,
  while the worker still goes on.
* Writes are autocommitted one statement at a time; readers see every intermediate state.

Devstack-only routes (no WordPress behind them): ``/devstack/health``, ``/devstack/faults``,
``/devstack/mail``, ``/devstack/certificates``, ``/devstack/activate`` (the activation page).
"""

from __future__ import annotations

import base64
import hmac
import logging
import threading
import time
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from datetime import date, datetime, timezone
from pathlib import Path
from typing import Any

import sqlalchemy as sa
from flask import Flask, Response, jsonify, request

from sidecar.devstack.faults import Fatal, FaultError, Faults, Halted, update_faults
from sidecar.devstack.legacy_bridge import LegacyGrantBridge, legacy_hmac, mirror_request
from sidecar.devstack.mailbox import Mailbox
from sidecar.devstack.order_path import OrderPath, ProductOrder, TermOrder
from sidecar.devstack.seed import DEMO_API_LOGIN, DEMO_APP_PASSWORD, php_serialize, php_unserialize
from sidecar.devstack.site_model import PAYMENTS_ADDON, USERMETA_FIELDS, UTM_FIELDS, Clock, MemberLuxSite
from sidecar.devstack.wordpress import (
    BAD_GATEWAY_HTML,
    CRITICAL_ERROR_HTML,
    FORBIDDEN,
    GATEWAY_TIMEOUT_HTML,
    MAINTENANCE_HTML,
    Answer,
    BadJson,
    absint,
    is_email,
    lookup,
    normalise_app_password,
    parse_body,
    php_form,
    php_is_numeric,
    sanitize_text_field,
    whole_number,
    wp_error,
)
from sidecar.devstack.wpschema import build_metadata

__all__ = ["create_emulator_app", "set_auto_activation", "set_payments_addon", "add_webhook", "Faults",
           "MemberLuxSite"]

log = logging.getLogger(__name__)

WEBHOOK_TIMEOUT_SECONDS = 5.0
_METHODS = ["GET", "POST", "PUT", "PATCH", "DELETE"]


@dataclass(frozen=True)
class PhpRequest:
    """What PHP gets to see of a request, copied off the HTTP thread (which may be gone later)."""

    method: str
    mimetype: str
    body: bytes
    form: dict[str, Any]
    query: dict[str, Any]
    cookies: dict[str, str]
    authorization: str
    host_url: str

    @classmethod
    def capture(cls) -> PhpRequest:
        form = php_form(list(request.form.items(multi=True))) if request.form else {}
        return cls(method=request.method, mimetype=request.mimetype, body=request.get_data(cache=True),
                   form=form, query=php_form(list(request.args.items(multi=True))), cookies=dict(request.cookies),
                   authorization=request.headers.get("Authorization", ""), host_url=request.host_url)


def _php_int(text: str) -> int:
    """``(int)`` of a header: leading digits, else 0 (a non-numeric timestamp fails the window)."""
    digits = ""
    for char in text.strip():
        if not char.isdigit():
            break
        digits += char
    return int(digits) if digits else 0


def _to_flask(answer: Answer, cookies: list[tuple[str, str, int | None]] = ()) -> Response:
    if answer.html is not None:
        response = Response(answer.html, status=answer.status, content_type="text/html; charset=UTF-8")
    else:
        response = jsonify(answer.json)
        response.status_code = answer.status
    for name, value in answer.headers.items():
        response.headers[name] = value
    for name, value, max_age in cookies:
        response.set_cookie(name, value, max_age=max_age, path="/", httponly=name == "PHPSESSID")
    return response


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
    mail_dir: str | Path | None = None,
    faults: Faults | None = None,
    legacy_hmac_secret: str | None = None,
    legacy_mirror_url: str | None = None,
) -> Flask:
    """A WordPress + MemberLux look-alike serving the site in ``engine`` (schema and seed must exist).

    ``app_user``/``app_password``: the Application Password WordPress would hold for that account;
    ``extra_app_passwords`` adds more (login -> password), e.g. for a non-admin in tests.
    ``dialect``: which body shape ``/mbl/v1/order`` accepts: the real WooCommerce one
    (``email``/``product_id``), the owner's term-id one (``customer``/``product``/``meta``) or both.
    ``clock`` returns the current instant (aware, UTC); "today" for keys is its UTC date.
    ``mail_dir``: where the site's outgoing mail is also written as ``.eml`` files.
    ``faults``: the initial fault plan (``latency_seconds``/``failure_rate`` are shortcuts into it).
    The site model is ``app.extensions["mbl_emulator"]`` (:class:`MemberLuxSite`).
    ``legacy_hmac_secret``: also serve the legacy plugin ml-grant-bridge's ``POST /wp-json/mlgb/v1/grant``
    (:mod:`sidecar.devstack.legacy_bridge`), signed with this secret; ``legacy_mirror_url``: send a copy of
    every such request (body and signature headers) there, as a web server's ``mirror`` rule would, and
    ignore its answer (the rehearsal of the bridge's shadow mode).
    """
    plan = faults or Faults()
    if latency_seconds:
        plan.latency_seconds = latency_seconds
    if failure_rate:
        plan.failure_rate = failure_rate
    passwords = {app_user: app_password, **dict(extra_app_passwords or {})}
    site = MemberLuxSite(engine, prefix=prefix, base_prefix=base_prefix, app_passwords=passwords, dialect=dialect,
                         faults=plan, random_seed=random_seed, clock=clock, webhook_timeout=webhook_timeout,
                         mailbox=Mailbox(mail_dir))
    app = Flask(__name__)
    app.extensions["mbl_emulator"] = site
    app.url_map.strict_slashes = False

    # -- authentication -----------------------------------------------------------------------------------

    def authenticate(req: PhpRequest) -> tuple[Any, Answer | None]:
        """(user row or None, error). Only a Basic header triggers Application-Password auth."""
        header = req.authorization
        if not header.lower().startswith("basic "):
            return None, None
        try:
            decoded = base64.b64decode(header[6:].strip(), validate=True).decode("utf-8")
        except (ValueError, UnicodeDecodeError):
            return None, None
        if ":" not in decoded:
            return None, None
        username, password = decoded.split(":", 1)
        user = site.find_user_by_login(username)
        if user is None and "@" in username:
            user = site.find_user_by_email(username)
        if user is None:
            if is_email(username):
                return None, wp_error("invalid_email", "<strong>Error:</strong> Unknown email address. "
                                                       "Check again or try your username.", 401)
            return None, wp_error(
                "invalid_username",
                "<strong>Error:</strong> The username <strong>" + username + "</strong> is not registered on this "
                "site. If you are unsure of your username, try your email address instead.", 401)
        expected = site.app_passwords.get(str(user.user_login).lower())
        given = normalise_app_password(password)
        if expected is None or not hmac.compare_digest(given.encode(), expected.encode()):
            return None, wp_error("incorrect_password", "The provided password is an invalid application password.", 401)
        return user, None

    def require_capability(req: PhpRequest, capability: str) -> tuple[Any, Answer | None]:
        user, error = authenticate(req)
        if error is not None:
            return None, error
        if user is None:
            return None, wp_error("rest_forbidden", FORBIDDEN, 401)
        _roles, caps = site.capabilities(int(user.ID))
        if not caps.get(capability):
            return None, wp_error("rest_forbidden", FORBIDDEN, 403)
        return user, None

    # -- the PHP worker ---------------------------------------------------------------------------------------

    def php(handler: Callable[[PhpRequest], Answer]) -> Response:
        """Run ``handler`` as PHP would: in its own worker, inside the session lock, past a gone caller."""
        started = time.monotonic()
        if site.faults.down:
            return _to_flask(Answer(503, html=MAINTENANCE_HTML, headers={"Retry-After": "600"}))
        req = PhpRequest.capture()
        outcome: list[Response] = []
        done = threading.Event()

        def worker() -> None:
            session = site.sessions.start(req.cookies.get("PHPSESSID"))
            cookies: list[tuple[str, str, int | None]] = []
            try:
                if session.created:
                    cookies.append(("PHPSESSID", session.session_id, None))
                cookies.extend(utm_cookies(req))
                answer = handler(req)
            except Fatal:
                answer = Answer(500, html=CRITICAL_ERROR_HTML)
            except Halted:
                answer = Answer(502, html=BAD_GATEWAY_HTML)  # the worker died: nginx has no answer
                cookies = []
            except Exception:  # a PHP fatal, whatever the cause
                log.exception("emulated PHP request failed")
                answer = Answer(500, html=CRITICAL_ERROR_HTML)
            finally:
                session.close()
            with app.app_context():
                outcome.append(_to_flask(answer, cookies))
            done.set()

        threading.Thread(target=worker, name="php-worker", daemon=True).start()
        gateway = site.faults.gateway_timeout_seconds
        if gateway > 0:
            if not done.wait(max(0.0, gateway - (time.monotonic() - started))):
                return _to_flask(Answer(504, html=GATEWAY_TIMEOUT_HTML))
        else:
            done.wait()
        return outcome[0]

    def utm_cookies(req: PhpRequest) -> list[tuple[str, str, int | None]]:
        """MemberLux's ``init`` hook: UTM query values become ``wpm_*`` cookies (core.md 13)."""
        values = {name: str(req.query.get(name, "")).strip() for name in UTM_FIELDS}
        if not any(values.values()):
            return []
        max_age = site.utm_cookie_days() * 86400
        return [("wpm_has_utm", "1", max_age)] + [(f"wpm_{name}", value, max_age)
                                                   for name, value in values.items() if value]

    # -- REST dispatch ------------------------------------------------------------------------------------

    def rest(route: str) -> Response:
        route = "/" + route.strip("/")
        return php(lambda req: dispatch(req, route))

    def dispatch(req: PhpRequest, route: str) -> Answer:
        method = req.method
        if route == "/mbl/v1/order" and method == "POST":
            return order_route(req)
        user, error = authenticate(req)
        if error is not None:
            return error
        if route == "/" and method == "GET":
            return Answer(200, json=index_document(req))
        if route == "/mbl/v1" and method == "GET":
            return Answer(200, json={"namespace": "mbl/v1", "routes": _mbl_routes()})
        if route == "/wp/v2/users/me" and method == "GET":
            return users_me(req, user)
        if route == "/mbl/v1/webhook/action" and method == "POST":
            return webhook_action_route(req)
        return wp_error("rest_no_route", "No route was found matching the URL and request method.", 404)

    @app.route("/wp-json/", defaults={"route": ""}, methods=_METHODS)
    @app.route("/wp-json/<path:route>", methods=_METHODS)
    def wp_json(route: str) -> Response:
        return rest(route)

    @app.route("/", methods=_METHODS)
    @app.route("/index.php", methods=_METHODS)
    def front() -> Response:
        rest_route = request.args.get("rest_route")
        if rest_route is not None:
            return rest(rest_route)
        return php(lambda _req: Answer(200, html="<!DOCTYPE html><html><body><h1>MemberLux emulator</h1></body></html>"))

    def index_document(req: PhpRequest) -> dict[str, Any]:
        home = req.host_url.rstrip("/")
        return {
            "name": site.option("blogname") or "",
            "description": site.option("blogdescription") or "",
            "url": home,
            "home": home,
            "gmt_offset": site.option("gmt_offset") or "0",
            "timezone_string": site.option("timezone_string") or "",
            "namespaces": ["oembed/1.0", "mbl/v1", "wc/store/v1", "wc/v3", "wp/v2", "wp-site-health/v1"],
            "authentication": {"application-passwords": {"endpoints": {
                "authorization": f"{home}/wp-admin/authorize-application.php"}}},
            "routes": {
                "/": {"namespace": "", "methods": ["GET"], "endpoints": [{"methods": ["GET"], "args": {}}]},
                **_mbl_routes(),
                "/wp/v2/users/me": {"namespace": "wp/v2", "methods": _METHODS,
                                    "endpoints": [{"methods": ["GET"], "args": {"context": {"type": "string"}}}]},
            },
        }

    def users_me(req: PhpRequest, user: Any) -> Answer:
        if user is None:
            return wp_error("rest_not_logged_in", "You are not currently logged in.", 401)
        roles, caps = site.capabilities(int(user.ID))
        meta = site.user_meta(int(user.ID))
        home = req.host_url.rstrip("/")
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
        if req.query.get("context") == "edit":
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
                "extra_capabilities": dict.fromkeys(roles, True),
            })
        return Answer(200, json=body)

    def webhook_action_route(req: PhpRequest) -> Answer:
        # Public and unauthenticated, like the real route (core.md 6.3 "Security").
        try:
            data = parse_body(req.mimetype, req.body)
        except BadJson:
            data = {}
        actions = data.get("actions")
        if not isinstance(actions, list):
            return Answer(200, json={"ok": False})
        for payload in actions:
            if isinstance(payload, dict):
                site.deliver_webhooks(payload, site.home_url(req.host_url))
        return Answer(200, json={"ok": True})

    # -- the order endpoint -----------------------------------------------------------------------------------

    def order_route(req: PhpRequest) -> Answer:
        try:
            body = parse_body(req.mimetype, req.body)
        except BadJson:
            return wp_error("rest_invalid_json", "Invalid JSON body passed.", 400)
        _user, auth_error = authenticate(req)
        if auth_error is not None:
            return auth_error
        term_dialect = site.dialect == "term_id" or (
            site.dialect == "both" and (isinstance(body.get("product"), dict) or isinstance(body.get("customer"), dict)))
        parsed = (parse_term_order(body) if term_dialect else parse_product_order(body, req.form, req.query))
        if isinstance(parsed, Answer):
            return parsed
        api_user, error = require_capability(req, "manage_options")
        if error is not None:
            return error
        info = site.gates.start("term_id" if term_dialect else "woocommerce", parsed.email)
        try:
            path = OrderPath(site=site, info=info, order=parsed, api_user_id=int(api_user.ID), query=req.query,
                             form=req.form, cookies=req.cookies, host_url=req.host_url,
                             failure=site.choose_failure())
            return path.run()
        finally:
            site.gates.finish(info)

    def parse_product_order(body: dict, form: dict, query: dict) -> ProductOrder | Answer:
        has_email, email = lookup("email", body, form, query)
        has_products, product_param = lookup("product_id", body, form, query)
        missing = [name for name, present in (("email", has_email), ("product_id", has_products)) if not present]
        if missing:
            return wp_error("rest_missing_callback_param", "Missing parameter(s): " + ", ".join(missing), 400,
                            params=missing)
        invalid: dict[str, str] = {}
        if not is_email(email):
            invalid["email"] = "Invalid parameter."
        items = product_param if isinstance(product_param, list) else [product_param]
        if not all(php_is_numeric(item) for item in items):
            invalid["product_id"] = "Invalid product_id format"
        if invalid:
            return wp_error("rest_invalid_param", "Invalid parameter(s): " + ", ".join(invalid), 400,
                            params=invalid, details={})
        fields = {}
        for name in ("first_name", "last_name", "patronymic", *USERMETA_FIELDS):
            present, value = lookup(name, body, form, query)
            if present:
                fields[name] = sanitize_text_field(value)
        return ProductOrder(email=str(email), product_ids=[absint(item) for item in items], fields=fields)

    def parse_term_order(body: dict) -> TermOrder | Answer:
        customer = body.get("customer") if isinstance(body.get("customer"), dict) else {}
        product = body.get("product") if isinstance(body.get("product"), dict) else {}
        missing = [name for name, present in (("customer.email", "email" in customer),
                                              ("product.term_id", "term_id" in product)) if not present]
        if missing:
            return wp_error("rest_missing_callback_param", "Missing parameter(s): " + ", ".join(missing), 400,
                            params=missing)
        invalid: dict[str, str] = {}
        email = customer.get("email")
        if not is_email(email):
            invalid["customer.email"] = "Invalid parameter."
        term_id = whole_number(product.get("term_id"))
        if term_id is None or term_id <= 0:
            invalid["product.term_id"] = "Invalid parameter."
        duration = whole_number(product.get("duration", 12))
        if duration is None or duration < 0:
            invalid["product.duration"] = "Invalid parameter."
        units_raw = str(product.get("units", "months")).strip().lower()
        if units_raw not in ("day", "days", "month", "months", "year", "years"):
            invalid["product.units"] = "Invalid parameter."
        if invalid:
            return wp_error("rest_invalid_param", "Invalid parameter(s): " + ", ".join(invalid), 400,
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
        return TermOrder(email=str(email), term_id=term_id, duration=duration, units=units, unlimited=unlimited,
                         fields=fields, meta=meta)

    # -- the legacy plugin ml-grant-bridge (legacy-plugins.md 1.3, 1.8), when asked for -------------------------

    if legacy_hmac_secret is not None:
        legacy = LegacyGrantBridge(site)
        app.extensions["legacy_grant_bridge"] = legacy

        @app.post("/wp-json/mlgb/v1/grant")
        def legacy_grant() -> Response:
            raw = request.get_data(cache=True)
            stamp, signature = request.headers.get("X-MLGB-Timestamp"), request.headers.get("X-MLGB-Signature")
            if legacy_mirror_url:
                mirror_request(legacy_mirror_url, raw, request.headers)
            if not stamp or not signature:
                answer = Answer(401, json={"error": "hmac_headers_missing"})
            elif not hmac.compare_digest(legacy_hmac(legacy_hmac_secret, stamp, raw), signature):
                answer = Answer(403, json={"error": "invalid_hmac"})
            elif abs(site.now().timestamp() - _php_int(stamp)) > 300:
                answer = Answer(401, json={"error": "timestamp_expired"})
            else:
                if request.mimetype == "application/json":
                    parsed = request.get_json(silent=True)
                    body = parsed if isinstance(parsed, dict) else {}
                else:
                    body = php_form(list(request.form.items(multi=True)))
                status, payload = legacy.handle(body)
                answer = Answer(status, json=payload)
            return _to_flask(answer)

    # -- devstack endpoints (no WordPress behind them) -------------------------------------------------------

    def admin_only() -> Response | None:
        _user, error = require_capability(PhpRequest.capture(), "manage_options")
        return None if error is None else _to_flask(error)

    @app.get("/devstack/health")
    def health() -> Response:
        return jsonify({"status": "ok", "down": site.faults.down, "dialect": site.dialect,
                        "orders_handled": site.orders_handled, "now": site.now().isoformat(),
                        "running": [info.as_dict() for info in site.gates.running()],
                        "paused": [info.as_dict() for info in site.gates.paused()]})

    @app.route("/devstack/faults", methods=["GET", "POST"])
    def faults_route() -> Response:
        refused = admin_only()
        if refused is not None:
            return refused
        result: dict[str, Any] = {}
        if request.method == "POST":
            data = request.get_json(silent=True)
            if not isinstance(data, dict):
                data = request.form.to_dict()
            try:
                actions = update_faults(site.faults, data)
            except FaultError as exc:
                return _to_flask(wp_error("invalid_fault", str(exc), 400, **exc.data))
            if "release" in actions:
                result["released"] = site.release(actions["release"])
            if actions.get("halt"):
                result["halted"] = site.halt()
        return jsonify({**site.faults.as_dict(), **result})

    @app.get("/devstack/mail")
    def mail_route() -> Response:
        refused = admin_only()
        if refused is not None:
            return refused
        order_id = request.args.get("order_id", type=int)
        return jsonify({"mails": [mail.as_dict() for mail in site.mailbox.all(order_id=order_id)]})

    @app.post("/devstack/activate")
    def activate_code() -> Response:
        """A learner enters a code on the activation page (core.md 3.2, source ``activation_page``): the
        code's pre-created row is activated in place. Devstack-only shortcut: an administrator names the
        learner (``user_id``) instead of logging in as them."""
        refused = admin_only()
        if refused is not None:
            return refused
        data = request.get_json(silent=True)
        if not isinstance(data, dict):
            data = request.form.to_dict()
        learner = site.user(absint(data.get("user_id")))
        if learner is None:
            return _to_flask(wp_error("invalid_user", "No such user", 404))
        row = site.key_by_code(str(data.get("code") or ""))
        if row is None or row.status != "new" or row.key_type == "wpm_keys_basket" or int(row.is_banned or 0):
            # MemberLux answers the page with its own message; the code gives no access.
            return _to_flask(wp_error("invalid_code", "The code does not exist or was used already", 400))
        info = site.gates.start("activation_page", str(learner.user_email))
        try:
            path = OrderPath(site=site, info=info, order=ProductOrder(str(learner.user_email), [], {}),
                             api_user_id=int(learner.ID), query=dict(request.args), form={}, cookies=dict(request.cookies),
                             host_url=request.host_url)
            key = path.activate_code(row, learner)
        finally:
            site.gates.finish(info)
        return jsonify({"key_id": key.key_id, "user_id": int(learner.ID), "term_id": key.term_id,
                        "date_start": key.date_start.isoformat() if key.date_start else None,
                        "date_end": key.date_end.isoformat() if key.date_end else None})

    @app.post("/devstack/certificates")
    def manual_certificate() -> Response:
        """Manual issue as the certificates module's admin page does it (core.md 4)."""
        if not site.has_certificates:
            return _to_flask(wp_error("rest_no_route", "The certificates module is not installed.", 404))
        data = request.get_json(silent=True)
        if not isinstance(data, dict):
            data = request.form.to_dict()
        issuer, error = require_capability(PhpRequest.capture(), "certificate-delivery")
        if error is not None:
            return _to_flask(error)
        user_id = absint(data.get("user_id"))
        level_id = absint(data.get("level_id", data.get("term_id")))
        user = site.user(user_id)
        if user is None:
            return _to_flask(wp_error("invalid_user", f"User {user_id} not found", 404))
        if site.level(level_id) is None:
            return _to_flask(wp_error("invalid_level", f"Level {level_id} not found", 404))
        level_meta = site.term_meta(level_id)
        if level_meta.get("_mblc_has_certificate") != "yes":
            return _to_flask(wp_error("no_certificate", f"Level {level_id} does not issue certificates", 400))
        roles, _caps = site.capabilities(int(issuer.ID))
        if "administrator" not in roles and level_meta.get("_mblc_how_to_issue") == "auto":
            # Coaches may issue only for levels whose certificates are issued by hand.
            return _to_flask(wp_error("rest_forbidden", FORBIDDEN, 403))
        today = site.now().date()
        try:
            date_issue = date.fromisoformat(str(data["date_issue"])) if data.get("date_issue") else today
        except ValueError:
            return _to_flask(wp_error("rest_invalid_param", "Invalid parameter(s): date_issue", 400,
                                      params={"date_issue": "Expected YYYY-MM-DD"}))
        certificate_id = site.insert_certificate(user_id, level_id, level_meta, date_issue=date_issue,
                                                 create_date=today, responsible=int(issuer.ID))
        site.send_mail(kind="mblc_certificate", to=user.user_email, subject="Сертификат",
                       text=f"{site.home_url(request.host_url)}/mbl-certificates/view/pdf/{certificate_id}")
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


def _update_option(engine: sa.Engine, prefix: str, name: str, change: Callable[[Any], Any]) -> None:
    """Read a PHP-serialized option, change it, write it back (created when missing)."""
    options = build_metadata(prefix).tables[f"{prefix}options"]
    with engine.begin() as conn:
        raw = conn.execute(sa.select(options.c.option_value).where(options.c.option_name == name)).scalar()
        try:
            value = php_unserialize(raw) if raw else None
        except ValueError:
            value = None
        serialized = php_serialize(change(value))
        if raw is None:
            conn.execute(sa.insert(options).values(option_name=name, option_value=serialized, autoload="yes"))
        else:
            conn.execute(sa.update(options).where(options.c.option_name == name).values(option_value=serialized))


def set_auto_activation(engine: sa.Engine, enabled: bool, *, prefix: str = "wp_") -> None:
    """Switch ``wpm_main_options['mblp']['auto_activation']`` (payments add-on) on or off."""
    def change(value: Any) -> dict:
        value = value if isinstance(value, dict) else {}
        mblp = value.get("mblp") if isinstance(value.get("mblp"), dict) else {}
        mblp["auto_activation"] = "on" if enabled else "off"
        value["mblp"] = mblp
        return value

    _update_option(engine, prefix, "wpm_main_options", change)


def set_payments_addon(engine: sa.Engine, active: bool, *, prefix: str = "wp_") -> None:
    """Activate or deactivate the payments add-on in ``active_plugins``.

    Deactivating leaves ``mblp.auto_activation`` as it was, as WordPress does (core.md 13).
    """
    def change(value: Any) -> list:
        plugins = list(value.values()) if isinstance(value, dict) else list(value or [])
        plugins = [p for p in plugins if p != PAYMENTS_ADDON]
        if active:
            plugins.append(PAYMENTS_ADDON)
        return sorted(plugins)

    _update_option(engine, prefix, "active_plugins", change)


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
