"""Who is a "sleeper" for a level on a day, and why (legacy-plugins.md §3.8), as a pure function.

A sleeper's access to the level has ended (the latest end X of their keys is on or before the
evaluation day D, all in UTC days since MemberLux ends access at 00:00 UTC), they hold no unlimited
key, no ancestor level gives them access, and no manual certificate for the level. Every user
considered gets a reason, so the report can explain who is *not* listed as well as who is.
"""

from __future__ import annotations

import enum
from collections.abc import Iterable, Sequence
from dataclasses import dataclass
from datetime import date, timedelta

from sidecar.domain.access import (
    DEFAULT_POLICY,
    AccessPolicy,
    KeyRow,
    activation_day,
    effective_status,
    has_access_on,
    last_end,
    screen_rows,
)


class Reason(enum.Enum):
    SLEEPER = "sleeper"
    ACTIVE = "active"                       # has access to the level on D
    RENEWED = "renewed"                     # no access on D but a paid-ahead row ends after D
    UNLIMITED = "unlimited"
    ANCESTOR_ACTIVE = "ancestor_active"     # a parent level's key opens this level on D
    MANUAL_CERTIFICATE = "manual_certificate"
    OUTSIDE_WINDOW = "outside_window"
    NEVER_ACTIVATED = "never_activated"
    BANNED_ONLY = "banned_only"
    NO_USABLE_ROWS = "no_usable_rows"
    USER_DELETED = "user_deleted"


@dataclass(frozen=True)
class Window:
    """Optional filter on the expiry day X, both ends inclusive; the end is clamped to D."""

    start: date | None = None
    end: date | None = None


@dataclass(frozen=True, slots=True)
class SleeperVerdict:
    user_id: int
    term_id: int
    reason: Reason
    expired_on: date | None = None      # X: first day without access (MemberLux's profile shows it)
    last_grant: date | None = None      # day of the latest activation
    blocked: bool = False               # shown flagged, never mailed

    @property
    def is_sleeper(self) -> bool:
        return self.reason is Reason.SLEEPER

    @property
    def last_access_day(self) -> date | None:
        return self.expired_on - timedelta(days=1) if self.expired_on else None

    def days_since_expiry(self, day: date) -> int | None:
        return (day - self.expired_on).days if self.expired_on else None


def last_grant_day(rows: Iterable[KeyRow]) -> date | None:
    days = [d for d in (activation_day(r) for r in rows if effective_status(r) != "new") if d]
    return max(days) if days else None


def evaluate(user_id: int, term_id: int, rows: Sequence[KeyRow], day: date, *,
             ancestor_rows: Sequence[KeyRow] = (), has_manual_certificate: bool = False, blocked: bool = False,
             user_exists: bool = True, window: Window = Window(), policy: AccessPolicy = DEFAULT_POLICY,
             check_ancestors: bool = True) -> SleeperVerdict:
    """The verdict for one user and one level on UTC day ``day``; the first matching reason wins."""
    if not user_exists:
        return SleeperVerdict(user_id, term_id, Reason.USER_DELETED)
    screened = screen_rows(rows, policy)
    grant = last_grant_day(screened.activated)

    def verdict(reason: Reason, expired_on: date | None = None) -> SleeperVerdict:
        return SleeperVerdict(user_id, term_id, reason, expired_on, grant, blocked)

    if screened.problem is not None:
        # never_activated, banned_only, no_usable_rows: the same names in both enums.
        return verdict(Reason(screened.problem.value))
    qualifying = screened.qualifying
    if any(r.is_unlimited for r in qualifying):
        return verdict(Reason.UNLIMITED)
    x = last_end(qualifying, policy)
    assert x is not None  # qualifying limited rows always have an end
    if x > day:
        return verdict(Reason.ACTIVE if has_access_on(qualifying, day, policy) else Reason.RENEWED, x)
    if check_ancestors and ancestor_rows and has_access_on(ancestor_rows, day, policy):
        return verdict(Reason.ANCESTOR_ACTIVE, x)
    if has_manual_certificate:
        return verdict(Reason.MANUAL_CERTIFICATE, x)
    window_end = min(window.end, day) if window.end else day
    if (window.start and x < window.start) or x > window_end:
        return verdict(Reason.OUTSIDE_WINDOW, x)
    return verdict(Reason.SLEEPER, x)
