"""Where one sleeper's reminder chain stands on a day, as the sleepers list shows it (pure, no I/O).

A chain belongs to one expiry X (:mod:`sidecar.domain.reminders`). From its ledger entries, the level's
schedule and what is known about the learner, :func:`chain_status` says which letter went out last,
which one comes next and when, or why nothing more will be sent. It follows the planner's own rules
(:func:`~sidecar.domain.reminders.plan_learner` and the checks the planner applies before sending), so
the list never promises a letter the next run would not send.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass
from datetime import date

from sidecar.domain.reminders import LEARNER_STEPS, Schedule, SkipReason, State, due_on, too_late

#: Why a chain sends nothing more, besides the ledger's own skip reasons (:class:`SkipReason` values).
MONITORING_OFF = "monitoring_off"     # the level's monitoring is off or no letter is set
NOT_APPROVED = "not_approved"         # the level's reminders wait for an administrator's approval
COMPLETE = "complete"                 # every letter of the schedule went out
FAILED = "failed"                     # the last letter failed for good
UNKNOWN = "unknown"                   # the last letter's outcome is unknown: an administrator decides


@dataclass(frozen=True)
class ChainEntry:
    """One learner-letter row of the ledger for the chain."""

    state: State
    due_on: date
    sent_on: date | None = None       # UTC day it went out (sent) or was handed over (unknown)
    reason: str = ""                  # the skip reason of a skipped row


@dataclass(frozen=True)
class Learner:
    """What the planner checks about the learner before a letter goes out."""

    blocked: bool = False
    unsubscribed: bool = False
    memberlux_unsubscribed: bool = False
    has_email: bool = True


@dataclass(frozen=True)
class ChainStatus:
    last_step: int | None = None      # the last learner letter sent
    last_sent_on: date | None = None
    next_step: int | None = None      # the letter the chain sends next (planned or due later)
    next_due: date | None = None
    stopped: str | None = None        # why nothing more goes out (None while the chain runs)


def chain_status(schedule: Schedule, expired_on: date, today: date, ledger: Mapping[int, ChainEntry], *,
                 level_on: bool, approved: bool, learner: Learner, catch_up_days: int) -> ChainStatus:
    """The chain of expiry ``expired_on`` on UTC day ``today``."""
    sent = [(n, e) for n, e in sorted(ledger.items()) if n in LEARNER_STEPS and e.state is State.SENT]
    last_step, last_sent_on = (sent[-1][0], sent[-1][1].sent_on) if sent else (None, None)

    def status(next_step: int | None = None, next_due: date | None = None, stopped: str | None = None) -> ChainStatus:
        return ChainStatus(last_step, last_sent_on, next_step, next_due, stopped)

    if not level_on or not schedule.steps:
        return status(stopped=MONITORING_OFF)
    recorded = [n for n in ledger if n in LEARNER_STEPS]
    latest = max(recorded, default=0)
    if latest:
        entry = ledger[latest]
        if entry.state in (State.PLANNED, State.SENDING):
            return status(latest, entry.due_on)
        if entry.state is State.FAILED:
            return status(stopped=FAILED)
        if entry.state is State.UNKNOWN:
            return status(stopped=UNKNOWN)
        if entry.state is State.SKIPPED and entry.reason != SkipReason.SUPERSEDED.value:
            return status(stopped=entry.reason or SkipReason.NOT_SLEEPER.value)
    open_steps = [(n, due_on(expired_on, d)) for n, d in schedule.steps if n > latest]
    if not open_steps:
        return status(stopped=COMPLETE)
    due_now = [(n, when) for n, when in open_steps if when <= today]
    step, when = due_now[-1] if due_now else open_steps[0]   # several due at once: only the latest goes
    if too_late(when, today, catch_up_days):
        return status(stopped=SkipReason.TOO_LATE.value)
    for holds, reason in ((learner.blocked, SkipReason.BLOCKED), (learner.unsubscribed, SkipReason.UNSUBSCRIBED),
                          (learner.memberlux_unsubscribed, SkipReason.MEMBERLUX_UNSUBSCRIBED),
                          (not learner.has_email, SkipReason.NO_EMAIL)):
        if holds:
            return status(stopped=reason.value)
    if not approved:
        return status(step, when, stopped=NOT_APPROVED)
    return status(step, when)
