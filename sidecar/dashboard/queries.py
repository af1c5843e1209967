"""The dashboard's reads of our store: grouped in SQL, one statement per figure, never a row per learner
where a count will do."""

from __future__ import annotations

from collections.abc import Iterable
from dataclasses import dataclass
from datetime import date, datetime, time, timedelta, timezone

import sqlalchemy as sa
from sqlalchemy.orm import Session

from sidecar.domain.access import utc_day
from sidecar.domain.certificates import CertificateClass
from sidecar.domain.reminders import LEARNER_STEPS, State
from sidecar.memberlux.schema import parse_date
from sidecar.store.grant_models import (
    CANCELLED,
    DUPLICATED,
    FAILED,
    OPEN_STATES,
    SHADOW_STATES,
    SUCCEEDED,
    Grant,
)
from sidecar.store.monitor_models import CertificateClassRow, SleeperCount, SleeperRefresh
from sidecar.store.reminder_models import Reminder

#: A grant's outcome on the dashboard, from its status.
OUTCOMES = ("succeeded", "failed", "open", "other")
_OUTCOME_OF = {SUCCEEDED: "succeeded", FAILED: "failed", **dict.fromkeys(OPEN_STATES, "open"),
               **dict.fromkeys((CANCELLED, DUPLICATED, *SHADOW_STATES), "other")}


def grant_outcome(status: str) -> str:
    return _OUTCOME_OF.get(status, "other")


def _start_of(day: date) -> datetime:
    return datetime.combine(day, time(0), tzinfo=timezone.utc)


@dataclass(frozen=True)
class SleepersNow:
    term_id: int
    sleepers: int
    evaluated_for: date


def sleepers_now(session: Session) -> dict[int, SleepersNow]:
    """Each level's sleepers as its last refresh counted them."""
    return {int(r.term_id): SleepersNow(int(r.term_id), int(r.sleepers), r.evaluated_for)
            for r in session.scalars(sa.select(SleeperRefresh))}


def sleeper_trend(session: Session, since: date, levels: Iterable[int] | None) -> list[tuple[date, int]]:
    """Sleepers per day from ``since`` on, summed over the levels (all when ``levels`` is None) that
    have a count that day."""
    stmt = (sa.select(SleeperCount.day, sa.func.sum(SleeperCount.sleepers))
            .where(SleeperCount.day >= since).group_by(SleeperCount.day).order_by(SleeperCount.day))
    if levels is not None:
        stmt = stmt.where(SleeperCount.term_id.in_(list(levels)))
    return [(day, int(total)) for day, total in session.execute(stmt)]


@dataclass(frozen=True)
class GrantCount:
    day: date
    term_id: int | None
    channel: str
    outcome: str
    grants: int


def grants_per_day(session: Session, since: date, until: date) -> list[GrantCount]:
    """Grants received (``created_at``, UTC day) from ``since`` to ``until`` included, by day, level,
    channel and outcome."""
    day = sa.func.date(Grant.created_at)
    stmt = (sa.select(day, Grant.term_id, Grant.channel, Grant.status, sa.func.count())
            .where(Grant.created_at >= _start_of(since), Grant.created_at < _start_of(until + timedelta(days=1)))
            .group_by(day, Grant.term_id, Grant.channel, Grant.status))
    merged: dict[tuple, int] = {}
    for raw_day, term_id, channel, status, count in session.execute(stmt):
        key = (parse_date(raw_day), term_id, channel, grant_outcome(status))
        merged[key] = merged.get(key, 0) + int(count)
    return [GrantCount(d, t, c, o, n) for (d, t, c, o), n in sorted(merged.items(), key=lambda kv: str(kv[0]))]


def letters_sent(session: Session, since: date | None = None) -> dict[tuple[int, int], int]:
    """Learner letters sent (state ``sent``) per (level, step), those sent on or after ``since`` if given."""
    stmt = (sa.select(Reminder.term_id, Reminder.step, sa.func.count())
            .where(Reminder.state == State.SENT.value, Reminder.step.in_(LEARNER_STEPS))
            .group_by(Reminder.term_id, Reminder.step))
    if since is not None:
        stmt = stmt.where(Reminder.sent_at >= _start_of(since))
    return {(int(t), int(s)): int(n) for t, s, n in session.execute(stmt)}


@dataclass(frozen=True)
class SentLetter:
    user_id: int
    term_id: int
    expired_on: date
    step: int
    sent_on: date


def sent_letters(session: Session, first: date, last: date) -> list[SentLetter]:
    """Learner letters sent on a UTC day from ``first`` to ``last`` included."""
    stmt = sa.select(Reminder.user_id, Reminder.term_id, Reminder.expired_on, Reminder.step, Reminder.sent_at).where(
        Reminder.state == State.SENT.value, Reminder.step.in_(LEARNER_STEPS),
        Reminder.sent_at >= _start_of(first), Reminder.sent_at < _start_of(last + timedelta(days=1)))
    return [SentLetter(int(u), int(t), x, int(s), utc_day(at)) for u, t, x, s, at in session.execute(stmt)]


def first_letter_days(session: Session) -> dict[int, date]:
    """Per level, the UTC day its first learner letter was sent: the day its reminders started."""
    stmt = (sa.select(Reminder.term_id, sa.func.min(Reminder.sent_at))
            .where(Reminder.state == State.SENT.value, Reminder.step.in_(LEARNER_STEPS))
            .group_by(Reminder.term_id))
    return {int(t): utc_day(at) for t, at in session.execute(stmt) if at is not None}


def manual_certificate_days(session: Session, levels: Iterable[int]) -> dict[tuple[int, int], list[date]]:
    """(user, level) → the days manual, not deleted certificates of these levels were created
    (``create_date``; ``date_issue`` where that is missing), sorted."""
    day = sa.func.coalesce(CertificateClassRow.create_date, CertificateClassRow.date_issue)
    stmt = sa.select(CertificateClassRow.user_id, CertificateClassRow.level_id, day).where(
        CertificateClassRow.cls == CertificateClass.MANUAL.value, CertificateClassRow.deleted_at.is_(None),
        CertificateClassRow.level_id.in_(list(levels)))
    found: dict[tuple[int, int], list[date]] = {}
    for user_id, level_id, raw in session.execute(stmt):
        if (parsed := parse_date(raw)) is not None:
            found.setdefault((int(user_id), int(level_id)), []).append(parsed)
    for days in found.values():
        days.sort()
    return found
