"""The one REST client, against the emulated site over real HTTP: results and error classes."""

from __future__ import annotations

import time
from concurrent.futures import ThreadPoolExecutor

import pytest
import requests
import sqlalchemy as sa

from sidecar.devstack.seed import FIRST_LEARNER_ID  # noqa: F401 - documents where learners start
from sidecar.memberlux.rest import (
    Customer,
    MemberLuxRestClient,
    PermanentRestError,
    UnknownOutcomeError,
    UnreachableError,
)


def client_for(emulator, password=None, timeout=30.0) -> MemberLuxRestClient:
    base_url, user, real_password, _engine = emulator
    return MemberLuxRestClient(base_url + "/wp-json", user, password or real_password, timeout=timeout)


def a_product(engine) -> int:
    with engine.connect() as conn:
        return conn.execute(sa.text(
            "SELECT p.post_id FROM wp_postmeta p WHERE p.meta_key = '_mbl_key_pin_code_level_id' ORDER BY p.post_id LIMIT 1"
        )).scalar_one()


def test_index_lists_the_memberlux_namespace(emulator):
    assert "mbl/v1" in client_for(emulator).index()["namespaces"]


def test_current_user_has_manage_options(emulator):
    me = client_for(emulator).current_user()
    assert me["capabilities"]["manage_options"] is True


def test_order_returns_order_id_and_carries_correlation_ids(emulator):
    _base, _user, _pw, engine = emulator
    result = client_for(emulator).order_product(Customer("new.learner@example.com", first_name="Анна"),
                                                a_product(engine), "g-test-0001")
    assert result.order_id and result.status == 200
    with engine.connect() as conn:
        row = conn.execute(sa.text("SELECT utm_source, utm_id FROM wp_memberlux_keys_meta WHERE utm_id = 'g-test-0001'")).one()
    assert tuple(row) == ("mlsidecar", "g-test-0001")


def test_wrong_password_is_permanent(emulator):
    with pytest.raises(PermanentRestError) as caught:
        client_for(emulator, password="nope").current_user()
    assert caught.value.status == 401


def test_unknown_product_is_permanent_with_wordpress_message(emulator):
    with pytest.raises(PermanentRestError) as caught:
        client_for(emulator).order_product(Customer("x@example.com"), 999999, "g-test-0002")
    assert caught.value.status == 404 and "999999" in str(caught.value)


def test_closed_port_is_unreachable_and_safe_to_retry():
    client = MemberLuxRestClient("http://127.0.0.1:9/wp-json", "u", "p", timeout=5)
    with pytest.raises(UnreachableError):
        client.order_product(Customer("x@example.com"), 1, "g-test-0003")


def test_timeout_is_unknown_outcome(emulator):
    base_url, _user, _pw, engine = emulator
    admin = requests.post(base_url + "/devstack/faults", json={"latency_seconds": 3},
                          auth=(emulator[1], emulator[2]), timeout=10)
    assert admin.status_code == 200, admin.text
    with pytest.raises(UnknownOutcomeError):
        client_for(emulator, timeout=1).order_product(Customer("slow@example.com"), a_product(engine), "g-test-0004")


def test_server_error_is_unknown_outcome(emulator):
    base_url, user, password, engine = emulator
    requests.post(base_url + "/devstack/faults", json={"failure_rate": 1.0}, auth=(user, password), timeout=10)
    with pytest.raises(UnknownOutcomeError) as caught:
        client_for(emulator).order_product(Customer("err@example.com"), a_product(engine), "g-test-0005")
    assert caught.value.status == 500


def test_grant_reference_longer_than_utm_column_is_refused():
    with pytest.raises(ValueError, match="60"):
        MemberLuxRestClient.correlation_query("g" * 61)


def test_parallel_order_calls_do_not_queue_on_a_php_session(emulator):
    """core.md 13: the site answers every request with a PHPSESSID and runs the requests that send it
    back one after the other; order calls must send no cookies, or a client's concurrency becomes a queue."""
    base_url, user, password, engine = emulator
    requests.post(base_url + "/devstack/faults", json={"latency_seconds": 1.0}, auth=(user, password), timeout=10)
    client = client_for(emulator)
    product = a_product(engine)
    client.order_product(Customer("warm.up@example.com"), product, "g-test-0006")

    def timed(n: int) -> float:
        started = time.monotonic()
        client.order_product(Customer(f"parallel{n}@example.com"), product, f"g-test-001{n}")
        return time.monotonic() - started

    with ThreadPoolExecutor(max_workers=3) as pool:
        durations = list(pool.map(timed, range(3)))
    assert max(durations) < 1.8, durations
