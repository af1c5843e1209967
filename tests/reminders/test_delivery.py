"""The delivery guarantee: at most once per (user, level, X, step), whatever runs, crashes or fails.

See sidecar/reminders/sender.py for the mechanism (conditional-update claim, Message-ID stored
before the SMTP transaction, interrupted sends never resent by themselves). Unknown outcomes are
attacked with a faulty SMTP server in test_unknown_outcomes.py.
"""

from __future__ import annotations

import threading
from collections import Counter

import pytest
import sqlalchemy as sa

from sidecar.mail.mailer import Mailer
from sidecar.reminders.planner import ReminderPlanner
from sidecar.reminders.run import run_reminders
from sidecar.reminders.sender import ReminderSender, resend
from sidecar.store.models import AuditEvent
from sidecar.store.reminder_models import Reminder


def rows(school) -> list[Reminder]:
    with school.runtime.sessions() as session:
        return list(session.scalars(sa.select(Reminder).order_by(Reminder.user_id, Reminder.step)))


def learners_due(school, n: int) -> None:
    school.schedule(days=(3, None, None), admin_days=None)
    for user_id in range(1, n + 1):
        school.learner(user_id)
        school.expired(user_id, days_ago=3)


def two_senders_at_once(school, smtp_settings) -> list:
    reports, barrier = [], threading.Barrier(2)

    def work() -> None:
        sender = ReminderSender(school.runtime, Mailer(smtp_settings))
        barrier.wait()
        try:
            reports.append(sender.send_due())
        except BaseException as exc:  # noqa: BLE001 - a failing sender shows up as a missing report
            reports.append(exc)

    threads = [threading.Thread(target=work) for _ in range(2)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join(60)
    return reports


@pytest.mark.parametrize("store", ["sqlite", pytest.param("mariadb", marks=pytest.mark.mariadb)])
def test_two_concurrent_runners_send_each_letter_once(school_factory, smtp_server, store, request):
    host, port, inbox = smtp_server
    store_url = request.getfixturevalue("mariadb_database") if store == "mariadb" else None
    school = school_factory(smtp=(host, port), store_url=store_url)
    learners_due(school, 12)
    # Two planners race as well: the unique ledger key keeps one decision per chain and step.
    errors: list[BaseException] = []

    def plan() -> None:
        try:
            ReminderPlanner(school.runtime).plan()
        except BaseException as exc:  # noqa: BLE001 - reported by the assertion below
            errors.append(exc)

    planners = [threading.Thread(target=plan) for _ in range(2)]
    for thread in planners:
        thread.start()
    for thread in planners:
        thread.join(60)
    assert errors == []
    assert len(rows(school)) == 12
    reports = two_senders_at_once(school, school.settings.smtp)
    recipients = Counter(r for _, rcpts, _ in inbox.messages for r in rcpts)
    assert len(recipients) == 12 and set(recipients.values()) == {1}
    assert sum(r.sent for r in reports) == 12, reports
    assert {r.state for r in rows(school)} == {"sent"}


def test_a_crash_between_send_and_record_never_sends_twice(school, smtp_server, monkeypatch):
    _, _, inbox = smtp_server
    learners_due(school, 1)
    real_finish = ReminderSender._finish

    def crash(self, model, row, state, *args, **kwargs):
        if state.value == "sent":
            raise SystemExit("the process died after the SMTP server accepted the message")
        return real_finish(self, model, row, state, *args, **kwargs)

    monkeypatch.setattr(ReminderSender, "_finish", crash)
    with pytest.raises(SystemExit):
        run_reminders(school.runtime)
    monkeypatch.setattr(ReminderSender, "_finish", real_finish)
    assert len(inbox.messages) == 1
    [row] = rows(school)
    assert row.state == "sending" and row.message_id == inbox.messages[0][2]["Message-ID"]

    run_reminders(school.runtime)                      # restarted at once: the lease still runs
    school.advance(days=1)
    run_reminders(school.runtime)                      # and the next days
    school.advance(days=1)
    run_reminders(school.runtime)
    assert len(inbox.messages) == 1
    [row] = rows(school)
    assert row.state == "unknown" and row.reason == "interrupted" and row.message_id in row.last_error

    # The admin checked the mail log, found nothing, and resends on purpose.
    assert resend(school.runtime, [row.id], actor="admin@school") == 1
    ReminderSender(school.runtime).send_due()
    assert len(inbox.messages) == 2 and rows(school)[0].state == "sent"
    with school.runtime.sessions() as session:
        actions = [e.action for e in session.scalars(sa.select(AuditEvent).where(AuditEvent.subject_type == "reminder"))]
    assert "reminder.unknown" in actions and "reminder.resend" in actions


def test_smtp_down_then_up_retries_with_backoff_and_sends_once(school_factory, smtp_server):
    host, port, inbox = smtp_server
    down = school_factory(smtp=("127.0.0.1", 9))       # nothing listens on port 9
    learners_due(down, 1)
    report = run_reminders(down.runtime)
    assert report.send.retrying == 1 and inbox.messages == []
    [row] = rows(down)
    assert row.state == "planned" and row.attempts == 1 and row.next_attempt_at is not None
    assert "ConnectionRefusedError" in row.last_error

    up = ReminderSender(down.runtime, Mailer(down.settings.smtp.model_copy(update={"host": host, "port": port})))
    assert up.send_due().sent == 0                     # not before the retry time
    down.advance(seconds=61)
    assert up.send_due().sent == 1
    [row] = rows(down)
    assert row.state == "sent" and row.attempts == 2 and len(inbox.messages) == 1


def test_transient_failures_give_up_after_max_attempts(school_factory):
    school = school_factory(smtp=("127.0.0.1", 9), max_attempts=3)
    learners_due(school, 1)
    for _ in range(3):
        run_reminders(school.runtime)
        school.advance(seconds=3600)
    [row] = rows(school)
    assert row.state == "failed" and row.reason == "smtp_transient" and row.attempts == 3
    assert "gave up after 3 attempts" in row.last_error


def test_a_permanent_refusal_is_recorded_and_not_retried(school, smtp_server):
    _, _, inbox = smtp_server
    inbox.fail_with = (550, "mailbox unavailable")
    learners_due(school, 1)
    report = run_reminders(school.runtime)
    assert report.send.failed == 1
    [row] = rows(school)
    assert row.state == "failed" and row.reason == "smtp_permanent" and "550" in row.last_error
    inbox.fail_with = None
    school.advance(seconds=7200)
    run_reminders(school.runtime)
    assert inbox.messages == []


def test_without_smtp_nothing_is_lost_and_letters_wait(school_factory, smtp_server):
    school = school_factory()                          # smtp.host empty: e-mail disabled
    learners_due(school, 2)
    report = run_reminders(school.runtime)
    assert report.send.stopped.startswith("e-mail is disabled")
    assert [r.state for r in rows(school)] == ["planned", "planned"]


def test_cyrillic_subject_and_body_are_encoded_on_the_wire(school, smtp_server):
    _, _, inbox = smtp_server
    learners_due(school, 1)
    run_reminders(school.runtime)
    raw = inbox.raw[0]
    assert raw.isascii(), "8-bit text must be transfer-encoded"
    headers = raw.split(b"\r\n\r\n", 1)[0].decode()
    assert "Subject: =?utf-8?" in headers
    message = inbox.messages[0][2]
    assert message["Subject"] == "Напоминание 1: Английский A1"
    assert message.get_body(("plain",)).get_content_charset() == "utf-8"
    assert "Здравствуйте, Анна!" in message.get_body(("plain",)).get_content()
    assert message["Auto-Submitted"] == "auto-generated"


def test_a_send_budget_leaves_the_rest_planned_for_the_next_run(school, smtp_server):
    _, _, inbox = smtp_server
    learners_due(school, 3)
    ReminderPlanner(school.runtime).plan()
    report = ReminderSender(school.runtime).send_due(time_budget=0)
    assert report.sent == 0 and "time budget" in report.stopped
    assert {r.state for r in rows(school)} == {"planned"}
    assert ReminderSender(school.runtime).send_due().sent == 3 and len(inbox.messages) == 3
