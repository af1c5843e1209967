"""Named leases in the store: at most one process runs a given job at a time, across hosts.

A lease is taken with one conditional UPDATE (or the INSERT of a new row, guarded by the primary
key), so two workers racing for it cannot both win, whatever the database.
"""

from __future__ import annotations

import os
import secrets
import socket
from datetime import datetime, timedelta

import sqlalchemy as sa
from sqlalchemy.exc import IntegrityError
from sqlalchemy.orm import Session, sessionmaker

from sidecar.store.models import JobLease


def holder_name() -> str:
    """Who holds a lease or a claim: this host and process."""
    return f"{socket.gethostname()}:{os.getpid()}"


def try_acquire(sessions: sessionmaker[Session], name: str, holder: str, ttl: timedelta, now: datetime) -> bool:
    expires = now + ttl
    with sessions() as session:
        updated = session.execute(
            sa.update(JobLease)
            .where(JobLease.name == name, sa.or_(JobLease.expires_at <= now, JobLease.holder == holder))
            .values(holder=holder, expires_at=expires, last_started_at=now)
        ).rowcount
        if updated:
            session.commit()
            return True
        session.rollback()
    with sessions() as session:
        try:
            session.add(JobLease(name=name, holder=holder, expires_at=expires, last_started_at=now))
            session.commit()
            return True
        except IntegrityError:
            session.rollback()
            return False


OUTCOME_LENGTH = 200  # JobLease.last_outcome


def clip_outcome(outcome: str, length: int = OUTCOME_LENGTH) -> str:
    """``outcome`` within the column: a long summary keeps its whole leading clauses ("; "-separated)
    and says with an ellipsis that it was cut, instead of ending in the middle of a word."""
    if len(outcome) <= length:
        return outcome
    cut = outcome[:length - 1]
    boundary = cut.rfind("; ")
    return (cut[:boundary] if boundary > 0 else cut) + "…"


def release(sessions: sessionmaker[Session], name: str, holder: str, now: datetime, outcome: str) -> None:
    with sessions() as session:
        session.execute(
            sa.update(JobLease)
            .where(JobLease.name == name, JobLease.holder == holder)
            .values(expires_at=now, last_finished_at=now, last_outcome=clip_outcome(outcome))
        )
        session.commit()


def get(sessions: sessionmaker[Session], name: str) -> JobLease | None:
    with sessions() as session:
        return session.get(JobLease, name)


def claim_holder() -> str:
    """The name of one claim of an outbox row (``claimed_by``): this process plus a token of its own, so
    that a later claim of the same row — by another process, or another thread of this one — never
    passes for this one when a conditional UPDATE checks who holds the row."""
    return f"{socket.gethostname()[:56]}:{os.getpid()}:{secrets.token_hex(6)}"[:80]
