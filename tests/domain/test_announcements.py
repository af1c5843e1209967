"""Specification of which MemberLux facts are news for outbound events (core.md §3.2, §3.3, §6.4, §10)."""

from __future__ import annotations

from datetime import date, datetime, timedelta, timezone

import pytest

from sidecar.domain.access import KEY_TYPE_BASKET, KEY_TYPE_TERM, AccessPolicy, KeyRow
from sidecar.domain.announcements import (
    HORIZON_DAYS,
    MAX_CATCH_UP_DAYS,
    best_certificate_class,
    expiry_is_news,
    first_expiry_day,
    is_activation,
    is_news,
    is_settled,
    match_hint,
    payload_date,
    scan_ranges,
    scan_window,
)

TODAY = date(2026, 11, 24)
NO_BASKET = AccessPolicy(include_basket=False)


def row(key_id: int = 1, *, start: date | None = TODAY, end: date | None = date(2026, 12, 24), status: str | None = "used",
        user_id: int | None = 7, term_id: int | None = 3, banned: bool = False, basket: bool = False,
        unlimited: bool = False, registered: date | None = TODAY, activated_at: datetime | None = None) -> KeyRow:
    return KeyRow(key_id=key_id, user_id=user_id, term_id=term_id, status=status,
                  key_type=KEY_TYPE_BASKET if basket else KEY_TYPE_TERM, is_banned=banned, is_unlimited=unlimited,
                  duration=1, units="months", date_start=start, date_end=end, date_registered=registered,
                  activated_at=activated_at)


# --- the scan's window ----------------------------------------------------------------------------------

def test_the_window_reaches_from_yesterday_to_the_horizon():
    window = scan_window(TODAY)
    assert window.first == date(2026, 11, 23)
    assert window.last == TODAY + timedelta(days=HORIZON_DAYS)


def test_the_window_is_read_around_every_future_first_of_january_the_placeholder_day_of_unused_codes():
    ranges = scan_ranges(TODAY)
    assert ranges == [(date(2026, 11, 23), TODAY), (date(2026, 11, 25), date(2026, 12, 31)),
                      (date(2027, 1, 2), date(2027, 12, 31)), (date(2028, 1, 2), date(2028, 12, 31)),
                      (date(2029, 1, 2), TODAY + timedelta(days=HORIZON_DAYS))]
    covered = {first + timedelta(days=n) for first, last in ranges for n in range((last - first).days + 1)}
    # A code re-saved in 2017, 2018 or 2019 carries 1 January 2027, 2028 or 2029 (core.md 3.3): never read.
    assert not covered & {date(2027, 1, 1), date(2028, 1, 1), date(2029, 1, 1)}
    assert len(covered) == (scan_window(TODAY).last - date(2026, 11, 23)).days + 1 - 3


def test_on_new_year_s_eve_and_day_the_days_up_to_today_are_read_whole():
    assert scan_ranges(date(2026, 12, 31))[:2] == [(date(2026, 12, 30), date(2026, 12, 31)),
                                                   (date(2027, 1, 2), date(2027, 12, 31))]
    assert scan_ranges(date(2027, 1, 1))[0] == (date(2026, 12, 31), date(2027, 1, 1))


def test_after_a_pause_the_window_looks_back_to_the_day_before_the_last_scan_at_most_a_month():
    assert scan_window(TODAY, last_scanned=TODAY).first == date(2026, 11, 23)
    assert scan_window(TODAY, last_scanned=date(2026, 11, 20)).first == date(2026, 11, 19)
    assert scan_window(TODAY, last_scanned=date(2025, 1, 1)).first == TODAY - timedelta(days=MAX_CATCH_UP_DAYS)


# --- what counts as an activation -----------------------------------------------------------------------

def test_an_activation_is_an_owned_used_or_expired_row_of_a_level_that_is_not_banned():
    assert is_activation(row())
    assert is_activation(row(status="expired"))
    assert not is_activation(row(status="new"))
    assert not is_activation(row(status=None))          # the ENUM default: never activated
    assert not is_activation(row(user_id=None))
    assert not is_activation(row(term_id=None))
    assert not is_activation(row(banned=True))


def test_basket_rows_follow_the_access_policy():
    assert is_activation(row(basket=True))
    assert not is_activation(row(basket=True), NO_BASKET)


def test_news_is_an_activation_on_or_after_the_day_the_sidecar_started_looking():
    since = date(2026, 11, 20)
    assert is_news(row(registered=date(2026, 11, 20)), since)
    assert not is_news(row(registered=date(2026, 11, 19)), since)
    # keys_meta's time first; a stacked renewal's future date_start does not make old history news.
    old_stacked = row(start=date(2027, 1, 1), registered=None, activated_at=datetime(2026, 10, 1, 9, tzinfo=timezone.utc))
    assert not is_news(old_stacked, since)
    assert not is_news(row(start=None, registered=None), since)   # cannot be placed in time


def test_an_activation_is_settled_once_core_wrote_its_source_or_a_day_has_passed():
    today_row = row(registered=TODAY)
    assert not is_settled(today_row, None, TODAY)         # keys_meta missing or only the auto-responder's
    assert is_settled(today_row, "", TODAY)               # core writes '' when the caller gave no source
    assert is_settled(today_row, "activation_page", TODAY)
    assert is_settled(row(registered=date(2026, 11, 23)), None, TODAY)
    assert is_settled(row(start=None, registered=None), None, TODAY)


# --- MemberLux's webhook payload --------------------------------------------------------------------------

@pytest.mark.parametrize(("text", "expected"), [
    ("24-11-2026", date(2026, 11, 24)),
    (" 01-02-2027 ", date(2027, 2, 1)),
    ("30-11--0001", None),          # the registration path's nonsense date (core.md 6.4)
    ("31-02-2026", None),
    ("2026-11-24", None),
    ("24-11-26", None),
    ("aa-bb-cccc", None),
    ("", None),
    (None, None),
    (20261124, None),
])
def test_payload_dates_are_dd_mm_yyyy_or_nothing(text, expected):
    assert payload_date(text) == expected


def test_a_hint_announces_the_activated_row_with_its_dates():
    first = row(1, start=date(2026, 10, 1), end=date(2026, 11, 1), registered=date(2026, 10, 1))
    renewal = row(2, start=TODAY, end=date(2026, 12, 24))
    stacked = row(3, start=date(2026, 12, 24), end=date(2027, 1, 24))
    found = match_hint([first, renewal, stacked], received_on=TODAY, date_start=date(2026, 12, 24),
                       date_end=date(2027, 1, 24))
    assert found == stacked


def test_dates_that_match_no_row_confirm_nothing_the_scan_will_find_it():
    assert match_hint([row(1)], received_on=TODAY, date_start=date(2026, 12, 1), date_end=date(2027, 1, 1)) is None


def test_an_unlimited_key_is_matched_on_its_start_only():
    unlimited = row(1, unlimited=True, end=date(2027, 11, 24))
    assert match_hint([unlimited], received_on=TODAY, date_start=TODAY, date_end=None) == unlimited
    assert match_hint([row(2)], received_on=TODAY, date_start=TODAY, date_end=None) is not None


def test_without_real_dates_the_oldest_unannounced_recent_activation_is_taken():
    older, newer = row(5), row(9)
    assert match_hint([newer, older], received_on=TODAY, date_start=None, date_end=None) == older
    assert match_hint([newer, older], received_on=TODAY, date_start=None, date_end=None, known=[5]) == newer
    assert match_hint([newer, older], received_on=TODAY, date_start=None, date_end=None, known=[5, 9]) is None


def test_a_hint_never_announces_an_old_activation_or_a_row_that_is_not_one():
    old = row(1, registered=date(2026, 11, 1), start=date(2026, 11, 1))
    unused = row(2, status="new", user_id=None, registered=None, start=None, end=None)
    undated = row(3, start=None, registered=None)
    assert match_hint([old, unused, undated], received_on=TODAY, date_start=None, date_end=None) is None
    # A day either side: the auto-responder's site-local time, or a hint read just after midnight.
    assert match_hint([row(4, registered=date(2026, 11, 23))], received_on=TODAY, date_start=None, date_end=None)
    assert match_hint([row(5, registered=date(2026, 11, 25))], received_on=TODAY, date_start=None, date_end=None)


def test_a_hint_for_a_banned_or_excluded_basket_row_announces_nothing():
    assert match_hint([row(1, banned=True)], received_on=TODAY, date_start=None, date_end=None) is None
    assert match_hint([row(1, basket=True)], received_on=TODAY, date_start=None, date_end=None, policy=NO_BASKET) is None


# --- expiries and certificates ------------------------------------------------------------------------------

def test_expiries_are_news_from_tomorrow_of_the_first_look_on():
    since = first_expiry_day(TODAY)
    assert since == date(2026, 11, 25)
    assert not expiry_is_news(TODAY, since)              # ended before the sidecar looked: history
    assert expiry_is_news(date(2026, 11, 25), since)
    assert not expiry_is_news(None, since)


def test_the_certificate_class_of_an_expiry_is_the_strongest_held():
    assert best_certificate_class(["auto", "manual"]) == "manual"
    assert best_certificate_class(["auto", "auto"]) == "auto"
    assert best_certificate_class([]) is None
