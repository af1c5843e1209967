"""What the monitor tests share: the seeded day, the report's token, ``Monitor`` (a runtime on a fixed
clock with a refreshed read model, the app and a browser) and page readers. Fixtures live in
``conftest.py``.
"""

from __future__ import annotations

import html
import re
from datetime import datetime, timezone

from sidecar.app import create_app
from sidecar.clock import FixedClock
from sidecar.devstack import seed
from sidecar.monitor.refresh import SleeperRefresher
from sidecar.monitor.service import MonitorService, SleeperQuery, SleeperRow
from tests.strong_secrets import strong_secret

START = datetime(2026, 11, 24, 10, 0, tzinfo=timezone.utc)  # the small site is seeded for this day
TODAY = START.date()
API_TOKEN = strong_secret("reports-token")
LEVELS = {7: "Английский с нуля", 8: "Английский для путешествий", 9: "Бизнес-английский", 10: "Йога для начинающих"}


class Monitor:
    """A runtime on a fixed clock with a refreshed read model, the app and a signed-in browser."""

    def __init__(self, runtime) -> None:
        self.runtime = runtime
        self.clock: FixedClock = runtime.clock
        self.service = MonitorService(runtime)
        self.refresher = SleeperRefresher(runtime)
        self.app = create_app(runtime, testing=True)
        self.client = self.app.test_client()

    def login(self) -> None:
        token = csrf_in(self.client.get("/login").get_data(as_text=True))
        response = self.client.post("/login", data={"csrf_token": token, "login": seed.DEMO_ADMIN_LOGIN,
                                                    "password": seed.DEMO_ADMIN_PASSWORD})
        assert response.status_code == 302, response.get_data(as_text=True)

    def page(self, url: str) -> str:
        response = self.client.get(url)
        assert response.status_code == 200, (url, response.status_code, response.get_data(as_text=True)[:500])
        return html.unescape(response.get_data(as_text=True))

    def all_rows(self, **filters) -> list[SleeperRow]:
        """Every sleeper matching ``filters``, in the configured order unless one is given."""
        sort, descending = self.service.default_order()
        return list(self.service.iterate(SleeperQuery(**{"sort": sort, "descending": descending, **filters})))


def csrf_in(page: str) -> str:
    found = re.search(r'name="csrf_token" value="([^"]+)"', page)
    assert found, "no CSRF field in the page"
    return found.group(1)


def listed(page: str) -> list[tuple[int, int]]:
    """(user_id, level) of the table rows, in page order."""
    return [(int(u), int(t)) for u, t in re.findall(r'<tr class="sleeper[^"]*" data-user="(\d+)" data-level="(\d+)"', page)]


def link(page: str, css_class: str) -> str | None:
    found = re.search(rf'<a href="([^"]+)" class="{css_class}"', page)
    return found.group(1) if found else None


def flashes(page: str) -> list[str]:
    return [m.strip() for m in re.findall(r'<p class="flash flash-\w+"[^>]*>(.*?)</p>', page, re.S)]


def walk(monitor: Monitor, url: str) -> tuple[list[tuple[int, int]], int]:
    """Follow "next page" links from ``url``; returns every row seen and the number of pages."""
    seen: list[tuple[int, int]] = []
    pages = 0
    while url:
        page = monitor.page(url)
        pages += 1
        seen += listed(page)
        url = link(page, "next")
        assert pages < 100, "the pager does not end"
    return seen, pages


