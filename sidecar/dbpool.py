"""Pool behaviour shared by the store's and the site's engines."""

from __future__ import annotations

import time
from typing import Any

import sqlalchemy as sa

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


__all__ = ["PING_AFTER_IDLE_SECONDS", "ping_when_idle"]
