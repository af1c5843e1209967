"""Specification of what a valid grant request is (legacy-plugins.md 1.4, 1.11 item 7, 4.3) and how request
bodies are read (JSON, PHP-style forms), independent of HTTP and of the site."""

from __future__ import annotations

import json

import pytest

from sidecar.bridge.parsers import PayloadError, decode_body, parse_grant_body, php_form
from sidecar.domain.grants import GrantSpec, RawGrant, normalize_units, validate_grant

LEGACY_NAMES = {"term_id": "key.term_id", "duration": "key.duration", "units": "key.units"}
BRIEF_NAMES = {"email": "user.email", "term_id": "grant.term_id", "duration": "grant.duration",
               "units": "grant.units"}


def raw(**values) -> RawGrant:
    base = {"email": "learner@example.org", "term_id": 7, "duration": 1, "units": "months"}
    base.update(values)
    return RawGrant(**base)


def ok(**values) -> GrantSpec:
    spec, errors = validate_grant(raw(**values))
    assert errors == [], errors
    assert spec is not None
    return spec


def codes(**values) -> dict[str, str]:
    spec, errors = validate_grant(raw(**values))
    assert spec is None
    return {e.field: e.code for e in errors}


# --- units ----------------------------------------------------------------------------------------------

@pytest.mark.parametrize("word", ["day", "days", "d", "день", "дня", "дней", "дн", "дн.", "сутки", "суток"])
def test_day_words_mean_days(word):
    assert normalize_units(word) == ("days", 1)


@pytest.mark.parametrize("word", ["month", "months", "m", "mon", "месяц", "месяца", "месяцев", "мес", "мес."])
def test_month_words_mean_months(word):
    assert normalize_units(word) == ("months", 1)


@pytest.mark.parametrize("word", ["year", "years", "y", "год", "года", "лет", "г", "г."])
def test_year_words_mean_twelve_months(word):
    assert normalize_units(word) == ("months", 12)


@pytest.mark.parametrize("word", [" Days ", "МЕСЯЦЕВ", "Год", "\tmonth\n"])
def test_units_ignore_case_and_surrounding_space(word):
    assert normalize_units(word) is not None


@pytest.mark.parametrize("word", ["week", "weeks", "недель", "минут", "hours", "", "   ", "6 мес", "monthly"])
def test_unknown_units_words_are_not_guessed(word):
    assert normalize_units(word) is None


@pytest.mark.parametrize("value", [None, 30, 1.0, ["days"], {"units": "days"}])
def test_units_must_be_text(value):
    assert normalize_units(value) is None


def test_singular_day_is_days_not_months():
    # The legacy plugin stored anything but exactly "days" as months (defect 7).
    spec = ok(units="day", duration=30)
    assert (spec.units, spec.duration) == ("days", 30)


@pytest.mark.parametrize("units,duration,months", [("год", 1, 12), ("лет", 2, 24), ("years", 10, 120), ("г.", 3, 36)])
def test_years_become_months(units, duration, months):
    spec = ok(units=units, duration=duration)
    assert (spec.units, spec.duration) == ("months", months)


def test_missing_units_default_to_months():
    assert ok(units=None).units == "months"
    assert ok(units="").units == "months"


def test_unknown_units_are_an_error_in_the_senders_name():
    assert codes(units="weeks") == {"units": "invalid_units"}
    spec, errors = validate_grant(raw(units="weeks", field_names=LEGACY_NAMES))
    assert [(e.field, e.code) for e in errors] == [("key.units", "invalid_units")]


# --- duration ---------------------------------------------------------------------------------------------

@pytest.mark.parametrize("value,expected", [(1, 1), ("6", 6), (" 12 ", 12), ("+3", 3), (6.0, 6)])
def test_whole_number_durations_are_accepted(value, expected):
    assert ok(duration=value).duration == expected


@pytest.mark.parametrize("value", [0, -1, "0", -30])
def test_zero_or_negative_duration_is_refused(value):
    assert codes(duration=value) == {"duration": "invalid_duration"}


@pytest.mark.parametrize("value", ["6 мес", "шесть", "1.5", 1.5, "6.0", True, [6], {"n": 6}, "-2"])
def test_non_integer_duration_is_refused(value):
    assert codes(duration=value) == {"duration": "invalid_duration"}


@pytest.mark.parametrize("value", [None, ""])
def test_duration_is_required(value):
    assert codes(duration=value) == {"duration": "required"}


@pytest.mark.parametrize("units,duration", [("days", 3660), ("months", 120), ("years", 10)])
def test_ten_years_is_the_longest_grant(units, duration):
    assert ok(units=units, duration=duration)


@pytest.mark.parametrize("units,duration", [("days", 3661), ("months", 121), ("years", 11), ("лет", 100),
                                            ("months", "99999999999999999999")])
def test_absurd_durations_are_refused(units, duration):
    assert codes(units=units, duration=duration) == {"duration": "invalid_duration"}


# --- e-mail -------------------------------------------------------------------------------------------------

def test_email_is_trimmed_and_its_domain_lower_cased():
    assert ok(email="  Maria.Ivanova@Example.ORG \n").email == "Maria.Ivanova@example.org"


@pytest.mark.parametrize("email", ["a@b.co", "first.last+tag@mail.example.com", "o'brien@example.ie",
                                   "x_y-z@sub-domain.example.org"])
def test_ordinary_addresses_are_accepted(email):
    assert ok(email=email).email == email


def test_local_part_of_sixty_characters_is_accepted_sixty_one_is_not():
    assert ok(email="a" * 60 + "@example.org")
    # MemberLux cannot create the login and would grant to the API user instead (core.md 5.4).
    assert codes(email="a" * 61 + "@example.org") == {"email": "invalid_email"}


def test_address_of_one_hundred_characters_is_accepted_longer_is_not():
    domain = "@" + "d" * 50 + ".example.org"           # 63 characters
    assert ok(email="a" * (100 - len(domain)) + domain)
    assert codes(email="a" * (101 - len(domain)) + domain) == {"email": "invalid_email"}


@pytest.mark.parametrize("email", ["learner.example.org", "learner@", "@example.org", "learner@localhost",
                                   "two words@example.org", "learner@exa mple.org", "learner@@example.org",
                                   "a..b@example.org", "learner@-example.org", "ученик@пример.рф",
                                   "learner@example.org,other@example.org"])
def test_malformed_addresses_are_refused(email):
    assert codes(email=email) == {"email": "invalid_email"}


@pytest.mark.parametrize("email", [None, ""])
def test_email_is_required(email):
    assert codes(email=email) == {"email": "required"}


@pytest.mark.parametrize("email", [42, ["a@example.org"], {"email": "a@example.org"}])
def test_email_must_be_text(email):
    assert codes(email=email) == {"email": "invalid_email"}


# --- term_id ------------------------------------------------------------------------------------------------

@pytest.mark.parametrize("value,expected", [(7, 7), ("7", 7), (" 157 ", 157), (7.0, 7)])
def test_term_id_is_a_positive_integer(value, expected):
    assert ok(term_id=value).term_id == expected


@pytest.mark.parametrize("value", [0, -7, "0", "abc", "7a", 7.5, True, [7], {"id": 7}])
def test_zero_negative_or_non_integer_term_id_is_refused(value):
    # Legacy: (int) cast, 0 accepted, orphan keys (defect 7).
    assert codes(term_id=value) == {"term_id": "invalid_level"}


@pytest.mark.parametrize("value", [None, ""])
def test_term_id_is_required(value):
    assert codes(term_id=value) == {"term_id": "required"}


# --- all errors at once, in the sender's names ----------------------------------------------------------------

def test_every_invalid_field_is_reported_at_once():
    spec, errors = validate_grant(RawGrant(email="nope", term_id=0, duration=-1, units="weeks"))
    assert spec is None
    assert {e.field: e.code for e in errors} == {"email": "invalid_email", "term_id": "invalid_level",
                                                "duration": "invalid_duration", "units": "invalid_units"}
    assert all(e.message for e in errors)


def test_legacy_field_names_in_errors():
    spec, errors = validate_grant(RawGrant(email="", term_id=None, duration=0, units="x", field_names=LEGACY_NAMES))
    assert {e.field: e.code for e in errors} == {"email": "required", "key.term_id": "required",
                                                "key.duration": "invalid_duration", "key.units": "invalid_units"}


def test_brief_field_names_in_errors():
    spec, errors = validate_grant(RawGrant(email="x", term_id="y", duration=None, units="z", field_names=BRIEF_NAMES))
    assert {e.field: e.code for e in errors} == {"user.email": "invalid_email", "grant.term_id": "invalid_level",
                                                "grant.duration": "required", "grant.units": "invalid_units"}


def test_names_are_kept_trimmed_and_capped():
    spec = ok(first_name="  Мария \n", last_name="Иванова  Петрова", patronymic=None, phone="+7 900 000-00-00")
    assert (spec.first_name, spec.last_name, spec.patronymic, spec.phone) == (
        "Мария", "Иванова Петрова", "", "+7 900 000-00-00")
    assert len(ok(first_name="я" * 300).first_name) == 100
    assert len(ok(phone="1" * 100).phone) == 40


def test_fingerprint_is_equal_for_equal_grants_and_differs_otherwise():
    assert ok(units="месяц", duration="1").fingerprint() == ok(units="months", duration=1).fingerprint()
    assert ok(units="год").fingerprint() == ok(units="months", duration=12).fingerprint()
    assert ok(duration=1).fingerprint() != ok(duration=3).fingerprint()
    assert ok(first_name="A").fingerprint() != ok(first_name="B").fingerprint()


# --- PHP-style forms ------------------------------------------------------------------------------------------

def test_php_form_nests_bracketed_names():
    form = php_form([("email", "a@example.org"), ("key[term_id]", "7"), ("key[duration]", "6"),
                     ("key[units]", "months"), ("meta[amo][lead]", "5")])
    assert form == {"email": "a@example.org", "key": {"term_id": "7", "duration": "6", "units": "months"},
                    "meta": {"amo": {"lead": "5"}}}


def test_php_form_appends_empty_brackets_under_integer_keys():
    assert php_form([("tags[]", "a"), ("tags[]", "b"), ("tags[]", "c")]) == {"tags": {"0": "a", "1": "b", "2": "c"}}


def test_php_form_last_value_wins_and_nesting_replaces_a_scalar():
    assert php_form([("email", "a@example.org"), ("email", "b@example.org")]) == {"email": "b@example.org"}
    assert php_form([("key", "5"), ("key[term_id]", "7")]) == {"key": {"term_id": "7"}}


# --- decode_body ------------------------------------------------------------------------------------------------

@pytest.mark.parametrize("content_type", ["application/json", "application/json; charset=utf-8", "Application/JSON",
                                          "application/vnd.crm+json"])
def test_json_bodies_are_decoded(content_type):
    assert decode_body(b'{"email": "a@example.org"}', content_type) == {"email": "a@example.org"}


def test_form_bodies_are_decoded_the_php_way():
    body = b"email=a%40example.org&key%5Bterm_id%5D=7&key[duration]=6&name=%D0%98%D0%B2%D0%B0%D0%BD"
    assert decode_body(body, "application/x-www-form-urlencoded; charset=UTF-8") == {
        "email": "a@example.org", "key": {"term_id": "7", "duration": "6"}, "name": "Иван"}


def payload_error(body: bytes, content_type: str | None) -> PayloadError:
    with pytest.raises(PayloadError) as info:
        decode_body(body, content_type)
    return info.value


@pytest.mark.parametrize("body", [b"", b"   \n", b"\r\n"])
def test_empty_body_is_400(body):
    error = payload_error(body, "application/json")
    assert (error.status, error.code, error.legacy_error) == (400, "empty_body", "invalid_input")


@pytest.mark.parametrize("body", [b"{not json", b'{"a": 1', b"\xff\xfe{}", b"nan-sense", b'"just a string"', b"[]",
                                  b"null", b"42"])
def test_bad_json_is_400(body):
    error = payload_error(body, "application/json")
    assert (error.status, error.code) == (400, "malformed_json")


def test_form_that_is_not_utf8_is_400():
    error = payload_error(b"email=\xff\xfe", "application/x-www-form-urlencoded")
    assert (error.status, error.code) == (400, "malformed_form")


@pytest.mark.parametrize("content_type", [None, "", "text/plain", "application/xml", "text/html; charset=utf-8",
                                          "application/octet-stream"])
def test_other_content_types_are_415(content_type):
    error = payload_error(b'{"email": "a@example.org"}', content_type)
    assert (error.status, error.code) == (415, "unsupported_media_type")


# --- parse_grant_body ----------------------------------------------------------------------------------------------

def test_legacy_body_is_parsed_with_legacy_field_names():
    parsed = parse_grant_body({"email": " a@example.org ", "key": {"term_id": "7", "duration": "6", "units": "мес"},
                               "meta": {"amo_lead_id": "31", "amo_contact_id": 5, "date_start_raw": "01.12.2026"}})
    assert parsed.format == "legacy"
    assert (parsed.raw.email, parsed.raw.term_id, parsed.raw.duration, parsed.raw.units) == (
        " a@example.org ", "7", "6", "мес")
    assert parsed.raw.name_of("term_id") == "key.term_id"
    assert parsed.raw.name_of("email") == "email"
    assert parsed.amo_lead_id == 31
    assert parsed.meta["date_start_raw"] == "01.12.2026"
    assert parsed.source_label == "legacy"
    assert parsed.external_id is None


def test_legacy_form_body_is_parsed_end_to_end():
    data = decode_body(b"email=a%40example.org&key[term_id]=7&key[duration]=30&key[units]=days",
                       "application/x-www-form-urlencoded")
    spec, errors = validate_grant(parse_grant_body(data).raw)
    assert errors == []
    assert (spec.email, spec.term_id, spec.duration, spec.units) == ("a@example.org", 7, 30, "days")


def test_brief_body_is_parsed_with_brief_field_names():
    parsed = parse_grant_body({"user": {"email": "a@example.org", "first_name": "Анна", "last_name": "Смирнова"},
                               "grant": {"term_id": 7, "duration": 1, "units": "year"},
                               "external_id": "  deal-77  ", "source": "getcourse"})
    assert parsed.format == "brief"
    assert parsed.raw.name_of("term_id") == "grant.term_id"
    assert parsed.raw.name_of("email") == "user.email"
    assert (parsed.raw.first_name, parsed.raw.last_name) == ("Анна", "Смирнова")
    assert parsed.external_id == "deal-77"
    assert parsed.source_label == "getcourse"


@pytest.mark.parametrize("lead", [0, -5, "abc", True, None, {"id": 5}, "", 1.5])
def test_only_positive_integer_amo_lead_ids_count(lead):
    assert parse_grant_body({"email": "a@example.org", "key": {}, "meta": {"amo_lead_id": lead}}).amo_lead_id is None


def test_external_id_is_capped_and_must_be_scalar():
    assert len(parse_grant_body({"email": "a@example.org", "key": {}, "external_id": "x" * 500}).external_id) == 190
    assert parse_grant_body({"email": "a@example.org", "key": {}, "external_id": {"id": 1}}).external_id is None
    assert parse_grant_body({"email": "a@example.org", "key": {}, "external_id": "   "}).external_id is None
    assert parse_grant_body({"email": "a@example.org", "key": {}, "external_id": 123}).external_id == "123"


def test_meta_that_is_not_an_object_is_dropped():
    assert parse_grant_body({"email": "a@example.org", "key": {}, "meta": "text"}).meta == {}


def grant_body_error(data) -> PayloadError:
    with pytest.raises(PayloadError) as info:
        parse_grant_body(data)
    return info.value


@pytest.mark.parametrize("data", [{}, {"hello": "world"}, {"mail": "a@example.org", "level": 7}])
def test_unrecognised_shape_is_400(data):
    error = grant_body_error(data)
    assert (error.status, error.code, error.legacy_error) == (400, "unrecognized_payload", "invalid_input")


@pytest.mark.parametrize("key", [None, 7, "7", ["7"]])
def test_legacy_key_must_be_an_object(key):
    error = grant_body_error({"email": "a@example.org", "key": key})
    assert (error.status, error.code, error.legacy_error) == (400, "invalid_input", "invalid_input")


@pytest.mark.parametrize("data", [{"user": "a@example.org", "grant": {}}, {"user": {}, "grant": 7}, {"user": {}}])
def test_brief_user_and_grant_must_be_objects(data):
    error = grant_body_error(data)
    assert (error.status, error.code) == (400, "invalid_input")


def test_query_parameters_are_not_an_input():
    # parse_grant_body sees only the decoded body; an e-mail missing there stays missing.
    parsed = parse_grant_body(json.loads('{"key": {"term_id": 7, "duration": 1, "units": "months"}}'))
    spec, errors = validate_grant(parsed.raw)
    assert spec is None
    assert [(e.field, e.code) for e in errors] == [("email", "required")]


# --- what each error says: the API's English, and a message for the pages --------------------------------

def test_each_field_error_says_the_api_english_and_carries_a_message():
    _, errors = validate_grant(raw(email="not-an-address", term_id="0", duration="0", units="days"))
    assert [(e.field, e.code, e.said.code, e.message) for e in errors] == [
        ("email", "invalid_email", "grants.email_invalid",
         "not a usable e-mail address (at most 100 characters, 60 before the @)"),
        ("term_id", "invalid_level", "grants.level_invalid", "term_id must be a positive integer (at most 9223372036854775807)"),
        ("duration", "invalid_duration", "grants.duration_not_positive",
         "duration must be positive (0 would grant no access at all)"),
    ]
    _, errors = validate_grant(raw(duration="99", units="years"))
    assert [(e.said.code, e.message) for e in errors] == [("grants.duration_too_long",
                                                           "duration is more than ten years (120 months)")]
