"""Webhook pages: endpoints (list, form, secret, rotation, on/off, test event), each endpoint's
delivery log with redelivery, the event types' JSON Schemas, and the MemberLux hints received.

Thin on purpose: changes go through :mod:`sidecar.webhooks.endpoints` and
:func:`sidecar.webhooks.delivery.redeliver` (which audit, with the administrator's login as actor),
reading through :mod:`sidecar.webhooks.queries`. Nothing is delivered from a web request: a test
event or a redelivery is queued, and the worker delivers it (jobs never run in web workers).

Endpoints from the configuration file (``source = config``) are shown read-only: the file decides.
Program endpoints (``source = program``) follow their program's form; here they can be switched
off and on, and their secret rotated.
"""

from __future__ import annotations

import json
import logging
from collections.abc import Mapping
from typing import Any

from flask import Blueprint, abort, flash, make_response, redirect, render_template, request, url_for
from sqlalchemy.exc import IntegrityError

from sidecar.bootstrap import Runtime
from sidecar.config import WEBHOOK_EVENTS
from sidecar.monitor.display import Display as MonitorDisplay
from sidecar.status import site_timezone
from sidecar.store import audit
from sidecar.store.db import unit_of_work
from sidecar.store.webhook_models import WebhookEndpoint
from sidecar.web import current_runtime
from sidecar.web.auth import login_required
from sidecar.web.i18n import lazy_gettext, lazy_pgettext, gettext
from sidecar.domain.messages import from_stored
from sidecar.web.messages import say
from sidecar.web.pages import actor, label, shorten
from sidecar.webhooks import queries
from sidecar.webhooks.delivery import MAX_ATTEMPTS, RETRY_SCHEDULE, redeliver
from sidecar.webhooks.endpoints import EndpointForm, EndpointRejected, rotate_secret, save, set_enabled, shown_url
from sidecar.webhooks.event_texts import event_texts
from sidecar.webhooks.events import SCHEMAS, TEST_EVENT, emit_test, json_schema
from sidecar.webhooks.templates import MAX_TEMPLATE

log = logging.getLogger(__name__)

blueprint = Blueprint("webhooks", __name__)

_SOURCES = {
    "config": lazy_gettext("configuration file"),
    "ui": lazy_gettext("this interface"),
    "program": lazy_gettext("a program"),
}
_STATES = {
    "pending": lazy_gettext("waiting"),
    "delivering": lazy_gettext("being delivered"),
    "succeeded": lazy_gettext("delivered"),
    "failed": lazy_pgettext("webhooks.state", "failed"),
}
_FORMATS = {
    "standard": lazy_gettext("standard JSON event"),
    "template": lazy_gettext("JSON from the endpoint's template"),
    "legacy_bundle": lazy_gettext("the legacy bundle plugin's body"),
    "program_notice": lazy_gettext("HTML e-mail to the school"),
}
_NOT_EDITABLE = {
    "config": lazy_gettext("Endpoints of the configuration file are changed in the file, not here."),
    "program": lazy_gettext("A program's endpoint is changed in the program's form."),
}
blueprint.add_app_template_filter(shown_url, "shown_url")

PER_PAGE = 50
ERROR_PREVIEW = 90
SECRET_SHOWN = 10       # characters of a secret shown before the mask ("whsec_" and four more)

_runtime = current_runtime


_actor = actor  # the administrator's login for audit events


class Display(MonitorDisplay):
    """Times in the site's zone (UTC beneath) plus the webhooks' labels."""

    _label = staticmethod(label)

    def source(self, source: str) -> str:
        return self._label(_SOURCES, source)

    def state(self, state: str) -> str:
        return self._label(_STATES, state)

    @staticmethod
    def body_format(name: str) -> str:
        return label(_FORMATS, name)

    def events(self, events: list[str] | None) -> str:
        events = events or ["*"]
        return gettext("All events") if "*" in events else ", ".join(events)

    def outcome(self, text: str) -> str:
        """What the worker made of a MemberLux hint, in the UI's language (a row written before codes: as written)."""
        return say(from_stored(text), self) or "—"

    def level_label(self, term_id: int) -> str:
        return self.level(term_id)

    @staticmethod
    def term(duration: int, units: str) -> str:
        return f"{duration} {units}"   # no inbound outcome names a term

    @staticmethod
    def masked(secret: str) -> str:
        return (secret[:SECRET_SHOWN] + "•" * 12) if secret else "—"

    @staticmethod
    def short(text: str | None, limit: int = ERROR_PREVIEW) -> str:
        return shorten(text, limit)

    @staticmethod
    def schedule(delay: Any) -> str:
        seconds = int(delay.total_seconds())
        if seconds < 60:
            return gettext("{n} s", n=seconds)
        if seconds < 3600:
            return gettext("{n} min", n=seconds // 60)
        return gettext("{n} h", n=seconds // 3600)


def _display(runtime: Runtime) -> Display:
    zone, _source = site_timezone(runtime)
    return Display(zone, runtime.reader.levels(), runtime.clock.today_utc())


def _endpoint_or_404(runtime: Runtime, endpoint_id: int) -> WebhookEndpoint:
    with runtime.sessions() as session:
        found = queries.endpoint(session, endpoint_id)
    if found is None:
        abort(404, description=gettext("There is no endpoint #{id}.", id=endpoint_id))
    return found


# --- endpoints ----------------------------------------------------------------------------------------

@blueprint.get("/webhooks")
@login_required
def endpoint_list():
    runtime = _runtime()
    with runtime.sessions() as session:
        rows = queries.endpoints(session)
        pending = queries.pending_counts(session)
    return render_template("webhooks_list.html", endpoints=rows, pending=pending, fmt=_display(runtime), tab="endpoints")


@blueprint.get("/webhooks/<int:endpoint_id>")
@login_required
def endpoint_page(endpoint_id: int):
    runtime = _runtime()
    endpoint = _endpoint_or_404(runtime, endpoint_id)
    return render_template("webhooks_endpoint.html", endpoint=endpoint, fmt=_display(runtime), tab="endpoints",
                           now=runtime.clock.now())


def _form_from(data: Mapping[str, Any]) -> EndpointForm:
    chosen = data.getlist("events") if hasattr(data, "getlist") else list(data.get("events") or [])
    events = ("*",) if "*" in chosen else tuple(e for e in WEBHOOK_EVENTS if e in chosen)
    unknown = [e for e in chosen if e != "*" and e not in WEBHOOK_EVENTS]
    return EndpointForm(name=(data.get("name") or "").strip(), url=(data.get("url") or "").strip(),
                        events=events + tuple(unknown), enabled=bool(data.get("enabled")),
                        description=(data.get("description") or "").strip(),
                        body_template=(data.get("body_template") or "").replace("\r\n", "\n").strip())


def _render_form(form: EndpointForm, endpoint: WebhookEndpoint | None, errors: Mapping[str, str] | None = None,
                 status_code: int = 200):
    action = url_for(".endpoint_edit", endpoint_id=endpoint.id) if endpoint else url_for(".endpoint_new")
    return render_template("webhooks_form.html", form=form, endpoint=endpoint, errors=errors or {}, action=action,
                           event_types=WEBHOOK_EVENTS, event_texts=event_texts(), max_template=MAX_TEMPLATE,
                           tab="endpoints"), status_code


def _save_form(runtime: Runtime, endpoint: WebhookEndpoint | None):
    form = _form_from(request.form)
    errors: dict[str, str] = {}
    if len(form.url) > 500:
        errors["url"] = gettext("At most 500 characters.")
    if len(form.description) > 300:
        errors["description"] = gettext("At most 300 characters.")
    if len(form.body_template) > MAX_TEMPLATE:
        errors["body_template"] = gettext("At most {n} characters.", n=MAX_TEMPLATE)
    if not errors:
        try:
            saved = save(runtime, form, _actor(), endpoint.id if endpoint else None)
        except EndpointRejected as exc:
            errors = {field: say(message) for field, message in exc.said.items()}
        except IntegrityError:
            errors = {"name": gettext("An endpoint named «{name}» exists already.", name=form.name)}
        except LookupError:
            abort(404)
    if errors:
        return _render_form(form, endpoint, errors, 422)
    flash(gettext("Endpoint «{name}» saved.", name=saved.name), "ok")
    return redirect(url_for(".endpoint_page", endpoint_id=saved.id))


@blueprint.route("/webhooks/new", methods=["GET", "POST"])
@login_required
def endpoint_new():
    runtime = _runtime()
    if request.method == "POST":
        return _save_form(runtime, None)
    return _render_form(EndpointForm(name="", url=""), None)


@blueprint.route("/webhooks/<int:endpoint_id>/edit", methods=["GET", "POST"])
@login_required
def endpoint_edit(endpoint_id: int):
    runtime = _runtime()
    endpoint = _endpoint_or_404(runtime, endpoint_id)
    if endpoint.source != "ui":
        # The file's endpoints follow the file, a program's follow its form; saving here would
        # also turn a program's legacy body or e-mail endpoint into a standard JSON one.
        flash(str(_NOT_EDITABLE.get(endpoint.source) or gettext("This endpoint comes from the configuration "
                                                                "file; change it there.")), "error")
        return redirect(url_for(".endpoint_page", endpoint_id=endpoint_id))
    if request.method == "POST":
        return _save_form(runtime, endpoint)
    form = EndpointForm(name=endpoint.name, url=endpoint.url, events=tuple(endpoint.events or ["*"]),
                        enabled=endpoint.enabled, description=endpoint.description,
                        body_template=endpoint.body_template or "")
    return _render_form(form, endpoint)


@blueprint.post("/webhooks/<int:endpoint_id>/secret")
@login_required
def endpoint_secret(endpoint_id: int):
    """The secret in full: only in answer to a POST (CSRF-checked), never cached, and audited."""
    runtime = _runtime()
    endpoint = _endpoint_or_404(runtime, endpoint_id)
    now = runtime.clock.now()
    with unit_of_work(runtime.sessions) as session:
        audit.record(session, subject_type="webhook_endpoint", subject_id=str(endpoint_id),
                     action="webhook.secret_revealed", at=now, actor=_actor())
    response = make_response(render_template("webhooks_secret.html", endpoint=endpoint, fmt=_display(runtime),
                                             now=now, tab="endpoints"))
    response.headers["Cache-Control"] = "no-store"
    return response


@blueprint.post("/webhooks/<int:endpoint_id>/rotate")
@login_required
def endpoint_rotate(endpoint_id: int):
    runtime = _runtime()
    _endpoint_or_404(runtime, endpoint_id)
    try:
        rotate_secret(runtime, endpoint_id, _actor())
    except EndpointRejected as exc:
        flash(say(next(iter(exc.said.values()))), "error")
    else:
        rotated = _endpoint_or_404(runtime, endpoint_id)
        display = _display(runtime)
        flash(gettext("New secret made. The old one keeps signing until {until} ({zone}), so "
                      "receivers can switch.", until=display.local(rotated.previous_secret_until),
                        zone=display.zone_name), "ok")
    return redirect(url_for(".endpoint_page", endpoint_id=endpoint_id))


@blueprint.post("/webhooks/<int:endpoint_id>/enabled")
@login_required
def endpoint_enabled(endpoint_id: int):
    runtime = _runtime()
    _endpoint_or_404(runtime, endpoint_id)
    wanted = request.form.get("enabled")
    if wanted not in ("0", "1"):
        abort(400)
    try:
        set_enabled(runtime, endpoint_id, wanted == "1", _actor())
    except EndpointRejected as exc:
        flash(say(next(iter(exc.said.values()))), "error")
    else:
        flash(gettext("The endpoint is switched on.") if wanted == "1" else gettext("The endpoint is switched off: nothing more is sent to "
                                                                                    "it."), "ok")
    return redirect(url_for(".endpoint_page", endpoint_id=endpoint_id))


@blueprint.post("/webhooks/<int:endpoint_id>/test")
@login_required
def endpoint_test(endpoint_id: int):
    runtime = _runtime()
    endpoint = _endpoint_or_404(runtime, endpoint_id)
    if endpoint.body_format not in ("standard", "template"):
        # A program's legacy body or e-mail is made from a program event; a test event has none.
        flash(gettext("Test events go to standard JSON endpoints only; this one receives a program's own body."), "error")
        return redirect(url_for(".endpoint_page", endpoint_id=endpoint_id))
    now = runtime.clock.now()
    with unit_of_work(runtime.sessions) as session:
        event_id = emit_test(session, endpoint_id, now, _actor())
        audit.record(session, subject_type="webhook_endpoint", subject_id=str(endpoint_id),
                     action="webhook.test_requested", at=now, actor=_actor(), event_id=event_id)
    flash(gettext("Test event {event} queued: the worker delivers it within seconds; "
                  "reload this page to see the attempt.", event=event_id), "ok")
    return redirect(url_for(".delivery_log", endpoint_id=endpoint_id))


# --- deliveries -------------------------------------------------------------------------------------------

def _before(args: Mapping[str, str], problems: list[str]) -> int | None:
    raw = (args.get("before") or "").strip()
    if not raw:
        return None
    if raw.isdecimal() and len(raw) <= 18:
        return int(raw)
    problems.append(gettext("Ignored the parameter {name}={value}: not a usable value.", name="before", value=raw[:40]))
    return None


@blueprint.get("/webhooks/<int:endpoint_id>/deliveries")
@login_required
def delivery_log(endpoint_id: int):
    runtime = _runtime()
    endpoint = _endpoint_or_404(runtime, endpoint_id)
    problems: list[str] = []
    state = (request.args.get("state") or "").strip()
    if state and state not in queries.DELIVERY_STATES:
        problems.append(gettext("Ignored the parameter {name}={value}: not a usable value.", name="state", value=state[:40]))
        state = ""
    before = _before(request.args, problems)
    with runtime.sessions() as session:
        page = queries.deliveries(session, endpoint_id, state=state or None, before=before, limit=PER_PAGE)

    def url(**changes: Any) -> str:
        values = {"state": state or None, "before": before, **changes}
        return url_for(".delivery_log", endpoint_id=endpoint_id, **{k: v for k, v in values.items() if v})

    return render_template(
        "webhooks_deliveries.html", endpoint=endpoint, page=page, fmt=_display(runtime), problems=problems,
        states=queries.DELIVERY_STATES, state=state, tab="endpoints", here=url(),
        next_url=url(before=page.next_before) if page.next_before else None,
        first_url=url(before=None) if before else None)


@blueprint.post("/webhooks/deliveries/<int:delivery_id>/redeliver")
@login_required
def delivery_redeliver(delivery_id: int):
    runtime = _runtime()
    with runtime.sessions() as session:
        endpoint_id = queries.delivery_endpoint(session, delivery_id)
    if endpoint_id is None:
        abort(404, description=gettext("There is no delivery #{id}.", id=delivery_id))
    if redeliver(runtime, delivery_id, _actor()):
        flash(gettext("Delivery #{id} queued again: the worker sends it shortly.", id=delivery_id), "ok")
    else:
        flash(gettext("Delivery #{id} is being delivered right now; try again in a minute.", id=delivery_id), "error")
    return redirect(url_for(".delivery_log", endpoint_id=endpoint_id))


# --- for integrators ------------------------------------------------------------------------------------

@blueprint.get("/webhooks/events")
@login_required
def event_types():
    runtime = _runtime()
    schemas = [(name, json.dumps(json_schema(name), ensure_ascii=False, indent=2)) for name in SCHEMAS]
    display = _display(runtime)
    return render_template("webhooks_events.html", schemas=schemas, texts=event_texts(), test_event=TEST_EVENT,
                           fmt=display,
                           schedule=", ".join(display.schedule(delay) for delay in RETRY_SCHEDULE),
                           max_attempts=MAX_ATTEMPTS,
                           disable_after=runtime.settings.webhooks.disable_after_failures, tab="events")


@blueprint.get("/webhooks/inbound")
@login_required
def inbound_hints():
    runtime = _runtime()
    problems: list[str] = []
    state = (request.args.get("state") or "").strip()
    if state and state not in queries.HINT_STATES:
        problems.append(gettext("Ignored the parameter {name}={value}: not a usable value.", name="state", value=state[:40]))
        state = ""
    before = _before(request.args, problems)
    with runtime.sessions() as session:
        page = queries.hints(session, state=state or None, before=before, limit=PER_PAGE)

    def url(**changes: Any) -> str:
        values = {"state": state or None, "before": before, **changes}
        return url_for(".inbound_hints", **{k: v for k, v in values.items() if v})

    return render_template(
        "webhooks_inbound.html", page=page, fmt=_display(runtime), problems=problems, states=queries.HINT_STATES,
        state=state, tab="inbound", configured=runtime.settings.webhooks.memberlux_path_token is not None,
        next_url=url(before=page.next_before) if page.next_before else None,
        first_url=url(before=None) if before else None)
