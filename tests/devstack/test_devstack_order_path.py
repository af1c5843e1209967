"""The emulated site as a hostile partner: slow, half-written, still working after the caller left.

Specification of the order path (core.md 13, 7, 8): every step's rows appear in the real order, each
statement is visible the moment it commits, a PHP fatal or a restart leaves exactly the earlier
steps' rows, the work outlives the caller and the proxy, and one PHP session serialises requests.
"""

from __future__ import annotations

import email
import time
from concurrent.futures import Future, ThreadPoolExecutor
from datetime import date, datetime

import pytest
import requests
import sqlalchemy as sa
from flask import Flask, request

from sidecar.devstack.emulator import add_webhook, set_payments_addon
from sidecar.devstack.faults import STEPS
from sidecar.devstack.server import serve_in_thread
from sidecar.devstack.wpschema import build_metadata

SQLITE_ONLY = pytest.mark.parametrize("site_db_url", ["sqlite"], indirect=True)

#: The fixture clock: 2026-01-31 10:00 UTC, i.e. 13:00 on the Europe/Moscow site.
UTC_NOW, LOCAL_NOW = "2026-01-31 10:00:00", "2026-01-31 13:00:00"


def _text(value) -> str | None:
    if value is None:
        return None
    if isinstance(value, datetime):
        return value.strftime("%Y-%m-%d %H:%M:%S")
    if isinstance(value, date):
        return value.isoformat()
    return str(value)


@pytest.fixture
def background():
    pool = ThreadPoolExecutor(max_workers=8)
    yield pool.submit
    pool.shutdown(wait=False, cancel_futures=True)


@pytest.fixture
def receiver():
    """A webhook destination that records what it gets."""
    received: list[dict] = []
    app = Flask("receiver")

    @app.post("/hook")
    def hook():
        received.append(request.get_json(force=True))
        return "ok"

    base_url, stop = serve_in_thread(app)
    yield base_url + "/hook", received
    stop()


def _mailing_list_on(emu, level: int) -> None:
    table = build_metadata().tables["wp_memberlux_mailing_list"]
    with emu.engine.begin() as conn:
        conn.execute(sa.insert(table).values(term_id=level, is_on=1, datetime="2026-01-01 09:00:00", template_id=0,
                                             unsubscribe=0))


def _order(emu, email_address: str, product_id: int, *, timeout: float = 60, **kwargs) -> requests.Response:
    return requests.post(emu.order_url, auth=emu.auth, params={"utm_source": "mlsidecar", "utm_id": email_address[:20]},
                         json={"email": email_address, "product_id": product_id, "first_name": "Ada"},
                         timeout=timeout, **kwargs)


def observe(emu, email_address: str, received: list[dict] | None = None) -> dict:
    """Everything of one order a reader of the database (and the mailbox, the webhook receiver) can see."""
    user = emu.rows("SELECT ID FROM wp_users WHERE user_email = :e", e=email_address)
    state = {"user": bool(user), "first_name": None, "order": None, "items": 0, "key": None, "keys_meta": None,
             "subscription": 0, "mails": 0, "webhooks": 0, "certificates": 0, "processed": False}
    if received is not None:
        state["webhooks"] = sum(1 for payload in received if payload.get("email") == email_address)
    if not user:
        return state
    uid = user[0]["ID"]
    state["first_name"] = emu.scalar("SELECT meta_value FROM wp_usermeta WHERE user_id = :u AND meta_key = 'first_name'",
                                     u=uid) or None
    order = emu.rows("SELECT p.ID, p.post_status FROM wp_posts p JOIN wp_postmeta m ON m.post_id = p.ID "
                     "WHERE p.post_type = 'shop_order' AND m.meta_key = '_customer_user' AND m.meta_value = :u",
                     u=str(uid))
    if order:
        order_id = order[0]["ID"]
        state["order"] = order[0]["post_status"]
        state["items"] = emu.scalar("SELECT COUNT(*) FROM wp_woocommerce_order_items WHERE order_id = :o", o=order_id)
        state["mails"] = len(emu.site.mailbox.all(order_id=order_id))
        state["processed"] = bool(emu.scalar(
            "SELECT COUNT(*) FROM wp_usermeta WHERE user_id = :u AND meta_key = :k", u=uid,
            k=f"mblp_order_processed_{order_id}"))
    key = emu.rows("SELECT id, status FROM wp_memberlux_term_keys WHERE user_id = :u ORDER BY id DESC", u=uid)
    if key:
        state["key"] = key[0]["status"]
        meta = emu.rows("SELECT * FROM wp_memberlux_keys_meta WHERE key_id = :k", k=key[0]["id"])
        if meta:
            state["keys_meta"] = (_text(meta[0]["activation_datetime"]), meta[0]["source"], meta[0]["utm_id"])
    state["subscription"] = emu.scalar("SELECT COUNT(*) FROM wp_memberlux_user_mailing_list WHERE user_id = :u", u=uid)
    state["certificates"] = emu.scalar("SELECT COUNT(*) FROM wp_memberlux_certificate WHERE user_id = :u", u=uid)
    return state


def expected_before(step: str | None, email_address: str) -> dict:
    """What is visible before ``step`` (``None``: after the last one) of an order on an auto-certificate
    level with its mailing list on, one ``all`` webhook, UTM in the query."""
    effects = {
        "user": {"user": True, "first_name": "Ada"},
        "order": {"order": "wc-completed", "items": 1},
        "key": {"key": "used"},
        # The auto-responder writes keys_meta first: site-local time, no source, no UTM (core.md 1.4, 8).
        "autoresponder": {"keys_meta": (LOCAL_NOW, None, None), "subscription": 1},
        "mails": {"mails": 4},
        "webhooks": {"webhooks": 1},
        # Then core's upsert: UTC time, source '' for a REST order, the query's UTM values (core.md 13).
        "keys_meta": {"keys_meta": (UTC_NOW, "", email_address[:20])},
        "certificate": {"certificates": 1, "mails": 5},
        "processed": {"processed": True},
    }
    state = {"user": False, "first_name": None, "order": None, "items": 0, "key": None, "keys_meta": None,
             "subscription": 0, "mails": 0, "webhooks": 0, "certificates": 0, "processed": False}
    for name in STEPS:
        if name == step:
            break
        state.update(effects[name])
    return state


@pytest.fixture
def auto_site(make_emulator, receiver):
    """An emulator, a product of an auto-certificate level whose mailing list is on, and a webhook."""
    emu = make_emulator()
    level = emu.summary.auto_certificate_levels[0]
    _mailing_list_on(emu, level)
    url, received = receiver
    add_webhook(emu.engine, url, ("all",))
    return emu, emu.summary.product_for(level, 1).product_id, received


# --------------------------------------------------------------------------------------------------
# Step by step


def test_each_step_writes_in_order_and_nothing_later_is_visible_while_paused(auto_site, background):
    emu, product_id, received = auto_site
    address = "steps@example.com"
    emu.site.faults.pause_before = list(STEPS)
    answer: Future = background(_order, emu, address, product_id)
    for step in STEPS:
        [paused] = emu.site.wait_paused(step)
        assert observe(emu, address, received) == expected_before(step, address), f"before {step}"
        health = requests.get(emu.base_url + "/devstack/health").json()
        assert [(p["run"], p["paused_before"]) for p in health["paused"]] == [(paused.run, step)]
        assert health["orders_handled"] == 0
        assert emu.site.release() == 1
    response = answer.result(timeout=30)
    assert response.status_code == 200 and response.json() == {"order": response.json()["order"]}
    assert observe(emu, address, received) == expected_before(None, address)
    assert requests.get(emu.base_url + "/devstack/health").json()["orders_handled"] == 1


def test_a_php_fatal_at_each_step_leaves_exactly_the_earlier_steps(auto_site):
    emu, product_id, received = auto_site
    for step in STEPS:
        address = f"fatal-{step.replace('_', '-')}@example.com"
        emu.site.faults.fail_next = [f"at:{step}"]
        response = _order(emu, address, product_id)
        assert response.status_code == 500 and "critical error" in response.text, step
        assert observe(emu, address, received) == expected_before(step, address), f"fatal at {step}"
    # None of them counts as handled: each died before its end.
    assert emu.site.orders_handled == 0


def test_other_orders_interleave_with_a_paused_one(auto_site, background):
    emu, product_id, received = auto_site
    emu.site.faults.pause_before = ["mails"]
    slow: Future = background(_order, emu, "paused@example.com", product_id)
    emu.site.wait_paused("mails")
    emu.site.faults.pause_before = []
    # No request-wide lock or transaction: another order runs to its end meanwhile.
    assert _order(emu, "passing@example.com", product_id).status_code == 200
    assert observe(emu, "passing@example.com", received) == expected_before(None, "passing@example.com")
    assert observe(emu, "paused@example.com", received) == expected_before("mails", "paused@example.com")
    emu.site.release()
    assert slow.result(timeout=30).status_code == 200


def test_term_id_dialect_runs_as_steps_too(make_emulator, background):
    emu = make_emulator()
    level = emu.summary.manual_certificate_levels[0]
    emu.site.faults.pause_before = ["keys_meta"]
    answer = background(requests.post, emu.order_url, auth=emu.auth, json={
        "customer": {"email": "term-steps@example.com"}, "product": {"term_id": level, "duration": 1}})
    emu.site.wait_paused("keys_meta")
    key = emu.rows("SELECT k.status, m.activation_datetime, m.source FROM wp_memberlux_term_keys k "
                   "JOIN wp_users u ON u.ID = k.user_id LEFT JOIN wp_memberlux_keys_meta m ON m.key_id = k.id "
                   "WHERE u.user_email = 'term-steps@example.com'")
    assert [(r["status"], _text(r["activation_datetime"]), r["source"]) for r in key] == [("used", LOCAL_NOW, None)]
    assert emu.scalar("SELECT COUNT(*) FROM wp_posts WHERE post_type = 'shop_order'") == 0
    emu.site.release()
    assert answer.result(timeout=30).status_code == 200
    assert emu.scalar("SELECT m.source FROM wp_memberlux_keys_meta m JOIN wp_memberlux_term_keys k ON k.id = m.key_id "
                      "JOIN wp_users u ON u.ID = k.user_id WHERE u.user_email = 'term-steps@example.com'") == "api_order"


# --------------------------------------------------------------------------------------------------
# The caller gives up, the proxy gives up, the site goes on


def _key_of(emu, address: str):
    return emu.rows("SELECT k.id, k.status FROM wp_memberlux_term_keys k JOIN wp_users u ON u.ID = k.user_id "
                    "WHERE u.user_email = :e", e=address)


def _wait_for(condition, timeout: float = 15.0):
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        value = condition()
        if value:
            return value
        time.sleep(0.05)
    raise AssertionError("condition not reached in time")


def test_the_order_finishes_after_the_client_timed_out(make_emulator):
    emu = make_emulator(latency_seconds=2.0)
    product_id = emu.summary.product_for(emu.summary.manual_certificate_levels[0], 1).product_id
    started = time.monotonic()
    with pytest.raises(requests.Timeout):
        _order(emu, "gone@example.com", product_id, timeout=0.5)
    assert _key_of(emu, "gone@example.com") == []  # the caller's look-up finds nothing ...
    _wait_for(lambda: _key_of(emu, "gone@example.com"))  # ... and the key appears later anyway
    assert time.monotonic() - started >= 1.9
    _wait_for(lambda: emu.site.orders_handled == 1)
    [key] = _key_of(emu, "gone@example.com")
    assert key["status"] == "used"


def test_the_proxy_answers_504_while_the_work_goes_on(make_emulator):
    emu = make_emulator()
    product_id = emu.summary.product_for(emu.summary.manual_certificate_levels[0], 1).product_id
    state = requests.post(emu.base_url + "/devstack/faults", auth=emu.auth,
                          json={"gateway_timeout_seconds": 0.5, "latency_seconds": 1.5}).json()
    assert state["gateway_timeout_seconds"] == 0.5
    response = _order(emu, "proxied@example.com", product_id)
    assert response.status_code == 504
    assert len(emu.site.gates.running()) == 1, "the proxy answered while PHP was still at work"
    assert "504 Gateway Time-out" in response.text and "nginx" in response.text
    assert response.headers["Content-Type"].startswith("text/html")
    assert _key_of(emu, "proxied@example.com") == []
    _wait_for(lambda: emu.site.orders_handled == 1)
    assert [k["status"] for k in _key_of(emu, "proxied@example.com")] == ["used"]


# --------------------------------------------------------------------------------------------------
# PHP sessions


@SQLITE_ONLY
def test_requests_sharing_a_phpsessid_run_one_after_the_other(make_emulator, background):
    latency = 0.8
    emu = make_emulator(latency_seconds=latency)
    product_id = emu.summary.product_for(emu.summary.manual_certificate_levels[0], 1).product_id
    first = requests.get(emu.base_url + "/wp-json/")
    session_id = first.cookies["PHPSESSID"]
    assert "Path=/" in first.headers["Set-Cookie"]

    def timed(address: str, cookies: dict | None) -> float:
        started = time.monotonic()
        response = requests.post(emu.order_url, auth=emu.auth, cookies=cookies, timeout=30,
                                 json={"email": address, "product_id": product_id})
        assert response.status_code == 200
        return time.monotonic() - started

    shared = sorted(f.result() for f in [background(timed, f"shared{n}@example.com", {"PHPSESSID": session_id})
                                         for n in range(3)])
    # One after the other: the second waits for the first, the third for both (a busy machine only adds).
    assert shared[1] >= 1.8 * latency and shared[2] >= 2.8 * latency
    alone = [f.result() for f in [background(timed, f"alone{n}@example.com", None) for n in range(3)]]
    # Side by side: the slowest of three without the cookie is far from the third of a queue (a busy
    # machine slows both alike, so they are compared with each other, not with the clock).
    assert max(alone) < 0.7 * shared[2], (alone, shared)


@SQLITE_ONLY
def test_session_and_utm_cookies(make_emulator):
    emu = make_emulator()
    known = requests.get(emu.base_url + "/wp-json/").cookies["PHPSESSID"]
    again = requests.get(emu.base_url + "/wp-json/", cookies={"PHPSESSID": known})
    assert "PHPSESSID" not in again.cookies  # a known session is reused, no new cookie
    stranger = requests.get(emu.base_url + "/wp-json/", cookies={"PHPSESSID": "madeup"})
    assert stranger.cookies["PHPSESSID"] not in ("madeup", known)
    tagged = requests.get(emu.base_url + "/", params={"utm_source": "mlsidecar", "utm_id": "g-1", "utm_term": " "})
    cookies = {c.name: c for c in tagged.cookies}
    assert cookies["wpm_utm_source"].value == "mlsidecar" and cookies["wpm_utm_id"].value == "g-1"
    assert cookies["wpm_has_utm"].value == "1" and "wpm_utm_term" not in cookies
    assert 7 * 86400 - 60 <= cookies["wpm_utm_id"].expires - time.time() <= 7 * 86400
    assert cookies["wpm_utm_id"].path == "/"


# --------------------------------------------------------------------------------------------------
# What a REST order writes


def test_source_is_empty_and_utm_fields_null_without_utm(make_emulator):
    emu = make_emulator()
    product_id = emu.summary.product_for(emu.summary.manual_certificate_levels[0], 1).product_id
    assert requests.post(emu.order_url, auth=emu.auth, json={"email": "plain@example.com",
                                                               "product_id": product_id}).status_code == 200
    row = emu.rows("SELECT m.* FROM wp_memberlux_keys_meta m JOIN wp_memberlux_term_keys k ON k.id = m.key_id "
                   "JOIN wp_users u ON u.ID = k.user_id WHERE u.user_email = 'plain@example.com'")[0]
    assert row["source"] == ""
    assert [row[name] for name in ("utm_source", "utm_medium", "utm_campaign", "utm_id", "utm_term", "utm_content")] \
        == [None] * 6


def test_utm_from_cookies_and_source_from_a_form_field(make_emulator):
    emu = make_emulator()
    product_id = emu.summary.product_for(emu.summary.manual_certificate_levels[0], 1).product_id
    # A client with a cookie jar hands back the wpm_utm_* cookies of an earlier call: core prefers the
    # query string, then takes the cookies (wpm_get_utm), so an old campaign sticks to the new key.
    response = requests.post(emu.order_url, auth=emu.auth, params={"utm_id": "g-2"},
                             cookies={"wpm_has_utm": "1", "wpm_utm_campaign": "old-campaign", "wpm_utm_id": "g-1"},
                             data={"email": "jar@example.com", "product_id": str(product_id), "source": "crm"})
    assert response.status_code == 200
    row = emu.rows("SELECT m.* FROM wp_memberlux_keys_meta m JOIN wp_memberlux_term_keys k ON k.id = m.key_id "
                   "JOIN wp_users u ON u.ID = k.user_id WHERE u.user_email = 'jar@example.com'")[0]
    assert (row["utm_id"], row["utm_campaign"], row["utm_source"]) == ("g-2", "old-campaign", "")
    # A POSTed form field "source" is core's fallback source (core.md 5.4).
    assert row["source"] == "crm"


def test_payments_addon_inactive_completes_the_order_without_a_key(make_emulator):
    emu = make_emulator()
    set_payments_addon(emu.engine, False)
    product_id = emu.summary.product_for(emu.summary.manual_certificate_levels[0], 1).product_id
    keys_before = emu.scalar("SELECT COUNT(*) FROM wp_memberlux_term_keys")
    response = requests.post(emu.order_url, auth=emu.auth, json={"email": "noaddon@example.com",
                                                                  "product_id": product_id})
    assert response.status_code == 200
    order_id = response.json()["order"]
    assert emu.scalar(f"SELECT post_status FROM wp_posts WHERE ID = {order_id}") == "wc-completed"
    assert emu.scalar("SELECT COUNT(*) FROM wp_memberlux_term_keys") == keys_before
    assert emu.scalar("SELECT COUNT(*) FROM wp_usermeta WHERE meta_key = :k", k=f"mblp_order_processed_{order_id}") == 0
    # The option still says "on" (deactivating keeps it, core.md 13): it proves nothing.
    assert 's:15:"auto_activation";s:2:"on"' in emu.scalar(
        "SELECT option_value FROM wp_options WHERE option_name = 'wpm_main_options'")
    assert [m.kind for m in emu.site.mailbox.all(order_id=order_id)] == ["wc_new_order", "wc_customer_completed_order"]
    set_payments_addon(emu.engine, True)
    assert requests.post(emu.order_url, auth=emu.auth, json={"email": "noaddon@example.com",
                                                               "product_id": product_id}).status_code == 200
    assert emu.scalar("SELECT COUNT(*) FROM wp_memberlux_term_keys") == keys_before + 1


# --------------------------------------------------------------------------------------------------
# Mail


def test_four_mails_per_order_five_with_an_auto_certificate(make_emulator, tmp_path):
    emu = make_emulator(mail_dir=tmp_path / "site-mail")
    summary = emu.summary
    admin = emu.scalar("SELECT option_value FROM wp_options WHERE option_name = 'admin_email'")
    manual = requests.post(emu.order_url, auth=emu.auth, json={
        "email": "mail@example.com", "product_id": summary.product_for(summary.manual_certificate_levels[0], 1).product_id})
    auto = requests.post(emu.order_url, auth=emu.auth, json={
        "email": "mail@example.com", "product_id": summary.product_for(summary.auto_certificate_levels[0], 1).product_id})
    assert requests.get(emu.base_url + "/devstack/mail").status_code == 401
    mails = requests.get(emu.base_url + "/devstack/mail", auth=emu.auth).json()["mails"]
    first = [m for m in mails if m["order_id"] == manual.json()["order"]]
    assert [(m["kind"], m["to"]) for m in first] == [
        ("wc_new_order", admin), ("wc_customer_completed_order", "mail@example.com"),
        ("mblp_customer", "mail@example.com"), ("mblp_admin", admin)]
    assert "Оплата товара" in first[2]["text"] and "прошла успешно! Спасибо!" in first[2]["text"]
    second = [m for m in mails if m["order_id"] == auto.json()["order"]]
    assert [m["kind"] for m in second] == ["wc_new_order", "wc_customer_completed_order", "mblp_customer",
                                           "mblp_admin", "mblc_certificate"]
    assert [m["number"] for m in mails] == sorted(m["number"] for m in mails)  # newest last
    files = sorted((tmp_path / "site-mail").glob("*.eml"))
    assert len(files) == 9
    parsed = email.message_from_bytes(files[2].read_bytes())
    assert parsed["To"] == "mail@example.com" and "Спасибо" in parsed.get_payload(decode=True).decode()


def test_a_slow_mail_relay_makes_orders_slow(make_emulator):
    emu = make_emulator()
    requests.post(emu.base_url + "/devstack/faults", auth=emu.auth, json={"mail_seconds": 0.25})
    product_id = emu.summary.product_for(emu.summary.manual_certificate_levels[0], 1).product_id
    started = time.monotonic()
    assert requests.post(emu.order_url, auth=emu.auth, json={"email": "smtp@example.com",
                                                               "product_id": product_id}).status_code == 200
    assert time.monotonic() - started >= 1.0


# --------------------------------------------------------------------------------------------------
# Restart under load


def test_halt_stops_running_orders_at_their_next_step(auto_site, background):
    emu, product_id, received = auto_site
    emu.site.faults.pause_before = ["keys_meta"]
    answers = [background(_order, emu, f"halted{n}@example.com", product_id) for n in range(2)]
    emu.site.wait_paused("keys_meta", count=2)
    state = requests.post(emu.base_url + "/devstack/faults", auth=emu.auth, json={"halt": True}).json()
    assert state["halted"] == 2
    for n, answer in enumerate(answers):
        response = answer.result(timeout=30)
        assert response.status_code == 502 and "Bad Gateway" in response.text
        address = f"halted{n}@example.com"
        assert observe(emu, address, received) == expected_before("keys_meta", address)
    assert emu.site.orders_handled == 0
    # The restarted site takes orders again (the plan still pauses before keys_meta).
    emu.site.faults.pause_before = []
    assert _order(emu, "after-halt@example.com", product_id).status_code == 200


def test_step_delays_open_windows_between_writes(make_emulator, background):
    emu = make_emulator()
    product_id = emu.summary.product_for(emu.summary.manual_certificate_levels[0], 1).product_id
    requests.post(emu.base_url + "/devstack/faults", auth=emu.auth, json={"step_delays": {"keys_meta": 1.5}})
    answer = background(_order, emu, "window@example.com", product_id)
    # The key is there, its final keys_meta is not: "no keys_meta yet" does not mean "not ordered".
    _wait_for(lambda: _key_of(emu, "window@example.com"))
    meta = emu.rows("SELECT m.source FROM wp_memberlux_keys_meta m JOIN wp_memberlux_term_keys k ON k.id = m.key_id "
                    "JOIN wp_users u ON u.ID = k.user_id WHERE u.user_email = 'window@example.com'")
    assert [r["source"] for r in meta] in ([], [None])
    assert answer.result(timeout=30).status_code == 200


# --------------------------------------------------------------------------------------------------
# The fault plan's own API


@SQLITE_ONLY
def test_fault_plan_validation(make_emulator):
    emu = make_emulator()
    url = emu.base_url + "/devstack/faults"
    for bad, fragment in (({"pause_before": ["nope"]}, "unknown step"), ({"fail_next": ["at:zzz"]}, "unknown step"),
                          ({"step_delays": {"key": -1}}, "zero or more"), ({"step_delays": {"bogus": 1}}, "unknown step"),
                          ({"failure_rate": 2}, "between 0 and 1"), ({"latency_seconds": "slow"}, "number"),
                          ({"fail_next": ["later"]}, "at:<step>"), ({"bogus": 1}, "unknown field")):
        response = requests.post(url, auth=emu.auth, json=bad)
        assert response.status_code == 400, bad
        assert response.json()["code"] == "invalid_fault" and fragment in response.json()["message"], bad
    steps_error = requests.post(url, auth=emu.auth, json={"pause_before": "nope"}).json()
    assert steps_error["data"]["valid_steps"] == list(STEPS)
    assert requests.post(url, json={"down": True}).status_code == 401
    # An invalid update changes nothing, even its valid fields.
    requests.post(url, auth=emu.auth, json={"latency_seconds": 5, "pause_before": ["nope"]})
    assert requests.get(url, auth=emu.auth).json()["latency_seconds"] == 0
    plan = requests.post(url, auth=emu.auth, json={
        "latency_seconds": 0.1, "latency_jitter_seconds": 0.2, "step_delays": {"webhooks": 0.3}, "mail_seconds": 0.05,
        "gateway_timeout_seconds": 60, "pause_before": "key", "fail_next": ["at:mails", "after"]}).json()
    assert plan == {"latency_seconds": 0.1, "latency_jitter_seconds": 0.2, "failure_rate": 0.0, "down": False,
                    "fail_next": ["at:mails", "after"], "step_delays": {"webhooks": 0.3}, "mail_seconds": 0.05,
                    "gateway_timeout_seconds": 60.0, "pause_before": ["key"]}
    assert requests.post(url, auth=emu.auth, json={"release": True}).json()["released"] == 0


@SQLITE_ONLY
def test_latency_jitter_comes_from_the_seeded_generator(make_emulator):
    sequences = []
    for _ in range(2):
        emu = make_emulator(random_seed=9, latency_seconds=0.5)
        emu.site.faults.latency_jitter_seconds = 0.4
        sequences.append([emu.site.order_latency() for _ in range(5)])
    assert sequences[0] == sequences[1]
    assert all(0.5 <= value <= 0.9 for value in sequences[0]) and len(set(sequences[0])) == 5
