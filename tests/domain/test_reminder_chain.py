"""Where a sleeper's reminder chain stands: the pure rule of sidecar/domain/reminder_chain.py."""

from __future__ import annotations

from datetime import date, timedelta

import pytest

from sidecar.domain.reminder_chain import (
    COMPLETE, FAILED, MONITORING_OFF, NOT_APPROVED, UNKNOWN, ChainEntry, ChainStatus, Learner, chain_status,
)
from sidecar.domain.reminders import Schedule, State

X = date(2026, 11, 1)
THREE = Schedule(letter_days=(3, 10, 30))
ANYONE = Learner()


def on(days_after_x: int) -> date:
    return X + timedelta(days=days_after_x)


def status(today: int, ledger=None, *, schedule=THREE, level_on=True, approved=True, learner=ANYONE,
           catch_up=7) -> ChainStatus:
    return chain_status(schedule, X, on(today), ledger or {}, level_on=level_on, approved=approved,
                        learner=learner, catch_up_days=catch_up)


def sent(step_day: int, sent_day: int | None = None) -> ChainEntry:
    return ChainEntry(State.SENT, on(step_day), on(sent_day if sent_day is not None else step_day))


def test_a_fresh_chain_names_its_first_letter_and_its_day():
    assert status(0) == ChainStatus(next_step=1, next_due=on(3))


def test_after_a_letter_the_list_shows_it_and_the_next_one():
    assert status(5, {1: sent(3, 4)}) == ChainStatus(last_step=1, last_sent_on=on(4), next_step=2, next_due=on(10))


def test_a_planned_or_sending_letter_is_the_next_one():
    for state in (State.PLANNED, State.SENDING):
        assert status(10, {1: sent(3), 2: ChainEntry(state, on(10))}) == ChainStatus(1, on(3), 2, on(10))


def test_every_letter_sent_completes_the_chain():
    ledger = {1: sent(3), 2: sent(10), 3: sent(30)}
    assert status(40, ledger) == ChainStatus(3, on(30), stopped=COMPLETE)


@pytest.mark.parametrize("state,stopped", [(State.FAILED, FAILED), (State.UNKNOWN, UNKNOWN)])
def test_a_failed_or_unknown_last_letter_stops_the_list_there(state, stopped):
    assert status(11, {1: sent(3), 2: ChainEntry(state, on(10))}).stopped == stopped


def test_a_skip_names_its_reason_a_superseded_step_does_not_stop_the_chain():
    assert status(11, {1: ChainEntry(State.SKIPPED, on(3), reason="unsubscribed")}).stopped == "unsubscribed"
    assert status(11, {1: ChainEntry(State.SKIPPED, on(3))}).stopped == "not_sleeper"
    superseded = {1: ChainEntry(State.SKIPPED, on(3), reason="superseded"), 2: ChainEntry(State.SKIPPED, on(10),
                                                                                         reason="superseded")}
    assert status(12, superseded) == ChainStatus(next_step=3, next_due=on(30))


def test_several_letters_due_at_once_name_the_latest_as_the_planner_sends_it():
    assert status(11) == ChainStatus(next_step=2, next_due=on(10))


def test_a_step_past_the_catch_up_window_is_too_late():
    assert status(10 + 7).next_step == 2           # exactly catch_up days late: still sent
    assert status(10 + 8, catch_up=7) == ChainStatus(stopped="too_late")   # one day more: never


def test_monitoring_off_or_no_letter_stops_the_chain_but_keeps_what_was_sent():
    assert status(5, {1: sent(3)}, level_on=False) == ChainStatus(1, on(3), stopped=MONITORING_OFF)
    assert status(5, schedule=Schedule()).stopped == MONITORING_OFF


@pytest.mark.parametrize("learner,reason", [
    (Learner(blocked=True), "blocked"), (Learner(unsubscribed=True), "unsubscribed"),
    (Learner(memberlux_unsubscribed=True), "memberlux_unsubscribed"), (Learner(has_email=False), "no_email"),
])
def test_what_the_planner_checks_about_the_learner_stops_the_next_letter(learner, reason):
    assert status(0, learner=learner) == ChainStatus(stopped=reason)


def test_a_level_awaiting_approval_shows_the_letter_it_would_send():
    assert status(0, approved=False) == ChainStatus(next_step=1, next_due=on(3), stopped=NOT_APPROVED)
