"""Which reminder a sleeper is due on a day, as a pure function (no I/O).

A level's schedule has up to three learner letters at N1 < N2 < N3 days after access ended and an
admin digest M days after the last learner letter went out. Days count from X, the first day without
access (the sleeper rule's ``expired_on``), in **UTC** calendar days like the rule itself: letter n is
due on the UTC day X + Nn.

The ledger remembers every decision per (user, level, X, step), so a learner who renews and lapses
again starts a new chain under the new X, and nothing is decided twice for the same X.

Catching up after missed days (worker down, monitoring just switched on) follows three rules:

* never out of order — a step is never planned once a later step of the chain has a ledger entry,
  nor while another step of the chain is still waiting to be sent (a retry after an SMTP failure);
* an ``unknown`` letter (the SMTP server may have it) holds the rest of its chain like one in flight,
  for ``unknown_hold_days`` after it was handed over: long enough for an administrator to decide
  (mark it delivered → ``sent``, or send it again → ``planned``), never forever. Past the hold it counts
  as delivered for the ordering rules and the digest — the server had the whole message — while its
  row stays ``unknown`` for the administrator. A held step is reported (``held``), not recorded;
* never two letters at once — when several steps became due while nothing ran, only the latest is
  sent and the earlier ones are recorded as ``superseded``;
* never stale — a step more than ``catch_up_days`` past its due day is not sent (``too_late``,
  :func:`too_late`, which the sender applies too). It is not recorded either, so switching
  monitoring on for a level with years of sleepers mails nobody about old expiries; a dry run lists
  them with that reason.
"""

from __future__ import annotations

import enum
from collections.abc import Mapping
from dataclasses import dataclass
from datetime import date, timedelta

from sidecar.domain.sleepers import Reason, SleeperVerdict

LEARNER_STEPS = (1, 2, 3)
ADMIN_STEP = 4


class State(str, enum.Enum):
    PLANNED = "planned"
    SENDING = "sending"
    SENT = "sent"
    FAILED = "failed"
    UNKNOWN = "unknown"                  # may have been delivered: never sent again automatically
    SKIPPED = "skipped"


class SkipReason(str, enum.Enum):
    SUPERSEDED = "superseded"            # a later step became due at the same time and went instead
    TOO_LATE = "too_late"                # due more than catch_up_days ago
    RENEWED = "renewed"                  # access again (or a new expiry X) when it was time to send
    CERTIFICATE = "certificate"          # a manual certificate for the level arrived
    BLOCKED = "blocked"                  # MemberLux account blocked (wpm_status = inactive)
    UNSUBSCRIBED = "unsubscribed"
    MEMBERLUX_UNSUBSCRIBED = "memberlux_unsubscribed"   # clicked unsubscribe in a MemberLux auto-responder letter
    MONITORING_OFF = "monitoring_off"
    LETTER_OFF = "letter_off"            # the step's letter was emptied after it was planned
    NO_EMAIL = "no_email"                # the account has no usable address
    NOT_SLEEPER = "not_sleeper"          # any other reason the rule no longer lists the learner
    USER_DELETED = "user_deleted"
    HELD = "held"                        # an earlier letter's outcome is unknown: waits (reported, never recorded)
    NOT_APPROVED = "not_approved"        # the level's reminders are not approved (or no longer): never sent


@dataclass(frozen=True)
class Schedule:
    """One level's reminder schedule; ``None`` days = that letter is off."""

    letter_days: tuple[int | None, int | None, int | None] = (None, None, None)
    admin_days_after_last: int | None = None
    admin_on: bool = False

    @property
    def steps(self) -> list[tuple[int, int]]:
        """Configured learner steps as (step, days), in step order."""
        return [(n, d) for n, d in zip(LEARNER_STEPS, self.letter_days, strict=True) if d is not None]

    @property
    def last_step(self) -> int | None:
        steps = self.steps
        return steps[-1][0] if steps else None

    @property
    def digest_enabled(self) -> bool:
        return self.admin_on and self.admin_days_after_last is not None and self.last_step is not None


@dataclass(frozen=True)
class LedgerEntry:
    """What the ledger already holds for one step of one (user, level, X) chain."""

    state: State
    sent_on: date | None = None          # UTC day the letter went out (SENT) or was handed over (UNKNOWN)


@dataclass(frozen=True)
class Decision:
    step: int
    due_on: date
    send: bool                           # False: record (or, for TOO_LATE, only report) a skip
    reason: SkipReason | None = None


def due_on(expired_on: date, days: int) -> date:
    return expired_on + timedelta(days=days)


DEFAULT_UNKNOWN_HOLD_DAYS = 3


def too_late(due: date, today: date, catch_up_days: int) -> bool:
    """Whether a step due on ``due`` is stale on ``today``: the planner does not plan it and the sender
    does not send it once it is more than ``catch_up_days`` past its due day."""
    return (today - due).days > catch_up_days


def unknown_holds(entry: LedgerEntry, today: date, hold_days: int) -> bool:
    """Whether an ``unknown`` letter still holds its chain on ``today`` (see the module's doc)."""
    if entry.state is not State.UNKNOWN:
        return False
    return entry.sent_on is None or (today - entry.sent_on).days < hold_days


def plan_learner(schedule: Schedule, expired_on: date, today: date, ledger: Mapping[int, LedgerEntry], *,
                 catch_up_days: int, unknown_hold_days: int = DEFAULT_UNKNOWN_HOLD_DAYS) -> list[Decision]:
    """Decisions for one sleeper's learner letters on UTC day ``today`` (empty: nothing to do).

    At most one decision has ``send`` set; the others are ``superseded`` skips of earlier steps that
    were never attempted. A step held by an unknown letter comes back alone, as a ``held`` skip that
    is reported and not recorded.
    """
    due = [(n, due_on(expired_on, d)) for n, d in schedule.steps if due_on(expired_on, d) <= today]
    if not due:
        return []
    if any(entry.state in (State.PLANNED, State.SENDING) for entry in ledger.values()):
        return []  # one letter of a chain in flight at a time: the next waits, so order holds
    latest_recorded = max((n for n in ledger if n in LEARNER_STEPS), default=0)
    open_steps = [(n, when) for n, when in due if n not in ledger and n > latest_recorded]
    if not open_steps:
        return []
    step, when = open_steps[-1]
    if too_late(when, today, catch_up_days):
        return [Decision(step, when, send=False, reason=SkipReason.TOO_LATE)]
    if any(unknown_holds(entry, today, unknown_hold_days) for entry in ledger.values()):
        return [Decision(step, when, send=False, reason=SkipReason.HELD)]
    earlier = [Decision(n, d, send=False, reason=SkipReason.SUPERSEDED) for n, d in open_steps[:-1]]
    return [*earlier, Decision(step, when, send=True)]


def admin_due(schedule: Schedule, today: date, ledger: Mapping[int, LedgerEntry], *,
              unknown_hold_days: int = DEFAULT_UNKNOWN_HOLD_DAYS) -> date | None:
    """The day this sleeper belongs in the level's admin digest, if it is today or earlier and not done.

    A learner enters the digest once they received **every** configured letter of the chain (the last
    step was sent, not skipped), M days after that last letter went out. A last letter whose outcome
    is unknown counts once its hold has passed, from the day it was handed over.
    """
    if not schedule.digest_enabled or ADMIN_STEP in ledger:
        return None
    last = ledger.get(schedule.last_step or 0)
    if last is None or last.sent_on is None:
        return None
    if last.state is not State.SENT and (last.state is not State.UNKNOWN
                                         or unknown_holds(last, today, unknown_hold_days)):
        return None
    when = last.sent_on + timedelta(days=schedule.admin_days_after_last or 0)
    return when if when <= today else None


_RENEWAL_REASONS = {Reason.ACTIVE, Reason.RENEWED, Reason.UNLIMITED, Reason.ANCESTOR_ACTIVE}


def stop_reason(verdict: SleeperVerdict, planned_expiry: date, *, unsubscribed: bool, monitoring_on: bool,
                letter_on: bool, has_email: bool, memberlux_unsubscribed: bool = False) -> SkipReason | None:
    """Why a planned letter must not go out after all (checked live right before sending), or None.

    The chain belongs to one expiry X: a learner who renewed is no sleeper now, and one who renewed
    and lapsed again has a new X whose own chain starts from step 1 — either way this letter is
    stale and recorded as ``renewed``.
    """
    if not monitoring_on:
        return SkipReason.MONITORING_OFF
    if not letter_on:
        return SkipReason.LETTER_OFF
    if verdict.reason is Reason.USER_DELETED:
        return SkipReason.USER_DELETED
    if verdict.reason is Reason.MANUAL_CERTIFICATE:
        return SkipReason.CERTIFICATE
    if verdict.reason in _RENEWAL_REASONS:
        return SkipReason.RENEWED
    if not verdict.is_sleeper:
        return SkipReason.NOT_SLEEPER
    if verdict.expired_on != planned_expiry:
        return SkipReason.RENEWED
    if verdict.blocked:
        return SkipReason.BLOCKED
    if unsubscribed:
        return SkipReason.UNSUBSCRIBED
    if memberlux_unsubscribed:
        return SkipReason.MEMBERLUX_UNSUBSCRIBED
    if not has_email:
        return SkipReason.NO_EMAIL
    return None
