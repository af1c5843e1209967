"""Specification of auto vs manual certificates (legacy-plugins.md §3.8, core.md §4).

The level decides (``_mblc_how_to_issue``), and on ``auto`` levels the row itself can still show a
manual issue: a chosen issue date, or no activation of that user and level on the insert day.
"""

from __future__ import annotations

from datetime import date, datetime, timedelta, timezone

import pytest

from sidecar.domain.access import KeyRow
from sidecar.domain.certificates import CertificateClass, CertificateFacts, classify_certificate
from sidecar.monitor.certificates import certificate_activation_days

D = date
DAY = D(2026, 4, 10)
_ids = iter(range(1, 10**9))


def cert(date_issue: date | None = DAY, create_date: date | None = DAY) -> CertificateFacts:
    return CertificateFacts(certificate_id=1, user_id=7, level_id=3, date_issue=date_issue, create_date=create_date)


def key(start: date | None, end: date | None, *, registered: date | None, activated_at: datetime | None = None,
        status: str = "used", banned: bool = False, basket: bool = False) -> KeyRow:
    return KeyRow(key_id=next(_ids), user_id=7, term_id=3, status=status,
                  key_type="wpm_keys_basket" if basket else "wpm_term_keys", is_banned=banned, is_unlimited=False,
                  duration=1, units="months", date_start=start, date_end=end, date_registered=registered,
                  activated_at=activated_at)


def classify(mode: str | None, days, **facts):
    return classify_certificate(cert(**facts), mode, days).cls


# ---------------------------------------------------------------------------------------------
# The level's mode


@pytest.mark.parametrize("mode", ["employee", None, "", "AUTO", "Auto", "automatic", "yes"])
def test_levels_not_exactly_auto_issue_by_hand(mode):
    # Missing meta means "employee"; brief 002's 'AUTO' is wrong in case and value.
    assert classify(mode, [DAY]) is CertificateClass.MANUAL


def test_employee_level_is_manual_even_with_an_activation_that_day():
    assert classify("employee", [DAY]) is CertificateClass.MANUAL


def test_auto_level_with_an_activation_on_the_insert_day_is_auto():
    result = classify_certificate(cert(), "auto", [DAY])
    assert result.cls is CertificateClass.AUTO and result.reason


def test_surrounding_whitespace_in_the_mode_is_tolerated():
    assert classify(" auto ", [DAY]) is CertificateClass.AUTO


# ---------------------------------------------------------------------------------------------
# Manual issue on an auto level


def test_issue_date_different_from_insert_date_is_manual():
    assert classify("auto", [DAY], date_issue=DAY - timedelta(days=3)) is CertificateClass.MANUAL
    # Even when an activation happened on both days.
    assert classify("auto", [DAY, DAY - timedelta(days=3)], date_issue=DAY - timedelta(days=3)) \
        is CertificateClass.MANUAL


def test_no_activation_on_the_insert_day_is_manual():
    assert classify("auto", [DAY - timedelta(days=1), DAY + timedelta(days=1)]) is CertificateClass.MANUAL
    assert classify("auto", []) is CertificateClass.MANUAL


@pytest.mark.parametrize("facts", [{"date_issue": None}, {"create_date": None}, {"date_issue": None, "create_date": None}])
def test_missing_dates_are_manual(facts):
    assert classify("auto", [DAY], **facts) is CertificateClass.MANUAL


def test_activation_days_may_be_any_iterable():
    assert classify("auto", iter([DAY])) is CertificateClass.AUTO
    assert classify("auto", (d for d in [DAY - timedelta(days=1), DAY])) is CertificateClass.AUTO


# ---------------------------------------------------------------------------------------------
# Activation days of (user, level), as the classifier computes them from key rows


def test_keys_meta_activation_time_decides_the_day_in_utc():
    # 01:30 in Moscow on the 11th is still the 10th in UTC.
    moscow = timezone(timedelta(hours=3))
    row = key(DAY, DAY + timedelta(days=30), registered=DAY + timedelta(days=1),
              activated_at=datetime(2026, 4, 11, 1, 30, tzinfo=moscow))
    assert certificate_activation_days([row]) == {DAY}


def test_naive_keys_meta_time_is_utc():
    row = key(DAY, DAY + timedelta(days=30), registered=None, activated_at=datetime(2026, 4, 10, 23, 59))
    assert certificate_activation_days([row]) == {DAY}


def test_date_registered_when_keys_meta_is_missing():
    row = key(DAY, DAY + timedelta(days=30), registered=DAY)
    assert certificate_activation_days([row]) == {DAY}


def test_date_start_of_a_stacked_renewal_is_not_an_activation_day():
    bought = D(2026, 3, 20)
    stacked = key(DAY, DAY + timedelta(days=30), registered=bought)  # starts at the old end, in the future
    days = certificate_activation_days([stacked])
    assert days == {bought}
    assert classify_certificate(cert(), "auto", days).cls is CertificateClass.MANUAL
    auto_one = cert(date_issue=bought, create_date=bought)
    assert classify_certificate(auto_one, "auto", days).cls is CertificateClass.AUTO


def test_date_start_of_a_stacked_renewal_with_keys_meta_is_not_an_activation_day_either():
    bought = datetime(2026, 3, 20, 12, 0)
    stacked = key(DAY, DAY + timedelta(days=30), registered=bought.date(), activated_at=bought)
    assert DAY not in certificate_activation_days([stacked])


def test_registration_path_row_without_keys_meta_falls_back_to_its_start():
    # date_registered stays NULL on the registration path, which never stacks: it starts on activation.
    row = key(DAY, DAY + timedelta(days=30), registered=None)
    assert certificate_activation_days([row]) == {DAY}


def test_never_activated_rows_give_no_day():
    assert certificate_activation_days([key(D(2036, 1, 1), D(2036, 1, 1), registered=None, status="new")]) == set()


def test_banned_and_basket_rows_still_mark_their_activation():
    # The certificate was issued when the key was activated; a later ban or basket move changes nothing.
    rows = [key(DAY, DAY + timedelta(days=30), registered=DAY, banned=True),
            key(D(2026, 1, 5), D(2026, 2, 5), registered=D(2026, 1, 5), basket=True, status="expired")]
    assert certificate_activation_days(rows) == {DAY, D(2026, 1, 5)}


def test_every_renewal_on_an_auto_level_is_an_auto_issue():
    first, renewal = D(2026, 1, 5), D(2026, 2, 1)
    rows = [key(first, D(2026, 2, 5), registered=first),
            key(D(2026, 2, 5), D(2026, 3, 5), registered=renewal)]
    days = certificate_activation_days(rows)
    for day in (first, renewal):
        assert classify_certificate(cert(day, day), "auto", days).cls is CertificateClass.AUTO
    assert classify_certificate(cert(D(2026, 2, 5), D(2026, 2, 5)), "auto", days).cls is CertificateClass.MANUAL
