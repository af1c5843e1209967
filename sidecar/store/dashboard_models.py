"""The dashboard's figures that the worker computes ahead of the page.

* ``mls_dashboard_snapshots``: "what happened after each letter" for every level, one row per outcome
  window (:data:`sidecar.domain.letter_outcomes.WINDOW_CHOICES`), replaced by each run of the
  ``dashboard.after_letters`` job; the page only reads it.
"""

from __future__ import annotations

from datetime import date, datetime

import sqlalchemy as sa
from sqlalchemy.orm import Mapped, mapped_column

from sidecar.store.models import Base


class DashboardSnapshot(Base):
    __tablename__ = "mls_dashboard_snapshots"

    window_days: Mapped[int] = mapped_column(sa.Integer, primary_key=True, autoincrement=False)
    computed_for: Mapped[date] = mapped_column(sa.Date)     # the UTC day the figures were computed on
    first_day: Mapped[date] = mapped_column(sa.Date)        # letter days measured: first_day .. last_day
    last_day: Mapped[date] = mapped_column(sa.Date)
    computed_at: Mapped[datetime]                           # when the run that wrote it finished
    seconds: Mapped[float]                                  # how long that run took (every window together)
    #: {"<level id>": [[step, [learners, renewed, certified, either] with a letter, the same without one,
    #: the comparison's delay or null], ...]}
    figures: Mapped[dict] = mapped_column(sa.JSON)
