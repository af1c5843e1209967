"""Which reminder is due: the pure rules of sidecar/domain/reminders.py."""

from __future__ import annotations

from datetime import date, timedelta

import pytest
from hypothesis import given
from hypothesis import strategies as st

from sidecar.domain.reminders import (
    ADMIN_STEP,
    LedgerEntry,
    Schedule,
    SkipReason,
    State,
    admin_due,
    plan_learner,
    stop_reason,
    too_late,
)
from sidecar.domain.sleepers import Reason, SleeperVerdict

X = date(2026, 11, 1)
THREE = Schedule(letter_days=(3, 10, 30), admin_days_after_last=7, admin_on=True)


def on(days_after_x: int) -> date:
    return X + timedelta(days=days_after_x)


def plan(day_offset: int, ledger=None, schedule=THREE, catch_up=7):
    return [(d.step, d.send, d.reason) for d in
            plan_learner(schedule, X, on(day_offset), ledger or {}, catch_up_days=catch_up)]


def test_nothing_is_due_before_the_first_letter_day():
    assert plan(2) == []


def test_letter_n_is_due_on_x_plus_n_days():
    assert plan(3) == [(1, True, None)]
    assert plan(10, {1: LedgerEntry(State.SENT, on(3))}) == [(2, True, None)]
    assert plan(30, {1: LedgerEntry(State.SENT, on(3)), 2: LedgerEntry(State.SENT, on(10))}) == [(3, True, None)]


def test_a_step_already_in_the_ledger_is_never_planned_again():
    for state in State:
        assert plan(5, {1: LedgerEntry(state)}) == []


def test_after_missed_days_only_the_latest_due_step_goes_and_earlier_ones_are_superseded():
    assert plan(12) == [(1, False, SkipReason.SUPERSEDED), (2, True, None)]


def test_a_step_too_late_is_reported_not_sent():
    assert plan(18) == [(2, False, SkipReason.TOO_LATE)]
    assert plan(17) == [(1, False, SkipReason.SUPERSEDED), (2, True, None)]
    assert plan(100, catch_up=365) == [(1, False, SkipReason.SUPERSEDED), (2, False, SkipReason.SUPERSEDED),
                                       (3, True, None)]


def test_a_chain_whose_every_step_is_long_past_is_one_too_late_decision_for_its_latest_step():
    assert plan(400) == [(3, False, SkipReason.TOO_LATE)]
    assert plan(400, {1: LedgerEntry(State.SENT, on(3))}) == [(3, False, SkipReason.TOO_LATE)]
    assert plan(400, {3: LedgerEntry(State.SENT, on(30))}) == []   # the chain got its letters back then


def test_too_late_means_more_than_catch_up_days_after_the_due_day():
    assert not too_late(on(10), on(17), catch_up_days=7)
    assert too_late(on(10), on(18), catch_up_days=7)
    assert not too_late(on(10), on(10), catch_up_days=0) and too_late(on(10), on(11), catch_up_days=0)


def test_never_out_of_order_once_a_later_step_is_recorded():
    assert plan(31, {2: LedgerEntry(State.SKIPPED)}) == [(3, True, None)]
    assert plan(12, {2: LedgerEntry(State.SENT, on(10))}) == []


def test_one_letter_of_a_chain_in_flight_at_a_time():
    assert plan(11, {1: LedgerEntry(State.PLANNED)}) == []
    assert plan(11, {1: LedgerEntry(State.SENDING)}) == []
    assert plan(11, {1: LedgerEntry(State.FAILED)}) == [(2, True, None)]


def test_an_unknown_letter_holds_the_next_step_for_the_hold_days_then_counts_as_delivered():
    close = Schedule(letter_days=(3, 4, 30), admin_days_after_last=7, admin_on=True)
    unknown = {1: LedgerEntry(State.UNKNOWN, on(3))}       # handed to the server on day X + 3
    assert plan(4, unknown, schedule=close) == [(2, False, SkipReason.HELD)]
    assert plan(5, unknown, schedule=close) == [(2, False, SkipReason.HELD)]
    assert plan(6, unknown, schedule=close) == [(2, True, None)]          # three days after it was handed over
    assert [(d.step, d.send) for d in plan_learner(close, X, on(4), unknown, catch_up_days=7,
                                                   unknown_hold_days=1)] == [(2, True)]
    assert [(d.step, d.send, d.reason) for d in plan_learner(close, X, on(33), unknown, catch_up_days=7,
                                                             unknown_hold_days=365)] == [(3, False, SkipReason.HELD)]


def test_a_held_step_that_became_too_late_is_reported_too_late():
    assert plan(18, {1: LedgerEntry(State.UNKNOWN, on(17))}) == [(2, False, SkipReason.TOO_LATE)]


def test_an_unknown_last_letter_puts_the_learner_in_the_digest_only_after_the_hold():
    unknown = {1: LedgerEntry(State.SENT, on(3)), 2: LedgerEntry(State.SENT, on(10)), 3: LedgerEntry(State.UNKNOWN, on(30))}
    assert admin_due(THREE, on(37), unknown, unknown_hold_days=10) is None            # still held
    assert admin_due(THREE, on(40), unknown, unknown_hold_days=10) == on(37)
    assert admin_due(THREE, on(37), unknown) == on(37)                                 # default hold: 3 days


def test_letters_that_are_off_are_not_steps():
    only_second = Schedule(letter_days=(None, 5, None))
    assert only_second.steps == [(2, 5)] and only_second.last_step == 2
    assert plan(5, schedule=only_second) == [(2, True, None)]
    assert plan(100, schedule=Schedule()) == []


def test_day_zero_letter_goes_on_the_expiry_day():
    assert plan(0, schedule=Schedule(letter_days=(0, None, None))) == [(1, True, None)]


def test_digest_follows_the_last_letter_sent():
    sent = {1: LedgerEntry(State.SENT, on(3)), 2: LedgerEntry(State.SENT, on(10)), 3: LedgerEntry(State.SENT, on(31))}
    assert admin_due(THREE, on(37), sent) is None
    assert admin_due(THREE, on(38), sent) == on(38)
    assert admin_due(THREE, on(50), sent) == on(38)
    assert admin_due(THREE, on(50), {**sent, ADMIN_STEP: LedgerEntry(State.SENT)}) is None


def test_no_digest_for_a_learner_who_did_not_get_every_letter():
    assert admin_due(THREE, on(60), {1: LedgerEntry(State.SENT, on(3)), 3: LedgerEntry(State.SKIPPED)}) is None
    assert admin_due(THREE, on(60), {3: LedgerEntry(State.FAILED)}) is None


def test_digest_off_without_admin_letter_or_days():
    sent = {3: LedgerEntry(State.SENT, on(30))}
    assert admin_due(Schedule(letter_days=(3, 10, 30), admin_days_after_last=7, admin_on=False), on(60), sent) is None
    assert admin_due(Schedule(letter_days=(3, 10, 30), admin_days_after_last=None, admin_on=True), on(60), sent) is None


def verdict(reason: Reason, expired_on: date | None = X, blocked: bool = False) -> SleeperVerdict:
    return SleeperVerdict(1, 2, reason, expired_on, None, blocked)


CHECKS = {"unsubscribed": False, "monitoring_on": True, "letter_on": True, "has_email": True}


@pytest.mark.parametrize(("found", "expected"), [
    (verdict(Reason.SLEEPER), None),
    (verdict(Reason.ACTIVE, on(40)), SkipReason.RENEWED),
    (verdict(Reason.RENEWED, on(40)), SkipReason.RENEWED),
    (verdict(Reason.UNLIMITED, None), SkipReason.RENEWED),
    (verdict(Reason.ANCESTOR_ACTIVE), SkipReason.RENEWED),
    (verdict(Reason.SLEEPER, on(20)), SkipReason.RENEWED),       # renewed and lapsed again: a new chain
    (verdict(Reason.MANUAL_CERTIFICATE), SkipReason.CERTIFICATE),
    (verdict(Reason.SLEEPER, blocked=True), SkipReason.BLOCKED),
    (verdict(Reason.USER_DELETED, None), SkipReason.USER_DELETED),
    (verdict(Reason.BANNED_ONLY, None), SkipReason.NOT_SLEEPER),
])
def test_stop_rules_checked_before_sending(found, expected):
    assert stop_reason(found, X, **CHECKS) == expected


def test_settings_and_wishes_stop_a_letter_too():
    sleeper = verdict(Reason.SLEEPER)
    assert stop_reason(sleeper, X, **{**CHECKS, "monitoring_on": False}) is SkipReason.MONITORING_OFF
    assert stop_reason(sleeper, X, **{**CHECKS, "letter_on": False}) is SkipReason.LETTER_OFF
    assert stop_reason(sleeper, X, **{**CHECKS, "unsubscribed": True}) is SkipReason.UNSUBSCRIBED
    assert stop_reason(sleeper, X, **{**CHECKS, "memberlux_unsubscribed": True}) is SkipReason.MEMBERLUX_UNSUBSCRIBED
    assert stop_reason(sleeper, X, **{**CHECKS, "has_email": False}) is SkipReason.NO_EMAIL


@given(days=st.lists(st.integers(0, 60), min_size=1, max_size=3, unique=True).map(sorted),
       run_days=st.sets(st.integers(0, 120), max_size=40), catch_up=st.integers(0, 20))
def test_whatever_days_the_job_runs_steps_go_in_order_at_most_once_and_never_stale(days, run_days, catch_up):
    schedule = Schedule(letter_days=tuple(days + [None] * (3 - len(days))))  # type: ignore[arg-type]
    ledger: dict[int, LedgerEntry] = {}
    sent: list[tuple[int, int]] = []
    for offset in sorted(run_days):
        decisions = plan_learner(schedule, X, on(offset), ledger, catch_up_days=catch_up)
        assert sum(d.send for d in decisions) <= 1
        for d in decisions:
            assert d.step not in ledger
            if d.reason in (SkipReason.TOO_LATE, SkipReason.HELD):
                continue
            ledger[d.step] = LedgerEntry(State.SENT if d.send else State.SKIPPED, on(offset) if d.send else None)
            if d.send:
                assert 0 <= (on(offset) - d.due_on).days <= catch_up
                sent.append((d.step, offset))
    steps = [s for s, _ in sent]
    assert steps == sorted(steps) and len(steps) == len(set(steps))


@given(days=st.lists(st.integers(0, 60), min_size=1, max_size=3, unique=True).map(sorted),
       run_days=st.sets(st.integers(0, 120), max_size=40), unknown_steps=st.sets(st.integers(1, 3)),
       hold=st.integers(0, 10), catch_up=st.integers(0, 20))
def test_unknown_letters_never_let_a_later_step_go_inside_the_hold_nor_block_past_it(days, run_days, unknown_steps,
                                                                                     hold, catch_up):
    """Some letters end "unknown" instead of "sent": a later letter never goes out within ``hold``
    days of an unknown one, and once the hold has passed the chain moves on as if it had been sent."""
    schedule = Schedule(letter_days=tuple(days + [None] * (3 - len(days))))  # type: ignore[arg-type]
    ledger: dict[int, LedgerEntry] = {}
    for offset in sorted(run_days):
        today = on(offset)
        decisions = plan_learner(schedule, X, today, ledger, catch_up_days=catch_up, unknown_hold_days=hold)
        unknown_days = [e.sent_on for e in ledger.values() if e.state is State.UNKNOWN]
        within_hold = any((today - d).days < hold for d in unknown_days)
        if within_hold:
            assert not any(d.send for d in decisions)
        else:
            assert all(d.reason is not SkipReason.HELD for d in decisions)
            no_unknown = {n: LedgerEntry(State.SENT, e.sent_on) if e.state is State.UNKNOWN else e for n, e in ledger.items()}
            assert decisions == plan_learner(schedule, X, today, no_unknown, catch_up_days=catch_up)
        for d in decisions:
            if d.reason in (SkipReason.TOO_LATE, SkipReason.HELD):
                continue
            state = (State.UNKNOWN if d.step in unknown_steps else State.SENT) if d.send else State.SKIPPED
            ledger[d.step] = LedgerEntry(state, today if d.send else None)
