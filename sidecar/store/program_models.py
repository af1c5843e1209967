"""Bundle programs in our store.

* ``mls_programs`` / ``mls_program_steps``: definitions (made here, or imported from the legacy
  ``ml_program`` posts, remembered by ``legacy_post_id``).
* ``mls_enrolments``: one per (program, learner); the stored ``current_step`` is the only source of a
  learner's position.
* ``mls_enrolment_events``: the learner's timeline (enrolled, certificate counted or ignored and why,
  step granted with its grant id, completed). Unique per (enrolment, certificate, kind) so a
  certificate is handled once per enrolment even when seen again.
* ``mls_program_inbox``: certificates waiting to be matched against enrolments, filled by the
  certificate classifier in the same transaction that records them, emptied as they are handled, so
  a poll with nothing new reads an empty table.
"""

from __future__ import annotations

from datetime import date, datetime

import sqlalchemy as sa
from sqlalchemy.orm import Mapped, mapped_column

from sidecar.store.models import Base

_ID = sa.BigInteger().with_variant(sa.Integer, "sqlite")


class Program(Base):
    __tablename__ = "mls_programs"

    id: Mapped[int] = mapped_column(_ID, primary_key=True, autoincrement=True)
    name: Mapped[str] = mapped_column(sa.String(200))
    status: Mapped[str] = mapped_column(sa.String(10), default="active")     # active | archived
    counting: Mapped[str] = mapped_column(sa.String(10), default="manual")   # manual | any
    enrol_on_first_level: Mapped[bool] = mapped_column(default=False)
    grant_first_step: Mapped[bool] = mapped_column(default=False)
    notify_email: Mapped[str] = mapped_column(sa.String(200), default="")
    notify_step_subject: Mapped[str] = mapped_column(sa.String(300), default="")
    notify_step_body: Mapped[str] = mapped_column(sa.Text, default="")
    notify_complete_subject: Mapped[str] = mapped_column(sa.String(300), default="")
    notify_complete_body: Mapped[str] = mapped_column(sa.Text, default="")
    webhook_url: Mapped[str] = mapped_column(sa.String(500), default="")
    legacy_post_id: Mapped[int | None] = mapped_column(sa.BigInteger, unique=True)
    created_at: Mapped[datetime]
    updated_at: Mapped[datetime]


class ProgramStep(Base):
    __tablename__ = "mls_program_steps"

    program_id: Mapped[int] = mapped_column(sa.BigInteger, sa.ForeignKey("mls_programs.id"), primary_key=True,
                                            autoincrement=False)
    position: Mapped[int] = mapped_column(primary_key=True, autoincrement=False)   # 0-based
    term_id: Mapped[int] = mapped_column(sa.BigInteger)
    duration: Mapped[int]
    units: Mapped[str] = mapped_column(sa.String(10))

    __table_args__ = (sa.Index("ix_mls_program_steps_level", "term_id"),)


class Enrolment(Base):
    __tablename__ = "mls_enrolments"

    id: Mapped[int] = mapped_column(_ID, primary_key=True, autoincrement=True)
    program_id: Mapped[int] = mapped_column(sa.BigInteger, sa.ForeignKey("mls_programs.id"))
    user_id: Mapped[int] = mapped_column(sa.BigInteger)
    current_step: Mapped[int] = mapped_column(default=0)                    # 0-based
    step_since: Mapped[date]                  # UTC day the learner reached the current step
    status: Mapped[str] = mapped_column(sa.String(10), default="active")    # active | completed | withdrawn
    source: Mapped[str] = mapped_column(sa.String(20))                       # ui | cli | api | legacy | first_level
    actor: Mapped[str] = mapped_column(sa.String(120), default="")
    enrolled_at: Mapped[datetime]
    updated_at: Mapped[datetime]
    completed_at: Mapped[datetime | None]

    __table_args__ = (
        sa.UniqueConstraint("program_id", "user_id", name="uq_mls_enrolments_program_user"),
        sa.Index("ix_mls_enrolments_user", "user_id", "status"),
        sa.Index("ix_mls_enrolments_progress", "program_id", "status", "current_step"),
    )


class EnrolmentEvent(Base):
    __tablename__ = "mls_enrolment_events"

    id: Mapped[int] = mapped_column(_ID, primary_key=True, autoincrement=True)
    enrolment_id: Mapped[int] = mapped_column(sa.BigInteger, sa.ForeignKey("mls_enrolments.id"))
    at: Mapped[datetime]
    kind: Mapped[str] = mapped_column(sa.String(30))     # enrolled | step_granted | completed | ignored | withdrawn ...
    certificate_id: Mapped[int] = mapped_column(sa.BigInteger, default=0)   # 0 = not about a certificate
    step: Mapped[int | None]                           # 1-based step the event concerns
    grant_id: Mapped[str | None] = mapped_column(sa.String(32))
    detail: Mapped[dict] = mapped_column(sa.JSON, default=dict)

    __table_args__ = (
        # Per certificate, each outcome at most once per enrolment (0 = events not about a certificate).
        sa.Index("ix_mls_enrolment_events_timeline", "enrolment_id", "at"),
        sa.Index("ix_mls_enrolment_events_certificate", "certificate_id"),
    )


class ProgramInbox(Base):
    __tablename__ = "mls_program_inbox"

    certificate_id: Mapped[int] = mapped_column(sa.BigInteger, primary_key=True, autoincrement=False)
    queued_at: Mapped[datetime]
    attempts: Mapped[int] = mapped_column(default=0)
    last_error: Mapped[str] = mapped_column(sa.String(500), default="")   # e.g. no product for the next step
