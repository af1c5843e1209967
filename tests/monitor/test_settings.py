"""Per-level monitor settings: imported from the legacy term meta, overridden in our store, audited."""

from __future__ import annotations

from dataclasses import replace

import pytest
import sqlalchemy as sa

from sidecar.monitor.settings import Letter, LevelSettings, MonitorSettings, SettingsError, from_term_meta, validate
from sidecar.store.models import AuditEvent


def test_term_meta_is_imported_as_the_legacy_plugin_saved_it():
    meta = {"mlm_enabled": "1", "mlm_email_1_days": "3", "mlm_email_1_subject": "S1", "mlm_email_1_body": "B1",
            "mlm_email_2_days": "", "mlm_admin_days_after_last": "7", "mlm_admin_email": " boss@example.org "}
    settings = from_term_meta(12, meta)
    assert settings.enabled and settings.letters[0] == Letter(3, "S1", "B1")
    assert settings.letters[1].days is None and not settings.letters[1].configured
    assert settings.admin_days_after_last == 7 and settings.admin_email == "boss@example.org"


def test_zero_days_on_a_later_letter_is_the_legacy_empty_field():
    settings = from_term_meta(3, {"mlm_email_1_days": "0", "mlm_email_1_subject": "a", "mlm_email_1_body": "b",
                                  "mlm_email_3_days": "0", "mlm_email_3_subject": "c", "mlm_email_3_body": "d"})
    assert settings.letters[0].days == 0 and settings.letters[0].configured
    assert settings.letters[2].days is None and not settings.letters[2].configured
    # Letter 3 has a subject and a body but no days: off as imported, and named when saved as it is.
    assert errors_of(settings) == {"letters.3.days": "a letter with a subject or body needs its days after expiry"}
    validate(replace(settings, letters=(settings.letters[0], Letter(), Letter())))


def test_missing_meta_means_off_and_unset():
    settings = from_term_meta(5, {})
    assert not settings.enabled and all(not letter.configured for letter in settings.letters)
    assert settings.admin_days_after_last is None


def test_empty_letter_is_off_even_with_zero_days():
    assert not Letter(days=0, subject="", body="").configured
    assert Letter(days=0, subject="x", body="y").configured


def errors_of(settings: LevelSettings) -> dict[str, str]:
    """The refusal in English, as the CLI and the logs print it (the pages word its codes)."""
    try:
        validate(settings)
    except SettingsError as exc:
        return {name: str(message) for name, message in exc.errors.items()}
    return {}


def letters(*letters: Letter) -> LevelSettings:
    return LevelSettings(term_id=1, letters=letters)


WHOLE = ("Subject", "<p>Body</p>")


def test_a_letter_with_days_but_no_subject_and_body_is_refused_not_left_off():
    # Letter 1 at 10 days, letter 2 at 5 days with nothing else: saved, it would be silently off.
    assert errors_of(letters(Letter(10, *WHOLE), Letter(5, "", ""), Letter())) == {
        "letters.2.subject": "a letter with days needs a subject",
        "letters.2.body": "a letter with days needs a body",
        "letters.2.days": "must be later than letter 1 (10 days)",
    }
    assert errors_of(letters(Letter(3, *WHOLE), Letter(10, "  ", "\n"), Letter())) == {
        "letters.2.subject": "a letter with days needs a subject",
        "letters.2.body": "a letter with days needs a body",
    }


def test_a_subject_or_body_without_days_is_refused_not_left_off():
    assert errors_of(letters(Letter(3, *WHOLE), Letter(None, *WHOLE), Letter())) == {
        "letters.2.days": "a letter with a subject or body needs its days after expiry"}
    assert errors_of(letters(Letter(None, "", "<p>Body</p>"), Letter(), Letter())) == {
        "letters.1.days": "a letter with a subject or body needs its days after expiry",
        "letters.1.subject": "a letter needs a subject"}


def test_a_letter_is_either_empty_or_whole():
    assert errors_of(letters(Letter(3, *WHOLE), Letter(10, *WHOLE), Letter(30, *WHOLE))) == {}
    assert errors_of(letters(Letter(3, *WHOLE), Letter(), Letter())) == {}
    # The legacy form saved an empty days field as 0: with no subject and body that letter is simply off.
    assert errors_of(letters(Letter(0, "", ""), Letter(3, *WHOLE), Letter(0, "", ""))) == {}
    assert errors_of(letters(Letter(0, *WHOLE), Letter(), Letter())) == {}  # a letter on day X itself


def test_later_letters_come_later_than_every_earlier_letter_with_days():
    assert errors_of(letters(Letter(10, *WHOLE), Letter(), Letter(5, *WHOLE))) == {
        "letters.3.days": "must be later than letter 1 (10 days)"}
    assert errors_of(letters(Letter(10, *WHOLE), Letter(10, *WHOLE), Letter())) == {
        "letters.2.days": "must be later than letter 1 (10 days)"}
    # A half-filled letter's days count too: letter 3 must come after letter 2's 20 days.
    assert errors_of(letters(Letter(3, *WHOLE), Letter(20, "", ""), Letter(15, *WHOLE)))["letters.3.days"] == \
        "must be later than letter 2 (20 days)"


def test_an_admin_digest_without_its_days_is_refused_not_left_off():
    settings = LevelSettings(term_id=1, letters=(Letter(3, *WHOLE), Letter(), Letter()), admin_days_after_last=None,
                             admin_email="boss@example.org", admin_subject="Digest", admin_body="")
    assert errors_of(settings) == {"admin_days_after_last": "the admin digest needs its days after the last letter"}
    assert errors_of(replace(settings, admin_days_after_last=0)) == {}
    assert errors_of(replace(settings, admin_subject="", admin_email="")) == {}


def test_saving_refuses_a_half_filled_letter_and_stores_nothing(runtime):
    service = MonitorSettings(runtime)
    term_id = next(iter(service.all_levels()))
    before = service.effective(term_id)
    half = replace(before, letters=(Letter(10, *WHOLE), Letter(5, "", ""), Letter()), admin_email="",
                   admin_subject="", admin_body="")
    with pytest.raises(SettingsError) as caught:
        service.save(half, actor="admin")
    assert set(caught.value.errors) == {"letters.2.subject", "letters.2.body", "letters.2.days"}
    assert service.effective(term_id) == before


def test_validation_names_each_field():
    bad = LevelSettings(term_id=1, letters=(Letter(10, "a", "b"), Letter(5, "c", ""), Letter(-1, "", "")),
                        admin_subject="digest", admin_email="nobody")
    with pytest.raises(SettingsError) as caught:
        validate(bad)
    assert set(caught.value.errors) == {"letters.2.days", "letters.2.body", "letters.3.days", "admin_email",
                                        "admin_days_after_last"}


def test_seeded_site_settings_are_read(runtime):
    service = MonitorSettings(runtime)
    levels = service.all_levels()
    assert any(s.enabled for s in levels.values())
    enabled = next(s for s in levels.values() if s.enabled)
    assert enabled.letters[0].days == 3 and "[course_name]" in enabled.letters[0].body
    assert enabled.overridden == ()


def test_override_wins_is_audited_and_reset_restores_the_import(runtime):
    service = MonitorSettings(runtime)
    term_id = next(iter(service.all_levels()))
    imported = service.imported(term_id)
    changed = replace(imported, enabled=not imported.enabled,
                      letters=(Letter(2, "Вернитесь", "<p>Ждём вас</p>"), Letter(), Letter()),
                      admin_email="", admin_subject="", admin_body="")
    saved = service.save(changed, actor="admin")
    assert saved.enabled is changed.enabled and saved.letters[0].subject == "Вернитесь"
    assert "enabled" in saved.overridden and "letters" in saved.overridden
    assert service.imported(term_id) == imported  # WordPress untouched
    with runtime.sessions() as session:
        event = session.scalar(sa.select(AuditEvent).where(AuditEvent.subject_type == "monitor_level"))
    assert event.actor == "admin" and event.details["changes"]["enabled"] == {"from": imported.enabled,
                                                                              "to": changed.enabled}
    restored = service.reset(term_id, actor="admin")
    assert restored == imported


def test_a_value_set_back_to_the_imported_one_is_no_longer_an_override(runtime):
    service = MonitorSettings(runtime)
    term_id = next(iter(service.all_levels()))
    imported = service.imported(term_id)
    letters = (Letter(2, "Вернитесь", "<p>Ждём вас</p>"), Letter(), Letter())
    first = service.save(replace(imported, enabled=not imported.enabled, letters=letters, admin_email="",
                                 admin_subject="", admin_body=""), actor="admin")
    assert "enabled" in first.overridden
    second = service.save(replace(first, enabled=imported.enabled, overridden=()), actor="admin")
    assert "enabled" not in second.overridden and "letters" in second.overridden
