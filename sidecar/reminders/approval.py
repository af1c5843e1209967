"""A safe first run: a level's reminders go out only once an administrator has approved the level.

Every level starts **not approved** — a new store, a level whose letters were set long ago, a level
switched on today. While it is not approved, each run (the worker's daily run, ``mlsidecar remind``)
plans it exactly as usual but records nothing in the ledger: what it would send is kept here as the
level's *awaiting* list (``mls_reminder_awaiting``, replaced by each run), and the sender sends no letter
of the level (a letter planned before is skipped with reason ``not_approved``). Nothing is sent, counted
as sent, or announced as ``reminder.sent``.

An administrator reviews the list and approves the level — on its page (``/reminders/approvals/<id>``,
the list the last run made) or with ``mlsidecar remind approve --level T --letters N`` (after
``mlsidecar remind --dry-run --level T``, which lists the same letters). The approval records who, when
and the list reviewed: its number of letters and when it was made. The page's button carries the list's
moment, and the command its count: when the list changed in between (a new run, a learner renewed),
the approval is refused and the administrator looks again. The next run sends as usual. Revoking
stops the level again at once: letters already planned for it are skipped (``not_approved``).

A level that sent letters before this rule existed was approved by the store's upgrade
(migration ``0014_reminder_approvals``, actor ``upgrade``): stopping it would cut learners' chains half-way.

Nothing here touches WordPress; every change is audited on subject ``monitor_level``.
"""

from __future__ import annotations

from collections.abc import Iterable
from dataclasses import dataclass, replace
from datetime import date, datetime
from typing import Protocol

import sqlalchemy as sa
from sqlalchemy.exc import IntegrityError
from sqlalchemy.orm import Session

from sidecar.bootstrap import Runtime
from sidecar.domain.reminders import ADMIN_STEP, SkipReason, State
from sidecar.monitor.settings import LevelSettings, MonitorSettings
from sidecar.store import audit
from sidecar.store.db import unit_of_work
from sidecar.store.models import AuditEvent
from sidecar.store.reminder_models import AwaitingReminder, Reminder, ReminderApproval, ReminderDigest

SUBJECT_TYPE = "monitor_level"
REVOKED_ACTION = "reminders.approval_revoked"
NOT_APPROVED = SkipReason.NOT_APPROVED.value


class ApprovalRefused(ValueError):
    """Why a level cannot be approved (``code`` for the UI's words, the message for the command line)."""

    def __init__(self, code: str, message: str, **params: object) -> None:
        super().__init__(message)
        self.code, self.params = code, params


@dataclass(frozen=True)
class LevelApproval:
    """A level's approval state; a level with no row is not approved and has no list yet."""

    term_id: int
    approved_at: datetime | None = None
    approved_by: str = ""
    approved_source: str = ""
    approved_letters: int | None = None
    approved_list_at: datetime | None = None
    listed_at: datetime | None = None
    listed_letters: int = 0
    #: The last revocation (from the audit trail) while the level is not approved, else None/"".
    revoked_at: datetime | None = None
    revoked_by: str = ""

    @property
    def approved(self) -> bool:
        return self.approved_at is not None

    @property
    def revoked_unlisted(self) -> bool:
        """Approval was revoked and no run has listed the level's letters since (approving empties the
        list, and no run lists an approved level): nothing to approve until the next run."""
        return not self.approved and self.revoked_at is not None and (
            self.listed_at is None or self.listed_at < self.revoked_at)

    @classmethod
    def of(cls, row: ReminderApproval | None, term_id: int) -> LevelApproval:
        if row is None:
            return cls(term_id)
        return cls(term_id=row.term_id, approved_at=row.approved_at, approved_by=row.approved_by,
                   approved_source=row.approved_source, approved_letters=row.approved_letters,
                   approved_list_at=row.approved_list_at, listed_at=row.listed_at, listed_letters=row.listed_letters)


@dataclass(frozen=True)
class Review:
    """The list an administrator reviewed before approving.

    ``stored``: the list the last run kept (the page) — it must still be the level's list, made at
    ``made_at`` with ``letters`` letters. Otherwise a dry run made just now (the command line)."""

    letters: int
    made_at: datetime
    stored: bool


class AwaitingItem(Protocol):
    """What a run would have sent (the planner's ``PlanItem`` with action ``await``)."""

    user_id: int
    expired_on: date
    step: int
    due_on: date
    email: str
    name: str


def letter_count(steps: Iterable[int]) -> int:
    """Letters that would go out: each learner letter, and the day's digest as one letter."""
    steps = list(steps)
    return sum(1 for step in steps if step != ADMIN_STEP) + (1 if ADMIN_STEP in steps else 0)


def sends_reminders(settings: LevelSettings) -> bool:
    """Whether the level has anything a run could send: monitoring on and a letter set."""
    return settings.enabled and any(letter.configured for letter in settings.letters)


# --- reading ----------------------------------------------------------------------------------------

def approved_levels(session: Session) -> set[int]:
    return set(session.scalars(sa.select(ReminderApproval.term_id).where(ReminderApproval.approved_at.is_not(None))))


def is_approved(session: Session, term_id: int) -> bool:
    row = session.get(ReminderApproval, term_id)
    return row is not None and row.approved_at is not None


def _revocations(session: Session, term_ids: Iterable[int]) -> dict[int, AuditEvent]:
    """The last ``reminders.approval_revoked`` event of each of these levels that has one."""
    wanted = [str(t) for t in term_ids]
    if not wanted:
        return {}
    events = session.scalars(sa.select(AuditEvent).where(
        AuditEvent.subject_type == SUBJECT_TYPE, AuditEvent.action == REVOKED_ACTION,
        AuditEvent.subject_id.in_(wanted)).order_by(AuditEvent.id))
    return {int(event.subject_id): event for event in events}


def _with_revocation(state: LevelApproval, event: AuditEvent | None) -> LevelApproval:
    if state.approved or event is None:
        return state
    return replace(state, revoked_at=event.occurred_at, revoked_by=event.actor)


def status(session: Session, term_id: int) -> LevelApproval:
    state = LevelApproval.of(session.get(ReminderApproval, term_id), term_id)
    return _with_revocation(state, _revocations(session, [term_id]).get(term_id) if not state.approved else None)


def statuses(session: Session) -> dict[int, LevelApproval]:
    states = {row.term_id: LevelApproval.of(row, row.term_id) for row in session.scalars(sa.select(ReminderApproval))}
    revoked = _revocations(session, [t for t, state in states.items() if not state.approved])
    return {t: _with_revocation(state, revoked.get(t)) for t, state in states.items()}


def awaiting(session: Session, term_id: int, *, offset: int = 0, limit: int = 50) -> tuple[list[AwaitingReminder], int]:
    """One page of the level's awaiting list (letters in step order, then by learner), and its length."""
    a = AwaitingReminder
    total = session.scalar(sa.select(sa.func.count()).select_from(a).where(a.term_id == term_id)) or 0
    rows = list(session.scalars(sa.select(a).where(a.term_id == term_id).order_by(a.step, a.user_id, a.id)
                                .offset(offset).limit(limit)))
    return rows, int(total)


def awaiting_digest(session: Session, term_id: int) -> list[AwaitingReminder]:
    """The learners the level's held digest would list (few: those who received every letter)."""
    a = AwaitingReminder
    return list(session.scalars(sa.select(a).where(a.term_id == term_id, a.step == ADMIN_STEP)
                                .order_by(a.expired_on, a.user_id)))


# --- the runs' lists --------------------------------------------------------------------------------

def _row_for_update(session: Session, term_id: int) -> ReminderApproval | None:
    return session.get(ReminderApproval, term_id, with_for_update=True)


def _new_row(term_id: int) -> ReminderApproval:
    return ReminderApproval(term_id=term_id, approved_at=None, approved_by="", approved_source="",
                            approved_letters=None, approved_list_at=None, listed_at=None, listed_letters=0)


def _with_row(runtime: Runtime, term_id: int, change):
    """Run ``change(session, row)`` in one unit of work on the level's row, created when missing (a
    concurrent creator wins the primary key; the change is then made on its row)."""
    for attempt in range(2):
        try:
            with unit_of_work(runtime.sessions) as session:
                row = _row_for_update(session, term_id)
                if row is None:
                    row = _new_row(term_id)
                    session.add(row)
                    session.flush()
                return change(session, row)
        except IntegrityError:
            if attempt:
                raise
    raise AssertionError("unreachable")


def record_awaiting(runtime: Runtime, term_id: int, items: Iterable[AwaitingItem], now: datetime) -> bool:
    """Keep ``items`` as the level's awaiting list, made ``now``; False when the level was approved
    meanwhile (the list is then not kept: the next run sends)."""
    values = [{"term_id": term_id, "user_id": i.user_id, "expired_on": i.expired_on, "step": i.step,
               "due_on": i.due_on, "email": (i.email or "")[:200], "name": (i.name or "")[:200]} for i in items]

    def change(session: Session, row: ReminderApproval) -> bool:
        if row.approved_at is not None:
            return False
        session.execute(sa.delete(AwaitingReminder).where(AwaitingReminder.term_id == term_id))
        for start in range(0, len(values), 1000):
            session.execute(sa.insert(AwaitingReminder), values[start:start + 1000])
        row.listed_at, row.listed_letters = now, letter_count(v["step"] for v in values)
        return True

    return _with_row(runtime, term_id, change)


# --- decisions --------------------------------------------------------------------------------------

def check_approvable(runtime: Runtime, term_id: int) -> LevelSettings:
    """The level's settings when it has letters to approve; :class:`ApprovalRefused` otherwise."""
    if runtime.reader.level(term_id) is None:
        raise ApprovalRefused("unknown_level", f"no access level {term_id}", level=term_id)
    settings = MonitorSettings(runtime).effective(term_id)
    if not any(letter.configured for letter in settings.letters):
        raise ApprovalRefused("no_letters", f"level {term_id} has no letter configured: there is nothing to approve "
                              "(set its letters in Monitor → level → Settings first)", level=term_id)
    if not settings.enabled:
        raise ApprovalRefused("monitoring_off", f"monitoring is off for level {term_id}, so it sends no reminders: "
                              "switch it on in the level's settings first", level=term_id)
    return settings


def approve(runtime: Runtime, term_id: int, *, actor: str, source: str, review: Review | None,
            source_ip: str | None = None) -> tuple[LevelApproval, bool]:
    """Approve the level's reminders; returns its state and whether this call changed it (False: it
    was approved already). Refused (:class:`ApprovalRefused`) for a level without letters, and for a
    stored list that is no longer the level's list."""
    check_approvable(runtime, term_id)
    now = runtime.clock.now()

    def change(session: Session, row: ReminderApproval) -> tuple[LevelApproval, bool]:
        if row.approved_at is not None:
            return LevelApproval.of(row, term_id), False
        if review is not None and review.stored and (row.listed_at != review.made_at
                                                    or row.listed_letters != review.letters):
            raise ApprovalRefused("list_changed", f"the list of level {term_id} changed since it was shown "
                                  "(a newer run made another one): review it again", level=term_id)
        row.approved_at, row.approved_by, row.approved_source = now, actor[:120], source[:20]
        row.approved_letters = review.letters if review is not None else None
        row.approved_list_at = review.made_at if review is not None else None
        session.execute(sa.delete(AwaitingReminder).where(AwaitingReminder.term_id == term_id))
        row.listed_at, row.listed_letters = None, 0
        audit.record(session, subject_type=SUBJECT_TYPE, subject_id=str(term_id), action="reminders.approved", at=now,
                     actor=actor, source_ip=source_ip, source=source,
                     letters=review.letters if review is not None else None,
                     list_made_at=review.made_at.isoformat() if review is not None else None)
        return LevelApproval.of(row, term_id), True

    return _with_row(runtime, term_id, change)


def revoke(runtime: Runtime, term_id: int, *, actor: str, source: str,
           source_ip: str | None = None) -> tuple[bool, int]:
    """Stop the level's reminders again: ``(revoked, letters skipped)``. Letters and digests planned for
    it and not yet handed to a sender are skipped (``not_approved``); one being sent right now finishes.
    A level that was not approved is left as it is: ``(False, 0)``."""
    now = runtime.clock.now()
    with unit_of_work(runtime.sessions) as session:
        row = _row_for_update(session, term_id)
        if row is None or row.approved_at is None:
            return False, 0
        previous = {"approved_by": row.approved_by, "approved_at": row.approved_at.isoformat()}
        row.approved_at, row.approved_by, row.approved_source = None, "", ""
        row.approved_letters, row.approved_list_at = None, None

        def skip(model: type, *where: sa.ColumnElement[bool]) -> int:
            return session.execute(
                sa.update(model).where(model.term_id == term_id, model.state == State.PLANNED.value, *where)
                .values(state=State.SKIPPED.value, reason=NOT_APPROVED, next_attempt_at=None, updated_at=now)
                .execution_options(synchronize_session=False)).rowcount

        # A learner's place in a digest follows the digest, which counts as the letter.
        skipped = skip(Reminder, Reminder.step != ADMIN_STEP) + skip(ReminderDigest)
        skip(Reminder, Reminder.step == ADMIN_STEP)
        audit.record(session, subject_type=SUBJECT_TYPE, subject_id=str(term_id), action=REVOKED_ACTION,
                     at=now, actor=actor, source_ip=source_ip, source=source, skipped=skipped, **previous)
    return True, skipped


__all__ = ["ApprovalRefused", "LevelApproval", "Review", "approve", "approved_levels", "awaiting",
           "awaiting_digest", "check_approvable", "is_approved", "letter_count", "record_awaiting", "revoke",
           "sends_reminders", "status", "statuses"]
