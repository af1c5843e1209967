"""The learning monitor's state in our store.

* ``mls_certificate_classes``: every certificate seen, classified auto/manual once (the level's mode
  can change later) and re-validated when the row is rewritten or deleted.
* ``mls_sleepers``: the read model behind the report — one row per (level, sleeper), rebuilt per
  level from MemberLux's tables. Reading the report then never scans WordPress tables, whatever
  indexes the site has.
* ``mls_sleeper_refreshes``: when each level was last rebuilt, for which UTC day, and how long it took.
* ``mls_sleeper_counts``: sleepers per level per day, for the trend chart; days before the first refresh
  may be reconstructed from key dates (``reconstructed``).
* ``mls_sleeper_scan``: the change scan's digests of the site (per bucket of user ids), the day they
  were taken for, and what the scans and the last reconciling rebuild found (:mod:`sidecar.monitor.increments`).
* ``mls_sleeper_hints``: users a MemberLux webhook said changed, evaluated again by the next scan.
* ``mls_watch_state``: named positions of incremental scans (e.g. the last certificate id seen).
"""

from __future__ import annotations

from datetime import date, datetime

import sqlalchemy as sa
from sqlalchemy.orm import Mapped, mapped_column

from sidecar.store.models import Base


class CertificateClassRow(Base):
    __tablename__ = "mls_certificate_classes"

    certificate_id: Mapped[int] = mapped_column(sa.BigInteger, primary_key=True, autoincrement=False)
    user_id: Mapped[int] = mapped_column(sa.BigInteger)
    level_id: Mapped[int] = mapped_column(sa.BigInteger)
    cls: Mapped[str] = mapped_column(sa.String(10))           # auto | manual
    reason: Mapped[str] = mapped_column(sa.String(200))
    date_issue: Mapped[date | None] = mapped_column(sa.Date)
    create_date: Mapped[date | None] = mapped_column(sa.Date)
    responsible_person: Mapped[int | None] = mapped_column(sa.BigInteger)
    fingerprint: Mapped[str] = mapped_column(sa.String(64))    # of the fields above, to notice rewrites
    first_seen_at: Mapped[datetime]
    checked_at: Mapped[datetime]
    deleted_at: Mapped[datetime | None]

    __table_args__ = (sa.Index("ix_mls_certificate_classes_level_user", "level_id", "user_id"),)


class SleeperEntry(Base):
    __tablename__ = "mls_sleepers"

    term_id: Mapped[int] = mapped_column(sa.BigInteger, primary_key=True, autoincrement=False)
    user_id: Mapped[int] = mapped_column(sa.BigInteger, primary_key=True, autoincrement=False)
    expired_on: Mapped[date] = mapped_column(sa.Date)
    last_grant: Mapped[date | None] = mapped_column(sa.Date)
    blocked: Mapped[bool] = mapped_column(default=False)
    email: Mapped[str] = mapped_column(sa.String(100), default="")
    login: Mapped[str] = mapped_column(sa.String(60), default="")
    first_name: Mapped[str] = mapped_column(sa.String(100), default="")
    last_name: Mapped[str] = mapped_column(sa.String(100), default="")
    search_text: Mapped[str] = mapped_column(sa.String(400), default="")  # lower-cased name + e-mail + login
    refreshed_at: Mapped[datetime]

    __table_args__ = (
        sa.Index("ix_mls_sleepers_expiry", "term_id", "expired_on", "user_id"),
        sa.Index("ix_mls_sleepers_expiry_all", "expired_on", "term_id", "user_id"),
        sa.Index("ix_mls_sleepers_last_name", "term_id", "last_name", "user_id"),
        sa.Index("ix_mls_sleepers_email", "term_id", "email", "user_id"),
    )


class SleeperRefresh(Base):
    __tablename__ = "mls_sleeper_refreshes"

    term_id: Mapped[int] = mapped_column(sa.BigInteger, primary_key=True, autoincrement=False)
    evaluated_for: Mapped[date] = mapped_column(sa.Date)      # the UTC day D of the rule
    refreshed_at: Mapped[datetime]
    seconds: Mapped[float]
    rows_scanned: Mapped[int]
    users_considered: Mapped[int]
    sleepers: Mapped[int]
    reasons: Mapped[dict] = mapped_column(sa.JSON, default=dict)
    #: When the level was last known current: its rebuild, or a later change scan that applied (or
    #: found) every change up to then. ``refreshed_at`` stays the last full rebuild.
    checked_at: Mapped[datetime | None]


class SleeperCount(Base):
    __tablename__ = "mls_sleeper_counts"

    term_id: Mapped[int] = mapped_column(sa.BigInteger, primary_key=True, autoincrement=False)
    day: Mapped[date] = mapped_column(sa.Date, primary_key=True)
    sleepers: Mapped[int]
    #: Filled in by the trend backfill from key dates, not counted by a refresh (:mod:`sidecar.monitor.backfill`).
    reconstructed: Mapped[bool] = mapped_column(default=False, server_default=sa.false())


class WatchState(Base):
    __tablename__ = "mls_watch_state"

    name: Mapped[str] = mapped_column(sa.String(80), primary_key=True)
    value: Mapped[int] = mapped_column(sa.BigInteger, default=0)
    updated_at: Mapped[datetime]


class SleeperScan(Base):
    __tablename__ = "mls_sleeper_scan"

    name: Mapped[str] = mapped_column(sa.String(40), primary_key=True)   # one row: "site"
    day: Mapped[date] = mapped_column(sa.Date)                             # the UTC day D the model holds
    #: What a full rebuild depends on beyond the rows: level tree, access policy. A change rebuilds all.
    shape: Mapped[str] = mapped_column(sa.String(64))
    digests: Mapped[dict] = mapped_column(sa.JSON)
    scanned_at: Mapped[datetime]
    scan_seconds: Mapped[float] = mapped_column(default=0.0)
    #: What the last scan evaluated again: buckets, users, rows changed in the model.
    last_changes: Mapped[dict] = mapped_column(sa.JSON, default=dict)
    rebuilt_at: Mapped[datetime]
    rebuild_seconds: Mapped[float] = mapped_column(default=0.0)
    #: The last reconciling rebuild: rows the increments had wrong, per level (should be none).
    reconciled_at: Mapped[datetime | None]
    missed: Mapped[dict] = mapped_column(sa.JSON, default=dict)


class SleeperHint(Base):
    __tablename__ = "mls_sleeper_hints"

    id: Mapped[int] = mapped_column(sa.BigInteger().with_variant(sa.Integer, "sqlite"), primary_key=True,
                                    autoincrement=True)
    user_id: Mapped[int] = mapped_column(sa.BigInteger)
    received_at: Mapped[datetime]
