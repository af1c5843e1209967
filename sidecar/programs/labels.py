"""The programs' stored values in the page's language: form fields, statuses, sources, event kinds,
ignore reasons, and a timeline event's detail.

Every value has an entry calling the catalog with a literal key; a value without one (written by a
newer version) is shown as stored rather than hidden.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping
from typing import Any

from sidecar.domain.messages import from_dict
from sidecar.web.i18n import gettext, ngettext, pgettext
from sidecar.web.messages import Names, say

Text = Callable[[], str]

_LABELS: dict[str, dict[str, Text]] = {
    "status": {
        "active": lambda: pgettext("programs.status", "active"),
        "archived": lambda: gettext("archived"),
    },
    "learner_status": {
        "active": lambda: pgettext("programs.learner_status", "in progress"),
        "completed": lambda: gettext("completed"),
        "withdrawn": lambda: gettext("withdrawn"),
    },
    "source": {
        "ui": lambda: gettext("administrator"),
        "cli": lambda: gettext("command line"),
        "api": lambda: gettext("API"),
        "legacy": lambda: gettext("legacy import"),
        "first_level": lambda: gettext("activation of step 1"),
        "toml": lambda: gettext("file import"),
    },
    "kind": {
        "enrolled": lambda: gettext("enrolled"),
        "step_granted": lambda: gettext("step granted"),
        "completed": lambda: gettext("completed"),
        "ignored": lambda: gettext("certificate ignored"),
        "withdrawn": lambda: gettext("withdrawn"),
        "imported": lambda: gettext("imported"),
    },
    "reason": {
        "enrolment_not_active": lambda: gettext("the enrolment was not in progress"),
        "other_level": lambda: gettext("the certificate is for another level than the learner's current step"),
        "auto_certificate": lambda: gettext("an automatic certificate; this program counts certificates issued by hand only"),
        "certificate_deleted": lambda: gettext("the certificate was deleted"),
        "issued_before_step": lambda: gettext("the certificate was issued before the learner reached this step"),
        "user_deleted": lambda: gettext("the user no longer exists"),
    },
}

_FIELDS: dict[str, Text] = {
    "name": lambda: pgettext("programs.form.name", "Name"),
    "steps": lambda: gettext("Steps"),
    "counting": lambda: gettext("Counting"),
}
_STEP_FIELDS: dict[str, Callable[[int], str]] = {
    "term_id": lambda n: gettext("Step {n}: level", n=n),
    "duration": lambda n: gettext("Step {n}: duration", n=n),
    "units": lambda n: gettext("Step {n}: units", n=n),
}

_TERMS: dict[str, Callable[[int], str]] = {
    "days": lambda n: ngettext("{n} day", "{n} days", n),
    "months": lambda n: ngettext("{n} month", "{n} months", n),
    "years": lambda n: ngettext("{n} year", "{n} years", n),
}


def term(duration: int, units: str) -> str:
    """A step's duration ("3 months"); units this version does not know are shown as stored."""
    text = _TERMS.get(units)
    return text(duration) if text else f"{duration} {units}"


def level_label(names: Mapping[int, str]) -> Callable[[int], str]:
    def label(term_id: int) -> str:
        name = names.get(term_id)
        return f"«{name}» (#{term_id})" if name else pgettext("programs", "level #{id} (not on the site)", id=term_id)
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
        return gettext("By: {source} ({actor})", source=label("source", detail.get("source")),
                         actor=detail.get("actor") or "—")
    if kind == "step_granted":
        return gettext("Passed {passed}; granted {granted}", passed=level(int(detail.get("completed_level") or 0)),
                         granted=level(int(detail.get("granted_level") or 0)))
    if kind == "completed":
        return gettext("Passed {passed}: program completed", passed=level(int(detail.get("completed_level") or 0)))
    if kind == "ignored":
        return label("reason", detail.get("reason"))
    if kind == "withdrawn":
        return gettext("Withdrawn by {actor}", actor=detail.get("actor") or "—")
    if kind == "imported":
        evidence = _evidence(detail, names) or "—"
        if detail.get("completed"):
            return gettext("Imported from the legacy plugin as completed. Evidence: {evidence}", evidence=evidence)
        return gettext("Imported from the legacy plugin. Evidence: {evidence}", evidence=evidence)
    return ", ".join(f"{k}: {v}" for k, v in detail.items()) or "—"
