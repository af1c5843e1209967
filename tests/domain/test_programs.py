"""Specification of the bundle-program rules (legacy-plugins.md §2 and its defects §2.6), decision by
decision: what a program may look like, and what one certificate does to one enrolment."""

from __future__ import annotations

import pytest

from sidecar.domain.messages import Message
from sidecar.domain.programs import (
    MAX_STEPS,
    Counting,
    Decision,
    EnrolmentStatus,
    IgnoreReason,
    Outcome,
    Step,
    check_program,
    decide,
    grant_key,
    keep_steps_problem,
    no_product_problem,
)

YOGA, ENGLISH, DRAWING = 10, 7, 12
NAMES = {YOGA: "Йога", ENGLISH: "Английский", DRAWING: "Рисование"}
MANUAL_LEVELS = {YOGA: "employee", ENGLISH: "employee", DRAWING: "employee"}
TWO_STEPS = (Step(YOGA, 1, "months"), Step(ENGLISH, 3, "months"))


def problems(steps=TWO_STEPS, counting=Counting.MANUAL, *, name="Йога → английский", modes=None):
    found = check_program(name, steps, counting, level_names=NAMES, level_modes=MANUAL_LEVELS if modes is None else modes)
    return [(p.field, p.blocking) for p in found], [p.message for p in found]


def test_a_program_of_existing_manual_levels_has_no_problem():
    assert problems() == ([], [])


@pytest.mark.parametrize("name, steps, expected", [
    ("  ", TWO_STEPS, [("name", True)]),
    ("P", (), [("steps", True)]),
    ("P", tuple(Step(YOGA, 1, "days") for _ in range(MAX_STEPS + 1)),
     [("steps", True)] + [(f"steps.{n}.term_id", False) for n in range(2, MAX_STEPS + 2)]),
    ("P", (Step(999, 1, "months"), Step(ENGLISH, 1, "months")), [("steps.1.term_id", True)]),
    ("P", (Step(YOGA, 0, "months"), Step(ENGLISH, -2, "months")), [("steps.1.duration", True), ("steps.2.duration", True)]),
    ("P", (Step(YOGA, 1, "weeks"), Step(ENGLISH, 1, "months")), [("steps.1.units", True)]),
    ("P", (Step(YOGA, 11, "years"), Step(ENGLISH, 10, "years")), [("steps.1.duration", True)]),
    ("P", (Step(YOGA, 1, "months"), Step(YOGA, 1, "months")), [("steps.2.term_id", False)]),
])
def test_each_defect_of_a_definition_is_named_with_its_field(name, steps, expected):
    assert problems(steps, name=name)[0] == expected


@pytest.mark.parametrize("step, ordered", [
    (Step(YOGA, 14, "days"), (14, "days")),
    (Step(YOGA, 3, "months"), (3, "months")),
    (Step(YOGA, 2, "years"), (24, "months")),   # MemberLux knows days and months only
])
def test_a_step_is_ordered_in_the_units_memberlux_knows(step, ordered):
    assert step.as_ordered() == ordered


def test_steps_in_years_are_a_program_like_any_other():
    assert problems((Step(YOGA, 1, "years"), Step(ENGLISH, 10, "years"))) == ([], [])


def test_a_step_whose_level_issues_no_certificates_is_a_warning_learners_would_wait_forever():
    fields, messages = problems(modes={YOGA: None, ENGLISH: "employee"})
    assert fields == [("steps.1.term_id", False)] and "issues no certificates" in messages[0]


def test_an_auto_level_before_the_last_step_is_a_warning_when_only_manual_certificates_count():
    fields, messages = problems(modes={YOGA: "auto", ENGLISH: "employee"})
    assert fields == [("steps.1.term_id", False)] and "automatically" in messages[0]


def test_counting_every_certificate_with_an_auto_level_before_the_last_step_is_refused():
    fields, messages = problems(counting=Counting.ANY, modes={YOGA: "auto", ENGLISH: "employee"})
    assert fields == [("counting", True)] and "cascade" in messages[0]


def test_the_last_steps_certificate_mode_does_not_matter():
    assert problems(modes={YOGA: "employee", ENGLISH: None}) == ([], [])
    assert problems(counting=Counting.ANY, modes={YOGA: "employee", ENGLISH: "auto"}) == ([], [])


THREE_STEPS = (Step(YOGA, 1, "months"), Step(ENGLISH, 3, "months"), Step(DRAWING, 1, "months"))


@pytest.mark.parametrize("status, step, level, cls, deleted, before, expected", [
    # (enrolment status, current step, certificate level, class, deleted, issued before the step) -> decision
    (EnrolmentStatus.ACTIVE, 0, YOGA, "manual", False, False, Decision(Outcome.ADVANCE, completed_step=0, next_step=1)),
    (EnrolmentStatus.ACTIVE, 1, ENGLISH, "manual", False, False, Decision(Outcome.ADVANCE, completed_step=1, next_step=2)),
    (EnrolmentStatus.ACTIVE, 2, DRAWING, "manual", False, False, Decision(Outcome.COMPLETE, completed_step=2)),
    (EnrolmentStatus.COMPLETED, 2, DRAWING, "manual", False, False, Decision(Outcome.IGNORE, IgnoreReason.NOT_ACTIVE)),
    (EnrolmentStatus.WITHDRAWN, 0, YOGA, "manual", False, False, Decision(Outcome.IGNORE, IgnoreReason.NOT_ACTIVE)),
    (EnrolmentStatus.ACTIVE, 0, YOGA, "manual", True, False, Decision(Outcome.IGNORE, IgnoreReason.DELETED)),
    # The position is the stored step, never inferred from the certificate (defect: skipping steps).
    (EnrolmentStatus.ACTIVE, 0, ENGLISH, "manual", False, False, Decision(Outcome.IGNORE, IgnoreReason.OTHER_LEVEL)),
    (EnrolmentStatus.ACTIVE, 2, YOGA, "manual", False, False, Decision(Outcome.IGNORE, IgnoreReason.OTHER_LEVEL)),
    (EnrolmentStatus.ACTIVE, 3, DRAWING, "manual", False, False, Decision(Outcome.IGNORE, IgnoreReason.OTHER_LEVEL)),
    (EnrolmentStatus.ACTIVE, -1, DRAWING, "manual", False, False, Decision(Outcome.IGNORE, IgnoreReason.OTHER_LEVEL)),
    # Auto certificates come with every activation: they never count by default.
    (EnrolmentStatus.ACTIVE, 0, YOGA, "auto", False, False, Decision(Outcome.IGNORE, IgnoreReason.NOT_COUNTED)),
    # A certificate older than the learner's arrival at the step was earned before it: it does not pass it.
    (EnrolmentStatus.ACTIVE, 1, ENGLISH, "manual", False, True, Decision(Outcome.IGNORE, IgnoreReason.ISSUED_BEFORE_STEP)),
])
def test_what_one_certificate_does_to_one_enrolment(status, step, level, cls, deleted, before, expected):
    assert decide(THREE_STEPS, Counting.MANUAL, status=status, current_step=step, certificate_level=level,
                  certificate_class=cls, deleted=deleted, issued_before_step=before) == expected


def test_a_program_counting_every_certificate_advances_on_an_auto_certificate_too():
    assert decide(THREE_STEPS, Counting.ANY, status=EnrolmentStatus.ACTIVE, current_step=0, certificate_level=YOGA,
                  certificate_class="auto") == Decision(Outcome.ADVANCE, completed_step=0, next_step=1)


def test_each_step_of_each_enrolment_has_one_grant_key_ever():
    assert grant_key(41, 0) == "program:enrolment:41:step:1"
    assert len({grant_key(e, s) for e in range(5) for s in range(5)}) == 25


# --- what the problems say: a code with parameters, English for the CLI --------------------------------

def test_each_problem_is_a_code_with_the_values_its_sentence_names():
    found = check_program("", (Step(999, 0, "weeks"), Step(YOGA, 11, "years"), Step(YOGA, 1, "days"),
                               Step(DRAWING, 1, "days")), Counting.ANY, level_names=NAMES,
                          level_modes={YOGA: "auto", DRAWING: None})
    said = [(p.field, p.said.code, dict(p.said.params)) for p in found]
    assert said == [
        ("name", "programs.name_missing", {}),
        ("steps.1.term_id", "programs.unknown_level", {"id": 999}),
        ("steps.1.duration", "programs.duration_not_positive", {}),
        ("steps.1.units", "programs.bad_units", {"units": "days, months, years"}),
        ("steps.2.duration", "programs.too_many_years", {"max": 10}),
        ("counting", "programs.cascade", {"step": 2, "level": YOGA}),
        ("counting", "programs.cascade", {"step": 3, "level": YOGA}),
        ("steps.3.term_id", "programs.repeated_level", {"level": YOGA, "step": 2}),
    ]
    assert found[5].message == ("step 2 (level 10) issues certificates automatically at every activation: counting "
                                "every certificate would grant the next step at once and cascade through the program; "
                                "count manual certificates only")


def test_the_sentences_the_cli_prints_are_unchanged():
    too_long = check_program("x", (Step(YOGA, 11, "years"),) * (MAX_STEPS + 1), Counting.MANUAL, level_names=NAMES,
                             level_modes=MANUAL_LEVELS)
    assert [p.message for p in too_long][:2] == ["at most 50 steps", "at most 10 years"]
    _, messages = problems(modes={YOGA: None, ENGLISH: "employee"})
    assert messages == ["level 10 issues no certificates: learners cannot pass this step"]
    _, messages = problems((Step(YOGA, 1, "months"), Step(YOGA, 1, "months")))
    assert messages == ["level 10 is also step 1: a certificate for it advances whichever of the two steps the "
                        "learner is on"]
    assert keep_steps_problem(3).message == "learners are on step 3: keep at least 3 steps"
    assert keep_steps_problem(3).said == Message("programs.keep_steps", {"step": 3})
    warning = no_product_problem(2, Step(ENGLISH, 3, "months"))
    assert (warning.field, warning.blocking) == ("steps.2.duration", False)
    assert warning.message == ("no WooCommerce key product grants level 7 for 3 months: learners will wait at this "
                               "step until one exists")
