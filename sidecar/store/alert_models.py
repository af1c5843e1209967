"""Alerts about grants that need an administrator, and the digests that mail them.

* ``mls_grant_alerts``: one row per grant and **episode** — the grant failed (``kind = failed``,
  ``since`` = the moment it failed) or its outcome was still unknown past its settle time (``kind =
  unsettled``, ``since`` = the settle instant it outlived). Unique on (grant, kind, since), so an
  episode is recorded once whatever runs the job; a grant retried and failing again is a new episode.
  States: ``pending`` (waiting for a digest) → ``digested`` (in ``digest_id``; that digest's state
  says whether it went out), or ``resolved`` (the grant recovered before a digest carried it: left
  out). ``baseline``: the grant had failed before alerts existed (migration 0013); never mailed.
* ``mls_alert_digests``: one e-mail listing alerts. States: planned → sending → sent | failed |
  unknown | skipped (every alert of it resolved before it went out). Delivery works like the
  reminders' (a per-claim ``claimed_by``, a Message-ID stored before the SMTP transaction,
  ``data_started_at`` committed right before the DATA phase): a digest whose outcome is unknown is
  never sent again, so an alert is mailed at most once (see :mod:`sidecar.bridge.alerts`).
"""

from __future__ import annotations

from datetime import datetime

import sqlalchemy as sa
from sqlalchemy.orm import Mapped, mapped_column

from sidecar.store.models import Base

_ID = sa.BigInteger().with_variant(sa.Integer(), "sqlite")

# Kinds of alert.
FAILED_KIND, UNSETTLED_KIND = "failed", "unsettled"
KINDS = (FAILED_KIND, UNSETTLED_KIND)

# States of an alert.
PENDING, DIGESTED, RESOLVED, BASELINE = "pending", "digested", "resolved", "baseline"

# States of a digest.
PLANNED, SENDING, SENT, FAILED, UNKNOWN, SKIPPED = "planned", "sending", "sent", "failed", "unknown", "skipped"


class AlertDigest(Base):
    __tablename__ = "mls_alert_digests"

    id: Mapped[int] = mapped_column(_ID, primary_key=True, autoincrement=True)
    created_at: Mapped[datetime] = mapped_column(index=True)
    state: Mapped[str] = mapped_column(sa.String(10))
    reason: Mapped[str] = mapped_column(sa.String(40), default="")
    alerts: Mapped[int] = mapped_column(default=0)
    to_address: Mapped[str] = mapped_column(sa.String(200), default="")
    language: Mapped[str] = mapped_column(sa.String(2), default="")
    subject: Mapped[str] = mapped_column(sa.String(300), default="")
    attempts: Mapped[int] = mapped_column(default=0)
    next_attempt_at: Mapped[datetime | None]
    claimed_by: Mapped[str | None] = mapped_column(sa.String(80))
    claimed_until: Mapped[datetime | None]
    message_id: Mapped[str | None] = mapped_column(sa.String(200))
    #: Committed right before the DATA phase of the current claim: from then on the digest may be delivered.
    data_started_at: Mapped[datetime | None]
    sent_at: Mapped[datetime | None]
    updated_at: Mapped[datetime]
    last_error: Mapped[str] = mapped_column(sa.String(500), default="")

    __table_args__ = (sa.Index("ix_mls_alert_digests_work", "state", "next_attempt_at"),)


class GrantAlert(Base):
    __tablename__ = "mls_grant_alerts"

    id: Mapped[int] = mapped_column(_ID, primary_key=True, autoincrement=True)
    grant_id: Mapped[str] = mapped_column(sa.String(32), sa.ForeignKey("mls_grants.id", ondelete="CASCADE"))
    kind: Mapped[str] = mapped_column(sa.String(10))
    #: When the episode began: the failure's ``completed_at``, or the settle instant the grant outlived.
    since: Mapped[datetime]
    detected_at: Mapped[datetime]
    state: Mapped[str] = mapped_column(sa.String(10))
    digest_id: Mapped[int | None] = mapped_column(_ID, sa.ForeignKey("mls_alert_digests.id"))
    updated_at: Mapped[datetime]

    __table_args__ = (
        sa.UniqueConstraint("grant_id", "kind", "since", name="uq_mls_grant_alerts_episode"),
        sa.Index("ix_mls_grant_alerts_state", "state", "detected_at"),
        sa.Index("ix_mls_grant_alerts_digest_id", "digest_id"),
    )
