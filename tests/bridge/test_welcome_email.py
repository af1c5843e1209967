"""Learners created by an order get one welcome letter with their login and the password-reset link."""

from __future__ import annotations

import pytest

from sidecar.bootstrap import build_runtime, store_url
from sidecar.bridge.auth import Principal
from sidecar.bridge.outbox import GrantDeliverer
from sidecar.bridge.parsers import parse_grant_body
from sidecar.bridge.service import BridgeService, IntakeContext
from sidecar.store import db as store_db


@pytest.fixture
def welcome_runtime(small_site, emulator, settings_for, smtp_server):
    host, port, inbox = smtp_server
    settings = settings_for(small_site, emulator,
                            smtp={"host": host, "port": port, "security": "none", "from_address": "school@example.org"},
                            bridge={"welcome_email": {"enabled": True}})
    engine = store_db.create_store_engine(store_url(settings))
    store_db.upgrade(engine)
    engine.dispose()
    runtime = build_runtime(settings)
    yield runtime, inbox
    runtime.close()


def grant_for(runtime, email: str, external_id: str):
    service = BridgeService(runtime)
    product = next(p for p in service.catalog.products() if p.status == "publish" and not p.unlimited)
    parsed = parse_grant_body({"user": {"email": email, "first_name": "Мария"}, "external_id": external_id,
                               "grant": {"term_id": product.level_id, "duration": product.duration, "units": product.units}})
    accepted = service.accept(parsed, IntakeContext(channel="api", principal=Principal("api_key", "test")))
    GrantDeliverer(runtime, service).run_once()
    return service.get(accepted.grant.id)


def test_new_user_gets_one_letter_with_login_and_reset_link(welcome_runtime):
    runtime, inbox = welcome_runtime
    grant = grant_for(runtime, "brand.new.person@example.com", "w-1")
    assert grant.status == "succeeded" and grant.user_existed is False
    [(_, recipients, message)] = inbox.messages
    assert recipients == ["brand.new.person@example.com"]
    html = message.get_body(("html",)).get_content()
    assert "Мария" in html and "brand.new.person" in html
    assert "wp-login.php?action=lostpassword" in html
    assert grant.meta["welcome"] == "sent" and grant.meta["welcome_message_id"] == message["Message-ID"]


def test_existing_user_gets_no_letter(welcome_runtime):
    runtime, inbox = welcome_runtime
    first = grant_for(runtime, "returning@example.com", "w-2")
    second = grant_for(runtime, "returning@example.com", "w-3")
    assert first.user_existed is False and second.user_existed is True
    assert len(inbox.messages) == 1


def test_letter_is_never_sent_twice_for_a_grant(welcome_runtime):
    from sidecar.bridge.welcome import send_welcome

    runtime, inbox = welcome_runtime
    grant = grant_for(runtime, "once@example.com", "w-4")
    assert send_welcome(runtime, grant) is None
    assert len(inbox.messages) == 1


def test_smtp_failure_is_recorded_not_raised(welcome_runtime):
    runtime, inbox = welcome_runtime
    inbox.fail_with = (550, "no such mailbox")
    grant = grant_for(runtime, "bounce@example.com", "w-5")
    assert grant.status == "succeeded"
    assert grant.meta["welcome"] == "failed" and "550" in grant.meta["welcome_error"]
