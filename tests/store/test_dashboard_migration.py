"""Migration 0018: the dashboard's stored comparison (one row per outcome window) and the index the page's
letter counts read; a downgrade removes both and keeps the ledger."""

from __future__ import annotations

from datetime import date, datetime

import sqlalchemy as sa

from sidecar.store import db as store_db

BEFORE = "0017_sleeper_history"
AT = datetime(2026, 11, 24, 9, 0)


def test_the_snapshots_table_and_the_letters_index_come_and_go(engine):
    store_db.upgrade(engine, BEFORE)
    store_db.upgrade(engine)
    inspector = sa.inspect(engine)
    assert "ix_mls_reminders_sent" in {ix["name"] for ix in inspector.get_indexes("mls_reminders")}
    snapshots = sa.Table("mls_dashboard_snapshots", sa.MetaData(), autoload_with=engine)
    with engine.begin() as conn:
        conn.execute(snapshots.insert(), [{"window_days": 14, "computed_for": date(2026, 11, 24), "first_day": date(2025, 11, 24),
                                           "last_day": date(2026, 11, 9), "computed_at": AT, "seconds": 1.5, "figures": {}}])

    store_db.downgrade(engine, BEFORE)
    inspector = sa.inspect(engine)
    assert "mls_dashboard_snapshots" not in inspector.get_table_names()
    assert "ix_mls_reminders_sent" not in {ix["name"] for ix in inspector.get_indexes("mls_reminders")}
    assert "mls_reminders" in inspector.get_table_names()
