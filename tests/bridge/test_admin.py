"""Admin pages of the grant bridge: list with filters and keyset pages, detail, retry/cancel, CSRF, i18n."""

from __future__ import annotations

import html
import re
from datetime import date, datetime, timedelta, timezone
from urllib.parse import parse_qs, urlsplit
from zoneinfo import ZoneInfo

import pytest
import sqlalchemy as sa

from sidecar.app import create_app
from sidecar.bootstrap import build_runtime, store_url
from sidecar.bridge import queries
from sidecar.bridge.auth import Principal
from sidecar.bridge.outbox import GrantDeliverer
from sidecar.bridge.parsers import parse_grant_body
from sidecar.bridge.reasons import META_KEY, error_values
from sidecar.bridge.service import BridgeService, IntakeContext
from sidecar.clock import FixedClock
from sidecar.devstack import seed
from sidecar.domain.messages import Message
from sidecar.store.db import unit_of_work
from sidecar.store.grant_models import CANCELLED, FAILED, QUEUED, SUCCEEDED, Grant, GrantAttempt
from sidecar.store.models import AuditEvent
from tests.stores import migrate_store
from tests.strong_secrets import strong_secret

START = datetime(2026, 11, 24, 10, 0, tzinfo=timezone.utc)
API_KEY = strong_secret("crm-test-key")
LEVEL_7 = "Английский с нуля"


class Admin:
    """A runtime on a settable clock, the app, and a browser signed in as the demo administrator."""

    def __init__(self, runtime) -> None:
        self.runtime = runtime
        self.clock: FixedClock = runtime.clock
        self.service = BridgeService(runtime)
        self.app = create_app(runtime, testing=True)
        self.client = self.app.test_client()

    # --- grants ---

    def accept(self, email: str, *, term_id: int = 7, duration: int = 1, units: str = "months",
               external_id: str | None = None, channel: str = "api", lead_id: int | None = None) -> Grant:
        body = {"user": {"email": email}, "grant": {"term_id": term_id, "duration": duration, "units": units},
                "source": "crm-test"}
        if external_id:
            body["external_id"] = external_id
        if lead_id:
            body["meta"] = {"amo_lead_id": lead_id}
        context = IntakeContext(channel=channel, principal=Principal("api_key", "crm"), source_ip="203.0.113.5")
        return self.service.accept(parse_grant_body(body), context).grant

    def fail(self, grant_id: str, error: str = "MemberLux refused the order: product is not published") -> None:
        """What the worker leaves behind after a permanent refusal."""
        now = self.clock.now()
        with unit_of_work(self.runtime.sessions) as session:
            grant = session.get(Grant, grant_id)
            grant.status, grant.last_error, grant.attempts, grant.completed_at = FAILED, error, 1, now
            session.add(GrantAttempt(grant_id=grant_id, number=1, kind="order", started_at=now, finished_at=now,
                                     outcome="permanent", http_status=400, detail=error, elapsed_ms=12,
                                     worker="test-worker"))

    def grant(self, grant_id: str) -> Grant:
        with self.runtime.sessions() as session:
            return session.get(Grant, grant_id)

    def events(self, grant_id: str) -> list[AuditEvent]:
        with self.runtime.sessions() as session:
            return list(session.scalars(sa.select(AuditEvent).where(AuditEvent.subject_id == grant_id)
                                        .order_by(AuditEvent.id)))

    # --- browser ---

    def login(self) -> None:
        token = csrf_in(self.client.get("/login").get_data(as_text=True))
        response = self.client.post("/login", data={"csrf_token": token, "login": seed.DEMO_ADMIN_LOGIN,
                                                    "password": seed.DEMO_ADMIN_PASSWORD})
        assert response.status_code == 302, response.get_data(as_text=True)

    def page(self, url: str) -> str:
        response = self.client.get(url)
        assert response.status_code == 200, (url, response.status_code)
        return html.unescape(response.get_data(as_text=True))

    def post(self, url: str, *, with_token: bool = True):
        data = {}
        if with_token:
            data["csrf_token"] = csrf_in(self.client.get("/admin/grants").get_data(as_text=True))
        return self.client.post(url, data=data)


def csrf_in(page: str) -> str:
    found = re.search(r'name="csrf_token" value="([^"]+)"', page)
    assert found, "no CSRF field in the page"
    return found.group(1)


def listed_ids(page: str) -> list[str]:
    return re.findall(r'href="/admin/grants/(g[0-9a-z]+)"', page)


def link(page: str, css_class: str) -> str | None:
    found = re.search(rf'<a href="([^"]+)" class="{css_class}"', page)
    return html.unescape(found.group(1)) if found else None


def flashes(page: str) -> list[str]:
    return [m.strip() for m in re.findall(r'<p class="flash flash-\w+"[^>]*>(.*?)</p>', page, re.S)]


@pytest.fixture
def admin(small_site, emulator, settings_for):
    settings = settings_for(small_site, emulator, bridge={"api_keys": {"crm": API_KEY}})
    migrate_store(store_url(settings))
    runtime = build_runtime(settings, clock=FixedClock(START))
    try:
        yield Admin(runtime)
    finally:
        runtime.close()


@pytest.fixture
def signed_in(admin):
    admin.login()
    return admin


# --- the list ----------------------------------------------------------------------------------------

def test_list_shows_grants_from_the_service_and_the_intake_endpoint(signed_in):
    admin = signed_in
    first = admin.accept("anna@example.org", external_id="deal-1")
    admin.clock.instant += timedelta(minutes=1)
    response = admin.client.post("/api/v1/grants", headers={"X-API-Key": API_KEY},
                                 json={"user": {"email": "boris@example.org"},
                                       "grant": {"term_id": 9, "duration": 3, "units": "months"}})
    assert response.status_code == 202, response.get_json()
    second = response.get_json()["grant_id"]

    page = admin.page("/admin/grants")
    assert listed_ids(page) == [second, first.id]  # newest first
    assert "anna@example.org" in page and "boris@example.org" in page
    assert LEVEL_7 in page and "Бизнес-английский" in page
    assert "3 mo." in page and "1 mo." in page
    # Created in the site's zone (Moscow, UTC+3) with UTC in the title.
    assert '<time datetime="2026-11-24T10:00:00+00:00" title="2026-11-24 10:00:00 UTC">2026-11-24 13:00:00</time>' in page
    assert "Created (Europe/Moscow)" in page
    chips = dict(re.findall(r'class="chip chip-(\w+)[^"]*"[^>]*>[^<]*<span class="count">(\d+)</span>', page))
    assert chips["all"] == "2" and chips["queued"] == "2" and chips["failed"] == "0"
    # The nav link of every page.
    assert 'href="/admin/grants">Grants</a>' in admin.page("/")


def test_list_columns_show_attempts_and_truncated_last_error(signed_in):
    admin = signed_in
    grant = admin.accept("anna@example.org")
    long_error = "MemberLux refused the order: " + "x" * 200
    admin.fail(grant.id, long_error)
    page = admin.page("/admin/grants")
    row = re.search(rf"<tr>\s*<td class=\"nowrap\"><a href=\"/admin/grants/{grant.id}\".*?</tr>", page, re.S).group(0)
    assert f'title="{long_error}"' in row
    assert long_error not in row.replace(f'title="{long_error}"', "")
    assert "…" in row
    assert re.search(r'<td class="num">1</td>', row)
    assert "status-failed" in row


def test_filters_by_status_channel_dates_and_search(signed_in):
    admin = signed_in
    anna = admin.accept("anna@example.org", external_id="deal-anna")
    admin.clock.instant += timedelta(days=1)
    boris = admin.accept("Boris@Example.org", channel="legacy", lead_id=31337)
    admin.clock.instant += timedelta(days=1)
    clara = admin.accept("clara@example.net")
    admin.fail(clara.id)
    admin.clock.instant = START  # back to when the admin signed in: sessions last 12 hours

    assert listed_ids(admin.page("/admin/grants?status=failed")) == [clara.id]
    assert listed_ids(admin.page("/admin/grants?status=queued")) == [boris.id, anna.id]
    assert listed_ids(admin.page("/admin/grants?channel=legacy")) == [boris.id]
    assert listed_ids(admin.page("/admin/grants?q=example.org")) == [boris.id, anna.id]
    assert listed_ids(admin.page("/admin/grants?q=BORIS")) == [boris.id]       # e-mail, case-insensitive
    assert listed_ids(admin.page("/admin/grants?q=deal-anna")) == [anna.id]    # external id
    assert listed_ids(admin.page(f"/admin/grants?q={clara.id}")) == [clara.id]  # grant id
    assert listed_ids(admin.page("/admin/grants?q=31337")) == [boris.id]       # amoCRM lead id
    assert listed_ids(admin.page("/admin/grants?q=%25")) == []                 # LIKE wildcards are literal
    # Days are the site's (Moscow): 25 November there is 24 Nov 21:00 to 25 Nov 21:00 UTC.
    assert listed_ids(admin.page("/admin/grants?from=2026-11-25&to=2026-11-25")) == [boris.id]
    assert listed_ids(admin.page("/admin/grants?from=2026-11-25")) == [clara.id, boris.id]
    assert listed_ids(admin.page("/admin/grants?to=2026-11-24")) == [anna.id]
    assert listed_ids(admin.page("/admin/grants?status=queued&channel=api")) == [anna.id]

    page = admin.page("/admin/grants?status=bogus&from=yesterday")
    assert listed_ids(page) == [clara.id, boris.id, anna.id]  # unusable filters are dropped...
    assert any("bogus" in text for text in flashes(page))     # ...and said so
    assert any("yesterday" in text for text in flashes(page))
    page = admin.page("/admin/grants?q=nobody")
    assert "No grants match these filters." in page


def test_pagination_is_stable_across_pages_with_ties_on_created_at(signed_in):
    admin = signed_in
    created = []
    for n in range(3):
        created.append(admin.accept(f"early{n}@example.org"))
    admin.clock.instant += timedelta(seconds=5)
    for n in range(7):  # a burst: seven grants in the same instant
        created.append(admin.accept(f"burst{n}@example.org"))
    admin.clock.instant += timedelta(seconds=5)
    created.append(admin.accept("late@example.org"))
    expected = [g.id for g in sorted(created, key=lambda g: (g.created_at, g.id), reverse=True)]

    url, seen, pages = "/admin/grants?per_page=3", [], 0
    while url:
        page = admin.page(url)
        pages += 1
        seen += listed_ids(page)
        if pages == 1:
            assert link(page, "first") is None
            # Grants arriving while the administrator reads do not shift the following pages.
            admin.clock.instant += timedelta(seconds=5)
            admin.accept("newcomer@example.org")
        else:
            assert link(page, "first") == "/admin/grants?per_page=3"
        url = link(page, "next")
        if url:
            assert parse_qs(urlsplit(url).query)["per_page"] == ["3"]
    assert pages == 4
    assert seen == expected  # every grant once, in order, ties broken by id


def test_pagination_keeps_filters_and_rejects_forged_cursors(signed_in):
    admin = signed_in
    for n in range(4):
        admin.accept(f"user{n}@example.org")
        admin.accept(f"other{n}@example.net")
        admin.clock.instant += timedelta(seconds=1)
    page = admin.page("/admin/grants?q=example.org&per_page=2")
    next_url = link(page, "next")
    assert parse_qs(urlsplit(next_url).query)["q"] == ["example.org"]
    second = admin.page(next_url)
    assert len(listed_ids(second)) == 2 and "example.net" not in second

    page = admin.page("/admin/grants?before=not-a-cursor")
    assert len(listed_ids(page)) == 8
    assert any("page link is not valid" in text for text in flashes(page))


def test_cursor_round_trip_and_day_range():
    cursor = queries.Cursor(datetime(2026, 11, 24, 10, 0, 0, 123456, tzinfo=timezone.utc), "g0abc")
    assert queries.Cursor.decode(cursor.encode()) == cursor
    for bad in ("", "123", "x.gabc", "12.", "12.g-1", "9" * 40 + ".g1"):
        with pytest.raises(ValueError):
            queries.Cursor.decode(bad)
    start, end = queries.day_range(date(2026, 11, 25), date(2026, 11, 25), ZoneInfo("Europe/Moscow"))
    assert start == datetime(2026, 11, 24, 21, 0, tzinfo=timezone.utc)
    assert end == datetime(2026, 11, 25, 21, 0, tzinfo=timezone.utc)
    assert queries.day_range(None, None, timezone.utc) == (None, None)


# --- one grant -----------------------------------------------------------------------------------------

def test_detail_shows_fields_attempts_and_audit(signed_in):
    admin = signed_in
    grant = admin.accept("anna@example.org", external_id="deal-77", duration=3)
    step = GrantDeliverer(admin.runtime, admin.service).process_by_id(grant.id)
    assert step is not None and step.status == SUCCEEDED, step

    page = admin.page(f"/admin/grants/{grant.id}")
    assert f"Grant {grant.id}" in page
    assert "anna@example.org" in page and "deal-77" in page and "api_key:crm" in page
    assert f"{LEVEL_7} (#7)" in page and "3 mo." in page
    attempts = re.search(r'<table class="grid attempts">.*?</table>', page, re.S).group(0)
    assert "<td>order</td>" in attempts and "outcome-ok" in attempts
    russian = re.search(r'<table class="grid attempts">.*?</table>', admin.page(f"/admin/grants/{grant.id}?lang=ru"),
                        re.S).group(0)
    assert "<td>заказ</td>" in russian and '<span class="badge outcome-ok">успешно</span>' in russian
    admin.page(f"/admin/grants/{grant.id}?lang=en")
    assert re.search(r'<td class="num">20\d</td>', attempts)       # HTTP status of the order call
    assert re.search(r"\d+ ms", attempts)
    trail = re.search(r'<table class="grid audit">.*?</table>', page, re.S).group(0)
    for action in ("intake.received", "intake.validated", "intake.product_chosen"):
        assert f"<code>{action}</code>" in trail
    assert "203.0.113.5" in trail and "api_key:crm" in trail
    assert '<span class="k">email</span>=<span class="v">anna@example.org</span>' in trail
    # A succeeded grant offers neither retry nor cancel.
    assert "/retry" not in page and "/cancel" not in page


def test_unknown_grant_is_404(signed_in):
    assert signed_in.client.get("/admin/grants/gnosuchgrant").status_code == 404


def test_retry_of_a_failed_grant_queues_it(signed_in):
    admin = signed_in
    grant = admin.accept("anna@example.org")
    admin.fail(grant.id)
    page = admin.page(f"/admin/grants/{grant.id}")
    assert f'action="/admin/grants/{grant.id}/retry"' in page
    assert "permanent" in page and "test-worker" in page

    response = admin.post(f"/admin/grants/{grant.id}/retry")
    assert response.status_code == 302 and response.headers["Location"] == f"/admin/grants/{grant.id}"
    assert admin.grant(grant.id).status == QUEUED
    last = admin.events(grant.id)[-1]
    assert (last.action, last.actor) == ("admin.retry", seed.DEMO_ADMIN_LOGIN)
    page = admin.page(f"/admin/grants/{grant.id}")
    assert flashes(page) == ["The grant is back in the queue (queued)."]
    assert "<code>admin.retry</code>" in page

    # Retrying again is refused by the service and explained, not an error page.
    response = admin.post(f"/admin/grants/{grant.id}/retry")
    assert response.status_code == 302
    page = admin.page(f"/admin/grants/{grant.id}")
    assert flashes(page) == ["This grant is queued: only failed or cancelled grants can be retried."]


def test_cancel_of_a_queued_grant(signed_in):
    admin = signed_in
    grant = admin.accept("anna@example.org")
    assert f'action="/admin/grants/{grant.id}/cancel"' in admin.page(f"/admin/grants/{grant.id}")
    response = admin.post(f"/admin/grants/{grant.id}/cancel")
    assert response.status_code == 302
    stored = admin.grant(grant.id)
    assert stored.status == CANCELLED and stored.last_error == f"cancelled by {seed.DEMO_ADMIN_LOGIN}"
    assert [(e.action, e.actor) for e in admin.events(grant.id)][-1] == ("admin.cancel", seed.DEMO_ADMIN_LOGIN)
    page = admin.page(f"/admin/grants/{grant.id}")
    assert flashes(page) == ["The grant was cancelled."]
    assert "/cancel" not in page and f"/admin/grants/{grant.id}/retry" in page  # cancelled grants can be retried


def test_a_grants_last_error_is_worded_in_the_page_language(signed_in):
    admin = signed_in
    cancelled = admin.accept("anna@example.org")
    admin.post(f"/admin/grants/{cancelled.id}/cancel")
    ru = admin.page(f"/admin/grants/{cancelled.id}?lang=ru")
    assert f"отменил(а) {seed.DEMO_ADMIN_LOGIN}" in ru and META_KEY not in ru   # the copy is not shown as meta
    assert f"cancelled by {seed.DEMO_ADMIN_LOGIN}" in admin.page(f"/admin/grants/{cancelled.id}?lang=en")

    # An amoCRM lead refused for its fields: our sentence and each field's in Russian, the field as named.
    rejected = admin.accept("boris@example.org")
    reason = Message("grants.lead_rejected_fields", {"lead": 77, "reason": Message("grants.invalid_fields"), "fields": [
        Message("grants.duration_not_number", field="lead.duration"), Message("grants.units_invalid", field="lead.units")]})
    with unit_of_work(admin.runtime.sessions) as session:
        grant = session.get(Grant, rejected.id)
        for name, value in error_values(grant.meta, reason).items():
            setattr(grant, name, value)
        grant.status = FAILED
    assert admin.grant(rejected.id).last_error == ("amoCRM lead 77: the request has invalid fields; lead.duration: "
                                                   "duration must be a whole number; lead.units: units must be day(s), "
                                                   "month(s) or year(s) (Russian words accepted too)")
    ru = admin.page(f"/admin/grants/{rejected.id}?lang=ru")
    assert ("сделка amoCRM 77: в запросе неверные поля; lead.duration: срок должен быть целым числом; lead.units: "
            "единицы — дни, месяцы или годы (по-русски или по-английски)") in ru
    listed = admin.page("/admin/grants?lang=ru")
    assert 'title="сделка amoCRM 77: в запросе неверные поля;' in listed

    # A row written before codes (or a reason the meta's copy no longer matches) shows its English as written.
    old = admin.accept("vera@example.org")
    admin.fail(old.id, "MemberLux refused the order: product is not published")
    assert "MemberLux refused the order: product is not published" in admin.page(f"/admin/grants/{old.id}?lang=ru")


def test_cancel_of_a_delivered_grant_is_refused_with_a_message(signed_in):
    admin = signed_in
    grant = admin.accept("anna@example.org")
    GrantDeliverer(admin.runtime, admin.service).process_by_id(grant.id)
    admin.post(f"/admin/grants/{grant.id}/cancel")
    assert admin.grant(grant.id).status == SUCCEEDED
    page = admin.page(f"/admin/grants/{grant.id}")
    assert len(flashes(page)) == 1 and flashes(page)[0].startswith("This grant is succeeded: only queued")


def test_action_on_an_unknown_grant_goes_back_to_the_list(signed_in):
    response = signed_in.post("/admin/grants/gnosuchgrant/retry")
    assert response.status_code == 302 and response.headers["Location"] == "/admin/grants"
    assert flashes(signed_in.page("/admin/grants")) == ["There is no grant gnosuchgrant."]


def test_post_without_csrf_token_is_403(signed_in):
    admin = signed_in
    grant = admin.accept("anna@example.org")
    admin.fail(grant.id)
    for action in ("retry", "cancel"):
        response = admin.post(f"/admin/grants/{grant.id}/{action}", with_token=False)
        assert response.status_code == 403
        response = admin.client.post(f"/admin/grants/{grant.id}/{action}", data={"csrf_token": "forged" * 8})
        assert response.status_code == 403
    assert admin.grant(grant.id).status == FAILED


def test_not_signed_in_is_sent_to_the_login(admin):
    grant = admin.accept("anna@example.org")
    admin.fail(grant.id)
    for url in ("/admin/grants?status=failed", f"/admin/grants/{grant.id}"):
        response = admin.client.get(url)
        assert response.status_code == 302
        location = urlsplit(response.headers["Location"])
        assert location.path == "/login" and parse_qs(location.query)["next"] == [url]
    token = csrf_in(admin.client.get("/login").get_data(as_text=True))
    response = admin.client.post(f"/admin/grants/{grant.id}/retry", data={"csrf_token": token})
    assert response.status_code == 302 and urlsplit(response.headers["Location"]).path == "/login"
    assert admin.grant(grant.id).status == FAILED
    assert admin.client.get("/admin/grants", headers={"Accept": "application/json"}).status_code == 401


def test_russian_rendering(signed_in):
    admin = signed_in
    grant = admin.accept("anna@example.org", term_id=8, duration=30, units="days")
    admin.fail(grant.id)
    page = admin.page("/admin/grants?lang=ru")
    assert "<h1>Выдачи доступа</h1>" in page
    assert "Создана (Europe/Moscow)" in page and "ошибка" in page and "30 дн." in page
    assert 'href="/admin/grants">Выдачи доступа</a>' in page
    detail = admin.page(f"/admin/grants/{grant.id}")  # the choice is remembered in a cookie
    assert f"Выдача {grant.id}" in detail and "Журнал действий" in detail and "Повторить" in detail
    admin.post(f"/admin/grants/{grant.id}/retry")
    assert flashes(admin.page(f"/admin/grants/{grant.id}")) == ["Выдача снова в очереди (в очереди)."]
