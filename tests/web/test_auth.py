"""Admin login against a seeded WordPress site: formats, roles, blocking, throttling, CSRF, redirects."""

from __future__ import annotations

import re
from datetime import date, datetime, timedelta, timezone
from urllib.parse import parse_qs, urlsplit

import pytest
import sqlalchemy as sa
from flask import Blueprint

from sidecar.app import create_app
from sidecar.bootstrap import build_runtime
from sidecar.clock import FixedClock
from sidecar.config import settings_from_mapping
from sidecar.devstack import seed
from sidecar.store.models import AuditEvent, LoginAttempt
from sidecar.web import auth
from tests.sites import seeded_site
from tests.stores import migrate_store

TODAY = date(2026, 11, 20)
START = datetime(2026, 11, 20, 9, 0, tzinfo=timezone.utc)
ADMIN_ID, COACH_ID = 1, 3
ADMIN_NAME = "Ольга Кравцова"
# demo-admin-2026 under phpass with WordPress's cost ('B' = 2^13), computed with passlib's phpass.
ADMIN_PHPASS = "$P$BWq8sZ0dKY5O.Cz8au.JfPqvEmsVdb0"
INVALID_EN = "Sign-in failed: wrong login or password, or this account may not use the sidecar."


class Site:
    """A seeded site, its store, a runtime on a settable clock, and an app with a test client."""

    def __init__(self, wp_url: str, tmp_path, *, public_url: str = "https://sidecar.example",
                 prefix: str = "wp_", base_prefix: str | None = None) -> None:
        self.summary = seeded_site(wp_url, users=20, levels=2, seed=1, today=TODAY, prefix=prefix,
                                   base_prefix=base_prefix)
        self.wp_url = wp_url
        self.prefix = prefix
        self.base = base_prefix or prefix
        store_url = f"sqlite:///{tmp_path / 'store.sqlite'}"
        migrate_store(store_url)
        wordpress = {"db_url": wp_url, "table_prefix": prefix}
        if base_prefix:
            wordpress["base_prefix"] = base_prefix
        self.settings = settings_from_mapping({
            "wordpress": wordpress,
            "memberlux": {"rest_base_url": "https://school.example/wp-json"},
            "store": {"url": store_url},
            "web": {"secret_key": "test-secret-key-for-signing-sessions", "public_url": public_url},
        }, environ={})
        self.clock = FixedClock(START)
        self.runtime = build_runtime(self.settings, clock=self.clock)
        self.app = create_app(self.runtime, testing=True)
        self.client = self.app.test_client()
        self.wp = sa.create_engine(wp_url)

    def close(self) -> None:
        self.runtime.close()
        self.wp.dispose()

    # --- changing the WordPress side, as an administrator would in wp-admin ---

    def sql(self, statement: str, **params) -> list:
        with self.wp.begin() as conn:
            result = conn.execute(sa.text(statement), params)
            return result.all() if result.returns_rows else []

    def set_password_hash(self, user_id: int, value: str) -> None:
        self.sql(f"UPDATE {self.base}users SET user_pass = :v WHERE ID = :id", v=value, id=user_id)

    def set_meta(self, user_id: int, key: str, value: str) -> None:
        self.sql(f"DELETE FROM {self.base}usermeta WHERE user_id = :id AND meta_key = :k", id=user_id, k=key)
        self.sql(f"INSERT INTO {self.base}usermeta (user_id, meta_key, meta_value) VALUES (:id, :k, :v)",
                 id=user_id, k=key, v=value)

    def set_role(self, user_id: int, role: str) -> None:
        self.set_meta(user_id, f"{self.prefix}capabilities", seed.php_serialize({role: True}))

    def learner_login(self) -> str:
        return self.sql(f"SELECT user_login FROM {self.base}users WHERE ID = :id", id=seed.FIRST_LEARNER_ID)[0][0]

    # --- the store ---

    def audit(self) -> list[AuditEvent]:
        with self.runtime.sessions() as session:
            return list(session.scalars(sa.select(AuditEvent).order_by(AuditEvent.id)))

    def attempts(self) -> int:
        with self.runtime.sessions() as session:
            return session.scalar(sa.select(sa.func.count()).select_from(LoginAttempt))

    # --- the browser ---

    def token(self) -> str:
        return csrf_in(self.client.get("/login").get_data(as_text=True))

    def login(self, login: str = seed.DEMO_ADMIN_LOGIN, password: str = seed.DEMO_ADMIN_PASSWORD, *,
              next_url: str | None = None, ip: str = "127.0.0.1", **headers):
        data = {"csrf_token": self.token(), "login": login, "password": password}
        if next_url is not None:
            data["next"] = next_url
        return self.client.post("/login", data=data, environ_base={"REMOTE_ADDR": ip}, headers=headers)

    def advance(self, **delta) -> None:
        self.clock.instant += timedelta(**delta)


def csrf_in(html: str) -> str:
    found = re.search(r'name="csrf_token" value="([^"]+)"', html)
    assert found, "no CSRF field in the page"
    return found.group(1)


def error_in(response) -> str | None:
    found = re.search(r'<p class="error"[^>]*>(.*?)</p>', response.get_data(as_text=True), re.S)
    return found.group(1).strip() if found else None


def logged_in(site: Site) -> bool:
    return site.client.get("/").status_code == 200


@pytest.fixture
def site(tmp_path):
    built = Site(f"sqlite:///{tmp_path / 'wordpress.sqlite'}", tmp_path)
    yield built
    built.close()


@pytest.fixture
def any_db_site(site_db_url, tmp_path):
    built = Site(site_db_url, tmp_path)
    yield built
    built.close()


# --- signing in ---------------------------------------------------------------------------------------


def test_admin_signs_in_with_wordpress_68_bcrypt_hash(any_db_site):
    site = any_db_site
    stored = site.sql("SELECT user_pass FROM wp_users WHERE ID = 1")[0][0]
    assert stored.startswith("$wp$2y$")
    response = site.login()
    assert response.status_code == 302
    assert response.headers["Location"] == "/"
    page = site.client.get("/")
    assert page.status_code == 200
    html = page.get_data(as_text=True)
    assert ADMIN_NAME in html and 'action="/logout"' in html
    events = site.audit()
    assert [(e.subject_type, e.subject_id, e.action, e.actor) for e in events] == [
        ("admin", "1", "login.succeeded", "admin")]
    assert events[0].source_ip == "127.0.0.1" and events[0].request_id


def test_admin_signs_in_with_phpass_hash_and_by_email(any_db_site):
    site = any_db_site
    site.set_password_hash(ADMIN_ID, ADMIN_PHPASS)
    # WordPress accepts the e-mail instead of the login, case-insensitively; the password is trimmed.
    response = site.login("Admin@School.Example", f"  {seed.DEMO_ADMIN_PASSWORD}\t")
    assert response.status_code == 302
    assert logged_in(site)
    assert site.audit()[-1].actor == "admin"  # the canonical login, not what was typed


def test_legacy_md5_and_plain_bcrypt_hashes_also_work(site):
    import hashlib

    import bcrypt

    site.set_password_hash(ADMIN_ID, hashlib.md5(seed.DEMO_ADMIN_PASSWORD.encode()).hexdigest())
    assert site.login().status_code == 302
    site.client.post("/logout", data={"csrf_token": csrf_in(site.client.get("/").get_data(as_text=True))})
    plain = bcrypt.hashpw(seed.DEMO_ADMIN_PASSWORD.encode(), bcrypt.gensalt(4)).decode().replace("$2b$", "$2y$", 1)
    site.set_password_hash(ADMIN_ID, plain)
    assert site.login().status_code == 302
    assert [e.action for e in site.audit()] == ["login.succeeded", "login.succeeded"]


def test_multisite_uses_the_site_prefix_for_roles(tmp_path):
    site = Site(f"sqlite:///{tmp_path / 'network.sqlite'}", tmp_path, prefix="wp_2_", base_prefix="wp_")
    try:
        assert site.login().status_code == 302
        assert logged_in(site)
        site.client.post("/logout", data={"csrf_token": csrf_in(site.client.get("/").get_data(as_text=True))})
        # An administrator of another site of the network only has that site's capabilities key.
        site.sql("UPDATE wp_usermeta SET meta_key = 'wp_3_capabilities' WHERE user_id = 1 AND meta_key = 'wp_2_capabilities'")
        assert error_in(site.login()) == INVALID_EN
    finally:
        site.close()


# --- refusals -----------------------------------------------------------------------------------------


def test_coach_and_learner_are_refused_with_the_generic_message(site):
    for login, password in ((seed.DEMO_COACH_LOGIN, seed.DEMO_COACH_PASSWORD),
                            (site.learner_login(), seed.DEMO_LEARNER_PASSWORD)):
        response = site.login(login, password)
        assert response.status_code == 200
        assert error_in(response) == INVALID_EN
        assert not logged_in(site)
    assert [(e.action, e.details["reason"]) for e in site.audit()] == [
        ("login.failed", "not_admin"), ("login.failed", "not_admin")]


def test_wrong_password_and_unknown_login_look_the_same(site):
    wrong = site.login(seed.DEMO_ADMIN_LOGIN, "not-the-password")
    unknown = site.login("nobody-here", "not-the-password")
    assert wrong.status_code == unknown.status_code == 200
    assert error_in(wrong) == error_in(unknown) == INVALID_EN
    events = site.audit()
    assert [(e.subject_id, e.actor, e.details["reason"]) for e in events] == [
        ("1", "admin", "bad_password"), ("unknown", "nobody-here", "unknown_login")]
    for event in events:
        assert "not-the-password" not in repr(event.details)
        assert "password" not in event.details


def test_refusal_in_russian(site):
    response = site.login(seed.DEMO_ADMIN_LOGIN, "wrong", **{"Accept-Language": "ru"})
    assert error_in(response).startswith("Не удалось войти")


def test_empty_fields_are_not_counted_as_attempts(site):
    response = site.login("", "")
    assert error_in(response) == "Enter your login and password."
    assert site.attempts() == 0 and site.audit() == []


def test_blocked_admin_is_refused(any_db_site):
    site = any_db_site
    site.set_meta(ADMIN_ID, "wpm_status", "inactive")
    response = site.login()
    assert error_in(response) == INVALID_EN
    assert not logged_in(site)
    assert site.audit()[-1].details["reason"] == "blocked"


def test_role_map_decides_not_the_role_name(site):
    # A custom role that holds manage_options is an administrator for WordPress, hence for us.
    roles = seed.php_unserialize(site.sql("SELECT option_value FROM wp_options WHERE option_name = 'wp_user_roles'")[0][0])
    roles["school_owner"] = {"name": "Owner", "capabilities": {"read": True, "manage_options": True}}
    roles["administrator"]["capabilities"]["manage_options"] = False
    site.sql("UPDATE wp_options SET option_value = :v WHERE option_name = 'wp_user_roles'", v=seed.php_serialize(roles))
    assert error_in(site.login()) == INVALID_EN
    site.set_role(COACH_ID, "school_owner")
    assert site.login(seed.DEMO_COACH_LOGIN, seed.DEMO_COACH_PASSWORD).status_code == 302


def test_without_a_role_map_only_administrators_get_in(site):
    site.sql("DELETE FROM wp_options WHERE option_name = 'wp_user_roles'")
    assert error_in(site.login(seed.DEMO_COACH_LOGIN, seed.DEMO_COACH_PASSWORD)) == INVALID_EN
    assert site.login().status_code == 302


def test_a_corrupt_role_map_lets_nobody_in(site):
    site.sql("UPDATE wp_options SET option_value = 'a:1:{s:5:\"broken' WHERE option_name = 'wp_user_roles'")
    assert error_in(site.login()) == INVALID_EN


def test_role_grants_unit():
    role_map = {"administrator": {"capabilities": {"manage_options": True}},
                "editor": {"capabilities": {"manage_options": "0"}}, "odd": "not a map"}
    assert auth.role_grants({"administrator"}, role_map, "manage_options")
    assert not auth.role_grants({"editor", "odd", "ghost"}, role_map, "manage_options")
    assert auth.role_grants({"administrator"}, None, "manage_options")
    assert not auth.role_grants({"editor"}, None, "manage_options")
    assert not auth.role_grants(set(), role_map, "manage_options")


# --- the session --------------------------------------------------------------------------------------


def test_session_cookie_flags(site):
    response = site.login()
    cookie = next(c for c in response.headers.getlist("Set-Cookie") if c.startswith("session="))
    flags = {part.strip().lower() for part in cookie.split(";")[1:]}
    assert {"httponly", "secure", "samesite=lax"} <= flags


def test_no_secure_flag_on_plain_http(tmp_path):
    site = Site(f"sqlite:///{tmp_path / 'wordpress.sqlite'}", tmp_path, public_url="http://127.0.0.1:8080")
    try:
        response = site.login()
        cookie = next(c for c in response.headers.getlist("Set-Cookie") if c.startswith("session="))
        assert "HttpOnly" in cookie and "SameSite=Lax" in cookie and "Secure" not in cookie
    finally:
        site.close()


def test_demotion_and_blocking_end_the_session_within_the_recheck_interval(site):
    assert site.login().status_code == 302
    site.set_role(ADMIN_ID, "subscriber")
    site.advance(minutes=4)
    assert logged_in(site)  # the verdict cached at login is still fresh
    site.advance(minutes=2)
    response = site.client.get("/")
    assert response.status_code == 302 and response.headers["Location"].startswith("/login")

    site.set_role(ADMIN_ID, "administrator")
    assert site.login().status_code == 302
    site.set_meta(ADMIN_ID, "wpm_status", "inactive")
    site.advance(minutes=6)
    assert not logged_in(site)


def test_deleted_account_ends_the_session(site):
    assert site.login().status_code == 302
    site.sql("DELETE FROM wp_users WHERE ID = 1")
    site.advance(seconds=auth.RECHECK_INTERVAL.total_seconds() + 1)
    assert not logged_in(site)


def test_session_expires_after_its_lifetime_even_when_active(site):
    assert site.login().status_code == 302
    for _ in range(int(auth.SESSION_LIFETIME / timedelta(hours=1)) - 1):
        site.advance(hours=1)
        assert logged_in(site)
    site.advance(hours=1, seconds=1)
    assert not logged_in(site)


def test_login_page_redirects_a_signed_in_admin(site):
    site.login()
    response = site.client.get("/login?next=/%3Flang%3Dru")
    assert response.status_code == 302 and response.headers["Location"] == "/?lang=ru"


# --- throttling ---------------------------------------------------------------------------------------


def test_five_failures_lock_the_login_with_retry_after(site):
    for _ in range(auth.MAX_FAILURES_PER_LOGIN):
        assert site.login(password="wrong").status_code == 200
    locked = site.login()  # even the right password is not checked while locked
    assert locked.status_code == 429
    assert 0 < int(locked.headers["Retry-After"]) <= 15 * 60
    assert error_in(locked) == "Too many failed attempts. Try again in 15 min."
    assert not logged_in(site)
    # Locked attempts do not extend the lock and do not fill the audit log.
    assert sum(e.action == "login.failed" for e in site.audit()) == auth.MAX_FAILURES_PER_LOGIN
    # The lock is per account, whatever the spelling (case, login or e-mail), at this address.
    assert site.login("ADMIN", seed.DEMO_ADMIN_PASSWORD).status_code == 429
    site.advance(minutes=10)
    assert 0 < int(site.login().headers["Retry-After"]) <= 5 * 60
    site.advance(minutes=5, seconds=1)
    assert site.login().status_code == 302


def test_retry_after_counts_from_the_failure_that_must_age_out(site):
    for _ in range(auth.MAX_FAILURES_PER_LOGIN):
        site.login(password="wrong")
        site.advance(minutes=2)
    # Failures at 0, 2, 4, 6, 8 min; now 10 min: the first one frees a slot at 15 min.
    assert int(site.login().headers["Retry-After"]) == 5 * 60


def test_success_clears_the_account_counter_but_not_the_ip_counter(site):
    for _ in range(auth.MAX_FAILURES_PER_LOGIN - 1):
        site.login(password="wrong")
    assert site.login().status_code == 302
    site.client.post("/logout", data={"csrf_token": csrf_in(site.client.get("/").get_data(as_text=True))})
    for _ in range(auth.MAX_FAILURES_PER_LOGIN - 1):
        assert site.login(password="wrong").status_code == 200
    assert site.login().status_code == 302
    with site.runtime.sessions() as session:
        ip_rows = session.scalar(sa.select(sa.func.count()).select_from(LoginAttempt).where(LoginAttempt.bucket == "ip"))
    assert ip_rows == 2 * (auth.MAX_FAILURES_PER_LOGIN - 1)


def test_one_address_spraying_many_logins_is_locked(site):
    for n in range(auth.MAX_FAILURES_PER_IP):
        assert site.login(f"guess{n}", "wrong", ip="203.0.113.7").status_code == 200
    assert site.login("guess-more", "wrong", ip="203.0.113.7").status_code == 429
    assert site.login(ip="203.0.113.7").status_code == 429
    assert site.login(ip="198.51.100.1").status_code == 302  # other addresses are unaffected


def test_throttle_rows_are_pruned_after_the_window(site):
    for _ in range(3):
        site.login(password="wrong")
    assert site.attempts() == 9  # one per IP, one per (account, IP), one per account
    site.advance(minutes=16)
    site.login(password="wrong")
    assert site.attempts() == 3


# --- redirects ----------------------------------------------------------------------------------------


def test_status_page_sends_visitors_to_login_and_back(site):
    response = site.client.get("/?lang=ru")
    assert response.status_code == 302
    target = urlsplit(response.headers["Location"])
    assert target.path == "/login"
    next_url = parse_qs(target.query)["next"][0]
    assert next_url == "/?lang=ru"
    response = site.login(next_url=next_url)
    assert response.headers["Location"] == "/?lang=ru"


@pytest.mark.parametrize("next_url", [
    "https://evil.example/", "//evil.example/", "/\\evil.example", "\\\\evil.example", "/\t/evil.example",
    "javascript:alert(1)", "evil.example", "http:/evil.example", " //evil.example",
])
def test_next_never_leaves_the_site(site, next_url):
    response = site.login(next_url=next_url)
    assert response.status_code == 302
    assert response.headers["Location"] == "/"
    page = site.client.get("/login", query_string={"next": next_url})
    assert page.status_code == 302 and page.headers["Location"] == "/"


def test_login_form_carries_a_safe_next_and_drops_a_foreign_one(site):
    html = site.client.get("/login", query_string={"next": "/reports?page=2"}).get_data(as_text=True)
    assert 'name="next" value="/reports?page=2"' in html
    html = site.client.get("/login", query_string={"next": "https://evil.example"}).get_data(as_text=True)
    assert "evil.example" not in html


def test_json_clients_get_401_instead_of_a_redirect(site):
    response = site.client.get("/", headers={"Accept": "application/json"})
    assert response.status_code == 401 and response.get_json() == {"error": "login required"}


# --- status page --------------------------------------------------------------------------------------


def test_status_page_renders_in_russian_for_a_signed_in_admin(site):
    site.login()
    page = site.client.get("/", headers={"Accept-Language": "ru-RU,ru;q=0.9"})
    html = page.get_data(as_text=True)
    assert page.status_code == 200
    assert "Состояние системы" in html and "Выйти" in html and ADMIN_NAME in html
    assert 'title="Вы вошли как Ольга Кравцова"' in html


def test_login_page_in_both_languages(site):
    en = site.client.get("/login").get_data(as_text=True)
    ru = site.client.get("/login", headers={"Accept-Language": "ru"}).get_data(as_text=True)
    assert "Login or e-mail" in en and 'autocomplete="current-password"' in en
    assert "Логин или e-mail" in ru and "Войти" in ru
    assert site.client.get("/login").headers["Cache-Control"] == "no-store"


# --- CSRF ---------------------------------------------------------------------------------------------


def test_login_post_without_csrf_is_rejected(site):
    response = site.client.post("/login", data={"login": "admin", "password": seed.DEMO_ADMIN_PASSWORD})
    assert response.status_code == 403
    assert site.audit() == [] and site.attempts() == 0
    # A token from another session does not count either.
    other = site.app.test_client()
    stolen = csrf_in(other.get("/login").get_data(as_text=True))
    response = site.client.post("/login", data={"csrf_token": stolen, "login": "admin",
                                                "password": seed.DEMO_ADMIN_PASSWORD})
    assert response.status_code == 403


def test_csrf_token_in_a_header_is_accepted(site):
    token = site.token()
    response = site.client.post("/login", data={"login": "admin", "password": seed.DEMO_ADMIN_PASSWORD},
                                headers={"X-CSRF-Token": token})
    assert response.status_code == 302


def test_logout_needs_the_csrf_token(site):
    site.login()
    assert site.client.post("/logout").status_code == 403
    assert site.client.post("/logout", data={"csrf_token": "forged" * 8}).status_code == 403
    assert logged_in(site)
    token = csrf_in(site.client.get("/").get_data(as_text=True))
    response = site.client.post("/logout", data={"csrf_token": token})
    assert response.status_code == 302 and response.headers["Location"] == "/login"
    assert not logged_in(site)


@pytest.mark.parametrize(("language", "said"), [("en", "You are signed out."), ("ru", "Вы вышли.")])
def test_the_login_page_after_sign_out_says_so_once(site, language, said):
    site.login()
    token = csrf_in(site.client.get(f"/?lang={language}").get_data(as_text=True))
    site.client.post("/logout", data={"csrf_token": token})
    assert said in site.client.get("/login").get_data(as_text=True)
    assert said not in site.client.get("/login").get_data(as_text=True)  # shown once, not on every visit


def test_login_rotates_the_csrf_token(site):
    before = site.token()
    site.login()
    after = csrf_in(site.client.get("/").get_data(as_text=True))
    assert before != after


def test_csrf_exempt_views_and_blueprints(site):
    app = site.app

    @auth.csrf_exempt
    def hook():
        return "hook"

    def form():
        return "form"

    app.add_url_rule("/test/hook", "test_hook", hook, methods=["POST"])
    app.add_url_rule("/test/form", "test_form", form, methods=["POST"])
    api = auth.csrf_exempt(Blueprint("test_api", __name__))
    api.add_url_rule("/test/api", "call", lambda: "api", methods=["POST"])
    app.register_blueprint(api)

    client = app.test_client()
    assert client.post("/test/hook").status_code == 200
    assert client.post("/test/api").status_code == 200
    assert client.post("/test/form").status_code == 403
    assert client.post("/no/such/page").status_code == 404


def test_the_sign_in_redirect_keeps_the_path_prefix_of_a_proxy(site):
    answer = site.client.get("/monitor", base_url="http://localhost/mlsidecar")
    assert answer.status_code == 302
    assert answer.headers["Location"].endswith("/mlsidecar/login?next=/mlsidecar/monitor")
