"""`GET /api/v1/sleepers`: bearer tokens or an admin session, JSON pages with a cursor, 400 naming the field."""

from __future__ import annotations

import pytest

from tests.monitor.support import API_TOKEN, TODAY, Monitor
from tests.strong_secrets import strong_secret

BI_TOKEN = strong_secret("second-token-for-the-bi-tool")

BEARER = {"Authorization": f"Bearer {API_TOKEN}"}


@pytest.fixture
def api(build_monitor) -> Monitor:  # the fixture imported above
    return build_monitor(api_tokens={"reports": API_TOKEN, "bi": BI_TOKEN})


def get(monitor: Monitor, query: str = "", headers: dict | None = None):
    return monitor.client.get(f"/api/v1/sleepers{query}", headers=BEARER if headers is None else headers)


# --- authentication --------------------------------------------------------------------------------------

def test_refuses_callers_without_a_valid_token(api):
    for headers, code in (({}, "unauthorized"),
                          ({"Authorization": "Bearer wrong-token"}, "bad_token"),
                          ({"Authorization": f"Basic {API_TOKEN}"}, "bad_authorization"),
                          ({"Authorization": "Bearer "}, "bad_authorization"),
                          ({"Authorization": f"Bearer {API_TOKEN}x"}, "bad_token")):
        response = get(api, headers=headers)
        assert response.status_code == 401, headers
        assert response.is_json and response.json["code"] == code and response.json["ok"] is False
        assert response.headers["WWW-Authenticate"].startswith("Bearer")
        assert "sleepers" not in response.json


def test_every_configured_token_works(api):
    assert get(api).status_code == 200
    assert get(api, headers={"Authorization": f"Bearer {BI_TOKEN}"}).status_code == 200
    assert get(api, headers={"Authorization": f"bearer {API_TOKEN}"}).status_code == 200  # scheme is case-insensitive


def test_says_so_when_no_tokens_are_configured(build_monitor):
    bare = build_monitor()
    for headers in ({"Authorization": f"Bearer {API_TOKEN}"}, {}):
        response = get(bare, headers=headers)
        assert response.status_code == 401
        assert response.json["code"] == "tokens_not_configured"
        assert "API tokens are not configured" in response.json["message"]


def test_an_admin_session_is_enough(build_monitor):
    bare = build_monitor()
    bare.login()
    response = get(bare, headers={})
    assert response.status_code == 200 and response.json["total"] == 39


def test_is_read_only_and_needs_no_csrf_token(api):
    assert api.client.post("/api/v1/sleepers", headers=BEARER).status_code == 405


# --- pages ---------------------------------------------------------------------------------------------

def test_returns_json_pages_with_a_cursor_until_every_row_is_seen(api):
    expected = [(r.user_id, r.term_id) for r in api.all_rows()]
    first = get(api, "?limit=15")
    assert first.status_code == 200 and first.headers["Cache-Control"] == "no-store"
    body = first.json
    assert body["ok"] is True and body["total"] == 39 and body["limit"] == 15 and body["evaluated_for"] == "2026-11-24"
    assert body["sort"] == "expired_on" and body["desc"] is True  # web.sleepers_order's default
    assert body["page"] == 1 and body["pages"] == 3 and body["prev_cursor"] is None
    record = body["sleepers"][0]
    assert set(record) == {"user_id", "email", "login", "first_name", "last_name", "level_id", "level_name",
                           "expired_on", "last_access_day", "days_since", "last_grant", "blocked", "reminders_sent",
                           "reminders"}
    assert set(record["reminders"]) == {"last_sent_step", "last_sent_on", "next_step", "next_due", "stopped"}
    seen = []
    while True:
        seen += [(r["user_id"], r["level_id"]) for r in body["sleepers"]]
        if body["next_cursor"] is None:
            assert body["next_url"] is None
            break
        assert body["next_url"].startswith("/api/v1/sleepers?") and "limit=15" in body["next_url"]
        body = get(api, body["next_url"][len("/api/v1/sleepers"):]).json
    assert seen == expected


def test_default_and_largest_page(api):
    assert get(api).json["limit"] == 100 and len(get(api).json["sleepers"]) == 39
    assert get(api, "?limit=500").json["limit"] == 500


def test_filters_match_the_table(api):
    level = get(api, "?level=7&level=8").json
    assert level["total"] == 19 and {r["level_id"] for r in level["sleepers"]} == {7, 8}
    assert get(api, "?level=7,8").json["total"] == 19
    target = api.all_rows(levels=(9,))[2]
    found = get(api, f"?search={target.email.upper()}").json["sleepers"]
    assert {r["user_id"] for r in found} == {target.user_id} and 9 in {r["level_id"] for r in found}
    day = target.expired_on.isoformat()
    window = get(api, f"?expired_from={day}&expired_to={day}").json["sleepers"]
    assert window and all(r["expired_on"] == day for r in window)
    emails = [r["email"] for r in get(api, "?sort=email&desc=1").json["sleepers"]]
    assert emails == sorted(emails, reverse=True)
    row = next(r for r in get(api, "?level=9").json["sleepers"] if r["user_id"] == target.user_id)
    assert row["expired_on"] == target.expired_on.isoformat()
    assert row["days_since"] == (TODAY - target.expired_on).days and row["level_name"] == "Бизнес-английский"


@pytest.mark.parametrize("query,field", [
    ("?level=abc", "level"),
    ("?level=4242", "level"),
    ("?expired_from=2026-13-01", "expired_from"),
    ("?expired_to=tomorrow", "expired_to"),
    ("?expired_from=2026-02-01&expired_to=2026-01-01", "expired_to"),
    ("?sort=height", "sort"),
    ("?desc=maybe", "desc"),
    ("?limit=0", "limit"),
    ("?limit=501", "limit"),
    ("?limit=ten", "limit"),
    ("?after=garbage", "after"),
    ("?search=" + "x" * 201, "search"),
])
def test_bad_parameters_answer_400_naming_the_field(api, query, field):
    response = get(api, query)
    assert response.status_code == 400
    assert response.json["code"] == "invalid_parameter" and response.json["field"] == field
    assert response.json["message"] and response.json["errors"][0]["field"] == field


def test_a_cursor_of_another_order_is_refused(api):
    cursor = get(api, "?limit=5").json["next_cursor"]
    response = get(api, f"?limit=5&sort=email&after={cursor}")
    assert response.status_code == 400 and response.json["field"] == "after"
    assert "another order" in response.json["message"]


def test_errors_are_in_english_whatever_the_language(api):
    response = api.client.get("/api/v1/sleepers?limit=0&lang=ru", headers={**BEARER, "Accept-Language": "ru"})
    assert response.status_code == 400 and "page size" in response.json["message"]
