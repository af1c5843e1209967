"""The programs' stored values in the page's language: form fields, statuses, sources, event kinds,
ignore reasons, and a timeline event's detail.

Every value has an entry calling the catalog with a literal key; a value without one (written by a
newer version) is shown as stored rather than hidden.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping
from typing import Any

from sidecar.domain.messages import from_dict
from sidecar.web.i18n import translate
from sidecar.web.messages import Names, say

Text = Callable[[], str]

_LABELS: dict[str, dict[str, Text]] = {
    "status": {
        "active": lambda: translate("programs.status.active"),
        "archived": lambda: translate("programs.status.archived"),
    },
    "learner_status": {
        "active": lambda: translate("programs.learner_status.active"),
        "completed": lambda: translate("programs.learner_status.completed"),
        "withdrawn": lambda: translate("programs.learner_status.withdrawn"),
    },
    "source": {
        "ui": lambda: translate("programs.source.ui"),
        "cli": lambda: translate("programs.source.cli"),
        "api": lambda: translate("programs.source.api"),
        "legacy": lambda: translate("programs.source.legacy"),
        "first_level": lambda: translate("programs.source.first_level"),
        "toml": lambda: translate("programs.source.toml"),
    },
    "kind": {
        "enrolled": lambda: translate("programs.kind.enrolled"),
        "step_granted": lambda: translate("programs.kind.step_granted"),
        "completed": lambda: translate("programs.kind.completed"),
        "ignored": lambda: translate("programs.kind.ignored"),
        "withdrawn": lambda: translate("programs.kind.withdrawn"),
        "imported": lambda: translate("programs.kind.imported"),
    },
    "reason": {
        "enrolment_not_active": lambda: translate("programs.reason.enrolment_not_active"),
        "other_level": lambda: translate("programs.reason.other_level"),
        "auto_certificate": lambda: translate("programs.reason.auto_certificate"),
        "certificate_deleted": lambda: translate("programs.reason.certificate_deleted"),
        "issued_before_step": lambda: translate("programs.reason.issued_before_step"),
        "user_deleted": lambda: translate("programs.reason.user_deleted"),
    },
}

_FIELDS: dict[str, Text] = {
    "name": lambda: translate("programs.field.name"),
    "steps": lambda: translate("programs.field.steps"),
    "counting": lambda: translate("programs.field.counting"),
}
_STEP_FIELDS: dict[str, Callable[[int], str]] = {
    "term_id": lambda n: translate("programs.field.step_term_id", n=n),
    "duration": lambda n: translate("programs.field.step_duration", n=n),
    "units": lambda n: translate("programs.field.step_units", n=n),
}

_TERMS: dict[str, Callable[[int], str]] = {
    "days": lambda n: translate("programs.term.days", n=n),
    "months": lambda n: translate("programs.term.months", n=n),
    "years": lambda n: translate("programs.term.years", n=n),
}


def term(duration: int, units: str) -> str:
    """A step's duration ("3 months"); units this version does not know are shown as stored."""
    text = _TERMS.get(units)
    return text(duration) if text else f"{duration} {units}"


def level_label(names: Mapping[int, str]) -> Callable[[int], str]:
    def label(term_id: int) -> str:
        name = names.get(term_id)
        return f"«{name}» (#{term_id})" if name else translate("programs.level_missing", id=term_id)
    return label


def label(kind: str, value: str | None) -> str:
    """A stored value of ``kind`` (status, learner_status, source, kind, reason) in the page's language."""
    if not value:
        return "—"
    text = _LABELS[kind].get(value)
    return text() if text else value


def field_label(field: str) -> str:
    """A form field of a program ("name", "steps.2.term_id") as the form names it."""
    parts = field.split(".")
    if len(parts) == 3 and parts[0] == "steps" and parts[1].isdecimal() and parts[2] in _STEP_FIELDS:
        return _STEP_FIELDS[parts[2]](int(parts[1]))
    text = _FIELDS.get(field)
    return text() if text else field


def _evidence(detail: Mapping[str, Any], names: Names) -> str:
    """The import's evidence: from its codes when the event kept them, else the English it kept."""
    coded = [from_dict(item) for item in detail.get("evidence_codes") or []]
    if coded and all(coded):
        return "; ".join(say(m, names) for m in coded if m is not None)
    return "; ".join(str(e) for e in detail.get("evidence") or [])


def event_detail(kind: str, detail: Mapping[str, Any], names: Names) -> str:
    """A timeline event's detail as a sentence."""
    level = names.level_label
    if kind == "enrolled":
        return translate("programs.event.enrolled", source=label("source", detail.get("source")),
                         actor=detail.get("actor") or "—")
    if kind == "step_granted":
        return translate("programs.event.step_granted", passed=level(int(detail.get("completed_level") or 0)),
                         granted=level(int(detail.get("granted_level") or 0)))
    if kind == "completed":
        return translate("programs.event.completed", passed=level(int(detail.get("completed_level") or 0)))
    if kind == "ignored":
        return label("reason", detail.get("reason"))
    if kind == "withdrawn":
        return translate("programs.event.withdrawn", actor=detail.get("actor") or "—")
    if kind == "imported":
        evidence = _evidence(detail, names) or "—"
        if detail.get("completed"):
            return translate("programs.event.imported_completed", evidence=evidence)
        return translate("programs.event.imported", evidence=evidence)
    return ", ".join(f"{k}: {v}" for k, v in detail.items()) or "—"
