"""Property tests: the access rules against a day-by-day brute-force oracle.

The oracle below re-derives everything from core reference §3.5 one calendar day at a time and shares
no code with the module under test.
"""

from __future__ import annotations

import calendar
from datetime import date, timedelta

from hypothesis import given, settings
from hypothesis import strategies as st

from sidecar.domain.access import (
    AccessPolicy,
    AccessState,
    KeyRow,
    access_ended_on,
    access_periods,
    activation_dates,
    add_duration,
    classify,
    has_access_on,
    last_end,
    renewal_after,
)

BASE = date(2023, 1, 1)
SPAN = 730  # rows start within about two years
LATEST_START = BASE + timedelta(days=SPAN - 5)
# Days examined: a little before the first possible start to well after the last possible end.
FIRST_DAY = BASE - timedelta(days=3)
LAST_DAY = BASE + timedelta(days=SPAN + 260)
DAYS = [FIRST_DAY + timedelta(days=i) for i in range((LAST_DAY - FIRST_DAY).days + 1)]

PROPERTY_SETTINGS = settings(max_examples=300, deadline=None)


# ---------------------------------------------------------------------------------------------
# Row generation


@st.composite
def row_lists(draw) -> list[KeyRow]:
    """Rows of one user and level; many start on or just after an earlier row's end, as renewals do."""
    rows: list[KeyRow] = []
    for _ in range(draw(st.integers(0, 7))):
        # Renewals chain only while they stay inside the window the oracle walks.
        ends = [r.date_end for r in rows if r.date_end is not None and BASE <= r.date_end <= LATEST_START]
        how = draw(st.sampled_from(["anywhere", "stacked", "after_lapse"] if ends else ["anywhere"]))
        if how == "anywhere":
            start = BASE + timedelta(days=draw(st.integers(0, SPAN - 5)))
        else:
            start = draw(st.sampled_from(ends))
            if how == "after_lapse":
                start += timedelta(days=draw(st.integers(1, 5)))
        # Mostly ordinary lengths, some zero-length and a few inverted rows.
        length = draw(st.one_of(st.integers(1, 200), st.just(0), st.integers(-20, -1)))
        zero_dates = draw(st.sampled_from(["none"] * 5 + ["start", "end", "both"]))
        rows.append(
            KeyRow(
                key_id=len(rows) + 1,
                user_id=7,
                term_id=3,
                status=draw(st.sampled_from(["used", "used", "used", "expired", "expired", "new", None])),
                key_type=draw(st.sampled_from(["wpm_term_keys", "wpm_term_keys", None, "wpm_keys_basket"])),
                is_banned=draw(st.integers(0, 4)) == 0,
                is_unlimited=draw(st.integers(0, 7)) == 0,
                duration=length,
                units="days",
                date_start=None if zero_dates in ("start", "both") else start,
                date_end=None if zero_dates in ("end", "both") else start + timedelta(days=length),
                date_registered=None,
            )
        )
    # Input order must not matter.
    return draw(st.permutations(rows))


policies = st.builds(AccessPolicy, include_basket=st.booleans())


# ---------------------------------------------------------------------------------------------
# The oracle


def oracle_counts(row: KeyRow, policy: AccessPolicy) -> bool:
    status = "new" if row.status is None else row.status
    if status not in ("used", "expired") or row.is_banned:
        return False
    if row.key_type == "wpm_keys_basket" and not policy.include_basket:
        return False
    if row.date_start is None:
        return False
    return row.is_unlimited or row.date_end is not None


def oracle_opens(row: KeyRow, day: date) -> bool:
    return row.date_start <= day and (row.is_unlimited or day < row.date_end)


def oracle_access_days(rows, policy) -> list[bool]:
    counted = [row for row in rows if oracle_counts(row, policy)]
    return [any(oracle_opens(row, day) for row in counted) for day in DAYS]


def oracle_ended_on(rows, policy) -> list[date | None]:
    """Walk the days forwards; a lapse begins the first day after access, or on a zero-length row."""
    counted = [row for row in rows if oracle_counts(row, policy)]
    empty_starts = {
        row.date_start for row in counted if not row.is_unlimited and row.date_end <= row.date_start
    }
    covered = oracle_access_days(rows, policy)
    result: list[date | None] = []
    ended = None
    for i, day in enumerate(DAYS):
        if covered[i]:
            ended = None
        elif (i > 0 and covered[i - 1]) or day in empty_starts:
            ended = day
        result.append(ended)
    return result


# ---------------------------------------------------------------------------------------------
# Access on each day


@PROPERTY_SETTINGS
@given(rows=row_lists(), policy=policies)
def test_has_access_on_matches_the_oracle_on_every_day(rows, policy):
    expected = oracle_access_days(rows, policy)
    actual = [has_access_on(rows, day, policy) for day in DAYS]
    assert actual == expected


@PROPERTY_SETTINGS
@given(rows=row_lists(), policy=policies, day_index=st.integers(0, len(DAYS) - 1))
def test_blocked_accounts_never_have_access(rows, policy, day_index):
    assert not has_access_on(rows, DAYS[day_index], policy, blocked=True)
    assert classify(rows, DAYS[day_index], policy, blocked=True).state in (
        AccessState.BLOCKED,
        AccessState.ORPHANED,
    )


@PROPERTY_SETTINGS
@given(rows=row_lists(), policy=policies)
def test_access_periods_cover_exactly_the_oracle_days(rows, policy):
    periods = access_periods(rows, policy)

    for earlier, later in zip(periods, periods[1:], strict=False):
        assert earlier.end is not None, "an unlimited period must be the last one"
        # Disjoint, sorted and never adjacent: there is at least one day without access between.
        assert earlier.end < later.start
    for period in periods:
        assert period.end is None or period.start < period.end

    in_periods = [
        any(p.start <= day and (p.end is None or day < p.end) for p in periods) for day in DAYS
    ]
    assert in_periods == oracle_access_days(rows, policy)


# ---------------------------------------------------------------------------------------------
# Expiry


@PROPERTY_SETTINGS
@given(rows=row_lists(), policy=policies)
def test_access_ended_on_matches_the_oracle_on_every_day(rows, policy):
    expected = oracle_ended_on(rows, policy)
    actual = [access_ended_on(rows, day, policy) for day in DAYS]
    assert actual == expected


@PROPERTY_SETTINGS
@given(rows=row_lists(), policy=policies)
def test_last_end_is_the_greatest_end_unless_unlimited(rows, policy):
    counted = [row for row in rows if oracle_counts(row, policy)]
    if not counted or any(row.is_unlimited for row in counted):
        expected = None
    else:
        expected = max(row.date_end for row in counted)
    assert last_end(rows, policy) == expected


@PROPERTY_SETTINGS
@given(rows=row_lists(), policy=policies, day_index=st.integers(0, len(DAYS) - 1))
def test_once_the_last_end_has_passed_it_is_the_expiry_date(rows, policy, day_index):
    day = DAYS[day_index]
    x = last_end(rows, policy)
    # Rows ending before they start are the one case where "greatest end" and "lapse" part ways.
    inverted = any(
        r.date_start is not None and r.date_end is not None and r.date_end < r.date_start
        for r in rows
        if oracle_counts(r, policy)
    )
    if x is not None and x <= day and not inverted:
        assert access_ended_on(rows, day, policy) == x
        assert not has_access_on(rows, day, policy)


@PROPERTY_SETTINGS
@given(rows=row_lists(), policy=policies, day_index=st.integers(0, len(DAYS) - 1))
def test_classify_agrees_with_the_oracle(rows, policy, day_index):
    day = DAYS[day_index]
    verdict = classify(rows, day, policy)
    covered = oracle_access_days(rows, policy)[day_index]
    ended = oracle_ended_on(rows, policy)[day_index]

    assert verdict.has_access == covered
    if covered:
        assert verdict.current_period is not None
        assert verdict.current_period.start <= day
        assert (verdict.state is AccessState.UNLIMITED) == (verdict.current_period.end is None)
    if verdict.state is AccessState.EXPIRED:
        assert verdict.ended_on == ended
    else:
        assert ended is None
    if verdict.renewed_by is not None:
        # Whatever renews access lies strictly in the future and really opens days.
        assert verdict.renewed_by.date_start > day
        assert oracle_counts(verdict.renewed_by, policy)
        assert has_access_on([verdict.renewed_by], verdict.renewed_by.date_start, policy)


@PROPERTY_SETTINGS
@given(rows=row_lists(), policy=policies)
def test_renewal_after_an_expiry_is_where_access_resumes(rows, policy):
    covered = oracle_access_days(rows, policy)
    for i, ended in enumerate(oracle_ended_on(rows, policy)):
        if ended is None or DAYS[i] != ended:
            continue
        renewal = renewal_after(rows, ended, policy)
        later_access = [DAYS[j] for j in range(i, len(DAYS)) if covered[j]]
        if later_access:
            assert renewal is not None and renewal.date_start == later_access[0]
        else:
            assert renewal is None


# ---------------------------------------------------------------------------------------------
# Date arithmetic


def oracle_add_months(start: date, months: int) -> date:
    total = start.year * 12 + (start.month - 1) + months
    year, month = total // 12, total % 12 + 1
    days_in_month = calendar.monthrange(year, month)[1]
    if start.day <= days_in_month:
        return date(year, month, start.day)
    # PHP rolls the surplus days into the next month.
    return date.fromordinal(date(year, month, days_in_month).toordinal() + start.day - days_in_month)


dates_2000_2040 = st.dates(min_value=date(2000, 1, 1), max_value=date(2040, 12, 31))


@settings(max_examples=300, deadline=None)
@given(start=dates_2000_2040, months=st.integers(-60, 60), units=st.sampled_from(["months", "years", ""]))
def test_add_duration_months_matches_calendar_arithmetic(start, months, units):
    assert add_duration(start, months, units) == oracle_add_months(start, months)


@settings(max_examples=300, deadline=None)
@given(start=dates_2000_2040, days=st.integers(-1000, 1000))
def test_add_duration_days_is_ordinal_arithmetic(start, days):
    assert add_duration(start, days, "days") == date.fromordinal(start.toordinal() + days)


@settings(max_examples=300, deadline=None)
@given(rows=row_lists(), today_index=st.integers(0, len(DAYS) - 1), months=st.integers(0, 24))
def test_activation_starts_today_or_on_a_stackable_end(rows, today_index, months):
    today = DAYS[today_index]
    start, end = activation_dates(rows, today, months, "months")
    stackable = [
        r
        for r in rows
        if not r.is_banned and r.key_type != "wpm_keys_basket" and (r.status or "new") != "new"
    ]
    assert start >= today
    assert end == oracle_add_months(start, months)
    if any(r.is_unlimited for r in stackable):
        assert start == today
    else:
        ends = [r.date_end for r in stackable if r.date_end is not None]
        assert all(e <= start for e in ends)
        assert start == today or start in ends
