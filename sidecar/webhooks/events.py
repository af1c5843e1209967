"""Event types, their documented bodies, and :func:`emit` — called inside the transaction that made
the change, so an event exists exactly when its cause was committed (never lost, never invented).

Every event body is ``{"id", "type", "timestamp", "data"}``; ``id`` is unique and is also sent as
the ``webhook-id`` header, so a receiver can drop a redelivery it already processed.
"""

from __future__ import annotations

import secrets
from datetime import datetime
from typing import Any

import sqlalchemy as sa
from sqlalchemy.engine import Connection
from sqlalchemy.orm import Session

from sidecar.config import WEBHOOK_EVENTS
from sidecar.store.db import connection_of
from sidecar.store.webhook_models import WebhookDelivery, WebhookEndpoint, WebhookEvent
from sidecar.webhooks.samples import TEST_EVENT

__all__ = ["SCHEMAS", "TEST_EVENT", "json_schema", "new_event_id", "body", "listens", "emit", "emit_test"]

_INT = {"type": "integer"}
_STR = {"type": "string"}
_DATE = {"type": ["string", "null"], "format": "date"}
_NULLABLE_INT = {"type": ["integer", "null"]}

# The ``data`` object of each event type (JSON Schema); docs/webhooks.md shows them with examples.
SCHEMAS: dict[str, dict[str, Any]] = {
    "grant.accepted": {"grant_id": _STR, "channel": _STR, "external_id": {"type": ["string", "null"]},
                       "email": _STR, "term_id": _INT, "duration": _INT, "units": _STR},
    "grant.succeeded": {"grant_id": _STR, "channel": _STR, "external_id": {"type": ["string", "null"]},
                        "email": _STR, "user_id": _NULLABLE_INT, "term_id": _INT, "order_id": _NULLABLE_INT,
                        "key_id": _NULLABLE_INT, "date_start": _DATE, "date_end": _DATE, "is_unlimited": {"type": "boolean"}},
    "grant.duplicated": {"grant_id": _STR, "channel": _STR, "external_id": {"type": ["string", "null"]},
                         "email": _STR, "user_id": _NULLABLE_INT, "term_id": _INT, "order_id": _NULLABLE_INT,
                         "key_id": _NULLABLE_INT, "date_start": _DATE, "date_end": _DATE, "is_unlimited": {"type": "boolean"},
                         "key_ids": {"type": "array", "items": _INT},
                         "keys": {"type": "array", "items": {"type": "object", "required": ["key_id", "term_id", "date_start", "date_end"],
                                                             "properties": {"key_id": _INT, "term_id": _NULLABLE_INT,
                                                                            "date_start": _DATE, "date_end": _DATE}}}},
    "grant.failed": {"grant_id": _STR, "channel": _STR, "external_id": {"type": ["string", "null"]}, "email": _STR,
                     "term_id": _NULLABLE_INT, "error": _STR},
    "grant.unsettled": {"grant_id": _STR, "channel": _STR, "external_id": {"type": ["string", "null"]}, "email": _STR,
                        "term_id": _NULLABLE_INT, "status": {"enum": ["delivering", "unknown", "confirming"]},
                        "orders_sent": _INT, "since": {"type": "string", "format": "date-time"}, "error": _STR},
    "program.step_granted": {"program_id": _INT, "program_name": _STR, "enrolment_id": _INT, "user_id": _INT,
                             "completed_step": _INT, "completed_level": _INT, "granted_step": _INT,
                             "granted_level": _INT, "granted_duration": _INT, "granted_units": _STR, "grant_id": _STR,
                             "certificate_id": _INT, "total_steps": _INT},
    "program.completed": {"program_id": _INT, "program_name": _STR, "enrolment_id": _INT, "user_id": _INT,
                          "completed_step": _INT, "completed_level": _INT, "certificate_id": _INT, "total_steps": _INT},
    "reminder.sent": {"reminder_id": _INT, "user_id": _INT, "term_id": _INT, "expired_on": _DATE, "step": _INT,
                      "message_id": _STR},
    "reminder.failed": {"reminder_id": _INT, "user_id": _INT, "term_id": _INT, "expired_on": _DATE, "step": _INT,
                        "reason": _STR, "error": _STR},
    "sleeper.detected": {"user_id": _INT, "term_id": _INT, "expired_on": _DATE, "email": _STR},
    "access.activated": {"user_id": _INT, "email": _STR, "term_id": _INT, "level_name": _STR, "key_id": _INT,
                         "date_start": _DATE, "date_end": _DATE, "is_unlimited": {"type": "boolean"},
                         "activated_on": _DATE, "memberlux_source": {"type": ["string", "null"]},
                         "source": {"type": "string", "pattern": "^(key_scan|memberlux_webhook:.*)$"}},
    "access.expired": {"user_id": _INT, "email": _STR, "term_id": _INT, "level_name": _STR, "expired_on": _DATE,
                       "last_grant": _DATE, "blocked": {"type": "boolean"},
                       "certificate_class": {"enum": ["manual", "auto", None]}},
    "certificate.issued": {"certificate_id": _INT, "user_id": _INT, "email": _STR, "term_id": _INT, "level_name": _STR,
                           "certificate_class": {"enum": ["manual", "auto"]}, "date_issue": _DATE, "create_date": _DATE},
}
assert set(SCHEMAS) == set(WEBHOOK_EVENTS)


def json_schema(event_type: str) -> dict[str, Any]:
    """The full JSON Schema of one event type's body."""
    data = SCHEMAS[event_type]
    return {
        "$schema": "https://json-schema.org/draft/2020-12/schema",
        "title": event_type,
        "type": "object",
        "required": ["id", "type", "timestamp", "data"],
        "properties": {
            "id": {"type": "string", "pattern": "^evt_[0-9a-z]+$"},
            "type": {"const": event_type},
            "timestamp": {"type": "string", "format": "date-time"},
            "data": {"type": "object", "required": sorted(data), "properties": data},
        },
    }


def new_event_id() -> str:
    return "evt_" + secrets.token_hex(12)


def body(event: WebhookEvent) -> dict[str, Any]:
    return {"id": event.id, "type": event.type, "timestamp": event.created_at.isoformat().replace("+00:00", "Z"),
            "data": event.data}


def _matches(endpoint: WebhookEndpoint | sa.Row, event_type: str, program_id: int | None) -> bool:
    if endpoint.program_id is not None and endpoint.program_id != program_id:
        return False
    events = endpoint.events or ["*"]
    return "*" in events or event_type in events


def listens(session: Session, event_type: str) -> bool:
    """Whether any enabled endpoint would receive ``event_type`` (to skip work nobody needs)."""
    return any(_matches(e, event_type, None) or e.program_id is not None and _matches(e, event_type, e.program_id)
               for e in session.scalars(sa.select(WebhookEndpoint).where(WebhookEndpoint.enabled.is_(True))))


_ENABLED_ENDPOINTS = (sa.select(WebhookEndpoint.id, WebhookEndpoint.events, WebhookEndpoint.program_id)
                      .where(WebhookEndpoint.enabled.is_(True)))


def enabled_endpoints(connection: Connection) -> list[sa.Row]:
    """The enabled endpoints, the three columns the choice of :func:`emit` needs, without loading entities."""
    return list(connection.execute(_ENABLED_ENDPOINTS))


def emit(target: Session | Connection, event_type: str, data: dict[str, Any], at: datetime, *,
         program_id: int | None = None, endpoints: list[sa.Row] | None = None) -> str | None:
    """Record an event and its deliveries in the transaction of ``target`` (a session or a connection);
    None when nobody listens.

    With no enabled endpoint interested, nothing is stored: events are kept for delivery, not as a
    second audit log (the audit trail has the facts). Plain INSERTs on the transaction's connection,
    not ORM objects: every grant intake runs this, and a unit of work costs more than the writes.
    ``endpoints``: :func:`enabled_endpoints` read earlier in the same transaction, for a caller that
    emits several events at once.
    """
    if event_type not in SCHEMAS:
        raise ValueError(f"unknown event type {event_type}")
    connection = connection_of(target)
    # Nothing pending in a session can change the answer: endpoints are edited in transactions of their own.
    listening = [e for e in (enabled_endpoints(connection) if endpoints is None else endpoints)
                 if _matches(e, event_type, program_id)]
    if not listening:
        return None
    event_id = new_event_id()
    connection.execute(_INSERT_EVENT, {"id": event_id, "type": event_type, "program_id": program_id, "data": data,
                                       "created_at": at})
    connection.execute(_INSERT_DELIVERY, [{"event_id": event_id, "endpoint_id": e.id, "state": "pending", "attempts": 0,
                                           "next_attempt_at": at, "created_at": at, "updated_at": at}
                                          for e in listening])
    return event_id


_INSERT_EVENT = WebhookEvent.__table__.insert()
_INSERT_DELIVERY = WebhookDelivery.__table__.insert()


def emit_test(session: Session, endpoint_id: int, at: datetime, actor: str) -> str:
    """A ``webhook.test`` event for one endpoint only (the UI's "send test event"), enabled or not."""
    event = WebhookEvent(id=new_event_id(), type=TEST_EVENT, data={"endpoint_id": endpoint_id, "requested_by": actor},
                         created_at=at)
    session.add(event)
    session.flush()
    session.add(WebhookDelivery(event_id=event.id, endpoint_id=endpoint_id, state="pending", attempts=0,
                                next_attempt_at=at, created_at=at, updated_at=at))
    return event.id
