"""What the webhook pages read: endpoints, a page of one endpoint's deliveries with their attempts,
and a page of the MemberLux hints received. Pages are keyset pages on the id, newest first, so a
long log costs one index range per page however deep the admin goes."""

from __future__ import annotations

from dataclasses import dataclass, field

import sqlalchemy as sa
from sqlalchemy.orm import Session

from sidecar.store.webhook_models import InboundHint, WebhookAttempt, WebhookDelivery, WebhookEndpoint, WebhookEvent

DELIVERY_STATES = ("pending", "delivering", "succeeded", "failed")
HINT_STATES = ("waiting", "processed")


def endpoints(session: Session) -> list[WebhookEndpoint]:
    # The file's endpoints first (they are the operator's), then the UI's, then the programs'.
    order = sa.case({"config": 0, "ui": 1, "program": 2}, value=WebhookEndpoint.source, else_=3)
    return list(session.scalars(sa.select(WebhookEndpoint).order_by(order, WebhookEndpoint.name)))


def endpoint(session: Session, endpoint_id: int) -> WebhookEndpoint | None:
    return session.get(WebhookEndpoint, endpoint_id)


def pending_counts(session: Session) -> dict[int, int]:
    """Deliveries still to be made, per endpoint (pending or being delivered)."""
    return {int(endpoint_id): int(count) for endpoint_id, count in session.execute(
        sa.select(WebhookDelivery.endpoint_id, sa.func.count()).where(
            WebhookDelivery.state.in_(("pending", "delivering"))).group_by(WebhookDelivery.endpoint_id))}


@dataclass
class DeliveryRow:
    delivery: WebhookDelivery
    event_type: str
    attempts: list[WebhookAttempt] = field(default_factory=list)


@dataclass
class Page:
    rows: list
    next_before: int | None     # the id to pass as ``before`` for the next (older) page


def deliveries(session: Session, endpoint_id: int, *, state: str | None = None, before: int | None = None,
               limit: int = 50) -> Page:
    stmt = (sa.select(WebhookDelivery, WebhookEvent.type)
            .join(WebhookEvent, WebhookEvent.id == WebhookDelivery.event_id)
            .where(WebhookDelivery.endpoint_id == endpoint_id)
            .order_by(WebhookDelivery.id.desc()).limit(limit + 1))
    if state:
        stmt = stmt.where(WebhookDelivery.state == state)
    if before:
        stmt = stmt.where(WebhookDelivery.id < before)
    found = session.execute(stmt).all()
    rows = [DeliveryRow(delivery, event_type) for delivery, event_type in found[:limit]]
    by_id = {row.delivery.id: row for row in rows}
    if by_id:
        for attempt in session.scalars(sa.select(WebhookAttempt).where(WebhookAttempt.delivery_id.in_(list(by_id)))
                                       .order_by(WebhookAttempt.id)):
            by_id[attempt.delivery_id].attempts.append(attempt)
    return Page(rows, rows[-1].delivery.id if len(found) > limit else None)


def delivery_endpoint(session: Session, delivery_id: int) -> int | None:
    """The endpoint a delivery belongs to (to go back to its log after a redelivery)."""
    return session.scalar(sa.select(WebhookDelivery.endpoint_id).where(WebhookDelivery.id == delivery_id))


def hints(session: Session, *, state: str | None = None, before: int | None = None, limit: int = 50) -> Page:
    stmt = sa.select(InboundHint).order_by(InboundHint.id.desc()).limit(limit + 1)
    if state == "waiting":
        stmt = stmt.where(InboundHint.processed_at.is_(None))
    elif state == "processed":
        stmt = stmt.where(InboundHint.processed_at.is_not(None))
    if before:
        stmt = stmt.where(InboundHint.id < before)
    found = list(session.scalars(stmt))
    rows = found[:limit]
    return Page(rows, rows[-1].id if len(found) > limit else None)
