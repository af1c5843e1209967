"""A store that rolls a transaction back the way MariaDB does when another transaction wins a lock: the
first statement a test picks fails with the server's error, as SQLAlchemy raises it. For tests of code
that must run such a transaction again (sidecar.store.db.run_transaction)."""

from __future__ import annotations

from collections.abc import Callable, Iterator
from contextlib import contextmanager
from typing import Any

import pymysql
import sqlalchemy as sa

#: The errors after which MariaDB has rolled the whole transaction back because of another one.
CONTENTION = [
    (1213, "Deadlock found when trying to get lock; try restarting transaction"),
    (1467, "Failed to read auto-increment value from storage engine"),
    (1205, "Lock wait timeout exceeded; try restarting transaction"),
]


def _params(parameters: Any) -> dict:
    return parameters if isinstance(parameters, dict) else (parameters[0] if parameters else {})


@contextmanager
def failing_once(engine: sa.Engine, matches: Callable[[str, dict], bool], code: int, message: str) -> Iterator[list[str]]:
    """The first statement ``matches(sql, parameters)`` accepts fails with MySQL error ``code``; yields the
    statements that failed (one, once it happened)."""
    failed: list[str] = []

    def before(_conn, _cursor, statement: str, parameters, *_args) -> None:
        if not failed and matches(statement, _params(parameters)):
            failed.append(statement)
            raise sa.exc.OperationalError(statement, parameters, pymysql.err.OperationalError(code, message))

    sa.event.listen(engine, "before_cursor_execute", before)
    try:
        yield failed
    finally:
        sa.event.remove(engine, "before_cursor_execute", before)
