"""Specification of the sleepers rule (legacy-plugins.md §3.8) as evaluated by ``sidecar.domain.sleepers``.

One test per rule and per edge case of the §3.8 table, then a property test against a day-by-day oracle
that shares no code with the module under test.
"""

from __future__ import annotations

from dataclasses import replace
from datetime import date, datetime, timedelta, timezone

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from sidecar.domain.access import AccessPolicy, KeyRow
from sidecar.domain.certificates import CertificateClass, CertificateFacts, classify_certificate
from sidecar.domain.sleepers import Reason, SleeperVerdict, Window, evaluate, evaluate_facts, row_facts

D = date
TODAY = D(2026, 6, 1)
USER, LEVEL, PARENT = 7, 3, 1
_ids = iter(range(1, 10**9))


def key(start: date | None, end: date | None, *, status: str | None = "expired", banned: bool = False,
        unlimited: bool = False, basket: bool = False, registered: date | None = None,
        activated_at: datetime | None = None, term_id: int = LEVEL) -> KeyRow:
    return KeyRow(
        key_id=next(_ids), user_id=USER, term_id=term_id, status=status,
        key_type="wpm_keys_basket" if basket else "wpm_term_keys", is_banned=banned, is_unlimited=unlimited,
        duration=1, units="months", date_start=start, date_end=end,
        date_registered=start if registered is None else registered, activated_at=activated_at,
    )


def judge(rows, day: date = TODAY, **kwargs) -> SleeperVerdict:
    return evaluate(USER, LEVEL, rows, day, **kwargs)


# ---------------------------------------------------------------------------------------------
# The basic rule: X = max(date_end) <= D, date_end exclusive


def test_expired_user_is_a_sleeper_expired_on_x():
    verdict = judge([key(D(2026, 1, 10), D(2026, 2, 10))])
    assert verdict.is_sleeper and verdict.reason is Reason.SLEEPER
    assert verdict.expired_on == D(2026, 2, 10)
    assert verdict.last_access_day == D(2026, 2, 9)
    assert verdict.days_since_expiry(TODAY) == (TODAY - D(2026, 2, 10)).days
    assert (verdict.user_id, verdict.term_id) == (USER, LEVEL)


def test_x_equal_to_d_is_a_sleeper_because_date_end_is_exclusive():
    assert judge([key(D(2026, 5, 1), TODAY)]).is_sleeper


def test_x_the_day_after_d_is_still_active():
    verdict = judge([key(D(2026, 5, 1), TODAY + timedelta(days=1), status="used")])
    assert verdict.reason is Reason.ACTIVE and not verdict.is_sleeper
    assert verdict.expired_on == TODAY + timedelta(days=1)


def test_several_keys_merge_and_x_is_the_maximum_end():
    rows = [key(D(2025, 1, 1), D(2025, 3, 1)), key(D(2025, 3, 1), D(2025, 5, 1)),  # stacked
            key(D(2025, 9, 1), D(2025, 10, 1)), key(D(2025, 8, 1), D(2025, 9, 15))]  # overlapping
    verdict = judge(rows)
    assert verdict.is_sleeper and verdict.expired_on == D(2025, 10, 1)


def test_input_order_does_not_matter():
    rows = [key(D(2025, 9, 1), D(2025, 10, 1)), key(D(2025, 1, 1), D(2025, 3, 1))]
    assert judge(rows) == judge(list(reversed(rows)))


# ---------------------------------------------------------------------------------------------
# Renewals


def test_stacked_renewal_starting_in_the_future_is_not_a_sleeper():
    current = key(D(2026, 5, 1), D(2026, 6, 10), status="used")
    stacked = key(D(2026, 6, 10), D(2026, 7, 10), status="used", registered=D(2026, 5, 20))
    verdict = judge([current, stacked])
    assert verdict.reason is Reason.ACTIVE and verdict.expired_on == D(2026, 7, 10)


def test_stacked_renewal_whose_base_row_was_banned_is_renewed_not_a_sleeper():
    # The current key was banned after a renewal was stacked on it: a gap remains until core pulls back.
    banned = key(D(2026, 5, 1), D(2026, 6, 10), status="used", banned=True)
    stacked = key(D(2026, 6, 10), D(2026, 7, 10), status="used", registered=D(2026, 5, 20))
    assert judge([banned, stacked]).reason is Reason.RENEWED


def test_future_row_after_a_gap_is_renewed_not_a_sleeper():
    old = key(D(2026, 1, 1), D(2026, 2, 1))
    paid_ahead = key(D(2026, 7, 1), D(2026, 8, 1), status="used", registered=D(2026, 5, 30))
    verdict = judge([old, paid_ahead])
    assert verdict.reason is Reason.RENEWED and not verdict.is_sleeper
    assert verdict.expired_on == D(2026, 8, 1)


def test_renewal_after_a_lapse_that_expired_again_makes_a_new_x():
    first, renewal = key(D(2025, 1, 1), D(2025, 2, 1)), key(D(2025, 6, 1), D(2025, 7, 1))
    before_renewal = judge([first], D(2025, 3, 1))
    assert before_renewal.is_sleeper and before_renewal.expired_on == D(2025, 2, 1)
    assert judge([first, renewal], D(2025, 6, 15)).reason is Reason.ACTIVE
    lapsed_again = judge([first, renewal], D(2025, 8, 1))
    assert lapsed_again.is_sleeper and lapsed_again.expired_on == D(2025, 7, 1)


# ---------------------------------------------------------------------------------------------
# Rows that do not count


def test_unlimited_key_is_never_a_sleeper():
    assert judge([key(D(2024, 1, 1), D(2025, 1, 1), unlimited=True)]).reason is Reason.UNLIMITED


def test_unlimited_key_wins_over_expired_limited_rows_and_even_starting_later():
    rows = [key(D(2025, 1, 1), D(2025, 2, 1)), key(D(2026, 9, 1), D(2027, 9, 1), unlimited=True, status="used")]
    assert judge(rows).reason is Reason.UNLIMITED


def test_banned_unlimited_key_does_not_protect():
    rows = [key(D(2025, 1, 1), D(2025, 2, 1)), key(D(2025, 1, 1), D(2026, 1, 1), unlimited=True, banned=True)]
    assert judge(rows).is_sleeper


def test_only_banned_rows_are_revoked_not_expired():
    rows = [key(D(2025, 1, 1), D(2025, 2, 1), banned=True), key(D(2025, 2, 1), D(2025, 3, 1), banned=True)]
    assert judge(rows).reason is Reason.BANNED_ONLY


def test_a_banned_latest_row_does_not_hide_an_older_expiry():
    rows = [key(D(2025, 1, 1), D(2025, 2, 1)), key(D(2026, 5, 1), D(2026, 8, 1), status="used", banned=True)]
    verdict = judge(rows)
    assert verdict.is_sleeper and verdict.expired_on == D(2025, 2, 1)


def test_never_activated_rows_are_ignored():
    unused = KeyRow(key_id=next(_ids), user_id=USER, term_id=LEVEL, status="new", key_type="wpm_term_keys",
                    is_banned=False, is_unlimited=False, duration=12, units="months",
                    date_start=D(2036, 1, 1), date_end=D(2036, 1, 1), date_registered=None)
    assert judge([unused]).reason is Reason.NEVER_ACTIVATED
    assert judge([]).reason is Reason.NEVER_ACTIVATED
    status_missing = KeyRow(key_id=next(_ids), user_id=USER, term_id=LEVEL, status=None, key_type=None,
                            is_banned=False, is_unlimited=False, duration=1, units="months",
                            date_start=D(2025, 1, 1), date_end=D(2025, 2, 1), date_registered=None)
    assert judge([status_missing]).reason is Reason.NEVER_ACTIVATED  # NULL status is the ENUM default 'new'


def test_never_activated_placeholder_dates_do_not_move_x():
    unused = key(D(2036, 1, 1), D(2036, 1, 1), status="new")
    verdict = judge([key(D(2025, 1, 1), D(2025, 2, 1)), unused])
    assert verdict.is_sleeper and verdict.expired_on == D(2025, 2, 1)


def test_zero_dates_leave_no_usable_rows():
    assert judge([key(None, None, registered=D(2025, 1, 1))]).reason is Reason.NO_USABLE_ROWS


def test_null_date_registered_is_irrelevant():
    with_date = judge([key(D(2025, 1, 1), D(2025, 2, 1), registered=D(2025, 1, 1))])
    registration_path = KeyRow(key_id=next(_ids), user_id=USER, term_id=LEVEL, status="expired",
                               key_type="wpm_term_keys", is_banned=False, is_unlimited=False, duration=1,
                               units="months", date_start=D(2025, 1, 1), date_end=D(2025, 2, 1),
                               date_registered=None)
    without = judge([registration_path])
    assert without.is_sleeper and without.expired_on == with_date.expired_on


@pytest.mark.parametrize("status", ["used", "expired"])
def test_status_lagging_or_flipping_is_ignored(status):
    # "used" long after the end (cron lag, or the flip back on a key-list render) is still expired.
    assert judge([key(D(2025, 1, 1), D(2025, 2, 1), status=status)]).is_sleeper
    # And a premature "expired" on a running key does not make it a sleeper.
    assert judge([key(D(2026, 5, 1), D(2026, 7, 1), status=status)]).reason is Reason.ACTIVE


def test_zero_length_row_expires_on_its_activation_day():
    verdict = judge([key(D(2026, 3, 5), D(2026, 3, 5), status="used")])
    assert verdict.is_sleeper and verdict.expired_on == D(2026, 3, 5)


def test_zero_length_row_in_the_future_keeps_x_in_the_future():
    rows = [key(D(2026, 1, 1), D(2026, 2, 1)), key(D(2026, 7, 1), D(2026, 7, 1), status="used")]
    assert judge(rows).reason is Reason.RENEWED


def test_basket_rows_count_by_default_and_can_be_excluded():
    running_in_basket = key(D(2026, 5, 1), D(2026, 7, 1), status="used", basket=True)
    expired = key(D(2025, 1, 1), D(2025, 2, 1))
    assert judge([expired, running_in_basket]).reason is Reason.ACTIVE
    no_basket = AccessPolicy(include_basket=False)
    assert judge([expired, running_in_basket], policy=no_basket).expired_on == D(2025, 2, 1)
    assert judge([running_in_basket], policy=no_basket).reason is Reason.NO_USABLE_ROWS


# ---------------------------------------------------------------------------------------------
# Ancestors, certificates


def test_an_active_ancestor_level_key_protects():
    parent_key = key(D(2026, 5, 1), D(2026, 7, 1), status="used", term_id=PARENT)
    rows = [key(D(2025, 1, 1), D(2025, 2, 1))]
    verdict = judge(rows, ancestor_rows=[parent_key])
    assert verdict.reason is Reason.ANCESTOR_ACTIVE and verdict.expired_on == D(2025, 2, 1)


def test_with_the_ancestor_option_off_an_active_parent_key_does_not_protect():
    parent_key = key(D(2026, 5, 1), D(2026, 7, 1), status="used", term_id=PARENT)
    assert judge([key(D(2025, 1, 1), D(2025, 2, 1))], ancestor_rows=[parent_key], check_ancestors=False).is_sleeper


@pytest.mark.parametrize("parent_key", [
    key(D(2025, 1, 1), D(2025, 3, 1), term_id=PARENT),  # expired
    key(D(2026, 7, 1), D(2026, 8, 1), status="used", term_id=PARENT),  # only in the future
    key(D(2026, 5, 1), D(2026, 7, 1), status="used", banned=True, term_id=PARENT),  # banned
])
def test_an_ancestor_key_not_active_on_d_does_not_protect(parent_key):
    assert judge([key(D(2025, 1, 1), D(2025, 2, 1))], ancestor_rows=[parent_key]).is_sleeper


def test_an_unlimited_ancestor_key_protects():
    parent_key = key(D(2024, 1, 1), D(2024, 2, 1), unlimited=True, status="used", term_id=PARENT)
    assert judge([key(D(2025, 1, 1), D(2025, 2, 1))], ancestor_rows=[parent_key]).reason is Reason.ANCESTOR_ACTIVE


def test_a_manual_certificate_excludes():
    verdict = judge([key(D(2025, 1, 1), D(2025, 2, 1))], has_manual_certificate=True)
    assert verdict.reason is Reason.MANUAL_CERTIFICATE and verdict.expired_on == D(2025, 2, 1)


def test_an_auto_certificate_never_excludes():
    activation = D(2025, 1, 1)
    rows = [key(activation, D(2025, 2, 1))]
    cert = CertificateFacts(1, USER, LEVEL, date_issue=activation, create_date=activation)
    classification = classify_certificate(cert, "auto", [activation])
    assert classification.cls is CertificateClass.AUTO
    verdict = judge(rows, has_manual_certificate=classification.cls is CertificateClass.MANUAL)
    assert verdict.is_sleeper


def test_a_manual_certificate_on_an_auto_level_excludes():
    rows = [key(D(2025, 1, 1), D(2025, 2, 1))]
    cert = CertificateFacts(1, USER, LEVEL, date_issue=D(2025, 3, 1), create_date=D(2025, 3, 10))
    classification = classify_certificate(cert, "auto", [D(2025, 1, 1)])
    assert judge(rows, has_manual_certificate=classification.cls is CertificateClass.MANUAL).reason \
        is Reason.MANUAL_CERTIFICATE


def test_a_manual_certificate_does_not_matter_while_access_runs():
    rows = [key(D(2026, 5, 1), D(2026, 7, 1), status="used")]
    assert judge(rows, has_manual_certificate=True).reason is Reason.ACTIVE


# ---------------------------------------------------------------------------------------------
# Window on the expiry day


X = D(2026, 3, 15)
EXPIRED_ON_X = [key(D(2026, 2, 15), X)]


@pytest.mark.parametrize(("window", "listed"), [
    (Window(X, X), True),  # both ends inclusive
    (Window(X, X + timedelta(days=10)), True),
    (Window(X - timedelta(days=10), X), True),
    (Window(X + timedelta(days=1), TODAY), False),
    (Window(X - timedelta(days=10), X - timedelta(days=1)), False),
    (Window(start=X), True),
    (Window(end=X), True),
    (Window(start=X + timedelta(days=1)), False),
    (Window(end=X - timedelta(days=1)), False),
    (Window(), True),
])
def test_window_on_the_expiry_day_is_inclusive(window, listed):
    verdict = judge(EXPIRED_ON_X, window=window)
    assert verdict.is_sleeper is listed
    if not listed:
        assert verdict.reason is Reason.OUTSIDE_WINDOW and verdict.expired_on == X


def test_window_end_is_clamped_to_d():
    # A window reaching into the future lists everyone expired up to D, and only them.
    future_window = Window(D(2026, 1, 1), D(2027, 1, 1))
    assert judge([key(D(2026, 5, 1), TODAY)], window=future_window).is_sleeper
    assert not judge([key(D(2026, 5, 1), TODAY + timedelta(days=1), status="used")], window=future_window).is_sleeper
    # Evaluated for an earlier day D, the window's end is that day, whatever was asked.
    earlier = D(2026, 3, 20)
    assert judge(EXPIRED_ON_X, earlier, window=Window(end=D(2026, 12, 31))).is_sleeper


# ---------------------------------------------------------------------------------------------
# Users


def test_blocked_users_are_sleepers_flagged_blocked():
    verdict = judge([key(D(2025, 1, 1), D(2025, 2, 1))], blocked=True)
    assert verdict.is_sleeper and verdict.blocked


def test_blocked_flag_is_carried_on_other_reasons_too():
    assert judge([key(D(2026, 5, 1), D(2026, 7, 1))], blocked=True).blocked


def test_deleted_user_is_skipped():
    verdict = judge([key(D(2025, 1, 1), D(2025, 2, 1))], user_exists=False)
    assert verdict.reason is Reason.USER_DELETED and not verdict.is_sleeper


def test_levels_are_evaluated_separately():
    sleeping = evaluate(USER, LEVEL, [key(D(2025, 1, 1), D(2025, 2, 1))], TODAY)
    active = evaluate(USER, 4, [key(D(2026, 5, 1), D(2026, 7, 1), term_id=4)], TODAY)
    assert sleeping.is_sleeper and active.reason is Reason.ACTIVE


def test_last_grant_is_the_latest_activation_day():
    rows = [key(D(2025, 1, 1), D(2025, 2, 1), registered=D(2025, 1, 1)),
            key(D(2025, 2, 1), D(2025, 3, 1), registered=D(2025, 1, 20)),  # stacked: starts later
            key(D(2025, 5, 1), D(2025, 6, 1), activated_at=datetime(2025, 5, 1, 1, 0, tzinfo=timezone.utc))]
    assert judge(rows).last_grant == D(2025, 5, 1)


# ---------------------------------------------------------------------------------------------
# Property: evaluate(...).is_sleeper against a day-by-day oracle

BASE = D(2025, 1, 1)
SPAN = 400


def oracle_qualifies(row: KeyRow, include_basket: bool) -> bool:
    if (row.status or "new") not in ("used", "expired") or row.is_banned:
        return False
    if row.key_type == "wpm_keys_basket" and not include_basket:
        return False
    return row.date_start is not None and (row.is_unlimited or row.date_end is not None)


def oracle_open_on(rows: list[KeyRow], day: date) -> bool:
    return any(r.date_start <= day and (r.is_unlimited or day < r.date_end) for r in rows)


def oracle_is_sleeper(rows, day, *, ancestor_rows, manual, window, include_basket, check_ancestors,
                      user_exists) -> bool:
    if not user_exists:
        return False
    counted = [r for r in rows if oracle_qualifies(r, include_basket)]
    if not counted or any(r.is_unlimited for r in counted):
        return False
    x = max(r.date_end for r in counted)
    if x > day:
        return False
    # X <= D must mean no access on D or on any later day: walk them up to the last possible end.
    horizon = max([day] + [r.date_end for r in counted]) + timedelta(days=2)
    probe = day
    while probe <= horizon:
        if oracle_open_on(counted, probe):
            return False
        probe += timedelta(days=1)
    ancestors = [r for r in ancestor_rows if oracle_qualifies(r, include_basket)]
    if check_ancestors and oracle_open_on(ancestors, day):
        return False
    if manual:
        return False
    start, end = window
    if start is not None and x < start:
        return False
    return x <= min(end, day) if end is not None else True


def _days(n: int) -> date:
    return BASE + timedelta(days=n)


@st.composite
def rows_strategy(draw, term_id: int = LEVEL, max_rows: int = 5) -> list[KeyRow]:
    rows = []
    for _ in range(draw(st.sampled_from([0] + list(range(1, max_rows + 1)) * 3))):
        ends = [r.date_end for r in rows if r.date_end is not None]
        if ends and draw(st.booleans()):
            start = draw(st.sampled_from(ends)) + timedelta(days=draw(st.sampled_from([0, 0, 1, 30])))
        else:
            start = _days(draw(st.integers(0, SPAN)))
        length = draw(st.one_of(st.integers(1, 90), st.just(0)))
        zero = draw(st.sampled_from(["none"] * 12 + ["start", "end"]))
        rows.append(KeyRow(
            key_id=len(rows) + 1, user_id=USER, term_id=term_id,
            status=draw(st.sampled_from(["used", "used", "expired", "expired", "expired", "new", None])),
            key_type=draw(st.sampled_from(["wpm_term_keys", "wpm_term_keys", "wpm_keys_basket"])),
            is_banned=draw(st.sampled_from([False] * 5 + [True])),
            is_unlimited=draw(st.sampled_from([False] * 12 + [True])),
            duration=length, units="days",
            date_start=None if zero == "start" else start,
            date_end=None if zero == "end" else start + timedelta(days=length),
            date_registered=draw(st.sampled_from([None, start])),
        ))
    return draw(st.permutations(rows))


optional_day = st.one_of(st.none(), st.none(), st.integers(0, SPAN + 120).map(_days))


@settings(max_examples=400, deadline=None)
@given(rows=rows_strategy(), ancestor_rows=rows_strategy(term_id=PARENT, max_rows=2),
       day=st.integers(0, SPAN + 120).map(_days), manual=st.sampled_from([False] * 4 + [True]),
       window=st.tuples(optional_day, optional_day), include_basket=st.booleans(), check_ancestors=st.booleans(),
       blocked=st.booleans(), user_exists=st.sampled_from([True] * 9 + [False]))
def test_is_sleeper_matches_a_day_by_day_oracle(rows, ancestor_rows, day, manual, window, include_basket,
                                                check_ancestors, blocked, user_exists):
    verdict = evaluate(USER, LEVEL, rows, day, ancestor_rows=ancestor_rows, has_manual_certificate=manual,
                       blocked=blocked, user_exists=user_exists, window=Window(*window),
                       policy=AccessPolicy(include_basket=include_basket), check_ancestors=check_ancestors)
    expected = oracle_is_sleeper(rows, day, ancestor_rows=ancestor_rows, manual=manual, window=window,
                                 include_basket=include_basket, check_ancestors=check_ancestors,
                                 user_exists=user_exists)
    assert verdict.is_sleeper is expected
    if verdict.is_sleeper:
        counted = [r for r in rows if oracle_qualifies(r, include_basket)]
        assert verdict.expired_on == max(r.date_end for r in counted)
        assert verdict.blocked is blocked


# ---------------------------------------------------------------------------------------------
# The whole-site pass's reading of the rule (evaluate_facts over row_facts) is the rule


@st.composite
def wide_rows_strategy(draw, term_id: int = LEVEL, max_rows: int = 5) -> list[KeyRow]:
    """rows_strategy's rows with what it leaves out: unknown statuses, ends before starts, activation times
    (naive, or aware and on another UTC day), missing registration days."""
    rows = []
    for row in draw(rows_strategy(term_id=term_id, max_rows=max_rows)):
        start = row.date_start or BASE
        activated_at = draw(st.sampled_from([
            None, None, datetime.combine(start, datetime.min.time()) + timedelta(hours=10),
            datetime(start.year, start.month, start.day, 23, 30, tzinfo=timezone(timedelta(hours=-3)))]))
        end = row.date_end
        if end is not None and draw(st.sampled_from([False] * 8 + [True])):
            end = start - timedelta(days=draw(st.integers(1, 40)))
        rows.append(replace(
            row, status=draw(st.sampled_from([row.status] * 6 + ["weird", ""])), date_end=end,
            activated_at=activated_at, date_registered=draw(st.sampled_from([row.date_registered, None]))))
    return rows


@settings(max_examples=600, deadline=None)
@given(rows=wide_rows_strategy(), ancestor_rows=wide_rows_strategy(term_id=PARENT, max_rows=3),
       day=st.one_of(st.integers(0, SPAN + 120).map(_days), st.just(date.max)),
       manual=st.sampled_from([False] * 4 + [True]), window=st.tuples(optional_day, optional_day),
       include_basket=st.booleans(), check_ancestors=st.booleans(), blocked=st.booleans())
def test_evaluate_facts_over_row_facts_is_evaluate(rows, ancestor_rows, day, manual, window, include_basket,
                                                   check_ancestors, blocked):
    policy = AccessPolicy(include_basket=include_basket)
    expected = evaluate(USER, LEVEL, rows, day, ancestor_rows=ancestor_rows, has_manual_certificate=manual,
                        blocked=blocked, window=Window(*window), policy=policy, check_ancestors=check_ancestors)
    reason, expired_on, grant = evaluate_facts(
        [row_facts(r, policy) for r in rows], day, ancestor_facts=[row_facts(r, policy) for r in ancestor_rows],
        has_manual_certificate=manual, window=Window(*window), check_ancestors=check_ancestors)
    assert SleeperVerdict(USER, LEVEL, reason, expired_on, grant, blocked) == expected


def test_evaluate_facts_an_unlimited_ancestor_key_opens_every_day_even_the_last():
    rows, ancestors = [key(D(2026, 1, 1), D(2026, 2, 1))], [key(D(2026, 1, 1), None, unlimited=True, term_id=PARENT)]
    for day in (TODAY, date.max):
        reason, _, _ = evaluate_facts([row_facts(r) for r in rows], day,
                                      ancestor_facts=[row_facts(r) for r in ancestors])
        assert reason is Reason.ANCESTOR_ACTIVE is judge(rows, day, ancestor_rows=ancestors).reason
