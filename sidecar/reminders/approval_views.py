"""The approval pages: which levels may send reminders, what each level that may not would send, and the
buttons that approve and revoke (:mod:`sidecar.reminders.approval` decides and audits).

A level's list is the one its last run kept; its letters' subjects are rendered here, for the learners
of the page shown, with the sender's own context and renderer, so the list reads as the letters would.
"""

from __future__ import annotations

from dataclasses import dataclass
from datetime import date, datetime
from typing import Any

from flask import Blueprint, abort, flash, redirect, render_template, request, url_for

from sidecar.bootstrap import Runtime
from sidecar.domain.reminders import ADMIN_STEP
from sidecar.mail.templates import TemplateError
from sidecar.memberlux.reader import Level
from sidecar.monitor.settings import LevelSettings, MonitorSettings, template_error
from sidecar.reminders import approval
from sidecar.reminders import sender as reminder_sender
from sidecar.reminders.context import LetterContext
from sidecar.reminders.letters import render_subject
from sidecar.reminders.unsubscribe import LinkUnavailable
from sidecar.reminders.views import Display
from sidecar.status import site_timezone
from sidecar.store.reminder_models import AwaitingReminder
from sidecar.web import current_runtime
from sidecar.web.auth import login_required
from sidecar.web.i18n import gettext, lazy_gettext, ngettext
from sidecar.web.messages import say
from sidecar.web.pages import actor

blueprint = Blueprint("reminder_approvals", __name__)

PER_PAGE = 50
MAX_PER_PAGE = 200


@dataclass(frozen=True)
class LevelRow:
    level: Level
    settings: LevelSettings
    state: approval.LevelApproval

    @property
    def sends(self) -> bool:
        return approval.sends_reminders(self.settings)


@dataclass(frozen=True)
class ListRow:
    """One letter of the awaiting list as the page shows it."""

    item: AwaitingReminder
    to: str
    subject: str
    problem: str = ""        # why the subject could not be shown


def _display(runtime: Runtime, levels: list[Level]) -> Display:
    zone, _source = site_timezone(runtime)
    return Display(zone, levels, runtime.clock.today_utc())


def _run_zone(runtime: Runtime) -> str:
    """The zone of the worker's daily run, by name: ``schedule.timezone``, or the site's (``site``)."""
    name = str(runtime.settings.schedule.timezone)
    return str(site_timezone(runtime)[0]) if name == "site" else name


def _int_arg(name: str, default: int, lowest: int, highest: int, problems: list[str]) -> int:
    raw = (request.args.get(name) or "").strip()
    if not raw:
        return default
    if raw.isdecimal() and len(raw) <= 9 and lowest <= int(raw) <= highest:
        return int(raw)
    problems.append(gettext("{field} = «{value}» is not a usable number; the default is shown", field=name, value=raw[:40]))
    return default


@blueprint.get("/reminders/approvals")
@login_required
def approvals_page():
    runtime = current_runtime()
    levels = runtime.reader.levels()
    settings = MonitorSettings(runtime).all_levels()
    with runtime.sessions() as session:
        states = approval.statuses(session)
    rows = [LevelRow(level, settings[level.term_id], states.get(level.term_id, approval.LevelApproval(level.term_id)))
            for level in levels if level.term_id in settings]
    shown = [row for row in rows if row.sends or row.state.approved]
    return render_template("reminders_approvals.html", rows=shown, quiet=[row for row in rows if row not in shown],
                           fmt=_display(runtime, levels), tab="approvals", problems=[])


def _subjects(runtime: Runtime, level: LevelSettings, items: list[AwaitingReminder], day: date,
              digest: list[AwaitingReminder]) -> list[ListRow]:
    """Each letter's recipient and subject, rendered as the sender would render it on ``day``."""
    try:
        links = reminder_sender.links_for(runtime)
    except LinkUnavailable:
        links = None
    context = LetterContext(runtime, links)
    users = runtime.reader.users({i.user_id for i in items} | {i.user_id for i in digest})
    digest_subject, digest_problem = "", ""
    if any(i.step == ADMIN_STEP for i in items):
        learners = [context.learner(users[i.user_id], i.term_id, i.expired_on, day, step=ADMIN_STEP)
                    for i in digest if i.user_id in users]
        try:
            digest_subject = render_subject(level.admin_subject, context.digest(level.term_id, day, learners))
        except TemplateError as exc:
            digest_problem = say(template_error(exc))
    rows = []
    for item in items:
        if item.step == ADMIN_STEP:
            rows.append(ListRow(item, level.admin_email, digest_subject, digest_problem))
            continue
        user = users.get(item.user_id)
        if user is None:
            rows.append(ListRow(item, item.email, "", gettext("the WordPress user is gone")))
            continue
        variables = context.learner(user, item.term_id, item.expired_on, day, step=item.step,
                                    renewal_template=level.renewal_url)
        try:
            rows.append(ListRow(item, user.email, render_subject(level.letters[item.step - 1].subject, variables)))
        except TemplateError as exc:
            rows.append(ListRow(item, user.email, "", say(template_error(exc))))
    return rows


@blueprint.get("/reminders/approvals/<int:term_id>")
@login_required
def level_page(term_id: int):
    runtime = current_runtime()
    level = runtime.reader.level(term_id)
    if level is None:
        abort(404, description=gettext("There is no level {id} on the site.", id=term_id))
    problems: list[str] = []
    limit = _int_arg("limit", PER_PAGE, 1, MAX_PER_PAGE, problems)
    offset = _int_arg("offset", 0, 0, 10**9, problems)
    settings = MonitorSettings(runtime).effective(term_id)
    with runtime.sessions() as session:
        state = approval.status(session, term_id)
        items, total = approval.awaiting(session, term_id, offset=offset, limit=limit)
        digest = approval.awaiting_digest(session, term_id) if any(i.step == ADMIN_STEP for i in items) else []
    day = state.listed_at.date() if state.listed_at else runtime.clock.today_utc()
    rows = _subjects(runtime, settings, items, day, digest) if items and not state.approved else []

    def page_url(start: int) -> str:
        values: dict[str, Any] = {"offset": start or None, "limit": limit if limit != PER_PAGE else None}
        return url_for(".level_page", term_id=term_id, **{k: v for k, v in values.items() if v is not None})

    return render_template(
        "reminders_approval.html", level=level, settings=settings, state=state, rows=rows, total=total,
        sends=approval.sends_reminders(settings), fmt=_display(runtime, runtime.reader.levels()), tab="approvals",
        problems=problems, offset=offset, first_url=page_url(0) if offset else None,
        next_url=page_url(offset + limit) if offset + limit < total else None,
        reminders_at=runtime.settings.schedule.reminders_at, run_zone=_run_zone(runtime),
    )


def _level_url(term_id: int) -> str:
    return url_for(".level_page", term_id=term_id)


_REFUSALS = {
    "unknown_level": lazy_gettext("There is no access level {level}."),
    "no_letters": lazy_gettext("Level {level} has no letter set: there is nothing to approve. Set its letters first."),
    "monitoring_off": lazy_gettext("Monitoring is off for level {level}, so it sends no reminders: switch it on first."),
    "list_changed": lazy_gettext("The list of level {level} changed since you opened it (a newer run made another): review it again before "
                                 "approving."),
}


def _refusal(exc: approval.ApprovalRefused) -> str:
    return _REFUSALS[exc.code].format(**exc.params)


@blueprint.post("/reminders/approvals/<int:term_id>/approve")
@login_required
def approve(term_id: int):
    """Approve the level after reviewing the list on its page; the form names that list (its moment and
    length), so a list replaced by a newer run in between is not approved unseen."""
    runtime = current_runtime()
    raw_at, raw_letters = (request.form.get("listed_at") or "").strip(), (request.form.get("letters") or "").strip()
    try:
        listed_at = datetime.fromisoformat(raw_at)
        if listed_at.tzinfo is None or not raw_letters.isdecimal() or len(raw_letters) > 9:
            raise ValueError(raw_at)
    except ValueError:
        flash(gettext("The approval must name the list it approves; open the level's page again and approve from there."), "error")
        return redirect(_level_url(term_id))
    review = approval.Review(letters=int(raw_letters), made_at=listed_at, stored=True)
    try:
        state, changed = approval.approve(runtime, term_id, actor=actor(), source="web", review=review,
                                          source_ip=(request.remote_addr or "")[:45] or None)
    except approval.ApprovalRefused as exc:
        flash(_refusal(exc), "error")
        return redirect(_level_url(term_id) if exc.code != "unknown_level" else url_for(".approvals_page"))
    if changed:
        flash(ngettext("Approved after reviewing {n} letter: the level's letters go out from the next run.",
                       "Approved after reviewing {n} letters: the level's letters go out from the next run.",
                       review.letters), "ok")
    else:
        flash(gettext("This level was already approved (by {actor}); nothing changed.", actor=state.approved_by), "warn")
    return redirect(_level_url(term_id))


@blueprint.post("/reminders/approvals/<int:term_id>/revoke")
@login_required
def revoke(term_id: int):
    runtime = current_runtime()
    revoked, skipped = approval.revoke(runtime, term_id, actor=actor(), source="web",
                                       source_ip=(request.remote_addr or "")[:45] or None)
    if revoked:
        flash(ngettext("Approval revoked: nothing more of this level is sent ({n} planned letter skipped).",
                       "Approval revoked: nothing more of this level is sent ({n} planned letters skipped).", skipped), "ok")
    else:
        flash(gettext("This level was not approved; nothing changed."), "warn")
    if runtime.reader.level(term_id) is None:
        return redirect(url_for(".approvals_page"))
    return redirect(_level_url(term_id))


__all__ = ["blueprint"]
