"""E-mail endpoints of the webhook outbox (program notices): webhooks are at least once, but a mailbox
drops no repeats, so an e-mail whose outcome is unknown is never sent again by itself."""

from __future__ import annotations

from datetime import datetime, timedelta, timezone

import pytest
import sqlalchemy as sa

from sidecar.config import SmtpSettings
from sidecar.mail.mailer import Mail, Mailer
from sidecar.store.db import unit_of_work
from sidecar.store.webhook_models import WebhookDelivery, WebhookEndpoint
from sidecar.webhooks.delivery import WebhookDeliverer
from sidecar.webhooks.formats import Rendered, register_format
from sidecar.webhooks.events import emit


def _notice(_runtime, endpoint, event) -> Rendered:
    return Rendered(mail=Mail(to=endpoint.url, subject=f"Event {event.type}", html="<p>notice</p>", text="notice"))


register_format("test_notice", _notice)


@pytest.fixture
def outbox(runtime, smtp_server):
    host, port, inbox = smtp_server
    now = datetime.now(timezone.utc)
    with unit_of_work(runtime.sessions) as session:
        session.add(WebhookEndpoint(name="manager", kind="email", url="manager@school.example", events=["*"],
                                    body_format="test_notice", source="ui", created_at=now, updated_at=now,
                                    consecutive_failures=0))
    with unit_of_work(runtime.sessions) as session:
        emit(session, "sleeper.detected", {"user_id": 1, "term_id": 7, "expired_on": "2026-11-20",
                                           "email": "a@example.com"}, now)
    mailer = Mailer(SmtpSettings(host=host, port=port, security="none", from_address="school@example.org"))
    return runtime, inbox, lambda: WebhookDeliverer(runtime, mailer=mailer)


def delivery(runtime) -> WebhookDelivery:
    with runtime.sessions() as session:
        return session.scalars(sa.select(WebhookDelivery)).one()


def test_an_e_mail_whose_connection_dropped_after_data_is_failed_and_not_retried(outbox):
    runtime, inbox, deliverer = outbox
    inbox.drop_after_data = True
    deliverer().run_once()
    inbox.drop_after_data = False
    row = delivery(runtime)
    assert row.state == "failed" and "outcome unknown" in row.last_error and row.next_attempt_at is None
    assert row.data_started_at is not None
    with runtime.sessions() as session:
        assert session.scalars(sa.select(WebhookEndpoint)).one().consecutive_failures == 0
    for _ in range(3):
        deliverer().run_once()
    assert len(inbox.messages) == 1


def stale(runtime, *, marked: bool) -> None:
    now = datetime.now(timezone.utc)
    with runtime.sessions.begin() as session:
        session.execute(sa.update(WebhookDelivery).values(
            state="delivering", claimed_until=now - timedelta(seconds=1),
            data_started_at=now - timedelta(minutes=2) if marked else None))


def test_a_stale_e_mail_claim_after_the_pre_data_mark_is_not_sent_again(outbox):
    runtime, inbox, deliverer = outbox
    stale(runtime, marked=True)
    deliverer().run_once()
    row = delivery(runtime)
    assert row.state == "failed" and "outcome unknown" in row.last_error and inbox.messages == []


def test_a_stale_e_mail_claim_before_the_mark_is_delivered_once(outbox):
    runtime, inbox, deliverer = outbox
    stale(runtime, marked=False)
    deliverer().run_once()
    deliverer().run_once()
    assert delivery(runtime).state == "succeeded" and len(inbox.messages) == 1
