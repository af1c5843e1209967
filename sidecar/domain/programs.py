"""Bundle programs as pure rules: what a program may look like, and what a certificate does to an
enrolment (legacy-plugins.md §2, and its defects §2.6 that must not come back).

* The learner's position is the **stored** step of the enrolment, never inferred from the
  certificate: a certificate for another level (earlier, later, or a level the program uses twice)
  does not move anyone.
* Which certificates count is the program's choice, **manual only** by default: on ``auto`` levels
  MemberLux issues a certificate at every key activation (core.md §4), so counting those would
  cascade through the whole program the moment a step is granted. A program that counts every
  certificate while one of its advancing steps sits on an ``auto`` level is refused.
"""

from __future__ import annotations

import enum
from collections.abc import Mapping, Sequence
from dataclasses import dataclass

from sidecar.domain.messages import Message

UNITS = ("days", "months", "years")
#: Beyond ten years a step is a typo, not a course (the grant bridge draws the same line).
MAX_YEARS = 10
MAX_STEPS = 50


class Counting(str, enum.Enum):
    MANUAL = "manual"          # only certificates classified manual (default)
    ANY = "any"                # manual and auto — refused when it would cascade


class EnrolmentStatus(str, enum.Enum):
    ACTIVE = "active"
    COMPLETED = "completed"
    WITHDRAWN = "withdrawn"


@dataclass(frozen=True)
class Step:
    term_id: int
    duration: int
    units: str                 # days | months | years

    def as_ordered(self) -> tuple[int, str]:
        """The duration MemberLux is asked for: it knows days and months, so a year is twelve months."""
        if self.units == "years":
            return self.duration * 12, "months"
        return self.duration, self.units


@dataclass(frozen=True)
class ProgramProblem:
    field: str                 # "steps.2.term_id", "counting", "name", ...
    said: Message              # what is wrong, as a code with parameters
    blocking: bool = True      # False: a warning shown, saving allowed

    @property
    def message(self) -> str:
        """The problem in English, as the CLI, the API and the logs print it."""
        return self.said.english()


def _problem(field: str, code: str, *, blocking: bool = True, **params: object) -> ProgramProblem:
    return ProgramProblem(field, Message(code, params), blocking)


def check_program(name: str, steps: Sequence[Step], counting: Counting, *,
                  level_names: Mapping[int, str], level_modes: Mapping[int, str | None]) -> list[ProgramProblem]:
    """Everything wrong with a program definition; blocking problems refuse the save or import.

    ``level_modes`` maps a level to its certificate mode (``auto``/``employee``; None = no certificates).
    """
    problems: list[ProgramProblem] = []
    if not name.strip():
        problems.append(_problem("name", "programs.name_missing"))
    if not steps:
        problems.append(_problem("steps", "programs.no_steps"))
    if len(steps) > MAX_STEPS:
        problems.append(_problem("steps", "programs.too_many_steps", max=MAX_STEPS))
    for n, step in enumerate(steps, start=1):
        if step.term_id not in level_names:
            problems.append(_problem(f"steps.{n}.term_id", "programs.unknown_level", id=step.term_id))
        if step.duration <= 0:
            problems.append(_problem(f"steps.{n}.duration", "programs.duration_not_positive"))
        if step.units not in UNITS:
            problems.append(_problem(f"steps.{n}.units", "programs.bad_units", units=", ".join(UNITS)))
        elif step.units == "years" and step.duration > MAX_YEARS:
            problems.append(_problem(f"steps.{n}.duration", "programs.too_many_years", max=MAX_YEARS))
        if n < len(steps) and step.term_id in level_names:
            mode = level_modes.get(step.term_id)
            if mode is None:
                problems.append(_problem(f"steps.{n}.term_id", "programs.no_certificates", level=step.term_id,
                                         blocking=False))
            elif mode == "auto" and counting is Counting.ANY:
                problems.append(_problem("counting", "programs.cascade", step=n, level=step.term_id))
            elif mode == "auto":
                problems.append(_problem(f"steps.{n}.term_id", "programs.auto_level", level=step.term_id,
                                         blocking=False))
    seen: dict[int, int] = {}
    for n, step in enumerate(steps, start=1):
        if step.term_id in seen:
            problems.append(_problem(f"steps.{n}.term_id", "programs.repeated_level", level=step.term_id,
                                     step=seen[step.term_id], blocking=False))
        seen.setdefault(step.term_id, n)
    return problems


def keep_steps_problem(furthest_step: int) -> ProgramProblem:
    """An update that would drop the step some learners are on (1-based ``furthest_step``)."""
    return _problem("steps", "programs.keep_steps", step=furthest_step)


def no_product_problem(n: int, step: Step) -> ProgramProblem:
    """A warning: the bridge has no key product for step ``n`` (1-based), so learners would wait there."""
    return _problem(f"steps.{n}.duration", "programs.no_product", level=step.term_id, duration=step.duration,
                    units=step.units, blocking=False)


class Outcome(str, enum.Enum):
    ADVANCE = "advance"        # grant the next step
    COMPLETE = "complete"      # the last step is passed
    IGNORE = "ignore"


class IgnoreReason(str, enum.Enum):
    NOT_ACTIVE = "enrolment_not_active"
    OTHER_LEVEL = "other_level"          # not the level of the learner's current step
    NOT_COUNTED = "auto_certificate"     # the program counts manual certificates only
    DELETED = "certificate_deleted"
    ISSUED_BEFORE_STEP = "issued_before_step"   # older than the learner's arrival at this step


@dataclass(frozen=True)
class Decision:
    outcome: Outcome
    reason: IgnoreReason | None = None
    completed_step: int | None = None    # 0-based index of the step passed
    next_step: int | None = None         # 0-based index of the step to grant


def decide(steps: Sequence[Step], counting: Counting, *, status: EnrolmentStatus, current_step: int,
           certificate_level: int, certificate_class: str, deleted: bool = False,
           issued_before_step: bool = False) -> Decision:
    """What one certificate does to one enrolment."""
    if status is not EnrolmentStatus.ACTIVE:
        return Decision(Outcome.IGNORE, IgnoreReason.NOT_ACTIVE)
    if deleted:
        return Decision(Outcome.IGNORE, IgnoreReason.DELETED)
    if not 0 <= current_step < len(steps) or steps[current_step].term_id != certificate_level:
        return Decision(Outcome.IGNORE, IgnoreReason.OTHER_LEVEL)
    if counting is Counting.MANUAL and certificate_class != "manual":
        return Decision(Outcome.IGNORE, IgnoreReason.NOT_COUNTED)
    if issued_before_step:
        return Decision(Outcome.IGNORE, IgnoreReason.ISSUED_BEFORE_STEP)
    if current_step == len(steps) - 1:
        return Decision(Outcome.COMPLETE, completed_step=current_step)
    return Decision(Outcome.ADVANCE, completed_step=current_step, next_step=current_step + 1)


def grant_key(enrolment_id: int, step_index: int) -> str:
    """The outbox idempotency key of a step's grant: one grant per enrolment and step, ever."""
    return f"program:enrolment:{enrolment_id}:step:{step_index + 1}"
