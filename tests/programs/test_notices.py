"""A program's events reach their consumers through the webhook outbox: the legacy mlp_webhook_url body
(now signed and retried), the admin notification e-mails as HTML, and standard endpoints."""

from __future__ import annotations

import json

import pytest
import requests
import sqlalchemy as sa
from flask import Flask, request

from sidecar.devstack.server import serve_in_thread
from sidecar.domain.programs import Step
from sidecar.monitor.certificates import CertificateClassifier
from sidecar.programs.catalog import ProgramCatalog, ProgramDefinition
from sidecar.programs.progression import Progression
from sidecar.store.db import unit_of_work
from sidecar.store.webhook_models import WebhookDelivery, WebhookEndpoint
from sidecar.webhooks.delivery import WebhookDeliverer

YOGA, ENGLISH = 10, 7


@pytest.fixture
def receiver():
    received: list[tuple[dict, dict]] = []
    app = Flask("receiver")

    @app.post("/legacy")
    def legacy():
        received.append((dict(request.headers), request.get_json()))
        return "ok"

    base_url, stop = serve_in_thread(app)
    yield base_url, received
    stop()


@pytest.fixture
def school(small_site, emulator, settings_for, smtp_server, make_runtime):
    host, port, inbox = smtp_server
    runtime = make_runtime(settings_for(
        small_site, emulator, webhooks={"allow_private_destinations": ["127.0.0.1"]},
        smtp={"host": host, "port": port, "security": "none", "from_address": "school@example.org"}))
    CertificateClassifier(runtime).sync()
    return runtime, emulator, inbox


def learner(runtime) -> int:
    return next(u for u in range(2, 61) if runtime.reader.user(u) and not runtime.reader.user(u).blocked
                and not runtime.reader.key_rows(u, [YOGA, ENGLISH]))


def test_step_and_completion_reach_the_legacy_webhook_and_the_admin_mailbox(school, receiver):
    runtime, emulator, inbox = school
    base_url, received = receiver
    program = ProgramCatalog(runtime).create(ProgramDefinition(
        name="Йога → английский", steps=(Step(YOGA, 1, "months"), Step(ENGLISH, 3, "months")),
        notify_email="manager@school.example",
        notify_step_subject="[user_login] перешёл к шагу [next_step]",
        notify_step_body="<p>[display_name] завершил «[current_course]» и получил «[next_course]» на [duration] [units].</p>",
        webhook_url=base_url + "/legacy"), actor="test").id
    user_id = learner(runtime)
    user = runtime.reader.user(user_id)
    progression = Progression(runtime)
    progression.enrol(program, user_id, source="test", actor="admin")
    site_url, api_user, password, _engine = emulator
    for level in (YOGA, ENGLISH):
        answer = requests.post(site_url + "/devstack/certificates", json={"user_id": user_id, "level_id": level},
                               auth=(api_user, password), timeout=10)
        assert answer.status_code in (200, 201), answer.text
        progression.watch()
    WebhookDeliverer(runtime).run_once()
    with runtime.sessions() as session:
        problems = [(d.state, d.last_error) for d in session.scalars(sa.select(WebhookDelivery))]

    assert [body for _, body in received] == [
        {"user_id": user_id, "program_id": program, "current_term_id": YOGA, "next_term_id": ENGLISH, "event": "step_granted",
         "context": {"current_step": 1, "next_step": 2, "total_steps": 2, "duration": 3, "units": "months"}},
        {"user_id": user_id, "program_id": program, "current_term_id": ENGLISH, "next_term_id": 0,
         "event": "program_completed",
         "context": {"current_step": 2, "next_step": 0, "total_steps": 2, "duration": 0, "units": ""}},
    ], problems
    assert all(h.get("Webhook-Signature", "").startswith("v1,") for h, _ in received)

    subjects = [m[2]["Subject"] for m in inbox.messages]
    assert subjects == [f"{user.login} перешёл к шагу 2", "ML Program Update"]
    step_mail = inbox.messages[0][2]
    assert inbox.messages[0][1] == ["manager@school.example"]
    html = step_mail.get_body(("html",)).get_content()
    assert "завершил «Йога для начинающих» и получил «Английский с нуля» на 3 months." in html
    assert step_mail.get_body(("plain",)) is not None
    with runtime.sessions() as session:
        assert {d.state for d in session.scalars(sa.select(WebhookDelivery))} == {"succeeded"}


def test_standard_endpoints_get_program_events_with_the_documented_fields(school, receiver):
    runtime, emulator, _inbox = school
    base_url, received = receiver
    with unit_of_work(runtime.sessions) as session:
        from datetime import datetime, timezone

        now = datetime.now(timezone.utc)
        session.add(WebhookEndpoint(name="crm", url=base_url + "/legacy", events=["program.step_granted"],
                                    secret="whsec_MfKQ9r8GKYqrTwjUPD8ILPZIo2LaLaSw", source="ui", created_at=now,
                                    updated_at=now, consecutive_failures=0))
    program = ProgramCatalog(runtime).create(ProgramDefinition(
        name="P", steps=(Step(YOGA, 1, "months"), Step(ENGLISH, 1, "months"))), actor="test").id
    user_id = learner(runtime)
    Progression(runtime).enrol(program, user_id, source="test", actor="admin")
    site_url, api_user, password, _engine = emulator
    requests.post(site_url + "/devstack/certificates", json={"user_id": user_id, "level_id": YOGA},
                  auth=(api_user, password), timeout=10)
    Progression(runtime).watch()
    WebhookDeliverer(runtime).run_once()
    [(headers, body)] = received
    assert body["type"] == "program.step_granted"
    from sidecar.webhooks.events import SCHEMAS

    assert set(body["data"]) == set(SCHEMAS["program.step_granted"])
    assert body["data"]["granted_level"] == ENGLISH and body["data"]["user_id"] == user_id
    assert json.loads(json.dumps(body))["id"] == headers["Webhook-Id"]
