"""The emulator's own PHP date arithmetic, against PHP 8.2's documented behaviour (core.md 3.2)."""

from __future__ import annotations

from datetime import date

import pytest

from sidecar.devstack.phpdate import StackRow, add_duration, key_dates, mysql_date

LEVEL, OTHER = 7, 8
TODAY = date(2026, 1, 31)


@pytest.mark.parametrize(("start", "duration", "units", "end"), [
    (date(2028, 1, 31), 1, "months", date(2028, 3, 2)),    # 31 Jan + 1 month, leap year
    (date(2026, 1, 31), 1, "months", date(2026, 3, 3)),    # 31 Jan + 1 month, common year
    (date(2026, 3, 31), 1, "months", date(2026, 5, 1)),    # 31 Mar + 1 month
    (date(2028, 2, 29), 12, "months", date(2029, 3, 1)),   # 29 Feb + 12 months
    (date(2026, 1, 31), 12, "months", date(2027, 1, 31)),  # 31 Jan + 12 months
    (date(2026, 12, 15), 3, "months", date(2027, 3, 15)),  # across the year end
    (date(2026, 8, 31), 6, "months", date(2027, 3, 3)),    # 31 Feb 2027 rolls into March
    (date(2026, 1, 31), 0, "months", date(2026, 1, 31)),   # duration 0: no access at all
    (date(2026, 1, 31), 30, "days", date(2026, 3, 2)),
    (date(2028, 2, 28), 1, "days", date(2028, 2, 29)),
    (date(2026, 1, 31), 1, "years", date(2026, 3, 3)),     # any unit but "days" counts as months
])
def test_add_duration_follows_strtotime(start, duration, units, end):
    assert add_duration(start, duration, units) == end


def test_mysql_dates_as_php_reads_them():
    assert mysql_date("0000-00-00") is None and mysql_date(None) is None and mysql_date("garbage") is None
    assert mysql_date("2026-02-10") == date(2026, 2, 10) == mysql_date(date(2026, 2, 10))


def _row(end: date | None, *, term_id: int = LEVEL, banned: bool = False, basket: bool = False,
         unlimited: bool = False) -> StackRow:
    return StackRow(term_id=term_id, is_banned=banned, in_basket=basket, is_unlimited=unlimited, date_end=end)


def test_first_key_starts_today():
    dates = key_dates([], LEVEL, TODAY, 1, "months")
    assert (dates.date_start, dates.date_end) == (TODAY, date(2026, 3, 3))


def test_renewal_before_expiry_starts_at_the_greatest_end_of_the_same_level():
    rows = [_row(date(2026, 2, 10)), _row(date(2026, 2, 20)), _row(date(2027, 1, 1), term_id=OTHER)]
    dates = key_dates(rows, LEVEL, TODAY, 1, "months")
    assert (dates.date_start, dates.date_end) == (date(2026, 2, 20), date(2026, 3, 20))


def test_renewal_after_a_lapse_starts_today():
    dates = key_dates([_row(date(2025, 12, 1))], LEVEL, TODAY, 10, "days")
    assert (dates.date_start, dates.date_end) == (TODAY, date(2026, 2, 10))


def test_an_end_of_today_does_not_push_the_start():
    assert key_dates([_row(TODAY)], LEVEL, TODAY, 1, "days").date_start == TODAY


def test_banned_and_basket_rows_do_not_stack_other_statuses_do():
    rows = [_row(date(2027, 1, 1), banned=True), _row(date(2027, 6, 1), basket=True)]
    assert key_dates(rows, LEVEL, TODAY, 1, "months").date_start == TODAY
    # Any status counts: the rows carry no status here because MemberLux does not look at it.
    rows.append(_row(date(2026, 4, 1)))
    assert key_dates(rows, LEVEL, TODAY, 1, "months").date_start == date(2026, 4, 1)


def test_an_unlimited_row_of_the_level_means_now():
    rows = [_row(date(2026, 5, 1)), _row(date(2026, 2, 1), unlimited=True)]
    assert key_dates(rows, LEVEL, TODAY, 1, "months").date_start == TODAY
    # ... but only of the same level.
    rows = [_row(date(2026, 5, 1)), _row(None, term_id=OTHER, unlimited=True)]
    assert key_dates(rows, LEVEL, TODAY, 1, "months").date_start == date(2026, 5, 1)


def test_zero_dates_count_as_long_ago():
    assert key_dates([_row(None)], LEVEL, TODAY, 1, "months").date_start == TODAY


def test_same_level_twice_in_one_request_does_not_stack():
    # MemberLux caches the user's rows once per request: the second key sees the same rows as the first.
    cached = [_row(date(2026, 2, 10))]
    first = key_dates(cached, LEVEL, TODAY, 1, "months")
    second = key_dates(cached, LEVEL, TODAY, 3, "months")
    assert first.date_start == second.date_start == date(2026, 2, 10)
    assert (first.date_end, second.date_end) == (date(2026, 3, 10), date(2026, 5, 10))
