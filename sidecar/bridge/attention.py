"""Which grants need an administrator now: the one definition behind the first page, doctor, the grant
list's filter and the alert digest.

* **failed**: the grant ended ``failed`` (a refusal, a CRM lead that cannot be granted, an order
  without a key, or transient errors for ``bridge.give_up_after_hours``). Since: its ``completed_at``.
* **unsettled**: the grant's outcome is still not known well after its settle time. A grant whose
  order call may have reached the site (``delivering``, ``unknown``) or whose key is awaited after an
  order (``confirming``) is never ordered again before ``settle_until``; at that instant the worker
  settles it at its next look (a key, a new order, or ``failed``). So a grant still in one of those
  states past ``settle_until`` plus :func:`grace` — one ``bridge.unknown_poll_seconds`` and the
  longest a delivery pass may hold it (``memberlux.timeout_seconds`` + 60 s, the claim lease) — is
  stuck: no worker runs, the site's database cannot be read, or the look-ups keep finding nothing
  conclusive. Since: that ``settle_until``. A grant marked ``delivering`` with no settle time yet
  (a worker died during its first order call and none has picked it up) counts the same way from
  the moment of the mark plus ``bridge.settle_seconds``, and its "since" is that mark.
"""

from __future__ import annotations

from dataclasses import dataclass
from datetime import datetime, timedelta

import sqlalchemy as sa
from sqlalchemy.orm import Session

from sidecar.config import Settings
from sidecar.store.alert_models import FAILED_KIND, UNSETTLED_KIND
from sidecar.store.grant_models import CONFIRMING, DELIVERING, FAILED, UNKNOWN, Grant

#: States in which the grant's outcome is not known yet and is settled by the worker's look-ups.
UNSETTLED_STATES = (DELIVERING, UNKNOWN, CONFIRMING)
CLAIM_MARGIN_SECONDS = 60   # the delivery pass's claim lease is memberlux.timeout_seconds + this


def grace(settings: Settings) -> timedelta:
    """How long after its settle time a grant may still be unsettled before it is an alert."""
    return timedelta(seconds=settings.bridge.unknown_poll_seconds + settings.memberlux.timeout_seconds
                     + CLAIM_MARGIN_SECONDS)


@dataclass(frozen=True)
class Unsettled:
    """The "unsettled" rule as of one instant, with the settings it depends on."""

    now: datetime
    settle: timedelta
    grace: timedelta

    @classmethod
    def of(cls, settings: Settings, now: datetime) -> Unsettled:
        return cls(now, timedelta(seconds=settings.bridge.settle_seconds), grace(settings))

    def clause(self) -> sa.ColumnElement[bool]:
        cutoff = self.now - self.grace
        return sa.and_(Grant.status.in_(UNSETTLED_STATES),
                       sa.or_(Grant.settle_until < cutoff,
                              sa.and_(Grant.settle_until.is_(None), Grant.updated_at < cutoff - self.settle)))


def clause(kind: str, rule: Unsettled) -> sa.ColumnElement[bool]:
    return Grant.status == FAILED if kind == FAILED_KIND else rule.clause()


def since_expression(kind: str) -> sa.ColumnElement[datetime]:
    """When the grant's current episode of ``kind`` began, as SQL."""
    if kind == FAILED_KIND:
        return sa.func.coalesce(Grant.completed_at, Grant.updated_at)
    return sa.func.coalesce(Grant.settle_until, Grant.updated_at)


def live(kind: str, rule: Unsettled, since: sa.ColumnElement[datetime]) -> sa.ColumnElement[bool]:
    """The grant (joined) is still in the episode of ``kind`` that began at ``since``: not recovered,
    not retried, not in a later episode."""
    return sa.and_(clause(kind, rule), since_expression(kind) == since)


@dataclass(frozen=True)
class Counts:
    failed: int
    unsettled: int

    @property
    def total(self) -> int:
        return self.failed + self.unsettled


def counts(session: Session, settings: Settings, now: datetime) -> Counts:
    """Failed grants and unsettled grants, now (two indexed counts)."""
    rule = Unsettled.of(settings, now)
    failed = session.scalar(sa.select(sa.func.count()).select_from(Grant).where(clause(FAILED_KIND, rule))) or 0
    unsettled = session.scalar(sa.select(sa.func.count()).select_from(Grant).where(clause(UNSETTLED_KIND, rule))) or 0
    return Counts(int(failed), int(unsettled))


FAILED_LIST = "/admin/grants?status=failed"
UNSETTLED_LIST = "/admin/grants?unsettled=1"
