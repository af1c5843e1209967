"""Finding 1: a read-only bearer token enrolled learners with ``grant_first`` (real course access).

Every key and token now names what it may do (``read``, ``grant``, ``enrol``). A plain string in
``web.api_tokens`` keeps meaning what docs/security.md promised: read only. A plain bridge key keeps
what it could always do (create grants and enrol); a table form names fewer or more.
"""

from __future__ import annotations

import json

import pytest
import sqlalchemy as sa

from sidecar.bootstrap import build_runtime, store_url
from sidecar.config import ConfigError, settings_from_mapping
from sidecar.store.grant_models import Grant
from sidecar.store.program_models import Enrolment
from tests.programs.support import ENGLISH, YOGA, School
from tests.stores import migrate_store
from tests.strong_secrets import strong_secret

READ_TOKEN = strong_secret("scopes-read-token")
ENROL_TOKEN = strong_secret("scopes-enrol-token")
PLAIN_KEY = strong_secret("scopes-plain-key")
GRANT_ONLY_KEY = strong_secret("scopes-grant-only-key")
ENROL_ONLY_KEY = strong_secret("scopes-enrol-only-key")


@pytest.fixture
def make_school(small_site, emulator, settings_for, admin_pages):
    made: list[School] = []

    def make(*, api_keys: dict, api_tokens: dict) -> School:
        settings = settings_for(small_site, emulator, bridge={"api_keys": api_keys}, web={"api_tokens": api_tokens})
        migrate_store(store_url(settings))
        made.append(School(build_runtime(settings), emulator, admin_pages))
        return made[-1]

    yield make
    for school in made:
        school.runtime.close()


@pytest.fixture
def old_config_school(make_school) -> School:
    """A configuration written before scopes existed: plain strings only."""
    return make_school(api_keys={"crm": PLAIN_KEY}, api_tokens={"reports": READ_TOKEN})


@pytest.fixture
def school(make_school) -> School:
    return make_school(
        api_keys={"crm": PLAIN_KEY, "shop": {"key": GRANT_ONLY_KEY, "scopes": ["grant"]},
                  "forms": {"key": ENROL_ONLY_KEY, "scopes": ["enrol"]}},
        api_tokens={"reports": READ_TOKEN, "signup": {"token": ENROL_TOKEN, "scopes": ["enrol"]}})


def enrol(school: School, program: int, user: int, headers: dict):
    return school.app.test_client().post(f"/api/v1/programs/{program}/enrolments", headers=headers,
                                         json={"user": user, "grant_first": True})


def counts(school: School) -> tuple[int, int]:
    with school.runtime.sessions() as session:
        return (session.scalar(sa.select(sa.func.count()).select_from(Enrolment)),
                session.scalar(sa.select(sa.func.count()).select_from(Grant)))


def test_a_read_token_cannot_enrol_with_grant_first(old_config_school):
    school = old_config_school
    program = school.program(YOGA, ENGLISH)
    [learner] = school.learners(1)
    answer = enrol(school, program, learner, {"Authorization": f"Bearer {READ_TOKEN}"})
    assert answer.status_code == 403, answer.json
    assert answer.json["code"] == "insufficient_scope" and answer.json["required_scope"] == "enrol"
    assert "web.api_tokens.reports" in answer.json["message"] and "'enrol'" in answer.json["message"]
    assert 'error="insufficient_scope"' in answer.headers["WWW-Authenticate"]
    assert READ_TOKEN not in answer.get_data(as_text=True)
    assert counts(school) == (0, 0)            # nobody enrolled, nothing granted
    # The bridge key of the same old configuration still enrols, as docs/security.md promised.
    assert enrol(school, program, learner, {"X-API-Key": PLAIN_KEY}).status_code == 201


def test_a_token_given_the_enrol_scope_enrols(school):
    program = school.program(YOGA, ENGLISH)
    [learner] = school.learners(1)
    answer = enrol(school, program, learner, {"Authorization": f"Bearer {ENROL_TOKEN}"})
    assert answer.status_code == 201, answer.json
    assert answer.json["grant_id"]


def test_bridge_keys_enrol_as_before_unless_their_scopes_say_otherwise(school):
    program = school.program(YOGA, ENGLISH)
    first, second, third = school.learners(3)
    assert enrol(school, program, first, {"X-API-Key": PLAIN_KEY}).status_code == 201
    assert enrol(school, program, second, {"X-API-Key": ENROL_ONLY_KEY}).status_code == 201
    refused = enrol(school, program, third, {"X-API-Key": GRANT_ONLY_KEY})
    assert refused.status_code == 403 and refused.json["code"] == "insufficient_scope"
    assert "bridge.api_keys.shop" in refused.json["message"]


def test_reading_an_enrolment_needs_read_or_enrol(school):
    program = school.program(YOGA, ENGLISH)
    [learner] = school.learners(1)
    created = enrol(school, program, learner, {"X-API-Key": PLAIN_KEY}).json
    client = school.app.test_client()
    for headers, status in (({"Authorization": f"Bearer {READ_TOKEN}"}, 200),
                            ({"Authorization": f"Bearer {ENROL_TOKEN}"}, 200),
                            ({"X-API-Key": ENROL_ONLY_KEY}, 200),
                            ({"X-API-Key": GRANT_ONLY_KEY}, 403)):
        assert client.get(created["status_url"], headers=headers).status_code == status, headers


def test_grants_need_the_grant_scope(school):
    client = school.app.test_client()
    body = json.dumps({"email": "scoped@example.org", "key": {"term_id": ENGLISH, "duration": 1, "units": "months"}})
    refused = client.post("/api/v1/grants", data=body, content_type="application/json",
                          headers={"X-API-Key": ENROL_ONLY_KEY})
    assert refused.status_code == 403 and refused.json["code"] == "insufficient_scope"
    assert counts(school) == (0, 0)
    accepted = client.post("/api/v1/grants", data=body, content_type="application/json",
                           headers={"X-API-Key": GRANT_ONLY_KEY})
    assert accepted.status_code == 202, accepted.json


def test_only_the_read_scope_reads_sleepers_and_metrics(school):
    client = school.app.test_client()
    assert client.get("/api/v1/sleepers", headers={"Authorization": f"Bearer {READ_TOKEN}"}).status_code == 200
    denied = client.get("/api/v1/sleepers", headers={"Authorization": f"Bearer {ENROL_TOKEN}"})
    assert denied.status_code == 403 and denied.json["code"] == "insufficient_scope"
    assert client.get("/metrics", headers={"Authorization": f"Bearer {READ_TOKEN}"}).status_code == 200
    assert client.get("/metrics", headers={"Authorization": f"Bearer {ENROL_TOKEN}"}).status_code == 403


MINIMAL = {"wordpress": {"db_url": "sqlite:///site.sqlite"}, "memberlux": {"rest_base_url": "https://s.example/wp-json"}}


def test_scopes_are_explicit_and_plain_entries_keep_their_old_meaning():
    settings = settings_from_mapping({**MINIMAL, "web": {"api_tokens": {"reports": READ_TOKEN}},
                                      "bridge": {"api_keys": {"crm": PLAIN_KEY}}}, environ={})
    assert settings.web.api_tokens["reports"].scopes == {"read"}
    assert settings.bridge.api_keys["crm"].scopes == {"grant", "enrol"}
    from_env = settings_from_mapping(MINIMAL, environ={"MLS_WEB__API_TOKENS__SIGNUP__TOKEN": ENROL_TOKEN,
                                                       "MLS_WEB__API_TOKENS__SIGNUP__SCOPES": '["read", "enrol"]'})
    assert from_env.web.api_tokens["signup"].scopes == {"read", "enrol"}


@pytest.mark.parametrize("section, entry, expected", [
    ("web", {"api_tokens": {"t": {"token": READ_TOKEN, "scopes": ["grant"]}}}, "unknown scope(s) grant"),
    ("web", {"api_tokens": {"t": {"token": READ_TOKEN, "scopes": []}}}, "scopes must be a non-empty list"),
    ("web", {"api_tokens": {"t": {"scopes": ["read"]}}}, "'token' is missing"),
    ("bridge", {"api_keys": {"k": {"key": PLAIN_KEY, "scopes": ["read"]}}}, "unknown scope(s) read"),
])
def test_a_wrong_scope_is_refused_naming_the_credential(section, entry, expected):
    with pytest.raises(ConfigError) as caught:
        settings_from_mapping({**MINIMAL, section: entry}, environ={})
    [line] = caught.value.problems
    assert expected in line and ("'t'" in line or "'k'" in line)


def test_both_values_of_a_rotated_key_are_masked_in_logs():
    from sidecar.logs import configured_secrets

    old = strong_secret("rotated-old-key")
    settings = settings_from_mapping({**MINIMAL, "bridge": {"api_keys": {"crm": {"key": PLAIN_KEY, "previous_key": old}}}},
                                     environ={})
    assert {PLAIN_KEY, old} <= set(configured_secrets(settings))
