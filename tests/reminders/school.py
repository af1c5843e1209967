"""A small school for the reminder tests: one site, learners whose keys we write, a clock we move;
its fixtures (``school``, ``school_factory``, ``web``: an administrator signed in) and page helpers.
A pytest plugin listed in ``tests/conftest.py``, so the security tests use them too.

The site is a real MemberLux schema (SQLite or MariaDB); the sidecar reads it read-only, the tests
write it through their own engine, as WordPress would.
"""

from __future__ import annotations

from dataclasses import replace
from datetime import date, datetime, time, timedelta, timezone
from pathlib import Path

import html
import re

import pytest
import sqlalchemy as sa

from sidecar.bootstrap import build_runtime
from sidecar.clock import FixedClock
from sidecar.config import settings_from_mapping
from sidecar.app import create_app
from sidecar.monitor.settings import Letter, MonitorSettings
from sidecar.reminders import approval
from sidecar.reminders.planner import ReminderPlanner
from sidecar.store.reminder_models import Reminder, Unsubscribe
from tests.sites import empty_site_schema
from tests.stores import migrate_store

LEVEL = 30
OTHER_LEVEL = 31
ADMIN_ID, ADMIN_LOGIN, ADMIN_PASSWORD = 1000, "boss", "demo-admin-2026"
# demo-admin-2026 under phpass with WordPress's cost ('B' = 2^13), as in tests/web/test_auth.py.
ADMIN_PHPASS = "$P$BWq8sZ0dKY5O.Cz8au.JfPqvEmsVdb0"
PROGRAM_POST = 900


class School:
    def __init__(self, site_url: str, store_url: str, smtp: tuple[str, int] | dict | None, day: date,
                 **reminders) -> None:
        """``smtp``: (host, port) of a test server, or a whole ``[smtp]`` section, or None (no e-mail)."""
        self.writer = sa.create_engine(site_url)
        self.md = empty_site_schema(self.writer)
        self.clock = FixedClock(datetime.combine(day, time(9), tzinfo=timezone.utc))
        migrate_store(store_url)
        smtp_section = smtp if isinstance(smtp, dict) else (
            {"host": smtp[0], "port": smtp[1], "security": "none", "from_address": "school@example.org",
             "from_name": "Школа"} if smtp else {})
        self.settings = settings_from_mapping({
            "wordpress": {"db_url": site_url},
            "memberlux": {"rest_base_url": "https://school.example/wp-json"},
            "store": {"url": store_url},
            "smtp": smtp_section,
            "web": {"secret_key": "test-secret-key-not-for-production", "public_url": "https://side.example"},
            "reminders": {"retry_base_seconds": 60, **reminders},
        }, environ={})
        self._key_id = 0
        self._cert_id = 0
        with self.writer.begin() as conn:
            conn.execute(self.t("options").insert(), [
                {"option_name": "blogname", "option_value": "Школа «Пример»", "autoload": "yes"},
                {"option_name": "home", "option_value": "https://school.example", "autoload": "yes"},
                {"option_name": "date_format", "option_value": "j F Y", "autoload": "yes"},
                {"option_name": "timezone_string", "option_value": "Europe/Moscow", "autoload": "yes"},
            ])
            for term_id, name in ((LEVEL, "Английский A1"), (OTHER_LEVEL, "Немецкий")):
                conn.execute(self.t("terms").insert().values(term_id=term_id, name=name, slug=f"level-{term_id}"))
                conn.execute(self.t("term_taxonomy").insert().values(
                    term_taxonomy_id=term_id, term_id=term_id, taxonomy="wpm-levels", description="", parent=0))
        self.runtime = build_runtime(self.settings, clock=self.clock)

    def t(self, short: str) -> sa.Table:
        return self.md.tables["wp_" + short]

    # --- time ---------------------------------------------------------------------------------------

    @property
    def today(self) -> date:
        return self.clock.today_utc()

    def set_day(self, day: date, at: time = time(9)) -> None:
        self.clock.instant = datetime.combine(day, at, tzinfo=timezone.utc)

    def advance(self, days: int = 0, seconds: int = 0) -> None:
        self.clock.instant = self.clock.instant + timedelta(days=days, seconds=seconds)

    # --- WordPress data -----------------------------------------------------------------------------

    def learner(self, user_id: int, email: str | None = None, *, first: str = "Анна", last: str = "Иванова",
                blocked: bool = False) -> int:
        with self.writer.begin() as conn:
            conn.execute(self.t("users").insert().values(
                ID=user_id, user_login=f"learner{user_id}", user_email=email if email is not None else f"learner{user_id}@example.com",
                display_name=f"{first} {last}"))
            conn.execute(self.t("usermeta").insert(), [
                {"user_id": user_id, "meta_key": "first_name", "meta_value": first},
                {"user_id": user_id, "meta_key": "last_name", "meta_value": last}])
            if blocked:
                conn.execute(self.t("usermeta").insert().values(user_id=user_id, meta_key="wpm_status",
                                                                meta_value="inactive"))
        return user_id

    def key(self, user_id: int, start: date, end: date, term_id: int = LEVEL, *, unlimited: bool = False) -> int:
        self._key_id += 1
        with self.writer.begin() as conn:
            conn.execute(self.t("memberlux_term_keys").insert().values(
                id=self._key_id, term_id=term_id, user_id=user_id, key=f"code-{self._key_id}", key_type="wpm_term_keys",
                status="used", sent=0, is_banned=0, duration=(end - start).days, units="days",
                date_start=start.isoformat(), date_end=end.isoformat(), date_registered=f"{start} 10:00:00",
                is_unlimited=1 if unlimited else 0))
            conn.execute(self.t("memberlux_keys_meta").insert().values(
                key_id=self._key_id, activation_datetime=f"{start} 10:00:00", source="purchase"))
        return self._key_id

    def expired(self, user_id: int, days_ago: int, term_id: int = LEVEL) -> date:
        """A 30-day key of ``term_id`` that ended ``days_ago`` days before today (UTC); returns X."""
        end = self.today - timedelta(days=days_ago)
        self.key(user_id, end - timedelta(days=30), end, term_id)
        return end

    def manual_certificate(self, user_id: int, term_id: int = LEVEL) -> None:
        self._cert_id += 1
        with self.writer.begin() as conn:
            if not conn.execute(sa.select(self.t("termmeta").c.meta_id).where(
                    self.t("termmeta").c.term_id == term_id,
                    self.t("termmeta").c.meta_key == "_mblc_has_certificate")).first():
                conn.execute(self.t("termmeta").insert(), [
                    {"term_id": term_id, "meta_key": "_mblc_has_certificate", "meta_value": "yes"},
                    {"term_id": term_id, "meta_key": "_mblc_how_to_issue", "meta_value": "employee"}])
            conn.execute(self.t("memberlux_certificate").insert().values(
                certificate_id=self._cert_id, user_id=user_id, wpmlevel_id=term_id, certificate_name="Course",
                certificate_template_id=1, date_issue=self.today.isoformat(), series="S", number=f"{self._cert_id:05d}",
                responsible_person=1, create_date=self.today.isoformat()))

    def program(self, user_id: int, name: str, steps: list[int]) -> None:
        from sidecar.devstack.seed import php_serialize

        with self.writer.begin() as conn:
            if not conn.execute(sa.select(self.t("posts").c.ID).where(self.t("posts").c.ID == PROGRAM_POST)).first():
                conn.execute(self.t("posts").insert().values(
                    ID=PROGRAM_POST, post_author=1, post_title=name, post_type="ml_program", post_status="publish",
                    post_name="program", post_content="", post_excerpt=""))
                conn.execute(self.t("postmeta").insert().values(post_id=PROGRAM_POST, meta_key="mlp_steps", meta_value=php_serialize(
                    [{"term_id": s, "duration": 1, "units": "months"} for s in steps])))
            conn.execute(self.t("usermeta").insert().values(user_id=user_id, meta_key="mlp_program_id",
                                                            meta_value=str(PROGRAM_POST)))

    # --- our settings -------------------------------------------------------------------------------

    def schedule(self, days=(3, 10, 30), *, term_id: int = LEVEL, admin_days: int | None = 7,
                 admin_email: str = "boss@school.example", enabled: bool = True, approved: bool = True,
                 **extra) -> None:
        """Set the level's letters; ``approved``: and approve them, as the owner of a school that sends
        reminders has (tests/reminders/test_approval.py starts from levels that are not)."""
        service = MonitorSettings(self.runtime)
        current = service.effective(term_id)
        letters = tuple(
            Letter(d, f"Напоминание {n}: [course_name]",
                   "<p>Здравствуйте, {{ first_name }}!</p><p>Доступ к «[course_name]» закончился [expired_date].</p>"
                   '<p><a href="{{ renewal_url }}">Продлить</a></p>') if d is not None else Letter()
            for n, d in enumerate(days, start=1))
        service.save(replace(current, enabled=enabled, letters=letters, admin_days_after_last=admin_days,
                             admin_email=admin_email if admin_days is not None else "",
                             admin_subject="Сводка: [course_name]" if admin_days is not None else "",
                             admin_body="<p>Не продлили: {{ learner_count }}</p>" if admin_days is not None else "",
                             **extra), actor="test")
        if approved and approval.sends_reminders(service.effective(term_id)):
            approval.approve(self.runtime, term_id, actor="test", source="test", review=None)

    def close(self) -> None:
        self.runtime.close()
        self.writer.dispose()


@pytest.fixture
def school_factory(tmp_path: Path):
    made: list[School] = []

    def make(site_url: str | None = None, store_url: str | None = None, smtp=None, day: date = date(2026, 11, 24),
             **reminders) -> School:
        school = School(site_url or f"sqlite:///{tmp_path / f'wp{len(made)}.sqlite'}",
                        store_url or f"sqlite:///{tmp_path / f'store{len(made)}.sqlite'}", smtp, day, **reminders)
        made.append(school)
        return school

    yield make
    for school in made:
        school.close()


@pytest.fixture
def school(school_factory, smtp_server):
    host, port, _inbox = smtp_server
    return school_factory(smtp=(host, port))


# --- the admin pages ------------------------------------------------------------------------------

def csrf_in(page: str) -> str:
    found = re.search(r'name="csrf_token" value="([^"]+)"', page)
    assert found, "no CSRF field in the page"
    return found.group(1)


class Browser:
    """The school's sidecar app with an administrator signed in."""

    def __init__(self, school) -> None:
        self.school = school
        with school.writer.begin() as conn:
            conn.execute(school.t("users").insert().values(ID=ADMIN_ID, user_login=ADMIN_LOGIN, user_pass=ADMIN_PHPASS,
                                                           user_email="boss@school.example", display_name="Ольга"))
            conn.execute(school.t("usermeta").insert().values(user_id=ADMIN_ID, meta_key="wp_capabilities",
                                                              meta_value='a:1:{s:13:"administrator";b:1;}'))
        self.app = create_app(school.runtime, testing=True)
        self.client = self.app.test_client()
        token = csrf_in(self.client.get("/login").get_data(as_text=True))
        response = self.client.post("/login", data={"csrf_token": token, "login": ADMIN_LOGIN,
                                                    "password": ADMIN_PASSWORD})
        assert response.status_code == 302, "the administrator could not sign in"

    def get(self, url: str, status: int = 200) -> str:
        response = self.client.get(url)
        assert response.status_code == status, (url, response.status_code)
        return html.unescape(response.get_data(as_text=True))

    def token(self) -> str:
        return csrf_in(self.get("/reminders"))

    def post(self, url: str, data: dict | None = None, **kwargs):
        return self.client.post(url, data={"csrf_token": self.token(), **(data or {})}, **kwargs)

    def flashes(self) -> list[str]:
        return re.findall(r'<p class="flash flash-\w+"[^>]*>(.*?)</p>', self.get("/reminders/unsubscribes"), re.S)


@pytest.fixture
def web(school):
    return Browser(school)


def rows(school, model=Reminder) -> list:
    with school.runtime.sessions() as session:
        key = model.user_id if model is Unsubscribe else model.id
        return list(session.scalars(sa.select(model).order_by(key)))


def a_sleeper(school) -> None:
    school.schedule(renewal_url="https://school.example/renew/{{ level_id }}?u={{ user_id }}")
    school.learner(1, "anna@example.com", first="Анна")
    school.expired(1, days_ago=2)
    ReminderPlanner(school.runtime).plan()   # refreshes the sleepers read model; nothing is due yet
    assert rows(school) == []


def settings_form(school, **changes) -> dict[str, str]:
    current = MonitorSettings(school.runtime).effective(LEVEL)
    data = {"enabled": "1" if current.enabled else "", "renewal_url": current.renewal_url,
            "admin_days_after_last": "" if current.admin_days_after_last is None else str(current.admin_days_after_last),
            "admin_email": current.admin_email, "admin_subject": current.admin_subject, "admin_body": current.admin_body}
    for n, letter in enumerate(current.letters, start=1):
        data.update({f"letters.{n}.days": "" if letter.days is None else str(letter.days),
                     f"letters.{n}.subject": letter.subject, f"letters.{n}.body": letter.body})
    data.update(changes)
    return data
