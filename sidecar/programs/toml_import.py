"""Programs described in a TOML file (kept in version control, applied with ``mlsidecar programs import``).

    [[program]]
    name = "English from zero to business"
    counting = "manual"              # manual (default) | any
    grant_first_step = true          # enrolment grants step 1
    enrol_on_first_level = false     # activating step 1's level enrols the learner
    steps = [
      { term_id = 10, duration = 1, units = "months" },
      { term_id = 7,  duration = 2, units = "months" },
    ]
    [program.notify]                 # optional: admin e-mails (legacy placeholders work)
    email = "manager@school.example"
    step_subject = "[user_login] moved to step [next_step]"
    step_body = "<p>…</p>"
    complete_subject = "…"
    complete_body = "…"

A program is matched by name: a new name creates it, a known one is updated when the file changes
something, and left alone (reported unchanged) when it does not. Every program is checked (file
structure, then the site: levels, durations, counting rule) before anything is written.
"""

from __future__ import annotations

import tomllib
from dataclasses import dataclass, fields, replace
from pathlib import Path
from typing import Literal

from pydantic import BaseModel, ConfigDict, Field, ValidationError

from sidecar.domain.programs import Counting, Step
from sidecar.programs.catalog import ProgramCatalog, ProgramDefinition, ProgramRejected


class _Strict(BaseModel):
    model_config = ConfigDict(extra="forbid")


class _Step(_Strict):
    term_id: int = Field(gt=0)
    duration: int = Field(gt=0, le=3650)
    units: Literal["days", "months", "years"] = "months"


class _Notify(_Strict):
    email: str = ""
    step_subject: str = ""
    step_body: str = ""
    complete_subject: str = ""
    complete_body: str = ""


class _Program(_Strict):
    name: str = Field(min_length=1, max_length=200)
    counting: Literal["manual", "any"] = "manual"
    grant_first_step: bool = False
    enrol_on_first_level: bool = False
    webhook_url: str = ""
    steps: list[_Step] = Field(min_length=1, max_length=50)
    notify: _Notify = _Notify()


class _File(_Strict):
    program: list[_Program] = Field(min_length=1)


class ProgramFileError(ValueError):
    def __init__(self, problems: list[str]) -> None:
        super().__init__("\n".join(problems))
        self.problems = problems


@dataclass(frozen=True)
class PlannedProgram:
    definition: ProgramDefinition
    existing_id: int | None          # None: will be created
    warnings: tuple[str, ...]
    changes: tuple[str, ...] = ()    # of an existing program: the fields the file changes

    @property
    def action(self) -> Literal["create", "update", "unchanged"]:
        if self.existing_id is None:
            return "create"
        return "update" if self.changes else "unchanged"


def _changed_fields(old: ProgramDefinition, new: ProgramDefinition) -> tuple[str, ...]:
    return tuple(f.name for f in fields(ProgramDefinition) if getattr(old, f.name) != getattr(new, f.name))


def read_file(path: Path) -> list[ProgramDefinition]:
    try:
        data = tomllib.loads(path.read_text(encoding="utf-8"))
    except OSError as exc:
        raise ProgramFileError([f"{path}: {exc.strerror or exc}"]) from None
    except (tomllib.TOMLDecodeError, UnicodeDecodeError) as exc:
        raise ProgramFileError([f"{path}: not valid TOML ({exc})"]) from None
    try:
        parsed = _File.model_validate(data)
    except ValidationError as exc:
        raise ProgramFileError([
            f"{path}: {'.'.join(str(p) for p in error['loc'])}: {error['msg']}" for error in exc.errors()]) from None
    return [ProgramDefinition(
        name=p.name, steps=tuple(Step(s.term_id, s.duration, s.units) for s in p.steps), counting=Counting(p.counting),
        enrol_on_first_level=p.enrol_on_first_level, grant_first_step=p.grant_first_step,
        notify_email=p.notify.email, notify_step_subject=p.notify.step_subject, notify_step_body=p.notify.step_body,
        notify_complete_subject=p.notify.complete_subject, notify_complete_body=p.notify.complete_body,
        webhook_url=p.webhook_url) for p in parsed.program]


def plan(catalog: ProgramCatalog, definitions: list[ProgramDefinition]) -> list[PlannedProgram]:
    """Check every program against the site; refuses the whole file on any blocking problem."""
    existing = {view.definition.name: view for view in catalog.all()}
    names = [d.name for d in definitions]
    problems = [f"program '{n}' appears more than once" for n in sorted({n for n in names if names.count(n) > 1})]
    planned = []
    for definition in definitions:
        found = catalog.problems(definition)
        problems += [f"program '{definition.name}': {p.field}: {p.message}" for p in found if p.blocking]
        warnings = tuple(f"{p.field}: {p.message}" for p in found if not p.blocking)
        view = existing.get(definition.name)
        if view is None:
            planned.append(PlannedProgram(definition, None, warnings))
            continue
        # The file cannot name a legacy post: a program imported from the old plugin keeps its link.
        definition = replace(definition, legacy_post_id=view.definition.legacy_post_id)
        planned.append(PlannedProgram(definition, view.id, warnings, _changed_fields(view.definition, definition)))
    if problems:
        raise ProgramFileError(problems)
    return planned


def apply(catalog: ProgramCatalog, planned: list[PlannedProgram], actor: str) -> dict[str, int]:
    """Create and update what the plan says; a program the file does not change is not touched (no
    write, no audit entry). Returns how many programs were created, updated and left unchanged."""
    counts = {"created": 0, "updated": 0, "unchanged": 0}
    for item in planned:
        if item.action == "unchanged":
            counts["unchanged"] += 1
            continue
        try:
            if item.existing_id is None:
                catalog.create(item.definition, actor)
                counts["created"] += 1
            else:
                catalog.update(item.existing_id, item.definition, actor)
                counts["updated"] += 1
        except ProgramRejected as exc:
            raise ProgramFileError([f"program '{item.definition.name}': {exc}"]) from None
    return counts
