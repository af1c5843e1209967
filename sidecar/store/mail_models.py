"""Outgoing e-mail of the grant bridge: one welcome letter per grant, as an outbox row.

``mls_welcome_emails`` holds the letter of a grant that created its learner's account, committed
before any attempt to send it. States: pending → sending → sent | failed | unknown; a transient
failure goes back to pending with a later ``next_attempt_at``. ``grant_id`` is unique: a grant has
one letter, whatever runs the job (see :mod:`sidecar.bridge.welcome`).
"""

from __future__ import annotations

from datetime import datetime

import sqlalchemy as sa
from sqlalchemy.orm import Mapped, mapped_column

from sidecar.store.models import Base

PENDING, SENDING, SENT, FAILED, UNKNOWN = "pending", "sending", "sent", "failed", "unknown"
WELCOME_STATES = (PENDING, SENDING, SENT, FAILED, UNKNOWN)


class WelcomeEmail(Base):
    __tablename__ = "mls_welcome_emails"

    id: Mapped[int] = mapped_column(sa.BigInteger().with_variant(sa.Integer, "sqlite"), primary_key=True,
                                    autoincrement=True)
    grant_id: Mapped[str] = mapped_column(sa.String(32), sa.ForeignKey("mls_grants.id", ondelete="CASCADE"),
                                          unique=True)
    to_address: Mapped[str] = mapped_column(sa.String(200))
    state: Mapped[str] = mapped_column(sa.String(10))
    reason: Mapped[str] = mapped_column(sa.String(40), default="")
    attempts: Mapped[int] = mapped_column(default=0)
    next_attempt_at: Mapped[datetime | None]
    claimed_by: Mapped[str | None] = mapped_column(sa.String(80))
    claimed_until: Mapped[datetime | None]
    #: Committed right before the DATA phase of the current claim: from then on the letter may be delivered.
    data_started_at: Mapped[datetime | None]
    message_id: Mapped[str | None] = mapped_column(sa.String(200))
    created_at: Mapped[datetime]
    updated_at: Mapped[datetime]
    sent_at: Mapped[datetime | None]
    last_error: Mapped[str] = mapped_column(sa.String(500), default="")

    __table_args__ = (sa.Index("ix_mls_welcome_emails_work", "state", "next_attempt_at"),)
