"""Migration 0013: grants that had failed before alerts existed are known (baseline), counted, never mailed."""

from __future__ import annotations

from datetime import datetime

import sqlalchemy as sa

from sidecar.bootstrap import build_runtime
from sidecar.bridge.alerts import detect
from sidecar.store import db as store_db

BEFORE = "0012_access_events"
AT = datetime(2026, 12, 1, 9, 30, 12, 345678)


def _grant(grant_id: str, status: str, completed_at: datetime | None) -> dict:
    return {"id": grant_id, "request_hash": "h", "channel": "api", "principal": "api_key:test", "meta": {},
            "status": status, "attempts": 1, "next_attempt_at": AT, "outcome_unknown": False, "created_at": AT,
            "updated_at": AT, "completed_at": completed_at, "is_unlimited": False, "orders_sent": 1}


def test_earlier_failures_become_baseline_alerts_that_are_never_mailed(engine, store_url, small_site, settings_for):
    store_db.upgrade(engine, BEFORE)
    grants = sa.Table("mls_grants", sa.MetaData(), autoload_with=engine)
    with engine.begin() as conn:
        conn.execute(grants.insert(), [_grant("g-failed", "failed", AT), _grant("g-old-failed", "failed", None),
                                       _grant("g-ok", "succeeded", AT)])
    store_db.upgrade(engine)
    with engine.connect() as conn:
        rows = conn.execute(sa.text("SELECT grant_id, kind, state, digest_id FROM mls_grant_alerts "
                                    "ORDER BY grant_id")).all()
    assert [tuple(r) for r in rows] == [("g-failed", "failed", "baseline", None),
                                       ("g-old-failed", "failed", "baseline", None)]

    runtime = build_runtime(settings_for(small_site, store={"url": store_url}))
    try:
        assert detect(runtime) == 0       # the same episodes: nothing new to mail
    finally:
        runtime.close()

    store_db.downgrade(engine, BEFORE)
    assert not {"mls_grant_alerts", "mls_alert_digests"} & set(sa.inspect(engine).get_table_names())
