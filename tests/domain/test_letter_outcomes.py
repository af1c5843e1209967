"""The rules of "what happened after a letter": the window, the days measured, who was still a sleeper."""

from datetime import date

from sidecar.domain.letter_outcomes import Outcome, Tally, in_window, measured_days, outcome, still_sleeping

L = date(2026, 10, 1)


def test_the_window_is_the_letter_day_and_the_n_days_after_it():
    assert in_window(L, L, 14) and in_window(date(2026, 10, 15), L, 14)
    assert not in_window(date(2026, 10, 16), L, 14) and not in_window(date(2026, 9, 30), L, 14)
    assert not in_window(None, L, 14)


def test_only_letters_whose_window_has_ended_are_measured():
    assert measured_days(date(2026, 11, 24), 14, 365) == (date(2025, 11, 24), date(2026, 11, 9))


def test_a_renewal_or_certificate_before_the_letter_day_means_no_longer_a_sleeper():
    assert still_sleeping(L, None, [])
    assert still_sleeping(L, L, [L])                         # on the letter day itself: an outcome
    assert not still_sleeping(L, date(2026, 9, 30), [])
    assert not still_sleeping(L, None, [date(2026, 9, 30)])


def test_outcome_and_tally_count_each_learner_once():
    both = outcome(L, 7, date(2026, 10, 3), [date(2026, 10, 8)])
    assert both == Outcome(renewed=True, certified=True) and both.any
    none = outcome(L, 7, date(2026, 10, 9), [])
    assert not none.any
    tally = Tally().add(both).add(none)
    assert tally == Tally(learners=2, renewed=1, certified=1, either=1)
    assert (tally + tally).learners == 4 and tally.rate(tally.either) == 0.5
    assert Tally().rate(0) is None
