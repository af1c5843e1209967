"""Specification of MemberLux access rules (core reference §3, §10; sleepers definition §3.8)."""

from __future__ import annotations

import ast
import sys
from datetime import date, datetime, timedelta, timezone
from pathlib import Path

import pytest

import sidecar.domain.access as access_module
from sidecar.domain.access import (
    KEY_STATUS_EXPIRED,
    KEY_STATUS_NEW,
    KEY_STATUS_USED,
    KEY_TYPE_BASKET,
    KEY_TYPE_TERM,
    AccessPolicy,
    AccessState,
    KeyRow,
    Period,
    access_ended_on,
    access_periods,
    activation_dates,
    activation_day,
    add_duration,
    classify,
    has_access_on,
    is_unlimited,
    last_end,
    level_access_on,
    period_on,
    qualifying_rows,
    renewal_after,
    rows_for_level,
    utc_day,
)

D = date
NO_BASKET = AccessPolicy(include_basket=False)
_ids = iter(range(1, 10**9))


def key(
    start: date | None,
    end: date | None,
    *,
    status: str | None = KEY_STATUS_USED,
    key_type: str | None = KEY_TYPE_TERM,
    banned: bool = False,
    unlimited: bool = False,
    duration: int = 1,
    units: str = "months",
    user_id: int | None = 7,
    term_id: int | None = 3,
    registered: date | None = None,
    activated_at: datetime | None = None,
    key_id: int | None = None,
) -> KeyRow:
    return KeyRow(
        key_id=next(_ids) if key_id is None else key_id,
        user_id=user_id,
        term_id=term_id,
        status=status,
        key_type=key_type,
        is_banned=banned,
        is_unlimited=unlimited,
        duration=duration,
        units=units,
        date_start=start,
        date_end=end,
        date_registered=registered,
        activated_at=activated_at,
    )


# ---------------------------------------------------------------------------------------------
# The module stays pure


def test_module_imports_only_the_standard_library():
    tree = ast.parse(Path(access_module.__file__).read_text(encoding="utf-8"))
    imported = set()
    for node in ast.walk(tree):
        if isinstance(node, ast.Import):
            imported.update(alias.name.split(".")[0] for alias in node.names)
        elif isinstance(node, ast.ImportFrom) and node.level == 0 and node.module:
            imported.add(node.module.split(".")[0])
    assert imported <= set(sys.stdlib_module_names) | {"__future__"}


# ---------------------------------------------------------------------------------------------
# MemberLux date arithmetic (core §3.2)


class TestAddDurationMonths:
    @pytest.mark.parametrize(
        ("start", "months", "expected"),
        [
            (D(2024, 1, 31), 1, D(2024, 3, 2)),  # leap year: 31 Feb -> 2 Mar
            (D(2023, 1, 31), 1, D(2023, 3, 3)),  # 31 Feb -> 3 Mar
            (D(2023, 3, 31), 1, D(2023, 5, 1)),  # 31 Apr -> 1 May
            (D(2024, 2, 29), 12, D(2025, 3, 1)),  # 29 Feb 2025 does not exist
            (D(2023, 1, 31), 12, D(2024, 1, 31)),
        ],
    )
    def test_documented_examples(self, start, months, expected):
        assert add_duration(start, months, "months") == expected

    def test_31_december_plus_two_months_overflows_out_of_february(self):
        assert add_duration(D(2022, 12, 31), 2, "months") == D(2023, 3, 3)
        assert add_duration(D(2023, 12, 31), 2, "months") == D(2024, 3, 2)

    def test_leap_day_survives_whole_leap_cycles(self):
        assert add_duration(D(2024, 2, 29), 48, "months") == D(2028, 2, 29)

    def test_30_january_overflows_only_in_common_years(self):
        assert add_duration(D(2023, 1, 30), 1, "months") == D(2023, 3, 2)
        assert add_duration(D(2024, 1, 30), 1, "months") == D(2024, 3, 1)
        assert add_duration(D(2024, 1, 29), 1, "months") == D(2024, 2, 29)

    def test_day_of_month_is_kept_when_it_exists(self):
        assert add_duration(D(2024, 5, 15), 1, "months") == D(2024, 6, 15)
        assert add_duration(D(2024, 11, 30), 3, "months") == D(2025, 3, 2)  # 30 Feb 2025
        assert add_duration(D(2024, 10, 1), 3, "months") == D(2025, 1, 1)

    def test_twelve_months_is_not_always_a_year_apart_from_a_leap_day(self):
        assert add_duration(D(2024, 2, 29), 12, "months") != D(2025, 2, 28)

    def test_zero_duration_returns_the_start(self):
        assert add_duration(D(2024, 1, 31), 0, "months") == D(2024, 1, 31)
        assert add_duration(D(2024, 1, 31), 0, "days") == D(2024, 1, 31)

    def test_negative_durations_go_backwards_with_the_same_overflow(self):
        assert add_duration(D(2023, 3, 31), -1, "months") == D(2023, 3, 3)  # 31 Feb 2023
        assert add_duration(D(2024, 3, 31), -1, "months") == D(2024, 3, 2)
        assert add_duration(D(2024, 1, 15), -1, "months") == D(2023, 12, 15)
        assert add_duration(D(2024, 1, 15), -13, "months") == D(2022, 12, 15)

    @pytest.mark.parametrize("units", ["month", "years", "weeks", "", "DAYS", "Days"])
    def test_unknown_units_count_as_months(self, units):
        assert add_duration(D(2023, 1, 31), 1, units) == D(2023, 3, 3)

    def test_out_of_range_raises_overflow_error(self):
        with pytest.raises(OverflowError):
            add_duration(D(9999, 12, 1), 1, "months")
        with pytest.raises(OverflowError):
            add_duration(D(9999, 12, 31), 1, "days")


class TestAddDurationDays:
    def test_days_are_plain_addition(self):
        assert add_duration(D(2024, 1, 31), 30, "days") == D(2024, 3, 1)
        assert add_duration(D(2023, 1, 31), 30, "days") == D(2023, 3, 2)
        assert add_duration(D(2023, 12, 31), 1, "days") == D(2024, 1, 1)

    def test_negative_days(self):
        assert add_duration(D(2024, 3, 1), -1, "days") == D(2024, 2, 29)


class TestActivationDates:
    TODAY = D(2024, 5, 10)

    def test_first_key_starts_today(self):
        assert activation_dates([], self.TODAY, 1, "months") == (D(2024, 5, 10), D(2024, 6, 10))

    def test_renewal_before_expiry_stacks_on_the_latest_end(self):
        rows = [key(D(2024, 1, 1), D(2024, 6, 1)), key(D(2024, 6, 1), D(2024, 7, 1))]
        assert activation_dates(rows, self.TODAY, 30, "days") == (D(2024, 7, 1), D(2024, 7, 31))

    def test_expired_status_still_stacks(self):
        rows = [key(D(2024, 4, 1), D(2024, 6, 1), status=KEY_STATUS_EXPIRED)]
        assert activation_dates(rows, self.TODAY, 1, "months")[0] == D(2024, 6, 1)

    def test_renewal_after_a_lapse_starts_today(self):
        rows = [key(D(2024, 1, 1), D(2024, 4, 1))]
        assert activation_dates(rows, self.TODAY, 1, "months") == (self.TODAY, D(2024, 6, 10))

    def test_key_ending_today_gives_today(self):
        rows = [key(D(2024, 4, 10), self.TODAY)]
        assert activation_dates(rows, self.TODAY, 1, "months")[0] == self.TODAY

    def test_an_unlimited_row_disables_stacking(self):
        rows = [key(D(2024, 1, 1), D(2030, 1, 1)), key(D(2024, 1, 1), D(2025, 1, 1), unlimited=True)]
        assert activation_dates(rows, self.TODAY, 1, "months")[0] == self.TODAY

    def test_banned_basket_and_new_rows_do_not_stack(self):
        rows = [
            key(D(2024, 5, 1), D(2024, 12, 1), banned=True),
            key(D(2024, 5, 1), D(2024, 11, 1), key_type=KEY_TYPE_BASKET),
            key(D(2034, 1, 1), D(2034, 1, 1), status=KEY_STATUS_NEW),
            key(D(2024, 5, 1), D(2024, 6, 1)),
        ]
        assert activation_dates(rows, self.TODAY, 1, "months") == (D(2024, 6, 1), D(2024, 7, 1))

    def test_a_banned_unlimited_row_does_not_disable_stacking(self):
        rows = [key(D(2024, 5, 1), None, unlimited=True, banned=True), key(D(2024, 5, 1), D(2024, 6, 1))]
        assert activation_dates(rows, self.TODAY, 1, "months")[0] == D(2024, 6, 1)

    def test_rows_with_zero_dates_are_ignored(self):
        rows = [key(D(2024, 5, 1), None)]
        assert activation_dates(rows, self.TODAY, 1, "months")[0] == self.TODAY

    def test_other_levels_never_stack(self):
        rows = [key(D(2024, 5, 1), D(2024, 9, 1), term_id=99)]
        assert activation_dates(rows, self.TODAY, 1, "months", same_level=False)[0] == self.TODAY

    def test_stacked_end_uses_php_month_overflow(self):
        rows = [key(D(2024, 1, 1), D(2024, 5, 31))]
        assert activation_dates(rows, self.TODAY, 1, "months") == (D(2024, 5, 31), D(2024, 7, 1))

    def test_today_may_be_a_utc_datetime(self):
        moscow = timezone(timedelta(hours=3))
        # 01:30 in Moscow on 11 May is still 10 May in UTC.
        now = datetime(2024, 5, 11, 1, 30, tzinfo=moscow)
        assert activation_dates([], now, 1, "days") == (D(2024, 5, 10), D(2024, 5, 11))


# ---------------------------------------------------------------------------------------------
# Which rows count (core §3.5)


class TestQualifyingRows:
    def test_new_and_null_status_rows_are_ignored(self):
        rows = [
            key(D(2034, 1, 1), D(2034, 1, 1), status=KEY_STATUS_NEW),
            key(D(2024, 1, 1), D(2024, 2, 1), status=None),
        ]
        assert qualifying_rows(rows) == []

    def test_used_and_expired_rows_count(self):
        used = key(D(2024, 1, 1), D(2024, 2, 1))
        expired = key(D(2023, 1, 1), D(2023, 2, 1), status=KEY_STATUS_EXPIRED)
        assert qualifying_rows([used, expired]) == [used, expired]

    def test_banned_rows_are_ignored(self):
        assert qualifying_rows([key(D(2024, 1, 1), D(2024, 2, 1), banned=True)]) == []

    def test_basket_rows_follow_the_policy(self):
        basket = key(D(2024, 1, 1), D(2024, 2, 1), key_type=KEY_TYPE_BASKET)
        assert qualifying_rows([basket]) == [basket]
        assert qualifying_rows([basket], NO_BASKET) == []

    def test_null_key_type_is_an_ordinary_key(self):
        row = key(D(2024, 1, 1), D(2024, 2, 1), key_type=None)
        assert qualifying_rows([row], NO_BASKET) == [row]

    def test_limited_rows_with_a_zero_date_are_dropped(self):
        rows = [key(None, D(2024, 2, 1)), key(D(2024, 1, 1), None), key(None, None)]
        assert qualifying_rows(rows) == []

    def test_unlimited_rows_need_only_a_start(self):
        row = key(D(2024, 1, 1), None, unlimited=True)
        assert qualifying_rows([row]) == [row]
        assert qualifying_rows([key(None, D(2024, 1, 1), unlimited=True)]) == []

    def test_zero_length_rows_qualify_but_give_no_period(self):
        row = key(D(2024, 1, 1), D(2024, 1, 1), duration=0)
        assert qualifying_rows([row]) == [row]
        assert access_periods([row]) == []


# ---------------------------------------------------------------------------------------------
# Access on a day


class TestHasAccessOn:
    ROW = key(D(2024, 1, 10), D(2024, 2, 10))

    def test_date_start_is_the_first_day_with_access(self):
        assert not has_access_on([self.ROW], D(2024, 1, 9))
        assert has_access_on([self.ROW], D(2024, 1, 10))

    def test_date_end_is_the_first_day_without_access(self):
        assert has_access_on([self.ROW], D(2024, 2, 9))
        assert not has_access_on([self.ROW], D(2024, 2, 10))

    def test_no_rows_no_access(self):
        assert not has_access_on([], D(2024, 1, 10))

    def test_expired_status_inside_its_dates_still_grants_access(self):
        # Status lags the cron and flips back and forth (core §3.3); only dates decide.
        row = key(D(2024, 1, 10), D(2024, 2, 10), status=KEY_STATUS_EXPIRED)
        assert has_access_on([row], D(2024, 1, 20))

    def test_used_status_past_date_end_is_expired(self):
        # The daily cron lags; the row still says 'used' after its end.
        row = key(D(2024, 1, 10), D(2024, 2, 10), status=KEY_STATUS_USED)
        assert not has_access_on([row], D(2024, 2, 15))
        assert classify([row], D(2024, 2, 15)).state is AccessState.EXPIRED

    def test_unlimited_row_ignores_its_meaningless_date_end(self):
        row = key(D(2024, 1, 10), D(2024, 2, 10), unlimited=True)
        assert not has_access_on([row], D(2024, 1, 9))
        assert has_access_on([row], D(2024, 1, 10))
        assert has_access_on([row], D(2099, 1, 1))

    def test_unlimited_row_with_date_end_before_start(self):
        row = key(D(2024, 1, 10), D(2020, 1, 1), unlimited=True)
        assert has_access_on([row], D(2030, 1, 1))

    def test_blocked_account_overrides_every_key(self):
        row = key(D(2024, 1, 10), None, unlimited=True)
        assert not has_access_on([row], D(2024, 3, 1), blocked=True)

    def test_banned_row_gives_no_access(self):
        row = key(D(2024, 1, 10), D(2024, 2, 10), banned=True)
        assert not has_access_on([row], D(2024, 1, 20))

    def test_basket_row_opens_content_only_when_the_policy_says_so(self):
        row = key(D(2024, 1, 10), D(2024, 2, 10), key_type=KEY_TYPE_BASKET)
        assert has_access_on([row], D(2024, 1, 20))
        assert has_access_on([row], D(2024, 1, 20), AccessPolicy(include_basket=True))
        assert not has_access_on([row], D(2024, 1, 20), NO_BASKET)

    def test_zero_length_row_never_grants_access(self):
        row = key(D(2024, 1, 10), D(2024, 1, 10), duration=0)
        assert not has_access_on([row], D(2024, 1, 10))

    def test_zero_date_rows_never_grant_access(self):
        assert not has_access_on([key(D(2024, 1, 10), None)], D(2024, 1, 20))

    def test_day_as_aware_datetime_is_compared_in_utc(self):
        row = key(D(2024, 1, 10), D(2024, 2, 10))
        moscow = timezone(timedelta(hours=3))
        # 02:00 Moscow on 10 Feb is 23:00 UTC on 9 Feb: still the last day.
        assert has_access_on([row], datetime(2024, 2, 10, 2, 0, tzinfo=moscow))
        assert not has_access_on([row], datetime(2024, 2, 10, 3, 0, tzinfo=moscow))


class TestAccessPeriods:
    def test_stacked_renewals_join_without_a_gap(self):
        rows = [
            key(D(2024, 1, 1), D(2024, 2, 1)),
            key(D(2024, 2, 1), D(2024, 3, 1)),  # stacked: starts on the previous end
            key(D(2024, 3, 1), D(2024, 4, 1)),
        ]
        assert access_periods(rows) == [Period(D(2024, 1, 1), D(2024, 4, 1))]

    def test_a_lapse_leaves_two_periods(self):
        rows = [key(D(2024, 1, 1), D(2024, 2, 1)), key(D(2024, 2, 2), D(2024, 3, 2))]
        assert access_periods(rows) == [
            Period(D(2024, 1, 1), D(2024, 2, 1)),
            Period(D(2024, 2, 2), D(2024, 3, 2)),
        ]

    def test_overlapping_rows_merge_and_output_is_sorted(self):
        rows = [
            key(D(2024, 3, 1), D(2024, 5, 1)),
            key(D(2024, 1, 1), D(2024, 2, 1)),
            key(D(2024, 1, 15), D(2024, 3, 15)),
        ]
        assert access_periods(rows) == [Period(D(2024, 1, 1), D(2024, 5, 1))]

    def test_contained_row_does_not_shorten_a_period(self):
        rows = [key(D(2024, 1, 1), D(2024, 6, 1)), key(D(2024, 2, 1), D(2024, 3, 1))]
        assert access_periods(rows) == [Period(D(2024, 1, 1), D(2024, 6, 1))]

    def test_unlimited_row_absorbs_everything_after_its_start(self):
        rows = [
            key(D(2024, 1, 1), D(2024, 2, 1)),
            key(D(2024, 5, 1), D(2024, 6, 1), unlimited=True),
            key(D(2024, 7, 1), D(2024, 8, 1)),
        ]
        assert access_periods(rows) == [
            Period(D(2024, 1, 1), D(2024, 2, 1)),
            Period(D(2024, 5, 1), None),
        ]

    def test_unlimited_row_joins_an_adjacent_limited_period(self):
        rows = [key(D(2024, 1, 1), D(2024, 2, 1)), key(D(2024, 2, 1), D(2024, 1, 1), unlimited=True)]
        assert access_periods(rows) == [Period(D(2024, 1, 1), None)]

    def test_zero_length_row_gives_no_period_and_bridges_nothing(self):
        rows = [
            key(D(2024, 1, 1), D(2024, 2, 1)),
            key(D(2024, 2, 5), D(2024, 2, 5), duration=0),
            key(D(2024, 3, 1), D(2024, 4, 1)),
        ]
        assert access_periods(rows) == [
            Period(D(2024, 1, 1), D(2024, 2, 1)),
            Period(D(2024, 3, 1), D(2024, 4, 1)),
        ]

    def test_period_on_finds_the_containing_period(self):
        rows = [key(D(2024, 1, 1), D(2024, 2, 1)), key(D(2024, 2, 1), D(2024, 3, 1))]
        assert period_on(rows, D(2024, 2, 15)) == Period(D(2024, 1, 1), D(2024, 3, 1))
        assert period_on(rows, D(2024, 3, 1)) is None

    def test_period_helpers(self):
        assert Period(D(2024, 1, 1), D(2024, 2, 1)).last_day == D(2024, 1, 31)
        assert Period(D(2024, 1, 1), None).last_day is None
        assert Period(D(2024, 1, 1), None).is_unlimited


# ---------------------------------------------------------------------------------------------
# Expiry and renewals


class TestAccessEndedOn:
    def test_on_the_end_day_access_has_ended(self):
        rows = [key(D(2024, 1, 1), D(2024, 2, 1))]
        assert access_ended_on(rows, D(2024, 1, 31)) is None
        assert access_ended_on(rows, D(2024, 2, 1)) == D(2024, 2, 1)
        assert access_ended_on(rows, D(2024, 9, 1)) == D(2024, 2, 1)

    def test_nothing_started_yet(self):
        assert access_ended_on([key(D(2024, 1, 1), D(2024, 2, 1))], D(2023, 12, 31)) is None
        assert access_ended_on([], D(2024, 1, 1)) is None

    def test_stacked_future_renewal_means_not_ended(self):
        rows = [key(D(2024, 1, 1), D(2024, 2, 1)), key(D(2024, 2, 1), D(2024, 3, 1))]
        assert access_ended_on(rows, D(2024, 2, 1)) is None
        assert access_ended_on(rows, D(2024, 3, 1)) == D(2024, 3, 1)

    def test_during_a_lapse_the_earlier_end_is_reported(self):
        rows = [key(D(2024, 1, 1), D(2024, 2, 1)), key(D(2024, 4, 1), D(2024, 5, 1))]
        assert access_ended_on(rows, D(2024, 3, 1)) == D(2024, 2, 1)
        assert access_ended_on(rows, D(2024, 4, 15)) is None
        assert access_ended_on(rows, D(2024, 6, 1)) == D(2024, 5, 1)

    def test_unlimited_access_never_ends(self):
        rows = [key(D(2024, 1, 1), D(2024, 2, 1), unlimited=True)]
        assert access_ended_on(rows, D(2030, 1, 1)) is None

    def test_banned_latest_row_does_not_hide_an_older_expiry(self):
        rows = [key(D(2024, 1, 1), D(2024, 2, 1)), key(D(2024, 2, 1), D(2024, 3, 1), banned=True)]
        assert access_ended_on(rows, D(2024, 2, 10)) == D(2024, 2, 1)
        assert last_end(rows) == D(2024, 2, 1)

    def test_zero_length_row_reads_as_expired_on_its_start(self):
        rows = [key(D(2024, 1, 10), D(2024, 1, 10), duration=0)]
        assert access_ended_on(rows, D(2024, 1, 9)) is None
        assert access_ended_on(rows, D(2024, 1, 10)) == D(2024, 1, 10)

    def test_zero_length_row_after_a_lapse_moves_the_expiry(self):
        rows = [key(D(2024, 1, 1), D(2024, 2, 1)), key(D(2024, 3, 1), D(2024, 3, 1), duration=0)]
        assert access_ended_on(rows, D(2024, 2, 15)) == D(2024, 2, 1)
        assert access_ended_on(rows, D(2024, 3, 5)) == D(2024, 3, 1) == last_end(rows)

    def test_zero_length_row_inside_a_period_changes_nothing(self):
        rows = [key(D(2024, 1, 1), D(2024, 2, 1)), key(D(2024, 1, 15), D(2024, 1, 15), duration=0)]
        assert access_ended_on(rows, D(2024, 1, 20)) is None
        assert access_ended_on(rows, D(2024, 2, 20)) == D(2024, 2, 1)

    def test_basket_row_expiry_follows_the_policy(self):
        rows = [
            key(D(2024, 1, 1), D(2024, 2, 1)),
            key(D(2024, 2, 1), D(2024, 3, 1), key_type=KEY_TYPE_BASKET),
        ]
        assert access_ended_on(rows, D(2024, 2, 10)) is None
        assert access_ended_on(rows, D(2024, 2, 10), NO_BASKET) == D(2024, 2, 1)


class TestLastEnd:
    def test_greatest_end_over_qualifying_rows(self):
        rows = [
            key(D(2024, 1, 1), D(2024, 2, 1)),
            key(D(2024, 2, 1), D(2024, 3, 1)),
            key(D(2024, 5, 1), D(2024, 9, 1), banned=True),
            key(D(2034, 1, 1), D(2034, 1, 1), status=KEY_STATUS_NEW),
        ]
        assert last_end(rows) == D(2024, 3, 1)

    def test_none_when_nothing_qualifies(self):
        assert last_end([]) is None
        assert last_end([key(D(2024, 1, 1), D(2024, 2, 1), banned=True)]) is None

    def test_none_when_any_row_is_unlimited(self):
        rows = [key(D(2024, 1, 1), D(2024, 2, 1)), key(D(2025, 1, 1), D(2025, 2, 1), unlimited=True)]
        assert last_end(rows) is None
        assert is_unlimited(rows)

    def test_zero_length_row_ends_on_its_activation_day(self):
        assert last_end([key(D(2024, 1, 10), D(2024, 1, 10), duration=0)]) == D(2024, 1, 10)

    def test_basket_rows_follow_the_policy(self):
        rows = [
            key(D(2024, 1, 1), D(2024, 2, 1)),
            key(D(2024, 2, 1), D(2024, 3, 1), key_type=KEY_TYPE_BASKET),
        ]
        assert last_end(rows) == D(2024, 3, 1)
        assert last_end(rows, NO_BASKET) == D(2024, 2, 1)


class TestIsUnlimited:
    def test_banned_basket_and_new_unlimited_rows_do_not_count(self):
        assert not is_unlimited([key(D(2024, 1, 1), None, unlimited=True, banned=True)])
        assert not is_unlimited([key(D(2024, 1, 1), None, unlimited=True, status=KEY_STATUS_NEW)])
        basket = key(D(2024, 1, 1), None, unlimited=True, key_type=KEY_TYPE_BASKET)
        assert is_unlimited([basket])
        assert not is_unlimited([basket], NO_BASKET)

    def test_limited_rows_only(self):
        assert not is_unlimited([key(D(2024, 1, 1), D(2024, 2, 1))])


class TestRenewalAfter:
    def test_stacked_renewal_starts_exactly_at_the_old_end(self):
        old = key(D(2024, 1, 1), D(2024, 2, 1))
        stacked = key(D(2024, 2, 1), D(2024, 3, 1))
        assert renewal_after([old, stacked], old.date_end) == stacked

    def test_renewal_after_a_lapse_starts_later(self):
        old = key(D(2024, 1, 1), D(2024, 2, 1))
        later = key(D(2024, 6, 1), D(2024, 7, 1))
        even_later = key(D(2024, 8, 1), D(2024, 9, 1))
        assert renewal_after([even_later, old, later], D(2024, 2, 1)) == later

    def test_no_renewal(self):
        old = key(D(2024, 1, 1), D(2024, 2, 1))
        assert renewal_after([old], D(2024, 2, 1)) is None

    def test_banned_zero_length_and_excluded_basket_rows_renew_nothing(self):
        old = key(D(2024, 1, 1), D(2024, 2, 1))
        rows = [
            old,
            key(D(2024, 3, 1), D(2024, 4, 1), banned=True),
            key(D(2024, 3, 2), D(2024, 3, 2), duration=0),
            key(D(2024, 3, 3), D(2024, 4, 3), key_type=KEY_TYPE_BASKET),
        ]
        assert renewal_after(rows, D(2024, 2, 1), NO_BASKET) is None
        assert renewal_after(rows, D(2024, 2, 1)) == rows[3]

    def test_unlimited_renewal(self):
        forever = key(D(2024, 3, 1), D(2024, 3, 1), unlimited=True)
        assert renewal_after([key(D(2024, 1, 1), D(2024, 2, 1)), forever], D(2024, 2, 1)) == forever

    def test_ties_go_to_the_lower_key_id(self):
        a = key(D(2024, 3, 1), D(2024, 4, 1), key_id=20)
        b = key(D(2024, 3, 1), D(2024, 5, 1), key_id=10)
        assert renewal_after([a, b], D(2024, 2, 1)) == b


# ---------------------------------------------------------------------------------------------
# Level hierarchy (core §2.1)


class TestLevelAccess:
    PARENT, CHILD, GRANDCHILD, OTHER = 1, 2, 3, 4

    def test_parent_key_opens_the_child(self):
        rows_by_level = {self.PARENT: [key(D(2024, 1, 1), D(2024, 2, 1), term_id=self.PARENT)]}
        assert level_access_on(rows_by_level, self.CHILD, [self.PARENT], D(2024, 1, 15))
        assert level_access_on(rows_by_level, self.GRANDCHILD, [self.CHILD, self.PARENT], D(2024, 1, 15))

    def test_child_key_does_not_open_the_parent(self):
        rows_by_level = {self.CHILD: [key(D(2024, 1, 1), D(2024, 2, 1), term_id=self.CHILD)]}
        assert not level_access_on(rows_by_level, self.PARENT, [], D(2024, 1, 15))

    def test_unrelated_level_does_not_count(self):
        rows_by_level = {self.OTHER: [key(D(2024, 1, 1), D(2024, 2, 1), term_id=self.OTHER)]}
        assert not level_access_on(rows_by_level, self.CHILD, [self.PARENT], D(2024, 1, 15))

    def test_own_key_counts(self):
        rows_by_level = {self.CHILD: [key(D(2024, 1, 1), D(2024, 2, 1), term_id=self.CHILD)]}
        assert level_access_on(rows_by_level, self.CHILD, [self.PARENT], D(2024, 1, 15))

    def test_blocked_account_has_no_level_access(self):
        rows_by_level = {self.PARENT: [key(D(2024, 1, 1), None, unlimited=True, term_id=self.PARENT)]}
        assert not level_access_on(rows_by_level, self.CHILD, [self.PARENT], D(2024, 1, 15), blocked=True)

    def test_levels_are_combined_once(self):
        row = key(D(2024, 1, 1), D(2024, 2, 1), term_id=self.CHILD)
        assert rows_for_level({self.CHILD: [row]}, self.CHILD, [self.CHILD, self.PARENT]) == [row]

    def test_policy_applies_to_ancestor_rows(self):
        parent_basket_row = key(D(2024, 1, 1), D(2024, 2, 1), key_type=KEY_TYPE_BASKET, term_id=self.PARENT)
        rows_by_level = {self.PARENT: [parent_basket_row]}
        assert level_access_on(rows_by_level, self.CHILD, [self.PARENT], D(2024, 1, 15))
        assert not level_access_on(rows_by_level, self.CHILD, [self.PARENT], D(2024, 1, 15), NO_BASKET)


# ---------------------------------------------------------------------------------------------
# Classification


class TestClassify:
    DAY = D(2024, 6, 15)

    def test_deleted_user_or_level_is_orphaned(self):
        rows = [key(D(2024, 1, 1), None, unlimited=True)]
        assert classify(rows, self.DAY, user_exists=False).state is AccessState.ORPHANED
        assert classify(rows, self.DAY, level_exists=False).state is AccessState.ORPHANED
        assert classify(rows, self.DAY, user_exists=False, blocked=True).state is AccessState.ORPHANED

    def test_blocked_account_beats_keys_but_keeps_their_story(self):
        rows = [key(D(2024, 1, 1), D(2024, 3, 1))]
        verdict = classify(rows, self.DAY, blocked=True)
        assert verdict.state is AccessState.BLOCKED
        assert verdict.underlying is AccessState.EXPIRED
        assert verdict.ended_on == D(2024, 3, 1)
        assert not verdict.has_access

    def test_blocked_with_an_active_key_still_has_no_access(self):
        verdict = classify([key(D(2024, 6, 1), D(2024, 7, 1))], self.DAY, blocked=True)
        assert verdict.state is AccessState.BLOCKED
        assert verdict.underlying is AccessState.ACTIVE
        assert not verdict.has_access

    def test_no_rows_or_only_new_rows_means_never_activated(self):
        assert classify([], self.DAY).state is AccessState.NEVER_ACTIVATED
        rows = [key(D(2034, 1, 1), D(2034, 1, 1), status=KEY_STATUS_NEW), key(None, None, status=None)]
        assert classify(rows, self.DAY).state is AccessState.NEVER_ACTIVATED

    def test_only_banned_rows(self):
        rows = [
            key(D(2024, 1, 1), D(2024, 3, 1), banned=True),
            key(D(2034, 1, 1), D(2034, 1, 1), status=KEY_STATUS_NEW),
        ]
        assert classify(rows, self.DAY).state is AccessState.BANNED_ONLY

    def test_only_zero_date_rows(self):
        rows = [key(None, None), key(D(2024, 1, 1), None, banned=True)]
        assert classify(rows, self.DAY).state is AccessState.NO_USABLE_ROWS

    def test_basket_only_rows_under_each_policy(self):
        rows = [key(D(2024, 6, 1), D(2024, 7, 1), key_type=KEY_TYPE_BASKET)]
        assert classify(rows, self.DAY).state is AccessState.ACTIVE
        assert classify(rows, self.DAY, NO_BASKET).state is AccessState.NO_USABLE_ROWS

    def test_active_with_current_period(self):
        rows = [key(D(2024, 6, 1), D(2024, 7, 1)), key(D(2024, 7, 1), D(2024, 8, 1))]
        verdict = classify(rows, self.DAY)
        assert verdict.state is AccessState.ACTIVE
        assert verdict.current_period == Period(D(2024, 6, 1), D(2024, 8, 1))
        assert verdict.renewed_by == rows[1]
        assert verdict.ended_on is None
        assert verdict.has_access

    def test_active_without_a_future_row(self):
        verdict = classify([key(D(2024, 6, 1), D(2024, 7, 1))], self.DAY)
        assert verdict.state is AccessState.ACTIVE
        assert verdict.renewed_by is None

    def test_unlimited(self):
        rows = [key(D(2024, 1, 1), D(2024, 2, 1), unlimited=True)]
        verdict = classify(rows, self.DAY)
        assert verdict.state is AccessState.UNLIMITED
        assert verdict.current_period == Period(D(2024, 1, 1), None)
        assert verdict.has_access

    def test_active_key_followed_by_an_adjacent_unlimited_key_is_unlimited(self):
        rows = [key(D(2024, 6, 1), D(2024, 7, 1)), key(D(2024, 7, 1), None, unlimited=True)]
        assert classify(rows, self.DAY).state is AccessState.UNLIMITED

    def test_expired(self):
        verdict = classify([key(D(2024, 1, 1), D(2024, 3, 1))], self.DAY)
        assert verdict.state is AccessState.EXPIRED
        assert verdict.ended_on == D(2024, 3, 1)
        assert verdict.renewed_by is None
        assert verdict.current_period is None

    def test_expired_on_the_end_day_itself(self):
        verdict = classify([key(D(2024, 5, 15), self.DAY)], self.DAY)
        assert verdict.state is AccessState.EXPIRED
        assert verdict.ended_on == self.DAY

    def test_expired_with_a_renewal_after_the_lapse(self):
        renewal = key(D(2024, 7, 1), D(2024, 8, 1))
        verdict = classify([key(D(2024, 1, 1), D(2024, 3, 1)), renewal], self.DAY)
        assert verdict.state is AccessState.EXPIRED
        assert verdict.ended_on == D(2024, 3, 1)
        assert verdict.renewed_by == renewal

    def test_expired_status_rows_inside_their_dates_are_active(self):
        rows = [key(D(2024, 6, 1), D(2024, 7, 1), status=KEY_STATUS_EXPIRED)]
        assert classify(rows, self.DAY).state is AccessState.ACTIVE

    def test_banned_current_key_leaves_the_older_expiry_visible(self):
        rows = [key(D(2024, 4, 1), D(2024, 5, 1)), key(D(2024, 5, 1), D(2024, 8, 1), banned=True)]
        verdict = classify(rows, self.DAY)
        assert verdict.state is AccessState.EXPIRED
        assert verdict.ended_on == D(2024, 5, 1)

    def test_future_rows_only_means_not_started(self):
        # The current key was banned; the stacked one waits for core to pull it back.
        future = key(D(2024, 7, 1), D(2024, 8, 1))
        rows = [key(D(2024, 6, 1), D(2024, 7, 1), banned=True), future]
        verdict = classify(rows, self.DAY)
        assert verdict.state is AccessState.NOT_STARTED
        assert verdict.renewed_by == future
        assert verdict.ended_on is None

    def test_zero_length_row_is_expired_from_its_start(self):
        rows = [key(D(2024, 6, 1), D(2024, 6, 1), duration=0)]
        verdict = classify(rows, self.DAY)
        assert verdict.state is AccessState.EXPIRED
        assert verdict.ended_on == D(2024, 6, 1)
        assert classify(rows, D(2024, 5, 1)).state is AccessState.NOT_STARTED

    def test_accepts_any_iterable(self):
        rows = (r for r in [key(D(2024, 6, 1), D(2024, 7, 1))])
        assert classify(rows, self.DAY).state is AccessState.ACTIVE


# ---------------------------------------------------------------------------------------------
# Small helpers


class TestHelpers:
    def test_utc_day(self):
        assert utc_day(D(2024, 1, 1)) == D(2024, 1, 1)
        assert utc_day(datetime(2024, 1, 1, 23, 59)) == D(2024, 1, 1)
        assert utc_day(datetime(2024, 1, 1, 23, 0, tzinfo=timezone(timedelta(hours=-2)))) == D(2024, 1, 2)

    def test_activation_day_prefers_keys_meta_then_date_registered_then_date_start(self):
        start = D(2024, 3, 1)
        assert activation_day(key(start, D(2024, 4, 1))) == start
        assert activation_day(key(start, D(2024, 4, 1), registered=D(2024, 2, 10))) == D(2024, 2, 10)
        row = key(start, D(2024, 4, 1), registered=D(2024, 2, 10), activated_at=datetime(2024, 2, 9, 22, 0))
        assert activation_day(row) == D(2024, 2, 9)
