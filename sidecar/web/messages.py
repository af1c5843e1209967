"""Messages of the domain and the imports (:class:`sidecar.domain.messages.Message`) in the page's language.

Each code has its own entry below calling the catalog with a literal key, so the catalog's wording
and placeholders are plain to see (and to extract); level ids become level names on the way. A code
without an entry, or a message whose parameters do not fit its entry (written by another version),
is shown in English as the CLI prints it: nothing is hidden. A test checks that every code of the
registry has an entry here and a wording in both languages.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping
from typing import Any, Protocol

from sidecar.domain.messages import Message, is_messages
from sidecar.web.i18n import translate


class Names(Protocol):
    """What a page knows to name the values of a message."""

    def level_label(self, term_id: int) -> str: ...

    def term(self, duration: int, units: str) -> str: ...


class _NoNames:
    """For pages whose messages name no level or term (a code that does gets the bare values)."""

    @staticmethod
    def level_label(term_id: int) -> str:
        return f"#{term_id}"

    @staticmethod
    def term(duration: int, units: str) -> str:
        return f"{duration} {units}"


Params = Mapping[str, Any]
Render = Callable[[Params, Names], str]

TEXTS: dict[str, Render] = {
    "programs.name_missing": lambda p, n: translate("programs.problem.name"),
    "programs.no_steps": lambda p, n: translate("programs.problem.no_steps"),
    "programs.too_many_steps": lambda p, n: translate("programs.problem.too_many_steps", max=p["max"]),
    "programs.unknown_level": lambda p, n: translate("programs.problem.unknown_level", id=p["id"]),
    "programs.duration_not_positive": lambda p, n: translate("programs.problem.duration"),
    "programs.bad_units": lambda p, n: translate("programs.problem.units", units=p["units"]),
    "programs.too_many_years": lambda p, n: translate("programs.problem.too_many_years", max=p["max"]),
    "programs.no_certificates": lambda p, n: translate("programs.problem.no_certificates",
                                                       level=n.level_label(p["level"])),
    "programs.cascade": lambda p, n: translate("programs.problem.cascade", step=p["step"],
                                               level=n.level_label(p["level"])),
    "programs.auto_level": lambda p, n: translate("programs.problem.auto_level", level=n.level_label(p["level"])),
    "programs.repeated_level": lambda p, n: translate("programs.problem.repeated_level", step=p["step"],
                                                      level=n.level_label(p["level"])),
    "programs.keep_steps": lambda p, n: translate("programs.problem.keep_steps", step=p["step"]),
    "programs.no_product": lambda p, n: translate("programs.problem.no_product", level=n.level_label(p["level"]),
                                                  term=n.term(p["duration"], p["units"])),
    "programs.step_waits": lambda p, n: translate("programs.waiting.step", step=p["step"], detail=p["detail"]),
    "programs.legacy.first_duration": lambda p, n: translate("programs.legacy.note.first_duration"),
    "programs.legacy.not_published": lambda p, n: translate("programs.legacy.note.not_published",
                                                            status=p["status"]),
    "programs.legacy.unserialize": lambda p, n: translate("programs.legacy.problem.unserialize", post=p["post"],
                                                          detail=p["detail"]),
    "programs.legacy.not_list": lambda p, n: translate("programs.legacy.problem.not_list", post=p["post"]),
    "programs.legacy.step_not_array": lambda p, n: translate("programs.legacy.problem.step_not_array",
                                                             step=p["step"], post=p["post"]),
    "programs.legacy.step_not_numeric": lambda p, n: translate("programs.legacy.problem.step_not_numeric",
                                                               step=p["step"], post=p["post"], detail=p["detail"]),
    "programs.legacy.no_program": lambda p, n: translate("programs.legacy.problem.no_program", post=p["post"]),
    "programs.legacy.no_user": lambda p, n: translate("programs.legacy.problem.no_user"),
    "programs.legacy.step_not_number": lambda p, n: translate("programs.legacy.problem.step_not_number",
                                                              value=p["value"]),
    "programs.legacy.step_outside": lambda p, n: translate("programs.legacy.problem.step_outside", value=p["value"],
                                                           total=p["total"]),
    "programs.legacy.evidence_index": lambda p, n: translate("programs.legacy.evidence.index", step=p["step"]),
    "programs.legacy.evidence_keys": lambda p, n: translate("programs.legacy.evidence.keys", step=p["step"]),
    "programs.legacy.evidence_certificate": lambda p, n: translate("programs.legacy.evidence.certificate",
                                                                   step=p["step"]),
    "programs.legacy.hash_unmatched": lambda p, n: translate("programs.legacy.evidence.hash_unmatched"),
    "programs.legacy.disagree": lambda p, n: translate("programs.legacy.evidence.disagree"),
    "templates.syntax": lambda p, n: translate("templates.error.syntax", detail=p["detail"]),
    "templates.unknown_variable": lambda p, n: translate("monitor.settings.error.unknown_variable", name=p["name"]),
    "templates.too_large": lambda p, n: translate("monitor.settings.error.template_too_large", kb=p["kb"]),
    "templates.too_much_work": lambda p, n: translate("monitor.settings.error.template_too_much_work"),
    "templates.range_too_long": lambda p, n: translate("templates.error.range_too_long", max=p["max"]),
    "templates.undefined": lambda p, n: translate("templates.error.undefined", detail=p["detail"]),
    "templates.undefined_value": lambda p, n: translate("templates.error.undefined_value"),
    "templates.failed": lambda p, n: translate("templates.error.failed", detail=p["detail"]),
    "settings.negative_days": lambda p, n: translate("monitor.settings.error.negative"),
    "settings.negative": lambda p, n: translate("monitor.settings.error.negative"),
    "settings.no_subject": lambda p, n: translate("monitor.settings.error.no_subject"),
    "settings.no_body": lambda p, n: translate("monitor.settings.error.no_body"),
    "settings.days_without_subject": lambda p, n: translate("monitor.settings.error.days_without_subject"),
    "settings.days_without_body": lambda p, n: translate("monitor.settings.error.days_without_body"),
    "settings.text_without_days": lambda p, n: translate("monitor.settings.error.text_without_days"),
    "settings.not_later": lambda p, n: translate("monitor.settings.error.not_later", n=p["n"], days=p["days"]),
    "settings.admin_without_days": lambda p, n: translate("monitor.settings.error.admin_without_days"),
    "settings.admin_email_required": lambda p, n: translate("monitor.settings.error.admin_email_required"),
    "settings.bad_email": lambda p, n: translate("monitor.settings.error.bad_email"),
    "settings.template_at_line": lambda p, n: translate("monitor.settings.error.template_line", line=p["line"],
                                                        reason=p["reason"]),
    "settings.template": lambda p, n: translate("monitor.settings.error.template", reason=p["reason"]),
    "grants.email_required": lambda p, n: translate("grants.reason.email_required"),
    "grants.email_invalid": lambda p, n: translate("grants.reason.email_invalid", max=p["max"], local=p["local"]),
    "grants.level_required": lambda p, n: translate("grants.reason.level_required"),
    "grants.level_invalid": lambda p, n: translate("grants.reason.level_invalid", max=p["max"]),
    "grants.units_invalid": lambda p, n: translate("grants.reason.units_invalid"),
    "grants.duration_required": lambda p, n: translate("grants.reason.duration_required"),
    "grants.duration_not_number": lambda p, n: translate("grants.reason.duration_not_number"),
    "grants.duration_not_positive": lambda p, n: translate("grants.reason.duration_not_positive"),
    "grants.duration_too_long": lambda p, n: translate("grants.reason.duration_too_long",
                                                       term=n.term(p["limit"], p["units"])),
    "grants.no_such_level": lambda p, n: translate("grants.reason.no_such_level"),
    "grants.invalid_fields": lambda p, n: translate("grants.reason.invalid_fields"),
    "grants.unknown_level": lambda p, n: translate("grants.reason.unknown_level", id=p["id"]),
    "grants.no_product": lambda p, n: translate("grants.reason.no_product", level=n.level_label(p["level"]),
                                                term=n.term(p["duration"], p["units"]), products=p["products"]),
    "grants.no_products": lambda p, n: translate("grants.reason.no_products", level=n.level_label(p["level"]),
                                                 term=n.term(p["duration"], p["units"])),
    "grants.lead_rejected": lambda p, n: translate("grants.reason.lead_rejected", lead=p["lead"], reason=p["reason"]),
    "grants.lead_rejected_fields": lambda p, n: translate("grants.reason.lead_rejected_fields", lead=p["lead"],
                                                          reason=p["reason"], fields=p["fields"]),
    "grants.lead_unreadable": lambda p, n: translate("grants.reason.lead_unreadable", lead=p["lead"],
                                                     detail=p["detail"]),
    "grants.crm_error": lambda p, n: translate("grants.reason.crm_error", detail=p["detail"]),
    "grants.gave_up": lambda p, n: translate("grants.reason.gave_up", attempts=p["attempts"], hours=p["hours"],
                                             reason=p["reason"]),
    "grants.refused": lambda p, n: translate("grants.reason.refused", detail=p["detail"]),
    "grants.unknown_outcome": lambda p, n: translate("grants.reason.unknown_outcome", detail=p["detail"]),
    "grants.unreachable": lambda p, n: translate("grants.reason.unreachable", detail=p["detail"]),
    "grants.rival": lambda p, n: translate("grants.reason.rival", rival=p["rival"]),
    "grants.no_key_after_order": lambda p, n: translate("grants.reason.no_key_after_order", order=p["order"],
                                                        grant=p["grant"]),
    "grants.not_found_after_order": lambda p, n: translate("grants.reason.not_found_after_order", reason=p["reason"],
                                                           payments=p["payments"]),
    "grants.duplicated": lambda p, n: translate("grants.reason.duplicated", count=p["count"], keys=p["keys"]),
    "grants.cancelled": lambda p, n: translate("grants.reason.cancelled", actor=p["actor"]),
}

FieldLabel = Callable[[str], str]


def _inner(value: Any, names: Names, field_label: FieldLabel | None) -> Any:
    if isinstance(value, Message):
        return say(value, names, field_label)
    if is_messages(value):
        return "; ".join(say(item, names, field_label) for item in value)
    return value


def word(message: Message, names: Names | None = None, field_label: FieldLabel | None = None) -> str:
    """The message in the page's language by its own wording; KeyError when it has none, or its
    parameters do not fit it (see :func:`say`, which then shows the English)."""
    names = names or _NoNames()
    # Messages inside (a template's reason in a settings error, a request's fields) are worded first.
    params = {name: _inner(value, names, field_label) for name, value in message.params.items()}
    text = TEXTS[message.code](params, names)
    if message.field:
        return f"{field_label(message.field) if field_label else message.field}: {text}"
    return text


def say(message: Message | str, names: Names | None = None, field_label: FieldLabel | None = None) -> str:
    """The message in the page's language; text (a row written before codes) is shown as written, and a
    message without a wording that fits it in English as the CLI prints it."""
    if isinstance(message, str):
        return message
    try:
        return word(message, names, field_label)
    except (KeyError, TypeError, ValueError):   # a code or parameters of another version
        return message.english()
