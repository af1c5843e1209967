"""MemberLux's own webhooks as hints: /hooks/memberlux/<token> stores them once and answers at once;
the worker confirms each in the database before acting (core.md §6)."""

from __future__ import annotations

import json

import pytest
import sqlalchemy as sa

from sidecar.app import create_app
from sidecar.domain.messages import from_stored
from sidecar.domain.programs import Step
from sidecar.programs.catalog import ProgramCatalog, ProgramDefinition
from sidecar.store.monitor_models import SleeperHint, SleeperRefresh
from sidecar.store.program_models import Enrolment
from sidecar.store.webhook_models import InboundHint
from sidecar.webhooks.inbound import KNOWN_TYPES, process_hints

TOKEN = "hook-token-not-for-production-123"


def payload(kind: str, email: str, term_id: str = "7", **key) -> dict:
    """A payload shaped like core.md §6.4; registration-path sources carry the nonsense dates."""
    registration = kind in ("free_registration_form", "auto_registration")
    return {
        "type": kind, "email": email, "first_name": "Анна", "last_name": "Иванова", "patronymic": "", "phone": "",
        **{f"custom{n}": "" for n in range(1, 11)}, "custom1textarea": "",
        "key": {"term_id": term_id, "name": "Английский с нуля", "is_unlimited": 0, "duration": "1", "units": "months",
                "date_start": "30-11--0001" if registration else "24-11-2026",
                "date_end": "30-11--0001" if registration else "24-12-2026", **key},
    }


@pytest.fixture
def site(small_site, emulator, settings_for, make_runtime):
    runtime = make_runtime(settings_for(small_site, emulator, webhooks={"memberlux_path_token": TOKEN}))
    return runtime, create_app(runtime, testing=True).test_client()


def learner_with_key(runtime, term_id: int = 7):
    for user_id in range(2, 61):
        user = runtime.reader.user(user_id)
        if user and any((r.status or "new") != "new" for r in runtime.reader.key_rows(user_id, [term_id])):
            return user
    raise AssertionError("no learner with a key")


def hints(runtime) -> list[InboundHint]:
    with runtime.sessions() as session:
        return list(session.scalars(sa.select(InboundHint).order_by(InboundHint.id)))


@pytest.mark.parametrize("kind", KNOWN_TYPES)
def test_every_memberlux_action_type_is_accepted_and_confirmed(site, kind):
    runtime, client = site
    user = learner_with_key(runtime)
    answer = client.post(f"/hooks/memberlux/{TOKEN}", data=json.dumps(payload(kind, user.email)),
                         content_type="application/json")
    assert answer.status_code == 202 and answer.json["duplicate"] is False
    counts = process_hints(runtime)
    assert counts["confirmed"] == 1
    [hint] = hints(runtime)
    assert hint.type == kind and hint.term_id == 7 and str(from_stored(hint.outcome)).startswith(f"confirmed: user {user.id}, level 7")


def test_the_same_payload_is_stored_once(site):
    runtime, client = site
    body = json.dumps(payload("activation_page", "x@example.com"))
    first = client.post(f"/hooks/memberlux/{TOKEN}", data=body, content_type="application/json")
    again = client.post(f"/hooks/memberlux/{TOKEN}", data=body, content_type="application/json")
    assert again.status_code == 202 and again.json == {"hint_id": first.json["hint_id"], "duplicate": True}
    assert len(hints(runtime)) == 1


def test_a_forged_or_unknown_payload_is_a_hint_that_confirms_nothing(site):
    runtime, client = site
    client.post(f"/hooks/memberlux/{TOKEN}", json=payload("activation_page", "nobody@example.com"))
    client.post(f"/hooks/memberlux/{TOKEN}", json=payload("something_new", "nobody@example.com"))
    user = runtime.reader.user(2)
    client.post(f"/hooks/memberlux/{TOKEN}", json=payload("activation_page", user.email, term_id="9999"))
    counts = process_hints(runtime)
    assert counts == {"hints": 3, "confirmed": 0, "unconfirmed": 2, "ignored": 1, "enrolled": 0}
    outcomes = [str(from_stored(h.outcome)) for h in hints(runtime)]
    assert outcomes[0] == "unconfirmed: no such user" and outcomes[1].startswith("ignored: unknown type")
    assert "has no activated key of level 9999" in outcomes[2]


def test_wrong_token_bad_json_and_size_are_answered_clearly(site):
    runtime, client = site
    assert client.post("/hooks/memberlux/wrong", json={}).status_code == 404
    bad = client.post(f"/hooks/memberlux/{TOKEN}", data=b"{not json", content_type="application/json")
    assert bad.status_code == 400 and bad.json["error"] == "invalid_json"
    assert client.post(f"/hooks/memberlux/{TOKEN}", json=[1, 2]).json["error"] == "invalid_payload"
    big = client.post(f"/hooks/memberlux/{TOKEN}", data=b"{" + b" " * 70_000 + b"}", content_type="application/json")
    assert big.status_code == 413
    assert hints(runtime) == []


def test_without_a_configured_token_the_route_does_not_exist(small_site, emulator, settings_for, make_runtime):
    client = create_app(make_runtime(settings_for(small_site, emulator)), testing=True).test_client()
    assert client.post("/hooks/memberlux/anything", json={}).status_code == 404


def test_a_confirmed_activation_enrols_hints_the_sleepers_scan_and_polls(site):
    runtime, client = site
    user = learner_with_key(runtime)
    program = ProgramCatalog(runtime).create(ProgramDefinition(
        name="P", steps=(Step(7, 1, "months"), Step(10, 1, "months")), enrol_on_first_level=True), actor="test").id
    from sidecar.monitor.refresh import SleeperRefresher

    SleeperRefresher(runtime).refresh_level(7)
    client.post(f"/hooks/memberlux/{TOKEN}", json=payload("purchase", user.email))
    counts = process_hints(runtime)
    assert counts["enrolled"] == 1
    with runtime.sessions() as session:
        enrolment = session.scalar(sa.select(Enrolment))
        assert (enrolment.program_id, enrolment.user_id, enrolment.source) == (program, user.id, "first_level")
        assert session.get(SleeperRefresh, 7) is not None   # the level's record stays ...
        hinted = set(session.scalars(sa.select(SleeperHint.user_id)))
    assert hinted == {user.id}                                # ... its learner is evaluated at the next scan
    assert process_hints(runtime)["hints"] == 0              # processed once
