"""The grant bridge's state: one row per requested grant (also its outbox entry), its delivery
attempts, and the signatures already seen (replay protection).

Exactly-once rests on two constraints of this schema, not on there being one worker:
``mls_grants.idempotency_key`` is unique (a second request for the same deal finds the first), and a
grant is delivered only by whoever moved its ``status`` with a conditional UPDATE (a claim).
"""

from __future__ import annotations

from datetime import date, datetime

import sqlalchemy as sa
from sqlalchemy.orm import Mapped, mapped_column

from sidecar.store.models import Base

_ID = sa.BigInteger().with_variant(sa.Integer(), "sqlite")

# Grant states. "fetching" waits for CRM data (amoCRM lead) before it can be validated;
# "delivering" is committed before an order call and left behind by a worker that died during it;
# "unknown" means an order call may have reached the site and we do not know what it did: the
# site may still be running it, so the grant is only looked for, never ordered again, until
# ``settle_until`` has passed with no trace of it; "confirming" means an order is known to exist
# and only the read-back of the key is pending: such a grant is never ordered again.
# "duplicated" is final: more than one key carries the grant's id (an admin must act).
QUEUED, FETCHING, DELIVERING, UNKNOWN, CONFIRMING = "queued", "fetching", "delivering", "unknown", "confirming"
SUCCEEDED, FAILED, CANCELLED, DUPLICATED = "succeeded", "failed", "cancelled", "duplicated"
OPEN_STATES = (QUEUED, FETCHING, DELIVERING, UNKNOWN, CONFIRMING)
FINAL_STATES = (SUCCEEDED, DUPLICATED, FAILED, CANCELLED)
# Shadow mode (bridge.mode = "shadow"): no order is ever sent. "shadow" is watched: the worker looks in
# the WordPress database for what the legacy plugin did; "shadowed" is final, with ``shadow_outcome`` one
# of the four outcomes (sidecar.domain.shadow). A shadow grant never becomes an order, whatever the mode is later.
SHADOW, SHADOWED = "shadow", "shadowed"
MATCHED, LEGACY_MISSING, LEGACY_DIFFERENT, LEGACY_EXTRA = "matched", "legacy_missing", "legacy_different", "legacy_extra"
SHADOW_OUTCOMES = (MATCHED, LEGACY_MISSING, LEGACY_DIFFERENT, LEGACY_EXTRA)
SHADOW_STATES = (SHADOW, SHADOWED)
ALL_STATES = OPEN_STATES + FINAL_STATES + SHADOW_STATES


class Grant(Base):
    __tablename__ = "mls_grants"

    id: Mapped[str] = mapped_column(sa.String(32), primary_key=True)
    idempotency_key: Mapped[str | None] = mapped_column(sa.String(200), unique=True)
    request_hash: Mapped[str] = mapped_column(sa.String(64))
    channel: Mapped[str] = mapped_column(sa.String(20))            # legacy | api | amocrm | program
    source_label: Mapped[str | None] = mapped_column(sa.String(100))  # the sender's own "source" text
    principal: Mapped[str] = mapped_column(sa.String(120))         # which credential let it in
    external_id: Mapped[str | None] = mapped_column(sa.String(190), index=True)
    amo_lead_id: Mapped[int | None] = mapped_column(sa.BigInteger)

    email: Mapped[str | None] = mapped_column(sa.String(100))
    first_name: Mapped[str | None] = mapped_column(sa.String(100))
    last_name: Mapped[str | None] = mapped_column(sa.String(100))
    patronymic: Mapped[str | None] = mapped_column(sa.String(100))
    phone: Mapped[str | None] = mapped_column(sa.String(40))
    term_id: Mapped[int | None] = mapped_column(sa.BigInteger)
    duration: Mapped[int | None]
    units: Mapped[str | None] = mapped_column(sa.String(10))
    product_id: Mapped[int | None] = mapped_column(sa.BigInteger)
    meta: Mapped[dict] = mapped_column(sa.JSON, default=dict)

    status: Mapped[str] = mapped_column(sa.String(12), index=True)
    attempts: Mapped[int] = mapped_column(default=0)
    next_attempt_at: Mapped[datetime] = mapped_column(index=True)
    outcome_unknown: Mapped[bool] = mapped_column(default=False)
    claimed_by: Mapped[str | None] = mapped_column(sa.String(120))
    claim_expires_at: Mapped[datetime | None]
    last_error: Mapped[str | None] = mapped_column(sa.String(500))

    #: Start of the first order call: traces of any of this grant's orders are looked for from here.
    first_ordered_at: Mapped[datetime | None]
    #: No order call may be sent before this instant (an earlier call may still be running on the site).
    settle_until: Mapped[datetime | None]
    #: A grant ordered more than once is re-read until then, so that a late second key is caught.
    verify_until: Mapped[datetime | None] = mapped_column(index=True)
    #: Order calls that reached (or may have reached) the site.
    orders_sent: Mapped[int] = mapped_column(default=0, server_default="0")
    order_id: Mapped[int | None] = mapped_column(sa.BigInteger)
    user_id: Mapped[int | None] = mapped_column(sa.BigInteger)
    user_existed: Mapped[bool | None]
    key_id: Mapped[int | None] = mapped_column(sa.BigInteger)
    date_start: Mapped[date | None] = mapped_column(sa.Date)
    date_end: Mapped[date | None] = mapped_column(sa.Date)
    is_unlimited: Mapped[bool] = mapped_column(default=False)
    #: Shadow mode: what the legacy plugin did (one of SHADOW_OUTCOMES), once the grant is "shadowed".
    shadow_outcome: Mapped[str | None] = mapped_column(sa.String(20), index=True)

    source_ip: Mapped[str | None] = mapped_column(sa.String(45))
    request_id: Mapped[str | None] = mapped_column(sa.String(64))
    created_at: Mapped[datetime] = mapped_column(index=True)
    updated_at: Mapped[datetime]
    completed_at: Mapped[datetime | None]

    __table_args__ = (sa.Index("ix_mls_grants_due", "status", "next_attempt_at"),)


class GrantAttempt(Base):
    """One call to MemberLux (or to the CRM) on behalf of a grant, with what came back."""

    __tablename__ = "mls_grant_attempts"

    id: Mapped[int] = mapped_column(_ID, primary_key=True, autoincrement=True)
    grant_id: Mapped[str] = mapped_column(sa.String(32), sa.ForeignKey("mls_grants.id", ondelete="CASCADE"), index=True)
    number: Mapped[int]
    kind: Mapped[str] = mapped_column(sa.String(20))      # order | lookup | confirm | crm_fetch
    started_at: Mapped[datetime]
    finished_at: Mapped[datetime | None]
    outcome: Mapped[str] = mapped_column(sa.String(20))   # ok | permanent | unknown | unreachable | found | not_found
    http_status: Mapped[int | None]
    detail: Mapped[str | None] = mapped_column(sa.String(1000))
    elapsed_ms: Mapped[int | None]
    worker: Mapped[str | None] = mapped_column(sa.String(120))


class SeenSignature(Base):
    """A legacy HMAC signature accepted once; the same one inside the window is a replay."""

    __tablename__ = "mls_seen_signatures"

    digest: Mapped[str] = mapped_column(sa.String(64), primary_key=True)
    seen_at: Mapped[datetime]
    expires_at: Mapped[datetime] = mapped_column(index=True)
