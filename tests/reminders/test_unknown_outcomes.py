"""An outside effect whose outcome is unknown is never repeated automatically.

A real SMTP server (tests/conftest.py) that reads a whole message and then drops the connection, or
refuses it after DATA, and senders that stop or lose their claim at the worst moments. The server's
inbox counts every message it read in full, delivered or not.
"""

from __future__ import annotations

import logging
from datetime import timedelta

import pytest
import sqlalchemy as sa

from sidecar.mail.mailer import Mailer
from sidecar.reminders.planner import ReminderPlanner
from sidecar.reminders.run import run_reminders
from sidecar.reminders.sender import ReminderSender, mark_delivered, resend
from sidecar.store.models import AuditEvent
from sidecar.store.reminder_models import Reminder, ReminderDigest


def rows(school, model=Reminder) -> list:
    with school.runtime.sessions() as session:
        return list(session.scalars(sa.select(model).order_by(model.id)))


def events(school, action: str) -> list[AuditEvent]:
    with school.runtime.sessions() as session:
        return list(session.scalars(sa.select(AuditEvent).where(AuditEvent.action == action).order_by(AuditEvent.id)))


def one_learner_due(school, days=(3, None, None), admin_days=None) -> None:
    school.schedule(days=days, admin_days=admin_days)
    school.learner(1)
    school.expired(1, days_ago=days[0])


def runs_over_the_next_days(school, days: int = 3) -> None:
    """What the worker does next: the retry job every few minutes, the daily run every day."""
    for _ in range(days):
        ReminderSender(school.runtime).send_due()
        school.advance(seconds=3600)
        ReminderSender(school.runtime).send_due()
        school.advance(days=1)
        run_reminders(school.runtime)


# --- the SMTP server's last word ----------------------------------------------------------------------

def test_a_connection_dropped_after_the_whole_letter_ends_unknown_and_is_never_sent_again(school, smtp_server):
    _, _, inbox = smtp_server
    one_learner_due(school)
    inbox.drop_after_data = True
    report = run_reminders(school.runtime)
    assert report.send.unknown == 1 and report.send.sent == 0 and report.send.retrying == 0
    assert len(inbox.messages) == 1
    [row] = rows(school)
    assert row.state == "unknown" and row.reason == "no_reply"
    assert row.data_started_at is not None and row.message_id == inbox.messages[0][2]["Message-ID"]
    assert row.message_id in row.last_error and "no reply to the end of the message" in row.last_error
    assert "await an administrator's decision" in report.summary()

    inbox.drop_after_data = False                      # the server is fine again: still nothing is repeated
    runs_over_the_next_days(school)
    assert len(inbox.messages) == 1
    assert rows(school)[0].state == "unknown"
    [event] = events(school, "reminder.unknown")
    assert event.details["message_id"] == row.message_id


def test_no_answer_within_the_timeout_after_the_whole_letter_is_unknown_too(school, smtp_server):
    _, _, inbox = smtp_server
    one_learner_due(school)
    ReminderPlanner(school.runtime).plan()
    inbox.stall_after_data = 2.0
    impatient = Mailer(school.settings.smtp.model_copy(update={"timeout_seconds": 0.5}))
    assert ReminderSender(school.runtime, impatient).send_due().unknown == 1
    inbox.stall_after_data = 0.0
    [row] = rows(school)
    assert row.state == "unknown" and row.reason == "no_reply" and "timed out" in row.last_error
    runs_over_the_next_days(school, 1)
    assert len(inbox.messages) == 1


def test_a_refusal_after_data_is_failed_at_once(school, smtp_server):
    _, _, inbox = smtp_server
    one_learner_due(school)
    inbox.fail_with = (554, "5.7.1 message refused")
    assert run_reminders(school.runtime).send.failed == 1
    [row] = rows(school)
    assert row.state == "failed" and row.reason == "smtp_permanent" and "554" in row.last_error
    inbox.fail_with = None
    runs_over_the_next_days(school, 1)
    assert inbox.messages == []


def test_a_4xx_reply_after_data_is_retried_later_and_sent_once(school, smtp_server):
    _, _, inbox = smtp_server
    one_learner_due(school)
    inbox.fail_with = (451, "4.3.0 try again later")
    assert run_reminders(school.runtime).send.retrying == 1
    [row] = rows(school)
    assert row.state == "planned" and row.next_attempt_at is not None and "451" in row.last_error
    inbox.fail_with = None
    school.advance(seconds=61)
    assert ReminderSender(school.runtime).send_due().sent == 1
    runs_over_the_next_days(school, 1)
    assert len(inbox.messages) == 1 and rows(school)[0].state == "sent"


def test_a_digest_whose_connection_drops_after_data_is_unknown_with_its_learners(school, smtp_server):
    _, _, inbox = smtp_server
    one_learner_due(school, days=(1, None, None), admin_days=1)
    run_reminders(school.runtime)                      # the letter
    school.advance(days=1)
    inbox.drop_after_data = True
    assert run_reminders(school.runtime).send.unknown == 1
    inbox.drop_after_data = False
    [digest] = rows(school, ReminderDigest)
    assert digest.state == "unknown" and digest.reason == "no_reply"
    assert [r.state for r in rows(school) if r.step == 4] == ["unknown"]
    runs_over_the_next_days(school, 2)
    assert len(inbox.messages) == 2                    # the letter and the one digest
    # The administrator found it in the mail log.
    assert mark_delivered(school.runtime, [digest.id], actor="boss", digest=True) == 1
    assert rows(school, ReminderDigest)[0].state == "sent"
    assert [r.state for r in rows(school) if r.step == 4] == ["sent"]


# --- a sender that stopped ----------------------------------------------------------------------------

def stale_claim(school, *, marked: bool) -> Reminder:
    """A planned letter claimed by a worker that died, ``marked`` = after the pre-DATA mark."""
    ReminderPlanner(school.runtime).plan()
    now = school.clock.now()
    with school.runtime.sessions.begin() as session:
        session.execute(sa.update(Reminder).values(
            state="sending", claimed_by="dead-host:4242:0badc0ffee00", message_id="<dead@school.example>",
            attempts=1, claimed_until=now - timedelta(minutes=1), data_started_at=now - timedelta(minutes=16) if marked else None))
    return rows(school)[0]


def test_a_stale_claim_without_the_pre_data_mark_is_planned_again_and_sent_once(school, smtp_server):
    _, _, inbox = smtp_server
    one_learner_due(school)
    stale_claim(school, marked=False)
    report = ReminderSender(school.runtime).send_due()
    assert report.interrupted == 1 and report.sent == 1 and len(inbox.messages) == 1
    [row] = rows(school)
    assert row.state == "sent" and row.message_id != "<dead@school.example>"
    [event] = events(school, "reminder.requeued")
    assert event.details["claimed_by"] == "dead-host:4242:0badc0ffee00"
    runs_over_the_next_days(school, 1)
    assert len(inbox.messages) == 1


def test_a_stale_claim_with_the_pre_data_mark_becomes_unknown_and_is_not_sent(school, smtp_server):
    _, _, inbox = smtp_server
    one_learner_due(school)
    stale_claim(school, marked=True)
    runs_over_the_next_days(school)
    assert inbox.messages == []
    [row] = rows(school)
    assert row.state == "unknown" and row.reason == "interrupted" and "<dead@school.example>" in row.last_error
    assert events(school, "reminder.unknown")[0].details["message_id"] == "<dead@school.example>"


def test_a_claim_whose_lease_still_runs_is_left_alone(school, smtp_server):
    _, _, inbox = smtp_server
    one_learner_due(school)
    stale_claim(school, marked=True)
    with school.runtime.sessions.begin() as session:
        session.execute(sa.update(Reminder).values(claimed_until=school.clock.now() + timedelta(minutes=5)))
    assert ReminderSender(school.runtime).send_due().interrupted == 0
    assert rows(school)[0].state == "sending" and inbox.messages == []


class Dies(BaseException):
    """The worker process is killed."""


def test_a_worker_killed_before_data_leaves_a_letter_that_goes_out_later(school, smtp_server, monkeypatch):
    _, _, inbox = smtp_server
    one_learner_due(school)

    def killed(self, model, row):
        raise Dies()

    monkeypatch.setattr(ReminderSender, "_handing_over", killed)
    with pytest.raises(Dies):
        run_reminders(school.runtime)
    monkeypatch.undo()
    assert inbox.messages == [] and rows(school)[0].state == "sending"
    school.advance(seconds=school.settings.reminders.sending_lease_seconds + 1)
    assert ReminderSender(school.runtime).send_due().sent == 1
    assert len(inbox.messages) == 1


def test_a_worker_killed_after_the_mark_leaves_an_unknown_letter(school, smtp_server, monkeypatch):
    _, _, inbox = smtp_server
    one_learner_due(school)
    real = ReminderSender._handing_over

    def marked_then_killed(self, model, row):
        real(self, model, row)
        raise Dies()

    monkeypatch.setattr(ReminderSender, "_handing_over", marked_then_killed)
    with pytest.raises(Dies):
        run_reminders(school.runtime)
    monkeypatch.undo()
    school.advance(seconds=school.settings.reminders.sending_lease_seconds + 1)
    runs_over_the_next_days(school)
    assert inbox.messages == [] and rows(school)[0].state == "unknown"


# --- a sender that lost its claim ---------------------------------------------------------------------

class Meanwhile(Mailer):
    """A mailer that lets something else happen at one point of the SMTP transaction."""

    def __init__(self, settings, *, before_mark=None, after_mark=None) -> None:
        super().__init__(settings)
        self.before_mark, self.after_mark = before_mark, after_mark

    def send(self, mail, *, before_data=None):
        def hook() -> None:
            if self.before_mark:
                self.before_mark()
            before_data()
            if self.after_mark:
                self.after_mark()

        return super().send(mail, before_data=hook)


def test_the_final_write_of_a_sender_whose_claim_was_taken_over_overwrites_nothing(school, smtp_server, caplog):
    _, _, inbox = smtp_server
    one_learner_due(school)
    ReminderPlanner(school.runtime).plan()

    def lease_runs_out_and_the_admin_resends() -> None:
        school.advance(seconds=school.settings.reminders.sending_lease_seconds + 1)
        assert ReminderSender(school.runtime).recover_interrupted() == 1          # → unknown
        assert resend(school.runtime, [rows(school)[0].id], actor="boss") == 1   # the admin's decision
        assert ReminderSender(school.runtime).send_due().sent == 1               # another sender sends it

    slow = ReminderSender(school.runtime, Meanwhile(school.settings.smtp, after_mark=lease_runs_out_and_the_admin_resends))
    with caplog.at_level(logging.WARNING, logger="sidecar.reminders.sender"):
        report = slow.send_due()
    assert report.sent == 0 and report.lost_claims == 1
    # The other sender's letter went first; the slow one got through afterwards.
    others, slows = (message["Message-ID"] for _, _, message in inbox.messages)
    [row] = rows(school)
    assert row.state == "sent" and row.message_id == others                    # the other sender's record stands
    [lost] = events(school, "reminder.claim_lost")
    assert lost.details["outcome"] == "sent" and lost.details["stage"] == "record"
    assert lost.details["message_id"] == slows
    assert lost.details["current_state"] == "sent"
    assert "was lost" in caplog.text


def test_a_sender_that_lost_its_claim_before_data_sends_nothing(school, smtp_server, caplog):
    _, _, inbox = smtp_server
    one_learner_due(school)
    ReminderPlanner(school.runtime).plan()

    def lease_runs_out_and_another_sender_takes_over() -> None:
        school.advance(seconds=school.settings.reminders.sending_lease_seconds + 1)
        assert ReminderSender(school.runtime).send_due().sent == 1               # planned again (no mark), sent

    slow = ReminderSender(school.runtime, Meanwhile(school.settings.smtp,
                                                    before_mark=lease_runs_out_and_another_sender_takes_over))
    with caplog.at_level(logging.WARNING, logger="sidecar.reminders.sender"):
        report = slow.send_due()
    assert report.lost_claims == 1 and report.sent == 0
    assert len(inbox.messages) == 1 and rows(school)[0].state == "sent"
    [lost] = events(school, "reminder.claim_lost")
    assert lost.details["stage"] == "before_data"
    assert "lost before the DATA phase" in caplog.text


# --- the administrator decides ------------------------------------------------------------------------

def unknown_letter(school, smtp_server, days=(3, None, None), admin_days=None) -> Reminder:
    _, _, inbox = smtp_server
    one_learner_due(school, days=days, admin_days=admin_days)
    inbox.drop_after_data = True
    run_reminders(school.runtime)
    inbox.drop_after_data = False
    [row] = rows(school)
    assert row.state == "unknown"
    return row


def test_send_again_is_explicit_and_audited_with_the_admin(school, smtp_server):
    _, _, inbox = smtp_server
    row = unknown_letter(school, smtp_server)
    assert resend(school.runtime, [row.id], actor="boss") == 1
    [event] = events(school, "reminder.resend")
    assert event.actor == "boss" and event.details["previous_state"] == "unknown"
    assert event.details["previous_message_id"] == row.message_id
    assert ReminderSender(school.runtime).send_due().sent == 1
    assert len(inbox.messages) == 2 and rows(school)[0].message_id != row.message_id


def test_mark_as_delivered_records_the_moment_it_was_handed_over(school, smtp_server):
    _, _, inbox = smtp_server
    row = unknown_letter(school, smtp_server)
    school.advance(days=1)
    assert mark_delivered(school.runtime, [row.id], actor="boss") == 1
    [done] = rows(school)
    assert done.state == "sent" and done.reason == "marked_delivered" and done.sent_at == row.data_started_at
    assert events(school, "reminder.marked_delivered")[0].actor == "boss"
    assert mark_delivered(school.runtime, [row.id], actor="boss") == 0        # only unknown rows
    runs_over_the_next_days(school)
    assert len(inbox.messages) == 1


def test_an_unknown_letter_holds_the_next_one_for_the_hold_then_the_chain_goes_on(school, smtp_server):
    _, _, inbox = smtp_server
    unknown_letter(school, smtp_server, days=(3, 4, None))       # letter 1 handed over on day X + 3
    school.advance(days=1)                                       # X + 4: letter 2 due, held
    report = run_reminders(school.runtime)
    assert report.plan.counts() == {"hold": 1} and len(inbox.messages) == 1
    assert [(r.step, r.state) for r in rows(school)] == [(1, "unknown")]
    school.advance(days=1)
    assert run_reminders(school.runtime).plan.counts() == {"hold": 1}
    school.advance(days=1)                                       # X + 6: three days (reminders.unknown_hold_days)
    run_reminders(school.runtime)
    assert [(r.step, r.state) for r in rows(school)] == [(1, "unknown"), (2, "sent")]
    assert len(inbox.messages) == 2
    # Letter 1 can no longer be sent again: it would arrive after letter 2.
    assert resend(school.runtime, [rows(school)[0].id], actor="boss") == 0
    assert mark_delivered(school.runtime, [rows(school)[0].id], actor="boss") == 1


def test_marking_an_unknown_letter_delivered_releases_the_chain_at_once(school, smtp_server):
    _, _, inbox = smtp_server
    row = unknown_letter(school, smtp_server, days=(3, 4, None))
    school.advance(days=1)
    mark_delivered(school.runtime, [row.id], actor="boss")
    run_reminders(school.runtime)
    assert [(r.step, r.state) for r in rows(school)] == [(1, "sent"), (2, "sent")]


def test_an_unknown_last_letter_enters_the_digest_after_the_hold(school_factory, smtp_server):
    host, port, inbox = smtp_server
    school = school_factory(smtp=(host, port), unknown_hold_days=5)
    one_learner_due(school, days=(3, None, None), admin_days=1)
    inbox.drop_after_data = True
    run_reminders(school.runtime)
    inbox.drop_after_data = False
    for _ in range(4):                                           # X + 4 … X + 7: held
        school.advance(days=1)
        run_reminders(school.runtime)
        assert rows(school, ReminderDigest) == []
    school.advance(days=1)                                       # X + 8: five days after it was handed over
    run_reminders(school.runtime)
    [digest] = rows(school, ReminderDigest)
    assert digest.state == "sent" and digest.learners == 1


@pytest.mark.parametrize("earlier", ["failed", "unknown"])
@pytest.mark.parametrize("later", ["planned", "sending", "sent", "unknown", "failed", "skipped"])
def test_a_letter_is_not_sent_again_once_a_later_one_is_under_way_or_out(school, smtp_server, earlier, later):
    school.schedule(days=(3, 4, None), admin_days=None)
    school.learner(1)
    x = school.expired(1, days_ago=4)
    now = school.clock.now()
    common = {"user_id": 1, "term_id": 30, "expired_on": x, "planned_at": now, "updated_at": now, "attempts": 1,
              "to_address": "learner1@example.com", "subject": "", "last_error": "", "reason": ""}
    with school.runtime.sessions.begin() as session:
        session.execute(sa.insert(Reminder), [{**common, "step": 1, "state": earlier, "due_on": x + timedelta(days=3)},
                                              {**common, "step": 2, "state": later, "due_on": x + timedelta(days=4)}])
    first = rows(school)[0]
    blocks = later in ("planned", "sending", "sent", "unknown")
    assert resend(school.runtime, [first.id], actor="boss") == (0 if blocks else 1)


def test_the_cli_dry_run_shows_a_step_held_by_an_unknown_letter(school, smtp_server):
    from click.testing import CliRunner

    from sidecar.cli import cli

    unknown_letter(school, smtp_server, days=(3, 4, None))
    school.advance(days=1)
    result = CliRunner().invoke(cli, ["remind", "--dry-run"], obj={"settings": school.settings, "clock": school.clock},
                                catch_exceptions=False)
    assert result.exit_code == 0, result.output
    row = next(line for line in result.output.splitlines() if line.startswith("1 "))
    assert " hold " in row and " held " in row and row.rstrip().endswith("no")
    assert "planned hold 1" in result.output


def test_each_claim_has_a_name_of_its_own():
    import os
    import socket

    from sidecar.store.leases import claim_holder

    first, second = claim_holder(), claim_holder()
    assert first != second and len(first) <= 80
    host, pid, token = first.rsplit(":", 2)
    assert socket.gethostname().startswith(host) and pid == str(os.getpid()) and len(token) == 12


def test_the_cli_run_reports_letters_awaiting_a_decision(school, smtp_server):
    from click.testing import CliRunner

    from sidecar.cli import cli

    unknown_letter(school, smtp_server)
    result = CliRunner().invoke(cli, ["remind"], obj={"settings": school.settings, "clock": school.clock},
                                catch_exceptions=False)
    assert result.exit_code == 0, result.output
    assert "1 letter(s) or digest(s) with an unknown outcome await an administrator's decision" in result.output
    result = CliRunner().invoke(cli, ["remind", "--format", "json"], obj={"settings": school.settings,
                                                                        "clock": school.clock})
    assert '"awaiting_decision": 1' in result.output
