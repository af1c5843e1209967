"""Pool behaviour shared by the store's and the site's engines."""

from __future__ import annotations

import time
from typing import Any

import sqlalchemy as sa
from pymysql.constants.SERVER_STATUS import SERVER_STATUS_IN_TRANS

#: A pooled connection back in the pool for less than this is handed out again without a ping.
PING_AFTER_IDLE_SECONDS = 1.0


def ping_when_idle(engine: sa.Engine, what: str) -> None:
    """Ping a pooled connection at checkout only when it has been idle in the pool for a while.

    A ping is a round trip of its own before every unit of work (one grant's delivery takes several);
    a connection that came back a moment ago has just worked. One the server dropped within that moment
    fails its first statement instead, which invalidates the pool's connections, and that unit of work
    is rolled back like any failed one (each is safe to repeat). ``what`` names the database in the error.
    """

    @sa.event.listens_for(engine, "checkin")
    def _checked_in(_dbapi_conn: Any, record: Any) -> None:
        record.info["mls_checked_in"] = time.monotonic()

    @sa.event.listens_for(engine, "checkout")
    def _checked_out(dbapi_conn: Any, record: Any, _proxy: Any) -> None:
        since = record.info.get("mls_checked_in")
        if since is None or time.monotonic() - since < PING_AFTER_IDLE_SECONDS:
            return  # a new connection, or one that was in use a moment ago
        try:
            engine.dialect.do_ping(dbapi_conn)
        except Exception as exc:  # the pool replaces the connection and checks out another
            raise sa.exc.DisconnectionError(f"{what} connection lost while idle: {exc}") from exc


#: create_engine() arguments for a MySQL/MariaDB engine that :func:`roll_back_open_transactions` resets.
NO_BLIND_RESET = {"pool_reset_on_return": None}


def roll_back_open_transactions(engine: sa.Engine) -> None:
    """On MySQL/MariaDB, a connection going back to the pool is rolled back only when the server says a
    transaction is open on it (the status flag of its last answer), instead of always.

    The pool's default reset sends ROLLBACK on every return, also after a COMMIT that already ended the
    transaction: one more round trip per unit of work (each accepted grant, each step of a delivery). The
    flag comes with every answer of the server, so a connection left inside a transaction (an error, reads
    in an implicit transaction) is still rolled back before anyone else uses it. The engine must be made
    with :data:`NO_BLIND_RESET`.
    """

    @sa.event.listens_for(engine, "reset")
    def _reset(dbapi_conn: Any, _record: Any, _state: Any) -> None:
        if getattr(dbapi_conn, "server_status", SERVER_STATUS_IN_TRANS) & SERVER_STATUS_IN_TRANS:
            dbapi_conn.rollback()


__all__ = ["NO_BLIND_RESET", "PING_AFTER_IDLE_SECONDS", "ping_when_idle", "roll_back_open_transactions"]
