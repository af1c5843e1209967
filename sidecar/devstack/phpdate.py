"""PHP's date arithmetic as MemberLux uses it for key dates (``memberlux/core.md`` 3.2).

MemberLux computes ``date_end`` with ``strtotime("+{duration} {units}", $start)`` and keeps the UTC
date. PHP adds months by bumping the month number and keeping the day of month; a day that does not
exist in the target month rolls forward into the next one (31 Jan + 1 month = 3 Mar, or 2 Mar in a
leap year). ``days`` are plain day additions. MemberLux stores any unit other than ``days`` as
``months`` (core.md 1.3), so everything else counts as months here.

Written from the PHP behaviour documented in core.md, independently of the sidecar's own rules, so
that the emulator can catch the sidecar getting them wrong.
"""

from __future__ import annotations

from collections.abc import Iterable
from dataclasses import dataclass
from datetime import date, datetime, timedelta

__all__ = ["KeyDates", "StackRow", "add_duration", "mysql_date", "key_dates"]

DAYS = "days"


def add_duration(start: date, duration: int, units: str) -> date:
    """``date('Y-m-d', strtotime("+{duration} {units}", start))``."""
    if units == DAYS:
        return start + timedelta(days=duration)
    years, month_index = divmod(start.month - 1 + duration, 12)
    # Day 1 of the target month plus (day - 1) days: exactly PHP's overflow into the next month.
    return date(start.year + years, month_index + 1, 1) + timedelta(days=start.day - 1)


def mysql_date(value: object) -> date | None:
    """A DATE column as PHP sees it: ``None`` for zero dates, NULL and anything unparsable."""
    if value is None:
        return None
    if isinstance(value, datetime):
        return value.date()
    if isinstance(value, date):
        return value
    text = str(value)[:10]
    if text.startswith("0000"):
        return None
    try:
        return date.fromisoformat(text)
    except ValueError:
        return None


@dataclass(frozen=True)
class StackRow:
    """The columns of a user's key row that MemberLux looks at when it stacks a new key."""

    term_id: int | None
    is_banned: bool
    in_basket: bool
    is_unlimited: bool
    date_end: date | None


@dataclass(frozen=True)
class KeyDates:
    date_start: date
    date_end: date


def key_dates(other_rows: Iterable[StackRow], term_id: int, today: date, duration: int, units: str) -> KeyDates:
    """Dates of a key activated on the normal path (core.md 3.2).

    ``other_rows`` are the user's rows as MemberLux has them cached for this request: the new key
    starts at the later of today and the greatest ``date_end`` among those of the same level that are
    neither banned nor in the basket, whatever their status. One unlimited such row means today.
    Zero dates count as "long ago", as ``strtotime('0000-00-00')`` does.
    """
    start = today
    same_level = [row for row in other_rows if row.term_id == term_id and not row.is_banned and not row.in_basket]
    if not any(row.is_unlimited for row in same_level):
        ends = [row.date_end for row in same_level if row.date_end is not None]
        if ends:
            start = max(today, max(ends))
    return KeyDates(start, add_duration(start, duration, units))
