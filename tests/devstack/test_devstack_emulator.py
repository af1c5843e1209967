"""The MemberLux emulator, exercised over real HTTP like the sidecar will use it."""

from __future__ import annotations

import threading
import time
from datetime import date, datetime, timezone

import phpserialize
import pytest
import requests
import sqlalchemy as sa
from flask import Flask, request

from sidecar.devstack.emulator import add_webhook, set_auto_activation
from sidecar.devstack.server import serve_in_thread
from sidecar.devstack.wpschema import build_metadata

UTC = timezone.utc


def _d(value) -> str | None:
    if value is None:
        return None
    if isinstance(value, datetime):
        return value.strftime("%Y-%m-%d %H:%M:%S")
    if isinstance(value, date):
        return value.isoformat()
    return str(value)


def _manual_level(emu) -> int:
    """A level without auto certificates, so orders on it create no certificate rows."""
    return emu.summary.manual_certificate_levels[0]


def _counts(emu) -> dict[str, int]:
    return {table: emu.scalar(f"SELECT COUNT(*) FROM wp_{table}") for table in
            ("users", "usermeta", "posts", "postmeta", "memberlux_term_keys", "memberlux_keys_meta",
             "memberlux_certificate", "woocommerce_order_items")}


def _key_rows(emu, email: str):
    return emu.rows(
        "SELECT k.*, m.source, m.activation_datetime, m.utm_source, m.utm_id, m.utm_campaign, m.utm_medium "
        "FROM wp_memberlux_term_keys k JOIN wp_users u ON u.ID = k.user_id "
        "LEFT JOIN wp_memberlux_keys_meta m ON m.key_id = k.id WHERE LOWER(u.user_email) = :email ORDER BY k.id",
        email=email.lower())


# --------------------------------------------------------------------------------------------------
# Authentication and discovery


def test_auth_errors(emulator, make_emulator):
    product = emulator.summary.product_for(_manual_level(emulator), 1)
    body = {"email": "auth@example.com", "product_id": product.product_id}
    anonymous = requests.post(emulator.order_url, json=body)
    assert anonymous.status_code == 401
    assert anonymous.json() == {"code": "rest_forbidden", "message": "Sorry, you are not allowed to do that.",
                                "data": {"status": 401}}
    wrong = requests.post(emulator.order_url, json=body, auth=(emulator.auth[0], "aaaa bbbb cccc dddd eeee ffff"))
    assert wrong.status_code == 401 and wrong.json()["code"] == "incorrect_password"
    assert wrong.json()["data"] == {"status": 401}
    unknown = requests.post(emulator.order_url, json=body, auth=("nobody-here", "x"))
    assert unknown.status_code == 401 and unknown.json()["code"] == "invalid_username"
    # A regular admin account without an application password cannot use it either.
    admin = requests.post(emulator.order_url, json=body, auth=("admin", "demo-admin-2026"))
    assert admin.status_code == 401 and admin.json()["code"] == "incorrect_password"
    learner = requests.post(emulator.order_url, json=body, auth=emulator.learner_auth)
    assert learner.status_code == 403
    assert learner.json() == {"code": "rest_forbidden", "message": "Sorry, you are not allowed to do that.",
                              "data": {"status": 403}}
    # Spaces in the application password are ignored, as in WordPress.
    ok = requests.post(emulator.order_url, json=body, auth=(emulator.auth[0], emulator.auth[1].replace(" ", "")))
    assert ok.status_code == 200
    assert emulator.scalar("SELECT COUNT(*) FROM wp_users WHERE user_email = 'auth@example.com'") == 1


def test_users_me_and_index(emulator):
    me = requests.get(emulator.base_url + "/wp-json/wp/v2/users/me", params={"context": "edit"}, auth=emulator.auth)
    assert me.status_code == 200
    data = me.json()
    assert data["username"] == "sidecar" and data["id"] == emulator.summary.api_user_id
    assert data["roles"] == ["administrator"] and data["capabilities"]["manage_options"] is True
    learner = requests.get(emulator.base_url + "/wp-json/wp/v2/users/me?context=edit",
                           auth=emulator.learner_auth).json()
    assert learner["roles"] == ["customer"] and "manage_options" not in learner["capabilities"]
    anonymous = requests.get(emulator.base_url + "/wp-json/wp/v2/users/me")
    assert anonymous.status_code == 401 and anonymous.json()["code"] == "rest_not_logged_in"
    index = requests.get(emulator.base_url + "/wp-json/").json()
    assert "mbl/v1" in index["namespaces"] and "/mbl/v1/order" in index["routes"]
    assert index["timezone_string"] == "Europe/Moscow"
    via_query = requests.get(emulator.base_url + "/?rest_route=/").json()
    assert via_query["namespaces"] == index["namespaces"]
    missing = requests.get(emulator.base_url + "/wp-json/mbl/v1/levels", auth=emulator.auth)
    assert missing.status_code == 404 and missing.json()["code"] == "rest_no_route"
    assert requests.get(emulator.base_url + "/devstack/health").json()["status"] == "ok"


# --------------------------------------------------------------------------------------------------
# The real (WooCommerce) dialect


def test_order_creates_user_and_activated_key(emulator):
    level = _manual_level(emulator)
    product = emulator.summary.product_for(level, 1)
    response = requests.post(emulator.order_url, auth=emulator.auth, json={
        "email": "Maria.Petrova@Example.com", "product_id": product.product_id, "first_name": "Мария",
        "last_name": "Петрова", "patronymic": "Ивановна", "phone": "+7 900 000-00-00", "custom3": "<b>VIP</b>",
        "custom4": ""})
    assert response.status_code == 200, response.text
    order_id = response.json()["order"]
    assert response.json() == {"order": order_id}
    user = emulator.rows("SELECT * FROM wp_users WHERE user_email = 'Maria.Petrova@Example.com'")[0]
    assert user["user_login"] == "Maria.Petrova"
    meta = {r["meta_key"]: r["meta_value"] for r in emulator.rows(
        "SELECT meta_key, meta_value FROM wp_usermeta WHERE user_id = :uid", uid=user["ID"])}
    assert meta["first_name"] == "Мария" and meta["last_name"] == "Петрова" and meta["surname"] == "Ивановна"
    assert meta["phone"] == "+7 900 000-00-00" and meta["custom3"] == "VIP" and "custom4" not in meta
    assert phpserialize.loads(meta["wp_capabilities"].encode(), decode_strings=True) == {"customer": True}
    assert meta[f"mblp_order_processed_{order_id}"] == "1"
    assert user["user_pass"].startswith("$wp$2y$")
    # 31 Jan + 1 month = 3 Mar in 2026 (PHP month overflow).
    [key] = _key_rows(emulator, "maria.petrova@example.com")
    assert (key["status"], key["term_id"], key["is_banned"], key["key_type"]) == ("used", level, 0, "wpm_term_keys")
    assert (_d(key["date_start"]), _d(key["date_end"]), _d(key["date_registered"])) == (
        "2026-01-31", "2026-03-03", "2026-01-31")
    assert len(key["key"]) == 72 and key["key"] not in response.text
    # REST orders carry no activation source and no UTM values: '' and NULL (core.md 13; the emulator
    # used to invent "purchase" here).
    assert (key["source"], _d(key["activation_datetime"])) == ("", "2026-01-31 10:00:00")
    assert key["utm_source"] is None
    order = emulator.rows("SELECT * FROM wp_posts WHERE ID = :id", id=order_id)[0]
    assert (order["post_type"], order["post_status"]) == ("shop_order", "wc-completed")
    assert _d(order["post_date_gmt"]) == "2026-01-31 10:00:00" and _d(order["post_date"]) == "2026-01-31 13:00:00"
    items = emulator.rows("SELECT * FROM wp_woocommerce_order_items WHERE order_id = :id", id=order_id)
    assert len(items) == 1
    order_meta = {r["meta_key"]: r["meta_value"] for r in emulator.rows(
        "SELECT meta_key, meta_value FROM wp_postmeta WHERE post_id = :id", id=order_id)}
    assert order_meta["_customer_user"] == str(user["ID"]) and order_meta["_order_total"] == f"{product.price:.2f}"


def test_leap_year_overflow_and_stacking(emulator):
    level = _manual_level(emulator)
    product = emulator.summary.product_for(level, 1)
    emulator.clock.moment = datetime(2028, 1, 31, 23, 59, 0, tzinfo=UTC)
    body = {"email": "leap@example.com", "product_id": [product.product_id]}
    assert requests.post(emulator.order_url, json=body, auth=emulator.auth).status_code == 200
    # A renewal bought before expiry stacks on the previous end (core.md 3.2, 3.4).
    emulator.clock.moment = datetime(2028, 2, 20, 8, 0, 0, tzinfo=UTC)
    assert requests.post(emulator.order_url, json=body, auth=emulator.auth).status_code == 200
    # After a lapse the next key starts today.
    emulator.clock.moment = datetime(2028, 6, 1, 8, 0, 0, tzinfo=UTC)
    assert requests.post(emulator.order_url, json=body, auth=emulator.auth).status_code == 200
    rows = _key_rows(emulator, "leap@example.com")
    assert [(_d(r["date_start"]), _d(r["date_end"]), _d(r["date_registered"])) for r in rows] == [
        ("2028-01-31", "2028-03-02", "2028-01-31"),
        ("2028-03-02", "2028-04-02", "2028-02-20"),
        ("2028-06-01", "2028-07-01", "2028-06-01"),
    ]


def test_existing_user_found_case_insensitively_and_stacks_on_seeded_keys(emulator):
    level = _manual_level(emulator)
    product = emulator.summary.product_for(level, 3)
    users_before = emulator.scalar("SELECT COUNT(*) FROM wp_users")
    email = emulator.rows("SELECT user_email FROM wp_users WHERE ID = :id", id=emulator.learner_id)[0]["user_email"]
    keys = build_metadata().tables["wp_memberlux_term_keys"]
    common = {"term_id": level, "user_id": emulator.learner_id, "sent": 0, "units": "months", "is_unlimited": 0}
    with emulator.engine.begin() as conn:
        conn.execute(sa.insert(keys), [
            {**common, "key": "seeded-active", "key_type": "wpm_term_keys", "status": "used", "is_banned": 0,
             "duration": 1, "date_start": "2026-01-10", "date_end": "2026-02-10", "date_registered": "2026-01-10"},
            {**common, "key": "seeded-banned", "key_type": "wpm_term_keys", "status": "used", "is_banned": 1,
             "duration": 12, "date_start": "2026-01-10", "date_end": "2027-01-10", "date_registered": "2026-01-10"},
            {**common, "key": "seeded-basket", "key_type": "wpm_keys_basket", "status": "used", "is_banned": 0,
             "duration": 12, "date_start": "2026-01-10", "date_end": "2027-06-10", "date_registered": "2026-01-10"},
            {**common, "key": "seeded-old", "key_type": "wpm_term_keys", "status": "expired", "is_banned": 0,
             "duration": 1, "date_start": "2025-01-10", "date_end": "2025-02-10", "date_registered": "2025-01-10"},
        ])
    response = requests.post(emulator.order_url, auth=emulator.auth,
                             json={"email": email.upper(), "product_id": product.product_id})
    assert response.status_code == 200
    assert emulator.scalar("SELECT COUNT(*) FROM wp_users") == users_before
    rows = emulator.rows(
        f"SELECT * FROM wp_memberlux_term_keys WHERE user_id = {emulator.learner_id} AND term_id = {level} ORDER BY id")
    newest = rows[-1]
    # Banned and basket rows do not stack; the active one does.
    assert (_d(newest["date_start"]), _d(newest["date_end"])) == ("2026-02-10", "2026-05-10")
    # Adding a code resets the user's expired rows to "used" until the next cron run (core.md 3.3).
    assert {r["status"] for r in rows if r["key"] == "seeded-old"} == {"used"}


def test_login_suffix_for_taken_local_part(emulator):
    product = emulator.summary.product_for(_manual_level(emulator), 1)
    for email in ("twin@example.com", "twin@example.org", "twin@example.net"):
        assert requests.post(emulator.order_url, auth=emulator.auth,
                             json={"email": email, "product_id": product.product_id}).status_code == 200
    logins = emulator.rows("SELECT user_login FROM wp_users WHERE user_email LIKE 'twin@%' ORDER BY ID")
    assert [r["user_login"] for r in logins] == ["twin", "twin1", "twin2"]


def test_same_level_twice_in_one_request_does_not_stack(emulator):
    level = _manual_level(emulator)
    one, three = emulator.summary.product_for(level, 1), emulator.summary.product_for(level, 3)
    response = requests.post(emulator.order_url, auth=emulator.auth,
                             json={"email": "double@example.com", "product_id": [one.product_id, three.product_id]})
    assert response.status_code == 200
    rows = _key_rows(emulator, "double@example.com")
    assert [(_d(r["date_start"]), _d(r["date_end"])) for r in rows] == [
        ("2026-01-31", "2026-03-03"), ("2026-01-31", "2026-05-01")]
    # A later request sees both and stacks on the greatest end.
    emulator.clock.moment = datetime(2026, 2, 1, 9, 0, tzinfo=UTC)
    requests.post(emulator.order_url, auth=emulator.auth,
                  json={"email": "double@example.com", "product_id": one.product_id})
    assert _d(_key_rows(emulator, "double@example.com")[-1]["date_start"]) == "2026-05-01"


def test_utm_values_from_query_string_land_in_keys_meta(emulator):
    product = emulator.summary.product_for(_manual_level(emulator), 1)
    long_campaign = "c" * 80
    response = requests.post(
        emulator.order_url, auth=emulator.auth,
        params={"utm_source": "mlsidecar", "utm_id": "grant-42", "utm_campaign": long_campaign},
        json={"email": "utm@example.com", "product_id": product.product_id, "utm_medium": "body-is-ignored"})
    assert response.status_code == 200
    [row] = _key_rows(emulator, "utm@example.com")
    # Once a request carries UTM values, core's wpm_get_utm() fills the ones not sent with '' (their
    # wpm_utm_* cookie or ''), so utm_medium is '' here, not NULL as the emulator used to write.
    assert (row["utm_source"], row["utm_id"], row["utm_campaign"], row["utm_medium"]) == (
        "mlsidecar", "grant-42", "c" * 60, "")


def test_form_body_array_products_and_rest_route(emulator):
    level = _manual_level(emulator)
    product = emulator.summary.product_for(level, 12)
    response = requests.post(emulator.base_url + "/", params={"rest_route": "/mbl/v1/order/", "utm_id": "form-1"},
                             auth=emulator.auth,
                             data={"email": "form@example.com", "product_id[]": [str(product.product_id)],
                                   "first_name": "  Anna  "})
    assert response.status_code == 200, response.text
    [row] = _key_rows(emulator, "form@example.com")
    assert (_d(row["date_end"]), row["utm_id"]) == ("2027-01-31", "form-1")
    assert emulator.scalar("SELECT meta_value FROM wp_usermeta m JOIN wp_users u ON u.ID = m.user_id "
                           "WHERE u.user_email = 'form@example.com' AND m.meta_key = 'first_name'") == "Anna"


def test_absint_semantics_and_unlimited_and_non_key_products(emulator):
    summary = emulator.summary
    unlimited = next(p for p in summary.products if p.is_unlimited)
    book = next(p for p in summary.products if p.product_type == "simple")
    response = requests.post(emulator.order_url, auth=emulator.auth, json={
        "email": "absint@example.com", "product_id": [f"-{unlimited.product_id}", f"{book.product_id}.9"]})
    assert response.status_code == 200, response.text
    order_id = response.json()["order"]
    assert emulator.scalar(f"SELECT COUNT(*) FROM wp_woocommerce_order_items WHERE order_id = {order_id}") == 2
    [row] = _key_rows(emulator, "absint@example.com")
    assert row["is_unlimited"] == 1 and row["term_id"] == unlimited.level_id and row["status"] == "used"


def test_auto_activation_off_leaves_key_new(emulator):
    set_auto_activation(emulator.engine, False)
    product = emulator.summary.product_for(_manual_level(emulator), 1)
    before = _counts(emulator)
    response = requests.post(emulator.order_url, auth=emulator.auth,
                             json={"email": "manual@example.com", "product_id": product.product_id})
    assert response.status_code == 200
    after = _counts(emulator)
    assert after["memberlux_term_keys"] == before["memberlux_term_keys"] + 1
    assert after["memberlux_keys_meta"] == before["memberlux_keys_meta"]
    newest = emulator.rows("SELECT * FROM wp_memberlux_term_keys ORDER BY id DESC LIMIT 1")[0]
    assert (newest["status"], newest["user_id"], _d(newest["date_start"]), newest["term_id"]) == (
        "new", None, "0000-00-00", product.level_id)
    set_auto_activation(emulator.engine, True)
    requests.post(emulator.order_url, auth=emulator.auth,
                  json={"email": "manual@example.com", "product_id": product.product_id})
    assert [r["status"] for r in _key_rows(emulator, "manual@example.com")] == ["used"]


def test_unknown_product_is_404_before_any_write(emulator):
    product = emulator.summary.product_for(_manual_level(emulator), 1)
    before = _counts(emulator)
    response = requests.post(emulator.order_url, auth=emulator.auth,
                             json={"email": "ghost@example.com", "product_id": [product.product_id, 999999]})
    assert response.status_code == 404
    assert response.json() == {"error": "Product product_id: 999999 not found"}
    assert _counts(emulator) == before


def test_invalid_parameters(emulator):
    url, auth = emulator.order_url, emulator.auth
    missing = requests.post(url, auth=auth, json={})
    assert missing.status_code == 400
    assert missing.json() == {"code": "rest_missing_callback_param", "message": "Missing parameter(s): email, product_id",
                              "data": {"status": 400, "params": ["email", "product_id"]}}
    bad_product = requests.post(url, auth=auth, json={"email": "ok@example.com", "product_id": ["12", "abc"]})
    assert bad_product.status_code == 400
    body = bad_product.json()
    assert body["code"] == "rest_invalid_param"
    assert body["data"]["params"] == {"product_id": "Invalid product_id format"}
    bad_email = requests.post(url, auth=auth, json={"email": "not-an-email", "product_id": 5})
    assert bad_email.json()["code"] == "rest_invalid_param" and "email" in bad_email.json()["data"]["params"]
    bad_json = requests.post(url, auth=auth, data="{nope", headers={"Content-Type": "application/json"})
    assert bad_json.status_code == 400 and bad_json.json()["code"] == "rest_invalid_json"
    # WordPress validates arguments before it checks permissions.
    assert requests.post(url, json={}).status_code == 400
    assert requests.get(url, auth=auth).json()["code"] == "rest_no_route"


# --------------------------------------------------------------------------------------------------
# The owner's term-id dialect


def test_term_id_dialect(emulator, make_emulator):
    level = _manual_level(emulator)
    body = {"customer": {"email": "term@example.com", "first_name": "Олег", "last_name": "Орлов"},
            "product": {"term_id": level, "duration": 1, "units": "year"},
            "meta": {"order_id": "crm-1", "source": "crm_system"}}
    response = requests.post(emulator.order_url + "/", params={"utm_id": "t-1"}, json=body, auth=emulator.auth)
    assert response.status_code == 200, response.text
    data = response.json()
    [row] = _key_rows(emulator, "term@example.com")
    assert data == {"ok": True, "user_id": row["user_id"], "term_id": level, "key_id": row["id"],
                    "date_end": "2027-01-31"}
    assert row["key"] not in response.text
    assert (row["duration"], row["units"], row["utm_id"], row["source"]) == (12, "months", "t-1", "api_order")
    days = requests.post(emulator.order_url, auth=emulator.auth, json={
        "customer": {"email": "term@example.com"}, "product": {"term_id": level, "duration": 10, "units": "days"}})
    assert days.json()["date_end"] == "2027-02-10"  # stacked on the first key's end
    unknown = requests.post(emulator.order_url, auth=emulator.auth, json={
        "customer": {"email": "term@example.com"}, "product": {"term_id": 99999, "duration": 1, "units": "month"}})
    assert unknown.status_code == 404
    bad_units = requests.post(emulator.order_url, auth=emulator.auth, json={
        "customer": {"email": "term@example.com"}, "product": {"term_id": level, "duration": 1, "units": "week"}})
    assert bad_units.status_code == 400 and bad_units.json()["data"]["params"] == {"product.units": "Invalid parameter."}
    real_only = make_emulator(dialect="woocommerce")
    refused = requests.post(real_only.order_url, json=body, auth=real_only.auth)
    assert refused.status_code == 400 and refused.json()["code"] == "rest_missing_callback_param"


# --------------------------------------------------------------------------------------------------
# Webhooks and certificates


@pytest.fixture
def receiver():
    received: list[dict] = []
    app = Flask("receiver")

    @app.post("/<name>")
    def hook(name: str):
        received.append({"name": name, "json": request.get_json(force=True),
                         "content_type": request.headers.get("Content-Type")})
        return "ignored", 500  # MemberLux ignores the answer

    base_url, stop = serve_in_thread(app)
    yield base_url, received
    stop()


def test_webhook_fan_out(emulator, receiver):
    base_url, received = receiver
    add_webhook(emulator.engine, base_url + "/second", ("purchase",), sort=20)
    add_webhook(emulator.engine, base_url + "/first", ("all",), sort=10)
    add_webhook(emulator.engine, base_url + "/other", ("activation_page",), sort=5)
    level = _manual_level(emulator)
    product = emulator.summary.product_for(level, 1)
    response = requests.post(emulator.order_url, auth=emulator.auth, json={
        "email": "hook@example.com", "product_id": product.product_id, "first_name": "Hook", "patronymic": "P",
        "phone": "123"})
    assert response.status_code == 200
    # A REST order's activation source is '' (core.md 13): only hooks subscribed to "all" hear of it,
    # the "purchase" hook never does (the emulator used to send "purchase").
    assert [r["name"] for r in received] == ["first"]
    payload = received[0]["json"]
    assert received[0]["content_type"] == "application/json; charset=utf-8"
    level_name = emulator.scalar(f"SELECT name FROM wp_terms WHERE term_id = {level}")
    assert payload == {
        "type": "", "email": "hook@example.com", "first_name": "Hook", "last_name": "", "patronymic": "P",
        "phone": "123", **{f"custom{n}": "" for n in range(1, 11)}, "custom1textarea": "",
        "key": {"term_id": str(level), "name": level_name, "is_unlimited": 0, "duration": "1", "units": "months",
                "date_start": "31-01-2026", "date_end": "03-03-2026"}}
    received.clear()
    unlimited = next(p for p in emulator.summary.products if p.is_unlimited)
    requests.post(emulator.order_url, auth=emulator.auth, json={"email": "hook@example.com",
                                                                "product_id": unlimited.product_id})
    key = received[0]["json"]["key"]
    assert (key["is_unlimited"], key["duration"], key["units"], key["date_end"]) == (1, None, None, None)
    assert key["date_start"] == "31-01-2026"
    received.clear()
    # Term-id orders use a source no hook subscribes to by name: only "all" hooks get them.
    requests.post(emulator.order_url, auth=emulator.auth, json={
        "customer": {"email": "hook@example.com"}, "product": {"term_id": level, "duration": 1, "units": "month"}})
    assert [r["name"] for r in received] == ["first"] and received[0]["json"]["type"] == "api_order"


def test_auto_certificate_at_each_activation(emulator):
    level = emulator.summary.auto_certificate_levels[0]
    product = emulator.summary.product_for(level, 1)
    for _ in range(2):
        assert requests.post(emulator.order_url, auth=emulator.auth, json={
            "email": "cert@example.com", "product_id": product.product_id, "first_name": "Cert",
            "last_name": "Holder"}).status_code == 200
    user_id = emulator.scalar("SELECT ID FROM wp_users WHERE user_email = 'cert@example.com'")
    certs = emulator.rows(f"SELECT * FROM wp_memberlux_certificate WHERE user_id = {user_id} ORDER BY certificate_id")
    assert len(certs) == 2
    for cert in certs:
        assert (cert["wpmlevel_id"], _d(cert["date_issue"]), _d(cert["create_date"])) == (level, "2026-01-31", "2026-01-31")
        assert cert["responsible_person"] == emulator.summary.api_user_id
        assert cert["number"] == f"{user_id:05d}" and cert["graduate_first_name"] == "Cert"
        assert cert["series"] and cert["course_name"]
    manual_level = _manual_level(emulator)
    requests.post(emulator.order_url, auth=emulator.auth, json={
        "email": "cert@example.com", "product_id": emulator.summary.product_for(manual_level, 1).product_id})
    assert emulator.scalar(f"SELECT COUNT(*) FROM wp_memberlux_certificate WHERE user_id = {user_id}") == 2


def test_manual_certificate_issue(emulator):
    level = _manual_level(emulator)
    url = emulator.base_url + "/devstack/certificates"
    response = requests.post(url, auth=emulator.auth, json={"user_id": emulator.learner_id, "level_id": level,
                                                           "date_issue": "2026-01-15"})
    assert response.status_code == 200, response.text
    data = response.json()
    cert = emulator.rows(f"SELECT * FROM wp_memberlux_certificate WHERE certificate_id = {data['certificate_id']}")[0]
    assert (_d(cert["date_issue"]), _d(cert["create_date"]), cert["responsible_person"], cert["user_id"]) == (
        "2026-01-15", "2026-01-31", emulator.summary.api_user_id, emulator.learner_id)
    assert requests.post(url, json={"user_id": 4, "level_id": level}).status_code == 401
    assert requests.post(url, auth=emulator.learner_auth,
                         json={"user_id": 4, "level_id": level}).status_code == 403
    no_cert_level = emulator.summary.no_certificate_levels[0]
    assert requests.post(url, auth=emulator.auth, json={"user_id": 4, "level_id": no_cert_level}).status_code == 400
    assert requests.post(url, auth=emulator.auth, json={"user_id": 999999, "level_id": level}).status_code == 404


def test_activation_page_activates_a_pre_created_code_in_place(emulator, receiver):
    """core.md 3.1, 3.2: codes are generated in advance; entering one updates its own row (the id stays),
    stacked on the learner's current end of the level, then the listeners run with ``activation_page``."""
    base_url, received = receiver
    add_webhook(emulator.engine, base_url + "/page", ("activation_page",))
    level = _manual_level(emulator)
    [code] = emulator.rows(f"SELECT id, `key`, duration, units FROM wp_memberlux_term_keys WHERE term_id = {level} "
                           "AND status = 'new' AND user_id IS NULL AND key_type = 'wpm_term_keys' ORDER BY id LIMIT 1")
    url = emulator.base_url + "/devstack/activate"
    answer = requests.post(url, auth=emulator.auth, json={"user_id": emulator.learner_id, "code": code["key"].lower()})
    assert answer.status_code == 200, answer.text
    assert answer.json()["key_id"] == code["id"]
    row = emulator.rows(f"SELECT * FROM wp_memberlux_term_keys WHERE id = {code['id']}")[0]
    assert (row["user_id"], row["status"], _d(row["date_registered"])) == (emulator.learner_id, "used", "2026-01-31")
    assert _d(row["date_start"]) == answer.json()["date_start"] and _d(row["date_start"]) >= "2026-01-31"
    meta = emulator.rows(f"SELECT source FROM wp_memberlux_keys_meta WHERE key_id = {code['id']}")[0]
    assert meta["source"] == "activation_page"
    assert [r["json"]["type"] for r in received] == ["activation_page"]
    used_again = requests.post(url, auth=emulator.auth, json={"user_id": 4, "code": code["key"]})
    assert used_again.status_code == 400 and used_again.json()["code"] == "invalid_code"
    assert requests.post(url, auth=emulator.auth, json={"user_id": 999999, "code": code["key"]}).status_code == 404
    assert requests.post(url, json={"user_id": 4, "code": code["key"]}).status_code == 401


# --------------------------------------------------------------------------------------------------
# Failure injection


def test_latency(make_emulator):
    latency = 1.5
    emu = make_emulator(latency_seconds=latency)
    product = emu.summary.product_for(_manual_level(emu), 1)
    started = time.perf_counter()
    response = requests.post(emu.order_url, auth=emu.auth, json={"email": "slow@example.com",
                                                                 "product_id": product.product_id})
    assert response.status_code == 200 and time.perf_counter() - started >= latency
    with pytest.raises(requests.Timeout):
        requests.post(emu.order_url, auth=emu.auth, timeout=0.1,
                      json={"email": "slow@example.com", "product_id": product.product_id})
    # Like PHP, the site goes on with the call its caller gave up on.
    assert len(requests.get(emu.base_url + "/devstack/health").json()["running"]) == 1
    requests.post(emu.base_url + "/devstack/faults", auth=emu.auth, json={"latency_seconds": 0})
    emu.site.gates.wait_idle(timeout=10)
    assert requests.get(emu.base_url + "/devstack/health").json()["orders_handled"] == 2
    started = time.perf_counter()
    requests.post(emu.order_url, auth=emu.auth, json={"email": "slow@example.com", "product_id": product.product_id})
    assert time.perf_counter() - started < latency, "the latency is off again"


def test_forced_failures_before_and_after_writing(emulator):
    product = emulator.summary.product_for(_manual_level(emulator), 1)
    faults_url = emulator.base_url + "/devstack/faults"
    assert requests.post(faults_url, json={"fail_next": ["before"]}).status_code == 401
    state = requests.post(faults_url, auth=emulator.auth, json={"fail_next": ["before", "after"]}).json()
    assert state["fail_next"] == ["before", "after"]
    body = {"email": "fail@example.com", "product_id": product.product_id}
    before = requests.post(emulator.order_url, auth=emulator.auth, json=body)
    assert before.status_code == 500 and "critical error" in before.text
    assert before.headers["Content-Type"].startswith("text/html")
    assert _key_rows(emulator, "fail@example.com") == []
    after = requests.post(emulator.order_url, auth=emulator.auth, json=body)
    assert after.status_code == 500
    assert len(_key_rows(emulator, "fail@example.com")) == 1  # partial effect: access was granted
    assert requests.post(emulator.order_url, auth=emulator.auth, json=body).status_code == 200


def test_failure_rate_is_deterministic(make_emulator):
    outcomes = []
    for _ in range(2):
        emu = make_emulator(failure_rate=0.5, random_seed=123)
        product = emu.summary.product_for(_manual_level(emu), 1)
        run = []
        for n in range(12):
            response = requests.post(emu.order_url, auth=emu.auth,
                                     json={"email": f"rate{n}@example.com", "product_id": product.product_id})
            wrote = emu.scalar(f"SELECT COUNT(*) FROM wp_users WHERE user_email = 'rate{n}@example.com'")
            run.append((response.status_code, bool(wrote)))
            # Reset so the second run creates the same users again.
            with emu.engine.begin() as conn:
                conn.exec_driver_sql(f"DELETE FROM wp_users WHERE user_email = 'rate{n}@example.com'")
        outcomes.append(run)
    assert outcomes[0] == outcomes[1]
    codes = {code for code, _ in outcomes[0]}
    assert codes == {200, 500}
    assert (500, True) in outcomes[0] and (500, False) in outcomes[0]


def test_down_toggle(emulator):
    faults_url = emulator.base_url + "/devstack/faults"
    requests.post(faults_url, auth=emulator.auth, json={"down": True})
    product = emulator.summary.product_for(_manual_level(emulator), 1)
    response = requests.post(emulator.order_url, auth=emulator.auth,
                             json={"email": "down@example.com", "product_id": product.product_id})
    assert response.status_code == 503 and response.headers.get("Retry-After")
    assert requests.get(emulator.base_url + "/wp-json/").status_code == 503
    assert requests.get(emulator.base_url + "/devstack/health").json()["down"] is True
    requests.post(faults_url, auth=emulator.auth, json={"down": False})
    assert requests.post(emulator.order_url, auth=emulator.auth,
                         json={"email": "down@example.com", "product_id": product.product_id}).status_code == 200


def test_concurrent_orders(emulator):
    product = emulator.summary.product_for(_manual_level(emulator), 1)
    results: list[int] = []

    def place(n: int) -> None:
        response = requests.post(emulator.order_url, auth=emulator.auth,
                                 json={"email": f"crowd{n}@example.com", "product_id": product.product_id})
        results.append(response.status_code)

    threads = [threading.Thread(target=place, args=(n,)) for n in range(12)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    assert results == [200] * 12
    assert emulator.scalar("SELECT COUNT(*) FROM wp_users WHERE user_email LIKE 'crowd%'") == 12


def test_server_stop_is_idempotent():
    app = Flask("tiny")
    app.add_url_rule("/", view_func=lambda: "ok")
    base_url, stop = serve_in_thread(app)
    assert requests.get(base_url).text == "ok"
    stop()
    stop()
    with pytest.raises(requests.ConnectionError):
        requests.get(base_url, timeout=1)


def test_multisite_emulator_without_optional_modules(tmp_path):
    from sidecar.devstack.emulator import create_emulator_app
    from sidecar.devstack.seed import seed_site
    from sidecar.devstack.wpschema import create_site_schema

    engine = sa.create_engine(f"sqlite:///{tmp_path / 'multi.sqlite'}")
    create_site_schema(engine, "wp_2_", "wp_", without_modules=("certificates", "webhooks"))
    summary = seed_site(engine, users=20, levels=2, seed=2, today=date(2026, 1, 20), prefix="wp_2_",
                        base_prefix="wp_")
    app = create_emulator_app(engine, prefix="wp_2_", base_prefix="wp_",
                              clock=lambda: datetime(2026, 1, 31, 12, 0, tzinfo=UTC))
    base_url, stop = serve_in_thread(app)
    try:
        auth = (summary.api_login, summary.api_app_password)
        assert requests.get(base_url + "/wp-json", auth=auth).json()["namespaces"]
        me = requests.get(base_url + "/wp-json/wp/v2/users/me?context=edit", auth=auth).json()
        assert me["capabilities"]["manage_options"] is True
        product = summary.product_for(summary.level_ids[0], 1)
        response = requests.post(base_url + "/wp-json/mbl/v1/order", auth=auth,
                                 json={"email": "sub@example.com", "product_id": product.product_id})
        assert response.status_code == 200, response.text
        with engine.connect() as conn:
            row = conn.exec_driver_sql(
                "SELECT k.date_start, k.date_end FROM wp_2_memberlux_term_keys k JOIN wp_users u ON u.ID = k.user_id "
                "WHERE u.user_email = 'sub@example.com'").one()
            caps = conn.exec_driver_sql(
                "SELECT meta_value FROM wp_usermeta m JOIN wp_users u ON u.ID = m.user_id "
                "WHERE u.user_email = 'sub@example.com' AND m.meta_key = 'wp_2_capabilities'").scalar()
        assert tuple(row) == ("2026-01-31", "2026-03-03") and "customer" in caps
    finally:
        stop()
        engine.dispose()


def test_free_product_source_and_customer_that_cannot_be_created(emulator):
    free = next(p for p in emulator.summary.products if p.price == 0 and p.product_type == "mbl_key")
    assert requests.post(emulator.order_url, auth=emulator.auth,
                         json={"email": "free@example.com", "product_id": free.product_id}).status_code == 200
    [row] = _key_rows(emulator, "free@example.com")
    # No "free_item" either: the payments add-on passes no source (core.md 13).
    assert (row["source"], row["units"], _d(row["date_end"])) == ("", "days", "2026-02-07")
    # A local part over 60 characters passes is_email but not wp_insert_user: the order gets no customer
    # and the old payments add-on activates for the API user instead (core.md 5.4).
    email = "x" * 61 + "@example.com"
    api_keys_before = emulator.scalar(
        f"SELECT COUNT(*) FROM wp_memberlux_term_keys WHERE user_id = {emulator.summary.api_user_id}")
    response = requests.post(emulator.order_url, auth=emulator.auth, json={"email": email, "product_id": free.product_id})
    assert response.status_code == 200
    assert emulator.scalar("SELECT COUNT(*) FROM wp_users WHERE user_email = :e", e=email) == 0
    assert emulator.scalar(
        f"SELECT COUNT(*) FROM wp_memberlux_term_keys WHERE user_id = {emulator.summary.api_user_id}") == api_keys_before + 1
    order_id = response.json()["order"]
    assert emulator.scalar(
        f"SELECT meta_value FROM wp_postmeta WHERE post_id = {order_id} AND meta_key = '_customer_user'") == "0"
