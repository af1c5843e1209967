"""Reminders pages: the ledger's history, failed sends and resend, digests, unsubscribes, the public
unsubscribe page, and the letter preview and test send of the per-level settings.

Thin on purpose: reading goes through :mod:`sidecar.reminders.history`, changes through
``sender.resend`` and ``unsubscribe.unsubscribe/resubscribe`` (which write the audit events, with the
administrator's login as actor), and letters are rendered by :class:`LetterContext` and
:mod:`sidecar.reminders.letters` — the very code the sender uses.

Two routes need no admin session: ``/unsubscribe/<token>``. The token is the learner's signed id, so
it is its own authentication; GET only shows a confirmation (mail scanners fetch links), POST
unsubscribes — from the page's button, or from a mail client's RFC 8058 one-click POST, which comes
without cookies or CSRF token.

The letter preview is HTML someone typed, so it is never put into our pages: an ``<iframe>`` loads it
from its own route, answered with ``Content-Security-Policy: sandbox`` (no scripts, an opaque origin).
"""

from __future__ import annotations

import hashlib
import hmac
import logging
from collections.abc import Mapping
from dataclasses import dataclass, field, replace
from datetime import date, timedelta, tzinfo
from typing import Any

import sqlalchemy as sa
from flask import (
    Blueprint,
    Response,
    abort,
    current_app,
    flash,
    g,
    make_response,
    redirect,
    render_template,
    request,
    url_for,
)
from itsdangerous import BadSignature, URLSafeTimedSerializer
from markupsafe import escape

from sidecar.bootstrap import Runtime
from sidecar.bridge.queries import day_range
from sidecar.domain.reminders import ADMIN_STEP, State
from sidecar.mail.mailer import Mail, MailDisabled, Mailer, MailError, MailOutcomeUnknown
from sidecar.mail.templates import TemplateError
from sidecar.memberlux.reader import Level, WpUser
from sidecar.monitor.service import MonitorService, UnknownLevel, UnknownUser
from sidecar.monitor.settings import (EMAIL_PATTERN, Letter, LevelSettings, MonitorSettings, template_error,
                                     template_errors)
from sidecar.monitor.display import Display as MonitorDisplay
from sidecar.monitor.display import level_tree
from sidecar.monitor.settings_form import parse_settings_form
from sidecar.reminders import history
from sidecar.reminders import sender as reminder_sender
from sidecar.reminders.context import LetterContext
from sidecar.reminders.letters import Rendered, render_digest, render_learner_letter
from sidecar.reminders.unsubscribe import LinkUnavailable, Links, resubscribe, unsubscribe, unsubscribed_ids
from sidecar.status import site_timezone
from sidecar.store import audit
from sidecar.store.db import unit_of_work
from sidecar.store.reminder_models import Reminder, ReminderDigest, Unsubscribe
from sidecar.web import current_runtime
from sidecar.web.auth import csrf_exempt, current_admin, login_required, safe_next
from sidecar.web.i18n import LazyText, lazy_gettext, lazy_pgettext, gettext
from sidecar.web.messages import say
from sidecar.web.pages import actor, label, query_day, shorten

log = logging.getLogger(__name__)

blueprint = Blueprint("reminders", __name__)

PER_PAGE = 50
MAX_PER_PAGE = 200
MAX_SEARCH = 200
MAX_IDS = 500                 # rows one resend may name: a page's worth, with room
ERROR_PREVIEW = 90
STEPS = {"1": 1, "2": 2, "3": 3, "digest": ADMIN_STEP}
LETTER_CHOICES = ("1", "2", "3", "admin")
ACTIONABLE = (State.FAILED.value, State.UNKNOWN.value)   # rows an administrator can act on
# A draft letter travels to the preview frame inside its URL; longer ones are posted into the frame.
MAX_DRAFT_TOKEN = 2000
DRAFT_MAX_AGE = 3600
_DRAFT_SALT = "mlsidecar.reminders.preview-draft"
_CONFIRM_SALT = b"mlsidecar.reminders.unsubscribe-page:"
ONE_CLICK_BODY = ("List-Unsubscribe", "One-Click")
# The preview frame: no scripts, no plugins, no forms, an opaque origin; only styles and pictures load.
PREVIEW_CSP = ("sandbox; default-src 'none'; style-src 'unsafe-inline'; img-src https: data:; font-src https: data:; "
               "frame-ancestors 'self'")


_runtime = current_runtime


_actor = actor  # the administrator's login for audit events

_STATES = {
    "planned": lazy_gettext("planned"),
    "sending": lazy_gettext("sending"),
    "sent": lazy_gettext("sent"),
    "failed": lazy_pgettext("grants.status.failed", "failed"),
    "unknown": lazy_pgettext("grants.welcome.state.unknown", "outcome unknown"),
    "skipped": lazy_gettext("skipped"),
}
_REASONS = {
    "superseded": lazy_gettext("a later letter was due at the same time and went instead"),
    "too_late": lazy_gettext("too late: due more days ago than the catch-up limit"),
    "renewed": lazy_gettext("access renewed"),
    "certificate": lazy_gettext("a manual certificate was issued"),
    "blocked": lazy_gettext("account blocked in MemberLux"),
    "unsubscribed": lazy_gettext("the learner unsubscribed"),
    "memberlux_unsubscribed": lazy_gettext("the learner unsubscribed from MemberLux's letters"),
    "monitoring_off": lazy_gettext("reminders are off for the level"),
    "letter_off": lazy_gettext("the letter was emptied"),
    "no_email": lazy_gettext("no usable e-mail address"),
    "not_sleeper": lazy_gettext("no longer a sleeper"),
    "user_deleted": lazy_gettext("the user was deleted"),
    "interrupted": lazy_gettext("the sender stopped after handing the letter to the mail server"),
    "no_reply": lazy_gettext("the mail server did not answer after receiving the whole letter"),
    "marked_delivered": lazy_gettext("marked as delivered by an administrator"),
    "held": lazy_gettext("waits: an earlier letter of the chain has an unknown outcome"),
    "smtp_transient": lazy_gettext("the mail server kept failing"),
    "smtp_permanent": lazy_gettext("refused by the mail server"),
    "template": lazy_gettext("the template could not be rendered"),
    "empty": lazy_gettext("no learners left in the digest"),
    "not_approved": lazy_gettext("the level's reminders are not approved"),
}
_SOURCES = {
    "link": lazy_gettext("link in a letter"),
    "one_click": lazy_gettext("one-click (mail client)"),
    "admin": lazy_gettext("administrator"),
}
# A refused parameter or action, by its code (values fill the placeholders).
_ERRORS = {
    "bad_date": lazy_gettext("Not a date in {field}: {value} (use YYYY-MM-DD); the filter was ignored."),
    "bad_range": lazy_gettext("{field} ({value}) is before the start of the range; the end was ignored."),
    "bad_level": lazy_gettext("Not a level id: {value}; the filter was ignored."),
    "unknown_level": lazy_gettext("There is no level {value} on the site; the filter was ignored."),
    "bad_state": lazy_gettext("Unknown state: {value}; the filter was ignored."),
    "bad_step": lazy_gettext("Unknown letter: {value} (use 1, 2, 3 or digest); the filter was ignored."),
    "bad_limit": lazy_gettext("Rows per page must be a number from 1 to {max}, not {value}."),
    "too_long": lazy_gettext("{field} is longer than {max} characters and was shortened."),
    "bad_cursor": lazy_gettext("The page link is not valid; showing the first page."),
    "nothing_selected": lazy_gettext("Choose at least one row to resend."),
    "too_many": lazy_gettext("At most {max} rows can be resent at once."),
    "bad_id": lazy_gettext("Not a row id: {value}. Nothing was resent."),
    "no_row": lazy_gettext("There is no reminder row {id}."),
    "not_unsubscribed": lazy_gettext("User {id} is not on the unsubscribe list."),
    "bad_user": lazy_gettext("«{value}» is neither a user id nor an e-mail address."),
    "no_user": lazy_gettext("There is no WordPress user {value}."),
    "no_learner": lazy_gettext("No learner of this level to preview with: enter a user id or e-mail."),
    "bad_letter": lazy_gettext("Unknown letter «{value}»: choose 1, 2, 3 or the digest."),
    "bad_draft": lazy_gettext("This preview link is no longer valid; press Preview again."),
    "bad_address": lazy_gettext("Not an e-mail address: «{value}»."),
    "nothing_to_send": lazy_gettext("Nothing was sent: {reason}"),
    "mail_disabled": lazy_gettext("E-mail is disabled: set smtp.host (or smtp.pickup_dir) in the configuration to send letters."),
    "mail_failed": lazy_gettext("The mail server did not take the letter: {error}"),
    "mail_unknown": lazy_gettext("The mail server received the whole test letter but did not answer: it may have arrived (Message-ID "
                                 "{message_id}). It was not sent again."),
}


# --- presentation -----------------------------------------------------------------------------------

class Display(MonitorDisplay):
    """The monitor's time and level formatting plus the reminders' own labels."""

    _label = staticmethod(label)

    def state(self, state: str) -> str:
        return self._label(_STATES, state)

    def reason(self, reason: str | None) -> str:
        return self._label(_REASONS, reason) if reason else "—"

    def step(self, step: int) -> str:
        return gettext("digest") if step == ADMIN_STEP else str(step)

    def source(self, source: str) -> str:
        return self._label(_SOURCES, source)

    @staticmethod
    def short(text: str | None, limit: int = ERROR_PREVIEW) -> str:
        return shorten(text, limit)


def _display(runtime: Runtime, levels: list[Level] | None = None) -> Display:
    zone, _source = site_timezone(runtime)
    return Display(zone, runtime.reader.levels() if levels is None else levels, runtime.clock.today_utc())


def _chips(counts: Mapping[str, int], active: str, url_for_state, display: Display) -> list[dict[str, Any]]:
    chips = [{"label": gettext("All"), "count": sum(counts.values()), "active": not active,
              "url": url_for_state(""), "state": "all"}]
    chips += [{"label": display.state(state), "count": count, "active": active == state,
               "url": url_for_state(state), "state": state} for state, count in counts.items()]
    return chips


# --- parameters ---------------------------------------------------------------------------------------

def _problem(code: str, **values: Any) -> str:
    return _ERRORS[code].format(**values)


def _parse_day(args: Mapping[str, str], name: str, problems: list[str]) -> date | None:
    day, unusable = query_day(args, name)
    if unusable is not None:
        problems.append(_problem("bad_date", field=name, value=unusable))
    return day


def _parse_range(args: Mapping[str, str], prefix: str, problems: list[str]) -> tuple[date | None, date | None]:
    first, last = _parse_day(args, f"{prefix}_from", problems), _parse_day(args, f"{prefix}_to", problems)
    if first and last and first > last:
        problems.append(_problem("bad_range", field=f"{prefix}_to", value=last.isoformat()))
        last = None
    return first, last


def _parse_level(args: Mapping[str, str], known: set[int], problems: list[str]) -> int | None:
    raw = (args.get("level") or "").strip()
    if not raw:
        return None
    if not raw.isdecimal() or len(raw) > 18 or int(raw) <= 0:
        problems.append(_problem("bad_level", value=raw[:40]))
        return None
    if int(raw) not in known:
        problems.append(_problem("unknown_level", value=raw))
        return None
    return int(raw)


def _parse_state(args: Mapping[str, str], problems: list[str]) -> str:
    raw = (args.get("state") or "").strip()
    if raw and raw not in history.STATES:
        problems.append(_problem("bad_state", value=raw[:40]))
        return ""
    return raw


def _parse_limit(args: Mapping[str, str], problems: list[str]) -> int:
    raw = (args.get("limit") or "").strip()
    if not raw:
        return PER_PAGE
    if raw.isdecimal() and len(raw) <= 9 and 1 <= int(raw) <= MAX_PER_PAGE:
        return int(raw)
    problems.append(_problem("bad_limit", value=raw[:40], max=MAX_PER_PAGE))
    return PER_PAGE


def _parse_search(args: Mapping[str, str], name: str, problems: list[str]) -> str:
    text = (args.get(name) or "").strip()
    if len(text) > MAX_SEARCH:
        problems.append(_problem("too_long", field=name, max=MAX_SEARCH))
        text = text[:MAX_SEARCH]
    return text


@dataclass(frozen=True)
class HistoryArgs:
    """The history's filters as its URL carries them."""

    level: int | None = None
    user: str = ""
    state: str = ""
    step: str = ""
    planned_from: date | None = None
    planned_to: date | None = None
    sent_from: date | None = None
    sent_to: date | None = None
    after: history.Cursor | None = None
    limit: int = PER_PAGE

    def args(self, **changes: Any) -> dict[str, str]:
        f = replace(self, **changes)
        values = {
            "level": str(f.level) if f.level else "", "user": f.user, "state": f.state, "step": f.step,
            **{name: getattr(f, name).isoformat() if getattr(f, name) else ""
               for name in ("planned_from", "planned_to", "sent_from", "sent_to")},
            "after": f.after.encode() if f.after else "",
            "limit": str(f.limit) if f.limit != PER_PAGE else "",
        }
        return {key: value for key, value in values.items() if value}

    def url(self, **changes: Any) -> str:
        return url_for(".history_page", **self.args(**changes))


def parse_history_args(args: Mapping[str, str], known_levels: set[int]) -> tuple[HistoryArgs, list[str]]:
    """Filters from the query string; what cannot be used is dropped and explained, not a 400."""
    problems: list[str] = []
    step = (args.get("step") or "").strip()
    if step and step not in STEPS:
        problems.append(_problem("bad_step", value=step[:40]))
        step = ""
    after = None
    if (args.get("after") or "").strip():
        try:
            after = history.Cursor.decode(args["after"])
        except ValueError:
            problems.append(_problem("bad_cursor"))
    planned_from, planned_to = _parse_range(args, "planned", problems)
    sent_from, sent_to = _parse_range(args, "sent", problems)
    return HistoryArgs(level=_parse_level(args, known_levels, problems), user=_parse_search(args, "user", problems),
                       state=_parse_state(args, problems), step=step, planned_from=planned_from,
                       planned_to=planned_to, sent_from=sent_from, sent_to=sent_to, after=after,
                       limit=_parse_limit(args, problems)), problems


def history_filter(runtime: Runtime, a: HistoryArgs, zone: tzinfo) -> history.HistoryFilter:
    """The store query for the page's filters: days are the site's calendar days, a user is an id,
    or text matched against addresses and the sleepers' logins, names and e-mails."""
    user_ids: tuple[int, ...] = ()
    text = ""
    if a.user.isdecimal() and len(a.user) <= 18:
        user_ids = (int(a.user),)
    elif a.user:
        text = a.user
        if "@" in a.user:  # the learner's current address, when the letters went to an older one
            found = runtime.reader.user_by_email(a.user)
            user_ids = (found.id,) if found else ()
    planned_from, planned_to = day_range(a.planned_from, a.planned_to, zone)
    sent_from, sent_to = day_range(a.sent_from, a.sent_to, zone)
    return history.HistoryFilter(term_id=a.level, user_ids=user_ids, text=text, state=a.state or None,
                                 step=STEPS.get(a.step), planned_from=planned_from, planned_to=planned_to,
                                 sent_from=sent_from, sent_to=sent_to)


def _posted_ids(form: Mapping[str, Any]) -> tuple[list[int], str | None]:
    """Row ids of a resend form: the row's own button (``one``), else the ticked boxes (``id``)."""
    raw = [form["one"]] if form.get("one") else form.getlist("id")  # type: ignore[attr-defined]
    if not raw:
        return [], _problem("nothing_selected")
    if len(raw) > MAX_IDS:
        return [], _problem("too_many", max=MAX_IDS)
    ids: list[int] = []
    for value in raw:
        value = str(value).strip()
        if not value.isdecimal() or len(value) > 18 or int(value) <= 0:
            return [], _problem("bad_id", value=value[:40])
        ids.append(int(value))
    return list(dict.fromkeys(ids)), None


def _back(default: str) -> str:
    # Back to the filtered list the form was on; anything else (another site) gets the plain list.
    return safe_next((request.form.get("next") or "").rstrip("?")) or default


# --- history and failed sends ------------------------------------------------------------------------

@blueprint.get("/reminders")
@login_required
def history_page():
    runtime = _runtime()
    levels = runtime.reader.levels()
    display = _display(runtime, levels)
    args, problems = parse_history_args(request.args, {lv.term_id for lv in levels})
    query = history_filter(runtime, args, display.zone)
    with runtime.sessions() as session:
        page = history.history(session, query, after=args.after, limit=args.limit)
        counts = history.state_counts(session, query)
        unsubscribed = unsubscribed_ids(session, sorted({row.user_id for row in page.rows}))
    return render_template(
        "reminders_history.html", page=page, filters=args, problems=problems, fmt=display,
        levels=level_tree(levels), states=history.STATES, steps=list(STEPS), unsubscribed=unsubscribed,
        chips=_chips(counts, args.state, lambda s: args.url(state=s, after=None), display),
        unknown=any(r.state == State.UNKNOWN.value for r in page.rows),
        selectable=any(r.state in ACTIONABLE and r.step != ADMIN_STEP for r in page.rows),
        resolvable=any(r.state == State.UNKNOWN.value and r.step != ADMIN_STEP for r in page.rows),
        tab={State.FAILED.value: "failed", State.UNKNOWN.value: "unknown"}.get(args.state, "history"),
        first_url=args.url(after=None) if args.after else None,
        next_url=args.url(after=page.next_cursor) if page.next_cursor else None,
        reset_url=url_for(".history_page"),
    )


def _decide(action, back_state: State, done_text: LazyText, rest_text: LazyText, *, digests: bool = False):
    """Apply an admin decision (resend, mark delivered) to the posted letters or digests; report the result."""
    back = _back(url_for(".digests_page" if digests else ".history_page", state=back_state.value))
    ids, problem = _posted_ids(request.form)
    if problem:
        flash(problem, "error")
        return redirect(back)
    runtime = _runtime()
    if digests:
        targets, extra = ids, {"digest": True}
    else:
        with runtime.sessions() as session:
            # A digest entry follows its digest: it is acted on from the digests page, never alone.
            targets, extra = history.learner_letter_ids(session, ids), {}
    done = action(runtime, targets, actor=_actor(), **extra) if targets else 0
    flash(done_text.format(count=done), "ok" if done else "error")
    if done < len(ids):
        flash(rest_text.format(count=len(ids) - done), "warn")
    return redirect(back)


@blueprint.post("/reminders/resend")
@login_required
def resend_letters():
    return _decide(reminder_sender.resend, State.FAILED, lazy_gettext("Back in the queue: {count}. They go out with the next run, after "
                                                                      "the stop rules are checked again."),
                   lazy_gettext("{count} of the chosen rows were no longer failed or unknown, are places in a digest, or have a later "
                                "letter of their chain planned or sent (it would arrive out of order), and were left as they were."))


@blueprint.post("/reminders/mark-delivered")
@login_required
def mark_letters_delivered():
    return _decide(reminder_sender.mark_delivered, State.UNKNOWN, lazy_gettext("Marked as delivered: {count}."),
                   lazy_gettext("{count} of the chosen rows were not waiting for a decision (outcome unknown) and were left as they were."))


# --- one row ----------------------------------------------------------------------------------------------

def _row_page(model: type, row_id: int):
    runtime = _runtime()
    digest = model is ReminderDigest
    with runtime.sessions() as session:
        row = session.get(model, row_id)
        if row is None:
            abort(404, description=gettext("There is no reminder row {id}.", id=row_id))
        events = audit.trail(session, "reminder_digest" if digest else "reminder", str(row_id))
        blocked = (not digest and row.state in ACTIONABLE and row.step != ADMIN_STEP
                   and reminder_sender.later_letter_exists(session, row))
        entries = (list(session.scalars(sa.select(Reminder).where(Reminder.digest_id == row.id)
                                        .order_by(Reminder.user_id))) if digest else [])
    actionable = row.state in ACTIONABLE and (digest or row.step != ADMIN_STEP)
    return render_template(
        "reminders_row.html", row=row, digest=digest, events=events, entries=entries, fmt=_display(runtime),
        tab="digests" if digest else "history", problems=[], can_resend=actionable and not blocked,
        later_blocks=actionable and blocked, can_mark=actionable and row.state == State.UNKNOWN.value,
        resend_url=url_for(".resend_digests" if digest else ".resend_letters"),
        mark_url=url_for(".mark_digests_delivered" if digest else ".mark_letters_delivered"),
        back_url=url_for(".digests_page") if digest else url_for(".history_page"),
    )


@blueprint.get("/reminders/letters/<int:row_id>")
@login_required
def letter_page(row_id: int):
    return _row_page(Reminder, row_id)


@blueprint.get("/reminders/digests/<int:row_id>")
@login_required
def digest_page(row_id: int):
    return _row_page(ReminderDigest, row_id)


# --- digests --------------------------------------------------------------------------------------------

@blueprint.get("/reminders/digests")
@login_required
def digests_page():
    runtime = _runtime()
    levels = runtime.reader.levels()
    display = _display(runtime, levels)
    problems: list[str] = []
    level = _parse_level(request.args, {lv.term_id for lv in levels}, problems)
    state = _parse_state(request.args, problems)
    limit = _parse_limit(request.args, problems)
    raw_after = (request.args.get("after") or "").strip()
    after = int(raw_after) if raw_after.isdecimal() and len(raw_after) <= 18 else None
    if raw_after and after is None:
        problems.append(_problem("bad_cursor"))

    def url(**changes: Any) -> str:
        values = {"level": level or "", "state": state, "after": after or "", "limit": limit if limit != PER_PAGE else ""}
        values.update(changes)
        return url_for(".digests_page", **{k: v for k, v in values.items() if v})

    with runtime.sessions() as session:
        page = history.digests(session, term_id=level, state=state or None, after=after, limit=limit)
        counts = history.digest_state_counts(session, level)
    return render_template(
        "reminders_digests.html", page=page, problems=problems, fmt=display, levels=level_tree(levels),
        level=level, state=state, states=history.STATES, tab="digests",
        chips=_chips(counts, state, lambda s: url(state=s, after=""), display),
        unknown=any(r.state == State.UNKNOWN.value for r in page.rows),
        first_url=url(after="") if after else None,
        next_url=url(after=page.next_after) if page.next_after else None, reset_url=url_for(".digests_page"),
    )


@blueprint.post("/reminders/digests/resend")
@login_required
def resend_digests():
    return _decide(reminder_sender.resend, State.FAILED, lazy_gettext("Digests back in the queue: {count}."),
                   lazy_gettext("{count} of the chosen rows were no longer failed or unknown, are places in a digest, or have a later "
                                "letter of their chain planned or sent (it would arrive out of order), and were left as they were."),
                   digests=True)


@blueprint.post("/reminders/digests/mark-delivered")
@login_required
def mark_digests_delivered():
    return _decide(reminder_sender.mark_delivered, State.UNKNOWN, lazy_gettext("Marked as delivered: {count}."),
                   lazy_gettext("{count} of the chosen rows were not waiting for a decision "
                                "(outcome unknown) and were left as they were."), digests=True)


# --- unsubscribes -----------------------------------------------------------------------------------

@blueprint.get("/reminders/unsubscribes")
@login_required
def unsubscribes_page():
    runtime = _runtime()
    display = _display(runtime)
    problems: list[str] = []
    search = _parse_search(request.args, "q", problems)
    limit = _parse_limit(request.args, problems)
    raw_offset = (request.args.get("offset") or "").strip()
    offset = int(raw_offset) if raw_offset.isdecimal() and len(raw_offset) <= 9 else 0
    if raw_offset and not (raw_offset.isdecimal() and len(raw_offset) <= 9):
        problems.append(_problem("bad_cursor"))
    user_id = int(search) if search.isdecimal() and len(search) <= 18 else None
    with runtime.sessions() as session:
        page = history.unsubscribes(session, user_id=user_id, text="" if user_id else search, offset=offset,
                                    limit=limit)

    def url(**changes: Any) -> str:
        values = {"q": search, "offset": offset or "", "limit": limit if limit != PER_PAGE else ""}
        values.update(changes)
        return url_for(".unsubscribes_page", **{k: v for k, v in values.items() if v})

    return render_template(
        "reminders_unsubscribes.html", page=page, problems=problems, fmt=display, search=search, tab="unsubscribes",
        first_url=url(offset="") if offset else None,
        next_url=url(offset=page.next_offset) if page.next_offset is not None else None,
        reset_url=url_for(".unsubscribes_page"),
    )


@blueprint.post("/reminders/unsubscribes/<int:user_id>/resubscribe")
@login_required
def resubscribe_user(user_id: int):
    runtime = _runtime()
    back = _back(url_for(".unsubscribes_page"))
    if resubscribe(runtime.sessions, user_id, actor=_actor(), at=runtime.clock.now()):
        flash(gettext("User {id} gets reminders again.", id=user_id), "ok")
    else:
        flash(_problem("not_unsubscribed", id=user_id), "error")
    return redirect(back)


# --- the public unsubscribe page --------------------------------------------------------------------

def _page_confirmation(token: str) -> str:
    """Ties the page's form to the link: proves a POST came from our page rather than a mail client."""
    secret = str(current_app.secret_key or "").encode("utf-8")
    return hmac.new(secret, _CONFIRM_SALT + token.encode("utf-8"), hashlib.sha256).hexdigest()


def _public(template: str, status: int = 200, **context: Any) -> Response:
    response = make_response(render_template(template, **context), status)
    # The token in the URL is personal: keep it out of caches, search engines and Referer headers.
    response.headers["Cache-Control"] = "no-store"
    response.headers["Referrer-Policy"] = "no-referrer"
    response.headers["X-Robots-Tag"] = "noindex, nofollow"
    return response


def _learner_of(token: str) -> tuple[Links | None, int | None, Response | None]:
    """The links and the learner a token was made for, or the page that says why there is none."""
    runtime = _runtime()
    g.language = runtime.settings.reminders.language  # the learner's page speaks the letters' language
    try:
        links = reminder_sender.links_for(runtime)
    except LinkUnavailable:
        log.error("unsubscribe link followed, but web.public_url or web.secret_key is not set")
        return None, None, _public("reminders_unsubscribe.html", 503, state="unavailable")
    user_id = links.user_id(token)
    if user_id is None:
        return links, None, _public("reminders_unsubscribe.html", 404, state="invalid")
    return links, user_id, None


def _is_unsubscribed(user_id: int) -> bool:
    with _runtime().sessions() as session:
        return session.get(Unsubscribe, user_id) is not None


@blueprint.get("/unsubscribe/<token>")
def unsubscribe_page(token: str):
    _links, user_id, refusal = _learner_of(token)
    if refusal is not None:
        return refusal
    assert user_id is not None
    state = "done" if _is_unsubscribed(user_id) else "confirm"
    return _public("reminders_unsubscribe.html", state=state, token=token, confirm=_page_confirmation(token))


@blueprint.post("/unsubscribe/<token>")
@csrf_exempt  # mail clients POST the one-click body without cookies or our token; the signed URL authenticates
def unsubscribe_post(token: str):
    _links, user_id, refusal = _learner_of(token)
    if refusal is not None:
        return refusal
    assert user_id is not None
    runtime = _runtime()
    one_click = request.form.get(ONE_CLICK_BODY[0]) == ONE_CLICK_BODY[1]
    if not one_click and not hmac.compare_digest(str(request.form.get("confirm", "")).encode("utf-8"),
                                                 _page_confirmation(token).encode("utf-8")):
        return _public("reminders_unsubscribe.html", 400, state="bad_form", token=token,
                       confirm=_page_confirmation(token))
    user = runtime.reader.user(user_id)
    unsubscribe(runtime.sessions, user_id, email=user.email if user else "", source="one_click" if one_click else "link",
                actor="learner", at=runtime.clock.now())
    if one_click:
        response = make_response(gettext("You are unsubscribed: you will receive no more reminders."), 200)
        response.headers["Content-Type"] = "text/plain; charset=utf-8"
        response.headers["Cache-Control"] = "no-store"
        return response
    return _public("reminders_unsubscribe.html", state="done")


# --- letter preview and test send -----------------------------------------------------------------------

@dataclass
class Preview:
    """One letter rendered for one real learner, or why it could not be."""

    level: Level
    letter: str                       # "1".."3" | "admin"
    user_text: str                    # what the admin typed ("" = the default learner)
    user: WpUser | None = None
    expired_on: date | None = None
    day: date | None = None           # the day the letter is rendered for (its due day when known)
    chosen_by: str = ""               # sleeper | keys | admin: how the learner was found
    to: str = ""
    rendered: Rendered | None = None
    error: str = ""                   # nothing to show: the reason
    template_errors: dict[str, str] = field(default_factory=dict)
    warnings: list[str] = field(default_factory=list)


def _level_or_404(term_id: int) -> Level:
    level = _runtime().reader.level(term_id)
    if level is None:
        abort(404, description=gettext("There is no level {id} on the site.", id=term_id))
    return level


def _find_learner(runtime: Runtime, level: Level, user_text: str) -> tuple[WpUser | None, str, str]:
    """``(user, chosen_by, error)``: the learner typed, else a current sleeper, else any key holder."""
    reader = runtime.reader
    if user_text:
        if user_text.isdecimal() and len(user_text) <= 18:
            user = reader.user(int(user_text))
        elif "@" in user_text:
            user = reader.user_by_email(user_text)
        else:
            return None, "", _problem("bad_user", value=user_text[:60])
        return (user, "admin", "") if user else (None, "", _problem("no_user", value=user_text[:60]))
    with runtime.sessions() as session:
        entry = history.sample_sleeper(session, level.term_id)
    if entry is not None and (user := reader.user(entry.user_id)) is not None:
        return user, "sleeper", ""
    rows = reader.key_rows_for_level(level.term_id)
    try:
        first = next((row for row in rows if row.user_id), None)
    finally:
        rows.close()  # releases the streaming connection
    if first is not None and (user := reader.user(first.user_id)) is not None:
        return user, "keys", ""
    return None, "", _problem("no_learner")


def _expiry_of(runtime: Runtime, term_id: int, user: WpUser) -> date | None:
    with runtime.sessions() as session:
        entry = history.sleeper_entry(session, term_id, user.id)
    if entry is not None:
        return entry.expired_on
    try:  # not a sleeper (yet): the end of their access all the same, as the monitor explains it
        return MonitorService(runtime).explain(user.id, term_id).verdict.expired_on
    except (UnknownUser, UnknownLevel):
        return None


def _letter_fields(letter: str) -> tuple[str, ...]:
    if letter == "admin":
        return ("admin_subject", "admin_body", "admin_email")
    return (f"letters.{letter}.subject", f"letters.{letter}.body", "renewal_url")


def build_preview(runtime: Runtime, level: Level, settings: LevelSettings, letter: str, user_text: str) -> Preview:
    """Render ``letter`` of ``settings`` for a real learner, with the sender's context and renderer."""
    preview = Preview(level=level, letter=letter, user_text=user_text)
    preview.template_errors = {name: say(message) for name, message in template_errors(settings).items()}
    user, preview.chosen_by, preview.error = _find_learner(runtime, level, user_text)
    if user is None:
        return preview
    preview.user = user
    today = runtime.clock.today_utc()
    preview.expired_on = _expiry_of(runtime, level.term_id, user)
    if preview.expired_on is None:
        preview.warnings.append(gettext("This user has no ended access to the level: today is used as the end."))
    expired_on = preview.expired_on or today
    own_errors = [preview.template_errors[name] for name in _letter_fields(letter) if name in preview.template_errors]
    if own_errors:
        preview.error = own_errors[0]
        return preview
    try:
        links: Links | None = reminder_sender.links_for(runtime)
    except LinkUnavailable:
        links = None
        preview.warnings.append(gettext("web.public_url or web.secret_key is not set: the unsubscribe link is empty and real reminders are "
                                        "not sent."))
    context = LetterContext(runtime, links)
    try:
        if letter == "admin":
            if not (settings.admin_subject.strip() or settings.admin_body.strip()):
                preview.error = gettext("This letter is off: it has neither subject nor body.")
                return preview
            preview.day, preview.to = today, settings.admin_email
            learners = [context.learner(user, level.term_id, expired_on, today, step=ADMIN_STEP)]
            preview.rendered = render_digest(settings.admin_subject, settings.admin_body,
                                             context.digest(level.term_id, today, learners))
        else:
            step = int(letter)
            source = settings.letters[step - 1]
            if not (source.subject.strip() or source.body.strip()):
                preview.error = gettext("This letter is off: it has neither subject nor body.")
                return preview
            # As the learner will get it: on the letter's due day, with that day's "days since expiry".
            preview.day = expired_on + timedelta(days=source.days) if source.days is not None else today
            preview.to = user.email
            variables = context.learner(user, level.term_id, expired_on, preview.day, step=step,
                                        renewal_template=settings.renewal_url)
            footer_html, footer_text = context.footer(user.id)
            preview.rendered = render_learner_letter(source.subject, source.body, variables,
                                                     footer_html=footer_html, footer_text=footer_text)
    except TemplateError as exc:
        preview.error = say(template_error(exc))
    if user.blocked:
        preview.warnings.append(gettext("This account is blocked in MemberLux: it never gets reminders."))
    return preview


def _draft_serializer() -> URLSafeTimedSerializer:
    return URLSafeTimedSerializer(str(current_app.secret_key), salt=_DRAFT_SALT)


def _draft_values(letter: str, settings: LevelSettings) -> dict[str, Any]:
    """Only what the chosen letter needs from an unsaved form, so the frame's URL stays short."""
    if letter == "admin":
        return {"admin_subject": settings.admin_subject, "admin_body": settings.admin_body,
                "admin_email": settings.admin_email}
    source = settings.letters[int(letter) - 1]
    return {"letter": [source.days, source.subject, source.body], "renewal_url": settings.renewal_url}


def _with_draft(saved: LevelSettings, letter: str, values: Mapping[str, Any]) -> LevelSettings:
    if letter == "admin":
        return replace(saved, admin_subject=str(values.get("admin_subject", "")),
                       admin_body=str(values.get("admin_body", "")), admin_email=str(values.get("admin_email", "")))
    days, subject, body = values.get("letter") or (None, "", "")
    letters = list(saved.letters)
    letters[int(letter) - 1] = Letter(days=days if isinstance(days, int) else None, subject=str(subject), body=str(body))
    return replace(saved, letters=tuple(letters), renewal_url=str(values.get("renewal_url", "")))


def _parse_letter(raw: str | None) -> tuple[str, str | None]:
    letter = (raw or "1").strip()
    if letter not in LETTER_CHOICES:
        return "1", _problem("bad_letter", value=letter[:20])
    return letter, None


def _is_draft(form: Mapping[str, str]) -> bool:
    # The settings form (and a preview page carrying its values) posts the letter fields.
    return request.method == "POST" and any(name in form for name in ("letters.1.subject", "admin_subject"))


def _preview_settings(term_id: int) -> tuple[LevelSettings, bool, dict[str, Any] | None]:
    """The settings to render: the posted form's (unsaved) values, else the saved ones."""
    if _is_draft(request.form):
        settings, _not_numbers, raw = parse_settings_form(term_id, request.form)
        return settings, True, raw
    return MonitorSettings(_runtime()).effective(term_id), False, None


def _admin_address(runtime: Runtime) -> str:
    admin = current_admin()
    user = runtime.reader.user(admin.user_id) if admin else None
    return user.email if user else ""


def _render_preview(level: Level, preview: Preview, settings: LevelSettings, *, draft: dict[str, Any] | None,
                    problems: list[str], notice: str = "", to: str | None = None, status: int = 200):
    runtime = _runtime()
    frame_src, frame_post = None, False
    if preview.rendered is not None:
        params = {"term_id": level.term_id, "letter": preview.letter, "user": str(preview.user.id) if preview.user else ""}
        if draft is None:
            frame_src = url_for(".preview_html", **params)
        else:
            token = _draft_serializer().dumps(_draft_values(preview.letter, settings))
            if len(token) <= MAX_DRAFT_TOKEN:
                frame_src = url_for(".preview_html", draft=token, **params)
            else:
                frame_post = True  # too long for a URL: the admin posts it into the frame with a button
    hidden = {} if draft is None else {name: ("1" if value is True else "" if value is None or value is False else value)
                                       for name, value in draft.items()}
    if draft is not None and not draft.get("enabled"):
        hidden.pop("enabled", None)
    response = make_response(render_template(
        "reminders_preview.html", level=level, p=preview, fmt=_display(runtime), letters=LETTER_CHOICES,
        problems=problems, notice=notice, draft=hidden if draft is not None else None, frame_src=frame_src,
        frame_post=frame_post, to=_admin_address(runtime) if to is None else to,
        settings_url=url_for("monitor.level_settings", term_id=level.term_id),
        mail_enabled=runtime.settings.smtp.delivers,
    ), status)
    response.headers["Cache-Control"] = "no-store"  # a learner's personal data
    return response


@blueprint.route("/reminders/levels/<int:term_id>/preview", methods=["GET", "POST"])
@login_required
def preview(term_id: int):
    level = _level_or_404(term_id)
    values = request.form if request.method == "POST" else request.args
    letter, problem = _parse_letter(values.get("letter"))
    user_text = (values.get("user") or "").strip()[:MAX_SEARCH]
    settings, _, draft = _preview_settings(term_id)
    result = build_preview(_runtime(), level, settings, letter, user_text)
    problems = [problem] if problem else []
    status = 422 if problem or (result.error and not result.rendered) else 200
    return _render_preview(level, result, settings, draft=draft, problems=problems, status=status)


def _sandboxed(body: str, status: int = 200) -> Response:
    response = make_response(body, status)
    response.headers["Content-Type"] = "text/html; charset=utf-8"
    response.headers["Content-Security-Policy"] = PREVIEW_CSP
    response.headers["X-Frame-Options"] = "SAMEORIGIN"  # only our preview page may frame it
    response.headers["Cache-Control"] = "no-store"
    response.headers["Referrer-Policy"] = "no-referrer"
    return response


@blueprint.route("/reminders/levels/<int:term_id>/preview/html", methods=["GET", "POST"])
@login_required
def preview_html(term_id: int):
    """The HTML part alone, for the preview's frame; the letter's markup never runs in our pages."""
    level = _level_or_404(term_id)
    values = request.form if request.method == "POST" else request.args
    letter, problem = _parse_letter(values.get("letter"))
    if problem:
        return _sandboxed(f"<p>{escape(problem)}</p>", 422)
    settings, _, _draft = _preview_settings(term_id)
    token = (request.args.get("draft") or "").strip()
    if token:
        try:
            settings = _with_draft(settings, letter, _draft_serializer().loads(token, max_age=DRAFT_MAX_AGE))
        except (BadSignature, TypeError, ValueError):
            return _sandboxed(f"<p>{escape(_problem('bad_draft'))}</p>", 400)
    result = build_preview(_runtime(), level, settings, letter, (values.get("user") or "").strip()[:MAX_SEARCH])
    if result.rendered is None:
        return _sandboxed(f"<p>{escape(result.error)}</p>", 422)
    return _sandboxed(result.rendered.html)


@blueprint.post("/reminders/levels/<int:term_id>/test")
@login_required
def send_test(term_id: int):
    """Send the previewed letter to an address of the admin's choice; the ledger is not touched."""
    runtime = _runtime()
    level = _level_or_404(term_id)
    letter, problem = _parse_letter(request.form.get("letter"))
    user_text = (request.form.get("user") or "").strip()[:MAX_SEARCH]
    to = (request.form.get("to") or "").strip()[:200]
    settings, _, draft = _preview_settings(term_id)
    result = build_preview(runtime, level, settings, letter, user_text)

    def answer(message: str, status: int) -> Response:
        return _render_preview(level, result, settings, draft=draft, problems=[message] if status >= 400 else [],
                               notice=message if status < 400 else "", to=to, status=status)

    if problem:
        return answer(problem, 422)
    if not EMAIL_PATTERN.match(to):
        return answer(_problem("bad_address", value=to[:60]), 422)
    if result.rendered is None:
        return answer(_problem("nothing_to_send", reason=result.error), 422)
    mailer = Mailer(runtime.settings.smtp)
    headers = {"Auto-Submitted": "auto-generated"}
    if runtime.settings.reminders.reply_to:
        headers["Reply-To"] = runtime.settings.reminders.reply_to
    # No List-Unsubscribe header: a click on it in the admin's mail client would unsubscribe the learner.
    mail = Mail(to=to, subject=f"[TEST] {result.rendered.subject}", html=result.rendered.html,
                text=result.rendered.text, headers=headers, message_id=mailer.new_message_id())
    try:
        message_id = mailer.send(mail)
    except MailDisabled:
        return answer(_problem("mail_disabled"), 503)
    except MailOutcomeUnknown as exc:
        log.warning("test reminder for level %s to %s: outcome unknown: %s", term_id, to, exc)
        return answer(_problem("mail_unknown", message_id=exc.message_id or mail.message_id), 502)
    except MailError as exc:
        log.warning("test reminder for level %s to %s failed: %s", term_id, to, exc)
        return answer(_problem("mail_failed", error=str(exc)[:300]), 502)
    now = runtime.clock.now()
    with unit_of_work(runtime.sessions) as session:
        audit.record(session, subject_type="monitor_level", subject_id=str(term_id), action="reminders.test_sent",
                     at=now, actor=_actor(), source_ip=(request.remote_addr or "")[:45] or None, to=to,
                     letter=letter, user_id=result.user.id if result.user else None, draft=draft is not None,
                     message_id=message_id)
    log.info("test reminder (letter %s, level %s) sent to %s by %s", letter, term_id, to, _actor())
    return answer(gettext("Test letter sent to {to} (Message-ID {message_id}).", to=to, message_id=message_id), 200)


__all__ = ["blueprint", "build_preview", "history_filter", "parse_history_args", "Display", "Preview"]
