"""Finding 7: the login throttle let anyone who knows the admin's login lock them out (5 wrong
passwords, from anywhere, for 15 min); counted the login and the e-mail of one account separately;
and, with ``web.trusted_proxies = 1``, believed an X-Forwarded-For sent by a client that connects
directly. Now failures lock only the (account, address) pair and the address, one account is one
key however it is typed, a global per-account count only lowers every address's allowance, and
forwarded headers count only on connections from ``web.trusted_proxy_networks``."""

from __future__ import annotations

import re
from datetime import datetime, timezone

import pytest
import sqlalchemy as sa

from sidecar.app import create_app
from sidecar.clock import FixedClock
from sidecar.config import ConfigError, settings_from_mapping
from sidecar.devstack import seed
from sidecar.store.models import AuditEvent
from sidecar.web import auth

ADMIN_EMAIL = "admin@school.example"
ATTACKER, ADMIN_IP = "203.0.113.7", "198.51.100.1"


@pytest.fixture
def make_app(small_site, emulator, settings_for, make_runtime):
    def build(**web):
        runtime = make_runtime(settings_for(small_site, emulator, web=web),
                               clock=FixedClock(datetime(2026, 11, 24, 9, 0, tzinfo=timezone.utc)))
        return create_app(runtime, testing=True), runtime

    return build


def _login(app, login=seed.DEMO_ADMIN_LOGIN, password=seed.DEMO_ADMIN_PASSWORD, *, ip="127.0.0.1", **headers):
    client = app.test_client()
    page = client.get("/login").get_data(as_text=True)
    token = re.search(r'name="csrf_token" value="([^"]+)"', page).group(1)  # type: ignore[union-attr]
    return client.post("/login", data={"csrf_token": token, "login": login, "password": password},
                       environ_base={"REMOTE_ADDR": ip}, headers=headers).status_code


def _failed_from(runtime) -> list[str | None]:
    with runtime.sessions() as db:
        return list(db.scalars(sa.select(AuditEvent.source_ip).where(AuditEvent.action == "login.failed")
                               .order_by(AuditEvent.id)))


def test_an_attacker_cannot_lock_the_admin_out(make_app):
    app, _runtime = make_app()
    for _ in range(auth.MAX_FAILURES_PER_LOGIN):
        assert _login(app, password="guess", ip=ATTACKER) == 200
    assert _login(app, password="guess", ip=ATTACKER) == 429  # the attacker's own address is locked
    assert _login(app, ip=ATTACKER) == 429
    assert _login(app, ip=ADMIN_IP) == 302                     # the admin, elsewhere, is not


def test_distributed_guessing_is_slowed_but_locks_nobody_out(make_app):
    app, _runtime = make_app()
    attackers = [f"203.0.113.{n}" for n in range(1, 1 + auth.MAX_FAILURES_PER_ACCOUNT // 4)]
    for ip in attackers:
        for _ in range(4):
            assert _login(app, password="guess", ip=ip) == 200
    # The account is under attack: a new address gets MAX_FAILURES_UNDER_ATTACK tries, not 5.
    fresh = "192.0.2.50"
    for _ in range(auth.MAX_FAILURES_UNDER_ATTACK):
        assert _login(app, password="guess", ip=fresh) == 200
    assert _login(app, password="guess", ip=fresh) == 429
    # ... and the admin at an address of their own still signs in at the first try.
    assert _login(app, ip=ADMIN_IP) == 302


def test_login_and_email_of_one_account_are_one_key(make_app):
    app, _runtime = make_app()
    spellings = ["admin", ADMIN_EMAIL, "ADMIN", ADMIN_EMAIL.upper(), " Admin "]
    for spelling in spellings:
        assert _login(app, spelling, "guess", ip=ATTACKER) == 200
    assert len(spellings) == auth.MAX_FAILURES_PER_LOGIN
    assert _login(app, ADMIN_EMAIL, "guess", ip=ATTACKER) == 429
    assert _login(app, "admin", ip=ATTACKER) == 429


def test_forwarded_for_from_a_client_connecting_directly_is_ignored(make_app):
    app, _runtime = make_app(trusted_proxies=1)  # the example configuration's value
    for n in range(auth.MAX_FAILURES_PER_IP):
        # A new "client address" every time, and a new login name: the per-address limit must hold.
        assert _login(app, f"guess{n}", "wrong", ip=ATTACKER, **{"X-Forwarded-For": f"10.9.{n}.1"}) == 200
    assert _login(app, "guess-more", "wrong", ip=ATTACKER, **{"X-Forwarded-For": "10.9.99.1"}) == 429
    assert set(_failed_from(_runtime)) == {ATTACKER}  # the audit trail has the real peer


def test_forwarded_for_counts_from_a_configured_proxy(make_app):
    app, runtime = make_app(trusted_proxies=1, trusted_proxy_networks=["10.0.0.0/8"])
    _login(app, "nobody", "x", ip="10.1.2.3", **{"X-Forwarded-For": "198.51.100.20"})      # the proxy
    _login(app, "nobody", "x", ip="127.0.0.1", **{"X-Forwarded-For": "198.51.100.21"})     # not listed now
    _login(app, "nobody", "x", ip="10.1.2.3", **{"X-Forwarded-For": "1.2.3.4, not-an-ip"})  # not an address
    assert _failed_from(runtime) == ["198.51.100.20", "127.0.0.1", "10.1.2.3"]


def test_default_proxy_networks_are_loopback_and_bad_ones_are_refused():
    base = {"wordpress": {"db_url": "sqlite://"}, "memberlux": {"rest_base_url": "https://s.example/wp-json"}}
    settings = settings_from_mapping({**base, "web": {"trusted_proxies": 1}}, environ={})
    assert settings.web.trusted_proxy_networks == ["127.0.0.1/32", "::1/128"]
    with pytest.raises(ConfigError, match="not an IP address or CIDR"):
        settings_from_mapping({**base, "web": {"trusted_proxy_networks": ["10.0.0.0/33"]}}, environ={})
