"""Shared commits for the grant intake (group commit).

Each accepted grant is one grant row, its audit rows and, when an endpoint listens, its
``grant.accepted`` event: a transaction of a few INSERTs whose fixed costs (the store's write lock,
the round trips, the commit itself) outweigh the rows. Requests that arrive while a commit is under
way queue here; the next commit writes all of them in one transaction (multi-row INSERTs, one look
at the webhook endpoints), and each request answers only once the transaction holding its grant has
committed. Nothing is answered earlier than before, nothing is kept in memory after the answer: a
crash at any point loses only requests that had not been answered.

Who writes: the first request to find nobody writing leads; when its transaction is done it hands the
lead to the oldest request that queued meanwhile (which takes everything queued by then), so no
request waits for more than one transaction beyond its own and no thread lives here.

A request whose idempotency key is already stored, or taken by an earlier request of the same
transaction, gets :class:`KeyTaken` and answers as a replay. A grant committed alone is inserted
without a look (the unique key decides, as before shared commits); a shared commit looks first, and
when it still fails on a unique key the look could not see (another process inserted it a moment
earlier), every grant of it is written again in a transaction of its own, so one collision never
fails the others.
"""

from __future__ import annotations

import threading
from collections.abc import Callable
from typing import Any

import sqlalchemy as sa
from sqlalchemy.engine import Connection
from sqlalchemy.exc import IntegrityError

from sidecar.store import audit
from sidecar.store.db import write_gate
from sidecar.store.grant_models import Grant
from sidecar.webhooks.events import emit, enabled_endpoints

_INSERT_GRANT = Grant.__table__.insert()
#: One transaction writes at most this many grants (a bound on its length; a burst is split).
MAX_BATCH = 64


class KeyTaken(Exception):
    """The grant's idempotency key is stored already (or by an earlier grant of the same commit)."""


class PendingGrant:
    """One request's rows, waiting for the transaction that writes them."""

    __slots__ = ("values", "audit_rows", "event", "_done", "_lead", "_finished", "_error")

    def __init__(self, values: dict[str, Any], audit_rows: list[dict[str, Any]],
                 event: tuple[str, dict[str, Any]] | None) -> None:
        self.values = values
        self.audit_rows = audit_rows
        self.event = event                    # (type, data) of the webhook event, if any
        self._done = threading.Event()
        self._lead = False
        self._finished = False
        self._error: BaseException | None = None

    @property
    def key(self) -> str | None:
        return self.values.get("idempotency_key")

    def finish(self, error: BaseException | None = None) -> None:
        self._error = error
        self._finished = True
        self._done.set()

    def lead(self) -> None:
        self._lead = True
        self._done.set()


class IntakeWriter:
    """Group commit of accepted grants on one store engine (one per process and engine)."""

    def __init__(self, engine: Callable[[], sa.Engine], max_batch: int = MAX_BATCH) -> None:
        self._engine = engine    # asked at each commit: the runtime's store engine, whatever it is now
        self.max_batch = max_batch
        self._lock = threading.Lock()
        self._queue: list[PendingGrant] = []
        self._writing = False
        #: Called with each committed batch's size (the bench and the tests read it).
        self.on_commit: Callable[[int], None] | None = None

    def write(self, pending: PendingGrant) -> None:
        """Return once ``pending`` is committed; raise :class:`KeyTaken` when its key was taken, or the
        store's error when its transaction failed (nothing of it is stored then)."""
        with self._lock:
            if self._writing:
                self._queue.append(pending)
                leading = False
            else:
                self._writing = True
                leading = True
        if not leading:
            pending._done.wait()
            if not pending._lead:
                self._raise_for(pending)
                return
        # Leading: this request and whatever queued until now (up to max_batch).
        with self._lock:
            batch = [pending] + self._queue[: self.max_batch - 1]
            del self._queue[: self.max_batch - 1]
        try:
            self._commit(batch)
        finally:
            with self._lock:
                if self._queue:
                    self._queue.pop(0).lead()
                else:
                    self._writing = False
        self._raise_for(pending)

    @staticmethod
    def _raise_for(pending: PendingGrant) -> None:
        if pending._error is not None:
            raise pending._error

    # --- the transaction ------------------------------------------------------------------------------
    def _commit(self, batch: list[PendingGrant]) -> None:
        try:
            written = self._write(batch)
        except IntegrityError:
            if len(batch) == 1:
                batch[0].finish(_taken())
                return
            # A key inserted by another process between the look and the insert: each on its own.
            for pending in batch:
                try:
                    self._write([pending])
                except IntegrityError:
                    pending.finish(_taken())
                except Exception as exc:  # the store's failure is this request's answer  # noqa: BLE001
                    pending.finish(exc)
            return
        except Exception as exc:  # noqa: BLE001 - the store's failure is each request's answer
            for pending in batch:
                pending.finish(exc)
            return
        except BaseException as exc:
            # The leading thread itself is being stopped: nobody of its batch may be left waiting.
            for pending in batch:
                if not pending._finished:
                    pending.finish(exc)
            raise
        if self.on_commit is not None:
            self.on_commit(len(written))

    def _write(self, batch: list[PendingGrant]) -> list[PendingGrant]:
        """One transaction for ``batch``; finishes every member (KeyTaken for those not written)."""
        keys = [p.key for p in batch if p.key]
        engine = self._engine()
        with write_gate(engine), engine.begin() as connection:
            # A grant alone is inserted straight away (a stored key fails it, as a replay); a shared
            # commit looks first, so that one replay among them does not fail the others' transaction.
            stored = _stored_keys(connection, keys) if keys and len(batch) > 1 else set()
            writing: list[PendingGrant] = []
            taken: list[PendingGrant] = []
            for pending in batch:
                if pending.key and pending.key in stored:
                    taken.append(pending)
                else:
                    writing.append(pending)
                    if pending.key:
                        stored.add(pending.key)
            if writing:
                connection.execute(_INSERT_GRANT, [p.values for p in writing])
                audit.insert_rows(connection, [row for p in writing for row in p.audit_rows])
                _emit_all(connection, writing)
        for pending in writing:
            pending.finish()
        for pending in taken:
            pending.finish(_taken())
        return writing


def _taken() -> KeyTaken:
    return KeyTaken("idempotency key already stored")


def _stored_keys(connection: Connection, keys: list[str]) -> set[str]:
    found = connection.execute(sa.select(Grant.idempotency_key).where(Grant.idempotency_key.in_(keys)))
    return {key for (key,) in found}


def _emit_all(connection: Connection, written: list[PendingGrant]) -> None:
    events = [(p.event, p.values["created_at"]) for p in written if p.event is not None]
    if not events:
        return
    endpoints = enabled_endpoints(connection)   # read once for the whole transaction
    if not endpoints:
        return
    for (event_type, data), at in events:
        emit(connection, event_type, data, at, endpoints=endpoints)


__all__ = ["IntakeWriter", "KeyTaken", "MAX_BATCH", "PendingGrant"]
