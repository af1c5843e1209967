"""The programs' English sentences (rule problems, legacy import findings, timeline details) in the
UI's language.

The domain and the import write plain English for the CLI and the logs, without I/O or Flask; the
pages recognise each known sentence by its shape and show the catalog's wording with the same
values, level ids turned into names. A sentence not recognised (a new rule, an exception's text) is
shown as written rather than hidden, so nothing is lost when a rule changes before its translation.
"""

from __future__ import annotations

import re
from collections.abc import Callable, Mapping
from typing import Any

from sidecar.web.i18n import translate

LevelName = Callable[[int], str]

_PROBLEMS: list[tuple[re.Pattern[str], str]] = [(re.compile(p), k) for p, k in (
    (r"^a program needs a name$", "programs.problem.name"),
    (r"^a program needs at least one step$", "programs.problem.no_steps"),
    (r"^at most (?P<max>\d+) steps$", "programs.problem.too_many_steps"),
    (r"^access level (?P<id>\d+) does not exist$", "programs.problem.unknown_level"),  # no name to show
    (r"^the duration must be a positive number$", "programs.problem.duration"),
    (r"^units must be one of (?P<units>.+)$", "programs.problem.units"),
    (r"^at most (?P<max>\d+) years$", "programs.problem.too_many_years"),
    (r"^level (?P<level>\d+) issues no certificates", "programs.problem.no_certificates"),
    (r"^step (?P<step>\d+) \(level (?P<level>\d+)\) issues certificates automatically", "programs.problem.cascade"),
    (r"^level (?P<level>\d+) issues certificates automatically", "programs.problem.auto_level"),
    (r"^level (?P<level>\d+) is also step (?P<step>\d+)", "programs.problem.repeated_level"),
    (r"^learners are on step (?P<step>\d+)", "programs.problem.keep_steps"),
)]

_LEGACY: list[tuple[re.Pattern[str], str]] = [(re.compile(p), k) for p, k in (
    (r"^step 1's duration is not taken from the legacy form", "programs.legacy.note.first_duration"),
    (r"^the post is '(?P<status>[^']*)': imported archived", "programs.legacy.note.not_published"),
    (r"^mlp_steps of program (?P<post>\d+) is not valid PHP-serialized data \((?P<detail>.*)\)$",
     "programs.legacy.problem.unserialize"),
    (r"^mlp_steps of program (?P<post>\d+) is not a non-empty list", "programs.legacy.problem.not_list"),
    (r"^step (?P<step>\d+) of program (?P<post>\d+) is not an array", "programs.legacy.problem.step_not_array"),
    (r"^step (?P<step>\d+) of program (?P<post>\d+) has a non-numeric term_id or duration: (?P<detail>.*)$",
     "programs.legacy.problem.step_not_numeric"),
    (r"^mlp_program_id (?P<post>\d+) is not an ml_program post", "programs.legacy.problem.no_program"),
    (r"^the user no longer exists$", "programs.legacy.problem.no_user"),
    (r"^mlp_current_step (?P<value>.+) is not a number$", "programs.legacy.problem.step_not_number"),
    (r"^mlp_current_step (?P<value>\d+) is outside the program's (?P<total>\d+) steps$",
     "programs.legacy.problem.step_outside"),
    (r"^mlp_current_step: step (?P<step>\d+)$", "programs.legacy.evidence.index"),
    (r"^program_flow keys: step (?P<step>\d+)$", "programs.legacy.evidence.keys"),
    (r"^last certificate: step (?P<step>\d+)$", "programs.legacy.evidence.certificate"),
    (r"^mlp_last_certificate_hash matches no certificate", "programs.legacy.evidence.hash_unmatched"),
    (r"^the sources disagree", "programs.legacy.evidence.disagree"),
)]

# A rule's problem inside the import's lists: "steps.2.term_id: access level 999 does not exist".
_FIELD_PROBLEM = re.compile(r"^(?P<field>name|steps|counting|steps\.\d+\.\w+): (?P<message>.+)$")
_WAITING = re.compile(r"^step (?P<step>\d+) cannot be granted: (?P<detail>.*)$", re.S)

IGNORE_REASONS = ("enrolment_not_active", "other_level", "auto_certificate", "certificate_deleted",
                  "issued_before_step", "user_deleted")
SOURCES = ("ui", "cli", "api", "legacy", "first_level", "toml")
KINDS = ("enrolled", "step_granted", "completed", "ignored", "withdrawn", "imported")


def level_label(names: Mapping[int, str]) -> LevelName:
    def label(term_id: int) -> str:
        name = names.get(term_id)
        return f"«{name}» (#{term_id})" if name else translate("programs.level_missing", id=term_id)
    return label


def _by_shape(patterns: list[tuple[re.Pattern[str], str]], text: str, level: LevelName) -> str | None:
    for pattern, key in patterns:
        found = pattern.search(text)
        if found:
            values: dict[str, Any] = dict(found.groupdict())
            if values.get("level"):
                values["level"] = level(int(values["level"]))
            return translate(key, **values) if values else translate(key)
    return None


def problem_text(message: str, level: LevelName) -> str:
    """A problem of :func:`sidecar.domain.programs.check_program` (or of an update) in the UI's language."""
    return _by_shape(_PROBLEMS, message, level) or message


def field_label(field: str) -> str:
    parts = field.split(".")
    if len(parts) == 3 and parts[0] == "steps" and parts[1].isdecimal():
        return translate(f"programs.field.step_{parts[2]}", n=int(parts[1]))
    text = translate(f"programs.field.{field}")
    return field if text.startswith("programs.field.") else text


def legacy_text(message: str, level: LevelName) -> str:
    """A note, problem or piece of evidence of the legacy import plan."""
    known = _by_shape(_LEGACY, message, level)
    if known is not None:
        return known
    found = _FIELD_PROBLEM.match(message)
    if found:
        return f"{field_label(found['field'])}: {problem_text(found['message'], level)}"
    return message


def waiting_text(message: str) -> str:
    """Why a certificate waits in the inbox (the bridge's reason stays as the bridge wrote it)."""
    found = _WAITING.match(message or "")
    if found:
        return translate("programs.waiting.step", step=found["step"], detail=found["detail"])
    return message or "—"


def label(prefix: str, value: str | None) -> str:
    """``programs.<prefix>.<value>`` from the catalog, the value itself when there is no entry."""
    if not value:
        return "—"
    text = translate(f"programs.{prefix}.{value}")
    return value if text.startswith("programs.") else text


def event_detail(kind: str, detail: Mapping[str, Any], level: LevelName) -> str:
    """A timeline event's detail as a sentence."""
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
        evidence = "; ".join(legacy_text(str(e), level) for e in detail.get("evidence") or []) or "—"
        key = "programs.event.imported_completed" if detail.get("completed") else "programs.event.imported"
        return translate(key, evidence=evidence)
    return ", ".join(f"{k}: {v}" for k, v in detail.items()) or "—"
