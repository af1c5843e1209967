"""The webhook pages with an administrator signed in through the real login form: endpoints (form with
SSRF refusals at the URL field, read-only endpoints of the configuration file and of programs),
the secret shown only on a POST, rotation with its grace period, on/off, the test event delivered by
the worker to a real receiver, the delivery log with attempts and redelivery, the event schemas and
the MemberLux hints. Every page in Russian and English, every form behind the CSRF token."""

from __future__ import annotations

import html
import json
import re
from pathlib import Path

import pytest
import sqlalchemy as sa
from flask import Flask, request

from sidecar.bootstrap import build_runtime, store_url
from sidecar.devstack import seed
from sidecar.devstack.server import serve_in_thread
from sidecar.domain.programs import Step
from sidecar.programs.catalog import ProgramCatalog, ProgramDefinition
from sidecar.store.models import AuditEvent
from sidecar.store.webhook_models import InboundHint, WebhookDelivery, WebhookEndpoint
from sidecar.webhooks import inbound
from sidecar.webhooks.delivery import WebhookDeliverer
from sidecar.webhooks.endpoints import shown_url, sync_config
from sidecar.webhooks.events import SCHEMAS
from tests.admin_pages import AdminBrowser
from tests.stores import migrate_store
from tests.strong_secrets import strong_secret

APP_CSS = (Path(__file__).resolve().parents[2] / "sidecar" / "web" / "static" / "app.css").read_text(encoding="utf-8")
PUBLIC_URL = "https://93.184.215.14/hooks/crm"      # a public address literal: no DNS needed to accept it
CONFIG_SECRET = "whsec_" + "Y29uZmlnLWVuZHBvaW50LXNlY3JldC0wMDAx"
PATH_TOKEN = strong_secret("memberlux-path-token")


class Receiver:
    """A webhook receiver on a real socket, answering what the test says."""

    def __init__(self) -> None:
        self.received: list[tuple[dict, dict]] = []
        self.status = 200
        app = Flask("receiver")

        @app.post("/hook")
        def hook():
            self.received.append((dict(request.headers), json.loads(request.get_data())))
            return f"thanks, got {len(self.received)}", self.status

        self.base_url, self.stop = serve_in_thread(app)


class Admin(AdminBrowser):
    token_page = "/webhooks/events"

    def endpoint(self, name: str) -> WebhookEndpoint:
        with self.runtime.sessions() as session:
            return session.scalar(sa.select(WebhookEndpoint).where(WebhookEndpoint.name == name))

    def deliveries(self, endpoint_id: int) -> list[WebhookDelivery]:
        with self.runtime.sessions() as session:
            return list(session.scalars(sa.select(WebhookDelivery).where(WebhookDelivery.endpoint_id == endpoint_id)
                                        .order_by(WebhookDelivery.id)))

    def audit(self, action: str) -> list[AuditEvent]:
        with self.runtime.sessions() as session:
            return list(session.scalars(sa.select(AuditEvent).where(AuditEvent.action == action)))

    def save(self, **fields) -> None:
        data = {"name": "CRM", "url": PUBLIC_URL, "events": ["*"], "enabled": "1", "description": "", **fields}
        response = self.post("/webhooks/new", data)
        assert response.status_code == 302, self.page_of(response)[:2000]


@pytest.fixture
def admin(small_site, settings_for, admin_pages):
    settings = settings_for(small_site, webhooks={
        "endpoints": [{"name": "warehouse", "url": "https://93.184.215.15/events", "events": ["grant.succeeded"],
                       "secret": CONFIG_SECRET, "description": "from the file"}],
        "allow_private_destinations": ["127.0.0.1"], "memberlux_path_token": PATH_TOKEN})
    migrate_store(store_url(settings))
    runtime = build_runtime(settings)
    sync_config(runtime)
    try:
        yield Admin(runtime, admin_pages)
    finally:
        runtime.close()


@pytest.fixture
def receiver():
    made = Receiver()
    yield made
    made.stop()


# --- pages, languages, permissions ------------------------------------------------------------------

def test_every_webhook_page_renders_in_russian_and_english(admin):
    admin.save()
    crm = admin.endpoint("CRM")
    pages = {
        "/webhooks": ("Events of the sidecar", "События сайдкара"),
        "/webhooks/new": ("New endpoint", "Новый получатель"),
        f"/webhooks/{crm.id}": ("Signing secret", "Секрет подписи"),
        f"/webhooks/{crm.id}/edit": ("Edit endpoint: CRM", "Изменение получателя: CRM"),
        f"/webhooks/{crm.id}/deliveries": ("Deliveries: CRM", "Доставки: CRM"),
        "/webhooks/events": ("How events are sent", "Как отправляются события"),
        "/webhooks/inbound": ("MemberLux's own webhooks", "Собственные вебхуки MemberLux"),
    }
    for url, (english, russian) in pages.items():
        assert english in admin.get(url + "?lang=en"), url
        assert russian in admin.get(url + "?lang=ru"), url
    assert 'href="/webhooks">Вебхуки</a>' in admin.get("/webhooks?lang=ru")
    assert 'href="/webhooks">Webhooks</a>' in admin.get("/programs?lang=en")


def test_pages_need_a_signed_in_administrator_and_forms_the_csrf_token(admin):
    admin.save()
    crm = admin.endpoint("CRM")
    anonymous = admin.app.test_client()
    assert anonymous.get("/webhooks").status_code == 302
    assert anonymous.get("/webhooks/events").status_code == 302
    for url in ("/webhooks/new", f"/webhooks/{crm.id}/edit", f"/webhooks/{crm.id}/secret", f"/webhooks/{crm.id}/rotate",
                f"/webhooks/{crm.id}/enabled", f"/webhooks/{crm.id}/test", "/webhooks/deliveries/1/redeliver"):
        assert admin.client.post(url, data={"name": "x", "url": PUBLIC_URL, "enabled": "0"}).status_code == 403, url  # no CSRF token
    assert admin.endpoint("CRM").secret == crm.secret and admin.endpoint("CRM").enabled
    assert admin.deliveries(crm.id) == []
    assert admin.client.get(f"/webhooks/{crm.id}/secret").status_code == 405     # never on a GET


# --- the form ------------------------------------------------------------------------------------------

def test_new_endpoint_is_saved_and_listed(admin):
    admin.save(events=["grant.succeeded", "program.completed"], description="CRM deals")
    crm = admin.endpoint("CRM")
    assert "Endpoint «CRM» saved." in admin.flashes(admin.get(f"/webhooks/{crm.id}"))
    assert (crm.source, crm.url, crm.events, crm.enabled) == ("ui", PUBLIC_URL, ["grant.succeeded", "program.completed"], True)
    assert crm.secret.startswith("whsec_")
    page = admin.get("/webhooks")
    row = re.search(rf'<tr class="endpoint source-ui" data-id="{crm.id}">.*?</tr>', page, re.S).group(0)
    assert "https://93.184.215.14/…" in row and "grant.succeeded, program.completed" in row and "this interface" in row
    assert admin.audit("webhook.endpoint_saved")[0].actor == seed.DEMO_ADMIN_LOGIN
    admin.post(f"/webhooks/{crm.id}/edit", {"name": "CRM", "url": PUBLIC_URL + "/v2", "events": ["*"]})
    changed = admin.endpoint("CRM")
    assert changed.url == PUBLIC_URL + "/v2" and changed.events == ["*"] and changed.enabled is False


def test_a_token_in_the_url_path_or_query_is_shown_only_in_the_edit_form(admin):
    # A Telegram bot's token is part of the URL's path; pages and the audit trail show scheme and host only.
    token_url = "https://93.184.215.14/bot123456:AAsecretToken/sendMessage?key=s3cr3tQuery"
    admin.save(name="tg", url=token_url)
    tg = admin.endpoint("tg")
    assert tg.url == token_url
    for page in (admin.get("/webhooks"), admin.get(f"/webhooks/{tg.id}")):
        assert "https://93.184.215.14/…" in page
        assert "AAsecretToken" not in page and "s3cr3tQuery" not in page
    assert html.escape(token_url) in admin.get(f"/webhooks/{tg.id}/edit")
    [saved] = [a for a in admin.audit("webhook.endpoint_saved") if a.subject_id == str(tg.id)]
    assert "AAsecretToken" not in json.dumps(saved.details) and "s3cr3tQuery" not in json.dumps(saved.details)
    assert saved.details["url"] == "https://93.184.215.14/…"


def test_shown_url_keeps_scheme_host_and_port_and_hides_the_rest():
    assert shown_url("https://u:pw@hooks.example:8443/a/b?c=d#e") == "https://hooks.example:8443/…"
    assert shown_url("http://[2001:db8::1]/x") == "http://[2001:db8::1]/…"
    assert shown_url("https://hooks.example/") == "https://hooks.example/"
    assert shown_url("https://hooks.example") == "https://hooks.example"
    assert shown_url("ops@example.org") == "ops@example.org"   # an e-mail endpoint's address


def test_form_errors_are_shown_at_their_field(admin):
    response = admin.post("/webhooks/new?lang=en", {"name": "", "url": "http://10.1.2.3/hook", "events": []})
    page = admin.page_of(response)
    assert response.status_code == 422 and "Nothing was saved" in page
    assert admin.field_error(page, "name") == "A name of 1 to 100 characters is required."
    assert admin.field_error(page, "events") == 'Choose "All events" or at least one event type.'
    assert admin.field_error(page, "url").startswith("10.1.2.3 is an address inside our network (10.1.2.3)")
    response = admin.post("/webhooks/new?lang=ru", {"name": "", "url": "http://10.1.2.3/hook", "events": []})
    page = admin.page_of(response)
    assert admin.field_error(page, "name") == "Нужно название длиной от 1 до 100 символов."
    assert admin.field_error(page, "url").startswith("10.1.2.3 — адрес внутри нашей сети (10.1.2.3)")
    response = admin.post("/webhooks/new?lang=ru", {"name": "CRM", "url": "http://user:pw@93.184.215.14/", "events": ["*"]})
    assert "Без имени пользователя и пароля в адресе" in admin.field_error(admin.page_of(response), "url")
    response = admin.post("/webhooks/new?lang=en", {"name": "CRM", "url": "ftp://93.184.215.14/", "events": ["*"]})
    assert admin.field_error(admin.page_of(response), "url") == "Enter an http:// or https:// address."
    admin.save()
    response = admin.post("/webhooks/new?lang=en", {"name": "CRM", "url": PUBLIC_URL, "events": ["*"]})
    assert response.status_code == 422
    assert admin.field_error(admin.page_of(response), "name") == "An endpoint named «CRM» exists already."
    with admin.runtime.sessions() as session:
        assert session.scalar(sa.select(sa.func.count()).select_from(WebhookEndpoint)
                              .where(WebhookEndpoint.source == "ui")) == 1


def test_a_body_template_is_saved_shown_and_refused_with_the_reason_in_both_languages(admin, receiver):
    template = '{"chat_id": 7, "text": "{{ event.type }} {{ data.email | default(\'\') }}"}'
    form = admin.get("/webhooks/new?lang=ru")
    for name in ("access.activated", "access.expired", "certificate.issued"):
        assert f'value="{name}"' in form
    assert "Шаблон тела запроса" in form and "Выдан сертификат" in form
    assert "A certificate was issued" in admin.get("/webhooks/new?lang=en")
    response = admin.post("/webhooks/new?lang=en", {"name": "TG", "url": PUBLIC_URL, "events": ["program.completed"],
                                                    "body_template": '{"text": "{{ data.email }}"}'})
    assert response.status_code == 422
    error = admin.field_error(admin.page_of(response), "body_template")
    assert error.startswith("The template cannot be used: with a program.completed event: $.text")
    response = admin.post("/webhooks/new?lang=ru", {"name": "TG", "url": PUBLIC_URL, "events": ["*"], "body_template": "{"})
    assert admin.field_error(admin.page_of(response), "body_template").startswith("Шаблон нельзя использовать: not a JSON")
    admin.save(name="TG", url=receiver.base_url + "/hook", body_template=template)
    tg = admin.endpoint("TG")
    assert (tg.body_format, tg.body_template) == ("template", template)
    page = admin.get(f"/webhooks/{tg.id}?lang=en")
    assert "JSON from the endpoint's template" in html.unescape(page) and template in html.unescape(page)
    assert '<pre class="json body-template">' in page                # a long one-line template wraps (app.css)
    assert re.search(r"pre\.json\.body-template \{[^}]*white-space: pre-wrap;[^}]*overflow-wrap: anywhere;", APP_CSS)
    assert template in html.unescape(admin.get(f"/webhooks/{tg.id}/edit"))
    admin.post(f"/webhooks/{tg.id}/test")                        # a test event goes through the template too
    assert WebhookDeliverer(admin.runtime).run_once() == 1
    [(_headers, body)] = receiver.received
    assert body == {"chat_id": 7, "text": "webhook.test "}


def test_configuration_endpoints_are_read_only(admin):
    warehouse = admin.endpoint("warehouse")
    assert warehouse.source == "config"
    listed = admin.get("/webhooks")
    row = re.search(rf'<tr class="endpoint source-config" data-id="{warehouse.id}">.*?</tr>', listed, re.S).group(0)
    assert "edit-link" not in row and "configuration file" in row
    page = admin.get(f"/webhooks/{warehouse.id}")
    assert "This endpoint comes from the configuration file" in page
    assert "edit-link" not in page and f'/webhooks/{warehouse.id}/rotate' not in page
    assert f'/webhooks/{warehouse.id}/enabled' not in page
    response = admin.client.get(f"/webhooks/{warehouse.id}/edit")
    assert response.status_code == 302
    assert "Endpoints of the configuration file are changed in the file" in " ".join(admin.flashes(admin.get(f"/webhooks/{warehouse.id}")))
    admin.post(f"/webhooks/{warehouse.id}/edit", {"name": "warehouse", "url": PUBLIC_URL, "events": ["*"], "enabled": "1"})
    admin.post(f"/webhooks/{warehouse.id}/rotate")
    assert any("Rotate this secret in the configuration file" in f for f in admin.flashes(admin.get(f"/webhooks/{warehouse.id}")))
    admin.post(f"/webhooks/{warehouse.id}/enabled", {"enabled": "0"})
    after = admin.endpoint("warehouse")
    assert (after.url, after.events, after.secret, after.enabled) == (warehouse.url, ["grant.succeeded"], CONFIG_SECRET, True)


def test_program_endpoints_follow_their_program(admin):
    program = ProgramCatalog(admin.runtime).create(ProgramDefinition(
        name="Йога", steps=(Step(10, 1, "months"), Step(7, 1, "months")), webhook_url="https://93.184.215.16/legacy",
        notify_email="manager@school.example"), actor="test").id
    legacy = admin.endpoint(f"program {program} legacy webhook")
    notices = admin.endpoint(f"program {program} notifications")
    page = admin.get(f"/webhooks/{legacy.id}")
    assert "belongs to a program" in page and f'href="/programs/{program}/edit"' in page
    assert "Send a test event" not in page and "the legacy bundle plugin's body" in page
    assert "Signing secret" not in admin.get(f"/webhooks/{notices.id}")           # an e-mail needs no secret
    assert admin.client.get(f"/webhooks/{legacy.id}/edit").status_code == 302
    admin.post(f"/webhooks/{legacy.id}/test")
    assert admin.deliveries(legacy.id) == []
    admin.post(f"/webhooks/{legacy.id}/enabled", {"enabled": "0"})
    assert admin.endpoint(legacy.name).enabled is False
    assert admin.endpoint(legacy.name).body_format == "legacy_bundle"


# --- secret, rotation, on/off ------------------------------------------------------------------------------

def test_secret_is_masked_and_shown_only_on_a_post(admin):
    admin.save()
    crm = admin.endpoint("CRM")
    page = admin.get(f"/webhooks/{crm.id}")
    assert crm.secret not in page and crm.secret[:10] + "•" in page
    response = admin.post(f"/webhooks/{crm.id}/secret")
    assert response.status_code == 200 and response.headers["Cache-Control"] == "no-store"
    assert f'<code class="secret-full">{crm.secret}</code>' in admin.page_of(response)
    [event] = admin.audit("webhook.secret_revealed")
    assert (event.subject_id, event.actor) == (str(crm.id), seed.DEMO_ADMIN_LOGIN)


def test_rotation_keeps_the_old_secret_signing_for_the_grace_period(admin):
    admin.save()
    before = admin.endpoint("CRM")
    response = admin.post(f"/webhooks/{before.id}/rotate")
    assert response.status_code == 302
    after = admin.endpoint("CRM")
    assert after.secret != before.secret and after.previous_secret == before.secret
    page = admin.get(f"/webhooks/{before.id}?lang=en")
    until = after.previous_secret_until.astimezone(__import__("zoneinfo").ZoneInfo("Europe/Moscow"))
    assert any(f"The old one keeps signing until {until:%Y-%m-%d %H:%M}" in f for f in admin.flashes(page)), admin.flashes(page)
    assert "The previous secret also signs until" in page
    shown = admin.page_of(admin.post(f"/webhooks/{before.id}/secret"))
    assert after.secret in shown and before.secret in shown


def test_switching_off_and_on_and_the_automatic_switch_off_notice(admin):
    admin.save()
    crm = admin.endpoint("CRM")
    admin.post(f"/webhooks/{crm.id}/enabled", {"enabled": "0"})
    assert admin.endpoint("CRM").enabled is False
    with admin.runtime.sessions.begin() as session:
        row = session.get(WebhookEndpoint, crm.id)
        row.disabled_reason, row.consecutive_failures = "switched off after 20 deliveries in a row failed", 20
    listed = admin.get("/webhooks")
    assert "Switched off: switched off after 20 deliveries in a row failed" in listed
    assert "Отключён: switched off after 20" in admin.get(f"/webhooks/{crm.id}?lang=ru")
    admin.post(f"/webhooks/{crm.id}/enabled", {"enabled": "1"})
    again = admin.endpoint("CRM")
    assert (again.enabled, again.disabled_reason, again.consecutive_failures) == (True, "", 0)
    assert admin.post(f"/webhooks/{crm.id}/enabled", {"enabled": "maybe"}).status_code == 400


# --- test event, delivery log, redelivery --------------------------------------------------------------

def test_test_event_is_queued_delivered_by_the_worker_and_logged(admin, receiver):
    admin.save(url=receiver.base_url + "/hook")
    crm = admin.endpoint("CRM")
    response = admin.post(f"/webhooks/{crm.id}/test")
    assert response.status_code == 302 and response.headers["Location"].endswith(f"/webhooks/{crm.id}/deliveries")
    [delivery] = admin.deliveries(crm.id)
    assert delivery.state == "pending" and receiver.received == []      # nothing is sent from the web request
    page = admin.get(f"/webhooks/{crm.id}/deliveries?lang=en")
    assert any("the worker delivers it within seconds" in f for f in admin.flashes(page))
    assert "webhook.test" in page and "waiting" in page

    assert WebhookDeliverer(admin.runtime).run_once() == 1
    [(headers, body)] = receiver.received
    assert body["type"] == "webhook.test" and body["data"] == {"endpoint_id": crm.id, "requested_by": seed.DEMO_ADMIN_LOGIN}
    assert headers["Webhook-Id"] == body["id"] and headers["Webhook-Signature"].startswith("v1,")
    page = admin.get(f"/webhooks/{crm.id}/deliveries")
    row = re.search(rf'<tr class="delivery state-succeeded" data-id="{delivery.id}">.*?</tr>\s*</tbody>', page, re.S).group(0)
    assert "delivered" in row and "Attempts (1)" in row and "thanks, got 1" in row and ">200<" in row

    receiver.status = 500
    response = admin.post(f"/webhooks/deliveries/{delivery.id}/redeliver")
    assert response.status_code == 302
    assert admin.deliveries(crm.id)[0].state == "pending"
    assert admin.audit("webhook.redeliver")[0].actor == seed.DEMO_ADMIN_LOGIN
    WebhookDeliverer(admin.runtime).run_once()
    page = admin.get(f"/webhooks/{crm.id}/deliveries?lang=ru")
    assert f"Delivery #{delivery.id} queued again" in " ".join(admin.flashes(page))     # said in the language of the POST
    assert "Попытки (2)" in page and "HTTP 500" in page
    failed_only = admin.get(f"/webhooks/{crm.id}/deliveries?state=failed")
    assert f'data-id="{delivery.id}"' not in failed_only                # still retrying: pending
    assert admin.post("/webhooks/deliveries/999/redeliver").status_code == 404


def test_delivery_log_pages_from_newest_to_oldest(admin, monkeypatch):
    admin.save()
    crm = admin.endpoint("CRM")
    for _ in range(3):
        admin.post(f"/webhooks/{crm.id}/test")
    ids = [d.id for d in admin.deliveries(crm.id)]
    monkeypatch.setattr("sidecar.webhooks.views.PER_PAGE", 2)
    first = admin.get(f"/webhooks/{crm.id}/deliveries")
    assert [int(i) for i in re.findall(r'<tr class="delivery [^"]*" data-id="(\d+)"', first)] == ids[::-1][:2]
    older = html.unescape(re.search(r'<a href="([^"]+)" class="next"', first).group(1))
    assert [int(i) for i in re.findall(r'<tr class="delivery [^"]*" data-id="(\d+)"', admin.get(older))] == [ids[0]]
    assert "Ignored the parameter before=x" in admin.get(f"/webhooks/{crm.id}/deliveries?before=x")


# --- for integrators, and MemberLux's hints ------------------------------------------------------------

def test_event_types_page_shows_every_json_schema(admin):
    page = admin.get("/webhooks/events")
    for name in SCHEMAS:
        assert f'<section class="event-type" id="{name}">' in page
        assert f'"title": "{name}"' in page
    assert '"required": [' in page and "5 s, 5 min, 30 min, 2 h, 5 h, 10 h, 10 h" in page
    assert "webhook.test" in page


def test_event_types_page_opens_with_contents_and_folds_each_schema(admin):
    page = admin.get("/webhooks/events?lang=ru")
    contents = re.search(r'<nav class="toc" id="contents"[^>]*>(.*?)</nav>', page, re.S)
    assert contents, "no table of contents"
    assert re.findall(r'<a href="#([a-z_.]+)">', contents.group(1)) == list(SCHEMAS)
    assert "Выдан сертификат (автоматически или вручную)." in contents.group(1)
    sections = re.findall(r'<section class="event-type" id="([a-z_.]+)">(.*?)</section>', page, re.S)
    assert [name for name, _ in sections] == list(SCHEMAS)
    for name, section in sections:   # readable without a script: the schema folds with <details>
        assert re.search(r'<details class="schema">\s*<summary>JSON Schema тела</summary>\s*<pre class="json">', section)
        assert f'"title": "{name}"' in section and 'href="#contents"' in section
    assert "<script" not in page


def test_inbound_page_lists_the_memberlux_hints_and_what_came_of_them(admin):
    inbound.store(admin.runtime, {"type": "purchase", "email": "nobody@example.com", "key": {"term_id": "10"}})
    inbound.store(admin.runtime, {"type": "mystery", "email": "x@example.com"})
    page = admin.get("/webhooks/inbound?lang=en")
    assert page.count('<tr class="hint-row waiting"') == 2 and "nobody@example.com" in page
    assert "Йога для начинающих" in page
    inbound.process_hints(admin.runtime)
    page = admin.get("/webhooks/inbound")
    assert "not confirmed: no such user" in page and "ignored: unknown type 'mystery'" in page
    assert "не подтверждён: такого пользователя нет" in admin.get("/webhooks/inbound?lang=ru")
    with admin.runtime.sessions.begin() as session:   # a row the worker wrote before outcomes were codes
        session.execute(sa.update(InboundHint).where(InboundHint.outcome.contains("mystery"))
                        .values(outcome="ignored: unknown type 'mystery' (written by an older version)"))
    assert "ignored: unknown type 'mystery' (written by an older version)" in admin.get("/webhooks/inbound?lang=ru")
    assert 'class="hint-row waiting"' not in admin.get("/webhooks/inbound?state=processed")
    assert "hint-row" not in admin.get("/webhooks/inbound?state=waiting")
