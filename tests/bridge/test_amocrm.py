"""Specification of the amoCRM side of the grant bridge (legacy-plugins.md 1.4 b, 1.8, 1.11 item 14, 4.1, 4.3)."""

from __future__ import annotations

import logging
import socket
import traceback
from datetime import date, timezone
from urllib.parse import parse_qs
from zoneinfo import ZoneInfo

import pytest
from werkzeug.datastructures import MultiDict

from sidecar.bridge.amocrm import (
    MAX_READS,
    AmoApiError,
    AmoClient,
    AmoFetcher,
    AmoFieldNames,
    AmoGrantFields,
    AmoPayloadError,
    LeadEvent,
    contact_email,
    extract_lead_event,
    extract_lead_id,
    linked_contact_ids,
    parse_lead,
    parse_start_date,
    php_int,
)
from tests.bridge.support import AMO_TOKEN
from tests.bridge.fake_amocrm import FIELD_IDS, make_contact, make_lead

NAMES = AmoFieldNames()


def payload_error(call, *args, **kwargs) -> AmoPayloadError:
    with pytest.raises(AmoPayloadError) as info:
        call(*args, **kwargs)
    return info.value


def api_error(call, *args, **kwargs) -> AmoApiError:
    with pytest.raises(AmoApiError) as info:
        call(*args, **kwargs)
    return info.value


def full_text(exc: BaseException) -> str:
    """Everything a log line or traceback of the exception could show, chained causes included."""
    return "".join(traceback.format_exception(exc)) + repr(exc) + str(exc) + repr(vars(exc))


# --- where the lead id is found -----------------------------------------------------------------

class TestLeadIdLocations:
    @pytest.mark.parametrize("payload", [
        {"leads[status][0][id]": "42"},
        {"leads[0][id]": "42"},
        {"lead_id": "42"},
        {"leads[status][0][id]": ["42"]},          # parse_qs gives lists
        {"leads[0][id]": ["42", "99"]},            # first value counts
        {"lead_id": 42},
    ], ids=["status-form", "leads0-form", "lead_id-form", "status-parse_qs", "leads0-parse_qs", "lead_id-int"])
    def test_flat_form_keys(self, payload):
        assert extract_lead_id(payload) == 42

    @pytest.mark.parametrize("payload", [
        {"leads": {"status": [{"id": 42}]}},
        {"leads": {"status": [{"id": "42"}]}},
        {"leads": {"status": {"0": {"id": "42"}}}},   # PHP arrays encoded as objects
        {"leads": [{"id": 42}]},
        {"leads": {"0": {"id": 42}}},
        {"lead_id": 42},
        {"lead_id": " 42 "},
    ], ids=["status-list", "status-str", "status-obj", "leads-list", "leads-obj", "lead_id", "lead_id-spaces"])
    def test_nested_json(self, payload):
        assert extract_lead_id(payload) == 42

    def test_multidict_from_a_flask_form(self):
        form = MultiDict([("leads[status][0][id]", "42"), ("leads[status][0][id]", "43")])
        assert extract_lead_id(form) == 42

    def test_real_digital_pipeline_webhook_body(self):
        body = ("leads%5Bstatus%5D%5B0%5D%5Bid%5D=25399013&leads%5Bstatus%5D%5B0%5D%5Bstatus_id%5D=142"
                "&leads%5Bstatus%5D%5B0%5D%5Bpipeline_id%5D=3104455"
                "&leads%5Bstatus%5D%5B0%5D%5Bold_status_id%5D=30186226"
                "&account%5Bid%5D=29085955&account%5Bsubdomain%5D=school")
        assert extract_lead_event(parse_qs(body)) == LeadEvent(lead_id=25399013, status_id=142, pipeline_id=3104455)

    def test_first_present_location_wins(self):
        assert extract_lead_id({"leads[status][0][id]": "1", "leads[0][id]": "2", "lead_id": "3"}) == 1
        assert extract_lead_id({"leads[0][id]": "2", "lead_id": "3"}) == 2
        assert extract_lead_id({"leads": {"status": [{"id": 1}]}, "lead_id": 3}) == 1

    def test_present_but_malformed_id_is_not_skipped(self):
        # A later location must not rescue a malformed earlier one: the sender meant the first.
        error = payload_error(extract_lead_id, {"leads[status][0][id]": "abc", "lead_id": "5"})
        assert error.code == "lead_id_invalid"
        assert "leads[status][0][id]" in error.message

    @pytest.mark.parametrize("value", ["0", "-3", "abc", "12abc", "", "  ", "1e3", "4.0", 0, -1, 1.0, True,
                                       str(10**20), "٤٢", {"x": 1}, [[]]])
    def test_invalid_ids(self, value):
        assert payload_error(extract_lead_id, {"lead_id": value}).code == "lead_id_invalid"
        assert payload_error(extract_lead_id, {"leads": {"status": [{"id": value}]}}).code == "lead_id_invalid"

    @pytest.mark.parametrize("payload", [
        {},
        {"account[id]": "29085955", "account[subdomain]": "school"},
        {"leads[add][0][id]": "42"},              # only status events, as before
        {"leads": {"update": [{"id": 42}]}},
        {"leads[status][0][id]": []},
        {"lead_id": None},
        {"leads": {"status": []}},
        {"leads": "42"},
    ])
    def test_missing_id(self, payload):
        error = payload_error(extract_lead_id, payload)
        assert error.code == "lead_id_missing"
        assert str(error).startswith("lead_id_missing: ")

    @pytest.mark.parametrize("payload", [[{"lead_id": 1}], "lead_id=1", None])
    def test_body_that_is_not_an_object(self, payload):
        assert payload_error(extract_lead_event, payload).code == "lead_id_missing"

    def test_status_and_pipeline_in_form_and_json(self):
        form = {"leads[status][0][id]": "7", "leads[status][0][status_id]": "142",
                "leads[status][0][pipeline_id]": ["3104455"]}
        json_body = {"leads": {"status": [{"id": 7, "status_id": 142, "pipeline_id": 3104455}]}}
        assert extract_lead_event(form) == extract_lead_event(json_body) == LeadEvent(7, 142, 3104455)

    def test_status_and_pipeline_come_from_the_element_holding_the_id(self):
        assert extract_lead_event({"leads": [{"id": 7, "status_id": 5, "pipeline_id": 6}]}) == LeadEvent(7, 5, 6)
        assert extract_lead_event({"lead_id": 7, "status_id": "5", "pipeline_id": "6"}) == LeadEvent(7, 5, 6)
        assert extract_lead_event({"lead_id": 7, "leads[status][0][status_id]": "5"}) == LeadEvent(7, None, None)

    def test_absent_or_malformed_status_gives_none(self):
        assert extract_lead_event({"leads[status][0][id]": "7"}) == LeadEvent(7, None, None)
        event = extract_lead_event({"leads[status][0][id]": "7", "leads[status][0][status_id]": "won",
                                    "leads[status][0][pipeline_id]": "0"})
        assert (event.status_id, event.pipeline_id) == (None, None)


# --- field names -------------------------------------------------------------------------------

def test_default_field_names_are_the_legacy_ones():
    assert NAMES == AmoFieldNames(course="Курс", duration="Срок выдачи", units="Тип срока",
                                  start_date="Дата старта", email_code="EMAIL")
    with pytest.raises(AttributeError):
        NAMES.course = "Программа"  # type: ignore[misc]


# --- lead and contact parsing ------------------------------------------------------------------

def lead(**kwargs) -> dict:
    kwargs.setdefault("contact_ids", [11])
    return make_lead(1001, **kwargs)


CONTACT = make_contact(11, email="anna@example.org", name="Анна Смирнова", phone="+7 900 000-00-00")


class TestParseLead:
    def test_complete_lead(self):
        fields = parse_lead(lead(), [CONTACT], NAMES)
        assert fields == AmoGrantFields(
            email="anna@example.org", term_id=157, duration=6, units_raw="месяцев",
            start_date_raw="1767225600", contact_id=11, lead_id=1001, first_name="Анна",
            last_name="Смирнова", phone="+7 900 000-00-00", start_date=date(2026, 1, 1),
            course_raw="Основы управления (157)", pipeline_id=7000001, status_id=142,
        )
        assert fields.legacy_meta() == {"amo_lead_id": 1001, "amo_contact_id": 11,
                                        "date_start_raw": "1767225600"}

    @pytest.mark.parametrize(("course", "term_id"), [
        ("Основы управления (157)", 157),
        ("  Основы управления (157)  ", 157),
        ("Курс (база) (12)", 12),
        ("Курс (12) (34)", 34),
        ("Курс(12)", 12),
        ("(5)", 5),
        ("Курс (007)", 7),
    ])
    def test_course_level_id_is_the_trailing_parenthesised_number(self, course, term_id):
        fields = parse_lead(lead(course=course), [CONTACT], NAMES)
        assert fields.term_id == term_id
        assert fields.course_raw == course.strip()

    @pytest.mark.parametrize("course", ["Основы управления", "Курс (12) дополнительно", "Курс (0)", "Курс (12a)",
                                        "Курс (-12)", "Курс ()", "Курс ( 12 )", "Курс [12]", "157"])
    def test_course_without_a_trailing_id_is_invalid(self, course):
        error = payload_error(parse_lead, lead(course=course), [CONTACT], NAMES)
        assert error.code == "course_invalid"
        assert "'Курс'" in error.message

    @pytest.mark.parametrize("course", [None, "", "   "])
    def test_course_absent_or_empty(self, course):
        assert payload_error(parse_lead, lead(course=course), [CONTACT], NAMES).code == "course_missing"

    def test_course_field_without_values(self):
        data = lead()
        data["custom_fields_values"][0]["values"] = []
        assert payload_error(parse_lead, data, [CONTACT], NAMES).code == "course_missing"

    def test_null_custom_fields_on_the_lead(self):
        data = lead(course=None, duration=None, units=None, start=None)
        assert data["custom_fields_values"] is None
        assert payload_error(parse_lead, data, [CONTACT], NAMES).code == "course_missing"

    @pytest.mark.parametrize(("duration", "expected"), [("6", 6), (" 6 мес", 6), ("6 мес", 6), ("12", 12),
                                                        ("+4", 4), ("6.9", 6), ("0012", 12)])
    def test_duration_is_cast_like_php(self, duration, expected):
        assert parse_lead(lead(duration=duration), [CONTACT], NAMES).duration == expected

    def test_numeric_duration_value(self):
        data = lead()
        data["custom_fields_values"][1]["values"] = [{"value": 3}]
        assert parse_lead(data, [CONTACT], NAMES).duration == 3

    @pytest.mark.parametrize("duration", ["шесть", "0", "-3", "", "мес 6", None, "99999999999"])
    def test_duration_must_be_positive(self, duration):
        error = payload_error(parse_lead, lead(duration=duration), [CONTACT], NAMES)
        assert error.code == "duration_invalid"
        assert "'Срок выдачи'" in error.message

    @pytest.mark.parametrize("units", ["месяцев", " Месяца ", "дня", "years", "day", "мес"])
    def test_units_are_passed_through_raw(self, units):
        # Normalisation (and rejection of unknown words) belongs to the bridge, for every channel alike.
        assert parse_lead(lead(units=units), [CONTACT], NAMES).units_raw == units

    @pytest.mark.parametrize("units", [None, "", "   "])
    def test_units_absent_or_empty(self, units):
        assert payload_error(parse_lead, lead(units=units), [CONTACT], NAMES).code == "units_missing"

    def test_lead_fields_are_checked_before_contacts(self):
        assert payload_error(parse_lead, lead(course="нет id"), [], NAMES).code == "course_invalid"

    def test_field_names_match_exactly(self):
        renamed = lead()
        renamed["custom_fields_values"][0]["field_name"] = "курс"
        assert payload_error(parse_lead, renamed, [CONTACT], NAMES).code == "course_missing"
        renamed["custom_fields_values"][0]["field_name"] = "Курс "
        assert payload_error(parse_lead, renamed, [CONTACT], NAMES).code == "course_missing"

    def test_configured_field_names(self):
        data = lead()
        data["custom_fields_values"][0]["field_name"] = "Программа"
        fields = parse_lead(data, [CONTACT], AmoFieldNames(course="Программа"))
        assert fields.term_id == 157

    def test_fields_matched_by_id(self):
        data = lead()
        for field in data["custom_fields_values"]:
            field["field_name"] = "переименовано"
        contact = make_contact(11, email="anna@example.org")
        contact["custom_fields_values"][0]["field_code"] = None
        by_id = AmoFieldNames(course=FIELD_IDS["course"], duration=FIELD_IDS["duration"],
                              units=FIELD_IDS["units"], start_date=FIELD_IDS["start"],
                              email_code=FIELD_IDS["email"])
        fields = parse_lead(data, [contact], by_id)
        assert (fields.term_id, fields.duration, fields.units_raw, fields.email) == (157, 6, "месяцев",
                                                                                     "anna@example.org")
        assert fields.start_date == date(2026, 1, 1)
        error = payload_error(parse_lead, data, [contact], AmoFieldNames(course=999))
        assert error.code == "course_missing"
        assert "field_id 999" in error.message

    def test_duplicate_field_names_use_the_first_field(self):
        data = lead(extra_fields=[{"field_id": 1, "field_name": "Курс", "field_code": None, "field_type": "text",
                                   "values": [{"value": "Другой курс (9)"}]}])
        assert parse_lead(data, [CONTACT], NAMES).term_id == 9


class TestContacts:
    def test_email_from_the_second_contact_when_the_first_has_none(self):
        first = make_contact(11, email=None, name="Без почты", phone="+7 1")
        second = make_contact(12, email="second@example.org", name="Вторая Персона", phone="+7 2")
        fields = parse_lead(lead(contact_ids=[11, 12]), [first, second], NAMES)
        assert (fields.email, fields.contact_id, fields.first_name, fields.phone) == (
            "second@example.org", 12, "Вторая", "+7 2")

    def test_first_contact_with_an_email_wins(self):
        contacts = [make_contact(11, email="one@example.org"), make_contact(12, email="two@example.org")]
        assert parse_lead(lead(), contacts, NAMES).email == "one@example.org"

    def test_email_is_trimmed_and_lower_cased(self):
        contact = make_contact(11, email="  Anna.Smirnova@Example.ORG ")
        assert parse_lead(lead(), [contact], NAMES).email == "anna.smirnova@example.org"

    def test_first_non_empty_email_value_of_a_contact(self):
        contact = make_contact(11, email=["", "   ", "Work@Example.org", "home@example.org"])
        assert contact_email(contact) == "work@example.org"

    def test_blank_email_counts_as_none(self):
        contacts = [make_contact(11, email="  "), make_contact(12, email="b@example.org")]
        assert parse_lead(lead(), contacts, NAMES).contact_id == 12

    def test_contact_with_null_custom_fields(self):
        bare = make_contact(11)
        assert bare["custom_fields_values"] is None
        assert contact_email(bare) == ""
        fields = parse_lead(lead(), [bare, make_contact(12, email="x@example.org")], NAMES)
        assert (fields.contact_id, fields.phone) == (12, "")

    def test_no_email_anywhere(self):
        contacts = [make_contact(11, phone="+7 1"), make_contact(12)]
        error = payload_error(parse_lead, lead(), contacts, NAMES)
        assert error.code == "email_missing"
        assert "2 contact(s)" in error.message

    def test_missing_contact(self):
        assert payload_error(parse_lead, lead(contact_ids=[]), [], NAMES).code == "contact_missing"

    def test_email_field_must_carry_the_email_code(self):
        contact = make_contact(11, email="a@example.org")
        contact["custom_fields_values"][0]["field_code"] = "email"
        assert payload_error(parse_lead, lead(), [contact], NAMES).code == "email_missing"

    @pytest.mark.parametrize(("kwargs", "expected"), [
        ({"first_name": "Анна", "last_name": "Смирнова", "name": "что угодно"}, ("Анна", "Смирнова")),
        ({"name": "Анна Мария Смирнова"}, ("Анна", "Мария Смирнова")),
        ({"name": "Анна"}, ("Анна", "")),
        ({"name": ""}, ("", "")),
        ({"first_name": "Анна", "name": "Анна Смирнова"}, ("Анна", "")),
    ])
    def test_person_names(self, kwargs, expected):
        contact = make_contact(11, email="a@example.org", **kwargs)
        fields = parse_lead(lead(), [contact], NAMES)
        assert (fields.first_name, fields.last_name) == expected

    def test_phone_is_the_first_phone_value(self):
        contact = make_contact(11, email="a@example.org", phone=" +7 900 111-22-33 ")
        contact["custom_fields_values"][0]["values"].append({"value": "+7 000", "enum_code": "MOB"})
        assert parse_lead(lead(), [contact], NAMES).phone == "+7 900 111-22-33"

    def test_linked_contact_ids_keep_amocrm_order(self):
        data = lead(contact_ids=[30, 10, 20, 10])
        data["_embedded"]["contacts"].append({"id": "bad"})
        assert linked_contact_ids(data) == [30, 10, 20]
        assert linked_contact_ids({"_embedded": {}}) == linked_contact_ids({}) == []


class TestStartDate:
    @pytest.mark.parametrize(("start", "raw", "expected"), [
        ("1767225600", "1767225600", date(2026, 1, 1)),
        ("01.01.2026", "01.01.2026", date(2026, 1, 1)),
        ("1.2.2026", "1.2.2026", date(2026, 2, 1)),
        ("2026-01-15", "2026-01-15", date(2026, 1, 15)),
        ("скоро", "скоро", None),
        ("31.02.2026", "31.02.2026", None),
        ("2026-13-01", "2026-13-01", None),
        ("01/01/2026", "01/01/2026", None),
        (None, None, None),
    ])
    def test_start_date_raw_kept_and_parsed(self, start, raw, expected):
        fields = parse_lead(lead(start=start), [CONTACT], NAMES)
        assert (fields.start_date_raw, fields.start_date) == (raw, expected)

    def test_unix_dates_are_read_in_the_account_zone(self):
        midnight_moscow = 1767214800  # 2026-01-01 00:00 +03:00
        assert parse_start_date(midnight_moscow) == date(2025, 12, 31)
        assert parse_start_date(midnight_moscow, ZoneInfo("Europe/Moscow")) == date(2026, 1, 1)
        fields = parse_lead(lead(start=str(midnight_moscow)), [CONTACT], NAMES, tz=ZoneInfo("Europe/Moscow"))
        assert fields.start_date == date(2026, 1, 1)

    @pytest.mark.parametrize("raw", [None, "", True, 1.5, "99999999999999999999", {"value": 1}, "-86400"])
    def test_garbage_gives_none(self, raw):
        assert parse_start_date(raw, timezone.utc) is None


@pytest.mark.parametrize(("value", "expected"), [
    ("6", 6), (" 6 мес", 6), ("\t\n7days", 7), ("шесть", 0), ("", 0), ("-3", -3), ("+2", 2),
    ("6.9", 6), ("1 000", 1), (5, 5), (5.9, 5), (None, 0), ([], 0),
])
def test_php_int(value, expected):
    assert php_int(value) == expected


# --- the API client against a fake amoCRM ---------------------------------------------------------

def closed_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


class TestClient:
    def test_reads_lead_with_contacts_and_contact(self, fake_amo):
        amo = fake_amo({1001: lead(contact_ids=[11, 12])}, {11: CONTACT})
        client = amo.client()
        body = client.get_lead(1001)
        assert body["id"] == 1001
        assert [c["id"] for c in body["_embedded"]["contacts"]] == [11, 12]
        assert body["custom_fields_values"][0]["field_name"] == "Курс"
        assert client.get_contact(11)["custom_fields_values"][1]["field_code"] == "EMAIL"
        assert amo.requests == [("/api/v4/leads/1001", "with=contacts"), ("/api/v4/contacts/11", "")]

    def test_fake_embeds_contacts_only_when_asked(self, fake_amo):
        amo = fake_amo({1001: lead()})
        import requests
        response = requests.get(amo.base_url + "/api/v4/leads/1001",
                                headers={"Authorization": f"Bearer {AMO_TOKEN}"}, timeout=5)
        assert "contacts" not in response.json()["_embedded"]

    def test_token_is_not_left_on_a_shared_session(self, fake_amo):
        import requests
        session = requests.Session()
        amo = fake_amo({1001: lead()})
        AmoClient(amo.base_url, AMO_TOKEN, session=session).get_lead(1001)
        assert "Authorization" not in session.headers

    def test_wrong_token_is_permanent(self, fake_amo):
        amo = fake_amo({1001: lead()})
        error = api_error(amo.client(token="wrong-token-value-123").get_lead, 1001)
        assert (error.status, error.code, error.transient, error.permanent) == (401, "unauthorized", False, True)
        assert "Unauthorized" in error.message
        assert "wrong-token-value-123" not in full_text(error)

    def test_unknown_lead_answers_204_and_is_permanent_not_found(self, fake_amo):
        amo = fake_amo({}, {})
        error = api_error(amo.client().get_lead, 5)
        assert (error.status, error.code, error.transient) == (204, "not_found", False)
        assert api_error(amo.client().get_contact, 5).code == "not_found"

    def test_404_is_permanent(self, fake_amo):
        amo = fake_amo({1001: lead()})
        error = api_error(AmoClient(amo.base_url + "/elsewhere", AMO_TOKEN).get_lead, 1001)
        assert (error.status, error.code, error.transient) == (404, "not_found", False)

    @pytest.mark.parametrize(("status", "code"), [(403, "forbidden"), (402, "payment_required"),
                                                  (400, "http_error")])
    def test_other_refusals_are_permanent(self, fake_amo, status, code):
        amo = fake_amo({1001: lead()})
        amo.app.config.update(FAIL_NEXT=1, FAIL_STATUS=status)
        error = api_error(amo.client().get_lead, 1001)
        assert (error.status, error.code, error.transient) == (status, code, False)

    @pytest.mark.parametrize("status", [500, 502, 503, 504])
    def test_server_errors_are_transient(self, fake_amo, status):
        amo = fake_amo({1001: lead()})
        amo.app.config.update(FAIL_NEXT=1, FAIL_STATUS=status)
        client = amo.client()
        error = api_error(client.get_lead, 1001)
        assert (error.status, error.code, error.transient) == (status, "server_error", True)
        assert client.get_lead(1001)["id"] == 1001  # the fault is over: the retry succeeds

    def test_rate_limit_is_transient_with_retry_after(self, fake_amo):
        amo = fake_amo({1001: lead()})
        amo.app.config.update(FAIL_NEXT=1, FAIL_STATUS=429)
        error = api_error(amo.client().get_lead, 1001)
        assert (error.status, error.code, error.transient, error.retry_after) == (429, "rate_limited", True, 7.0)

    def test_timeout_is_transient(self, fake_amo):
        amo = fake_amo({1001: lead()})
        amo.app.config["DELAY"] = 1.0
        error = api_error(amo.client(timeout=0.2).get_lead, 1001)
        assert (error.status, error.code, error.transient) == (None, "timeout", True)

    def test_connection_refused_is_transient(self):
        client = AmoClient(f"http://127.0.0.1:{closed_port()}", AMO_TOKEN, timeout=2)
        error = api_error(client.get_contact, 11)
        assert (error.status, error.code, error.transient) == (None, "connection", True)

    def test_200_without_json_is_transient(self):
        class HtmlSession:
            def get(self, url, **kwargs):
                import requests
                response = requests.Response()
                response.status_code = 200
                response._content = b"<html>maintenance</html>"
                return response

        error = api_error(AmoClient("https://school.amocrm.ru", AMO_TOKEN, session=HtmlSession()).get_lead, 1)
        assert (error.code, error.transient) == ("bad_response", True)

    @pytest.mark.parametrize("base_url", ["", "school.amocrm.ru", "ftp://school.amocrm.ru", "https://"])
    def test_base_url_must_be_absolute_http(self, base_url):
        with pytest.raises(ValueError):
            AmoClient(base_url, AMO_TOKEN)

    def test_empty_token_is_refused(self):
        with pytest.raises(ValueError):
            AmoClient("https://school.amocrm.ru", "  ")

    def test_ids_are_checked_before_any_request(self):
        client = AmoClient("https://school.amocrm.ru", AMO_TOKEN)
        for bad in (0, -1, "1/../../account"):
            with pytest.raises(ValueError):
                client.get_lead(bad)  # type: ignore[arg-type]


class TestTokenSecrecy:
    SCENARIOS = ["401", "204", "404", "503", "429", "timeout", "connection"]

    def provoke(self, fake_amo, scenario: str) -> AmoApiError:
        amo = fake_amo({1001: lead()})
        client = amo.client(timeout=0.2)
        if scenario == "401":
            client = AmoClient(amo.base_url, "wrong-token-value-123", timeout=2)
        elif scenario == "204":
            return api_error(client.get_lead, 9)
        elif scenario == "404":
            client = AmoClient(amo.base_url + "/x", AMO_TOKEN)
        elif scenario in ("503", "429"):
            amo.app.config.update(FAIL_NEXT=1, FAIL_STATUS=int(scenario))
        elif scenario == "timeout":
            amo.app.config["DELAY"] = 1.0
        elif scenario == "connection":
            client = AmoClient(f"http://127.0.0.1:{closed_port()}", AMO_TOKEN)
        return api_error(client.get_lead, 1001)

    @pytest.mark.parametrize("scenario", SCENARIOS)
    def test_token_never_in_exception_text(self, fake_amo, scenario, caplog):
        caplog.set_level(logging.DEBUG)
        error = self.provoke(fake_amo, scenario)
        for secret in (AMO_TOKEN, "wrong-token-value-123"):
            assert secret not in full_text(error)
            assert secret not in caplog.text

    def test_token_echoed_by_amocrm_is_masked(self):
        class EchoingSession:
            def get(self, url, headers, **kwargs):
                import requests
                response = requests.Response()
                response.status_code = 403
                token = headers["Authorization"].split()[1]
                response._content = ('{"title": "Forbidden", "detail": "token ' + token + ' is revoked"}').encode()
                return response

        error = api_error(AmoClient("https://school.amocrm.ru", AMO_TOKEN, session=EchoingSession()).get_lead, 1)
        assert error.code == "forbidden"
        assert "token *** is revoked" in error.message
        assert AMO_TOKEN not in full_text(error)

    @pytest.mark.parametrize("token", ["Bearer abc", "abc\ndef", "токен-секрет", '"abc"'])
    def test_malformed_token_is_refused_without_echo(self, token):
        with pytest.raises(ValueError) as info:
            AmoClient("https://school.amocrm.ru", token)
        assert token.strip() not in str(info.value)

    def test_client_repr_hides_the_token(self):
        client = AmoClient("https://school.amocrm.ru", AMO_TOKEN)
        assert AMO_TOKEN not in repr(client) and AMO_TOKEN not in str(client)

    def test_token_not_in_payload_errors_of_a_fetch(self, fake_amo):
        amo = fake_amo({1001: lead(contact_ids=[])})
        error = payload_error(AmoFetcher(amo.client()).fetch_grant_fields, 1001, NAMES)
        assert AMO_TOKEN not in full_text(error)


# --- the fetcher ----------------------------------------------------------------------------------

class TestFetcher:
    def test_lead_and_first_contact(self, fake_amo):
        amo = fake_amo({1001: lead(contact_ids=[11])}, {11: CONTACT})
        fields = AmoFetcher(amo.client()).fetch_grant_fields(1001, NAMES)
        assert (fields.email, fields.term_id, fields.duration, fields.units_raw, fields.contact_id) == (
            "anna@example.org", 157, 6, "месяцев", 11)
        assert len(amo.requests) == 2

    def test_reads_contacts_until_one_has_an_email(self, fake_amo):
        contacts = {11: make_contact(11), 12: make_contact(12, email="B@Example.org", name="Борис"),
                    13: make_contact(13, email="c@example.org")}
        amo = fake_amo({1001: lead(contact_ids=[11, 12, 13])}, contacts)
        fields = AmoFetcher(amo.client()).fetch_grant_fields(1001, NAMES)
        assert (fields.email, fields.contact_id, fields.first_name) == ("b@example.org", 12, "Борис")
        assert [path for path, _ in amo.requests] == ["/api/v4/leads/1001", "/api/v4/contacts/11",
                                                      "/api/v4/contacts/12"]

    def test_at_most_five_reads(self, fake_amo):
        ids = list(range(11, 18))
        amo = fake_amo({1001: lead(contact_ids=ids)}, {i: make_contact(i) for i in ids})
        error = payload_error(AmoFetcher(amo.client()).fetch_grant_fields, 1001, NAMES)
        assert error.code == "email_missing"
        assert "4 of 7" in error.message
        assert len(amo.requests) == MAX_READS == 5

    def test_deleted_contact_is_skipped(self, fake_amo):
        amo = fake_amo({1001: lead(contact_ids=[11, 12])}, {12: make_contact(12, email="b@example.org")})
        assert AmoFetcher(amo.client()).fetch_grant_fields(1001, NAMES).contact_id == 12

    def test_all_contacts_deleted(self, fake_amo):
        amo = fake_amo({1001: lead(contact_ids=[11, 12])}, {})
        assert payload_error(AmoFetcher(amo.client()).fetch_grant_fields, 1001, NAMES).code == "contact_missing"

    def test_lead_without_contacts(self, fake_amo):
        amo = fake_amo({1001: lead(contact_ids=[])})
        error = payload_error(AmoFetcher(amo.client()).fetch_grant_fields, 1001, NAMES)
        assert error.code == "contact_missing"
        assert len(amo.requests) == 1

    def test_bad_lead_fields_cost_no_contact_read(self, fake_amo):
        amo = fake_amo({1001: lead(duration="шесть")}, {11: CONTACT})
        assert payload_error(AmoFetcher(amo.client()).fetch_grant_fields, 1001, NAMES).code == "duration_invalid"
        assert len(amo.requests) == 1

    def test_unknown_lead(self, fake_amo):
        amo = fake_amo({})
        error = api_error(AmoFetcher(amo.client()).fetch_grant_fields, 1001, NAMES)
        assert (error.code, error.transient) == ("not_found", False)

    def test_transient_contact_failure_propagates(self):
        class FlakyContacts:
            def get_lead(self, lead_id):
                return lead(contact_ids=[11, 12])

            def get_contact(self, contact_id):
                raise AmoApiError(503, "amoCRM contact 11: HTTP 503", True, code="server_error")

        error = api_error(AmoFetcher(FlakyContacts()).fetch_grant_fields, 1001, NAMES)  # type: ignore[arg-type]
        assert error.transient

    def test_fields_by_id_through_the_api(self, fake_amo):
        data = lead()
        data["custom_fields_values"][0]["field_name"] = "Программа обучения"
        amo = fake_amo({1001: data}, {11: CONTACT})
        fields = AmoFetcher(amo.client()).fetch_grant_fields(1001, AmoFieldNames(course=FIELD_IDS["course"]))
        assert fields.term_id == 157

    def test_account_zone_for_start_dates(self, fake_amo):
        amo = fake_amo({1001: lead(start="1767214800")}, {11: CONTACT})
        fetcher = AmoFetcher(amo.client(), tz=ZoneInfo("Europe/Moscow"))
        assert fetcher.fetch_grant_fields(1001).start_date == date(2026, 1, 1)
