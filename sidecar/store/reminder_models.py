"""The reminders' state in our store.

* ``mls_reminders``: the ledger. One row per (user, level, access end X, step), unique, so a letter
  can be decided once only whatever runs the job; steps 1–3 are the learner letters, step 4 records a
  learner's place in an admin digest. States: planned → sending → sent | failed | unknown, or skipped
  (reason); unknown → sent (an administrator marks it delivered) or planned (sent again on purpose).
* ``mls_reminder_digests``: one admin digest per level per UTC day, unique, with its own delivery state.
* ``mls_unsubscribes``: learners who asked for no more reminders (link, one-click, or an admin).

Delivery columns are shared by letters and digests: a row is claimed by setting ``state = sending``
with a lease, a per-claim ``claimed_by`` and a Message-ID generated *before* the SMTP transaction;
``data_started_at`` is committed right before the DATA phase. A claim left behind by a dead sender is
planned again without that mark and becomes ``unknown`` with it (see :mod:`sidecar.reminders.sender`).
"""

from __future__ import annotations

from datetime import date, datetime

import sqlalchemy as sa
from sqlalchemy.orm import Mapped, declared_attr, mapped_column

from sidecar.store.models import Base


class _Delivery:
    """Columns of one outgoing message's delivery."""

    state: Mapped[str] = mapped_column(sa.String(10))
    reason: Mapped[str] = mapped_column(sa.String(300), default="")
    due_on: Mapped[date] = mapped_column(sa.Date)                   # UTC day it became due
    planned_at: Mapped[datetime]
    updated_at: Mapped[datetime]
    attempts: Mapped[int] = mapped_column(default=0)
    next_attempt_at: Mapped[datetime | None]
    claimed_by: Mapped[str | None] = mapped_column(sa.String(80))
    claimed_until: Mapped[datetime | None]
    message_id: Mapped[str | None] = mapped_column(sa.String(200))
    #: Committed right before the DATA phase of the current claim: from then on the message may be delivered.
    data_started_at: Mapped[datetime | None]
    to_address: Mapped[str] = mapped_column(sa.String(200), default="")
    subject: Mapped[str] = mapped_column(sa.String(300), default="")
    sent_at: Mapped[datetime | None]
    last_error: Mapped[str] = mapped_column(sa.String(500), default="")

    @declared_attr.directive
    def __table_args__(cls):  # noqa: N805 - SQLAlchemy's declared_attr protocol
        name = cls.__tablename__
        return (sa.Index(f"ix_{name}_work", "state", "next_attempt_at"),) + tuple(getattr(cls, "_extra_indexes", ()))


class ReminderDigest(_Delivery, Base):
    __tablename__ = "mls_reminder_digests"

    id: Mapped[int] = mapped_column(sa.BigInteger().with_variant(sa.Integer, "sqlite"), primary_key=True,
                                    autoincrement=True)
    term_id: Mapped[int] = mapped_column(sa.BigInteger)
    day: Mapped[date] = mapped_column(sa.Date)                      # the UTC day of the digest
    learners: Mapped[int] = mapped_column(default=0)

    _extra_indexes = (sa.UniqueConstraint("term_id", "day", name="uq_mls_reminder_digests_level_day"),)


class Reminder(_Delivery, Base):
    __tablename__ = "mls_reminders"

    id: Mapped[int] = mapped_column(sa.BigInteger().with_variant(sa.Integer, "sqlite"), primary_key=True,
                                    autoincrement=True)
    user_id: Mapped[int] = mapped_column(sa.BigInteger)
    term_id: Mapped[int] = mapped_column(sa.BigInteger)
    expired_on: Mapped[date] = mapped_column(sa.Date)               # X of the chain
    step: Mapped[int] = mapped_column(sa.SmallInteger)              # 1..3 learner letters, 4 admin digest
    digest_id: Mapped[int | None] = mapped_column(sa.BigInteger, sa.ForeignKey("mls_reminder_digests.id"))

    _extra_indexes = (
        sa.UniqueConstraint("user_id", "term_id", "expired_on", "step", name="uq_mls_reminders_chain_step"),
        sa.Index("ix_mls_reminders_level_chain", "term_id", "expired_on", "user_id"),
        sa.Index("ix_mls_reminders_planned_at", "planned_at"),
        # The dashboard's letter counts (per level and step, ever and since a day) and each level's first
        # letter: read from this index alone instead of every row of the ledger.
        sa.Index("ix_mls_reminders_sent", "state", "term_id", "step", "sent_at"),
    )


class Unsubscribe(Base):
    __tablename__ = "mls_unsubscribes"

    user_id: Mapped[int] = mapped_column(sa.BigInteger, primary_key=True, autoincrement=False)
    email: Mapped[str] = mapped_column(sa.String(200), default="")
    at: Mapped[datetime]
    source: Mapped[str] = mapped_column(sa.String(20))              # link | one_click | admin
    actor: Mapped[str] = mapped_column(sa.String(100), default="")


class ReminderApproval(Base):
    """Whether a level's reminders may be sent: one row per level that was approved or held by a run.

    A level without a row, or with ``approved_at`` empty, is **not approved**: a run plans it and keeps
    what it would send in ``mls_reminder_awaiting`` instead of the ledger (:mod:`sidecar.reminders.approval`).
    """

    __tablename__ = "mls_reminder_approvals"

    term_id: Mapped[int] = mapped_column(sa.BigInteger, primary_key=True, autoincrement=False)
    approved_at: Mapped[datetime | None]
    approved_by: Mapped[str] = mapped_column(sa.String(120), default="")
    approved_source: Mapped[str] = mapped_column(sa.String(20), default="")   # web | cli | upgrade | …
    #: Letters on the list the administrator reviewed (None: approved without one, e.g. by the upgrade).
    approved_letters: Mapped[int | None]
    #: When the reviewed list was made: the run's moment (web), or the dry run's (command line).
    approved_list_at: Mapped[datetime | None]
    #: The last run that held the level's letters for approval, and how many letters it held.
    listed_at: Mapped[datetime | None]
    listed_letters: Mapped[int] = mapped_column(default=0)


class AwaitingReminder(Base):
    """A letter (or a learner's place in a digest) the last run of a level that is not approved would
    have sent: the list the administrator reviews before approving. Replaced by each run."""

    __tablename__ = "mls_reminder_awaiting"

    id: Mapped[int] = mapped_column(sa.BigInteger().with_variant(sa.Integer, "sqlite"), primary_key=True,
                                    autoincrement=True)
    term_id: Mapped[int] = mapped_column(sa.BigInteger)
    user_id: Mapped[int] = mapped_column(sa.BigInteger)
    expired_on: Mapped[date] = mapped_column(sa.Date)
    step: Mapped[int] = mapped_column(sa.SmallInteger)              # 1..3 learner letters, 4 admin digest
    due_on: Mapped[date] = mapped_column(sa.Date)
    email: Mapped[str] = mapped_column(sa.String(200), default="")
    name: Mapped[str] = mapped_column(sa.String(200), default="")

    __table_args__ = (sa.Index("ix_mls_reminder_awaiting_level", "term_id", "step", "user_id"),)
