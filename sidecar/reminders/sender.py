"""Sending planned reminders and digests: at most once, with retries, re-checked right before sending.

**The guarantee is at-most-once per (user, level, X, step).** Duplicates annoy learners and cannot
be taken back; a letter lost to a crash is visible in the history and can be resent by an admin.

How:

1. *Claim.* ``UPDATE … SET state='sending', claimed_until=…, message_id=… WHERE id=? AND
   state='planned'`` — a conditional update, atomic in every database we support; of two senders
   (threads, processes, hosts) exactly one sees a row count of 1. The Message-ID is stored *before*
   the SMTP transaction opens.
2. *Re-check.* The sleeper rule is evaluated live for this learner and level (renewed, manual
   certificate, blocked, unsubscribed, monitoring off, letter emptied → ``skipped`` with the reason).
3. *Send*, then mark ``sent``. The SMTP server accepts the message with its reply to the end of
   DATA; that is the commit point we cannot share a transaction with.
4. *Crash between 3 and the mark*: the row stays ``sending``. It is never claimed again
   automatically; once its lease has run out, :meth:`ReminderSender.recover_interrupted` marks it
   ``failed`` with "outcome unknown" and its Message-ID, so the admin can look it up in the mail
   server's log before pressing *resend*.

Transient failures (server down, 4xx) go back to ``planned`` with a doubling delay until
``reminders.max_attempts``; permanent ones (5xx, bad address, template error) are ``failed``.
"""

from __future__ import annotations

import logging
import os
import time
import socket
from collections.abc import Sequence
from dataclasses import dataclass, field
from datetime import date, datetime, timedelta
from typing import Any

import sqlalchemy as sa

from sidecar.bootstrap import Runtime
from sidecar.domain.reminders import ADMIN_STEP, SkipReason, State, stop_reason
from sidecar.logs import mask_emails
from sidecar.mail.mailer import Mail, MailDisabled, Mailer, PermanentMailError, TransientMailError
from sidecar.mail.templates import TemplateError
from sidecar.monitor.service import MonitorService, UnknownLevel, UnknownUser
from sidecar.monitor.settings import EMAIL_PATTERN, LevelSettings, MonitorSettings
from sidecar.reminders.context import LetterContext
from sidecar.reminders.letters import render_digest, render_learner_letter
from sidecar.reminders.unsubscribe import LinkUnavailable, Links
from sidecar.store import audit
from sidecar.webhooks.events import emit
from sidecar.store.reminder_models import Reminder, ReminderDigest, Unsubscribe

log = logging.getLogger(__name__)


def links_for(runtime: Runtime) -> Links:
    web = runtime.settings.web
    return Links(web.public_url, web.secret_key.reveal() if web.secret_key else "")


def sender_identity() -> str:
    return f"{socket.gethostname()}:{os.getpid()}"[:80]


@dataclass
class SendReport:
    sent: int = 0
    skipped: dict[str, int] = field(default_factory=dict)
    retrying: int = 0
    failed: int = 0
    interrupted: int = 0
    lost_claims: int = 0       # rows another sender claimed first
    stopped: str = ""          # why sending stopped early (e.g. e-mail disabled)

    def skip(self, reason: str) -> None:
        self.skipped[reason] = self.skipped.get(reason, 0) + 1


class _Outcome(Exception):
    """Ends one delivery early with a final state."""

    def __init__(self, state: State, reason: str, error: str = "") -> None:
        super().__init__(reason)
        self.state, self.reason, self.error = state, reason, error


class ReminderSender:
    def __init__(self, runtime: Runtime, mailer: Mailer | None = None, *, links: Links | None = None) -> None:
        self.runtime = runtime
        self.settings = runtime.settings.reminders
        self.mailer = mailer or Mailer(runtime.settings.smtp)
        self.links = links
        self.identity = sender_identity()
        self._levels: dict[int, LevelSettings] = {}
        self._context: LetterContext | None = None

    # --- public -------------------------------------------------------------------------------------

    def recover_interrupted(self) -> int:
        """``sending`` rows whose lease ran out: the process died mid-send; never resent by itself."""
        now = self.runtime.clock.now()
        total = 0
        for model in (Reminder, ReminderDigest):
            with self.runtime.sessions.begin() as session:
                rows = session.scalars(sa.select(model).where(model.state == State.SENDING.value,
                                                             model.claimed_until < now)).all()
                for row in rows:
                    row.state = State.FAILED.value
                    row.reason = "interrupted"
                    row.last_error = (f"the sender stopped during delivery; outcome unknown — look for Message-ID "
                                      f"{row.message_id} in the mail server's log before resending")[:500]
                    row.updated_at = now
                    if model is ReminderDigest:
                        self._mark_entries(session, row.id, State.FAILED, now)
                    audit.record(session, subject_type=_subject_type(model), subject_id=str(row.id),
                                 action="reminder.interrupted", at=now, actor="reminders",
                                 message_id=row.message_id)
                total += len(rows)
        if total:
            log.warning("%d reminder deliveries were interrupted earlier; marked failed (outcome unknown)", total)
        return total

    def send_due(self, *, limit: int | None = None, time_budget: float | None = None) -> SendReport:
        """Send what is due; ``time_budget`` (seconds) stops between letters, leaving the rest planned."""
        report = SendReport()
        started = time.monotonic()
        self.recover_interrupted()
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
        """Take the row for this sender; returns the Message-ID, or None when someone else has it."""
        now = self.runtime.clock.now()
        message_id = self.mailer.new_message_id()
        with self.runtime.sessions.begin() as session:
            claimed = session.execute(
                sa.update(model)
                .where(model.id == row_id, model.state == State.PLANNED.value)
                .values(state=State.SENDING.value, claimed_by=self.identity, message_id=message_id,
                        claimed_until=now + timedelta(seconds=self.settings.sending_lease_seconds),
                        attempts=model.attempts + 1, updated_at=now)
                .execution_options(synchronize_session=False)
            ).rowcount
        return message_id if claimed == 1 else None

    # --- one delivery -------------------------------------------------------------------------------

    def _deliver(self, model: type, row_id: int, report: SendReport) -> bool:
        """Claim, check, render, send, record; False stops the run (e-mail unusable for everyone)."""
        message_id = self._claim(model, row_id)
        if message_id is None:
            report.lost_claims += 1
            return True
        with self.runtime.sessions() as session:
            row = session.get(model, row_id)
            session.expunge(row)
        try:
            mail = self._letter(row, message_id) if model is Reminder else self._digest(row, message_id)
            self.mailer.send(mail)
        except _Outcome as outcome:
            self._finish(model, row, outcome.state, outcome.reason, outcome.error)
            if outcome.state is State.SKIPPED:
                report.skip(outcome.reason)
            else:
                report.failed += 1
            return True
        except MailDisabled as exc:
            self._release(model, row, str(exc))
            report.stopped = str(exc)
            return False
        except TransientMailError as exc:
            if row.attempts >= self.settings.max_attempts:  # the claim counted this attempt already
                self._finish(model, row, State.FAILED, "smtp_transient", f"gave up after {row.attempts} attempts: {exc}")
                report.failed += 1
            else:
                self._retry_later(model, row, str(exc))
                report.retrying += 1
            return True
        except PermanentMailError as exc:
            self._finish(model, row, State.FAILED, "smtp_permanent", str(exc))
            report.failed += 1
            return True
        self._finish(model, row, State.SENT, "", "", to=mail.to, subject=mail.subject)
        report.sent += 1
        return True

    def _level(self, term_id: int) -> LevelSettings:
        if term_id not in self._levels:
            self._levels[term_id] = MonitorSettings(self.runtime).effective(term_id)
        return self._levels[term_id]

    def _letter_context(self) -> LetterContext:
        if self._context is None:
            self._context = LetterContext(self.runtime, self.links)
        return self._context

    def _too_late(self, due: date) -> bool:
        return (self.runtime.clock.today_utc() - due).days > self.settings.catch_up_days

    def _letter(self, row: Reminder, message_id: str) -> Mail:
        level = self._level(row.term_id)
        letter = level.letters[row.step - 1]
        today = self.runtime.clock.today_utc()
        if self._too_late(row.due_on):
            raise _Outcome(State.SKIPPED, SkipReason.TOO_LATE.value)
        try:
            explanation = MonitorService(self.runtime).explain(row.user_id, row.term_id, today)
        except UnknownUser:
            raise _Outcome(State.SKIPPED, SkipReason.USER_DELETED.value) from None
        except UnknownLevel:
            raise _Outcome(State.SKIPPED, SkipReason.MONITORING_OFF.value) from None
        user = explanation.user
        with self.runtime.sessions() as session:
            unsubscribed = session.get(Unsubscribe, row.user_id) is not None
        reason = stop_reason(explanation.verdict, row.expired_on, unsubscribed=unsubscribed,
                             monitoring_on=level.enabled, letter_on=letter.configured,
                             has_email=bool(EMAIL_PATTERN.match(user.email or "")))
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

    def _finish(self, model: type, row: Any, state: State, reason: str, error: str, *, to: str = "",
                subject: str = "") -> None:
        now = self.runtime.clock.now()
        values: dict[str, Any] = {"state": state.value, "reason": reason[:300], "last_error": mask_emails(error)[:500],
                                  "updated_at": now, "claimed_until": None, "next_attempt_at": None}
        if state is State.SENT:
            values.update(sent_at=now, to_address=to[:200], subject=subject[:300])
        with self.runtime.sessions.begin() as session:
            session.execute(sa.update(model).where(model.id == row.id, model.state == State.SENDING.value)
                            .values(**values).execution_options(synchronize_session=False))
            if model is ReminderDigest:
                self._mark_entries(session, row.id, state, now)
            elif state in (State.SENT, State.FAILED):
                data = {"reminder_id": row.id, "user_id": row.user_id, "term_id": row.term_id,
                        "expired_on": row.expired_on.isoformat(), "step": row.step}
                data.update({"message_id": row.message_id or ""} if state is State.SENT else
                            {"reason": reason, "error": mask_emails(error)[:500]})
                emit(session, f"reminder.{state.value}", data, now)
            audit.record(session, subject_type=_subject_type(model), subject_id=str(row.id),
                         action=f"reminder.{state.value}", at=now, actor="reminders", reason=reason or None,
                         message_id=row.message_id if state is State.SENT else None)
        if state is State.FAILED:
            log.warning("reminder %s %s failed: %s %s", _subject_type(model), row.id, reason, mask_emails(error))

    @staticmethod
    def _mark_entries(session: sa.orm.Session, digest_id: int, state: State, now: datetime) -> None:
        values: dict[str, Any] = {"state": state.value, "updated_at": now}
        if state is State.SENT:
            values["sent_at"] = now
        session.execute(sa.update(Reminder).where(Reminder.digest_id == digest_id).values(**values)
                        .execution_options(synchronize_session=False))

    def _retry_later(self, model: type, row: Any, error: str) -> None:
        now = self.runtime.clock.now()
        delay = min(self.settings.retry_base_seconds * 2 ** (row.attempts - 1), self.settings.retry_max_seconds)
        with self.runtime.sessions.begin() as session:
            session.execute(sa.update(model).where(model.id == row.id, model.state == State.SENDING.value)
                            .values(state=State.PLANNED.value, claimed_until=None, updated_at=now,
                                    next_attempt_at=now + timedelta(seconds=delay),
                                    last_error=mask_emails(error)[:500])
                            .execution_options(synchronize_session=False))
        log.info("reminder %s %s: transient failure, retry in %d s", _subject_type(model), row.id, delay)

    def _release(self, model: type, row: Any, error: str) -> None:
        """Give the claim back untouched (nothing was attempted)."""
        now = self.runtime.clock.now()
        with self.runtime.sessions.begin() as session:
            session.execute(sa.update(model).where(model.id == row.id, model.state == State.SENDING.value)
                            .values(state=State.PLANNED.value, claimed_until=None, attempts=row.attempts - 1,
                                    updated_at=now, last_error=error[:500])
                            .execution_options(synchronize_session=False))


def _subject_type(model: type) -> str:
    return "reminder_digest" if model is ReminderDigest else "reminder"


def resend(runtime: Runtime, ids: Sequence[int], *, actor: str, digest: bool = False) -> int:
    """Put failed letters (or digests) back in the queue; the stop rules are checked again on send."""
    model = ReminderDigest if digest else Reminder
    now = runtime.clock.now()
    done = 0
    with runtime.sessions.begin() as session:
        for row in session.scalars(sa.select(model).where(model.id.in_(list(ids)), model.state == State.FAILED.value)):
            previous = row.reason
            row.state, row.reason, row.next_attempt_at, row.claimed_until, row.updated_at = (
                State.PLANNED.value, "", None, None, now)
            if digest:
                ReminderSender._mark_entries(session, row.id, State.PLANNED, now)
            audit.record(session, subject_type=_subject_type(model), subject_id=str(row.id), action="reminder.resend",
                         at=now, actor=actor, previous_reason=previous, previous_message_id=row.message_id)
            done += 1
    return done
