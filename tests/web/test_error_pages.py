"""Error pages: every refusal and failure answers in the normal frame and the visitor's language, with the
navigation only for a signed-in administrator, never a traceback, and 503 + Retry-After when a database
is down. Machine routes keep the APIs' JSON error shape. The favicon answers at both its addresses."""

from __future__ import annotations

import re

import pytest
import sqlalchemy as sa

from sidecar.app import create_app
from sidecar.devstack import seed

# Nothing listens on port 1: connections are refused at once, as with a stopped database server.
CLOSED_PORT = "mysql+pymysql://mlsidecar@127.0.0.1:1/mlsidecar?connect_timeout=2"
SECRET_IN_EXCEPTION = "password=hunter2 SELECT user_pass FROM wp_users"
NAVIGATION = ('href="/monitor"', 'href="/reminders"', 'href="/webhooks"', 'href="/admin/grants"')

TITLES = {
    (400, "en"): "The request could not be read", (400, "ru"): "Запрос не удалось прочитать",
    (403, "en"): "Not allowed", (403, "ru"): "Действие запрещено",
    (404, "en"): "Page not found", (404, "ru"): "Страница не найдена",
    (405, "en"): "Not available this way", (405, "ru"): "Так эта страница не открывается",
    (500, "en"): "Something went wrong", (500, "ru"): "Что-то пошло не так",
    (503, "en"): "Temporarily unavailable", (503, "ru"): "Временно недоступно",
}
CODE_LINE = {"en": "Error {code}", "ru": "Ошибка {code}"}


class Site:
    """The app on the small site, with a route that fails like a bug would, and its clients."""

    def __init__(self, runtime) -> None:
        self.runtime = runtime
        self.app = create_app(runtime, testing=True)

        def broken():
            raise RuntimeError(SECRET_IN_EXCEPTION)

        self.app.add_url_rule("/test/broken", "test_broken", broken)
        self.app.add_url_rule("/api/v1/test/broken", "test_broken_api", broken)
        self.admin = self.app.test_client()
        self.anonymous = self.app.test_client()
        page = self.admin.get("/login").get_data(as_text=True)
        token = self.csrf_in(page)
        signed = self.admin.post("/login", data={"csrf_token": token, "login": seed.DEMO_ADMIN_LOGIN,
                                                 "password": seed.DEMO_ADMIN_PASSWORD})
        assert signed.status_code == 302

    @staticmethod
    def csrf_in(page: str) -> str:
        found = re.search(r'name="csrf_token" value="([^"]+)"', page)
        assert found, "no CSRF field in the page"
        return found.group(1)

    def kill_store(self) -> None:
        dead = sa.create_engine(CLOSED_PORT)
        self.runtime.store_engine = dead
        self.runtime.sessions.configure(bind=dead)

    def kill_wordpress(self) -> None:
        dead = sa.create_engine(CLOSED_PORT)
        self.runtime.wp_engine = dead
        self.runtime.reader.engine = dead


@pytest.fixture
def site(small_site, settings_for, make_runtime):
    return Site(make_runtime(settings_for(small_site)))


def _request(site: Site, status: int, language: str):
    """A request that the app answers with ``status``, by the signed-in administrator."""
    if status == 400:
        return site.admin.post(f"/programs/1/status?lang={language}", data={
            "status": "bogus", "csrf_token": site.csrf_in(site.admin.get("/").get_data(as_text=True))})
    if status == 403:
        return site.admin.post(f"/logout?lang={language}")  # no CSRF token
    if status == 404:
        return site.admin.get(f"/no/such/page?lang={language}")
    if status == 405:
        return site.admin.get(f"/logout?lang={language}")
    return site.admin.get(f"/test/broken?lang={language}")


def _assert_error_page(response, status: int, language: str, *, navigation: bool) -> str:
    page = response.get_data(as_text=True)
    assert response.status_code == status and response.mimetype == "text/html", (status, page[:400])
    assert f"<h1>{TITLES[status, language]}</h1>" in page, page
    assert CODE_LINE[language].format(code=status) in page
    assert f'<html lang="{language}">' in page
    assert 'href="/static/app.css' in page and 'rel="icon"' in page  # the normal frame
    assert response.headers["Cache-Control"] == "no-store"
    assert "Traceback" not in page and "hunter2" not in page and "SELECT" not in page
    assert "test-secret-key-not-for-production" not in page
    shown = [link for link in NAVIGATION if link in page]
    assert shown == (list(NAVIGATION) if navigation else []), shown
    return page


@pytest.mark.parametrize("language", ["en", "ru"])
@pytest.mark.parametrize("status", [400, 403, 404, 405, 500])
def test_each_error_is_a_page_in_the_frame_with_the_navigation(site, caplog, status, language):
    response = _request(site, status, language)
    page = _assert_error_page(response, status, language, navigation=True)
    assert "Sign out" in page or "Выйти" in page  # the account stays on the bar
    if status == 405:
        assert "POST" in response.headers["Allow"]
    if status == 500:
        # The bug is in the log, with its traceback, for the administrator of the server.
        assert any(record.exc_info for record in caplog.records)


def test_a_page_s_own_explanation_is_kept_and_the_usual_one_translated(site):
    csrf = _request(site, 403, "ru").get_data(as_text=True)
    assert "Форма устарела или отправлена не с этого сайта" in csrf
    missing = site.admin.get("/monitor/users/999999?lang=en").get_data(as_text=True)
    assert "There is no WordPress user 999999." in missing
    assert "The requested URL was not found" not in missing
    unknown = site.admin.get("/no/such/page?lang=en").get_data(as_text=True)
    assert "There is no page at this address" in unknown


@pytest.mark.parametrize("language", ["en", "ru"])
def test_an_anonymous_visitor_gets_the_page_without_navigation_or_data(site, language):
    for status, response in ((404, site.anonymous.get(f"/no/such/page?lang={language}")),
                             (405, site.anonymous.get(f"/logout?lang={language}")),
                             (403, site.anonymous.post(f"/login?lang={language}", data={"login": "admin"})),
                             (500, site.anonymous.get(f"/test/broken?lang={language}"))):
        page = _assert_error_page(response, status, language, navigation=False)
        assert "<nav" not in page and "logout" not in page
        assert seed.DEMO_ADMIN_LOGIN not in page
        if status < 500:
            assert 'href="/login"' in page  # the way in, instead of the sections


def test_the_sign_in_page_offers_no_sections_either(site):
    page = site.anonymous.get("/login?lang=en").get_data(as_text=True)
    assert not [link for link in NAVIGATION if link in page]


@pytest.mark.parametrize("language", ["en", "ru"])
def test_store_down_is_503_with_retry_after_and_no_navigation(site, language):
    token = site.csrf_in(site.anonymous.get("/login").get_data(as_text=True))  # the form needs no database
    site.kill_store()
    signing_in = site.anonymous.post(f"/login?lang={language}", data={
        "csrf_token": token, "login": seed.DEMO_ADMIN_LOGIN, "password": seed.DEMO_ADMIN_PASSWORD})
    for response in (site.admin.get(f"/monitor?lang={language}"), signing_in):
        # Whether the visitor is signed in is in the store that failed: the frame shows no navigation.
        _assert_error_page(response, 503, language, navigation=False)
        assert response.headers["Retry-After"].isdigit()
    # A page that does not exist still says so, in the frame for a visitor nobody could check.
    _assert_error_page(site.admin.get(f"/no/such/page?lang={language}"), 404, language, navigation=False)


@pytest.mark.parametrize("language", ["en", "ru"])
def test_wordpress_down_is_503_with_retry_after_and_the_navigation(site, language):
    site.kill_wordpress()
    response = site.admin.get(f"/?lang={language}")
    # The store still answered who is signed in before the site's database failed.
    _assert_error_page(response, 503, language, navigation=True)
    assert response.headers["Retry-After"].isdigit()
    anonymous = site.anonymous.get(f"/no/such/page?lang={language}")
    _assert_error_page(anonymous, 404, language, navigation=False)


def test_machine_routes_keep_the_json_error_shape(site):
    missing = site.anonymous.get("/api/v1/no-such-thing")
    assert missing.status_code == 404 and missing.is_json
    assert missing.get_json()["ok"] is False and missing.get_json()["code"] == "not_found"
    wrong_method = site.anonymous.delete("/metrics")
    assert wrong_method.status_code == 405 and wrong_method.get_json()["code"] == "method_not_allowed"
    assert "GET" in wrong_method.headers["Allow"]
    broken = site.anonymous.get("/api/v1/test/broken")
    assert broken.status_code == 500 and broken.get_json() == {
        "ok": False, "code": "internal_error",
        "message": "internal error; the request id is in the X-Request-ID header"}
    # A person's browser asking for JSON gets JSON too.
    asked = site.admin.get("/no/such/page", headers={"Accept": "application/json"})
    assert asked.status_code == 404 and asked.get_json()["code"] == "not_found"


def test_the_favicon_answers_at_both_addresses(site):
    page = site.admin.get("/").get_data(as_text=True)
    linked = re.search(r'<link rel="icon" href="([^"]+)" type="image/svg\+xml">', page)
    assert linked, "the frame links no icon"
    for path in (linked.group(1), "/favicon.ico"):
        response = site.anonymous.get(path)
        assert response.status_code == 200 and response.mimetype == "image/svg+xml", path
        assert response.get_data(as_text=True).startswith("<svg")
