"""Fixtures for the bridge tests: a fake amoCRM served over real HTTP."""

from __future__ import annotations

from collections.abc import Callable, Iterator
from dataclasses import dataclass

import pytest
from flask import Flask

from sidecar.bridge.amocrm import AmoClient
from sidecar.devstack.server import serve_in_thread
from tests.bridge.fake_amocrm import create_fake_amocrm

AMO_TOKEN = "amo-test-token-6f1d2c9a8b7e4d3c2b1a0f9e8d7c6b5a"


@dataclass
class FakeAmo:
    base_url: str
    app: Flask
    leads: dict[int, dict]
    contacts: dict[int, dict]

    def client(self, token: str = AMO_TOKEN, timeout: float = 5.0) -> AmoClient:
        return AmoClient(self.base_url, token, timeout=timeout)

    @property
    def requests(self) -> list[tuple[str, str]]:
        return self.app.config["REQUESTS"]


@pytest.fixture(scope="module")
def _amo_server() -> Iterator[FakeAmo]:
    # One server per module: stopping a werkzeug server waits out its 0.5 s poll, per test that adds up.
    leads: dict[int, dict] = {}
    contacts: dict[int, dict] = {}
    app = create_fake_amocrm(leads, contacts, AMO_TOKEN)
    base_url, stop = serve_in_thread(app)
    try:
        yield FakeAmo(base_url, app, leads, contacts)
    finally:
        stop()


@pytest.fixture
def fake_amo(_amo_server: FakeAmo) -> Callable[..., FakeAmo]:
    """``fake_amo(leads={id: lead}, contacts={id: contact})``: the fake amoCRM holding exactly these
    entities, with no faults armed and no requests recorded."""

    def start(leads: dict[int, dict] | None = None, contacts: dict[int, dict] | None = None) -> FakeAmo:
        _amo_server.leads.clear()
        _amo_server.leads.update(leads or {})
        _amo_server.contacts.clear()
        _amo_server.contacts.update(contacts or {})
        _amo_server.app.extensions["fake_amocrm_reset"]()
        return _amo_server

    return start
