"""Webhook endpoints: the TOML file's copied into the store at start, the UI's edited there.

Endpoints from the file (``source = config``) follow the file: added, changed and removed with it;
the UI shows them read-only. An endpoint with a body template (:mod:`sidecar.webhooks.templates`) gets
the body it builds instead of the standard event (``body_format = template``), signed all the same.
Secrets: an endpoint without one gets a generated ``whsec_`` secret, shown in the UI. Rotation keeps
the old secret signing for a grace period, so receivers can switch.
"""

from __future__ import annotations

import base64
import secrets
from dataclasses import dataclass
from datetime import datetime, timedelta
from urllib.parse import urlsplit

import sqlalchemy as sa

from sidecar.bootstrap import Runtime
from sidecar.config import WEBHOOK_EVENTS
from sidecar.domain.messages import Message
from sidecar.store import audit
from sidecar.store.db import unit_of_work
from sidecar.store.webhook_models import WebhookEndpoint
from sidecar.webhooks.ssrf import DestinationRefused, check_destination
from sidecar.webhooks.templates import BodyTemplateError
from sidecar.webhooks.templates import check as check_template

ROTATION_GRACE = timedelta(hours=24)
REMOVED_FROM_FILE = "removed from the configuration file"


def shown_url(url: str) -> str:
    """The endpoint URL as pages and the audit trail show it: scheme and host only, path and query as
    ``…`` and no user name or password, because receivers may take their token there (a Telegram
    bot's is in the path). The edit form alone holds the whole URL. An e-mail endpoint's address is
    shown as it is."""
    parts = urlsplit(url)
    if parts.scheme not in ("http", "https"):
        return url
    host = parts.hostname or ""
    if ":" in host:
        host = f"[{host}]"
    port = f":{parts.port}" if parts.port else ""
    hidden = (len(parts.path) > 1) or bool(parts.query) or bool(parts.fragment)
    return f"{parts.scheme}://{host}{port}" + ("/…" if hidden else parts.path)


def new_secret() -> str:
    return "whsec_" + base64.b64encode(secrets.token_bytes(24)).decode()


class EndpointRejected(ValueError):
    """Refused fields: ``said`` the reasons as messages (for the pages), ``errors`` their English (CLI, logs)."""

    def __init__(self, said: dict[str, Message]) -> None:
        self.said = said
        self.errors = {name: message.english() for name, message in said.items()}
        super().__init__("; ".join(f"{k}: {v}" for k, v in self.errors.items()))


@dataclass(frozen=True)
class EndpointForm:
    name: str
    url: str
    events: tuple[str, ...] = ("*",)
    enabled: bool = True
    description: str = ""
    body_template: str = ""


def body_format(template: str) -> str:
    return "template" if template.strip() else "standard"


def validate(runtime: Runtime, form: EndpointForm, *, check_dns: bool = True) -> None:
    errors: dict[str, Message] = {}
    if not form.name.strip() or len(form.name) > 100:
        errors["name"] = Message("webhooks.name_required")
    unknown = [e for e in form.events if e != "*" and e not in WEBHOOK_EVENTS]
    if unknown or not form.events:
        errors["events"] = Message("webhooks.bad_events", {"events": ", ".join(WEBHOOK_EVENTS)})
    elif form.body_template.strip():
        try:
            check_template(form.body_template, form.events)
        except BodyTemplateError as exc:
            errors["body_template"] = Message("webhooks.bad_template", {"detail": str(exc)})
    try:
        if check_dns:
            check_destination(form.url, runtime.settings.webhooks.allow_private_destinations)
    except DestinationRefused as exc:
        errors["url"] = exc.said
    if errors:
        raise EndpointRejected(errors)


def sync_config(runtime: Runtime) -> None:
    """Make the store's ``config`` endpoints equal the file's (by name)."""
    now = runtime.clock.now()
    wanted = {e.name: e for e in runtime.settings.webhooks.endpoints}
    with unit_of_work(runtime.sessions) as session:
        stored = {e.name: e for e in session.scalars(sa.select(WebhookEndpoint).where(WebhookEndpoint.source == "config"))}
        for name, conf in wanted.items():
            row = stored.get(name)
            if row is None:
                clash = session.scalar(sa.select(WebhookEndpoint).where(WebhookEndpoint.name == name))
                if clash is not None:  # an endpoint made in the UI under the same name: the file wins
                    session.delete(clash)
                    session.flush()
                row = WebhookEndpoint(name=name, source="config", created_at=now, consecutive_failures=0)
                session.add(row)
            row.kind, row.url, row.events = "http", conf.url, list(conf.events)
            row.body_format, row.body_template = body_format(conf.body_template), conf.body_template.strip()
            row.secret = conf.secret.reveal() if conf.secret else (row.secret or new_secret())
            row.previous_secret = conf.previous_secret.reveal() if conf.previous_secret else ""
            row.previous_secret_until = conf.previous_secret_valid_until
            if row.disabled_reason == REMOVED_FROM_FILE:
                row.disabled_reason = ""          # back in the file
            # An automatic switch-off (a run of failed deliveries) survives restarts: an admin
            # switches the endpoint on again in the UI once the receiver is fixed.
            row.enabled = conf.enabled and not row.disabled_reason
            row.description, row.updated_at = conf.description, now
        for name, row in stored.items():
            if name not in wanted:
                row.enabled = False
                row.disabled_reason = REMOVED_FROM_FILE
                row.updated_at = now


def save(runtime: Runtime, form: EndpointForm, actor: str, endpoint_id: int | None = None) -> WebhookEndpoint:
    validate(runtime, form)
    now = runtime.clock.now()
    with unit_of_work(runtime.sessions) as session:
        if endpoint_id is None:
            row = WebhookEndpoint(name=form.name.strip(), source="ui", secret=new_secret(), created_at=now,
                                  consecutive_failures=0)
            session.add(row)
        else:
            row = session.get(WebhookEndpoint, endpoint_id)
            if row is None:
                raise LookupError(f"no webhook endpoint {endpoint_id}")
            if row.source == "config":
                raise EndpointRejected({"name": Message("webhooks.from_config")})
        row.name, row.url, row.events = form.name.strip(), form.url.strip(), list(form.events)
        row.kind, row.body_format, row.body_template = "http", body_format(form.body_template), form.body_template.strip()
        row.enabled, row.description, row.updated_at = form.enabled, form.description.strip()[:300], now
        if form.enabled:
            row.disabled_reason, row.consecutive_failures = "", 0
        session.flush()
        audit.record(session, subject_type="webhook_endpoint", subject_id=str(row.id),
                     action="webhook.endpoint_saved", at=now, actor=actor, url=shown_url(row.url), events=row.events,
                     enabled=row.enabled, body_format=row.body_format)
        session.expunge(row)
    return row


def rotate_secret(runtime: Runtime, endpoint_id: int, actor: str, grace: timedelta = ROTATION_GRACE) -> str:
    """A new secret now; the old one keeps signing (second signature) until the grace period ends."""
    now = runtime.clock.now()
    with unit_of_work(runtime.sessions) as session:
        row = session.get(WebhookEndpoint, endpoint_id)
        if row is None:
            raise LookupError(f"no webhook endpoint {endpoint_id}")
        if row.source == "config":
            raise EndpointRejected({"secret": Message("webhooks.secret_in_config")})
        row.previous_secret, row.previous_secret_until = row.secret, now + grace
        row.secret, row.updated_at = new_secret(), now
        audit.record(session, subject_type="webhook_endpoint", subject_id=str(endpoint_id),
                     action="webhook.secret_rotated", at=now, actor=actor, previous_valid_until=(now + grace).isoformat())
        return row.secret


def program_endpoints(session, program_id: int, *, webhook_url: str, notify_email: str, now: datetime) -> None:
    """The endpoints standing for a program's legacy ``mlp_webhook_url`` and notification address."""
    wanted = {}
    if webhook_url:
        wanted[f"program {program_id} legacy webhook"] = ("http", webhook_url, "legacy_bundle")
    if notify_email:
        wanted[f"program {program_id} notifications"] = ("email", notify_email, "program_notice")
    stored = {e.name: e for e in session.scalars(sa.select(WebhookEndpoint).where(
        WebhookEndpoint.source == "program", WebhookEndpoint.program_id == program_id))}
    for name, (kind, url, body_format) in wanted.items():
        row = stored.get(name) or WebhookEndpoint(name=name, source="program", program_id=program_id, secret=new_secret(),
                                                  created_at=now, consecutive_failures=0, enabled=True)
        row.kind, row.url, row.body_format = kind, url, body_format
        row.events, row.updated_at = ["program.step_granted", "program.completed"], now
        row.description = "the legacy plugin's mlp_webhook_url body, now signed and retried" if kind == "http" else \
            "the legacy plugin's admin e-mails (mlp_notify_*), as HTML"
        session.add(row)
    for name, row in stored.items():
        if name in wanted:
            continue
        if _has_deliveries(session, row.id):
            row.enabled = False          # keep it: its delivery log refers to it
        else:
            session.delete(row)


def _has_deliveries(session, endpoint_id: int) -> bool:
    from sidecar.store.webhook_models import WebhookDelivery

    return session.scalar(sa.select(WebhookDelivery.id).where(WebhookDelivery.endpoint_id == endpoint_id).limit(1)) is not None


def set_enabled(runtime: Runtime, endpoint_id: int, enabled: bool, actor: str) -> None:
    """Switch an endpoint on or off from the UI. Switching on clears an automatic switch-off (its
    reason and failure count), as saving the endpoint does; the file decides for ``config`` ones."""
    now = runtime.clock.now()
    with unit_of_work(runtime.sessions) as session:
        row = session.get(WebhookEndpoint, endpoint_id)
        if row is None:
            raise LookupError(f"no webhook endpoint {endpoint_id}")
        if row.source == "config" and not (enabled and row.disabled_reason and row.disabled_reason != REMOVED_FROM_FILE):
            # The file decides, except that an automatic switch-off is undone here.
            raise EndpointRejected({"enabled": Message("webhooks.from_config")})
        row.enabled, row.updated_at = enabled, now
        if enabled:
            row.disabled_reason, row.consecutive_failures = "", 0
        audit.record(session, subject_type="webhook_endpoint", subject_id=str(endpoint_id),
                     action="webhook.endpoint_enabled" if enabled else "webhook.endpoint_disabled_by_admin",
                     at=now, actor=actor)
