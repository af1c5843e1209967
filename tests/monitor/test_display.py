"""A learner's verdict as the learner page words it: a sleeper's days since access ended take the
language's plural form («1 день», «21 день», "1 day")."""

from __future__ import annotations

from datetime import date, timedelta
from types import SimpleNamespace

import pytest
from flask import Flask, g

from sidecar.domain.sleepers import Reason, SleeperVerdict
from sidecar.monitor.display import verdict_sentence

DAY = date(2026, 11, 24)


def _sentence(days: int, language: str) -> str:
    expired_on = DAY - timedelta(days=days)
    explanation = SimpleNamespace(day=DAY, verdict=SleeperVerdict(1, 7, Reason.SLEEPER, expired_on=expired_on))
    with Flask(__name__).app_context():
        g.language = language
        return verdict_sentence(explanation)  # type: ignore[arg-type]


@pytest.mark.parametrize(("days", "english", "russian"), [
    (1, "(1 day ago)", "(1 день назад)"),
    (2, "(2 days ago)", "(2 дня назад)"),
    (5, "(5 days ago)", "(5 дней назад)"),
    (21, "(21 days ago)", "(21 день назад)"),
])
def test_a_sleeper_s_days_since_access_ended_read_right_for_any_count(days, english, russian):
    x = (DAY - timedelta(days=days)).isoformat()
    assert _sentence(days, "en") == f"Sleeper: access ended on {x} {english} and nothing renews or replaces it."
    assert _sentence(days, "ru") == f"Спящий: доступ закончился {x} {russian}, и ничто его не продлевает и не заменяет."


def test_a_sleeper_whose_access_ended_today_reads_today_not_zero_days_ago():
    x = DAY.isoformat()
    assert _sentence(0, "en") == f"Sleeper: access ended today, {x}, and nothing renews or replaces it."
    assert _sentence(0, "ru") == f"Спящий: доступ закончился сегодня, {x}, и ничто его не продлевает и не заменяет."


def test_other_verdicts_keep_their_sentence():
    explanation = SimpleNamespace(day=DAY, verdict=SleeperVerdict(1, 7, Reason.ACTIVE, expired_on=DAY + timedelta(days=9)))
    with Flask(__name__).app_context():
        g.language = "en"
        assert verdict_sentence(explanation) == (  # type: ignore[arg-type]
            "Active: a key opens the level on 2026-11-24; access runs until 2026-12-03.")
