"""Finding 13: with the store (or the WordPress database) down, read endpoints answered a 500 HTML
page while writes answered 503 + Retry-After. Every route now answers 503 with Retry-After: JSON for
machine routes, a bilingual page without a stack trace for admin pages, and one log line without the
exception's SQL."""

from __future__ import annotations

import logging
import re

import pytest
import sqlalchemy as sa

from sidecar.app import create_app
from sidecar.devstack import seed
from tests.strong_secrets import strong_secret

TOKEN = strong_secret("reports-token-for-store-down")
# Nothing listens on port 1: connections are refused at once, as with a stopped database server.
CLOSED_PORT = "mysql+pymysql://mlsidecar@127.0.0.1:1/mlsidecar?connect_timeout=2"


@pytest.fixture
def live(small_site, emulator, settings_for, make_runtime, admin_pages):
    """A working runtime, an app on it, and a client with the demo administrator signed in."""

    def build(**store):
        settings = settings_for(small_site, emulator, web={"api_tokens": {"reports": TOKEN}}, store=store)
        runtime = make_runtime(settings)
        app, client = admin_pages.signed_in(runtime)
        assert client.get("/").status_code == 200
        return runtime, app, client

    return build


def _kill_store(runtime) -> None:
    dead = sa.create_engine(CLOSED_PORT)
    runtime.store_engine = dead
    runtime.sessions.configure(bind=dead)


def _kill_wordpress(runtime) -> None:
    dead = sa.create_engine(CLOSED_PORT)
    runtime.wp_engine = dead
    runtime.reader.engine = dead


def _check_all_routes(client, caplog) -> None:
    machine = {
        "/api/v1/sleepers": {"Authorization": f"Bearer {TOKEN}"},
        "/metrics": {"Authorization": f"Bearer {TOKEN}"},
        "/readyz": {},
    }
    for path, headers in machine.items():
        caplog.clear()
        response = client.get(path, headers=headers)
        assert response.status_code == 503, path
        assert response.headers["Retry-After"].isdigit(), path
        assert response.is_json, path
        assert "Traceback" not in response.get_data(as_text=True)

    for path, language, heading in (("/?lang=en", "en", "Temporarily unavailable"),
                                    ("/monitor?lang=ru", "ru", "Временно недоступно")):
        caplog.clear()
        response = client.get(path, headers={"Accept-Language": language})
        assert response.status_code == 503, path
        assert response.headers["Retry-After"].isdigit()
        page = response.get_data(as_text=True)
        assert response.mimetype == "text/html" and heading in page
        assert "Traceback" not in page and "OperationalError" not in page and "SELECT" not in page
        # Logged once, as one line: no traceback, no SQL, no parameters.
        errors = [r for r in caplog.records if r.levelno >= logging.ERROR]
        assert len(errors) == 1, [r.getMessage() for r in errors]
        assert errors[0].exc_info is None and "SELECT" not in errors[0].getMessage()


def test_store_down_mid_run_answers_503_on_every_route(live, caplog):
    runtime, _app, client = live()
    _kill_store(runtime)
    _check_all_routes(client, caplog)
    # Signing in needs the store (throttle, session row): 503 too, not a 500.
    other = create_app(runtime, testing=True).test_client()
    page = other.get("/login?lang=en").get_data(as_text=True)  # the form itself needs no database
    token = re.search(r'name="csrf_token" value="([^"]+)"', page).group(1)  # type: ignore[union-attr]
    response = other.post("/login", data={"csrf_token": token, "login": seed.DEMO_ADMIN_LOGIN, "password": "x"})
    assert response.status_code == 503 and "Temporarily unavailable" in response.get_data(as_text=True)


def test_wordpress_database_down_mid_run_answers_503(live, caplog):
    runtime, _app, client = live()
    _kill_wordpress(runtime)
    response = client.get("/?lang=en")
    assert response.status_code == 503 and "Temporarily unavailable" in response.get_data(as_text=True)
    response = client.get("/api/v1/sleepers", headers={"Authorization": f"Bearer {TOKEN}"})
    assert response.status_code == 503 and response.headers["Retry-After"].isdigit()
    assert response.get_json()["code"] == "store_unavailable"
    assert client.get("/readyz").status_code == 503


@pytest.mark.mariadb
def test_mariadb_store_dropped_mid_run_answers_503(live, mariadb_database, caplog):
    runtime, _app, client = live(url=mariadb_database)
    url = sa.make_url(mariadb_database)
    admin = sa.create_engine(url.set(database=""))
    try:
        with admin.begin() as conn:
            conn.execute(sa.text(f"DROP DATABASE `{url.database}`"))
    finally:
        admin.dispose()
    _check_all_routes(client, caplog)
    runtime.store_engine.dispose()  # new connections: "unknown database"
    _check_all_routes(client, caplog)
