"""Pooled connections of the store and of the WordPress database (sidecar/dbpool.py), on a real MariaDB
server: pinged at checkout only after a moment idle, replaced when the server dropped them, and rolled
back on their way back to the pool only when the server says a transaction is open on them."""

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


@pytest.fixture(params=list(ENGINES))
def pooled(request, mariadb_database, monkeypatch):
    """``pooled(idle_seconds)``: the store's or the WordPress database's engine, pinging after that idle time."""
    made: list[sa.Engine] = []

    def build(idle_seconds: float) -> sa.Engine:
        monkeypatch.setattr(dbpool, "PING_AFTER_IDLE_SECONDS", idle_seconds)
        made.append(ENGINES[request.param](mariadb_database))
        return made[-1]

    yield build
    for engine in made:
        engine.dispose()


def test_a_connection_dropped_while_idle_is_pinged_and_replaced(pooled, mariadb_admin_url):
    engine = pooled(0.0)
    killed = _kill_pooled_connection(engine, mariadb_admin_url)
    with engine.connect() as conn:
        assert conn.execute(sa.select(sa.func.connection_id())).scalar_one() != killed


def test_a_connection_back_a_moment_ago_is_handed_out_without_a_ping(pooled, mariadb_admin_url):
    # The other side of the trade-off: within the idle threshold nothing checks the connection, so one the
    # server dropped meanwhile fails its first statement (and the pool is renewed after it).
    engine = pooled(3600.0)
    _kill_pooled_connection(engine, mariadb_admin_url)
    with pytest.raises(sa.exc.OperationalError), engine.connect() as conn:
        conn.execute(sa.select(1)).scalar_one()
    with engine.connect() as conn:
        assert conn.execute(sa.select(1)).scalar_one() == 1


def _rollbacks_sent(conn: sa.Connection) -> int:
    """ROLLBACK statements the server counted on this connection so far."""
    return int(conn.execute(sa.text("SHOW SESSION STATUS LIKE 'Com_rollback'")).one()[1])


def test_a_connection_whose_transaction_was_committed_goes_back_without_a_rollback(pooled):
    engine = pooled(3600.0)
    with engine.connect() as conn:
        connection_id = conn.execute(sa.select(sa.func.connection_id())).scalar_one()
        before = _rollbacks_sent(conn)
        conn.commit()
    for _ in range(3):
        with engine.begin() as conn:
            assert conn.execute(sa.select(sa.func.connection_id())).scalar_one() == connection_id
    with engine.connect() as conn:
        assert conn.execute(sa.select(sa.func.connection_id())).scalar_one() == connection_id
        assert _rollbacks_sent(conn) == before
        conn.commit()


def test_a_connection_left_inside_a_transaction_is_rolled_back_before_anyone_else_uses_it(mariadb_database):
    engine = store_db.create_store_engine(mariadb_database)
    try:
        with engine.begin() as conn:
            conn.execute(sa.text("CREATE TABLE mls_pool_probe (id INT PRIMARY KEY) ENGINE=InnoDB"))
        with engine.connect() as conn:
            connection_id = conn.execute(sa.select(sa.func.connection_id())).scalar_one()
            conn.commit()
            # Written behind SQLAlchemy's back: the pool cannot know a transaction is open, the server can.
            conn.connection.dbapi_connection.cursor().execute("INSERT INTO mls_pool_probe VALUES (1)")
        with engine.connect() as conn:
            assert conn.execute(sa.select(sa.func.connection_id())).scalar_one() == connection_id
            conn.commit()   # would commit the stray INSERT had it not been rolled back on return
        with engine.connect() as conn:
            assert conn.execute(sa.text("SELECT COUNT(*) FROM mls_pool_probe")).scalar_one() == 0
    finally:
        engine.dispose()
