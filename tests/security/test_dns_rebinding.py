"""Finding: DNS rebinding past the webhook SSRF guard.

The destination's name used to be resolved twice: once for the check, once by the HTTP client when
it connected. A resolver answering a public address first and 127.0.0.1 second got a delivery into an
internal service, whose answer was stored in the delivery log. Now the connection goes to exactly the
address that was checked, while the Host header, the TLS SNI and the certificate check keep the name.
"""

from __future__ import annotations

import shutil
import socket
import ssl
import subprocess
import threading
from datetime import datetime, timezone

import pytest
from flask import Flask, request
from werkzeug.serving import make_server

from sidecar.clock import FixedClock
from sidecar.webhooks.delivery import WebhookDeliverer
from sidecar.webhooks.ssrf import PinnedAdapter, pinned_session
from tests.webhooks.support import deliveries, endpoint, fire

NOW = datetime(2026, 11, 24, 12, 0, tzinfo=timezone.utc)
PUBLIC = "93.184.216.34"
_real_getaddrinfo = socket.getaddrinfo


class RebindingDNS:
    """``socket.getaddrinfo`` for one name whose answers change from call to call (the last one sticks).

    Connections to ``PUBLIC`` are recorded and refused instead of leaving the machine."""

    def __init__(self, name: str, answers: list[str]) -> None:
        self.name, self.answers = name, answers
        self.lookups = 0
        self.public_connects: list[int] = []

    def __call__(self, host, port, *args, **kwargs):
        if host == self.name:
            answer = self.answers[min(self.lookups, len(self.answers) - 1)]
            self.lookups += 1
            return [(socket.AF_INET, socket.SOCK_STREAM, socket.IPPROTO_TCP, "", (answer, int(port or 0)))]
        if host == PUBLIC:
            self.public_connects.append(int(port))
            raise socket.gaierror(socket.EAI_NONAME, "the public address is not reached from tests")
        return _real_getaddrinfo(host, port, *args, **kwargs)



@pytest.fixture
def runtime(small_site, settings_for, make_runtime):
    return make_runtime(settings_for(small_site), clock=FixedClock(NOW))


@pytest.fixture
def loopback_allowed(small_site, settings_for, make_runtime):
    """Loopback allowed, so that a pinned delivery can reach a local test server."""
    settings = settings_for(small_site, webhooks={"allow_private_destinations": ["127.0.0.1/32"]})
    return make_runtime(settings, clock=FixedClock(NOW))


def test_dns_rebinding_a_second_answer_of_loopback_is_never_connected_to(runtime, receiver, monkeypatch):
    port = receiver.url.split(":")[2].split("/")[0]
    dns = RebindingDNS("rebind.example", [PUBLIC, "127.0.0.1"])
    monkeypatch.setattr(socket, "getaddrinfo", dns)
    endpoint(runtime, f"http://rebind.example:{port}/hook")
    fire(runtime)
    assert WebhookDeliverer(runtime).run_once() == 1
    assert receiver.received == []                        # the internal service got nothing
    assert dns.lookups == 1                               # resolved once, for the check
    assert dns.public_connects == [int(port)]             # the connection went to the checked address
    [delivery] = deliveries(runtime)
    assert delivery.state == "pending" and "ConnectionError" in delivery.last_error
    assert "thanks" not in delivery.last_error


def test_dns_rebinding_the_pinned_request_keeps_the_host_name_in_the_host_header(loopback_allowed, receiver,
                                                                                  monkeypatch):
    port = receiver.url.split(":")[2].split("/")[0]
    # Checked answer: loopback (allowed here); a later answer would point elsewhere and is never asked for.
    dns = RebindingDNS("hooks.example", ["127.0.0.1", "127.0.0.2"])
    monkeypatch.setattr(socket, "getaddrinfo", dns)
    endpoint(loopback_allowed, f"http://hooks.example:{port}/hook")
    fire(loopback_allowed)
    WebhookDeliverer(loopback_allowed).run_once()
    assert deliveries(loopback_allowed)[0].state == "succeeded"
    [(headers, _body)] = receiver.received
    assert headers["Host"] == f"hooks.example:{port}" and dns.lookups == 1


def test_dns_rebinding_the_pin_refuses_a_request_for_another_host():
    adapter = PinnedAdapter("hooks.example", "127.0.0.1")
    import requests

    with requests.Session() as http:
        http.mount("http://", adapter)
        with pytest.raises(ValueError, match="not the checked host"):
            http.get("http://elsewhere.example/", timeout=1)


def test_dns_rebinding_an_internal_first_answer_is_still_refused():
    from sidecar.webhooks.ssrf import DestinationRefused

    with pytest.raises(DestinationRefused, match="internal address"):
        pinned_session("http://rebind.example/", resolver=lambda host, port: ["127.0.0.1"])


# --- https: the certificate is checked against the name, not the pinned address ----------------------

@pytest.fixture
def certificate(tmp_path):
    """A self-signed certificate for hooks.example (and nothing else: not 127.0.0.1)."""
    if shutil.which("openssl") is None:
        pytest.fail("openssl is needed to make a test certificate")
    cert, key = tmp_path / "cert.pem", tmp_path / "key.pem"
    subprocess.run(["openssl", "req", "-x509", "-newkey", "rsa:2048", "-nodes", "-days", "2",
                    "-subj", "/CN=hooks.example", "-addext", "subjectAltName=DNS:hooks.example",
                    "-keyout", str(key), "-out", str(cert)], check=True, capture_output=True)
    return cert, key


@pytest.fixture
def tls_receiver(certificate):
    cert, key = certificate
    received: list[str] = []
    server_names: list[str | None] = []
    app = Flask("tls-receiver")

    @app.post("/hook")
    def hook():
        received.append(request.headers.get("Host", ""))
        return "ok"

    context = ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER)
    context.load_cert_chain(str(cert), str(key))
    context.sni_callback = lambda sock, name, ctx: server_names.append(name)
    server = make_server("127.0.0.1", 0, app, threaded=True, ssl_context=context)
    thread = threading.Thread(target=server.serve_forever, kwargs={"poll_interval": 0.05}, daemon=True)
    thread.start()
    yield server.server_port, received, server_names, cert
    server.shutdown()
    server.server_close()
    thread.join(timeout=10)


def test_dns_rebinding_https_keeps_sni_and_certificate_check_on_the_name(loopback_allowed, tls_receiver,
                                                                          monkeypatch):
    port, received, server_names, cert = tls_receiver
    monkeypatch.setenv("REQUESTS_CA_BUNDLE", str(cert))      # trust the test certificate (and only it)
    monkeypatch.setattr(socket, "getaddrinfo", RebindingDNS("hooks.example", ["127.0.0.1"]))
    endpoint(loopback_allowed, f"https://hooks.example:{port}/hook")
    fire(loopback_allowed)
    WebhookDeliverer(loopback_allowed).run_once()
    [delivery] = deliveries(loopback_allowed)
    assert delivery.state == "succeeded", delivery.last_error
    assert server_names == ["hooks.example"]                # SNI is the name, not 127.0.0.1
    assert received == [f"hooks.example:{port}"]


def test_dns_rebinding_https_certificate_for_another_name_is_refused(loopback_allowed, tls_receiver, monkeypatch):
    port, received, server_names, cert = tls_receiver
    monkeypatch.setenv("REQUESTS_CA_BUNDLE", str(cert))
    monkeypatch.setattr(socket, "getaddrinfo", RebindingDNS("other.example", ["127.0.0.1"]))
    endpoint(loopback_allowed, f"https://other.example:{port}/hook")
    fire(loopback_allowed)
    WebhookDeliverer(loopback_allowed).run_once()
    [delivery] = deliveries(loopback_allowed)
    assert delivery.state == "pending" and "SSLError" in delivery.last_error
    assert server_names == ["other.example"] and received == []
