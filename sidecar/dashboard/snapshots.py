""""What happened after each letter" as the worker stored it (``mls_dashboard_snapshots``, one row per
outcome window, all levels), written by :mod:`sidecar.dashboard.job` and read by the page."""

from __future__ import annotations

from dataclasses import astuple, dataclass
from datetime import date, datetime

import sqlalchemy as sa
from sqlalchemy.orm import Session

from sidecar.dashboard import outcomes
from sidecar.domain.letter_outcomes import Tally
from sidecar.store.dashboard_models import DashboardSnapshot


@dataclass(frozen=True)
class Snapshot:
    after: outcomes.AfterLetters
    computed_for: date          # the UTC day it was computed on
    computed_at: datetime
    seconds: float              # how long the run took, every window together


def to_figures(after: outcomes.AfterLetters) -> dict:
    return {str(level): [[row.step, list(astuple(row.letters)), list(astuple(row.no_letter)), row.delay_days]
                         for row in steps] for level, steps in after.by_level.items()}


def from_row(row: DashboardSnapshot) -> Snapshot:
    by_level = {int(level): tuple(outcomes.StepComparison(int(step), Tally(*letters), Tally(*no_letter), delay)
                                  for step, letters, no_letter, delay in steps)
                for level, steps in row.figures.items()}
    return Snapshot(outcomes.AfterLetters(row.window_days, row.first_day, row.last_day, by_level),
                    row.computed_for, row.computed_at, row.seconds)


def load(session: Session, window_days: int) -> Snapshot | None:
    """The stored comparison of this outcome window; None before the job's first run."""
    row = session.get(DashboardSnapshot, window_days)
    return from_row(row) if row is not None else None


def save(session: Session, today: date, results: dict[int, outcomes.AfterLetters], computed_at: datetime,
         seconds: float) -> None:
    """Replace each window's row (the job runs under a lease: one writer at a time)."""
    for window, after in results.items():
        values = {"computed_for": today, "first_day": after.first_day, "last_day": after.last_day,
                  "computed_at": computed_at, "seconds": seconds, "figures": to_figures(after)}
        updated = session.execute(sa.update(DashboardSnapshot).where(DashboardSnapshot.window_days == window)
                                  .values(**values)).rowcount
        if not updated:
            session.add(DashboardSnapshot(window_days=window, **values))
