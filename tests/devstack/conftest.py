"""Fixtures for the devstack tests: seeded sites and emulators served over real HTTP."""

from __future__ import annotations

from collections.abc import Callable, Iterator
from dataclasses import dataclass
from datetime import date, datetime, timezone

import pytest
import sqlalchemy as sa

from sidecar.devstack.emulator import create_emulator_app
from sidecar.devstack.seed import DEMO_API_LOGIN, DEMO_APP_PASSWORD, SeedSummary
from sidecar.devstack.server import serve_in_thread
from sidecar.devstack.site_model import MemberLuxSite
from tests.sites import seeded_site

SEED_TODAY = date(2026, 1, 20)
LEARNER_APP_PASSWORD = "lrnr pass word 0000 1111 2222"


class MutableClock:
    """Injectable clock: tests move ``moment`` to set "now"."""

    def __init__(self, moment: datetime):
        self.moment = moment

    def __call__(self) -> datetime:
        return self.moment


@dataclass
class Emulator:
    base_url: str
    engine: sa.Engine
    summary: SeedSummary
    clock: MutableClock
    learner_login: str
    learner_id: int
    #: The site model behind the app (fault plan, gates, mailbox).
    site: MemberLuxSite

    @property
    def auth(self) -> tuple[str, str]:
        return DEMO_API_LOGIN, DEMO_APP_PASSWORD

    @property
    def learner_auth(self) -> tuple[str, str]:
        """A learner (role customer) holding an application password: authenticates, lacks rights."""
        return self.learner_login, LEARNER_APP_PASSWORD

    @property
    def order_url(self) -> str:
        return self.base_url + "/wp-json/mbl/v1/order"

    def scalar(self, sql: str, **params):
        with self.engine.connect() as conn:
            return conn.execute(sa.text(sql), params).scalar()

    def rows(self, sql: str, **params):
        with self.engine.connect() as conn:
            return conn.execute(sa.text(sql), params).mappings().all()


@pytest.fixture
def site_engine(site_db_url: str) -> Iterator[sa.Engine]:
    engine = sa.create_engine(site_db_url)
    yield engine
    engine.dispose()


@pytest.fixture
def make_emulator(site_db_url: str, site_engine: sa.Engine) -> Iterator[Callable[..., Emulator]]:
    """A small seeded site of its own per test; start emulators on it (each on its own port)."""
    summary = seeded_site(site_db_url, users=40, levels=6, seed=7, today=SEED_TODAY)
    with site_engine.connect() as conn:
        learner_id, learner_login = conn.execute(sa.text(
            "SELECT ID, user_login FROM wp_users WHERE ID = 4")).one()
    started: list[tuple[MemberLuxSite, Callable[[], None]]] = []

    def start(*, moment: datetime | None = None, **options) -> Emulator:
        clock = MutableClock(moment or datetime(2026, 1, 31, 10, 0, 0, tzinfo=timezone.utc))
        options.setdefault("extra_app_passwords", {learner_login: LEARNER_APP_PASSWORD})
        app = create_emulator_app(site_engine, clock=clock, **options)
        site = app.extensions["mbl_emulator"]
        base_url, stop = serve_in_thread(app)
        started.append((site, stop))
        return Emulator(base_url, site_engine, summary, clock, learner_login, int(learner_id), site)

    yield start
    for site, stop in started:
        # Orders still running (paused, slow) would write into a database that is about to go.
        site.shutdown()
        stop()


@pytest.fixture
def emulator(make_emulator: Callable[..., Emulator]) -> Emulator:
    return make_emulator()
