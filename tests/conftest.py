"""Shared fixtures: database servers, throwaway databases, and the "must MariaDB run?" policy.

MariaDB-backed tests are marked ``mariadb``. In CI (``CI=true``) or with ``MLS_REQUIRE_MARIADB=1``
an unreachable server fails those tests; elsewhere they are skipped with the reason shown in the
summary (pytest runs with ``-ra``).
"""

from __future__ import annotations

import os
from collections.abc import Iterator
from pathlib import Path

import pytest
import sqlalchemy as sa

from tests.admin_pages import AdminPages
from tests.databases import fresh_database, without_opportunistic_tls

# Fixtures of three features that the security tests use as well.
pytest_plugins = ("tests.bridge.fixtures", "tests.reminders.school", "tests.webhooks.support")

MARIADB_ADMIN_URL = without_opportunistic_tls(
    os.environ.get("MLS_TEST_MARIADB_URL", "mysql+pymysql://root@127.0.0.1:3306/"))
POSTGRES_ADMIN_URL = os.environ.get("MLS_TEST_POSTGRES_URL", "postgresql+psycopg://postgres@127.0.0.1:5432/postgres")


def pytest_xdist_auto_num_workers(config) -> int:  # pytest-xdist's hook signature
    """``-n auto``: at least four workers. Most tests wait on sockets, databases and sleeping emulators
    rather than on the CPU, so on a 2-core machine four workers finish sooner than two."""
    return max(4, os.cpu_count() or 1)


def pytest_collection_modifyitems(config, items) -> None:  # pytest's hook signature
    """Slow tests first: started last, one of them would leave the other workers idle at the end."""
    items.sort(key=lambda item: item.get_closest_marker("slow") is None)


def mariadb_required() -> bool:
    return os.environ.get("CI", "").lower() in {"1", "true", "yes"} or os.environ.get("MLS_REQUIRE_MARIADB") == "1"


def _server_unreachable(url: str) -> str | None:
    try:
        engine = sa.create_engine(url, connect_args={"connect_timeout": 3} if url.startswith("mysql") else {})
        with engine.connect() as conn:
            conn.exec_driver_sql("SELECT 1")
        engine.dispose()
        return None
    except Exception as exc:  # noqa: BLE001 - any failure means "not reachable" here
        return f"{type(exc).__name__}: {str(exc).splitlines()[0][:200]}"


@pytest.fixture(scope="session", autouse=True)
def _reflect_each_schema_once() -> Iterator[None]:
    """Runtimes reflect a site's schema once per distinct schema in this process (``tests/sites.py``)."""
    import sidecar.bootstrap
    from tests.sites import ReflectionCache

    patch = pytest.MonkeyPatch()
    patch.setattr(sidecar.bootstrap, "reflect_site", ReflectionCache(sidecar.bootstrap.reflect_site))
    yield
    patch.undo()


@pytest.fixture(scope="session")
def mariadb_admin_url() -> str:
    problem = _server_unreachable(MARIADB_ADMIN_URL)
    if problem:
        message = f"MariaDB at {MARIADB_ADMIN_URL} unreachable ({problem})"
        if mariadb_required():
            pytest.fail(message + "; MariaDB tests are mandatory in CI", pytrace=False)
        pytest.skip(message + "; set MLS_TEST_MARIADB_URL or start MariaDB to run these tests")
    return MARIADB_ADMIN_URL


@pytest.fixture
def mariadb_database(mariadb_admin_url: str) -> Iterator[str]:
    """A fresh, empty MariaDB database (URL), dropped after the test."""
    with fresh_database(mariadb_admin_url) as url:
        yield url


@pytest.fixture(scope="session")
def postgres_admin_url() -> str:
    problem = _server_unreachable(POSTGRES_ADMIN_URL)
    if problem:
        pytest.skip(f"PostgreSQL at {POSTGRES_ADMIN_URL} unreachable ({problem})")
    return POSTGRES_ADMIN_URL


@pytest.fixture
def postgres_database(postgres_admin_url: str) -> Iterator[str]:
    """A fresh, empty PostgreSQL database (URL), dropped after the test."""
    with fresh_database(postgres_admin_url) as url:
        yield url


@pytest.fixture(params=["sqlite", pytest.param("mariadb", marks=pytest.mark.mariadb)])
def site_db_url(request: pytest.FixtureRequest, tmp_path) -> str:
    """An empty database for a WordPress site, on SQLite and on MariaDB."""
    if request.param == "sqlite":
        return f"sqlite:///{tmp_path / 'wordpress.sqlite'}"
    return request.getfixturevalue("mariadb_database")


@pytest.fixture(params=["sqlite", pytest.param("mariadb", marks=pytest.mark.mariadb)])
def store_section(request: pytest.FixtureRequest) -> dict:
    """The ``[store]`` section of a test's settings: empty (the default SQLite file in tmp_path) or a
    fresh MariaDB database, so a test runs once on each store."""
    return {"url": request.getfixturevalue("mariadb_database")} if request.param == "mariadb" else {}


# --- a small emulated site with the sidecar wired to it ----------------------------------------------

SMALL_SITE = {"users": 60, "levels": 4, "seed": 7}


@pytest.fixture(scope="session")
def small_site_template(tmp_path_factory) -> Path:
    """A seeded SQLite site built once per session; tests get their own copy."""
    from datetime import date

    from sidecar.devstack.site import build_demo_site

    path = tmp_path_factory.mktemp("site-template") / "wordpress.sqlite"
    build_demo_site(f"sqlite:///{path}", today=date(2026, 11, 24), fresh=True, **SMALL_SITE)
    return path


@pytest.fixture
def small_site(small_site_template, tmp_path) -> str:
    """URL of a private copy of the seeded SQLite site."""
    import shutil

    target = tmp_path / "wordpress.sqlite"
    shutil.copyfile(small_site_template, target)
    return f"sqlite:///{target}"


@pytest.fixture
def emulator(small_site):
    """The emulated site served over real HTTP: yields (base_url, app_user, app_password, engine)."""
    from sidecar.devstack.emulator import create_emulator_app
    from sidecar.devstack.seed import DEMO_API_LOGIN
    from sidecar.devstack.server import serve_in_thread

    engine = sa.create_engine(small_site, connect_args={"timeout": 30, "check_same_thread": False})
    password = "test-app-password-0000"
    app = create_emulator_app(engine, prefix="wp_", app_user=DEMO_API_LOGIN, app_password=password, dialect="both")
    base_url, stop = serve_in_thread(app)
    try:
        yield base_url, DEMO_API_LOGIN, password, engine
    finally:
        # Orders the site is still working on (the caller gave up) end before the database goes.
        app.extensions["mbl_emulator"].shutdown()
        stop()
        engine.dispose()


@pytest.fixture
def settings_for(tmp_path):
    """Build Settings for a site URL (and optional emulator) with a store in tmp_path."""
    from sidecar.config import settings_from_mapping

    def build(site_url: str, emulator=None, **sections):
        memberlux = {"rest_base_url": "http://127.0.0.1:9/wp-json", "rest_user": "nobody", "rest_password": "x"}
        if emulator is not None:
            base_url, user, password, _engine = emulator
            memberlux = {"rest_base_url": base_url + "/wp-json", "rest_user": user, "rest_password": password,
                         "timeout_seconds": 30}
        data = {"wordpress": {"db_url": site_url}, "memberlux": memberlux,
                "store": {"url": f"sqlite:///{tmp_path / 'store.sqlite'}"},
                "web": {"secret_key": "test-secret-key-not-for-production"}}
        for name, values in sections.items():
            data[name] = {**data.get(name, {}), **values}
        return settings_from_mapping(data, environ={})

    return build


@pytest.fixture
def make_runtime():
    """Build a Runtime for these settings on a freshly migrated store; closed after the test."""
    from sidecar.bootstrap import build_runtime, store_url
    from tests.stores import migrate_store

    made = []

    def build(settings, **kwargs):
        migrate_store(store_url(settings))
        made.append(build_runtime(settings, **kwargs))
        return made[-1]

    yield build
    for runtime in made:
        runtime.close()


@pytest.fixture
def runtime(small_site, emulator, settings_for):
    """A fully wired Runtime (migrated SQLite store) against the emulated site."""
    from sidecar.bootstrap import build_runtime, store_url
    from tests.stores import migrate_store

    settings = settings_for(small_site, emulator)
    migrate_store(store_url(settings))
    built = build_runtime(settings)
    try:
        yield built
    finally:
        built.close()


# --- a real SMTP server --------------------------------------------------------------------------------

class _Inbox:
    """What the server does with a message, and what it received.

    ``messages`` holds every message the server read in full and did not refuse: accepted ones, and
    those of the two faulty modes below, which a real server may well deliver.

    * ``fail_with = (code, text)``: refuse the message with this reply to the end of DATA;
    * ``drop_after_data = True``: read the whole message, then close the connection without a reply;
    * ``stall_after_data = seconds``: read the whole message, then say nothing for that long.
    """

    def __init__(self) -> None:
        self.messages: list = []
        self.raw: list[bytes] = []          # as received, to check the encoding on the wire
        self.fail_with: tuple[int, str] | None = None
        self.drop_after_data = False
        self.stall_after_data = 0.0

    async def handle_DATA(self, server, session, envelope):  # noqa: N802 - aiosmtpd's hook name
        import asyncio
        import email
        from email import policy

        if self.fail_with:
            code, text = self.fail_with
            return f"{code} {text}"
        raw = envelope.original_content or envelope.content
        self.raw.append(raw)
        message = email.message_from_bytes(raw, policy=policy.default)
        self.messages.append((envelope.mail_from, list(envelope.rcpt_tos), message))
        if self.drop_after_data:
            server.transport.close()        # nothing written yet: the client sees the connection end
            return "250 never seen by the client"
        if self.stall_after_data:
            await asyncio.sleep(self.stall_after_data)
        return "250 Message accepted for delivery"


@pytest.fixture
def smtp_server():
    """An aiosmtpd server on loopback; yields (host, port, inbox) where inbox.messages collects mail."""
    from aiosmtpd.controller import Controller

    import socket

    with socket.socket() as probe:  # the controller checks readiness by connecting, so port 0 won't do
        probe.bind(("127.0.0.1", 0))
        port = probe.getsockname()[1]
    inbox = _Inbox()
    controller = Controller(inbox, hostname="127.0.0.1", port=port)
    controller.start()
    try:
        yield "127.0.0.1", port, inbox
    finally:
        controller.stop()


@pytest.fixture
def admin_pages() -> type[AdminPages]:
    return AdminPages
