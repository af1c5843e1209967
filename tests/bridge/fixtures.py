"""Fixtures of the bridge: the sidecar wired to the emulated site (``bridge``, ``make_bridge``), a fake
amoCRM served over real HTTP, and the bridge with its amoCRM intake on (``amo_bridge``). A pytest plugin
listed in ``tests/conftest.py``, so the security tests use them too."""

from __future__ import annotations

from collections.abc import Callable, Iterator
from dataclasses import dataclass

import pytest
from flask import Flask

from sidecar.bootstrap import build_runtime, store_url
from sidecar.bridge.amocrm import AmoClient
from sidecar.devstack.server import serve_in_thread
from tests.bridge.fake_amocrm import create_fake_amocrm
from tests.bridge.support import AMO_TOKEN, PATH_TOKEN, Bridge, bridge_section
from tests.stores import migrate_store



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


@pytest.fixture
def make_bridge(small_site, emulator, settings_for):
    """``make_bridge(store=..., **bridge_settings)``: a ``Bridge`` on a freshly migrated store."""
    made: list[Bridge] = []

    def make(*, store: dict | None = None, bridge: dict | None = None, **bridge_extra) -> Bridge:
        sections: dict = {"bridge": bridge if bridge is not None else bridge_section(**bridge_extra)}
        if store:
            sections["store"] = store
        settings = settings_for(small_site, emulator, **sections)
        migrate_store(store_url(settings))
        built = Bridge(build_runtime(settings), emulator)
        made.append(built)
        return built

    yield make
    for built in made:
        built.close()


@pytest.fixture
def bridge(make_bridge) -> Bridge:
    return make_bridge()


@pytest.fixture
def amo_bridge(make_bridge, fake_amo):
    """``amo_bridge(leads=..., contacts=..., **amocrm_settings)`` -> (Bridge, FakeAmo)."""

    def make(*, leads=None, contacts=None, **amocrm):
        fake = fake_amo(leads=leads, contacts=contacts)
        settings = {"enabled": True, "base_url": fake.base_url, "token": AMO_TOKEN, "path_token": PATH_TOKEN,
                    **amocrm}
        return make_bridge(amocrm=settings), fake

    return make
