"""Outbound webhooks and inbound MemberLux hints in our store.

* ``mls_webhook_endpoints``: where events go (from the TOML file, the UI, or a program's legacy
  ``mlp_webhook_url`` / notification address), with their secret(s) and health.
* ``mls_webhook_events``: every event once, with its unique id and JSON body.
* ``mls_webhook_deliveries``: one per (event, endpoint) — the outbox the worker drains, unique so an
  event reaches an endpoint once; ``mls_webhook_attempts``: the log of every try.
* ``mls_inbound_hints``: MemberLux's own webhook deliveries, stored once per content hash and
  confirmed in the database before anything acts on them.
* ``mls_access_activations``: every key activation the sidecar has announced (or found already there
  when it started looking), once per key: a MemberLux hint and the key scan never both announce one.
* ``mls_access_expiries``: every (level, learner, end of access) announced as ``access.expired``, once.
"""

from __future__ import annotations

from datetime import date, datetime

import sqlalchemy as sa
from sqlalchemy.orm import Mapped, mapped_column

from sidecar.store.models import Base

_ID = sa.BigInteger().with_variant(sa.Integer, "sqlite")


class WebhookEndpoint(Base):
    __tablename__ = "mls_webhook_endpoints"

    id: Mapped[int] = mapped_column(_ID, primary_key=True, autoincrement=True)
    name: Mapped[str] = mapped_column(sa.String(100), unique=True)
    kind: Mapped[str] = mapped_column(sa.String(10), default="http")          # http | email
    url: Mapped[str] = mapped_column(sa.String(500))                           # https://… or an e-mail address
    events: Mapped[list] = mapped_column(sa.JSON, default=list)                # ["*"] = all
    body_format: Mapped[str] = mapped_column(sa.String(20), default="standard")  # standard | template | legacy_bundle | program_notice
    #: ``template``: a JSON document whose strings are sandboxed Jinja2 templates (sidecar.webhooks.templates).
    body_template: Mapped[str] = mapped_column(sa.Text, default="")
    program_id: Mapped[int | None] = mapped_column(sa.BigInteger)              # only this program's events
    secret: Mapped[str] = mapped_column(sa.String(200), default="")
    previous_secret: Mapped[str] = mapped_column(sa.String(200), default="")
    previous_secret_until: Mapped[datetime | None]
    enabled: Mapped[bool] = mapped_column(default=True)
    description: Mapped[str] = mapped_column(sa.String(300), default="")
    source: Mapped[str] = mapped_column(sa.String(20), default="ui")           # config | ui | program
    consecutive_failures: Mapped[int] = mapped_column(default=0)
    disabled_reason: Mapped[str] = mapped_column(sa.String(300), default="")
    created_at: Mapped[datetime]
    updated_at: Mapped[datetime]


class WebhookEvent(Base):
    __tablename__ = "mls_webhook_events"

    id: Mapped[str] = mapped_column(sa.String(40), primary_key=True)          # evt_…, unique, sent as webhook-id
    type: Mapped[str] = mapped_column(sa.String(40))
    program_id: Mapped[int | None] = mapped_column(sa.BigInteger)
    data: Mapped[dict] = mapped_column(sa.JSON, default=dict)
    created_at: Mapped[datetime] = mapped_column(index=True)


class WebhookDelivery(Base):
    __tablename__ = "mls_webhook_deliveries"

    id: Mapped[int] = mapped_column(_ID, primary_key=True, autoincrement=True)
    event_id: Mapped[str] = mapped_column(sa.String(40), sa.ForeignKey("mls_webhook_events.id"))
    endpoint_id: Mapped[int] = mapped_column(sa.BigInteger, sa.ForeignKey("mls_webhook_endpoints.id"))
    state: Mapped[str] = mapped_column(sa.String(12))        # pending | delivering | succeeded | failed
    attempts: Mapped[int] = mapped_column(default=0)
    next_attempt_at: Mapped[datetime | None]
    claimed_until: Mapped[datetime | None]
    #: E-mail endpoints: committed right before the DATA phase; a stale claim with it is not tried again.
    data_started_at: Mapped[datetime | None]
    last_status: Mapped[int | None]
    last_error: Mapped[str] = mapped_column(sa.String(500), default="")
    created_at: Mapped[datetime]
    updated_at: Mapped[datetime]
    completed_at: Mapped[datetime | None]

    __table_args__ = (
        sa.UniqueConstraint("event_id", "endpoint_id", name="uq_mls_webhook_deliveries_event_endpoint"),
        sa.Index("ix_mls_webhook_deliveries_work", "state", "next_attempt_at"),
        sa.Index("ix_mls_webhook_deliveries_endpoint", "endpoint_id", "id"),
    )


class WebhookAttempt(Base):
    __tablename__ = "mls_webhook_attempts"

    id: Mapped[int] = mapped_column(_ID, primary_key=True, autoincrement=True)
    delivery_id: Mapped[int] = mapped_column(sa.BigInteger, sa.ForeignKey("mls_webhook_deliveries.id"), index=True)
    at: Mapped[datetime]
    status_code: Mapped[int | None]
    duration_ms: Mapped[int]
    response_excerpt: Mapped[str] = mapped_column(sa.String(1000), default="")
    error: Mapped[str] = mapped_column(sa.String(500), default="")


class InboundHint(Base):
    __tablename__ = "mls_inbound_hints"

    id: Mapped[int] = mapped_column(_ID, primary_key=True, autoincrement=True)
    content_hash: Mapped[str] = mapped_column(sa.String(64), unique=True)
    type: Mapped[str] = mapped_column(sa.String(60))          # MemberLux's source (core.md §6.2)
    email: Mapped[str] = mapped_column(sa.String(200), default="")
    term_id: Mapped[int | None] = mapped_column(sa.BigInteger)
    payload: Mapped[dict] = mapped_column(sa.JSON, default=dict)
    received_at: Mapped[datetime] = mapped_column(index=True)
    processed_at: Mapped[datetime | None] = mapped_column(index=True)
    outcome: Mapped[str] = mapped_column(sa.String(300), default="")


class AccessActivation(Base):
    """One key activation, announced once: ``found_by`` says how (``key_scan``,
    ``memberlux_webhook:<type>``) or ``baseline`` for what the scan found when it started looking."""

    __tablename__ = "mls_access_activations"

    key_id: Mapped[int] = mapped_column(sa.BigInteger, primary_key=True, autoincrement=False)
    user_id: Mapped[int] = mapped_column(sa.BigInteger)
    term_id: Mapped[int] = mapped_column(sa.BigInteger)
    found_by: Mapped[str] = mapped_column(sa.String(80))
    event_id: Mapped[str | None] = mapped_column(sa.String(40))    # None: baseline, or nobody listened
    seen_at: Mapped[datetime]


class AccessExpiry(Base):
    """One end of a learner's access to a level, announced once."""

    __tablename__ = "mls_access_expiries"

    term_id: Mapped[int] = mapped_column(sa.BigInteger, primary_key=True, autoincrement=False)
    user_id: Mapped[int] = mapped_column(sa.BigInteger, primary_key=True, autoincrement=False)
    expired_on: Mapped[date] = mapped_column(sa.Date, primary_key=True)
    event_id: Mapped[str | None] = mapped_column(sa.String(40))
    recorded_at: Mapped[datetime]
