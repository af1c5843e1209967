"""Per-level settings page: imported values shown, overrides saved and audited, errors per field, reset, i18n."""

from __future__ import annotations

import html
import re
from datetime import datetime, timezone

import pytest
import sqlalchemy as sa

from sidecar.app import create_app
from sidecar.bootstrap import build_runtime, store_url
from sidecar.clock import FixedClock
from sidecar.devstack import seed
from sidecar.monitor.settings import MonitorSettings, SettingsError, validate
from sidecar.store.models import AuditEvent, SettingOverride
from tests.stores import migrate_store

START = datetime(2026, 11, 24, 10, 0, tzinfo=timezone.utc)


def csrf_in(page: str) -> str:
    found = re.search(r'name="csrf_token" value="([^"]+)"', page)
    assert found, "no CSRF field in the page"
    return found.group(1)


def field_block(page: str, name: str) -> str:
    found = re.search(rf'<div class="field[^"]*" data-field="{re.escape(name)}">(.*?)</div>', page, re.S)
    assert found, name
    return found.group(0)


def _valid(settings) -> bool:
    try:
        validate(settings)
    except SettingsError:
        return False
    return True


class Site:
    def __init__(self, runtime) -> None:
        self.runtime = runtime
        self.settings = MonitorSettings(runtime)
        self.app = create_app(runtime, testing=True)
        self.client = self.app.test_client()
        # A level the legacy plugin configured validly: three letters, an admin digest.
        self.term_id = next(t for t, s in self.settings.all_levels().items()
                            if s.enabled and all(letter.configured for letter in s.letters) and _valid(s))
        self.url = f"/monitor/levels/{self.term_id}/settings"

    def login(self) -> None:
        token = csrf_in(self.client.get("/login").get_data(as_text=True))
        response = self.client.post("/login", data={"csrf_token": token, "login": seed.DEMO_ADMIN_LOGIN,
                                                    "password": seed.DEMO_ADMIN_PASSWORD})
        assert response.status_code == 302

    def page(self, url: str | None = None) -> str:
        response = self.client.get(url or self.url)
        assert response.status_code == 200, response.status_code
        return html.unescape(response.get_data(as_text=True))

    def form(self, **changes: str) -> dict[str, str]:
        """The form as the browser would send it with the imported values, plus ``changes``."""
        imported = self.settings.imported(self.term_id)
        data = {"csrf_token": csrf_in(self.page())}
        if imported.enabled:
            data["enabled"] = "1"
        for n, letter in enumerate(imported.letters, start=1):
            data[f"letters.{n}.days"] = "" if letter.days is None else str(letter.days)
            data[f"letters.{n}.subject"] = letter.subject
            data[f"letters.{n}.body"] = letter.body
        data["admin_days_after_last"] = "" if imported.admin_days_after_last is None else str(imported.admin_days_after_last)
        data.update(admin_email=imported.admin_email, admin_subject=imported.admin_subject,
                    admin_body=imported.admin_body)
        data.update(changes)
        return data

    def overrides(self) -> int:
        with self.runtime.sessions() as session:
            return session.scalar(sa.select(sa.func.count()).select_from(SettingOverride))


@pytest.fixture
def site(small_site, settings_for):
    settings = settings_for(small_site)
    migrate_store(store_url(settings))
    runtime = build_runtime(settings, clock=FixedClock(START))
    built = Site(runtime)
    built.login()
    yield built
    runtime.close()


def test_form_shows_the_imported_values_unmarked(site):
    imported = site.settings.imported(site.term_id)
    page = site.page()
    assert f'value="{imported.letters[0].days}"' in field_block(page, "letters.1.days")
    assert imported.letters[0].subject in field_block(page, "letters.1.subject")
    assert imported.letters[0].body in field_block(page, "letters.1.body")
    assert f'value="{imported.admin_email}"' in field_block(page, "admin_email")
    assert re.search(r'name="enabled" value="1" checked', page)
    assert "changed here" not in page and "Return to the WordPress values" not in page


def test_overview_links_each_level_to_its_settings(site):
    page = site.page("/monitor")
    for term_id in site.settings.all_levels():
        assert f'href="/monitor/levels/{term_id}/settings" class="settings-link"' in page


def test_saving_stores_overrides_marks_them_and_audits(site):
    imported = site.settings.imported(site.term_id)
    data = site.form(**{"letters.1.days": "2", "letters.1.subject": "Вернитесь к курсу",
                        "admin_email": "boss@school.example"})
    response = site.client.post(site.url, data=data)
    assert response.status_code == 302 and response.headers["Location"].endswith(site.url)
    effective = site.settings.effective(site.term_id)
    assert effective.letters[0].days == 2 and effective.letters[0].subject == "Вернитесь к курсу"
    assert effective.letters[1] == imported.letters[1]
    assert effective.admin_email == "boss@school.example" and effective.enabled == imported.enabled
    assert set(effective.overridden) == {"letters", "admin_email"}
    assert site.settings.imported(site.term_id) == imported  # WordPress untouched
    with site.runtime.sessions() as session:
        event = session.scalar(sa.select(AuditEvent).where(AuditEvent.action == "settings.changed"))
    assert event.actor == seed.DEMO_ADMIN_LOGIN and event.subject_id == str(site.term_id)
    assert event.details["changes"]["admin_email"] == {"from": imported.admin_email, "to": "boss@school.example"}

    page = site.page()
    assert "Settings of «" in page and "saved." in page
    days = field_block(page, "letters.1.days")
    assert "changed here" in days and f"WordPress value: <q>{imported.letters[0].days}</q>" in days
    assert "changed here" in field_block(page, "admin_email")
    assert "changed here" not in field_block(page, "letters.2.days")  # same letter list, unchanged field


def test_empty_days_means_not_set(site):
    data = site.form(**{"letters.3.days": "", "letters.3.subject": "", "letters.3.body": ""})
    assert site.client.post(site.url, data=data).status_code == 302
    assert site.settings.effective(site.term_id).letters[2].days is None


def test_invalid_input_is_refused_per_field_and_nothing_is_saved(site):
    data = site.form(**{"letters.1.days": "10", "letters.2.days": "5", "letters.2.body": "  ",
                        "admin_email": "nobody", "admin_days_after_last": "soon"})
    del data["enabled"]
    response = site.client.post(site.url, data=data)
    assert response.status_code == 422
    page = html.unescape(response.get_data(as_text=True))
    assert "Nothing was saved" in page
    assert "Must be later than letter 1 (10 days)." in field_block(page, "letters.2.days")
    assert "A letter needs a body." in field_block(page, "letters.2.body")
    assert "Not an e-mail address." in field_block(page, "admin_email")
    assert "Enter a whole number" in field_block(page, "admin_days_after_last")
    # The admin's input is shown again, not the stored values.
    assert 'value="nobody"' in field_block(page, "admin_email")
    assert 'value="soon"' in field_block(page, "admin_days_after_last")
    assert not re.search(r'name="enabled" value="1" checked', page)
    assert site.overrides() == 0
    assert site.settings.effective(site.term_id) == site.settings.imported(site.term_id)


def test_a_half_filled_letter_is_refused_on_its_fields_not_saved_as_off(site):
    # Letter 1 at 10 days; letter 2 given 5 days and nothing else; letter 3 a subject and body without days.
    data = site.form(**{"letters.1.days": "10", "letters.2.days": "5", "letters.2.subject": "",
                        "letters.2.body": "", "letters.3.days": ""})
    response = site.client.post(site.url, data=data)
    assert response.status_code == 422
    page = html.unescape(response.get_data(as_text=True))
    assert "A letter with days needs a subject; empty its days to switch it off." in field_block(page, "letters.2.subject")
    assert "A letter with days needs a body; empty its days to switch it off." in field_block(page, "letters.2.body")
    assert "Must be later than letter 1 (10 days)." in field_block(page, "letters.2.days")
    assert ("A letter with a subject or body needs its days after expiry; empty the subject and body to switch "
            "it off.") in field_block(page, "letters.3.days")
    assert site.overrides() == 0

    ru = html.unescape(site.client.post(f"{site.url}?lang=ru", data=data).get_data(as_text=True))
    assert "У письма с днями должна быть тема" in ru and "У письма с днями должен быть текст" in ru
    assert "должно быть число дней после окончания доступа" in ru
    assert not re.search(r"\bmonitor\.settings\.[a-z_.]+", ru)
    assert site.overrides() == 0


def test_reset_restores_the_imported_values(site):
    imported = site.settings.imported(site.term_id)
    data = site.form(admin_subject="Другая тема")
    del data["enabled"]
    assert site.client.post(site.url, data=data).status_code == 302
    assert site.settings.effective(site.term_id) != imported
    page = site.page()
    assert "Return to the WordPress values" in page
    response = site.client.post(f"{site.url}/reset", data={"csrf_token": csrf_in(page)})
    assert response.status_code == 302 and response.headers["Location"].endswith(site.url)
    assert site.settings.effective(site.term_id) == imported
    assert "follows the WordPress values again" in site.page()
    with site.runtime.sessions() as session:
        assert session.scalar(sa.select(AuditEvent).where(AuditEvent.action == "settings.reset")) is not None


def test_csrf_is_required(site):
    data = site.form(admin_subject="Без токена")
    del data["csrf_token"]
    assert site.client.post(site.url, data=data).status_code == 403
    assert site.client.post(f"{site.url}/reset").status_code == 403
    assert site.overrides() == 0


def test_unknown_level_is_404(site):
    assert site.client.get("/monitor/levels/999999/settings").status_code == 404
    token = csrf_in(site.page())
    assert site.client.post("/monitor/levels/999999/settings", data={"csrf_token": token}).status_code == 404
    assert site.client.post("/monitor/levels/999999/settings/reset", data={"csrf_token": token}).status_code == 404


def test_login_is_required(small_site, settings_for):
    settings = settings_for(small_site)
    migrate_store(store_url(settings))
    runtime = build_runtime(settings, clock=FixedClock(START))
    try:
        client = create_app(runtime, testing=True).test_client()
        response = client.get("/monitor/levels/7/settings")
        assert response.status_code == 302 and "/login" in response.headers["Location"]
        assert client.post("/monitor/levels/7/settings").status_code in (302, 403)
        assert client.post("/monitor/levels/7/settings/reset").status_code in (302, 403)
    finally:
        runtime.close()


def test_russian_rendering(site):
    page = site.page(f"{site.url}?lang=ru")
    for text in ("Настройки напоминаний", "Письмо 1", "Дней после окончания доступа", "Тема", "Текст (HTML)",
                 "Сводка администратору", "E-mail администратора", "Сохранить"):
        assert text in page, text
    data = site.form(**{"letters.2.days": "1", "admin_email": "nobody"})
    page = html.unescape(site.client.post(site.url, data=data).get_data(as_text=True))
    assert "Должно быть позже письма 1" in page and "Это не адрес электронной почты." in page
    assert "Ничего не сохранено" in page
    assert not re.search(r"\bmonitor\.settings\.[a-z_.]+", page)
