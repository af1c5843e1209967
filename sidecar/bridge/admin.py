"""Admin pages of the grant bridge: the list of grants, one grant in full, retry and cancel, and the
grant's welcome e-mail (send again, mark as delivered).

Thin on purpose: reading goes through ``sidecar.bridge.queries``, changes through ``BridgeService``
(which writes the audit events, with the administrator's login as actor). Every view needs an admin
session; the POST forms carry the session's CSRF token, checked app-wide before the view runs.
"""

from __future__ import annotations

import json
from dataclasses import dataclass, replace
from datetime import date, datetime, timezone, tzinfo
from collections.abc import Callable
from typing import Any

from flask import Blueprint, abort, flash, redirect, render_template, request, url_for
from werkzeug.datastructures import MultiDict

from sidecar.bootstrap import Runtime
from sidecar.bridge.attention import Unsettled
from sidecar.bridge.blueprint import bridge_service
from sidecar.status import site_timezone
from sidecar.store.grant_models import ALL_STATES, CANCELLED, FAILED, FETCHING, QUEUED, SHADOW, SHADOWED, Grant
from sidecar.store.mail_models import UNKNOWN
from sidecar.web import current_runtime
from sidecar.web.auth import current_admin, login_required
from sidecar.web.i18n import lazy_gettext, lazy_pgettext, gettext, pgettext
from sidecar.web.messages import say
from sidecar.web.pages import shorten

from . import queries
from .reasons import META_KEY, last_error
from .service import IntakeRejected
from .welcome import WelcomeRefused, can_resend, mark_welcome_delivered, resend_welcome, welcome_of

blueprint = Blueprint("grants_admin", __name__)

# A grant's state and channel as the pages name them; a value not listed here is shown as stored.
_STATUSES = {
    "queued": lazy_gettext("queued"),
    "fetching": lazy_gettext("reading CRM"),
    "delivering": lazy_gettext("delivering"),
    "unknown": lazy_pgettext("grants.status", "outcome unknown"),
    "confirming": lazy_gettext("confirming"),
    "succeeded": lazy_pgettext("grants.status", "succeeded"),
    "duplicated": lazy_gettext("duplicated"),
    "failed": lazy_pgettext("grants.status.failed", "failed"),
    "cancelled": lazy_gettext("cancelled"),
    "shadow": lazy_gettext("shadow: watching"),
    "shadowed": lazy_gettext("shadow: compared"),
}
_CHANNELS = {
    "legacy": lazy_gettext("legacy bridge"),
    "api": lazy_gettext("API call"),
    "amocrm": lazy_gettext("amoCRM webhook"),
    "program": lazy_gettext("program"),
}
# An attempt's kind and outcome (GrantAttempt.kind, .outcome); its detail stays as the worker wrote it.
_ATTEMPT_KINDS = {
    "order": lazy_pgettext("grants.attempt.kind", "order"),
    "lookup": lazy_pgettext("grants.attempt.kind", "key lookup"),
    "confirm": lazy_pgettext("grants.attempt.kind", "confirmation"),
    "crm_fetch": lazy_pgettext("grants.attempt.kind", "CRM read"),
}
_ATTEMPT_OUTCOMES = {
    "ok": lazy_pgettext("grants.attempt.outcome", "ok"),
    "permanent": lazy_pgettext("grants.attempt.outcome", "refused"),
    "unknown": lazy_pgettext("grants.attempt.outcome", "outcome unknown"),
    "unreachable": lazy_pgettext("grants.attempt.outcome", "unreachable"),
    "found": lazy_pgettext("grants.attempt.outcome", "found"),
    "not_found": lazy_pgettext("grants.attempt.outcome", "not found"),
}
_REFUSALS = {
    "not_retryable": lazy_gettext("This grant is {status}: only failed or cancelled grants can be retried."),
    "not_cancellable": lazy_gettext("This grant is {status}: only queued, CRM-reading or failed grants can be cancelled (one being "
                                    "delivered may already exist on the site)."),
}
_DONE = {"retry": lazy_gettext("The grant is back in the queue ({status})."), "cancel": lazy_gettext("The grant was cancelled.")}
_WELCOME_REFUSALS = {
    "not_succeeded": lazy_gettext("This grant has not succeeded or has no e-mail address: there is no welcome e-mail to send."),
    "in_progress": lazy_gettext("The welcome e-mail of this grant is queued or being sent already."),
    "not_unknown": lazy_gettext("Only a welcome e-mail whose outcome is unknown can be marked as delivered."),
}

PER_PAGE = 50
MAX_PER_PAGE = 200
MAX_SEARCH = 200
ERROR_PREVIEW = 80
# Mirrors what BridgeService.retry/cancel accept, so a page offers only buttons that can work.
RETRYABLE = (FAILED, CANCELLED)
CANCELLABLE = (QUEUED, FETCHING, FAILED)


_runtime = current_runtime
_service = bridge_service


# --- presentation helpers --------------------------------------------------------------------------

class Display:
    """Formatting shared by both templates: site-zone times, level names, terms, labels."""

    def __init__(self, zone: tzinfo, levels: dict[int, str]) -> None:
        self.zone = zone
        self.zone_name = str(zone)
        self.levels = levels

    def local(self, moment: datetime | None) -> str:
        return moment.astimezone(self.zone).strftime("%Y-%m-%d %H:%M:%S") if moment else "—"

    def utc(self, moment: datetime | None) -> str:
        return moment.astimezone(timezone.utc).strftime("%Y-%m-%d %H:%M:%S UTC") if moment else ""

    def level(self, term_id: int | None) -> str:
        if term_id is None:
            return "—"
        name = self.levels.get(term_id)
        return f"{name} (#{term_id})" if name else pgettext("grants.level_missing", "level #{id} (not on the site)", id=term_id)

    def term(self, grant: Grant) -> str:
        if grant.is_unlimited:
            return pgettext("grants.term.unlimited", "unlimited")
        if grant.duration is None:
            return "—"
        return self.term_of(grant.duration, grant.units or "").strip()

    @staticmethod
    def term_of(duration: int, units: str) -> str:
        words = _TERMS.get(units)
        return words(duration) if words else f"{duration} {units}"

    def error(self, grant: Grant) -> str:
        """The grant's last error in the page's language (English as written when it has no code)."""
        return say(last_error(grant), _Names(self))

    def short_error(self, grant: Grant) -> str:
        return shorten(self.error(grant), ERROR_PREVIEW)

    @staticmethod
    def meta(grant: Grant) -> dict[str, Any]:
        """The grant's meta as shown: without the worded copy of its last error (shown above it)."""
        return {key: value for key, value in (grant.meta or {}).items() if key != META_KEY}

    @staticmethod
    def status(state: str) -> str:
        text = _STATUSES.get(state)
        return str(text) if text is not None else state

    @staticmethod
    def channel(name: str | None) -> str:
        if not name:
            return "—"
        text = _CHANNELS.get(name)
        return str(text) if text is not None else name

    @staticmethod
    def attempt_kind(kind: str) -> str:
        text = _ATTEMPT_KINDS.get(kind)
        return str(text) if text is not None else kind

    @staticmethod
    def attempt_outcome(outcome: str) -> str:
        text = _ATTEMPT_OUTCOMES.get(outcome)
        return str(text) if text is not None else outcome

    @staticmethod
    def yes_no(value: bool | None) -> str:
        if value is None:
            return "—"
        return gettext("yes") if value else gettext("no")

    @staticmethod
    def value(value: Any) -> str:
        if value is None or value == "":
            return "—"
        if isinstance(value, (date, datetime)):
            return value.isoformat()
        return str(value)

    @staticmethod
    def details(details: dict[str, Any] | None) -> list[tuple[str, str]]:
        return [(key, value if isinstance(value, str) else json.dumps(value, ensure_ascii=False, default=str))
                for key, value in (details or {}).items()]

    @staticmethod
    def json(value: Any) -> str:
        return json.dumps(value or {}, ensure_ascii=False, indent=2, sort_keys=True, default=str)


_TERMS: dict[str, Callable[[int], str]] = {
    "days": lambda n: gettext("{n} d.", n=n),
    "months": lambda n: gettext("{n} mo.", n=n),
}


class _Names:
    """A grant page's way of naming a message's levels and terms."""

    def __init__(self, display: Display) -> None:
        self.display = display

    def level_label(self, term_id: int) -> str:
        return self.display.level(term_id)

    def term(self, duration: int, units: str) -> str:
        return Display.term_of(duration, units)


def _display(runtime: Runtime) -> Display:
    zone, _source = site_timezone(runtime)
    # Once per page: level names come from WordPress, not from our store.
    return Display(zone, {level.term_id: level.name for level in runtime.reader.levels()})


# --- the list ---------------------------------------------------------------------------------------

@dataclass(frozen=True)
class Filters:
    status: str = ""
    channel: str = ""
    date_from: date | None = None
    date_to: date | None = None
    search: str = ""
    unsettled: bool = False
    before: queries.Cursor | None = None
    per_page: int = PER_PAGE

    def query_args(self) -> dict[str, str]:
        """The filters as URL parameters (empty ones left out), to build links that keep them."""
        values = {
            "status": self.status, "channel": self.channel,
            "from": self.date_from.isoformat() if self.date_from else "",
            "to": self.date_to.isoformat() if self.date_to else "",
            "q": self.search, "unsettled": "1" if self.unsettled else "",
            "before": self.before.encode() if self.before else "",
            "per_page": str(self.per_page) if self.per_page != PER_PAGE else "",
        }
        return {key: value for key, value in values.items() if value}

    def url(self, **changes: Any) -> str:
        return url_for(".grant_list", **replace(self, **changes).query_args())


def _parse_date(raw: str, problems: list[str]) -> date | None:
    raw = raw.strip()
    if not raw:
        return None
    try:
        return date.fromisoformat(raw)
    except ValueError:
        problems.append(gettext("Not a date: {value} (use YYYY-MM-DD); the filter was ignored.", value=raw[:40]))
        return None


def parse_filters(args: MultiDict[str, str]) -> tuple[Filters, list[str]]:
    """Filters from the query string; what cannot be used is dropped and explained, not a 400."""
    problems: list[str] = []
    status = args.get("status", "").strip()
    if status and status not in ALL_STATES:
        problems.append(gettext("Unknown status: {value}; the filter was ignored.", value=status[:40]))
        status = ""
    before = None
    if args.get("before"):
        try:
            before = queries.Cursor.decode(args["before"])
        except ValueError:
            problems.append(gettext("The page link is not valid; showing the first page."))
    try:
        per_page = max(1, min(int(args.get("per_page", PER_PAGE)), MAX_PER_PAGE))
    except ValueError:
        per_page = PER_PAGE
    unsettled = args.get("unsettled", "").strip()
    if unsettled not in ("", "0", "1"):
        problems.append(gettext("Unknown value of unsettled: {value} (use 1); the filter was ignored.", value=unsettled[:40]))
    filters = Filters(
        status=status, channel=args.get("channel", "").strip()[:20],
        date_from=_parse_date(args.get("from", ""), problems), date_to=_parse_date(args.get("to", ""), problems),
        search=args.get("q", "").strip()[:MAX_SEARCH], unsettled=unsettled == "1", before=before, per_page=per_page,
    )
    return filters, problems


@blueprint.get("/admin/grants")
@login_required
def grant_list():
    runtime = _runtime()
    filters, problems = parse_filters(request.args)
    display = _display(runtime)
    created_from, created_to = queries.day_range(filters.date_from, filters.date_to, display.zone)
    unsettled = Unsettled.of(runtime.settings, runtime.clock.now()) if filters.unsettled else None
    with runtime.sessions() as session:
        page = queries.list_grants(session, status=filters.status or None, channel=filters.channel or None,
                                   created_from=created_from, created_to=created_to, search=filters.search or None,
                                   before=filters.before, limit=filters.per_page, unsettled=unsettled)
        counts = queries.counts_by_status(session, unsettled)
        known_channels = queries.channels(session)
    if filters.channel and filters.channel not in known_channels:
        known_channels.append(filters.channel)
    chips = [{"label": gettext("All"), "count": sum(counts.values()), "active": not filters.status,
              "url": filters.url(status="", before=None), "state": "all"}]
    chips += [{"label": display.status(state), "count": count, "active": filters.status == state,
               "url": filters.url(status=state, before=None), "state": state} for state, count in counts.items()]
    shadow_url = url_for(".shadow_page") if (runtime.settings.bridge.mode == "shadow"
                                              or counts.get(SHADOW) or counts.get(SHADOWED)) else None
    return render_template(
        "grants_list.html", page=page, filters=filters, problems=problems, chips=chips, fmt=display, shadow_url=shadow_url,
        statuses=list(counts), channels=known_channels,
        first_url=filters.url(before=None) if filters.before else None,
        next_url=filters.url(before=page.next_cursor) if page.next_cursor else None,
        reset_url=url_for(".grant_list"),
    )


# --- one grant ----------------------------------------------------------------------------------------

@blueprint.get("/admin/grants/<grant_id>")
@login_required
def grant_page(grant_id: str):
    runtime = _runtime()
    with runtime.sessions() as session:
        detail = queries.grant_detail(session, grant_id)
        welcome = welcome_of(session, grant_id)
    if detail is None:
        abort(404, description=gettext("There is no grant {id}.", id=grant_id[:40]))
    return render_template("grant_detail.html", grant=detail.grant, attempts=detail.attempts, events=detail.events,
                           fmt=_display(runtime), can_retry=detail.grant.status in RETRYABLE,
                           can_cancel=detail.grant.status in CANCELLABLE, list_url=url_for(".grant_list"),
                           welcome=welcome, can_resend_welcome=can_resend(detail.grant, welcome),
                           can_mark_welcome=welcome is not None and welcome.state == UNKNOWN)


def _rejection_text(exc: IntakeRejected, grant_id: str) -> str:
    if exc.code == "not_found":
        return gettext("There is no grant {id}.", id=grant_id[:40])
    if exc.code in ("not_retryable", "not_cancellable"):
        current = _service().get(grant_id)
        state = Display.status(current.status) if current else "?"
        return _REFUSALS[exc.code].format(status=state)
    return exc.message


def _act(grant_id: str, action: str):
    admin = current_admin()
    assert admin is not None  # login_required ran first
    service = _service()
    try:
        grant = service.retry(grant_id, admin.login) if action == "retry" else service.cancel(grant_id, admin.login)
    except IntakeRejected as exc:
        flash(_rejection_text(exc, grant_id), "error")
        if exc.code == "not_found":
            return redirect(url_for(".grant_list"))
    else:
        flash(_DONE[action].format(status=Display.status(grant.status)), "ok")
    # Post/redirect/get: reloading the page does not repeat the action.
    return redirect(url_for(".grant_page", grant_id=grant_id))


@blueprint.post("/admin/grants/<grant_id>/retry")
@login_required
def grant_retry(grant_id: str):
    return _act(grant_id, "retry")


@blueprint.post("/admin/grants/<grant_id>/cancel")
@login_required
def grant_cancel(grant_id: str):
    return _act(grant_id, "cancel")


# --- the welcome e-mail ---------------------------------------------------------------------------------

def _welcome_act(grant_id: str, action: str):
    admin = current_admin()
    assert admin is not None  # login_required ran first
    runtime = _runtime()
    try:
        if action == "resend":
            resend_welcome(runtime, grant_id, actor=admin.login)
        else:
            mark_welcome_delivered(runtime, grant_id, actor=admin.login)
    except WelcomeRefused as exc:
        if exc.code == "not_found":
            flash(gettext("There is no grant {id}.", id=grant_id[:40]), "error")
            return redirect(url_for(".grant_list"))
        flash(str(_WELCOME_REFUSALS[exc.code]), "error")
    else:
        flash(gettext("The welcome e-mail is queued: the worker sends it within a "
                      "minute.") if action == "resend" else gettext("The welcome e-mail is marked as delivered."), "ok")
    return redirect(url_for(".grant_page", grant_id=grant_id))


@blueprint.post("/admin/grants/<grant_id>/welcome/resend")
@login_required
def grant_welcome_resend(grant_id: str):
    return _welcome_act(grant_id, "resend")


@blueprint.post("/admin/grants/<grant_id>/welcome/delivered")
@login_required
def grant_welcome_delivered(grant_id: str):
    return _welcome_act(grant_id, "delivered")


# --- shadow mode report -------------------------------------------------------------------------------

@blueprint.get("/admin/shadow")
@login_required
def shadow_page():
    """Counts per outcome and the mismatches of shadow mode (sidecar.bridge.shadow_report)."""
    from .shadow_report import shadow_report

    runtime = _runtime()
    display = _display(runtime)
    problems: list[str] = []
    since_day = _parse_date(request.args.get("since", ""), problems)
    since, _ = queries.day_range(since_day, None, display.zone)
    with runtime.sessions() as session:
        report = shadow_report(session, since)
    return render_template("shadow_report.html", report=report, fmt=display, problems=problems, since=since_day,
                           live=runtime.settings.bridge.mode == "live", reset_url=url_for(".shadow_page"))
