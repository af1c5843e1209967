"""Body templates: a JSON document whose strings are sandboxed Jinja2 templates of the event. Event values
land as JSON values, never as code; a template that cannot serve the endpoint's events is refused on save."""

from __future__ import annotations

import json
import re
import tomllib
from pathlib import Path

import pytest
import sqlalchemy as sa
from standardwebhooks.webhooks import Webhook

from sidecar.config import ConfigError, settings_from_mapping
from sidecar.store.webhook_models import WebhookAttempt, WebhookEndpoint
from sidecar.webhooks import endpoints as endpoint_store
from sidecar.webhooks.delivery import WebhookDeliverer, without_url_path
from sidecar.webhooks.samples import SAMPLE_DATA, TEST_EVENT, sample_body
from sidecar.webhooks.templates import MAX_BODY, MAX_TEMPLATE, BodyTemplateError, check, parse, render
from tests.webhooks.support import endpoint, fire

DOCS = Path(__file__).resolve().parents[2] / "docs" / "webhooks.md"


def activated(**data) -> dict:
    body = sample_body("access.activated")
    return {**body, "data": {**body["data"], **data}}


def rendered(template: str, event: dict | None = None):
    return json.loads(render(template, event or activated()))


# --- what a template makes ---------------------------------------------------------------------------

def test_strings_are_rendered_and_everything_else_is_sent_as_written():
    body = rendered('{"chat_id": -100123, "silent": true, "extra": null, "n": 1.5,'
                    ' "text": "{{ data.email }} → {{ data.level_name }} ({{ event.type }})"}')
    assert body == {"chat_id": -100123, "silent": True, "extra": None, "n": 1.5,
                    "text": "learner@example.com → Английский с нуля (access.activated)"}


def test_a_string_that_is_one_expression_keeps_the_value_s_json_type():
    body = rendered('{"user": "{{ data.user_id }}", "end": "{{ data.date_end }}", "unlimited": "{{ data.is_unlimited }}",'
                    ' "whole": "{{ data }}", "as_text": "id {{ data.user_id }}", "list": ["{{ data.key_id }}", 7]}',
                    activated(date_end=None))
    assert body["user"] == 4711 and body["end"] is None and body["unlimited"] is False
    assert body["whole"]["key_id"] == 388120 and body["as_text"] == "id 4711" and body["list"] == [388120, 7]


def test_an_array_document_is_a_body_too():
    assert rendered('[{"note_type": "common", "params": {"text": "{{ data.email }}"}}]') == [
        {"note_type": "common", "params": {"text": "learner@example.com"}}]


@pytest.mark.parametrize("email", [
    'a", "chat_id": "666',                 # would end the string and add a key if pasted into JSON text
    "x\\\"}], \"admin\": true, \"y\": [{\"", # backslashes and brackets
    "line\nbreak\t\u2028",                  # control characters and a JS line separator
    "{{ 7 * 7 }} {% if true %}x{% endif %}",  # template syntax inside a value is not evaluated again
    "</script><b>&amp;",
])
def test_event_values_cannot_change_the_body_s_shape(email):
    event = activated(email=email, level_name=email)
    body = rendered('{"chat_id": 1, "text": "{{ data.email }}", "raw": "{{ data.level_name }}"}', event)
    assert body == {"chat_id": 1, "text": email, "raw": email}


def test_the_sandbox_keeps_templates_away_from_the_process():
    for source in ('{"t": "{{ data.__class__.__mro__ }}"}', '{"t": "{{ \'\'.__class__.__subclasses__() }}"}',
                   '{"t": "{{ event.update({\'x\': 1}) }}"}', '{"t": "{% for i in range(10**7) %}x{% endfor %}"}'):
        with pytest.raises(BodyTemplateError):
            render(source, activated())


def test_a_missing_field_is_an_error_unless_given_a_default():
    with pytest.raises(BodyTemplateError, match=r"\$\.text: .*nope"):
        render('{"text": "{{ data.nope }}"}', activated())
    with pytest.raises(BodyTemplateError, match=r"\$\.v"):
        render('{"v": "{{ data.nope }}"}', activated())
    assert rendered('{"text": "{{ data.nope | default(\'-\') }}"}') == {"text": "-"}


@pytest.mark.parametrize(("source", "reason"), [
    ("", "not a JSON document"),
    ("{'single': 'quotes'}", "not a JSON document"),
    ('"just a string"', "JSON object or array"),
    ("42", "JSON object or array"),
    ('{"text": "{{ data.email "}', r"\$\.text: .*"),
    ('{"a": [{"b": "{% if %}"}]}', r"\$\.a\[0\]\.b: "),
    ("[" + " " * MAX_TEMPLATE + "]", f"at most {MAX_TEMPLATE} characters"),
])
def test_what_is_not_a_template_is_refused_with_the_reason(source, reason):
    with pytest.raises(BodyTemplateError, match=reason):
        parse(source)


def test_values_that_are_not_json_and_oversized_bodies_are_refused():
    with pytest.raises(BodyTemplateError, match="cannot be sent as JSON"):
        render('{"r": "{{ range(3) }}"}', activated())
    with pytest.raises(BodyTemplateError, match="exceeds"):
        render('{"t": "{{ \'x\' * 70000 }}"}', activated())
    assert len(render('{"t": "{{ \'x\' * 60000 }}"}', activated())) < MAX_BODY


def test_a_template_is_tried_on_every_event_type_the_endpoint_receives():
    email_or_test = '{"text": "{% if event.type == \'webhook.test\' %}test{% else %}{{ data.email }}{% endif %}"}'
    check(email_or_test, ["access.activated", "access.expired", "certificate.issued", "grant.failed"])
    with pytest.raises(BodyTemplateError, match="with a program.step_granted event"):
        check(email_or_test, ["access.activated", "program.step_granted"])
    with pytest.raises(BodyTemplateError, match="with a (grant|program|reminder)"):
        check(email_or_test, ["*"])
    check('{"text": "{{ data.email | default(event.type) }}"}', ["*"])
    assert set(SAMPLE_DATA) >= {"access.activated", "access.expired", "certificate.issued"}


@pytest.mark.parametrize("events", [["access.activated"], ["certificate.issued", "grant.failed"], ["sleeper.detected"]])
def test_a_template_is_tried_on_the_test_event_too_which_every_endpoint_receives(events):
    # «send test event» reaches the endpoint whatever its filter, and its data has no e-mail
    with pytest.raises(BodyTemplateError, match=r"with a webhook\.test event: \$\.text: .*email"):
        check('{"text": "{{ data.email }}"}', events)
    check('{"text": "{{ data.email | default(event.type) }}"}', events)


# --- the documented Telegram example ----------------------------------------------------------------------

def _documented_endpoint() -> dict:
    blocks = re.findall(r"```toml\n(.*?)```", DOCS.read_text(encoding="utf-8"), re.S)
    [telegram] = [tomllib.loads(b) for b in blocks if 'name = "telegram"' in b]
    return telegram["webhooks"]["endpoints"][0]


def test_the_documented_telegram_endpoint_is_valid_configuration_and_renders_each_of_its_events():
    conf = _documented_endpoint()
    settings = settings_from_mapping({"wordpress": {"db_url": "sqlite:///x"},
                                      "memberlux": {"rest_base_url": "https://s.example/wp-json", "rest_user": "u",
                                                    "rest_password": "p"},
                                      "webhooks": {"endpoints": [conf]}}, environ={})
    [parsed] = settings.webhooks.endpoints
    check(parsed.body_template, parsed.events)
    texts = {}
    for event_type in [*parsed.events, TEST_EVENT]:
        body = json.loads(render(parsed.body_template, sample_body(event_type)))
        assert body["chat_id"] == -1001234567890 and body["disable_web_page_preview"] is True
        texts[event_type] = body["text"]
    assert texts[TEST_EVENT] == "🔔 webhook.test"
    assert texts["access.activated"] == "🔓 learner@example.com: доступ к «Английский с нуля» до 2027-05-24 (activation_page)"
    assert texts["access.expired"].startswith("⌛ learner@example.com: доступ к «Английский с нуля» закончился 2026-11-25")
    assert texts["certificate.issued"] == "🎓 learner@example.com: сертификат «Business English» (manual)"


def test_a_configuration_file_endpoint_with_a_broken_template_is_refused_naming_the_key():
    conf = {**_documented_endpoint(), "body_template": '{"text": "{{ data.user_id }"}'}
    with pytest.raises(ConfigError) as error:
        settings_from_mapping({"wordpress": {"db_url": "sqlite:///x"},
                               "memberlux": {"rest_base_url": "https://s.example/wp-json", "rest_user": "u",
                                             "rest_password": "p"},
                               "webhooks": {"endpoints": [conf]}}, environ={})
    assert "webhooks.endpoints" in str(error.value) and "body_template: $.text" in str(error.value)


def test_a_configuration_file_endpoint_whose_template_fails_the_test_event_is_refused():
    conf = {**_documented_endpoint(), "body_template": '{"text": "{{ data.email }}"}'}
    with pytest.raises(ConfigError) as error:
        settings_from_mapping({"wordpress": {"db_url": "sqlite:///x"},
                               "memberlux": {"rest_base_url": "https://s.example/wp-json", "rest_user": "u",
                                             "rest_password": "p"},
                               "webhooks": {"endpoints": [conf]}}, environ={})
    assert "body_template: with a webhook.test event: $.text" in str(error.value)


# --- endpoints and delivery -----------------------------------------------------------------------------------

@pytest.fixture
def hooks(small_site, settings_for, make_runtime):
    return make_runtime(settings_for(small_site, webhooks={"allow_private_destinations": ["127.0.0.1"]}))


def test_a_template_endpoint_gets_its_body_signed_like_any_other(hooks, receiver):
    endpoint(hooks, receiver.url, body_format="template",
             body_template='{"chat_id": 5, "text": "{{ event.type }}: {{ data.email }} / {{ data.error }}"}')
    event_id = fire(hooks, data={"grant_id": "g1", "channel": "api", "external_id": None, "email": 'a"b@example.com',
                                 "term_id": 7, "error": "no product"})
    assert WebhookDeliverer(hooks).run_once() == 1
    [(headers, raw)] = receiver.received
    assert json.loads(raw) == {"chat_id": 5, "text": 'grant.failed: a"b@example.com / no product'}
    Webhook("whsec_MfKQ9r8GKYqrTwjUPD8ILPZIo2LaLaSw").verify(raw, {k.lower(): v for k, v in headers.items()})
    assert headers["Webhook-Id"] == event_id


def test_a_template_that_fails_at_delivery_is_a_failed_attempt_with_the_reason(hooks, receiver):
    endpoint(hooks, receiver.url, body_format="template", body_template='{"text": "{{ data.user_id }}"}')
    fire(hooks)
    WebhookDeliverer(hooks).run_once()
    assert receiver.received == []
    with hooks.sessions() as session:
        [attempt] = session.scalars(sa.select(WebhookAttempt)).all()
    assert "BodyTemplateError" in attempt.error and "user_id" in attempt.error


def test_errors_never_show_a_token_carried_in_the_url():
    url = "https://api.telegram.org/bot123456:AAsecret/sendMessage?key=s3cr3t"
    error = ("ConnectionError: HTTPSConnectionPool(host='api.telegram.org', port=443): Max retries exceeded with "
             "url: /bot123456:AAsecret/sendMessage?key=s3cr3t (Caused by …)")
    cleaned = without_url_path(error, url)
    assert "AAsecret" not in cleaned and "s3cr3t" not in cleaned and "api.telegram.org" in cleaned
    assert without_url_path("HTTP 500", "https://h.example/") == "HTTP 500"


def test_saving_in_the_ui_stores_the_template_or_refuses_it_with_the_reason(hooks):
    # A public address literal: the form's URL check resolves names, and tests have no DNS.
    template = '{"text": "{{ data.email | default(event.type) }}"}'
    form = endpoint_store.EndpointForm(name="tg", url="https://93.184.215.14/bot123:AAx/sendMessage",
                                       events=("access.activated",), body_template=template)
    saved = endpoint_store.save(hooks, form, "admin")
    assert (saved.body_format, saved.body_template) == ("template", template)
    again = endpoint_store.save(hooks, endpoint_store.EndpointForm(name="tg", url=form.url, events=form.events),
                                "admin", saved.id)
    assert (again.body_format, again.body_template) == ("standard", "")
    with pytest.raises(endpoint_store.EndpointRejected) as refused:
        endpoint_store.save(hooks, endpoint_store.EndpointForm(name="tg2", url=form.url, events=("program.completed",),
                                                              body_template='{"text": "{{ data.email }}"}'), "admin")
    assert set(refused.value.errors) == {"body_template"}
    assert "with a program.completed event" in refused.value.errors["body_template"]
    with pytest.raises(endpoint_store.EndpointRejected) as refused:   # its test event would fail at delivery
        endpoint_store.save(hooks, endpoint_store.EndpointForm(name="tg3", url=form.url, events=("access.activated",),
                                                              body_template='{"text": "{{ data.email }}"}'), "admin")
    assert refused.value.errors["body_template"].startswith("with a webhook.test event: $.text: ")


def test_the_file_s_endpoints_carry_their_template_into_the_store(small_site, settings_for, make_runtime):
    conf = {"name": "tg", "url": "https://api.telegram.org/botX/sendMessage", "events": ["access.expired"],
            "body_template": '  {"text": "{{ data.email | default(\'\') }}"}  '}
    runtime = make_runtime(settings_for(small_site, webhooks={"endpoints": [conf]}))
    endpoint_store.sync_config(runtime)
    with runtime.sessions() as session:
        row = session.scalar(sa.select(WebhookEndpoint).where(WebhookEndpoint.name == "tg"))
    assert (row.body_format, row.body_template) == ("template", '{"text": "{{ data.email | default(\'\') }}"}')
