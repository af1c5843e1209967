"""Migration 0017: sleeper counts stored before it were counted by refreshes; a downgrade drops the reconstructed
days, which the earlier code would take for counted ones."""

from __future__ import annotations

from datetime import date

import sqlalchemy as sa

from sidecar.store import db as store_db

BEFORE = "0015_shadow_grants"


def test_existing_counts_are_counted_ones_and_a_downgrade_drops_the_reconstructed(engine):
    store_db.upgrade(engine, BEFORE)
    counts = sa.Table("mls_sleeper_counts", sa.MetaData(), autoload_with=engine)
    with engine.begin() as conn:
        conn.execute(counts.insert(), [{"term_id": 7, "day": date(2026, 11, 23), "sleepers": 4}])

    store_db.upgrade(engine)
    counts = sa.Table("mls_sleeper_counts", sa.MetaData(), autoload_with=engine)
    with engine.begin() as conn:
        assert conn.execute(sa.select(counts.c.day, counts.c.reconstructed)).all() == [(date(2026, 11, 23), False)]
        conn.execute(counts.insert(), [{"term_id": 7, "day": date(2026, 11, 22), "sleepers": 3, "reconstructed": True}])

    store_db.downgrade(engine, BEFORE)
    with engine.connect() as conn:
        assert conn.execute(sa.text("SELECT term_id, sleepers FROM mls_sleeper_counts")).all() == [(7, 4)]
    assert "reconstructed" not in {c["name"] for c in sa.inspect(engine).get_columns("mls_sleeper_counts")}
