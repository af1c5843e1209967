"""Alerts: an administrator is told once, in a digest at most every interval, about each grant that failed
or whose outcome stays unknown past its settle time (sidecar/bridge/alerts.py, sidecar/bridge/attention.py).

Grants are written into the store in the states the worker leaves them in; the clock is a FixedClock the
tests move; mail goes to a real (loopback) SMTP server.
"""

from __future__ import annotations

import json
import secrets
from datetime import datetime, timedelta, timezone

import jsonschema
import pytest
import sqlalchemy as sa

from sidecar.bridge import attention
from sidecar.bridge.alerts import WORDS, AlertMailer, alerts_job, detect, digest_language, recipient
from sidecar.clock import FixedClock
from sidecar.config import settings_from_mapping
from sidecar.mail.mailer import Mailer, TransientMailError
from sidecar.store.alert_models import AlertDigest, GrantAlert
from sidecar.store.db import unit_of_work
from sidecar.store.grant_models import CONFIRMING, DELIVERING, FAILED, QUEUED, SUCCEEDED, UNKNOWN, Grant
from sidecar.store.models import AuditEvent, SettingOverride
from sidecar.store.webhook_models import WebhookEvent
from sidecar.webhooks.events import json_schema
from tests.webhooks.support import endpoint

START = datetime(2026, 11, 24, 10, 0, tzinfo=timezone.utc)
PUBLIC_URL = "https://sidecar.school.example"
LEVEL_7 = "Английский с нуля"
ADMIN = "alerts@school.example"
SETTLE = timedelta(seconds=600)
# The default grace: unknown_poll_seconds (15) + memberlux.timeout_seconds (90) + 60.
GRACE = timedelta(seconds=165)


class Alerts:
    """A runtime on a clock the test moves, a mail server that records what it gets, and grants to put in."""

    def __init__(self, runtime, smtp_server) -> None:
        self.runtime = runtime
        self.smtp_host, self.smtp_port, self.inbox = smtp_server

    @property
    def now(self) -> datetime:
        return self.runtime.clock.now()

    def at(self, moment: datetime) -> None:
        self.runtime.clock.instant = moment

    def later(self, **delta) -> None:
        self.at(self.now + timedelta(**delta))

    def grant(self, status: str, *, error: str = "MemberLux refused the order: 400 product is not published",
              settle_until: datetime | None = None, email: str | None = None, term_id: int | None = 7) -> str:
        """A grant as the worker leaves it: ``failed`` now (completed now), or unsettled with ``settle_until``."""
        grant_id = "g" + secrets.token_hex(8)
        now = self.now
        with unit_of_work(self.runtime.sessions) as session:
            session.add(Grant(id=grant_id, request_hash="h", channel="api", principal="api_key:crm", meta={},
                              email=email or f"learner.{grant_id}@example.org", term_id=term_id, duration=1,
                              units="months", status=status, attempts=1, next_attempt_at=now, orders_sent=1,
                              outcome_unknown=status in (DELIVERING, UNKNOWN), last_error=error,
                              settle_until=settle_until, first_ordered_at=now, created_at=now, updated_at=now,
                              completed_at=now if status == FAILED else None))
        return grant_id

    def fail(self, grant_id: str) -> None:
        self._set(grant_id, status=FAILED, completed_at=self.now, last_error="gave up after 9 attempts")

    def recover(self, grant_id: str) -> None:
        self._set(grant_id, status=SUCCEEDED, completed_at=self.now, last_error=None)

    def retry(self, grant_id: str) -> None:
        self._set(grant_id, status=QUEUED, completed_at=None, settle_until=None)

    def _set(self, grant_id: str, **values) -> None:
        with unit_of_work(self.runtime.sessions) as session:
            session.execute(sa.update(Grant).where(Grant.id == grant_id).values(updated_at=self.now, **values))

    def run(self) -> str:
        return alerts_job(self.runtime)

    def mails(self) -> list:
        return [message for _sender, _to, message in self.inbox.messages]

    def texts(self) -> list[str]:
        return [message.get_body(("plain",)).get_content() for message in self.mails()]

    def alerts(self) -> list[GrantAlert]:
        with self.runtime.sessions() as session:
            return list(session.scalars(sa.select(GrantAlert).order_by(GrantAlert.id)))

    def digests(self) -> list[AlertDigest]:
        with self.runtime.sessions() as session:
            return list(session.scalars(sa.select(AlertDigest).order_by(AlertDigest.id)))

    def events(self, event_type: str) -> list[WebhookEvent]:
        with self.runtime.sessions() as session:
            return list(session.scalars(sa.select(WebhookEvent).where(WebhookEvent.type == event_type)))


@pytest.fixture
def make_alerts(small_site, settings_for, make_runtime, smtp_server):
    """``make(smtp=True, store=None, **alerts)``: an ``Alerts`` on a migrated store; SMTP is the test server."""
    host, port, _inbox = smtp_server

    def make(*, smtp: bool | int = True, store: dict | None = None, reminders: dict | None = None, **alerts) -> Alerts:
        sections: dict = {"web": {"public_url": PUBLIC_URL}, "alerts": {"to": ADMIN, **alerts}}
        if smtp:
            sections["smtp"] = {"host": host, "port": port if smtp is True else smtp, "security": "none",
                                "from_address": "school@example.org"}
        if store:
            sections["store"] = store
        if reminders:
            sections["reminders"] = reminders
        runtime = make_runtime(settings_for(small_site, **sections), clock=FixedClock(START))
        return Alerts(runtime, smtp_server)

    return make


@pytest.fixture
def alerts(make_alerts) -> Alerts:
    return make_alerts()


# --- once only ------------------------------------------------------------------------------------------

def test_a_failed_grant_is_mailed_once_with_what_an_admin_needs(alerts):
    grant_id = alerts.grant(FAILED, email="anna.petrova@example.org")
    assert "1 new" in alerts.run()
    [mail] = alerts.mails()
    assert mail["To"] == ADMIN and mail["Auto-Submitted"] == "auto-generated"
    assert mail["Subject"].endswith("Grants that need attention: 1 (failed: 1, outcome still unknown: 0)")
    [text] = alerts.texts()
    assert grant_id in text and "anna.petrova@example.org" in text and f"{LEVEL_7} (#7)" in text
    assert "| api |" in text and "| failed |" in text and "400 product is not published" in text
    assert f"{PUBLIC_URL}/admin/grants/{grant_id}" in text
    assert "2026-11-24 " in text        # when it failed, in the site's zone
    html = mail.get_body(("html",)).get_content()
    assert f'<a href="{PUBLIC_URL}/admin/grants/{grant_id}">{grant_id}</a>' in html
    # The job again, hours later, a second worker's mailer, a restart: never again.
    alerts.later(hours=3)
    alerts.run()
    AlertMailer(alerts.runtime).run()
    assert len(alerts.mails()) == 1
    [alert] = alerts.alerts()
    assert alert.state == "digested" and alerts.digests()[0].state == "sent"
    with alerts.runtime.sessions() as session:
        trail = [e.action for e in session.scalars(sa.select(AuditEvent).where(AuditEvent.subject_id == grant_id))]
    assert trail == ["alert.failed", "alert.mailed"]


def test_a_second_worker_on_the_same_store_mails_nothing_more(alerts, make_alerts):
    alerts.grant(FAILED)
    other = make_alerts()        # the same settings, so the same store: another process
    assert other.runtime.settings.store.url == alerts.runtime.settings.store.url
    other.at(alerts.now)
    assert detect(alerts.runtime) == 1 and detect(other.runtime) == 0
    alerts.run()
    other.run()
    assert len(alerts.mails()) == 1 and len(alerts.alerts()) == 1


def test_a_grant_retried_that_fails_again_is_a_new_alert(alerts):
    grant_id = alerts.grant(FAILED)
    alerts.run()
    alerts.later(minutes=10)
    alerts.retry(grant_id)
    alerts.later(minutes=10)
    alerts.fail(grant_id)
    alerts.run()
    assert len(alerts.mails()) == 1          # the interval holds the second one back
    alerts.later(hours=1)
    alerts.run()
    assert len(alerts.mails()) == 2 and grant_id in alerts.texts()[1]
    assert [a.state for a in alerts.alerts()] == ["digested", "digested"]


def test_detection_in_bounded_runs_moves_past_what_it_recorded(alerts):
    """Each run looks at a bounded number of grants: those already recorded must not take up the places."""
    first = alerts.grant(FAILED)
    alerts.later(seconds=1)
    second = alerts.grant(FAILED)
    assert detect(alerts.runtime, limit=1) == 1
    assert detect(alerts.runtime, limit=1) == 1
    assert detect(alerts.runtime, limit=1) == 0
    assert [a.grant_id for a in alerts.alerts()] == [first, second]


@pytest.mark.mariadb
def test_once_only_on_a_mariadb_store(make_alerts, mariadb_database):
    """MariaDB keeps DATETIME to the second: an episode's instant must still match itself."""
    alerts = make_alerts(store={"url": mariadb_database})
    alerts.at(START + timedelta(microseconds=654321))
    alerts.grant(FAILED)
    alerts.grant(UNKNOWN, settle_until=alerts.now - SETTLE)
    alerts.run()
    alerts.later(hours=2)
    alerts.run()
    assert detect(alerts.runtime) == 0
    assert len(alerts.mails()) == 1 and len(alerts.alerts()) == 2


# --- batching ------------------------------------------------------------------------------------------

def test_at_most_one_digest_per_interval(alerts):
    first = alerts.grant(FAILED)
    alerts.run()
    assert len(alerts.mails()) == 1                               # the first one goes out at once
    alerts.later(minutes=10)
    second = alerts.grant(FAILED)
    alerts.later(minutes=5)
    third = alerts.grant(FAILED)
    alerts.later(minutes=44)                                      # 59 minutes after the first digest
    assert "2 waiting" in alerts.run()
    assert len(alerts.mails()) == 1
    alerts.later(minutes=1)                                       # 60 minutes
    alerts.run()
    assert len(alerts.mails()) == 2
    text = alerts.texts()[1]
    assert second in text and third in text and first not in text
    assert "Grants that need attention: 2 " in alerts.mails()[1]["Subject"]


def test_the_interval_is_configurable(make_alerts):
    alerts = make_alerts(digest_interval_minutes=15)
    alerts.grant(FAILED)
    alerts.run()
    alerts.later(minutes=1)
    alerts.grant(FAILED)
    alerts.later(minutes=13)
    alerts.run()
    assert len(alerts.mails()) == 1
    alerts.later(minutes=1)
    alerts.run()
    assert len(alerts.mails()) == 2


# --- resolved before the digest ------------------------------------------------------------------------------

def test_a_grant_resolved_before_the_digest_goes_out_is_left_out(alerts):
    alerts.grant(FAILED)
    alerts.run()                                                  # digest 1; the next not before +60 min
    alerts.later(minutes=5)
    retried, recovered, still = alerts.grant(FAILED), alerts.grant(UNKNOWN, settle_until=alerts.now - SETTLE), \
        alerts.grant(FAILED)
    alerts.run()
    assert {a.grant_id: a.state for a in alerts.alerts()[1:]} == {retried: "pending", recovered: "pending",
                                                                  still: "pending"}
    alerts.later(minutes=20)
    alerts.retry(retried)
    alerts.recover(recovered)
    alerts.later(minutes=40)
    alerts.run()
    assert len(alerts.mails()) == 2
    text = alerts.texts()[1]
    assert still in text and retried not in text and recovered not in text
    assert {a.grant_id: a.state for a in alerts.alerts()[1:]} == {retried: "resolved", recovered: "resolved",
                                                                  still: "digested"}


def test_nothing_is_mailed_when_every_waiting_grant_recovered(alerts):
    alerts.grant(FAILED)
    alerts.run()
    alerts.later(minutes=5)
    grant_id = alerts.grant(FAILED)
    alerts.run()
    alerts.retry(grant_id)
    alerts.later(hours=2)
    alerts.run()
    assert len(alerts.mails()) == 1 and len(alerts.digests()) == 1
    # The interval is not used up by a digest that was never made: the next failure goes out at once.
    alerts.grant(FAILED)
    alerts.run()
    assert len(alerts.mails()) == 2


def test_a_grant_recovered_while_its_digest_waits_for_a_retry_is_left_out(make_alerts):
    alerts = make_alerts(smtp=9)                                  # nothing listens: a transient failure
    first, second = alerts.grant(FAILED), alerts.grant(FAILED)
    alerts.run()
    [digest] = alerts.digests()
    assert digest.state == "planned" and digest.attempts == 1 and digest.next_attempt_at == alerts.now + timedelta(minutes=1)
    alerts.recover(first)
    alerts.runtime.settings = alerts.runtime.settings.model_copy(update={"smtp": alerts.runtime.settings.smtp.model_copy(
        update={"port": alerts.smtp_port})})
    alerts.later(minutes=1)
    alerts.run()
    [text] = alerts.texts()
    assert second in text and first not in text
    assert alerts.digests()[0].state == "sent" and alerts.digests()[0].alerts == 1


# --- unsettled grants and their event -----------------------------------------------------------------------

def test_an_unsettled_grant_is_an_alert_only_after_its_settle_time_and_the_polling(alerts):
    endpoint(alerts.runtime, "https://hooks.example.com/x")
    settle_until = alerts.now + timedelta(minutes=2)
    grant_id = alerts.grant(UNKNOWN, settle_until=settle_until, error="outcome unknown: no answer within 90 s")
    alerts.at(settle_until + GRACE)
    alerts.run()
    assert alerts.alerts() == [] and alerts.events("grant.unsettled") == []
    alerts.at(settle_until + GRACE + timedelta(seconds=1))
    alerts.run()
    [alert] = alerts.alerts()
    assert (alert.grant_id, alert.kind, alert.since) == (grant_id, "unsettled", settle_until)
    [text] = alerts.texts()
    assert "outcome still unknown after the settle time (unknown)" in text and "no answer within 90 s" in text
    alerts.later(hours=5)
    alerts.run()
    [event] = alerts.events("grant.unsettled")                    # once, like the mail
    assert event.data == {"grant_id": grant_id, "channel": "api", "external_id": None,
                          "email": f"learner.{grant_id}@example.org", "term_id": 7, "status": "unknown",
                          "orders_sent": 1, "since": "2026-11-24T10:02:00Z",
                          "error": "outcome unknown: no answer within 90 s"}


def test_the_grant_unsettled_event_matches_its_published_schema(alerts):
    endpoint(alerts.runtime, "https://hooks.example.com/x", events=["grant.unsettled"])
    alerts.grant(CONFIRMING, settle_until=alerts.now - SETTLE, term_id=None, error="")
    alerts.run()
    [event] = alerts.events("grant.unsettled")
    body = json.loads(json.dumps({"id": event.id, "type": event.type,
                                  "timestamp": event.created_at.isoformat().replace("+00:00", "Z"), "data": event.data}))
    validator = jsonschema.Draft202012Validator(json_schema("grant.unsettled"),
                                                format_checker=jsonschema.Draft202012Validator.FORMAT_CHECKER)
    validator.validate(body)
    broken = {**body, "data": {**body["data"], "status": "succeeded"}}
    assert list(validator.iter_errors(broken)), "the schema names the states an unsettled grant can be in"


def test_a_grant_left_delivering_by_a_dead_worker_is_an_alert_after_the_settle_time(alerts):
    grant_id = alerts.grant(DELIVERING, settle_until=None)
    marked = alerts.now
    alerts.at(marked + SETTLE + GRACE)
    assert detect(alerts.runtime) == 0
    alerts.later(seconds=1)
    assert detect(alerts.runtime) == 1
    [alert] = alerts.alerts()
    assert (alert.grant_id, alert.kind, alert.since) == (grant_id, "unsettled", marked)


def test_a_new_settle_time_after_an_unsettled_alert_is_a_new_episode(alerts):
    grant_id = alerts.grant(UNKNOWN, settle_until=alerts.now - SETTLE)
    assert detect(alerts.runtime) == 1
    new_settle = alerts.now + SETTLE                              # the worker ordered again, again no answer
    alerts._set(grant_id, settle_until=new_settle)
    assert detect(alerts.runtime) == 0
    alerts.at(new_settle + GRACE + timedelta(seconds=1))
    assert detect(alerts.runtime) == 1
    assert [a.since for a in alerts.alerts()] == [START - SETTLE, new_settle]


def test_grants_that_are_not_stuck_are_no_alert(alerts):
    for status in (QUEUED, SUCCEEDED, "fetching", "cancelled", "duplicated"):
        alerts.grant(status, settle_until=alerts.now - timedelta(days=1))
    alerts.grant(UNKNOWN, settle_until=alerts.now + SETTLE)
    alerts.later(minutes=5)
    assert detect(alerts.runtime) == 0
    with alerts.runtime.sessions() as session:
        assert attention.counts(session, alerts.runtime.settings, alerts.now) == attention.Counts(0, 0)


# --- no mail possible -------------------------------------------------------------------------------------------

def test_without_smtp_nothing_crashes_and_the_alerts_wait(make_alerts):
    alerts = make_alerts(smtp=False)
    grant_id = alerts.grant(FAILED)
    summary = alerts.run()
    assert "not mailed: e-mail is disabled (smtp.host and smtp.pickup_dir are empty)" in summary
    assert [a.state for a in alerts.alerts()] == ["pending"] and alerts.digests() == []
    assert alerts.mails() == []
    # Mail configured later: the alerts still unresolved go out then.
    settings = alerts.runtime.settings
    alerts.runtime.settings = settings.model_copy(update={"smtp": settings.smtp.model_copy(
        update={"host": alerts.smtp_host, "port": alerts.smtp_port, "security": "none",
                "from_address": "school@example.org"})})
    alerts.later(minutes=1)
    alerts.run()
    assert grant_id in alerts.texts()[0]


def test_switched_off_alerts_are_recorded_but_not_mailed(make_alerts):
    alerts = make_alerts(enabled=False)
    alerts.grant(FAILED)
    assert "not mailed: alerts.enabled = false" in alerts.run()
    assert alerts.mails() == [] and [a.state for a in alerts.alerts()] == ["pending"]


def test_a_digest_refused_for_good_gives_its_alerts_to_the_next_one(alerts):
    grant_id = alerts.grant(FAILED)
    alerts.inbox.fail_with = (550, "5.1.1 no such mailbox")
    alerts.run()
    [digest] = alerts.digests()
    assert digest.state == "failed" and digest.reason == "smtp_permanent" and "550" in digest.last_error
    assert [a.state for a in alerts.alerts()] == ["pending"]
    alerts.inbox.fail_with = None
    alerts.later(minutes=30)
    alerts.run()
    assert alerts.mails() == []                                   # a refusing server gets one try per interval
    alerts.later(minutes=30)
    alerts.run()
    assert grant_id in alerts.texts()[0]


def test_a_digest_whose_outcome_is_unknown_is_never_sent_again(alerts):
    grant_id = alerts.grant(FAILED)
    alerts.inbox.drop_after_data = True
    alerts.run()
    assert len(alerts.inbox.messages) == 1                        # the server read it whole, then hung up
    [digest] = alerts.digests()
    assert digest.state == "unknown" and digest.reason == "no_reply" and digest.message_id in digest.last_error
    alerts.inbox.drop_after_data = False
    alerts.later(hours=3)
    alerts.run()
    assert len(alerts.inbox.messages) == 1
    [alert] = alerts.alerts()
    assert (alert.grant_id, alert.state) == (grant_id, "digested")


def test_transient_failures_retry_the_same_digest_then_give_up(make_alerts):
    alerts = make_alerts(smtp=9)
    alerts.grant(FAILED)
    for attempt in range(1, 7):
        alerts.run()
        [digest] = alerts.digests()
        assert digest.attempts == attempt
        alerts.at(digest.next_attempt_at or alerts.now)
    assert digest.state == "failed" and digest.reason == "smtp_transient"
    assert "gave up after 6 attempts" in digest.last_error
    assert [a.state for a in alerts.alerts()] == ["pending"]


def test_a_sender_that_stopped_mid_delivery_is_recovered_without_sending_twice(alerts):
    alerts.grant(FAILED)
    assert detect(alerts.runtime) == 1
    digest_id = AlertMailer(alerts.runtime).plan()

    class Dies(Mailer):
        def send(self, mail, *, before_data=None):
            before_data()                                         # handed over, then the process is killed
            raise SystemExit

    with pytest.raises(SystemExit):
        AlertMailer(alerts.runtime, Dies(alerts.runtime.settings.smtp)).deliver(digest_id)
    alerts.later(minutes=11)                                      # the claim's lease ran out
    alerts.run()
    assert alerts.mails() == [] and alerts.digests()[0].state == "unknown"
    assert alerts.digests()[0].reason == "interrupted"


def test_a_sender_that_stopped_before_handing_over_is_planned_again(alerts):
    alerts.grant(FAILED)
    detect(alerts.runtime)
    digest_id = AlertMailer(alerts.runtime).plan()

    class DiesEarly(Mailer):
        def send(self, mail, *, before_data=None):
            raise SystemExit

    with pytest.raises(SystemExit):
        AlertMailer(alerts.runtime, DiesEarly(alerts.runtime.settings.smtp)).deliver(digest_id)
    alerts.later(minutes=11)
    alerts.run()
    assert len(alerts.mails()) == 1 and alerts.digests()[0].state == "sent" and alerts.digests()[0].attempts == 2


def test_two_senders_never_send_one_digest_twice(alerts):
    alerts.grant(FAILED)
    detect(alerts.runtime)
    digest_id = AlertMailer(alerts.runtime).plan()
    seen = []

    class Rival(Mailer):
        def send(self, mail, *, before_data=None):
            second = AlertMailer(alerts.runtime)
            second.deliver(digest_id)                             # the digest is claimed: nothing to do
            seen.append(second.report.lost_claims)
            return super().send(mail, before_data=before_data)

    AlertMailer(alerts.runtime, Rival(alerts.runtime.settings.smtp)).deliver(digest_id)
    assert seen == [1] and len(alerts.mails()) == 1


def test_a_transient_failure_is_no_reason_to_crash(make_alerts):
    alerts = make_alerts()
    alerts.grant(FAILED)

    class Down(Mailer):
        def send(self, mail, *, before_data=None):
            raise TransientMailError("SMTP 421: try later")

    report = AlertMailer(alerts.runtime, Down(alerts.runtime.settings.smtp)).run()
    assert report.retrying == 1 and alerts.digests()[0].last_error == "SMTP 421: try later"


# --- recipient and language ------------------------------------------------------------------------------------

def test_the_default_recipient_is_the_reminders_administrator_address(make_alerts):
    alerts = make_alerts(to="")
    runtime = alerts.runtime
    found = recipient(runtime.settings, runtime.reader, runtime.sessions)
    assert (found.address, found.source) == ("manager@school.example", "reminders")   # what the seeded levels name
    alerts.grant(FAILED)
    alerts.run()
    assert alerts.mails()[0]["To"] == "manager@school.example"


def test_several_reminder_addresses_are_not_guessed(make_alerts):
    alerts = make_alerts(to="")
    runtime = alerts.runtime
    first, second = (level.term_id for level in runtime.reader.levels()[:2])
    with unit_of_work(runtime.sessions) as session:
        for term_id, address in ((first, "teacher@school.example"), (second, "manager@school.example")):
            session.add_all([SettingOverride(scope=f"monitor.level.{term_id}", name=name, value=value,
                                             updated_at=START, updated_by="test")
                             for name, value in (("enabled", True), ("admin_email", address))])
    found = recipient(runtime.settings, runtime.reader, runtime.sessions)
    assert found.address == "" and "2 different administrator addresses" in found.problem
    assert "manager@school.example" in found.problem and "teacher@school.example" in found.problem
    alerts.grant(FAILED)
    assert "not mailed: alerts.to is empty and the levels name 2 different" in alerts.run()
    assert alerts.mails() == []


def test_the_digest_speaks_the_configured_language(make_alerts):
    alerts = make_alerts(language="ru")
    alerts.grant(FAILED)
    alerts.run()
    [mail] = alerts.mails()
    assert "Выдачи доступа, требующие внимания: 1 (не удались: 1, исход всё ещё неизвестен: 0)" in mail["Subject"]
    assert "| не удалась |" in alerts.texts()[0]


def test_the_language_falls_back_to_the_reminders_then_english():
    base = {"wordpress": {"db_url": "sqlite:///wp.sqlite"}, "memberlux": {"rest_base_url": "https://s.example/wp-json"}}

    def language(**sections) -> str:
        return digest_language(settings_from_mapping({**base, **sections}, environ={}))

    assert language() == "en"                                              # reminders.language defaults to ru: not a choice
    assert language(reminders={"language": "ru"}) == "ru"
    assert language(reminders={"language": "ru"}, alerts={"language": "en"}) == "en"
    assert language(alerts={"language": "ru"}) == "ru"


def test_both_languages_of_the_digest_have_the_same_texts():
    assert set(WORDS["ru"]) == set(WORDS["en"])
    assert all(WORDS["ru"][key] != WORDS["en"][key] for key in WORDS["en"])


def test_what_grants_carry_is_escaped_in_the_letter(alerts):
    alerts.grant(FAILED, error='<img src=x onerror="alert(1)"> & more')
    alerts.run()
    html = alerts.mails()[0].get_body(("html",)).get_content()
    assert "<img" not in html and "&lt;img src=x onerror=&#34;alert(1)&#34;&gt; &amp; more" in html


def test_without_a_public_url_the_letter_says_how_to_get_links(alerts):
    alerts.runtime.settings = alerts.runtime.settings.model_copy(update={"web": alerts.runtime.settings.web.model_copy(
        update={"public_url": ""})})
    grant_id = alerts.grant(FAILED)
    alerts.run()
    text = alerts.texts()[0]
    assert grant_id in text and "/admin/grants/" not in text and "Set web.public_url" in text
