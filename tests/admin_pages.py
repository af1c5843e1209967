"""The admin pages as a signed-in administrator sees them: reading their HTML and using them like a browser.

Shared by the page tests of several features (reached through the ``admin_pages`` fixture, or imported by
their helper modules; test modules never import each other).
"""

from __future__ import annotations

import html
import re


class AdminPages:
    """Reading the admin pages' HTML and signing in through the real login form."""

    @staticmethod
    def csrf_in(page: str) -> str:
        found = re.search(r'name="csrf_token" value="([^"]+)"', page)
        assert found, "no CSRF field in the page"
        return found.group(1)

    @staticmethod
    def flashes(page: str) -> list[str]:
        return [m.strip() for m in re.findall(r'<p class="flash flash-\w+[^"]*"[^>]*>(.*?)</p>', page, re.S)]

    @staticmethod
    def field_error(page: str, field: str) -> str:
        found = re.search(rf'<span class="field-error" id="err-{re.escape(field)}" role="alert">(.*?)</span>',
                          page, re.S)
        assert found, f"no error shown for {field}"
        return found.group(1)

    @classmethod
    def signed_in(cls, runtime):
        """``(app, client)``: the sidecar app with the demo administrator signed in."""
        from sidecar.app import create_app
        from sidecar.devstack import seed

        app = create_app(runtime, testing=True)
        client = app.test_client()
        token = cls.csrf_in(client.get("/login").get_data(as_text=True))
        response = client.post("/login", data={"csrf_token": token, "login": seed.DEMO_ADMIN_LOGIN,
                                               "password": seed.DEMO_ADMIN_PASSWORD})
        assert response.status_code == 302, "the administrator could not sign in"
        return app, client


class AdminBrowser:
    """The sidecar app with the demo administrator signed in, used like a browser: pages unescaped, forms
    posted with the session's CSRF token.

    ``token_page`` is the page the token is read from, once per session: fetching a page for every post
    would also take (and lose) the flashes the previous post left for the next page.
    """

    token_page = "/"

    def __init__(self, runtime, pages: type[AdminPages] = AdminPages) -> None:
        self.runtime = runtime
        self.app, self.client = pages.signed_in(runtime)
        self.csrf_in, self.flashes, self.field_error = pages.csrf_in, pages.flashes, pages.field_error
        self._token: str | None = None

    def get(self, url: str, status: int = 200) -> str:
        response = self.client.get(url)
        assert response.status_code == status, (url, response.status_code, response.get_data(as_text=True)[:800])
        return html.unescape(response.get_data(as_text=True))

    def token(self) -> str:
        if self._token is None:
            self._token = self.csrf_in(self.get(self.token_page))
        return self._token

    def post(self, url: str, data: dict | None = None, **kwargs):
        return self.client.post(url, data={"csrf_token": self.token(), **(data or {})}, **kwargs)

    @staticmethod
    def page_of(response) -> str:
        return html.unescape(response.get_data(as_text=True))
