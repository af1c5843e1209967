"""Finding 6: logout did not end the session: the session is a signed cookie, and a copy taken
before the logout kept working for up to 12 h. Each sign-in is now a row in our store, checked on
every request; logout (and a password change, demotion or blocking in WordPress) ends the row."""

from __future__ import annotations

import re
from datetime import datetime, timedelta, timezone

import pytest
import sqlalchemy as sa

from sidecar.app import create_app
from sidecar.clock import FixedClock
from sidecar.devstack import seed
from sidecar.store.models import AdminSession

START = datetime(2026, 11, 24, 9, 0, tzinfo=timezone.utc)
# Another password's phpass hash: what WordPress stores after the admin changes their password.
OTHER_HASH = "$P$BWq8sZ0dKY5O.Cz8au.JfPqvEmsVdb0"


@pytest.fixture
def env(small_site, emulator, settings_for, make_runtime):
    clock = FixedClock(START)
    runtime = make_runtime(settings_for(small_site, emulator), clock=clock)
    return runtime, clock, create_app(runtime, testing=True), small_site


def _sign_in(app):
    client = app.test_client()
    token = _csrf(client.get("/login").get_data(as_text=True))
    response = client.post("/login", data={"csrf_token": token, "login": seed.DEMO_ADMIN_LOGIN,
                                           "password": seed.DEMO_ADMIN_PASSWORD})
    assert response.status_code == 302
    return client


def _csrf(page: str) -> str:
    found = re.search(r'name="csrf_token" value="([^"]+)"', page)
    assert found
    return found.group(1)


def _copy_of_cookie(app, client):
    """Another browser holding a copy of ``client``'s session cookie (stolen, or a second device)."""
    other = app.test_client()
    other.set_cookie("session", client.get_cookie("session").value)
    return other


def _sent_to_login(response) -> bool:
    return response.status_code == 302 and response.headers["Location"].startswith("/login")


def _rows(runtime) -> list[AdminSession]:
    with runtime.sessions() as db:
        return list(db.scalars(sa.select(AdminSession)))


def test_a_cookie_copied_before_logout_gets_the_login_page_after(env):
    runtime, clock, app, _site = env
    client = _sign_in(app)
    thief = _copy_of_cookie(app, client)
    assert thief.get("/").status_code == 200  # the copy works while the session lives

    logout = client.post("/logout", data={"csrf_token": _csrf(client.get("/").get_data(as_text=True))})
    assert _sent_to_login(logout)

    assert _sent_to_login(thief.get("/"))
    assert thief.get("/monitor", headers={"Accept": "application/json"}).status_code == 401
    clock.instant += timedelta(hours=1)
    assert _sent_to_login(thief.get("/"))
    [row] = _rows(runtime)
    assert row.ended_at is not None and row.end_reason == "logout"


def test_another_session_of_the_same_admin_survives_a_logout(env):
    _runtime, _clock, app, _site = env
    laptop, phone = _sign_in(app), _sign_in(app)
    laptop.post("/logout", data={"csrf_token": _csrf(laptop.get("/").get_data(as_text=True))})
    assert phone.get("/").status_code == 200


def test_a_password_change_in_wordpress_ends_the_session(env):
    runtime, clock, app, site = env
    client = _sign_in(app)
    thief = _copy_of_cookie(app, client)
    wp = sa.create_engine(site)
    try:
        with wp.begin() as conn:
            conn.execute(sa.text("UPDATE wp_users SET user_pass = :h WHERE ID = :id"),
                         {"h": OTHER_HASH, "id": seed.ADMIN_ID})
    finally:
        wp.dispose()
    clock.instant += timedelta(minutes=6)  # past the re-check interval
    assert _sent_to_login(thief.get("/"))
    assert _sent_to_login(client.get("/"))
    [row] = _rows(runtime)
    assert row.end_reason == "password_changed"


def test_a_cookie_without_a_server_side_session_is_refused(env):
    """A cookie signed with the right key but never issued by a login (or from before this change)."""
    _runtime, _clock, app, _site = env
    client = app.test_client()
    with client.session_transaction() as session:
        now = START.timestamp()
        session["admin"] = {"id": seed.ADMIN_ID, "login": "admin", "name": "x", "at": now, "checked": now}
    assert _sent_to_login(client.get("/"))
    with client.session_transaction() as session:
        session["admin"] = {"id": seed.ADMIN_ID, "sid": "made-up", "login": "admin", "name": "x",
                            "at": now, "checked": now}
    assert _sent_to_login(client.get("/"))
