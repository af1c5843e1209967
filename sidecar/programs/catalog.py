"""Program definitions in our store: create, change, read — always checked against the site.

A definition is refused when a blocking problem of :func:`sidecar.domain.programs.check_program`
applies (unknown level, bad duration, a counting rule that would cascade); warnings are returned to
be shown. Every change is audited.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

import sqlalchemy as sa

from sidecar.bootstrap import Runtime
from sidecar.domain.programs import (Counting, ProgramProblem, Step, check_program, keep_steps_problem,
                                     no_product_problem)
from sidecar.store import audit
from sidecar.store.db import unit_of_work
from sidecar.store.program_models import Program, ProgramStep
from sidecar.webhooks.endpoints import program_endpoints


class ProgramRejected(ValueError):
    def __init__(self, problems: list[ProgramProblem]) -> None:
        super().__init__("; ".join(f"{p.field}: {p.message}" for p in problems if p.blocking))
        self.problems = problems


@dataclass(frozen=True)
class ProgramDefinition:
    name: str
    steps: tuple[Step, ...]
    counting: Counting = Counting.MANUAL
    enrol_on_first_level: bool = False
    grant_first_step: bool = False
    notify_email: str = ""
    notify_step_subject: str = ""
    notify_step_body: str = ""
    notify_complete_subject: str = ""
    notify_complete_body: str = ""
    webhook_url: str = ""
    legacy_post_id: int | None = None


@dataclass(frozen=True)
class ProgramView:
    id: int
    status: str
    definition: ProgramDefinition
    warnings: tuple[ProgramProblem, ...] = field(default_factory=tuple)


def level_mode(meta: dict[str, str]) -> str | None:
    """The level's certificate mode (core.md §4): ``auto``/``employee``, None when it issues none."""
    if (meta.get("_mblc_has_certificate") or "").strip() != "yes":
        return None
    return "auto" if (meta.get("_mblc_how_to_issue") or "").strip() == "auto" else "employee"


class ProgramCatalog:
    def __init__(self, runtime: Runtime) -> None:
        self.runtime = runtime

    def problems(self, definition: ProgramDefinition) -> list[ProgramProblem]:
        reader = self.runtime.reader
        names = {level.term_id: level.name for level in reader.levels()}
        modes = {step.term_id: level_mode(reader.level_meta(step.term_id))
                 for step in definition.steps if step.term_id in names}
        problems = check_program(definition.name, definition.steps, definition.counting, level_names=names,
                                 level_modes=modes)
        return problems + self._product_problems(definition, names)

    def _product_problems(self, definition: ProgramDefinition, names: dict[int, str]) -> list[ProgramProblem]:
        """Steps the write path could not grant today (no WooCommerce key product for that term).

        A warning, not a refusal: the product may be created later; until then a learner who passes
        the previous step waits (shown on the program page) and is granted once it exists."""
        if self.runtime.settings.memberlux.order_dialect != "woocommerce":
            return []
        from sidecar.bridge.service import BridgeService

        catalog = BridgeService(self.runtime).catalog
        problems = []
        for n, step in enumerate(definition.steps, start=1):
            if step.term_id not in names or (n == 1 and not definition.grant_first_step) or step.duration <= 0:
                continue
            if catalog.find(step.term_id, *step.as_ordered()) is None:
                problems.append(no_product_problem(n, step))
        return problems

    def _checked(self, definition: ProgramDefinition) -> list[ProgramProblem]:
        problems = self.problems(definition)
        if any(p.blocking for p in problems):
            raise ProgramRejected(problems)
        return problems

    def create(self, definition: ProgramDefinition, actor: str) -> ProgramView:
        warnings = self._checked(definition)
        now = self.runtime.clock.now()
        with unit_of_work(self.runtime.sessions) as session:
            program = Program(**_columns(definition), status="active", created_at=now, updated_at=now)
            session.add(program)
            session.flush()
            _store_steps(session, program.id, definition.steps)
            program_endpoints(session, program.id, webhook_url=definition.webhook_url,
                              notify_email=definition.notify_email, now=now)
            audit.record(session, subject_type="program", subject_id=str(program.id), action="program.created",
                         at=now, actor=actor, name=definition.name, steps=[s.__dict__ for s in definition.steps])
            program_id = program.id
        return ProgramView(program_id, "active", definition, tuple(warnings))

    def update(self, program_id: int, definition: ProgramDefinition, actor: str) -> ProgramView:
        """Change a program. Learners keep their stored step index; removing steps below an active
        learner's position is refused, since it would move them."""
        warnings = self._checked(definition)
        now = self.runtime.clock.now()
        from sidecar.store.program_models import Enrolment

        with unit_of_work(self.runtime.sessions) as session:
            program = session.get(Program, program_id)
            if program is None:
                raise LookupError(f"no program {program_id}")
            furthest = session.scalar(sa.select(sa.func.max(Enrolment.current_step)).where(
                Enrolment.program_id == program_id, Enrolment.status == "active"))
            if furthest is not None and furthest >= len(definition.steps):
                raise ProgramRejected([keep_steps_problem(furthest + 1)])
            before = self.get(program_id).definition
            for name, value in _columns(definition).items():
                setattr(program, name, value)
            program.updated_at = now
            session.execute(sa.delete(ProgramStep).where(ProgramStep.program_id == program_id))
            _store_steps(session, program_id, definition.steps)
            program_endpoints(session, program_id, webhook_url=definition.webhook_url,
                              notify_email=definition.notify_email, now=now)
            audit.record(session, subject_type="program", subject_id=str(program_id), action="program.changed",
                         at=now, actor=actor, before=_audit_form(before), after=_audit_form(definition))
            status = program.status
        return ProgramView(program_id, status, definition, tuple(warnings))

    def set_status(self, program_id: int, status: str, actor: str) -> None:
        if status not in ("active", "archived"):
            raise ValueError("status must be active or archived")
        now = self.runtime.clock.now()
        with unit_of_work(self.runtime.sessions) as session:
            program = session.get(Program, program_id)
            if program is None:
                raise LookupError(f"no program {program_id}")
            if program.status != status:
                program.status, program.updated_at = status, now
                audit.record(session, subject_type="program", subject_id=str(program_id),
                             action=f"program.{status}", at=now, actor=actor)

    def get(self, program_id: int) -> ProgramView:
        with self.runtime.sessions() as session:
            program = session.get(Program, program_id)
            if program is None:
                raise LookupError(f"no program {program_id}")
            steps = _steps(session, program_id)
            return ProgramView(program.id, program.status, _definition(program, steps))

    def all(self) -> list[ProgramView]:
        with self.runtime.sessions() as session:
            programs = list(session.scalars(sa.select(Program).order_by(Program.id)))
            steps: dict[int, list[Step]] = {}
            for row in session.scalars(sa.select(ProgramStep).order_by(ProgramStep.program_id, ProgramStep.position)):
                steps.setdefault(row.program_id, []).append(Step(row.term_id, row.duration, row.units))
            return [ProgramView(p.id, p.status, _definition(p, steps.get(p.id, []))) for p in programs]


def _columns(d: ProgramDefinition) -> dict[str, Any]:
    return {"name": d.name.strip()[:200], "counting": d.counting.value, "enrol_on_first_level": d.enrol_on_first_level,
            "grant_first_step": d.grant_first_step, "notify_email": d.notify_email, "notify_step_subject": d.notify_step_subject,
            "notify_step_body": d.notify_step_body, "notify_complete_subject": d.notify_complete_subject,
            "notify_complete_body": d.notify_complete_body, "webhook_url": d.webhook_url,
            "legacy_post_id": d.legacy_post_id}


def _store_steps(session: Any, program_id: int, steps: tuple[Step, ...]) -> None:
    session.add_all([ProgramStep(program_id=program_id, position=n, term_id=s.term_id, duration=s.duration, units=s.units)
                     for n, s in enumerate(steps)])


def _steps(session: Any, program_id: int) -> list[Step]:
    return [Step(r.term_id, r.duration, r.units) for r in session.scalars(
        sa.select(ProgramStep).where(ProgramStep.program_id == program_id).order_by(ProgramStep.position))]


def _definition(p: Program, steps: list[Step]) -> ProgramDefinition:
    return ProgramDefinition(
        name=p.name, steps=tuple(steps), counting=Counting(p.counting), enrol_on_first_level=p.enrol_on_first_level,
        grant_first_step=p.grant_first_step, notify_email=p.notify_email, notify_step_subject=p.notify_step_subject,
        notify_step_body=p.notify_step_body, notify_complete_subject=p.notify_complete_subject,
        notify_complete_body=p.notify_complete_body, webhook_url=p.webhook_url, legacy_post_id=p.legacy_post_id)


def _audit_form(d: ProgramDefinition) -> dict[str, Any]:
    return {"name": d.name, "counting": d.counting.value, "steps": [s.__dict__ for s in d.steps]}
