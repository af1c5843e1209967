"""Learners created by an order get one welcome letter with their login and the password-reset link.

The letter is an outbox row committed before any attempt to send it (sidecar/bridge/welcome.py): a
real SMTP server that is down, refuses, or drops the connection after the whole message, and a store
that fails at the worst moments, must neither lose it nor send it twice.
"""

from __future__ import annotations

import html
import json
import logging
from datetime import timedelta

import pytest
import sqlalchemy as sa
from click.testing import CliRunner
from sqlalchemy.exc import OperationalError

from sidecar.bootstrap import build_runtime, store_url
from sidecar.bridge import welcome
from sidecar.bridge.auth import Principal
from sidecar.bridge.outbox import GrantDeliverer
from sidecar.bridge.parsers import parse_grant_body
from sidecar.bridge.service import BridgeService, IntakeContext
from sidecar.bridge.welcome import LEASE, WelcomeSender, resend_welcome, send_welcome, welcome_job
from sidecar.cli import cli
from sidecar.clock import FixedClock
from sidecar.devstack import seed
from sidecar.mail.mailer import Mailer
from sidecar.store.mail_models import WelcomeEmail
from sidecar.store.models import AuditEvent
from tests.stores import migrate_store

CLOSED_PORT = 9          # nothing listens there: connection refused


@pytest.fixture
def make_welcome_runtime(small_site, emulator, settings_for, smtp_server):
    """``make(port=None, **welcome_email)``: a runtime whose SMTP is the test server (or another port),
    on a clock the test moves."""
    host, port, _inbox = smtp_server
    made = []

    def make(smtp_port: int | None = None, **welcome_email):
        settings = settings_for(small_site, emulator,
                                smtp={"host": host, "port": smtp_port or port, "security": "none",
                                      "from_address": "school@example.org"},
                                bridge={"welcome_email": {"enabled": True, **welcome_email}})
        migrate_store(store_url(settings))
        made.append(build_runtime(settings))
        made[-1].clock = FixedClock(made[-1].clock.now())
        return made[-1]

    yield make
    for runtime in made:
        runtime.close()


@pytest.fixture
def welcome_runtime(make_welcome_runtime, smtp_server):
    return make_welcome_runtime(), smtp_server[2]


def grant_for(runtime, email: str, external_id: str):
    service = BridgeService(runtime)
    product = next(p for p in service.catalog.products() if p.status == "publish" and not p.unlimited)
    parsed = parse_grant_body({"user": {"email": email, "first_name": "Мария"}, "external_id": external_id,
                               "grant": {"term_id": product.level_id, "duration": product.duration, "units": product.units}})
    accepted = service.accept(parsed, IntakeContext(channel="api", principal=Principal("api_key", "test")))
    GrantDeliverer(runtime, service).run_once()
    return service.get(accepted.grant.id)


def letter_of(runtime, grant_id: str) -> WelcomeEmail | None:
    with runtime.sessions() as session:
        return session.scalar(sa.select(WelcomeEmail).where(WelcomeEmail.grant_id == grant_id))


def actions(runtime, grant_id: str) -> list[str]:
    with runtime.sessions() as session:
        return list(session.scalars(sa.select(AuditEvent.action).where(
            AuditEvent.subject_type == "grant", AuditEvent.subject_id == grant_id, AuditEvent.action.like("welcome.%"))
            .order_by(AuditEvent.id)))


def later(runtime, **delta) -> None:
    runtime.clock.instant = runtime.clock.instant + timedelta(**delta)


def smtp_up(runtime, port: int) -> None:
    """The mail server comes back (the worker reads smtp.* when its job runs)."""
    runtime.settings = runtime.settings.model_copy(update={"smtp": runtime.settings.smtp.model_copy(update={"port": port})})


def the_worker_runs_for_a_day(runtime) -> None:
    for _ in range(6):
        welcome_job(runtime)
        later(runtime, hours=4)


# --- the letter ---------------------------------------------------------------------------------------

def test_new_user_gets_one_letter_with_login_and_reset_link(welcome_runtime):
    runtime, inbox = welcome_runtime
    grant = grant_for(runtime, "brand.new.person@example.com", "w-1")
    assert grant.status == "succeeded" and grant.user_existed is False
    [(_, recipients, message)] = inbox.messages
    assert recipients == ["brand.new.person@example.com"]
    html = message.get_body(("html",)).get_content()
    assert "Мария" in html and "brand.new.person" in html
    assert "wp-login.php?action=lostpassword" in html
    row = letter_of(runtime, grant.id)
    assert row.state == "sent" and row.message_id == message["Message-ID"] and row.attempts == 1
    assert actions(runtime, grant.id) == ["welcome.queued", "welcome.sent"]


def test_existing_user_gets_no_letter(welcome_runtime):
    runtime, inbox = welcome_runtime
    first = grant_for(runtime, "returning@example.com", "w-2")
    second = grant_for(runtime, "returning@example.com", "w-3")
    assert first.user_existed is False and second.user_existed is True
    assert len(inbox.messages) == 1 and letter_of(runtime, second.id) is None


def test_letter_is_never_sent_twice_for_a_grant(welcome_runtime):
    runtime, inbox = welcome_runtime
    grant = grant_for(runtime, "once@example.com", "w-4")
    assert send_welcome(runtime, grant) is None
    the_worker_runs_for_a_day(runtime)
    assert len(inbox.messages) == 1


def test_a_refusal_is_failed_not_raised_and_not_retried(welcome_runtime):
    runtime, inbox = welcome_runtime
    inbox.fail_with = (550, "no such mailbox")
    grant = grant_for(runtime, "bounce@example.com", "w-5")
    assert grant.status == "succeeded"
    row = letter_of(runtime, grant.id)
    assert row.state == "failed" and row.reason == "smtp_permanent" and "550" in row.last_error
    inbox.fail_with = None
    the_worker_runs_for_a_day(runtime)
    assert inbox.messages == []
    resend_welcome(runtime, grant.id, actor="boss")    # the address was fixed: sent on request only
    welcome_job(runtime)
    assert len(inbox.messages) == 1 and letter_of(runtime, grant.id).state == "sent"


def test_on_request_a_grant_that_had_no_letter_gets_one(welcome_runtime):
    runtime, inbox = welcome_runtime
    grant_for(runtime, "had.account@example.com", "w-20")
    second = grant_for(runtime, "had.account@example.com", "w-21")
    assert second.user_existed is True and letter_of(runtime, second.id) is None
    resend_welcome(runtime, second.id, actor="boss")
    welcome_job(runtime)
    assert [rcpts for _, rcpts, _ in inbox.messages] == [["had.account@example.com"]] * 2


# --- the SMTP server is down or misbehaves ----------------------------------------------------------------

def test_smtp_down_at_the_success_the_letter_goes_out_with_a_later_worker_run(make_welcome_runtime, smtp_server):
    _, port, inbox = smtp_server
    runtime = make_welcome_runtime(smtp_port=CLOSED_PORT)
    grant = grant_for(runtime, "smtp.down@example.com", "w-6")
    assert grant.status == "succeeded" and inbox.messages == []
    row = letter_of(runtime, grant.id)
    assert row.state == "pending" and row.attempts == 1 and "ConnectionRefusedError" in row.last_error
    assert row.next_attempt_at == runtime.clock.now() + timedelta(seconds=60)     # retry_base_seconds
    welcome_job(runtime)                               # still down
    later(runtime, seconds=61)
    welcome_job(runtime)
    row = letter_of(runtime, grant.id)
    assert row.state == "pending" and row.attempts == 2
    assert row.next_attempt_at == runtime.clock.now() + timedelta(seconds=120)    # doubled
    smtp_up(runtime, port)
    welcome_job(runtime)
    assert inbox.messages == []                        # not before its retry time
    later(runtime, seconds=121)
    assert "sent 1" in welcome_job(runtime)
    assert len(inbox.messages) == 1 and letter_of(runtime, grant.id).state == "sent"
    the_worker_runs_for_a_day(runtime)
    assert len(inbox.messages) == 1


def test_transient_failures_give_up_after_max_attempts(make_welcome_runtime, smtp_server):
    runtime = make_welcome_runtime(smtp_port=CLOSED_PORT, max_attempts=3, retry_base_seconds=10)
    grant = grant_for(runtime, "never.up@example.com", "w-7")
    the_worker_runs_for_a_day(runtime)
    row = letter_of(runtime, grant.id)
    assert row.state == "failed" and row.reason == "smtp_transient" and row.attempts == 3
    assert "gave up after 3 attempts" in row.last_error


def test_a_4xx_refusal_after_data_is_retried(welcome_runtime):
    runtime, inbox = welcome_runtime
    inbox.fail_with = (451, "4.3.0 try again later")
    grant = grant_for(runtime, "greylisted@example.com", "w-8")
    assert letter_of(runtime, grant.id).state == "pending"
    inbox.fail_with = None
    the_worker_runs_for_a_day(runtime)
    assert len(inbox.messages) == 1 and letter_of(runtime, grant.id).state == "sent"


def test_an_unknown_outcome_is_never_sent_again_by_the_worker(welcome_runtime):
    runtime, inbox = welcome_runtime
    inbox.drop_after_data = True
    grant = grant_for(runtime, "unknown.fate@example.com", "w-9")
    inbox.drop_after_data = False
    row = letter_of(runtime, grant.id)
    assert row.state == "unknown" and row.reason == "no_reply" and row.message_id in row.last_error
    assert len(inbox.messages) == 1
    the_worker_runs_for_a_day(runtime)
    later(runtime, days=2)
    the_worker_runs_for_a_day(runtime)
    assert len(inbox.messages) == 1 and letter_of(runtime, grant.id).state == "unknown"
    assert actions(runtime, grant.id) == ["welcome.queued", "welcome.unknown"]


# --- the store fails ------------------------------------------------------------------------------------

def store_down(*_args, **_kwargs):
    raise OperationalError("UPDATE mls_welcome_emails", {}, Exception("(2013) Lost connection to server"))


def test_store_down_when_the_letter_is_queued_the_worker_queues_and_sends_it(welcome_runtime, monkeypatch):
    runtime, inbox = welcome_runtime
    monkeypatch.setattr(welcome, "enqueue", store_down)
    grant = grant_for(runtime, "queue.lost@example.com", "w-10")
    monkeypatch.undo()
    assert grant.status == "succeeded" and letter_of(runtime, grant.id) is None and inbox.messages == []
    assert "queued late 1" in welcome_job(runtime)
    assert len(inbox.messages) == 1 and letter_of(runtime, grant.id).state == "sent"
    the_worker_runs_for_a_day(runtime)
    assert len(inbox.messages) == 1


def test_store_down_after_the_server_took_the_letter_no_loss_and_no_duplicate(welcome_runtime, monkeypatch):
    runtime, inbox = welcome_runtime
    real_finish = WelcomeSender._finish

    def finish(self, row, state, *args, **kwargs):
        if state == "sent":
            store_down()
        return real_finish(self, row, state, *args, **kwargs)

    monkeypatch.setattr(WelcomeSender, "_finish", finish)
    grant = grant_for(runtime, "record.lost@example.com", "w-11")
    monkeypatch.undo()
    assert grant.status == "succeeded" and len(inbox.messages) == 1     # delivered: not lost
    assert letter_of(runtime, grant.id).state == "sending"
    welcome_job(runtime)                                                 # the lease still runs
    assert LEASE == timedelta(minutes=10)
    later(runtime, seconds=LEASE.total_seconds() + 1)
    welcome_job(runtime)
    row = letter_of(runtime, grant.id)
    assert row.state == "unknown" and row.reason == "interrupted"        # shown to the admin, not repeated
    the_worker_runs_for_a_day(runtime)
    assert len(inbox.messages) == 1


def test_store_down_before_the_data_phase_the_letter_is_sent_once_later(welcome_runtime, monkeypatch):
    runtime, inbox = welcome_runtime
    monkeypatch.setattr(WelcomeSender, "_handing_over", store_down)
    grant = grant_for(runtime, "mark.lost@example.com", "w-12")
    monkeypatch.undo()
    assert inbox.messages == [] and letter_of(runtime, grant.id).state == "sending"
    later(runtime, seconds=LEASE.total_seconds() + 1)
    welcome_job(runtime)
    assert len(inbox.messages) == 1 and letter_of(runtime, grant.id).state == "sent"
    assert actions(runtime, grant.id) == ["welcome.queued", "welcome.requeued", "welcome.sent"]
    the_worker_runs_for_a_day(runtime)
    assert len(inbox.messages) == 1


def test_a_sender_whose_claim_was_taken_over_records_nothing_over_it(welcome_runtime, caplog):
    runtime, inbox = welcome_runtime
    inbox.drop_after_data = True                       # the first letter's fate stays unknown
    grant = grant_for(runtime, "slow.sender@example.com", "w-13")
    inbox.drop_after_data = False
    resend_welcome(runtime, grant.id, actor="boss")
    row_id = letter_of(runtime, grant.id).id

    class Meanwhile(Mailer):
        def send(self, mail, *, before_data=None):
            def hook() -> None:
                before_data()
                later(runtime, seconds=LEASE.total_seconds() + 1)
                welcome_job(runtime)                   # the lease ran out: → unknown
            return super().send(mail, before_data=hook)

    with caplog.at_level(logging.WARNING, logger="sidecar.bridge.welcome"):
        assert WelcomeSender(runtime, Meanwhile(runtime.settings.smtp)).deliver(row_id) is None
    assert len(inbox.messages) == 2 and letter_of(runtime, grant.id).state == "unknown"
    assert actions(runtime, grant.id)[-2:] == ["welcome.unknown", "welcome.claim_lost"]
    assert "was lost" in caplog.text


# --- the sweep ------------------------------------------------------------------------------------------

def test_switching_the_letter_on_writes_to_learners_of_the_last_three_days_only(make_welcome_runtime, smtp_server):
    _, _, inbox = smtp_server
    runtime = make_welcome_runtime(enabled=False)
    old = grant_for(runtime, "four.days.ago@example.com", "w-14")
    later(runtime, days=1)
    recent = grant_for(runtime, "three.days.ago@example.com", "w-15")
    later(runtime, days=2, hours=23)
    runtime.settings = runtime.settings.model_copy(update={"bridge": runtime.settings.bridge.model_copy(
        update={"welcome_email": runtime.settings.bridge.welcome_email.model_copy(update={"enabled": True})})})
    welcome_job(runtime)
    assert [rcpts for _, rcpts, _ in inbox.messages] == [["three.days.ago@example.com"]]
    assert letter_of(runtime, old.id) is None and letter_of(runtime, recent.id).state == "sent"


# --- what an administrator does ------------------------------------------------------------------------

def test_an_admin_resends_from_the_grant_page(welcome_runtime, admin_pages):
    runtime, inbox = welcome_runtime
    inbox.drop_after_data = True
    grant = grant_for(runtime, "page.resend@example.com", "w-16")
    inbox.drop_after_data = False
    _app, client = admin_pages.signed_in(runtime)
    page = client.get(f"/admin/grants/{grant.id}").get_data(as_text=True)
    assert 'data-state="unknown"' in page and "Welcome e-mail" in page
    row = letter_of(runtime, grant.id)
    assert "Handed to the mail server" in page and row.message_id in html.unescape(page) and "Attempts" in page
    assert "It carries a password-reset link and is never sent again by itself" in page
    assert f"/admin/grants/{grant.id}/welcome/resend" in page and f"/admin/grants/{grant.id}/welcome/delivered" in page
    response = client.post(f"/admin/grants/{grant.id}/welcome/resend", data={"csrf_token": admin_pages.csrf_in(page)})
    assert response.status_code == 302
    page = client.get(f"/admin/grants/{grant.id}").get_data(as_text=True)
    assert "The welcome e-mail is queued" in page and 'data-state="pending"' in page
    with runtime.sessions() as session:
        event = session.scalars(sa.select(AuditEvent).where(AuditEvent.action == "welcome.resend")).one()
    assert event.actor == seed.DEMO_ADMIN_LOGIN
    assert event.details["previous_state"] == "unknown"
    welcome_job(runtime)
    assert len(inbox.messages) == 2 and letter_of(runtime, grant.id).state == "sent"
    # Sending again while one is queued is refused.
    resend_welcome(runtime, grant.id, actor="boss")
    page = client.get(f"/admin/grants/{grant.id}").get_data(as_text=True)
    client.post(f"/admin/grants/{grant.id}/welcome/resend", data={"csrf_token": admin_pages.csrf_in(page)})
    assert "queued or being sent already" in client.get(f"/admin/grants/{grant.id}").get_data(as_text=True)


def test_an_admin_marks_an_unknown_letter_delivered_from_the_grant_page(welcome_runtime, admin_pages):
    runtime, inbox = welcome_runtime
    inbox.drop_after_data = True
    grant = grant_for(runtime, "page.delivered@example.com", "w-17")
    inbox.drop_after_data = False
    _app, client = admin_pages.signed_in(runtime)
    client.set_cookie("mls_lang", "ru")
    page = client.get(f"/admin/grants/{grant.id}").get_data(as_text=True)
    assert "Приветственное письмо" in page and "результат неизвестен" in page
    client.post(f"/admin/grants/{grant.id}/welcome/delivered", data={"csrf_token": admin_pages.csrf_in(page)})
    row = letter_of(runtime, grant.id)
    assert row.state == "sent" and row.reason == "marked_delivered" and row.sent_at == row.data_started_at
    assert "отмечено как доставленное" in client.get(f"/admin/grants/{grant.id}").get_data(as_text=True)
    the_worker_runs_for_a_day(runtime)
    assert len(inbox.messages) == 1


def cli_run(runtime, *args: str):
    return CliRunner().invoke(cli, list(args), obj={"settings": runtime.settings, "clock": runtime.clock})


def test_the_cli_shows_resends_and_marks_the_letter(welcome_runtime):
    runtime, inbox = welcome_runtime
    inbox.drop_after_data = True
    grant = grant_for(runtime, "cli.letter@example.com", "w-18")
    inbox.drop_after_data = False
    shown = cli_run(runtime, "grants", "welcome", grant.id)
    assert shown.exit_code == 0, shown.output
    assert "unknown" in shown.output and "--mark-delivered or --resend" in shown.output
    resent = cli_run(runtime, "grants", "welcome", grant.id, "--resend", "--format", "json")
    assert resent.exit_code == 0, resent.output
    assert json.loads(resent.output)["welcome"]["state"] == "pending"
    with runtime.sessions() as session:
        event = session.scalars(sa.select(AuditEvent).where(AuditEvent.action == "welcome.resend")).one()
    assert event.actor.startswith("cli:")
    welcome_job(runtime)
    assert len(inbox.messages) == 2
    refused = cli_run(runtime, "grants", "welcome", grant.id, "--mark-delivered")
    assert refused.exit_code == 1 and "not unknown" in refused.output
    assert cli_run(runtime, "grants", "welcome", "no-such-grant").exit_code == 1


def test_the_cli_marks_an_unknown_letter_delivered(welcome_runtime):
    runtime, inbox = welcome_runtime
    inbox.drop_after_data = True
    grant = grant_for(runtime, "cli.delivered@example.com", "w-19")
    inbox.drop_after_data = False
    done = cli_run(runtime, "grants", "welcome", grant.id, "--mark-delivered")
    assert done.exit_code == 0, done.output
    assert letter_of(runtime, grant.id).state == "sent"
    assert actions(runtime, grant.id)[-1] == "welcome.marked_delivered"
    assert cli_run(runtime, "grants", "welcome", grant.id, "--mark-delivered").exit_code == 1   # once only
