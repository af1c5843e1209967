"""Pooled connections of the store and of the WordPress database: pinged at checkout only after a
moment idle (sidecar/dbpool.py), on a real MariaDB server that drops them."""

from __future__ import annotations

import pytest
import sqlalchemy as sa

from sidecar import dbpool
from sidecar.memberlux.schema import connect_wordpress
from sidecar.store import db as store_db

pytestmark = pytest.mark.mariadb

ENGINES = {"store": store_db.create_store_engine, "WordPress database": connect_wordpress}


def _kill_pooled_connection(engine: sa.Engine, admin_url: str) -> int:
    """Use one pooled connection, put it back, and have the server drop it while it is idle."""
    with engine.connect() as conn:
        connection_id = conn.execute(sa.select(sa.func.connection_id())).scalar_one()
    admin = sa.create_engine(admin_url)
    try:
        with admin.connect() as conn:
            conn.execute(sa.text("KILL :id"), {"id": connection_id})
    finally:
        admin.dispose()
    return connection_id


@pytest.mark.parametrize("which", ENGINES)
def test_a_connection_dropped_while_idle_is_pinged_and_replaced(which, mariadb_database, mariadb_admin_url,
                                                                 monkeypatch):
    monkeypatch.setattr(dbpool, "PING_AFTER_IDLE_SECONDS", 0.0)
    engine = ENGINES[which](mariadb_database)
    try:
        killed = _kill_pooled_connection(engine, mariadb_admin_url)
        with engine.connect() as conn:
            assert conn.execute(sa.select(sa.func.connection_id())).scalar_one() != killed
    finally:
        engine.dispose()


@pytest.mark.parametrize("which", ENGINES)
def test_a_connection_back_a_moment_ago_is_handed_out_without_a_ping(which, mariadb_database, mariadb_admin_url,
                                                                      monkeypatch):
    # The other side of the trade-off: within the idle threshold nothing checks the connection, so one the
    # server dropped meanwhile fails its first statement (and the pool is renewed after it).
    monkeypatch.setattr(dbpool, "PING_AFTER_IDLE_SECONDS", 3600.0)
    engine = ENGINES[which](mariadb_database)
    try:
        _kill_pooled_connection(engine, mariadb_admin_url)
        with pytest.raises(sa.exc.OperationalError), engine.connect() as conn:
            conn.execute(sa.select(1)).scalar_one()
        with engine.connect() as conn:
            assert conn.execute(sa.select(1)).scalar_one() == 1
    finally:
        engine.dispose()
