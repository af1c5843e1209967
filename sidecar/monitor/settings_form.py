"""The per-level reminder settings form: parsing the posted fields and showing them again.

The validation's errors are messages with codes (:func:`sidecar.monitor.settings.validate`), worded in
the admin's language by :func:`sidecar.web.messages.say`."""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

from sidecar.monitor.filters import TRUE_WORDS
from sidecar.monitor.settings import LETTERS, Letter, LevelSettings
from sidecar.web.i18n import gettext


def settings_fields(settings: LevelSettings) -> dict[str, Any]:
    """The settings flattened to the form's field names (the same names the validation errors use)."""
    fields: dict[str, Any] = {"enabled": settings.enabled}
    for n, letter in enumerate(settings.letters, start=1):
        fields[f"letters.{n}.days"] = letter.days
        fields[f"letters.{n}.subject"] = letter.subject
        fields[f"letters.{n}.body"] = letter.body
    for name in ("admin_days_after_last", "admin_email", "admin_subject", "admin_body", "renewal_url"):
        fields[name] = getattr(settings, name)
    return fields


def parse_settings_form(term_id: int, form: Mapping[str, str]) -> tuple[LevelSettings, dict[str, str], dict[str, Any]]:
    """Settings from the posted form, the fields that are not numbers, and the raw values to show again."""
    errors: dict[str, str] = {}
    raw: dict[str, Any] = {"enabled": (form.get("enabled") or "").strip().lower() in TRUE_WORDS}

    def days(name: str) -> int | None:
        text = (form.get(name) or "").strip()
        raw[name] = text
        if not text:
            return None  # empty = not set, like a key the legacy plugin never saved
        try:
            return int(text)
        except ValueError:
            errors[name] = gettext("Enter a whole number of days or leave the field empty.")
            return None

    def text(name: str) -> str:
        raw[name] = form.get(name) or ""
        return raw[name]

    letters = tuple(Letter(days=days(f"letters.{n}.days"), subject=text(f"letters.{n}.subject"),
                           body=text(f"letters.{n}.body")) for n in range(1, LETTERS + 1))
    settings = LevelSettings(term_id=term_id, enabled=raw["enabled"], letters=letters,
                             admin_days_after_last=days("admin_days_after_last"),
                             admin_email=text("admin_email").strip(), admin_subject=text("admin_subject"),
                             admin_body=text("admin_body"), renewal_url=text("renewal_url").strip())
    return settings, errors, raw


