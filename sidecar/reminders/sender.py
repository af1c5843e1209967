"""Sending planned reminders and digests: at most once, with retries, re-checked right before sending.

**The guarantee is at-most-once per (user, level, X, step).** Duplicates annoy learners and cannot
be taken back; a letter whose fate is unknown is visible in the history, and an administrator decides.

How:

1. *Claim.* ``UPDATE … SET state='sending', claimed_by=<this claim>, claimed_until=…, message_id=…
   WHERE id=? AND state='planned'`` — a conditional update, atomic in every database we support; of
   two senders (threads, processes, hosts) exactly one sees a row count of 1. ``claimed_by`` names
   this claim alone (host, process and a random token), and the Message-ID is stored *before* the
   SMTP transaction opens.
2. *Re-check.* The level must still be approved (:mod:`sidecar.reminders.approval`), and the sleeper
   rule is evaluated live for this learner and level (renewed, manual certificate, blocked,
   unsubscribed, monitoring off, letter emptied → ``skipped`` with the reason).
3. *Mark, then send.* Right before the DATA phase (the server accepted sender and recipient) the
   sender commits ``data_started_at`` — only if it still holds the claim; otherwise it sends nothing.
   The SMTP server accepts the message with its reply to the end of DATA; that is the commit point
   we cannot share a transaction with.
4. *Record*, with an UPDATE conditioned on the claim (``claimed_by`` and ``state = 'sending'``): a
   sender whose claim was taken over (its lease ran out) overwrites nothing; it logs a warning and
   records ``reminder.claim_lost`` with what it saw.
5. *A sender that stopped* leaves the row ``sending``. Once its lease has run out,
   :meth:`ReminderSender.recover_interrupted` puts it back to ``planned`` when the mark is missing
   (the server never saw the message) and to ``unknown`` when it is there (it may have been
   delivered). The same ``unknown`` is recorded when the connection is lost after the whole message
   was sent and before the server's reply (:class:`MailOutcomeUnknown`).

``unknown`` is never sent again automatically: an administrator marks it delivered
(:func:`mark_delivered`) or sends it again (:func:`resend`). Transient failures (server down, 4xx)
go back to ``planned`` with a doubling delay until ``reminders.max_attempts``; permanent ones (5xx,
bad address, template error) are ``failed``.
"""

from __future__ import annotations

import logging
import time
from collections.abc import Sequence
from dataclasses import dataclass, field
from datetime import datetime, timedelta
from typing import Any

import sqlalchemy as sa

from sidecar.bootstrap import Runtime
from sidecar.domain.reminders import ADMIN_STEP, SkipReason, State, stop_reason, too_late
from sidecar.logs import mask_emails
from sidecar.mail.claimed import ClaimLost, owned_update, record_lost_claim, take_stale, unknown_advice
from sidecar.mail.mailer import (
    Mail,
    MailDisabled,
    Mailer,
    MailOutcomeUnknown,
    PermanentMailError,
    TransientMailError,
)
from sidecar.mail.templates import TemplateError
from sidecar.monitor.service import MonitorService, UnknownLevel, UnknownUser
from sidecar.monitor.settings import EMAIL_PATTERN, LevelSettings, MonitorSettings
from sidecar.reminders.approval import is_approved
from sidecar.reminders.context import LetterContext
from sidecar.reminders.letters import render_digest, render_learner_letter
from sidecar.reminders.unsubscribe import LinkUnavailable, Links
from sidecar.store import audit
from sidecar.store.leases import claim_holder
from sidecar.webhooks.events import emit
from sidecar.store.reminder_models import Reminder, ReminderDigest, Unsubscribe
from sidecar.store.db import unit_of_work

log = logging.getLogger(__name__)


def links_for(runtime: Runtime) -> Links:
    web = runtime.settings.web
    return Links(web.public_url, web.secret_key.reveal() if web.secret_key else "")


@dataclass
class SendReport:
    sent: int = 0
    skipped: dict[str, int] = field(default_factory=dict)
    retrying: int = 0
    failed: int = 0
    unknown: int = 0           # the server may have the message: an administrator decides
    interrupted: int = 0       # claims left behind by a sender that stopped (planned again or unknown)
    lost_claims: int = 0       # rows another sender claimed first, or took over from this one
    stopped: str = ""          # why sending stopped early (e.g. e-mail disabled)

    def skip(self, reason: str) -> None:
        self.skipped[reason] = self.skipped.get(reason, 0) + 1


class _Outcome(Exception):
    """Ends one delivery early with a final state."""

    def __init__(self, state: State, reason: str, error: str = "") -> None:
        super().__init__(reason)
        self.state, self.reason, self.error = state, reason, error


class ReminderSender:
    def __init__(self, runtime: Runtime, mailer: Mailer | None = None, *, links: Links | None = None,
                 monitor: MonitorService | None = None) -> None:
        self.runtime = runtime
        self.settings = runtime.settings.reminders
        self.mailer = mailer or Mailer(runtime.settings.smtp)
        self.monitor = monitor or MonitorService(runtime)  # one for all letters of a run
        self.links = links
        self._levels: dict[int, LevelSettings] = {}
        self._context: LetterContext | None = None

    # --- public -------------------------------------------------------------------------------------

    def recover_interrupted(self) -> int:
        """``sending`` rows whose lease ran out: their sender stopped (or lost its lease) mid-delivery.

        Without the pre-DATA mark the message never reached the server: ``planned`` again, due now.
        With it the server may have it: ``unknown``, never sent again automatically.
        """
        now = self.runtime.clock.now()
        total = 0
        for model in (Reminder, ReminderDigest):
            with self.runtime.sessions() as session:
                stale = session.execute(sa.select(model.id, model.claimed_by, model.data_started_at, model.message_id)
                                        .where(model.state == State.SENDING.value, model.claimed_until < now)).all()
            for row_id, holder, data_started_at, message_id in stale:
                total += self._recover_one(model, row_id, holder, data_started_at, message_id, now)
        if total:
            log.warning("%d reminder deliveries were interrupted earlier: planned again or marked unknown", total)
        return total

    def _recover_one(self, model: type, row_id: int, holder: str | None, data_started_at: datetime | None,
                     message_id: str | None, now: datetime) -> int:
        if data_started_at is None:
            state, values = State.PLANNED, {
                "state": State.PLANNED.value, "claimed_by": None, "next_attempt_at": None,
                "last_error": "the sender stopped before handing the message to the mail server; planned again"}
        else:
            state, values = State.UNKNOWN, {
                "state": State.UNKNOWN.value, "reason": "interrupted",
                "last_error": f"the sender stopped during delivery; {unknown_advice(message_id)}"[:500]}
        with unit_of_work(self.runtime.sessions) as session:
            if not take_stale(session, model, row_id, holder, now, **values):
                return 0
            if model is ReminderDigest:
                self._mark_entries(session, row_id, state, now)
            audit.record(session, subject_type=_subject_type(model), subject_id=str(row_id),
                         action="reminder.unknown" if state is State.UNKNOWN else "reminder.requeued", at=now,
                         actor="reminders", reason="interrupted", message_id=message_id, claimed_by=holder)
        return 1

    def send_due(self, *, limit: int | None = None, time_budget: float | None = None) -> SendReport:
        """Send what is due; ``time_budget`` (seconds) stops between letters, leaving the rest planned."""
        report = SendReport()
        started = time.monotonic()
        report.interrupted = self.recover_interrupted()
        if not self.mailer.enabled:
            report.stopped = "e-mail is disabled (smtp.host and smtp.pickup_dir are empty)"
            return report
        if self.links is None:
            try:
                self.links = links_for(self.runtime)
            except LinkUnavailable as exc:
                report.stopped = str(exc)
                log.error("reminders not sent: %s", exc)
                return report
        for model in (Reminder, ReminderDigest):
            for row_id in self._due_ids(model, limit):
                if time_budget is not None and time.monotonic() - started > time_budget:
                    report.stopped = f"time budget of {time_budget:.0f} s used; the rest goes out with the next runs"
                    return report
                if not self._deliver(model, row_id, report):
                    return report
        return report

    # --- work selection -----------------------------------------------------------------------------

    def _due_ids(self, model: type, limit: int | None) -> list[int]:
        now = self.runtime.clock.now()
        conditions = [model.state == State.PLANNED.value,
                      sa.or_(model.next_attempt_at.is_(None), model.next_attempt_at <= now)]
        if model is Reminder:
            conditions.append(Reminder.step != ADMIN_STEP)  # digest entries go with their digest
        stmt = sa.select(model.id).where(*conditions).order_by(model.due_on, model.id)
        if limit:
            stmt = stmt.limit(limit)
        with self.runtime.sessions() as session:
            return list(session.scalars(stmt))

    def _claim(self, model: type, row_id: int) -> str | None:
        """Take the row for this sender; returns the claim's holder name, or None when someone else has it."""
        now = self.runtime.clock.now()
        holder = claim_holder()
        with unit_of_work(self.runtime.sessions) as session:
            claimed = session.execute(
                sa.update(model)
                .where(model.id == row_id, model.state == State.PLANNED.value)
                .values(state=State.SENDING.value, claimed_by=holder, message_id=self.mailer.new_message_id(),
                        claimed_until=now + timedelta(seconds=self.settings.sending_lease_seconds),
                        data_started_at=None, attempts=model.attempts + 1, updated_at=now)
                .execution_options(synchronize_session=False)
            ).rowcount
        return holder if claimed == 1 else None

    # --- one delivery -------------------------------------------------------------------------------

    def _deliver(self, model: type, row_id: int, report: SendReport) -> bool:
        """Claim, check, render, mark, send, record; False stops the run (e-mail unusable for everyone)."""
        holder = self._claim(model, row_id)
        if holder is None:
            report.lost_claims += 1
            return True
        with self.runtime.sessions() as session:
            row = session.get(model, row_id)
            session.expunge(row)
        if row.claimed_by != holder:  # taken over between the claim and this read
            report.lost_claims += 1
            return True
        try:
            mail = self._letter(row, row.message_id) if model is Reminder else self._digest(row, row.message_id)
            self.mailer.send(mail, before_data=lambda: self._handing_over(model, row))
        except _Outcome as outcome:
            if self._finish(model, row, outcome.state, outcome.reason, outcome.error):
                if outcome.state is State.SKIPPED:
                    report.skip(outcome.reason)
                else:
                    report.failed += 1
            else:
                report.lost_claims += 1
            return True
        except ClaimLost:
            report.lost_claims += 1
            return True
        except MailDisabled as exc:
            self._release(model, row, str(exc))
            report.stopped = str(exc)
            return False
        except MailOutcomeUnknown as exc:
            owned = self._finish(model, row, State.UNKNOWN, "no_reply", str(exc), note=unknown_advice(row.message_id))
            report.unknown += owned
            report.lost_claims += not owned
            return True
        except TransientMailError as exc:
            if row.attempts >= self.settings.max_attempts:  # the claim counted this attempt already
                owned = self._finish(model, row, State.FAILED, "smtp_transient",
                                     f"gave up after {row.attempts} attempts: {exc}")
                report.failed += owned
            else:
                owned = self._retry_later(model, row, str(exc))
                report.retrying += owned
            report.lost_claims += not owned
            return True
        except PermanentMailError as exc:
            owned = self._finish(model, row, State.FAILED, "smtp_permanent", str(exc))
            report.failed += owned
            report.lost_claims += not owned
            return True
        owned = self._finish(model, row, State.SENT, "", "", to=mail.to, subject=mail.subject)
        report.sent += owned
        report.lost_claims += not owned
        return True

    def _handing_over(self, model: type, row: Any) -> None:
        """The pre-DATA mark: from now on the message may reach the learner. Only while the claim is ours."""
        now = self.runtime.clock.now()
        with unit_of_work(self.runtime.sessions) as session:
            owned = self._owned_update(session, model, row, data_started_at=now, updated_at=now,
                                       claimed_until=now + timedelta(seconds=self.settings.sending_lease_seconds))
            if not owned:
                self._record_lost_claim(session, model, row, now, stage="before_data")
        if not owned:
            log.warning("reminder %s %s: claim %s lost before the DATA phase; not sent", _subject_type(model), row.id,
                        row.claimed_by)
            raise ClaimLost()
        row.data_started_at = now

    def _level(self, term_id: int) -> LevelSettings:
        if term_id not in self._levels:
            self._levels[term_id] = MonitorSettings(self.runtime).effective(term_id)
        return self._levels[term_id]

    def _letter_context(self) -> LetterContext:
        if self._context is None:
            self._context = LetterContext(self.runtime, self.links)
        return self._context

    def _approved(self, term_id: int) -> None:
        """Checked for every letter and digest, so a revocation stops the very next one."""
        with self.runtime.sessions() as session:
            if not is_approved(session, term_id):
                raise _Outcome(State.SKIPPED, SkipReason.NOT_APPROVED.value)

    def _letter(self, row: Reminder, message_id: str) -> Mail:
        self._approved(row.term_id)
        level = self._level(row.term_id)
        letter = level.letters[row.step - 1]
        today = self.runtime.clock.today_utc()
        if too_late(row.due_on, today, self.settings.catch_up_days):
            raise _Outcome(State.SKIPPED, SkipReason.TOO_LATE.value)
        try:
            explanation = self.monitor.explain(row.user_id, row.term_id, today)
        except UnknownUser:
            raise _Outcome(State.SKIPPED, SkipReason.USER_DELETED.value) from None
        except UnknownLevel:
            raise _Outcome(State.SKIPPED, SkipReason.MONITORING_OFF.value) from None
        user = explanation.user
        with self.runtime.sessions() as session:
            unsubscribed = session.get(Unsubscribe, row.user_id) is not None
        reason = stop_reason(explanation.verdict, row.expired_on, unsubscribed=unsubscribed,
                             monitoring_on=level.enabled, letter_on=letter.configured,
                             has_email=bool(EMAIL_PATTERN.match(user.email or "")),
                             memberlux_unsubscribed=bool(self.runtime.reader.mailing_unsubscribed_ids([row.user_id])))
        if reason is not None:
            raise _Outcome(State.SKIPPED, reason.value)
        context = self._letter_context()
        variables = context.learner(user, row.term_id, row.expired_on, today, step=row.step,
                                    renewal_template=level.renewal_url)
        footer_html, footer_text = context.footer(user.id)
        try:
            rendered = render_learner_letter(letter.subject, letter.body, variables, footer_html=footer_html,
                                             footer_text=footer_text)
        except TemplateError as exc:
            raise _Outcome(State.FAILED, "template", str(exc)) from None
        assert self.links is not None
        return Mail(to=user.email, subject=rendered.subject, html=rendered.html, text=rendered.text,
                    headers=self._headers(self.links.headers(user.id)), message_id=message_id)

    def _digest(self, row: ReminderDigest, message_id: str) -> Mail:
        self._approved(row.term_id)
        level = self._level(row.term_id)
        if not level.enabled:
            raise _Outcome(State.SKIPPED, SkipReason.MONITORING_OFF.value)
        if not EMAIL_PATTERN.match(level.admin_email) or not (level.admin_subject.strip() or level.admin_body.strip()):
            raise _Outcome(State.SKIPPED, SkipReason.LETTER_OFF.value)
        with self.runtime.sessions() as session:
            entries = list(session.scalars(sa.select(Reminder).where(Reminder.digest_id == row.id)
                                           .order_by(Reminder.expired_on, Reminder.user_id)))
        if not entries:
            raise _Outcome(State.SKIPPED, "empty")
        context = self._letter_context()
        users = self.runtime.reader.users([e.user_id for e in entries])
        today = self.runtime.clock.today_utc()
        learners = [context.learner(users[e.user_id], e.term_id, e.expired_on, today, step=ADMIN_STEP)
                    for e in entries if e.user_id in users]
        try:
            rendered = render_digest(level.admin_subject, level.admin_body, context.digest(row.term_id, row.day, learners))
        except TemplateError as exc:
            raise _Outcome(State.FAILED, "template", str(exc)) from None
        return Mail(to=level.admin_email, subject=rendered.subject, html=rendered.html, text=rendered.text,
                    headers=self._headers({}), message_id=message_id)

    def _headers(self, extra: dict[str, str]) -> dict[str, str]:
        headers = {"Auto-Submitted": "auto-generated", **extra}
        if self.settings.reply_to:
            headers["Reply-To"] = self.settings.reply_to
        return headers

    # --- recording ----------------------------------------------------------------------------------

    _owned_update = staticmethod(owned_update)

    @staticmethod
    def _record_lost_claim(session: sa.orm.Session, model: type, row: Any, now: datetime, **details: Any) -> None:
        record_lost_claim(session, model, row, now, subject_type=_subject_type(model), subject_id=str(row.id),
                          action="reminder.claim_lost", actor="reminders", **details)

    def _finish(self, model: type, row: Any, state: State, reason: str, error: str, *, to: str = "",
                subject: str = "", note: str = "") -> bool:
        """Record the outcome, if the claim is still ours; returns whether it was. ``note`` follows the
        error unmasked (it names the Message-ID, which is no address)."""
        now = self.runtime.clock.now()
        text = "; ".join(part for part in (mask_emails(error), note) if part)
        values: dict[str, Any] = {"state": state.value, "reason": reason[:300], "last_error": text[:500],
                                  "updated_at": now, "claimed_until": None, "next_attempt_at": None}
        if state is State.SENT:
            values.update(sent_at=now, to_address=to[:200], subject=subject[:300])
        with unit_of_work(self.runtime.sessions) as session:
            owned = self._owned_update(session, model, row, **values)
            if not owned:
                self._record_lost_claim(session, model, row, now, stage="record", outcome=state.value,
                                        reason=reason or None, error=mask_emails(error)[:300] or None)
            elif model is ReminderDigest:
                self._mark_entries(session, row.id, state, now)
            elif state in (State.SENT, State.FAILED):
                data = {"reminder_id": row.id, "user_id": row.user_id, "term_id": row.term_id,
                        "expired_on": row.expired_on.isoformat(), "step": row.step}
                data.update({"message_id": row.message_id or ""} if state is State.SENT else
                            {"reason": reason, "error": mask_emails(error)[:500]})
                emit(session, f"reminder.{state.value}", data, now)
            if owned:
                audit.record(session, subject_type=_subject_type(model), subject_id=str(row.id),
                             action=f"reminder.{state.value}", at=now, actor="reminders", reason=reason or None,
                             message_id=row.message_id if state in (State.SENT, State.UNKNOWN) else None)
        if not owned:
            log.warning("reminder %s %s: claim %s was lost (lease expired or taken over); outcome %s not recorded",
                        _subject_type(model), row.id, row.claimed_by, state.value)
        elif state in (State.FAILED, State.UNKNOWN):
            log.warning("reminder %s %s %s: %s %s", _subject_type(model), row.id, state.value, reason,
                        mask_emails(error))
        return owned

    @staticmethod
    def _mark_entries(session: sa.orm.Session, digest_id: int, state: State, now: datetime,
                      sent_at: datetime | None = None) -> None:
        values: dict[str, Any] = {"state": state.value, "updated_at": now}
        if state is State.SENT:
            values["sent_at"] = sent_at or now
        session.execute(sa.update(Reminder).where(Reminder.digest_id == digest_id).values(**values)
                        .execution_options(synchronize_session=False))

    def _retry_later(self, model: type, row: Any, error: str) -> bool:
        now = self.runtime.clock.now()
        delay = min(self.settings.retry_base_seconds * 2 ** (row.attempts - 1), self.settings.retry_max_seconds)
        with unit_of_work(self.runtime.sessions) as session:
            owned = self._owned_update(session, model, row, state=State.PLANNED.value, claimed_until=None,
                                       updated_at=now, next_attempt_at=now + timedelta(seconds=delay),
                                       last_error=mask_emails(error)[:500])
            if not owned:
                self._record_lost_claim(session, model, row, now, stage="record", outcome="retry",
                                        error=mask_emails(error)[:300])
        if owned:
            log.info("reminder %s %s: transient failure, retry in %d s", _subject_type(model), row.id, delay)
        else:
            log.warning("reminder %s %s: claim %s was lost; retry not recorded", _subject_type(model), row.id,
                        row.claimed_by)
        return owned

    def _release(self, model: type, row: Any, error: str) -> bool:
        """Give the claim back untouched (nothing was attempted)."""
        now = self.runtime.clock.now()
        with unit_of_work(self.runtime.sessions) as session:
            return self._owned_update(session, model, row, state=State.PLANNED.value, claimed_until=None,
                                      attempts=row.attempts - 1, updated_at=now, last_error=error[:500])


def _subject_type(model: type) -> str:
    return "reminder_digest" if model is ReminderDigest else "reminder"


def _letters_only(model: type) -> tuple[sa.ColumnElement[bool], ...]:
    # A learner's place in a digest follows its digest: never resent or resolved alone.
    return (Reminder.step != ADMIN_STEP,) if model is Reminder else ()


#: A letter is sent again only while no later letter of its chain is under way or out: it would arrive out of order.
_LATER_BLOCKS = (State.PLANNED.value, State.SENDING.value, State.SENT.value, State.UNKNOWN.value)


def later_letter_exists(session: sa.orm.Session, row: Reminder) -> bool:
    """Whether a later letter of the row's chain is planned, being sent, sent or unknown."""
    later = session.scalar(sa.select(Reminder.id).where(
        Reminder.user_id == row.user_id, Reminder.term_id == row.term_id, Reminder.expired_on == row.expired_on,
        Reminder.step > row.step, Reminder.step != ADMIN_STEP, Reminder.state.in_(_LATER_BLOCKS)).limit(1))
    return later is not None


def resend(runtime: Runtime, ids: Sequence[int], *, actor: str, digest: bool = False) -> int:
    """Put failed or unknown letters (or digests) back in the queue; the stop rules are checked again on
    send. A letter whose chain has a later letter planned, being sent, sent or unknown is left as it is."""
    model = ReminderDigest if digest else Reminder
    now = runtime.clock.now()
    done = 0
    with unit_of_work(runtime.sessions) as session:
        chosen = session.scalars(sa.select(model).where(
            model.id.in_(list(ids)), model.state.in_((State.FAILED.value, State.UNKNOWN.value)),
            *_letters_only(model))).all()
        for row in chosen:
            if not digest and later_letter_exists(session, row):
                continue
            previous_state, previous_reason = row.state, row.reason
            moved = session.execute(
                sa.update(model).where(model.id == row.id, model.state == previous_state)
                .values(state=State.PLANNED.value, reason="", next_attempt_at=None, claimed_until=None,
                        claimed_by=None, data_started_at=None, updated_at=now)
                .execution_options(synchronize_session=False)).rowcount
            if moved != 1:
                continue
            if digest:
                ReminderSender._mark_entries(session, row.id, State.PLANNED, now)
            audit.record(session, subject_type=_subject_type(model), subject_id=str(row.id), action="reminder.resend",
                         at=now, actor=actor, previous_state=previous_state, previous_reason=previous_reason,
                         previous_message_id=row.message_id)
            done += 1
    return done


def mark_delivered(runtime: Runtime, ids: Sequence[int], *, actor: str, digest: bool = False) -> int:
    """An administrator found an unknown letter (or digest) in the mail server's log: it is ``sent``, as of
    the moment it was handed over. Rows in any other state are left as they are."""
    model = ReminderDigest if digest else Reminder
    now = runtime.clock.now()
    done = 0
    with unit_of_work(runtime.sessions) as session:
        for row in session.scalars(sa.select(model).where(model.id.in_(list(ids)), model.state == State.UNKNOWN.value,
                                                          *_letters_only(model))).all():
            sent_at = row.data_started_at or row.updated_at
            moved = session.execute(
                sa.update(model).where(model.id == row.id, model.state == State.UNKNOWN.value)
                .values(state=State.SENT.value, reason="marked_delivered", sent_at=sent_at, claimed_until=None,
                        next_attempt_at=None, updated_at=now)
                .execution_options(synchronize_session=False)).rowcount
            if moved != 1:
                continue
            if digest:
                ReminderSender._mark_entries(session, row.id, State.SENT, now, sent_at)
            else:
                emit(session, "reminder.sent", {"reminder_id": row.id, "user_id": row.user_id, "term_id": row.term_id,
                                                "expired_on": row.expired_on.isoformat(), "step": row.step,
                                                "message_id": row.message_id or ""}, now)
            audit.record(session, subject_type=_subject_type(model), subject_id=str(row.id),
                         action="reminder.marked_delivered", at=now, actor=actor, message_id=row.message_id,
                         previous_reason=row.reason)
            done += 1
    return done
