"""Each capability emits its events in the transaction of the change, with the documented fields."""

from __future__ import annotations

from datetime import datetime, timezone

import pytest
import sqlalchemy as sa

from sidecar.store.db import unit_of_work
from sidecar.store.webhook_models import WebhookEndpoint, WebhookEvent
from sidecar.webhooks.events import SCHEMAS, emit, json_schema, listens

NOW = datetime(2026, 11, 24, 12, tzinfo=timezone.utc)


def listen(runtime, events=("*",)) -> None:
    with unit_of_work(runtime.sessions) as session:
        session.add(WebhookEndpoint(name="all", url="https://hooks.example.com/x", events=list(events),
                                    secret="whsec_MfKQ9r8GKYqrTwjUPD8ILPZIo2LaLaSw", source="ui", created_at=NOW,
                                    updated_at=NOW, consecutive_failures=0))


def events(runtime, event_type: str) -> list[WebhookEvent]:
    with runtime.sessions() as session:
        return list(session.scalars(sa.select(WebhookEvent).where(WebhookEvent.type == event_type)))


def test_every_event_type_has_a_schema_naming_its_fields():
    for event_type, fields in SCHEMAS.items():
        schema = json_schema(event_type)
        assert schema["properties"]["type"] == {"const": event_type}
        assert schema["properties"]["data"]["required"] == sorted(fields)


def test_unknown_event_types_are_a_programming_error(runtime):
    with runtime.sessions() as session, pytest.raises(ValueError, match="unknown event type"):
        emit(session, "grant.exploded", {}, NOW)


def test_nothing_is_stored_when_nobody_listens(runtime):
    with unit_of_work(runtime.sessions) as session:
        assert not listens(session, "grant.failed")
        assert emit(session, "grant.failed", {}, NOW) is None
    assert events(runtime, "grant.failed") == []


def test_grant_events_follow_the_grant(runtime):
    from sidecar.bridge.outbox import GrantDeliverer
    from sidecar.bridge.parsers import parse_grant_body
    from sidecar.bridge.auth import Principal
    from sidecar.bridge.service import BridgeService, IntakeContext

    listen(runtime)
    service = BridgeService(runtime)
    parsed = parse_grant_body({"user": {"email": "new.learner@example.com"},
                               "grant": {"term_id": 7, "duration": 1, "units": "months"},
                               "external_id": "deal-1"})
    acceptance = service.accept(parsed, IntakeContext(channel="api", principal=Principal("api_key", "test")))
    [accepted] = events(runtime, "grant.accepted")
    assert accepted.data["grant_id"] == acceptance.grant.id and set(accepted.data) == set(SCHEMAS["grant.accepted"])
    deliverer = GrantDeliverer(runtime)
    while deliverer.run_once():
        pass
    [succeeded] = events(runtime, "grant.succeeded")
    assert set(succeeded.data) == set(SCHEMAS["grant.succeeded"]) and succeeded.data["term_id"] == 7
    assert succeeded.data["date_start"] and succeeded.data["user_id"]


def test_sleeper_detected_announces_new_sleepers_only(small_site, settings_for, make_runtime):
    from sidecar.clock import FixedClock
    from sidecar.monitor.refresh import SleeperRefresher
    from sidecar.store.monitor_models import SleeperEntry

    runtime = make_runtime(settings_for(small_site), clock=FixedClock(NOW))
    listen(runtime, ["sleeper.detected"])
    refresher = SleeperRefresher(runtime)
    first = refresher.refresh_level(7)
    assert first.sleepers > 0 and events(runtime, "sleeper.detected") == []   # the first build is history
    with unit_of_work(runtime.sessions) as session:
        gone = session.scalar(sa.select(SleeperEntry).where(SleeperEntry.term_id == 7).limit(1))
        session.delete(gone)
        user_id = gone.user_id
    refresher.refresh_level(7)
    [event] = events(runtime, "sleeper.detected")
    assert event.data["user_id"] == user_id and event.data["term_id"] == 7
    assert set(event.data) == set(SCHEMAS["sleeper.detected"])


def _validator(event_type: str):
    import jsonschema

    return jsonschema.Draft202012Validator(json_schema(event_type), format_checker=jsonschema.FormatChecker())


def test_every_documented_example_body_fits_its_schema():
    import json
    import re
    from pathlib import Path

    text = (Path(__file__).resolve().parents[2] / "docs" / "webhooks.md").read_text(encoding="utf-8")
    bodies = []
    for block in re.findall(r"```json\n(.*?)```", text, re.S):
        try:
            parsed = json.loads(block)
        except ValueError:
            continue                                     # the envelope sketch with "{…}"
        if isinstance(parsed, dict) and {"id", "type", "data"} <= set(parsed):
            bodies.append(parsed)
    assert {"access.activated", "access.expired", "certificate.issued", "grant.succeeded"} <= {b["type"] for b in bodies}
    for documented in bodies:
        _validator(documented["type"]).validate(documented)


def test_the_template_examples_cover_every_event_type_and_fit_the_schemas():
    from sidecar.config import WEBHOOK_EVENTS
    from sidecar.webhooks.samples import SAMPLE_DATA, TEST_EVENT, sample_body

    assert set(SAMPLE_DATA) == {*WEBHOOK_EVENTS, TEST_EVENT} and set(SCHEMAS) == set(WEBHOOK_EVENTS)
    for event_type in WEBHOOK_EVENTS:
        _validator(event_type).validate(sample_body(event_type))
