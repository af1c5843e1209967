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
    KEY_STATUS_EXPIRED,
    KEY_STATUS_USED,
    KEY_TYPE_BASKET,
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


# --------------------------------------------------------------------------------------------------
# The same rule over row facts, for whole-site passes
#
# A pass evaluates every user on every level: about a million rows. :func:`evaluate` reads each row
# several times through small helpers; :func:`evaluate_facts` reads, once, only what the rule uses of
# each row, reduced beforehand by :func:`key_facts` to a plain tuple. tests/domain/test_sleepers.py
# proves ``evaluate_facts`` over ``row_facts`` equal to ``evaluate`` for any rows, ancestors, day and
# policy, so :func:`evaluate` stays the rule and this is only a faster reading of it.

#: A row's standing under a policy, the first that applies: not activated (status ``new``), banned,
#: activated but not counting (zero dates, basket rows the policy excludes), counting.
NOT_ACTIVATED, BANNED, UNUSABLE, QUALIFYING = 0, 1, 2, 3

#: ``(term_id, standing, grant, unlimited, start, end)``: ``grant`` is the activation day of an activated
#: row; ``start`` and ``end`` are the interval of a counting row (``end`` :data:`NEVER` when unlimited),
#: :data:`NO_DAY` otherwise.
RowFacts = tuple[int | None, int, date | None, bool, date, date]

NO_DAY = date.min
NEVER = date.max
_ACTIVATED = frozenset({KEY_STATUS_USED, KEY_STATUS_EXPIRED})


def key_facts(term_id: int | None, status: str | None, key_type: str | None, is_banned: bool, is_unlimited: bool,
              date_start: date | None, date_end: date | None, date_registered: date | None,
              activated_on: date | None, include_basket: bool = True) -> RowFacts:
    """The facts of one key row given its fields (``activated_on``: the UTC day of ``activated_at``)."""
    if status not in _ACTIVATED:
        return term_id, NOT_ACTIVATED, None, False, NO_DAY, NO_DAY
    grant = activated_on if activated_on is not None else date_registered if date_registered is not None \
        else date_start
    if is_banned:
        return term_id, BANNED, grant, False, NO_DAY, NO_DAY
    if date_start is None or (key_type == KEY_TYPE_BASKET and not include_basket):
        return term_id, UNUSABLE, grant, False, NO_DAY, NO_DAY
    if is_unlimited:
        return term_id, QUALIFYING, grant, True, date_start, NEVER
    if date_end is None:
        return term_id, UNUSABLE, grant, False, NO_DAY, NO_DAY
    return term_id, QUALIFYING, grant, False, date_start, date_end


def row_facts(row: KeyRow, policy: AccessPolicy = DEFAULT_POLICY) -> RowFacts:
    activated_on = activation_day(row) if row.activated_at is not None else None
    return key_facts(row.term_id, row.status, row.key_type, row.is_banned, row.is_unlimited, row.date_start,
                     row.date_end, row.date_registered, activated_on, policy.include_basket)


def evaluate_facts(facts: Sequence[RowFacts], day: date, *, ancestor_facts: Sequence[RowFacts] = (),
                   has_manual_certificate: bool = False, window: Window = Window(),
                   check_ancestors: bool = True) -> tuple[Reason, date | None, date | None]:
    """``(reason, expired_on, last_grant)`` of :func:`evaluate` for an existing user, from the facts of the
    user's rows of the level and of its ancestor levels (all taken under the same policy)."""
    grant: date | None = None
    x: date | None = None
    activated = unbanned = counting = unlimited = False
    for _term, standing, row_grant, row_unlimited, _start, end in facts:
        if standing == NOT_ACTIVATED:
            continue
        activated = True
        if row_grant is not None and (grant is None or row_grant > grant):
            grant = row_grant
        if standing == BANNED:
            continue
        unbanned = True
        if standing == UNUSABLE:
            continue
        counting = True
        if row_unlimited:
            unlimited = True
        elif x is None or end > x:
            x = end
    if not activated:
        return Reason.NEVER_ACTIVATED, None, None
    if not unbanned:
        return Reason.BANNED_ONLY, None, grant
    if not counting:
        return Reason.NO_USABLE_ROWS, None, grant
    if unlimited:
        return Reason.UNLIMITED, None, grant
    assert x is not None  # counting limited rows always have an end
    if x > day:
        # A limited row opens [start, end); one ending before it starts opens nothing, as in has_access_on.
        active = any(f[1] == QUALIFYING and f[4] <= day < f[5] for f in facts)
        return (Reason.ACTIVE if active else Reason.RENEWED), x, grant
    if check_ancestors and ancestor_facts and any(
            f[1] == QUALIFYING and f[4] <= day and (f[3] or day < f[5]) for f in ancestor_facts):
        return Reason.ANCESTOR_ACTIVE, x, grant
    if has_manual_certificate:
        return Reason.MANUAL_CERTIFICATE, x, grant
    window_end = min(window.end, day) if window.end else day
    if (window.start and x < window.start) or x > window_end:
        return Reason.OUTSIDE_WINDOW, x, grant
    return Reason.SLEEPER, x, grant
