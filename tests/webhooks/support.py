"""Helpers of the outbound-webhook tests: a local receiver (and its ``receiver`` fixture: this module is a
pytest plugin listed in ``tests/conftest.py``, so the security tests use it too), an endpoint row, an event
fired, the deliveries."""

from __future__ import annotations

from datetime import datetime, timezone

import pytest
import sqlalchemy as sa
from flask import Flask, request

from sidecar.devstack.server import serve_in_thread
from sidecar.store.db import unit_of_work
from sidecar.store.webhook_models import WebhookDelivery, WebhookEndpoint
from sidecar.webhooks.events import emit

SECRET = "whsec_MfKQ9r8GKYqrTwjUPD8ILPZIo2LaLaSw"
NOW = datetime(2026, 11, 24, 12, 0, tzinfo=timezone.utc)


class Receiver:
    """A local HTTP endpoint that records what it gets and answers with a configurable status."""

    def __init__(self) -> None:
        self.received: list[tuple[dict, bytes]] = []
        self.status = 200
        self.redirect_to: str | None = None
        app = Flask("receiver")

        @app.post("/hook")
        def hook():
            self.received.append((dict(request.headers), request.get_data()))
            if self.redirect_to:
                return "", 302, {"Location": self.redirect_to}
            return "thanks", self.status

        self.base_url, self.stop = serve_in_thread(app)

    @property
    def url(self) -> str:
        return self.base_url + "/hook"


def endpoint(runtime, url: str, events=("*",), **extra) -> int:
    with unit_of_work(runtime.sessions) as session:
        row = WebhookEndpoint(name=extra.pop("name", "crm"), url=url, events=list(events), secret=SECRET, source="ui",
                              created_at=NOW, updated_at=NOW, consecutive_failures=0, **extra)
        session.add(row)
        session.flush()
        return row.id


def fire(runtime, event_type="grant.failed", data=None) -> str | None:
    data = data or {"grant_id": "g1", "channel": "api", "external_id": "deal-1", "email": "a@example.com",
                    "term_id": 7, "error": "no product"}
    with unit_of_work(runtime.sessions) as session:
        return emit(session, event_type, data, runtime.clock.now())


def deliveries(runtime) -> list[WebhookDelivery]:
    with runtime.sessions() as session:
        return list(session.scalars(sa.select(WebhookDelivery).order_by(WebhookDelivery.id)))


@pytest.fixture
def receiver():
    """A :class:`Receiver` listening on loopback for the test, stopped after it."""
    made = Receiver()
    yield made
    made.stop()
