"""Migration 0014: every level starts not approved, except a level whose letters the store already sent."""

from __future__ import annotations

from datetime import date, datetime

import sqlalchemy as sa

from sidecar.store import db as store_db

BEFORE = "0013_grant_alerts"
AT = datetime(2026, 12, 1, 9, 30)


def _letter(row_id: int, term_id: int, state: str, **values) -> dict:
    return {"id": row_id, "user_id": row_id, "term_id": term_id, "expired_on": date(2026, 11, 28), "step": 1,
            "state": state, "reason": "", "due_on": date(2026, 12, 1), "planned_at": AT, "updated_at": AT,
            "attempts": 1, "to_address": "", "subject": "", "last_error": "", "sent_at": None, **values}


def test_levels_that_already_sent_are_approved_by_the_upgrade_the_others_wait(engine):
    store_db.upgrade(engine, BEFORE)
    reminders = sa.Table("mls_reminders", sa.MetaData(), autoload_with=engine)
    with engine.begin() as conn:
        conn.execute(reminders.insert(), [
            _letter(1, 30, "sent", sent_at=AT), _letter(2, 30, "planned"),
            _letter(3, 31, "planned"), _letter(4, 32, "failed"), _letter(5, 33, "skipped")])

    store_db.upgrade(engine)
    with engine.connect() as conn:
        approvals = conn.execute(sa.text(
            "SELECT term_id, approved_at, approved_by, approved_source, approved_letters FROM mls_reminder_approvals")).all()
        events = conn.execute(sa.text(
            "SELECT subject_type, subject_id, action, actor FROM mls_audit_events")).all()
    assert [(r.term_id, r.approved_by, r.approved_source, r.approved_letters) for r in approvals] == [
        (30, "upgrade", "upgrade", None)]
    assert approvals[0].approved_at is not None
    assert events == [("monitor_level", "30", "reminders.approved", "upgrade")]

    store_db.downgrade(engine, BEFORE)
    names = sa.inspect(engine).get_table_names()
    assert "mls_reminder_approvals" not in names and "mls_reminder_awaiting" not in names


def test_a_store_that_never_sent_approves_nothing(engine):
    store_db.upgrade(engine)
    with engine.connect() as conn:
        assert conn.execute(sa.text("SELECT count(*) FROM mls_reminder_approvals")).scalar() == 0
