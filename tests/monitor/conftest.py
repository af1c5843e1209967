"""Fixtures of the monitor tests: ``build_monitor`` (a ``Monitor`` on a migrated store, read model built)
and ``monitor`` (signed in, with a report token)."""

from __future__ import annotations

import pytest

from sidecar.bootstrap import build_runtime, store_url
from sidecar.clock import FixedClock
from tests.monitor.support import API_TOKEN, START, Monitor
from tests.stores import migrate_store


@pytest.fixture
def build_monitor(small_site, settings_for):
    built = []

    def build(**web) -> Monitor:
        settings = settings_for(small_site, web=web)
        migrate_store(store_url(settings))
        runtime = build_runtime(settings, clock=FixedClock(START))
        built.append(runtime)
        monitor = Monitor(runtime)
        monitor.refresher.refresh_all()
        return monitor

    yield build
    for runtime in built:
        runtime.close()


@pytest.fixture
def monitor(build_monitor) -> Monitor:
    built = build_monitor(api_tokens={"reports": API_TOKEN})
    built.login()
    return built


