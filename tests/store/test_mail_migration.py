"""Migration 0009: the tables agree with the models, and what earlier versions recorded about
interrupted sends and welcome letters carries over."""

from __future__ import annotations

from datetime import date, datetime

import sqlalchemy as sa
from alembic.autogenerate import compare_metadata
from alembic.migration import MigrationContext

from sidecar.store import db as store_db
from sidecar.store import (  # noqa: F401 - registers their tables
    alert_models, dashboard_models, grant_models, mail_models, monitor_models, program_models, reminder_models, webhook_models,
)
from sidecar.store.models import Base

BEFORE = "0008_unknown_outcomes"
AT = datetime(2026, 12, 1, 9, 30)


def test_the_migrated_schema_is_the_models_schema(engine):
    store_db.upgrade(engine)
    with engine.connect() as conn:
        differences = compare_metadata(MigrationContext.configure(conn, opts={"compare_type": True}), Base.metadata)
    assert [d for d in differences if not (d[0] == "remove_table" and d[1].name == store_db.VERSION_TABLE)] == []


def _table(engine, name: str) -> sa.Table:
    return sa.Table(name, sa.MetaData(), autoload_with=engine)


def _ledger_row(**values) -> dict:
    return {"state": "failed", "reason": "interrupted", "due_on": date(2026, 12, 1), "planned_at": AT, "updated_at": AT,
            "attempts": 1, "message_id": "<m@school.example>", "to_address": "", "subject": "", "last_error": "", **values}


def _grant_row(grant_id: str, meta: dict) -> dict:
    return {"id": grant_id, "request_hash": "h", "channel": "api", "principal": "api_key:test", "meta": meta,
            "status": "succeeded", "attempts": 1, "next_attempt_at": AT, "outcome_unknown": False,
            "created_at": AT, "updated_at": AT, "completed_at": AT, "is_unlimited": False, "orders_sent": 1,
            "email": f"{grant_id}@example.com", "user_existed": False}


def test_interrupted_sends_become_unknown_and_welcome_letters_become_outbox_rows(engine):
    store_db.upgrade(engine, BEFORE)
    with engine.begin() as conn:
        conn.execute(_table(engine, "mls_reminder_digests").insert(), [
            _ledger_row(id=1, term_id=30, day=date(2026, 12, 1), learners=1)])
        conn.execute(_table(engine, "mls_reminders").insert(), [
            _ledger_row(id=1, user_id=1, term_id=30, expired_on=date(2026, 11, 28), step=1),
            _ledger_row(id=2, user_id=2, term_id=30, expired_on=date(2026, 11, 28), step=1, reason="smtp_permanent")])
        conn.execute(_table(engine, "mls_grants").insert(), [
            _grant_row("g-sent", {"welcome": "sent", "welcome_message_id": "<w1@school.example>"}),
            _grant_row("g-failed", {"welcome": "failed", "welcome_error": "SMTP 550: no such mailbox"}),
            _grant_row("g-sending", {"welcome": "sending"}),
            _grant_row("g-none", {"confirm_attempts": 1})])

    store_db.upgrade(engine)
    with engine.connect() as conn:
        letters = dict(conn.execute(sa.text("SELECT id, state FROM mls_reminders")).all())
        digest = conn.execute(sa.text("SELECT state, reason, data_started_at FROM mls_reminder_digests")).one()
        welcome = {r.grant_id: r for r in conn.execute(sa.text(
            "SELECT grant_id, state, reason, message_id, last_error, sent_at FROM mls_welcome_emails"))}
    assert letters == {1: "unknown", 2: "failed"}
    assert digest.state == "unknown" and digest.reason == "interrupted" and digest.data_started_at is not None
    assert set(welcome) == {"g-sent", "g-failed", "g-sending"}
    assert welcome["g-sent"].state == "sent" and welcome["g-sent"].message_id == "<w1@school.example>"
    assert welcome["g-sent"].sent_at is not None
    assert welcome["g-failed"].state == "failed" and "550" in welcome["g-failed"].last_error
    assert welcome["g-sending"].state == "unknown" and welcome["g-sending"].reason == "interrupted"

    store_db.downgrade(engine, BEFORE)
    with engine.connect() as conn:
        assert dict(conn.execute(sa.text("SELECT id, state FROM mls_reminders")).all()) == {1: "failed", 2: "failed"}
        assert "mls_welcome_emails" not in sa.inspect(conn).get_table_names()
