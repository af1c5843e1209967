"""The Flask application factory: one app, blueprints registered here, nothing global."""

from __future__ import annotations

import logging
import re
import time
import uuid

from flask import Flask, g, request
from jinja2 import BytecodeCache
from jinja2.bccache import Bucket

from sidecar.bootstrap import Runtime
from sidecar.logs import configured_secrets, loggable_path, protect_handlers, register_secrets, request_id_var
from sidecar.bridge import admin as grants_admin
from sidecar.bridge import blueprint as bridge
from sidecar.bridge import openapi
from sidecar.monitor import views as monitor_views
from sidecar.programs import api as programs_api
from sidecar.programs import views as programs_views
from sidecar.reminders import approval_views as reminder_approvals
from sidecar.reminders import settings_views as reminder_settings
from sidecar.reminders import views as reminders_views
from sidecar.webhooks import hooks as memberlux_hooks
from sidecar.webhooks import views as webhooks_views
from sidecar.web import auth, errors, favicon, health, home, i18n, metrics
from sidecar.web.converters import IdConverter
from sidecar.web.proxies import TrustedProxyFix

log = logging.getLogger(__name__)
_REQUEST_ID = re.compile(r"^[A-Za-z0-9._-]{8,64}$")


class _CompiledTemplates(BytecodeCache):
    """Compiled page templates kept for the life of the process, keyed by name and source checksum.

    Each app has its own Jinja environment; without this, every app made in one process (the demo's
    restarts, the CLI's preview, each test) would parse and compile every page again.
    """

    def __init__(self) -> None:
        self._code: dict[str, tuple[str, object]] = {}

    def load_bytecode(self, bucket: Bucket) -> None:
        found = self._code.get(bucket.key)
        if found is not None and found[0] == bucket.checksum:
            bucket.code = found[1]  # type: ignore[assignment]

    def dump_bytecode(self, bucket: Bucket) -> None:
        self._code[bucket.key] = (bucket.checksum, bucket.code)


_COMPILED_TEMPLATES = _CompiledTemplates()


def create_app(runtime: Runtime, *, testing: bool = False) -> Flask:
    app = Flask("sidecar.web", template_folder="templates", static_folder="static")
    app.jinja_options = {**app.jinja_options, "bytecode_cache": _COMPILED_TEMPLATES}
    app.url_map.converters["int"] = IdConverter   # path ids within a 64-bit column, before any route is added
    settings = runtime.settings
    secret = settings.web.secret_key.reveal() if settings.web.secret_key else uuid.uuid4().hex
    app.config.update(
        SECRET_KEY=secret,
        TESTING=testing,
        MAX_CONTENT_LENGTH=max(settings.bridge.max_body_bytes, 1024 * 1024),
        SESSION_COOKIE_HTTPONLY=True,
        SESSION_COOKIE_SAMESITE="Lax",
        SESSION_COOKIE_SECURE=settings.web.public_url.startswith("https://"),
        JSON_SORT_KEYS=False,
    )
    app.extensions["mlsidecar"] = runtime
    if settings.web.trusted_proxies:
        app.wsgi_app = TrustedProxyFix(  # type: ignore[method-assign]
            app.wsgi_app, settings.web.trusted_proxies, settings.web.trusted_proxy_networks)
    register_secrets(configured_secrets(settings))
    protect_handlers(app.logger.name)

    @app.before_request
    def _start_request() -> None:
        incoming = request.headers.get("X-Request-ID", "")
        g.request_id = incoming if _REQUEST_ID.match(incoming) else uuid.uuid4().hex
        g.request_token = request_id_var.set(g.request_id)
        g.started = time.monotonic()

    @app.after_request
    def _finish_request(response):
        response.headers["X-Request-ID"] = g.get("request_id", "")
        response.headers.setdefault("X-Content-Type-Options", "nosniff")
        response.headers.setdefault("X-Frame-Options", "DENY")
        response.headers.setdefault("Referrer-Policy", "same-origin")
        response.headers.setdefault("Content-Security-Policy",
                                    "default-src 'self'; img-src 'self' data:; style-src 'self'; frame-ancestors 'none'")
        if request.path not in ("/healthz", "/readyz"):
            log.info("%s %s -> %s in %.1f ms", request.method, loggable_path(request.path), response.status_code,
                     (time.monotonic() - g.get("started", time.monotonic())) * 1000)
        return response

    @app.teardown_request
    def _reset_request_id(_exc) -> None:
        token = g.pop("request_token", None)
        if token is not None:
            request_id_var.reset(token)

    i18n.init_app(app)
    errors.init_app(app)
    auth.csrf_protect(app)
    app.register_blueprint(health.blueprint)
    app.register_blueprint(favicon.blueprint)
    app.register_blueprint(metrics.blueprint)
    app.register_blueprint(home.blueprint)
    app.register_blueprint(auth.blueprint)
    app.register_blueprint(bridge.blueprint)
    app.register_blueprint(grants_admin.blueprint)
    app.register_blueprint(openapi.blueprint)
    app.register_blueprint(monitor_views.blueprint)
    app.register_blueprint(reminders_views.blueprint)
    app.register_blueprint(reminder_approvals.blueprint)
    app.register_blueprint(reminder_settings.blueprint)
    app.register_blueprint(memberlux_hooks.blueprint)
    app.register_blueprint(programs_views.blueprint)
    app.register_blueprint(programs_api.blueprint)
    app.register_blueprint(webhooks_views.blueprint)
    return app


def runtime_of(app: Flask) -> Runtime:
    return app.extensions["mlsidecar"]
