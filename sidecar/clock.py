"""The one clock. Everything that needs "now" or "today" takes a Clock so tests can set the date."""

from __future__ import annotations

from dataclasses import dataclass
from datetime import date, datetime, timezone, tzinfo


class Clock:
    def now(self) -> datetime:
        """Aware UTC instant."""
        return datetime.now(timezone.utc)

    def today_utc(self) -> date:
        """The UTC calendar day: MemberLux key dates are UTC days (core.md 2.5)."""
        return self.now().date()

    def today_in(self, zone: tzinfo) -> date:
        """The calendar day in ``zone`` (the site's), for display and daily schedules only."""
        return self.now().astimezone(zone).date()


@dataclass
class FixedClock(Clock):
    instant: datetime

    def __post_init__(self) -> None:
        if self.instant.tzinfo is None:
            raise ValueError("FixedClock needs an aware datetime")

    def now(self) -> datetime:
        return self.instant.astimezone(timezone.utc)
