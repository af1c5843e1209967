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
    OrderLabels,
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


def test_order_labels_ride_beside_the_grant_reference_cut_to_the_utm_column():
    query = MemberLuxRestClient.correlation_query("g-1", OrderLabels(channel="api", source="  Bitrix24\n deal " + "x" * 80))
    assert query["utm_source"] == "mlsidecar" and query["utm_id"] == "g-1" and query["utm_medium"] == "api"
    assert query["utm_campaign"].startswith("Bitrix24 deal x") and len(query["utm_campaign"]) == 60
    assert "utm_campaign" not in MemberLuxRestClient.correlation_query("g-2", OrderLabels(channel="legacy", source=""))
    assert MemberLuxRestClient.correlation_query("g-3") == {"utm_source": "mlsidecar", "utm_id": "g-3"}


def test_grant_reference_longer_than_utm_column_is_refused():
    with pytest.raises(ValueError, match="60"):
        MemberLuxRestClient.correlation_query("g" * 61)


# --- the transport under a site that behaves like the real one (core.md 13) ------------------------

import json
import socket
import threading
from contextlib import contextmanager


class PhpLikeSite:
    """A raw HTTP server that starts a PHP session on every request, as MemberLux does.

    Each answer sets ``PHPSESSID``; a request that sends a known ``PHPSESSID`` back waits for the
    session's lock, which the earlier request holds for its whole run (``seconds``). It records the
    Cookie header of every request.
    """

    def __init__(self, seconds: float) -> None:
        self.seconds = seconds
        self.cookies_seen: list[str | None] = []
        self.locks: dict[str, threading.Lock] = {}
        self.guard = threading.Lock()
        self.counter = 0
        self.listener = socket.create_server(("127.0.0.1", 0))
        self.url = f"http://127.0.0.1:{self.listener.getsockname()[1]}/wp-json"
        threading.Thread(target=self._accept, daemon=True).start()

    def _accept(self) -> None:
        while True:
            try:
                conn, _ = self.listener.accept()
            except OSError:
                return
            threading.Thread(target=self._serve, args=(conn,), daemon=True).start()

    def _serve(self, conn: socket.socket) -> None:
        with conn:
            head = b""
            while b"\r\n\r\n" not in head:
                chunk = conn.recv(65536)
                if not chunk:
                    return
                head += chunk
            headers = {line.split(":", 1)[0].strip().lower(): line.split(":", 1)[1].strip()
                       for line in head.split(b"\r\n\r\n")[0].decode().split("\r\n")[1:] if ":" in line}
            length = int(headers.get("content-length", "0"))
            body = head.split(b"\r\n\r\n", 1)[1]
            while len(body) < length:
                body += conn.recv(65536)
            cookie = headers.get("cookie")
            with self.guard:
                self.cookies_seen.append(cookie)
                sid = cookie.split("PHPSESSID=", 1)[1].split(";")[0] if cookie and "PHPSESSID=" in cookie else None
                if sid is None or sid not in self.locks:
                    self.counter += 1
                    sid = f"sess{self.counter}"
                    self.locks[sid] = threading.Lock()
                lock = self.locks[sid]
            with lock:  # session_start() blocks until the session's earlier request has ended
                time.sleep(self.seconds)
                answer = json.dumps({"order": 1000 + self.counter}).encode()
                conn.sendall(b"HTTP/1.1 200 OK\r\nContent-Type: application/json\r\n"
                             b"Set-Cookie: PHPSESSID=" + sid.encode() + b"; path=/\r\n"
                             b"Content-Length: " + str(len(answer)).encode() + b"\r\nConnection: close\r\n\r\n" + answer)

    def close(self) -> None:
        self.listener.close()


@contextmanager
def raw_server(handle):
    """A one-purpose TCP server: ``handle(conn)`` runs for every connection in a thread."""
    listener = socket.create_server(("127.0.0.1", 0))

    def accept() -> None:
        while True:
            try:
                conn, _ = listener.accept()
            except OSError:
                return
            threading.Thread(target=handle, args=(conn,), daemon=True).start()

    threading.Thread(target=accept, daemon=True).start()
    try:
        yield f"http://127.0.0.1:{listener.getsockname()[1]}/wp-json"
    finally:
        listener.close()


def read_request(conn: socket.socket) -> None:
    data = b""
    while b"\r\n\r\n" not in data:
        chunk = conn.recv(65536)
        if not chunk:
            return
        data += chunk


def test_orders_carry_no_cookie_so_parallel_orders_are_not_queued_by_the_php_session():
    site = PhpLikeSite(seconds=1.0)
    client = MemberLuxRestClient(site.url, "api", "secret", timeout=10)
    try:
        client.order_product(Customer("first@example.com"), 1, "g-cookie-0")  # the site hands out a session
        durations: list[float] = []

        def order(n: int) -> None:
            started = time.monotonic()
            client.order_product(Customer(f"p{n}@example.com"), 1, f"g-cookie-{n}")
            durations.append(time.monotonic() - started)

        threads = [threading.Thread(target=order, args=(n,)) for n in (1, 2, 3)]
        for thread in threads:
            thread.start()
        for thread in threads:
            thread.join()
    finally:
        site.close()
    assert site.cookies_seen == [None] * 4
    assert len(client.session.cookies) == 0
    # With the cookie sent back they would take about 1, 2 and 3 s (the session lock queues them).
    assert max(durations) < 2.5, durations


def test_a_site_that_trickles_its_answer_is_cut_off_at_the_total_deadline():
    def trickle(conn: socket.socket) -> None:
        with conn:
            read_request(conn)
            conn.sendall(b"HTTP/1.1 200 OK\r\nContent-Type: application/json\r\nContent-Length: 40\r\n\r\n")
            for _ in range(40):  # one byte every 0.3 s: each read is quick, the whole answer is not
                time.sleep(0.3)
                try:
                    conn.sendall(b" ")
                except OSError:
                    return

    with raw_server(trickle) as url:
        client = MemberLuxRestClient(url, "api", "secret", timeout=1.0)
        started = time.monotonic()
        with pytest.raises(UnknownOutcomeError, match="within 1 s"):
            client.order_product(Customer("slow@example.com"), 1, "g-trickle")
        assert time.monotonic() - started < 4, "cut off long before the 12 s the answer would take"


def test_connection_closed_after_the_request_was_read_is_an_unknown_outcome():
    def swallow(conn: socket.socket) -> None:
        with conn:
            read_request(conn)  # the site got the whole order, then the connection dies

    with raw_server(swallow) as url:
        with pytest.raises(UnknownOutcomeError, match="after the request was sent"):
            MemberLuxRestClient(url, "api", "secret", timeout=5).order_product(Customer("x@example.com"), 1, "g-reset")


def test_a_proxy_gateway_timeout_is_an_unknown_outcome():
    def gateway(conn: socket.socket) -> None:
        with conn:
            read_request(conn)
            page = (b"<html><head><title>504 Gateway Time-out</title></head><body><center><h1>504 Gateway Time-out"
                    b"</h1></center><hr><center>nginx</center></body></html>")
            conn.sendall(b"HTTP/1.1 504 Gateway Time-out\r\nContent-Type: text/html\r\nContent-Length: "
                         + str(len(page)).encode() + b"\r\nConnection: close\r\n\r\n" + page)

    with raw_server(gateway) as url:
        with pytest.raises(UnknownOutcomeError) as caught:
            MemberLuxRestClient(url, "api", "secret", timeout=5).order_product(Customer("x@example.com"), 1, "g-504")
    assert caught.value.status == 504


def test_an_unresolvable_host_is_unreachable():
    client = MemberLuxRestClient("http://site.invalid/wp-json", "u", "p", timeout=5)
    with pytest.raises(UnreachableError):
        client.order_product(Customer("x@example.com"), 1, "g-dns")


def test_a_failed_tls_handshake_sent_nothing_and_is_unreachable():
    def not_tls(conn: socket.socket) -> None:
        with conn:
            conn.recv(1024)  # the ClientHello; answer with garbage and hang up
            conn.sendall(b"HTTP/1.1 400 Bad Request\r\n\r\n")

    with raw_server(not_tls) as url:
        client = MemberLuxRestClient(url.replace("http://", "https://"), "u", "p", timeout=5)
        with pytest.raises(UnreachableError):
            client.order_product(Customer("x@example.com"), 1, "g-tls")


def test_a_connect_timeout_sent_nothing_and_is_unreachable(monkeypatch):
    import sidecar.memberlux.rest as rest

    listener = socket.socket()
    listener.bind(("127.0.0.1", 0))
    listener.listen(0)
    port = listener.getsockname()[1]
    waiting = []
    for _ in range(3):  # fill the accept queue: the kernel drops further handshakes
        probe = socket.socket()
        probe.setblocking(False)
        try:
            probe.connect(("127.0.0.1", port))
        except BlockingIOError:
            pass
        waiting.append(probe)
    monkeypatch.setattr(rest, "CONNECT_TIMEOUT_CAP", 1.0)
    try:
        with pytest.raises(UnreachableError, match="ConnectTimeout"):
            MemberLuxRestClient(f"http://127.0.0.1:{port}/wp-json", "u", "p", timeout=5).order_product(
                Customer("x@example.com"), 1, "g-connect")
    finally:
        for probe in waiting:
            probe.close()
        listener.close()


def test_parallel_order_calls_do_not_queue_on_a_php_session(emulator):
    """core.md 13: the site answers every request with a PHPSESSID and runs the requests that send it
    back one after the other; order calls must send no cookies, or a client's concurrency becomes a queue.

    Each order is held at its first write: queued behind one PHP session, only one of them could ever be
    inside the site; without a cookie all three are there at once."""
    base_url, user, password, engine = emulator
    faults, health = base_url + "/devstack/faults", base_url + "/devstack/health"
    client = client_for(emulator)
    product = a_product(engine)
    client.order_product(Customer("warm.up@example.com"), product, "g-test-0006")  # the site offers its cookie here
    requests.post(faults, json={"pause_before": ["user"]}, auth=(user, password), timeout=10)
    with ThreadPoolExecutor(max_workers=3) as pool:
        calls = [pool.submit(client.order_product, Customer(f"parallel{n}@example.com"), product, f"g-test-001{n}")
                 for n in range(3)]
        deadline = time.monotonic() + 20
        inside = 0
        while time.monotonic() < deadline and inside < 3:
            inside = len(requests.get(health, timeout=10).json()["paused"])
            time.sleep(0.05)
        requests.post(faults, json={"pause_before": [], "release": True}, auth=(user, password), timeout=10)
        results = [call.result(timeout=30) for call in calls]
    assert inside == 3, f"only {inside} of 3 parallel orders got into the site at once"
    assert [result.status for result in results] == [200, 200, 200]
