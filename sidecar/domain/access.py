"""Who has access to a MemberLux level, and since or until when.

Pure functions over rows of ``{p}memberlux_term_keys`` (MemberLux core reference, sections 3 and 10).
No I/O: the adapter reads the rows, turns zero dates (``0000-00-00``) into ``None`` and hands
over :class:`KeyRow` values for one user and one level at a time.

Time
    Every date here is a **UTC calendar day**. MemberLux writes key dates with PHP's clock forced to
    UTC and access ends at 00:00 UTC of ``date_end``; a site's own time zone matters for display only.
    Functions taking a day also accept a ``datetime``: an aware one is converted to UTC first, a naive
    one is taken to be UTC already.

Intervals
    A row covers the half-open range ``[date_start, date_end)``: ``date_start`` is the first day with
    access, ``date_end`` the first day without it. Unlimited rows cover ``[date_start, ∞)`` whatever
    ``date_end`` says, since MemberLux fills it from a duration it never uses.

Status
    The ``status`` column lags behind the daily cron and flips ``expired`` -> ``used`` whenever a user's
    key list is rendered, so it is used only to drop never-activated (``new``) rows, whose dates are
    placeholders. Everything else is decided from dates.
"""

from __future__ import annotations

import enum
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass, replace
from datetime import date, datetime, timedelta, timezone

__all__ = [
    "KEY_STATUS_NEW",
    "KEY_STATUS_USED",
    "KEY_STATUS_EXPIRED",
    "KEY_TYPE_TERM",
    "KEY_TYPE_BASKET",
    "UNITS_DAYS",
    "UNITS_MONTHS",
    "KeyRow",
    "AccessPolicy",
    "DEFAULT_POLICY",
    "Period",
    "AccessState",
    "AccessVerdict",
    "utc_day",
    "effective_status",
    "is_basket",
    "is_zero_length",
    "activation_day",
    "qualifying_rows",
    "access_periods",
    "period_on",
    "has_access_on",
    "access_ended_on",
    "last_end",
    "renewal_after",
    "is_unlimited",
    "rows_for_level",
    "level_access_on",
    "classify",
    "add_duration",
    "activation_dates",
]

KEY_STATUS_NEW = "new"
KEY_STATUS_USED = "used"
KEY_STATUS_EXPIRED = "expired"
KEY_TYPE_TERM = "wpm_term_keys"
KEY_TYPE_BASKET = "wpm_keys_basket"
UNITS_DAYS = "days"
UNITS_MONTHS = "months"

_ACTIVATED_STATUSES = frozenset({KEY_STATUS_USED, KEY_STATUS_EXPIRED})
_ONE_DAY = timedelta(days=1)


@dataclass(frozen=True, slots=True)
class KeyRow:
    """One row of ``{p}memberlux_term_keys``, already normalised by the adapter.

    ``status`` ``None`` behaves as ``new`` (the column's ENUM default) and ``key_type`` ``None`` as
    ``wpm_term_keys``. ``units`` other than ``days`` mean months, as MemberLux coerces them on write.
    ``date_end`` is exclusive. ``activated_at`` comes from ``keys_meta.activation_datetime`` (UTC).
    """

    key_id: int
    user_id: int | None
    term_id: int | None
    status: str | None
    key_type: str | None
    is_banned: bool
    is_unlimited: bool
    duration: int
    units: str
    date_start: date | None
    date_end: date | None
    date_registered: date | None
    activated_at: datetime | None = None


@dataclass(frozen=True)
class AccessPolicy:
    """Choices the MemberLux data leaves open.

    ``include_basket``: MemberLux's access check ignores ``key_type``, so a used row an admin moved to
    the basket keeps opening content until its ``date_end``. ``True`` mirrors MemberLux.
    """

    include_basket: bool = True


DEFAULT_POLICY = AccessPolicy()


@dataclass(frozen=True, slots=True)
class Period:
    """Half-open ``[start, end)`` in UTC days; ``end`` ``None`` means unlimited."""

    start: date
    end: date | None

    def contains(self, day: date) -> bool:
        return self.start <= day and (self.end is None or day < self.end)

    @property
    def is_unlimited(self) -> bool:
        return self.end is None

    @property
    def last_day(self) -> date | None:
        """Last day with access (``end - 1``), ``None`` when unlimited."""
        return None if self.end is None else self.end - _ONE_DAY


class AccessState(enum.Enum):
    """Outcome of :func:`classify` (precedence is documented there)."""

    ORPHANED = "orphaned"
    BLOCKED = "blocked"
    NEVER_ACTIVATED = "never_activated"
    BANNED_ONLY = "banned_only"
    NO_USABLE_ROWS = "no_usable_rows"
    UNLIMITED = "unlimited"
    ACTIVE = "active"
    EXPIRED = "expired"
    NOT_STARTED = "not_started"


@dataclass(frozen=True, slots=True)
class AccessVerdict:
    """What the rows of one user and one level say about a given day.

    ``ended_on``: the exclusive end of the lapse in progress (EXPIRED only).
    ``current_period``: the merged period containing the day (ACTIVE, UNLIMITED).
    ``renewed_by``: the row that opens the next stretch of access after the day: a renewal after a
    lapse (EXPIRED), a stacked or paid-ahead row (ACTIVE) or the first row (NOT_STARTED).
    ``underlying``: for BLOCKED only, the state the keys alone would give; the other fields are then
    filled from the keys as well, for display. A blocked verdict never means access.
    """

    state: AccessState
    ended_on: date | None = None
    current_period: Period | None = None
    renewed_by: KeyRow | None = None
    underlying: AccessState | None = None

    @property
    def has_access(self) -> bool:
        return self.state in (AccessState.ACTIVE, AccessState.UNLIMITED)


# --------------------------------------------------------------------------------------------------
# Row-level helpers


def utc_day(value: date | datetime) -> date:
    """The UTC calendar day of ``value`` (naive datetimes are taken to be UTC)."""
    if isinstance(value, datetime):
        if value.tzinfo is not None and value.utcoffset() is not None:
            value = value.astimezone(timezone.utc)
        return value.date()
    return value


def effective_status(row: KeyRow) -> str:
    return row.status if row.status is not None else KEY_STATUS_NEW


def is_basket(row: KeyRow) -> bool:
    return row.key_type == KEY_TYPE_BASKET


def is_zero_length(row: KeyRow) -> bool:
    """A limited row that never opens a single day (e.g. duration 0)."""
    return (
        not row.is_unlimited
        and row.date_start is not None
        and row.date_end is not None
        and row.date_end <= row.date_start
    )


def activation_day(row: KeyRow) -> date | None:
    """UTC day the row was activated.

    ``date_registered`` is NULL for keys activated on the registration path and ``date_start`` of a
    stacked key lies in the future, hence the order: ``keys_meta`` first, then ``date_registered``,
    then ``date_start``.
    """
    if row.activated_at is not None:
        return utc_day(row.activated_at)
    if row.date_registered is not None:
        return row.date_registered
    return row.date_start


def _is_usable(row: KeyRow) -> bool:
    if row.date_start is None:
        return False
    # An unlimited row's date_end is meaningless, so a zero date there does no harm.
    return row.is_unlimited or row.date_end is not None


def qualifying_rows(rows: Iterable[KeyRow], policy: AccessPolicy = DEFAULT_POLICY) -> list[KeyRow]:
    """rows(U, T): the rows whose dates decide access.

    Kept: not banned, status ``used`` or ``expired``, basket rows only if the policy includes them,
    and dates present (``date_start`` always; ``date_end`` too unless unlimited). Zero-length rows are
    kept: they give no access but still mark an expiry (see :func:`access_ended_on`).
    The rows are assumed to belong to one user and one level; the caller selects them.
    """
    return [
        row
        for row in rows
        if not row.is_banned
        and effective_status(row) in _ACTIVATED_STATUSES
        and (policy.include_basket or not is_basket(row))
        and _is_usable(row)
    ]


# --------------------------------------------------------------------------------------------------
# Intervals


def _row_interval(row: KeyRow) -> tuple[date, date | None]:
    """The row's interval; a row ending before it starts is clamped to an empty one at its start."""
    assert row.date_start is not None
    if row.is_unlimited:
        return row.date_start, None
    assert row.date_end is not None
    return row.date_start, max(row.date_start, row.date_end)


def _merge(intervals: Iterable[tuple[date, date | None]]) -> list[Period]:
    merged: list[Period] = []
    for start, end in sorted(intervals, key=lambda iv: iv[0]):
        if merged:
            last = merged[-1]
            # ``<=`` joins stacked renewals, which start exactly on the previous end.
            if last.end is None or start <= last.end:
                if last.end is not None and (end is None or end > last.end):
                    merged[-1] = Period(last.start, end)
                continue
        merged.append(Period(start, end))
    return merged


def access_periods(rows: Iterable[KeyRow], policy: AccessPolicy = DEFAULT_POLICY) -> list[Period]:
    """Merged access periods: sorted, disjoint and never adjacent.

    Touching or overlapping intervals join, so stacked renewals form one period. Zero-length rows give
    no period. An unlimited row absorbs everything from its start on.
    """
    return _merge(
        _row_interval(row) for row in qualifying_rows(rows, policy) if not is_zero_length(row)
    )


def period_on(
    rows: Iterable[KeyRow], day: date | datetime, policy: AccessPolicy = DEFAULT_POLICY
) -> Period | None:
    """The merged period containing ``day``, if any (blocking is not considered)."""
    day = utc_day(day)
    for period in access_periods(rows, policy):
        if period.start > day:
            break
        if period.contains(day):
            return period
    return None


def has_access_on(
    rows: Iterable[KeyRow],
    day: date | datetime,
    policy: AccessPolicy = DEFAULT_POLICY,
    *,
    blocked: bool = False,
) -> bool:
    """Whether the rows open the level on ``day``.

    A blocked account (usermeta ``wpm_status`` = ``inactive``) has no access whatever its keys say.
    """
    if blocked:
        return False
    day = utc_day(day)
    for row in qualifying_rows(rows, policy):
        start, end = _row_interval(row)
        if start <= day and (end is None or day < end):
            return True
    return False


def access_ended_on(
    rows: Iterable[KeyRow], day: date | datetime, policy: AccessPolicy = DEFAULT_POLICY
) -> date | None:
    """"Access expired on X" as of ``day``.

    X is the (exclusive) end of the last merged interval that started on or before ``day``, returned
    only when that interval is limited and over (X <= ``day``). ``None`` when access runs on ``day``,
    is unlimited, or nothing started by ``day``.

    Unlike :func:`access_periods`, zero-length rows take part here as empty intervals: a duration-0
    grant reads as expired on its start day, as the sleepers definition expects, and whenever
    :func:`last_end` is on or before ``day`` the two agree.
    """
    day = utc_day(day)
    intervals = [_row_interval(row) for row in qualifying_rows(rows, policy)]
    started = [p for p in _merge(intervals) if p.start <= day]
    if not started:
        return None
    end = started[-1].end
    if end is None or end > day:
        return None
    return end


def last_end(rows: Iterable[KeyRow], policy: AccessPolicy = DEFAULT_POLICY) -> date | None:
    """X of the sleepers definition: the greatest ``date_end`` over the qualifying rows.

    ``None`` when no row qualifies or one of them is unlimited (such a user never expires).
    """
    qualifying = qualifying_rows(rows, policy)
    if not qualifying or any(row.is_unlimited for row in qualifying):
        return None
    return max(row.date_end for row in qualifying if row.date_end is not None)


def renewal_after(
    rows: Iterable[KeyRow], ended_on: date | datetime, policy: AccessPolicy = DEFAULT_POLICY
) -> KeyRow | None:
    """The earliest qualifying row starting on or after ``ended_on``.

    A renewal bought before expiry starts exactly on the old end; one bought after a lapse starts later.
    Zero-length rows are skipped: they open nothing, so they renew nothing. Ties go to the lower key id.
    """
    ended_on = utc_day(ended_on)
    candidates = [
        row
        for row in qualifying_rows(rows, policy)
        if not is_zero_length(row) and row.date_start is not None and row.date_start >= ended_on
    ]
    if not candidates:
        return None
    return min(candidates, key=lambda row: (row.date_start, row.key_id))


def is_unlimited(rows: Iterable[KeyRow], policy: AccessPolicy = DEFAULT_POLICY) -> bool:
    """Whether any qualifying row is unlimited (even one that starts later)."""
    return any(row.is_unlimited for row in qualifying_rows(rows, policy))


# --------------------------------------------------------------------------------------------------
# Level hierarchy


def rows_for_level(
    rows_by_level: Mapping[int, Sequence[KeyRow]], level: int, ancestors: Sequence[int]
) -> list[KeyRow]:
    """Rows of ``level`` and of each ancestor: a key for a parent level also opens its descendants."""
    combined: list[KeyRow] = []
    seen: set[int] = set()
    for term_id in (level, *ancestors):
        if term_id in seen:
            continue
        seen.add(term_id)
        combined.extend(rows_by_level.get(term_id, ()))
    return combined


def level_access_on(
    rows_by_level: Mapping[int, Sequence[KeyRow]],
    level: int,
    ancestors: Sequence[int],
    day: date | datetime,
    policy: AccessPolicy = DEFAULT_POLICY,
    *,
    blocked: bool = False,
) -> bool:
    """Content access to ``level`` on ``day``, counting keys of the level and of its ancestors."""
    return has_access_on(
        rows_for_level(rows_by_level, level, ancestors), day, policy, blocked=blocked
    )


# --------------------------------------------------------------------------------------------------
# Classification


@dataclass(frozen=True, slots=True)
class Screened:
    """A user's rows for one level sorted out: the activated ones, the ones that count, and why
    nothing counts when that is the case (NEVER_ACTIVATED, BANNED_ONLY or NO_USABLE_ROWS)."""

    activated: list[KeyRow]
    qualifying: list[KeyRow]
    problem: AccessState | None


def screen_rows(rows: Iterable[KeyRow], policy: AccessPolicy = DEFAULT_POLICY) -> Screened:
    activated = [row for row in rows if effective_status(row) in _ACTIVATED_STATUSES]
    if not activated:
        return Screened(activated, [], AccessState.NEVER_ACTIVATED)
    if all(row.is_banned for row in activated):
        return Screened(activated, [], AccessState.BANNED_ONLY)
    qualifying = qualifying_rows(activated, policy)
    return Screened(activated, qualifying, None if qualifying else AccessState.NO_USABLE_ROWS)


def classify(
    rows: Iterable[KeyRow],
    day: date | datetime,
    policy: AccessPolicy = DEFAULT_POLICY,
    *,
    blocked: bool = False,
    user_exists: bool = True,
    level_exists: bool = True,
) -> AccessVerdict:
    """Classify one user's rows for one level on ``day``.

    The first matching state wins:

    1. ORPHANED - the user or the level is gone (MemberLux leaves their rows behind); nothing else
       is computed.
    2. BLOCKED - the account is blocked; this overrides any key. ``underlying`` and the other fields
       carry what the keys alone say.
    3. NEVER_ACTIVATED - no rows, or none with status ``used``/``expired``.
    4. BANNED_ONLY - every activated row is banned (revoked, not expired).
    5. NO_USABLE_ROWS - activated, unbanned rows exist but none qualifies (zero dates, or basket rows
       excluded by the policy).
    6. UNLIMITED - ``day`` lies in a period with no end.
    7. ACTIVE - ``day`` lies in a limited period; ``renewed_by`` is the earliest row starting after
       ``day`` (stacked or paid ahead), if any.
    8. EXPIRED - something started by ``day`` and has ended (:func:`access_ended_on`);
       ``renewed_by`` is the renewal after the lapse, if one exists.
    9. NOT_STARTED - rows qualify but none has started by ``day`` (e.g. a future row left behind when
       the current key was banned); ``renewed_by`` is the first row that will open access.
    """
    day = utc_day(day)
    if not (user_exists and level_exists):
        return AccessVerdict(AccessState.ORPHANED)
    rows = list(rows)
    if blocked:
        keys_only = classify(rows, day, policy)
        return replace(keys_only, state=AccessState.BLOCKED, underlying=keys_only.state)

    screened = screen_rows(rows, policy)
    if screened.problem is not None:
        return AccessVerdict(screened.problem)
    qualifying = screened.qualifying

    current = period_on(qualifying, day, policy)
    if current is not None:
        if current.end is None:
            return AccessVerdict(AccessState.UNLIMITED, current_period=current)
        return AccessVerdict(
            AccessState.ACTIVE,
            current_period=current,
            renewed_by=renewal_after(qualifying, day + _ONE_DAY, policy),
        )
    ended = access_ended_on(qualifying, day, policy)
    if ended is not None:
        return AccessVerdict(
            AccessState.EXPIRED,
            ended_on=ended,
            renewed_by=renewal_after(qualifying, ended, policy),
        )
    return AccessVerdict(
        AccessState.NOT_STARTED, renewed_by=renewal_after(qualifying, day + _ONE_DAY, policy)
    )


# --------------------------------------------------------------------------------------------------
# MemberLux's date arithmetic


def add_duration(start: date, duration: int, units: str) -> date:
    """``start`` + ``duration`` ``units`` the way MemberLux (PHP) computes ``date_end``.

    ``days`` is plain day arithmetic. Anything else counts as months, since MemberLux stores any other
    unit as ``months``; PHP keeps the day of month and lets an overflow roll into the following month
    (31 Jan + 1 month = 3 Mar, or 2 Mar in a leap year). Negative durations move backwards by the same
    rule. Raises ``OverflowError`` outside the range of :class:`datetime.date`.
    """
    try:
        if units == UNITS_DAYS:
            return start + timedelta(days=duration)
        years, month_index = divmod(start.month - 1 + duration, 12)
        first_of_month = date(start.year + years, month_index + 1, 1)
        return first_of_month + timedelta(days=start.day - 1)
    except (ValueError, OverflowError) as exc:
        raise OverflowError(f"{start} + {duration} {units} is out of range") from exc


def activation_dates(
    existing_rows: Iterable[KeyRow],
    today: date | datetime,
    duration: int,
    units: str,
    *,
    same_level: bool = True,
) -> tuple[date, date]:
    """``(date_start, date_end)`` MemberLux gives a key activated today on the normal path.

    ``existing_rows`` are the user's other rows. With ``same_level`` they belong to the level being
    activated and a new key stacks: it starts at the greatest ``date_end`` among those not banned, not
    in the basket and not ``new``, unless that lies before today or one of them is unlimited (then
    today). Rows of other levels never stack, so ``same_level=False`` always starts today, as does the
    registration path. Basket rows are excluded whatever the access policy: activation ignores them.
    """
    today = utc_day(today)
    start = today
    if same_level:
        stacking = [
            row
            for row in existing_rows
            if not row.is_banned and not is_basket(row) and effective_status(row) != KEY_STATUS_NEW
        ]
        if not any(row.is_unlimited for row in stacking):
            ends = [row.date_end for row in stacking if row.date_end is not None]
            if ends:
                start = max(today, max(ends))
    return start, add_duration(start, duration, units)
