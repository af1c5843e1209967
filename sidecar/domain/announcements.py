"""Which MemberLux facts are news worth an outbound event: pure rules over key rows and dates.

Activations (``access.activated``)
    Every activation path writes the key row's dates from the day of activation (core.md 3.2): the
    normal path starts at the later of *now* and the learner's current end of the level (stacking),
    the registration path today. A row activated on UTC day A therefore has ``date_start >= A``.
    Codes generated in advance and still unused carry placeholder dates: ``0000-00-00``, or 1 January
    of the year ten years after the day core re-saved them (3.3) — always a 1 January. So a read-only
    scan finds every activation among the activated rows whose ``date_start`` lies in
    :func:`scan_window` (from the day before the previous scan to :data:`HORIZON_DAYS` ahead), read as
    the index ranges of :func:`scan_ranges` (``date_start`` has an index, 1.3): the days up to today
    whole, and the future around every 1 January, so the placeholders of a future 1 January are never
    read. A renewal stacked to start exactly on a future 1 January, or further ahead than the
    horizon, is announced when its start comes within the days read. Only when the days up to today
    include a 1 January (once a year, for a day or two) does the scan pass over that day's
    placeholders, which the status filter drops.

    A scan must never announce history: activations whose day (:func:`activation_day`) is before the
    day the sidecar started looking (``since``) are not news.

    An activation is several autocommitted statements (10, "Partial writes"): the key row first, core's
    ``keys_meta`` row (with its ``source``) a moment later. :func:`is_settled` tells when the reader has
    seen the whole of it.

MemberLux's webhook (a hint)
    The payload names the learner by e-mail and the level, not the key (6.4). :func:`match_hint` picks
    the key row it speaks of: an activated row of that learner and level, activated within a day of the
    hint's arrival (the webhook is sent from inside the activating request), with the payload's dates
    when it carries real ones (the registration path sends ``30-11--0001``).

Expiries (``access.expired``)
    Once per (learner, level, end of access), for ends on or after the day the sidecar started looking.
"""

from __future__ import annotations

from collections.abc import Iterable
from dataclasses import dataclass
from datetime import date, timedelta

from sidecar.domain.access import (
    DEFAULT_POLICY,
    KEY_STATUS_EXPIRED,
    KEY_STATUS_USED,
    AccessPolicy,
    KeyRow,
    activation_day,
    effective_status,
    is_basket,
)

__all__ = [
    "HORIZON_DAYS",
    "MAX_CATCH_UP_DAYS",
    "HINT_TOLERANCE_DAYS",
    "Window",
    "scan_window",
    "scan_ranges",
    "is_activation",
    "is_news",
    "is_settled",
    "payload_date",
    "match_hint",
    "expiry_is_news",
    "first_expiry_day",
    "best_certificate_class",
]

#: Stacked renewals up to this many days ahead are announced when activated.
HORIZON_DAYS = 3 * 366
#: After a long pause the first scan looks back to the day before the previous scan, at most this far.
MAX_CATCH_UP_DAYS = 31
#: A hint matches keys activated within this many days of its arrival (UTC; site-local ``keys_meta``
#: times written by the auto-responder can be a day off).
HINT_TOLERANCE_DAYS = 1

_ONE_DAY = timedelta(days=1)
_ACTIVATED = frozenset({KEY_STATUS_USED, KEY_STATUS_EXPIRED})


@dataclass(frozen=True, slots=True)
class Window:
    """Inclusive range of ``date_start`` values the scan reads."""

    first: date
    last: date


def scan_window(today: date, last_scanned: date | None = None) -> Window:
    """From the day before the previous scan (or yesterday), bounded by :data:`MAX_CATCH_UP_DAYS`,
    to :data:`HORIZON_DAYS` ahead.

    The day before covers activations just before midnight UTC read after it; a worker that was
    stopped for a week looks back over that week once.
    """
    first = today - _ONE_DAY
    if last_scanned is not None and last_scanned < today:
        first = max(last_scanned - _ONE_DAY, today - timedelta(days=MAX_CATCH_UP_DAYS))
    return Window(first, today + timedelta(days=HORIZON_DAYS))


def scan_ranges(today: date, last_scanned: date | None = None) -> list[tuple[date, date]]:
    """The window of :func:`scan_window` as inclusive ``date_start`` ranges: up to today whole, then the
    future with every 1 January left out (unused codes' placeholder day)."""
    window = scan_window(today, last_scanned)
    ranges = [(window.first, today)]
    start = today + _ONE_DAY
    while start <= window.last:
        if (start.month, start.day) == (1, 1):
            start += _ONE_DAY
            continue
        end = min(date(start.year + 1, 1, 1) - _ONE_DAY, window.last)
        ranges.append((start, end))
        start = end + _ONE_DAY
    return ranges


def is_activation(row: KeyRow, policy: AccessPolicy = DEFAULT_POLICY) -> bool:
    """An activated key that opens (or opened) a level for a learner.

    Banned rows are left out (an administrator revoked them before anyone was told); basket rows
    follow the access policy, as MemberLux still honours a used basket row (core.md 3.5).
    """
    return (row.user_id is not None and row.term_id is not None and not row.is_banned
            and effective_status(row) in _ACTIVATED and (policy.include_basket or not is_basket(row)))


def is_news(row: KeyRow, since: date) -> bool:
    """Activated on or after ``since``; a row with no date at all cannot be placed and is not news."""
    day = activation_day(row)
    return day is not None and day >= since


def is_settled(row: KeyRow, source: str | None, today: date) -> bool:
    """Whether the activation is completely written.

    Core writes ``keys_meta.source`` last (``''`` when the caller gave none); the auto-responder's
    earlier ``keys_meta`` row leaves it NULL. A row activated on an earlier day is settled whatever
    ``keys_meta`` says: the request that activated it ended long ago.
    """
    if source is not None:
        return True
    return activation_day(row) != today


def payload_date(value: object) -> date | None:
    """A ``dd-mm-yyyy`` date of MemberLux's webhook payload, or None (null, ``30-11--0001``, garbage)."""
    if not isinstance(value, str):
        return None
    parts = value.strip().split("-")
    if len(parts) != 3 or not all(p.isdecimal() for p in parts) or len(parts[2]) != 4:
        return None
    try:
        return date(int(parts[2]), int(parts[1]), int(parts[0]))
    except ValueError:
        return None


def match_hint(rows: Iterable[KeyRow], *, received_on: date, date_start: date | None, date_end: date | None,
               known: Iterable[int] = (), policy: AccessPolicy = DEFAULT_POLICY) -> KeyRow | None:
    """The key a confirmed hint announces: the lowest-id row of the learner and level that is an
    activation, not announced yet (``known``), activated within :data:`HINT_TOLERANCE_DAYS` of the hint's
    UTC day, and — when the payload carries a real ``date_start`` — with the payload's dates
    (``date_end`` is compared for limited keys only). None when no row fits: the scan will find it.
    """
    seen = set(known)

    def recent(row: KeyRow) -> bool:
        day = activation_day(row)
        return day is not None and abs((day - received_on).days) <= HINT_TOLERANCE_DAYS

    def same_dates(row: KeyRow) -> bool:
        if date_start is None:
            return True
        return row.date_start == date_start and (row.is_unlimited or date_end is None or row.date_end == date_end)

    fitting = [row for row in rows
               if is_activation(row, policy) and row.key_id not in seen and recent(row) and same_dates(row)]
    return min(fitting, key=lambda row: row.key_id) if fitting else None


def first_expiry_day(today: date) -> date:
    """The ``since`` of expiries when the sidecar starts looking: tomorrow (today's are already history)."""
    return today + _ONE_DAY


def expiry_is_news(expired_on: date | None, since: date) -> bool:
    return expired_on is not None and expired_on >= since


def best_certificate_class(classes: Iterable[str]) -> str | None:
    """``manual`` if the learner holds a manual certificate, else ``auto`` if any, else None."""
    found = set(classes)
    if "manual" in found:
        return "manual"
    return "auto" if "auto" in found else None
