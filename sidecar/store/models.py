"""Tables of our store. Every name starts with ``mls_`` so the store is recognisable in any database.

The capabilities add their own tables through migrations; the foundation keeps what every part
shares: an append-only audit trail, settings overrides edited from the UI, and job leases that keep
scheduled work single-runner across processes.
"""

from __future__ import annotations

from datetime import datetime, timezone

import sqlalchemy as sa
from sqlalchemy.orm import DeclarativeBase, Mapped, mapped_column

NAMING = {
    "ix": "ix_%(table_name)s_%(column_0_N_name)s",
    "uq": "uq_%(table_name)s_%(column_0_N_name)s",
    "ck": "ck_%(table_name)s_%(constraint_name)s",
    "fk": "fk_%(table_name)s_%(column_0_name)s_%(referred_table_name)s",
    "pk": "pk_%(table_name)s",
}

# Aware UTC datetimes in, aware UTC datetimes out, on every backend (SQLite has no time zones).
class UtcDateTime(sa.types.TypeDecorator):
    impl = sa.DateTime
    cache_ok = True

    def process_bind_param(self, value, dialect):
        if value is None:
            return None
        if value.tzinfo is None:
            raise ValueError("naive datetime given to the store; use an aware UTC datetime")
        return value.astimezone(timezone.utc).replace(tzinfo=None)

    def process_result_value(self, value, dialect):
        if value is None:
            return None
        return value.replace(tzinfo=timezone.utc)


class Base(DeclarativeBase):
    metadata = sa.MetaData(naming_convention=NAMING)
    type_annotation_map = {datetime: UtcDateTime()}


class AuditEvent(Base):
    """One step of something that happened: who/what did it, to which object, with what outcome."""

    __tablename__ = "mls_audit_events"

    id: Mapped[int] = mapped_column(sa.BigInteger().with_variant(sa.Integer(), "sqlite"), primary_key=True, autoincrement=True)
    occurred_at: Mapped[datetime] = mapped_column(index=True)
    subject_type: Mapped[str] = mapped_column(sa.String(40))
    subject_id: Mapped[str] = mapped_column(sa.String(80))
    action: Mapped[str] = mapped_column(sa.String(60))
    actor: Mapped[str] = mapped_column(sa.String(120), default="system")
    source_ip: Mapped[str | None] = mapped_column(sa.String(45))
    request_id: Mapped[str | None] = mapped_column(sa.String(64))
    details: Mapped[dict] = mapped_column(sa.JSON, default=dict)

    __table_args__ = (sa.Index("ix_mls_audit_events_subject", "subject_type", "subject_id", "id"),)


class SettingOverride(Base):
    """A value changed from the UI that takes precedence over the imported/configured one."""

    __tablename__ = "mls_setting_overrides"

    scope: Mapped[str] = mapped_column(sa.String(60), primary_key=True)
    name: Mapped[str] = mapped_column(sa.String(120), primary_key=True)
    value: Mapped[dict | list | str | int | float | bool | None] = mapped_column(sa.JSON)
    updated_at: Mapped[datetime]
    updated_by: Mapped[str] = mapped_column(sa.String(120))


class JobLease(Base):
    """Who may run a named job until when; taken and renewed with conditional UPDATEs."""

    __tablename__ = "mls_job_leases"

    name: Mapped[str] = mapped_column(sa.String(80), primary_key=True)
    holder: Mapped[str] = mapped_column(sa.String(120))
    expires_at: Mapped[datetime]
    last_started_at: Mapped[datetime | None]
    last_finished_at: Mapped[datetime | None]
    last_outcome: Mapped[str | None] = mapped_column(sa.String(200))


class LoginAttempt(Base):
    """One failed admin login, counted per client IP and per login name to throttle guessing.

    Rows live in the store rather than in process memory so that every web worker sees the same
    counters; they are pruned once they fall out of the throttling window.
    """

    __tablename__ = "mls_login_attempts"

    id: Mapped[int] = mapped_column(sa.BigInteger().with_variant(sa.Integer(), "sqlite"), primary_key=True, autoincrement=True)
    bucket: Mapped[str] = mapped_column(sa.String(10))  # 'ip' or 'login'
    # The IP as seen after ProxyFix, or a SHA-256 of the case-folded login (no personal data at rest).
    subject: Mapped[str] = mapped_column(sa.String(64))
    attempted_at: Mapped[datetime] = mapped_column(index=True)

    __table_args__ = (sa.Index("ix_mls_login_attempts_subject", "bucket", "subject", "attempted_at"),)


class AdminSession(Base):
    """One admin sign-in, checked on every request so that signing out ends it for every copy of the cookie.

    The cookie is signed but lives on the client: without this row a cookie copied before the logout
    would stay valid until it expires. The row is keyed by a SHA-256 of the random session id in the
    cookie, so reading the store does not give anyone a usable session.
    """

    __tablename__ = "mls_admin_sessions"

    id: Mapped[str] = mapped_column(sa.String(64), primary_key=True)
    user_id: Mapped[int] = mapped_column(sa.BigInteger, index=True)
    created_at: Mapped[datetime]
    expires_at: Mapped[datetime] = mapped_column(index=True)
    # SHA-256 of the WordPress password hash at sign-in: a changed password ends the session.
    password_fingerprint: Mapped[str] = mapped_column(sa.String(64))
    ended_at: Mapped[datetime | None]
    end_reason: Mapped[str | None] = mapped_column(sa.String(20))  # logout, password_changed, not_admin, ...
