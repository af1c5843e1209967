"""The per-level reminder settings form: parsing the posted fields and wording the validation errors in
the admin's language (the settings module words them in English)."""

from __future__ import annotations

import re
from collections.abc import Mapping
from typing import Any

from sidecar.mail.templates import MAX_OUTPUT, TOO_LARGE, TOO_MUCH_WORK
from sidecar.monitor.filters import TRUE_WORDS
from sidecar.monitor.settings import LETTERS, Letter, LevelSettings
from sidecar.web.i18n import translate


# The settings module words its errors in English; the page shows them in the admin's language.
_SETTINGS_ERRORS = {
    "days after expiry cannot be negative": "monitor.settings.error.negative",
    "cannot be negative": "monitor.settings.error.negative",
    "a letter needs a subject": "monitor.settings.error.no_subject",
    "a letter needs a body": "monitor.settings.error.no_body",
    "a letter with days needs a subject": "monitor.settings.error.days_without_subject",
    "a letter with days needs a body": "monitor.settings.error.days_without_body",
    "a letter with a subject or body needs its days after expiry": "monitor.settings.error.text_without_days",
    "the admin digest needs its days after the last letter": "monitor.settings.error.admin_without_days",
    "an administrator address is required for the admin digest": "monitor.settings.error.admin_email_required",
    "not an e-mail address": "monitor.settings.error.bad_email",
}
_LATER_THAN = re.compile(r"^must be later than letter (\d+) \((-?\d+) days\)$")


# Template errors come from sidecar.monitor.settings.template_errors: "template error at line N: reason".
_TEMPLATE_AT_LINE = re.compile(r"^template error at line (\d+): (.*)$", re.S)
_TEMPLATE_ERROR = re.compile(r"^template error: (.*)$", re.S)
# The variables a field may use are listed next to it, so the page leaves out the checker's long list.
_UNKNOWN_VARIABLE = re.compile(r"^unknown variable '([^']+)'(?: \(known: .*\))?$", re.S)


def _template_reason(reason: str) -> str:
    unknown = _UNKNOWN_VARIABLE.match(reason)
    if unknown:
        return translate("monitor.settings.error.unknown_variable", name=unknown.group(1))
    if reason.startswith(TOO_LARGE):
        return translate("monitor.settings.error.template_too_large", kb=MAX_OUTPUT // 1024)
    if reason.startswith(TOO_MUCH_WORK):
        return translate("monitor.settings.error.template_too_much_work")
    return reason  # Jinja's own wording of a syntax error (English)


def settings_error_text(message: str) -> str:
    if message in _SETTINGS_ERRORS:
        return translate(_SETTINGS_ERRORS[message])
    later = _LATER_THAN.match(message)
    if later:
        return translate("monitor.settings.error.not_later", n=later.group(1), days=later.group(2))
    at_line = _TEMPLATE_AT_LINE.match(message)
    if at_line:
        return translate("monitor.settings.error.template_line", line=at_line.group(1),
                         reason=_template_reason(at_line.group(2)))
    template = _TEMPLATE_ERROR.match(message)
    if template:
        return translate("monitor.settings.error.template", reason=_template_reason(template.group(1)))
    return message  # a rule added later still reaches the admin, if only in English


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
            errors[name] = translate("monitor.settings.error.not_a_number")
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


