"""Claimed outbox rows: how a letter is sent at most once (the welcome e-mail, the alert digests, the reminders).

A row waits in its queue state (``pending`` or ``planned``); a sender *claims* it with a conditional
UPDATE (→ ``sending``, a ``claimed_by`` naming this claim alone, a lease), commits the pre-DATA mark
``data_started_at`` right before the DATA phase — only while the claim is still its own — and records
the outcome with an UPDATE conditioned on the claim. A sender whose claim was taken over overwrites
nothing: it records a ``…claim_lost`` audit event with what it saw. A claim whose lease ran out goes
back to the queue without the mark and to ``unknown`` with it; ``unknown`` is never sent again by
itself.

The module functions are the pieces every outbox shares; :class:`ClaimedMailSender` is the whole
delivery of one row for an outbox with one table and one queue state, which a subclass words
(audit subject and action, log label, the messages of its rows).
"""

from __future__ import annotations

import logging
from collections.abc import Callable
from dataclasses import dataclass
from datetime import datetime, timedelta
from typing import TYPE_CHECKING, Any

import sqlalchemy as sa

from sidecar.logs import mask_emails
from sidecar.mail.mailer import (
    Mail,
    MailDisabled,
    Mailer,
    MailOutcomeUnknown,
    PermanentMailError,
    TransientMailError,
)
from sidecar.mail.templates import TemplateError
from sidecar.store import audit
from sidecar.store.db import unit_of_work
from sidecar.store.leases import claim_holder

if TYPE_CHECKING:
    from sidecar.bootstrap import Runtime

#: The states every outbox table names alike (its queue state is its own: ``pending`` or ``planned``).
SENDING, SENT, FAILED, UNKNOWN = "sending", "sent", "failed", "unknown"

LEASE = timedelta(minutes=10)   # longer than any SMTP transaction (smtp.timeout_seconds ≤ 300)

#: What an administrator does about a letter whose outcome is unknown (the welcome e-mail, the reminders).
MARK_OR_RESEND = ", then mark it delivered or send it again"


class ClaimLost(Exception):
    """The claim is no longer ours: nothing more is sent or recorded for it."""


def unknown_advice(message_id: str | None, then: str = MARK_OR_RESEND) -> str:
    return (f"outcome unknown: the mail server may have delivered it — look for Message-ID {message_id or '?'} "
            f"in its log{then}")


def owned_update(session: sa.orm.Session, model: type, row: Any, **values: Any) -> bool:
    """An UPDATE of the row that only applies while this sender still holds its claim."""
    return session.execute(
        sa.update(model).where(model.id == row.id, model.state == SENDING,
                               model.claimed_by == row.claimed_by)
        .values(**values).execution_options(synchronize_session=False)).rowcount == 1


def take_stale(session: sa.orm.Session, model: type, row_id: int, holder: str | None, now: datetime,
               **values: Any) -> bool:
    """Take over a claim whose lease ran out, conditioned on the claim seen: a sender finishing at this very
    moment keeps its own record."""
    return session.execute(
        sa.update(model).where(model.id == row_id, model.state == SENDING,
                               model.claimed_by == holder, model.claimed_until < now)
        .values(claimed_until=None, updated_at=now, **values)
        .execution_options(synchronize_session=False)).rowcount == 1


def record_lost_claim(session: sa.orm.Session, model: type, row: Any, now: datetime, *, subject_type: str,
                      subject_id: str, action: str, actor: str, **details: Any) -> None:
    """Audit what a sender saw when it found its claim taken over."""
    current = session.execute(sa.select(model.state, model.claimed_by)
                              .where(model.id == row.id)).first()
    audit.record(session, subject_type=subject_type, subject_id=subject_id, action=action, at=now, actor=actor,
                 claimed_by=row.claimed_by, message_id=row.message_id,
                 current_state=current.state if current else None,
                 current_claim=current.claimed_by if current else None, **details)


@dataclass
class SendCounts:
    """What a run of a :class:`ClaimedMailSender` did; an outbox's report adds its own counts."""

    sent: int = 0
    retrying: int = 0
    failed: int = 0
    unknown: int = 0
    recovered: int = 0       # claims left by a stopped sender: queued again or unknown
    lost_claims: int = 0     # rows another sender claimed first, or took over from this one
    stopped: str = ""        # why sending stopped early (e.g. e-mail disabled)


class ClaimedMailSender:
    """Claim, mark, send and record the rows of one outbox table.

    A subclass sets the class attributes and :meth:`_subject`, :meth:`_label`, :meth:`_max_attempts`
    and :meth:`_retry_delay`; its ``report`` is a :class:`SendCounts`.
    """

    model: type                 # the outbox table
    waiting: str                # the state a row waits to be claimed in
    actor: str                  # the audit events' actor
    action: str                 # their action prefix ("welcome", "alert_digest")
    requeued_error: str         # last_error of a row whose sender stopped before handing it over
    advice_then: str = MARK_OR_RESEND
    interrupted_warning: str = ""   # logged with the count of recovered claims, when set
    lease: timedelta = LEASE
    log: logging.Logger

    runtime: Runtime
    mailer: Mailer
    report: SendCounts

    # --- what a subclass says -------------------------------------------------------------------------

    def _subject(self, row: Any) -> tuple[str, str]:
        """The audit subject (type, id) of the row's events."""
        raise NotImplementedError

    def _label(self, row: Any) -> str:
        """How the log names the row."""
        raise NotImplementedError

    def _max_attempts(self) -> int:
        raise NotImplementedError

    def _retry_delay(self, row: Any) -> timedelta:
        raise NotImplementedError

    def _finish_details(self, row: Any) -> dict[str, Any]:
        """More details of the audit event of a recorded outcome."""
        return {}

    def _finished(self, session: sa.orm.Session, row: Any, state: str, now: datetime) -> None:
        """More to write in the transaction that records an outcome (the claim was still ours)."""

    def _advice(self, message_id: str | None) -> str:
        return unknown_advice(message_id, self.advice_then)

    # --- the machinery ---------------------------------------------------------------------------------

    def recover_interrupted(self) -> int:
        """Claims whose lease ran out: queued again without the pre-DATA mark, unknown with it."""
        model, now = self.model, self.runtime.clock.now()
        with self.runtime.sessions() as session:
            stale = list(session.scalars(sa.select(model).where(model.state == SENDING,
                                                                model.claimed_until < now)))
            session.expunge_all()
        done = 0
        for row in stale:
            if row.data_started_at is None:
                state, values = self.waiting, {"state": self.waiting, "claimed_by": None, "next_attempt_at": now,
                                               "last_error": self.requeued_error}
            else:
                state, values = UNKNOWN, {"state": UNKNOWN, "reason": "interrupted", "last_error":
                                          f"the sender stopped during delivery; {self._advice(row.message_id)}"[:500]}
            with unit_of_work(self.runtime.sessions) as session:
                taken = take_stale(session, model, row.id, row.claimed_by, now, **values)
                if taken:
                    subject_type, subject_id = self._subject(row)
                    audit.record(session, subject_type=subject_type, subject_id=subject_id,
                                 action=f"{self.action}.{'unknown' if state == UNKNOWN else 'requeued'}", at=now,
                                 actor=self.actor, reason="interrupted", message_id=row.message_id,
                                 claimed_by=row.claimed_by)
            done += taken
        if done and self.interrupted_warning:
            self.log.warning(self.interrupted_warning, done)
        self.report.recovered += done
        return done

    def _claim(self, row_id: int, **values: Any) -> str | None:
        """Take the row for this sender; returns the claim's holder name, or None when someone else has it."""
        model, now = self.model, self.runtime.clock.now()
        holder = claim_holder()
        with unit_of_work(self.runtime.sessions) as session:
            claimed = session.execute(
                sa.update(model).where(model.id == row_id, model.state == self.waiting)
                .values(state=SENDING, claimed_by=holder, claimed_until=now + self.lease, data_started_at=None,
                        message_id=self.mailer.new_message_id(),
                        attempts=model.attempts + 1, updated_at=now, **values)
                .execution_options(synchronize_session=False)).rowcount
        return holder if claimed == 1 else None

    def _send(self, row: Any, compose: Callable[[], Mail]) -> bool:
        """Compose, mark, send and record the claimed row; whether it went out and is recorded ``sent``."""
        try:
            mail = compose()
            self.mailer.send(mail, before_data=lambda: self._handing_over(row))
        except ClaimLost:
            self.report.lost_claims += 1
            return False
        except TemplateError as exc:
            self._count(self._finish(row, FAILED, "template", str(exc)), "failed")
            return False
        except MailDisabled as exc:
            self._release(row, str(exc))
            self.report.stopped = str(exc)
            return False
        except MailOutcomeUnknown as exc:
            self._count(self._finish(row, UNKNOWN, "no_reply", str(exc), note=self._advice(row.message_id)), "unknown")
            return False
        except TransientMailError as exc:
            if row.attempts >= self._max_attempts():   # the claim counted this attempt already
                self._count(self._finish(row, FAILED, "smtp_transient", f"gave up after {row.attempts} attempts: {exc}"),
                            "failed")
            else:
                self._count(self._retry_later(row, str(exc)), "retrying")
            return False
        except PermanentMailError as exc:
            self._count(self._finish(row, FAILED, "smtp_permanent", str(exc)), "failed")
            return False
        owned = self._finish(row, SENT, "", "")
        self._count(owned, "sent")
        return owned

    def _count(self, owned: bool, outcome: str) -> None:
        if owned:
            setattr(self.report, outcome, getattr(self.report, outcome) + 1)
        else:
            self.report.lost_claims += 1

    def _owned(self, session: sa.orm.Session, row: Any, **values: Any) -> bool:
        return owned_update(session, self.model, row, **values)

    def _lost(self, session: sa.orm.Session, row: Any, now: datetime, **details: Any) -> None:
        subject_type, subject_id = self._subject(row)
        record_lost_claim(session, self.model, row, now, subject_type=subject_type, subject_id=subject_id,
                          action=f"{self.action}.claim_lost", actor=self.actor, **details)

    def _handing_over(self, row: Any) -> None:
        """The pre-DATA mark: from now on the message may reach its reader. Only while the claim is ours."""
        now = self.runtime.clock.now()
        with unit_of_work(self.runtime.sessions) as session:
            owned = self._owned(session, row, data_started_at=now, claimed_until=now + self.lease, updated_at=now)
            if not owned:
                self._lost(session, row, now, stage="before_data")
        if not owned:
            self.log.warning("%s: claim %s lost before the DATA phase; not sent", self._label(row), row.claimed_by)
            raise ClaimLost()
        row.data_started_at = now

    def _finish(self, row: Any, state: str, reason: str, error: str, *, note: str = "") -> bool:
        """Record the outcome, if the claim is still ours; returns whether it was. ``note`` follows the
        error unmasked (it names the Message-ID, which is no address)."""
        now = self.runtime.clock.now()
        text = "; ".join(part for part in (mask_emails(error), note) if part)[:500]
        values: dict[str, Any] = {"state": state, "reason": reason, "last_error": text, "claimed_until": None,
                                  "next_attempt_at": None, "updated_at": now}
        if state == SENT:
            values["sent_at"] = now
        with unit_of_work(self.runtime.sessions) as session:
            owned = self._owned(session, row, **values)
            if owned:
                subject_type, subject_id = self._subject(row)
                audit.record(session, subject_type=subject_type, subject_id=subject_id, action=f"{self.action}.{state}",
                             at=now, actor=self.actor, reason=reason or None, **self._finish_details(row),
                             message_id=row.message_id if state in (SENT, UNKNOWN) else None,
                             error=mask_emails(error)[:300] or None)
                self._finished(session, row, state, now)
            else:
                self._lost(session, row, now, stage="record", outcome=state, reason=reason or None,
                           error=mask_emails(error)[:300] or None)
        if not owned:
            self.log.warning("%s: claim %s was lost (lease expired or taken over); outcome %s not recorded",
                             self._label(row), row.claimed_by, state)
        elif state in (FAILED, UNKNOWN):
            self.log.warning("%s %s: %s %s", self._label(row), state, reason, mask_emails(error))
        return owned

    def _retry_later(self, row: Any, error: str) -> bool:
        now = self.runtime.clock.now()
        delay = self._retry_delay(row)
        with unit_of_work(self.runtime.sessions) as session:
            owned = self._owned(session, row, state=self.waiting, claimed_until=None, updated_at=now,
                                next_attempt_at=now + delay, last_error=mask_emails(error)[:500])
            if not owned:
                self._lost(session, row, now, stage="record", outcome="retry", error=mask_emails(error)[:300])
        if owned:
            self.log.info("%s: transient failure, retry in %d s", self._label(row), delay.total_seconds())
        return owned

    def _release(self, row: Any, error: str) -> bool:
        """Give the claim back untouched (nothing was attempted)."""
        now = self.runtime.clock.now()
        with unit_of_work(self.runtime.sessions) as session:
            return self._owned(session, row, state=self.waiting, claimed_until=None, attempts=row.attempts - 1,
                               updated_at=now, last_error=error[:500])
