"""Append-only audit trail. Callers add events inside their own unit of work, so an event is stored
exactly when the change it describes is."""

from __future__ import annotations

from datetime import datetime
from typing import Any

import sqlalchemy as sa
from sqlalchemy.engine import Connection
from sqlalchemy.orm import Session

from sidecar.logs import request_id_var
from sidecar.store.db import connection_of
from sidecar.store.models import AuditEvent


def record(session: Session, *, subject_type: str, subject_id: str, action: str, at: datetime,
           actor: str = "system", source_ip: str | None = None, **details: Any) -> AuditEvent:
    event = AuditEvent(occurred_at=at, subject_type=subject_type, subject_id=str(subject_id), action=action,
                       actor=actor[:120], source_ip=source_ip, request_id=request_id_var.get(),
                       details={k: v for k, v in details.items() if v is not None})
    session.add(event)
    return event


_INSERT = AuditEvent.__table__.insert()


def row(*, subject_type: str, subject_id: str, action: str, at: datetime, actor: str = "system",
        source_ip: str | None = None, **details: Any) -> dict[str, Any]:
    """The column values of one event, for :func:`insert_rows` (the same values :func:`record` stores)."""
    return {"occurred_at": at, "subject_type": subject_type, "subject_id": str(subject_id), "action": action,
            "actor": actor[:120], "source_ip": source_ip, "request_id": request_id_var.get(),
            "details": {k: v for k, v in details.items() if v is not None}}


def insert_rows(target: Session | Connection, rows: list[dict[str, Any]]) -> None:
    """Add events in one statement of the transaction of ``target`` (a session or a connection), without
    the ORM's unit of work: the grant intake stores a few events per request, and building and flushing
    objects costs more than the write itself."""
    if rows:
        connection_of(target).execute(_INSERT, rows)


def trail(session: Session, subject_type: str, subject_id: str) -> list[AuditEvent]:
    return list(session.scalars(
        sa.select(AuditEvent).where(AuditEvent.subject_type == subject_type, AuditEvent.subject_id == str(subject_id))
        .order_by(AuditEvent.id)))
