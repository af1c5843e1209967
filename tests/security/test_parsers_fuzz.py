"""Every parser of outside input, fed arbitrary data: it answers with its own clear error or a value,
never with an unexpected exception (which would be a 500 at the HTTP edge)."""

from __future__ import annotations

import json

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from sidecar.bridge.amocrm import AmoPayloadError, extract_lead_event
from sidecar.bridge.parsers import PayloadError, decode_body, parse_grant_body
from sidecar.domain.grants import validate_grant
from sidecar.memberlux.wpdata import WpDataError, maybe_unserialize, php_unserialize
from sidecar.webhooks.inbound import HintRejected, parse

FUZZ = settings(max_examples=400, deadline=None, suppress_health_check=[HealthCheck.too_slow])

json_values = st.recursive(
    st.none() | st.booleans() | st.integers(-2**63, 2**63) | st.floats(allow_nan=False) | st.text(max_size=40),
    lambda children: st.lists(children, max_size=5) | st.dictionaries(st.text(max_size=12), children, max_size=6),
    max_leaves=30)
grant_like = st.fixed_dictionaries({}, optional={
    "email": json_values, "key": st.dictionaries(st.sampled_from(["term_id", "duration", "units"]), json_values),
    "user": st.dictionaries(st.sampled_from(["email", "first_name", "last_name", "phone"]), json_values),
    "grant": st.dictionaries(st.sampled_from(["term_id", "duration", "units", "level"]), json_values),
    "external_id": json_values, "source": json_values, "meta": json_values,
})
content_types = st.sampled_from([None, "application/json", "application/x-www-form-urlencoded", "text/plain",
                                 "application/json; charset=utf-8", "multipart/form-data; boundary=x"])


@FUZZ
@given(body=st.binary(max_size=300), content_type=content_types)
def test_request_bodies_decode_or_are_refused_clearly(body, content_type):
    try:
        decoded = decode_body(body, content_type)
    except PayloadError as exc:
        assert 400 <= exc.status < 500
        return
    assert isinstance(decoded, dict)


@pytest.mark.slow
@FUZZ
@given(data=st.one_of(grant_like, st.dictionaries(st.text(max_size=10), json_values, max_size=6)))
def test_grant_payloads_parse_and_validate_or_name_the_problem(data):
    try:
        parsed = parse_grant_body(data)
    except PayloadError as exc:
        assert 400 <= exc.status < 500 and exc.code
        return
    spec, errors = validate_grant(parsed.raw)
    assert (spec is None) == bool(errors)
    for error in errors:
        assert error.field and error.code


@pytest.mark.slow
@FUZZ
@given(data=st.dictionaries(st.text(max_size=30), json_values, max_size=8))
def test_amocrm_payloads_yield_a_lead_or_a_clear_refusal(data):
    try:
        event = extract_lead_event(data)
    except AmoPayloadError as exc:
        assert str(exc)
        return
    assert isinstance(event.lead_id, int)


@FUZZ
@given(body=st.one_of(st.binary(max_size=200), json_values.map(lambda v: json.dumps(v).encode())))
def test_memberlux_hook_bodies_are_a_payload_or_a_clear_refusal(body):
    try:
        payload = parse(body)
    except HintRejected as exc:
        assert exc.status in (400, 413) and exc.code
        return
    assert isinstance(payload, dict)


@FUZZ
@given(text=st.one_of(st.text(max_size=120), st.from_regex(r"[aisbdN]:[0-9]{0,3}[:;{][^\n]{0,40}", fullmatch=True)))
def test_php_serialized_values_decode_or_raise_their_own_error(text):
    try:
        php_unserialize(text)
    except WpDataError:
        pass
    maybe_unserialize(text)  # the lenient reader never raises
