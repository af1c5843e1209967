"""What happened after a reminder letter, and what happened to sleepers who got none, as pure rules.

A *letter day* L is a UTC day: the day a letter went out, or, for the comparison group, the day it
would have gone out (the access end X plus that step's delay). The *outcome window* is L and the N
days after it: ``L <= day <= L + N``.

* **Renewed**: the learner's first renewal of the level after X (the earliest key of the level that
  opens at least one day and starts on or after X, see :func:`sidecar.domain.access.renewal_after`)
  starts inside the window. A learner whose access has lapsed gets a key that starts on its
  activation day, so this is the day they renewed.
* **Certified**: a manual certificate for the level was created (its ``create_date``) inside the window.
* A letter is *measured* only once its whole window has passed: ``L + N < today`` (:func:`measured_days`).

A learner counts in the comparison group for step k when they were still a sleeper on the day letter k
would have gone out: no renewal starting after X and before L, and no manual certificate for the level
created before L.
"""

from __future__ import annotations

from collections.abc import Iterable
from dataclasses import dataclass
from datetime import date, timedelta

WINDOW_CHOICES = (7, 14, 30)
DEFAULT_WINDOW = 14


def in_window(day: date | None, letter_day: date, window_days: int) -> bool:
    return day is not None and letter_day <= day <= letter_day + timedelta(days=window_days)


def measured_days(today: date, window_days: int, period_days: int) -> tuple[date, date]:
    """The letter days measured on ``today``: those in the ``period_days`` days before it whose window
    has ended before it (``L + N < today``), so that their outcome can no longer change."""
    return today - timedelta(days=period_days), today - timedelta(days=window_days + 1)


def still_sleeping(letter_day: date, first_renewal: date | None, certificate_days: Iterable[date]) -> bool:
    """Whether a learner whose access ended was still a sleeper on ``letter_day``: not renewed and not
    certified before it (a renewal or certificate on the letter day itself counts as an outcome)."""
    if first_renewal is not None and first_renewal < letter_day:
        return False
    return all(day >= letter_day for day in certificate_days)


@dataclass(frozen=True)
class Outcome:
    renewed: bool
    certified: bool

    @property
    def any(self) -> bool:
        return self.renewed or self.certified


def outcome(letter_day: date, window_days: int, first_renewal: date | None,
            certificate_days: Iterable[date]) -> Outcome:
    return Outcome(renewed=in_window(first_renewal, letter_day, window_days),
                   certified=any(in_window(day, letter_day, window_days) for day in certificate_days))


@dataclass(frozen=True)
class Tally:
    """Learners measured, and how many of them renewed, got a certificate, or either (counted once)."""

    learners: int = 0
    renewed: int = 0
    certified: int = 0
    either: int = 0

    def add(self, result: Outcome) -> Tally:
        return Tally(self.learners + 1, self.renewed + result.renewed, self.certified + result.certified,
                     self.either + result.any)

    def __add__(self, other: Tally) -> Tally:
        return Tally(self.learners + other.learners, self.renewed + other.renewed,
                     self.certified + other.certified, self.either + other.either)

    def rate(self, count: int) -> float | None:
        """``count`` as a share of the learners measured; None when nobody was measured."""
        return count / self.learners if self.learners else None
