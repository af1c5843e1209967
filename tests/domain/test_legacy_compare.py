"""Specification of ``sidecar.domain.legacy_compare``: the old report's rule restated for one learner, and
the reason a learner is listed by only one of the two reports (legacy-plugins.md §3.4, §3.4.1, §3.7).

Each scenario is a learner's rows as MemberLux stores them, judged by the sidecar's own rule
(:func:`evaluate`) and by the old query's view; the reason must name the old query's defect that makes
the difference, and nothing else may be explained away.
"""

from __future__ import annotations

from datetime import date

import pytest

from sidecar.domain.access import DEFAULT_POLICY, AccessPolicy, KeyRow
from sidecar.domain.legacy_compare import (
    CompareReason,
    Difference,
    LegacyView,
    explain_difference,
    legacy_lists,
    legacy_view,
)
from sidecar.domain.sleepers import Reason, Window, evaluate

D = date
TODAY = D(2026, 11, 24)
USER, LEVEL, PARENT = 5, 21, 20
WINDOW = Window(D(2026, 10, 1), D(2026, 12, 31))   # the same window on both sides, reaching into the future
_ids = iter(range(1, 10**9))


def key(start: date | None, end: date | None, *, status: str = "used", banned: bool = False, unlimited: bool = False,
        basket: bool = False, term_id: int = LEVEL) -> KeyRow:
    return KeyRow(key_id=next(_ids), user_id=USER, term_id=term_id, status=status,
                  key_type="wpm_keys_basket" if basket else "wpm_term_keys", is_banned=banned, is_unlimited=unlimited,
                  duration=1, units="months", date_start=start, date_end=end, date_registered=start)


def reason(rows: list[KeyRow], *, in_legacy: bool | None = None, parent_rows: tuple[KeyRow, ...] = (),
           manual: bool = False, certificate: bool = False, certificates_known: bool = True, user_status: int = 0,
           user_exists: bool = True, legacy_window: Window = WINDOW, sidecar_window: Window = WINDOW,
           policy: AccessPolicy = DEFAULT_POLICY) -> CompareReason:
    """The reason for a learner listed by one report only; ``in_legacy`` defaults to the old rule's answer."""
    verdict = evaluate(USER, LEVEL, rows, TODAY, ancestor_rows=parent_rows, has_manual_certificate=manual,
                       user_exists=user_exists, window=sidecar_window, policy=policy)
    view = legacy_view(rows, user_exists=user_exists, user_status=user_status, has_certificate=certificate)
    listed = legacy_lists(view, legacy_window)
    if in_legacy is None:
        in_legacy = listed
        assert listed != verdict.is_sleeper, "a scenario must list the learner in exactly one report"
    return explain_difference(Difference(in_legacy=in_legacy, verdict=verdict, legacy=view, legacy_window=legacy_window,
                                         sidecar_window=sidecar_window, certificates_known=certificates_known))


# ---------------------------------------------------------------------------------------------
# The old query's view of one learner


def test_legacy_view_takes_the_latest_end_of_non_banned_rows_of_any_status_or_type():
    rows = [key(D(2026, 1, 1), D(2026, 2, 1)), key(D(2026, 2, 1), D(2026, 9, 1), banned=True),
            key(None, D(2036, 1, 1), status="new"), key(D(2026, 3, 1), None, basket=True)]
    view = legacy_view(rows)
    assert view.last_end == D(2036, 1, 1)
    assert not view.unlimited and view.user_exists and view.user_status_ok and not view.has_certificate


def test_legacy_view_of_banned_or_dateless_rows_has_no_last_end():
    assert legacy_view([key(D(2026, 1, 1), D(2026, 2, 1), banned=True)]).last_end is None
    assert legacy_view([key(None, None)]).last_end is None
    assert legacy_view([]).last_end is None


def test_legacy_view_sees_unlimited_rows_whatever_their_status_but_not_banned_ones():
    assert legacy_view([key(None, None, status="new", unlimited=True)]).unlimited
    assert not legacy_view([key(D(2026, 1, 1), None, unlimited=True, banned=True)]).unlimited


def test_legacy_view_carries_the_user_facts():
    view = legacy_view([], user_exists=False, user_status=1, has_certificate=True)
    assert (view.user_exists, view.user_status_ok, view.has_certificate) == (False, False, True)


@pytest.mark.parametrize("change, listed", [
    ({}, True),
    ({"user_exists": False}, False),
    ({"user_status_ok": False}, False),
    ({"has_certificate": True}, False),
    ({"unlimited": True}, False),
    ({"last_end": None}, False),
    ({"last_end": D(2026, 10, 1)}, True),      # both days of the window are included
    ({"last_end": D(2026, 12, 31)}, True),
    ({"last_end": D(2026, 9, 30)}, False),
    ({"last_end": D(2027, 1, 1)}, False),
])
def test_legacy_lists_follows_every_clause_of_the_old_where(change, listed):
    base = {"user_exists": True, "user_status_ok": True, "has_certificate": False, "unlimited": False,
            "last_end": D(2026, 11, 1)}
    assert legacy_lists(LegacyView(**{**base, **change}), WINDOW) is listed


def test_the_old_window_always_has_both_days():
    view = legacy_view([key(D(2026, 10, 1), D(2026, 11, 1))])
    with pytest.raises(ValueError, match="both days"):
        legacy_lists(view, Window(D(2026, 1, 1), None))
    with pytest.raises(ValueError, match="both days"):
        legacy_lists(view, Window(None, D(2026, 1, 1)))


# ---------------------------------------------------------------------------------------------
# Only in the old report


def test_active_learner_in_a_window_reaching_into_the_future_is_window_in_future():
    # §3.7.3: the old query compares the last end with the window, never with today.
    assert reason([key(D(2026, 11, 10), D(2026, 12, 10))]) is CompareReason.WINDOW_IN_FUTURE


def test_learner_paid_ahead_after_a_gap_is_window_in_future_too():
    rows = [key(D(2026, 10, 1), D(2026, 11, 1)), key(D(2026, 12, 1), D(2026, 12, 20))]
    assert evaluate(USER, LEVEL, rows, TODAY).reason is Reason.RENEWED
    assert reason(rows) is CompareReason.WINDOW_IN_FUTURE


def test_access_through_a_parent_level_is_ancestor_active():
    # §3.7.7: the old query ignores the level hierarchy.
    parent = (key(D(2026, 1, 1), D(2027, 6, 1), term_id=PARENT),)
    assert reason([key(D(2026, 10, 1), D(2026, 11, 1))], parent_rows=parent) is CompareReason.ANCESTOR_ACTIVE


def test_manual_certificate_the_site_no_longer_has_is_certificates_out_of_sync():
    # The old query sees no certificate at all; the sidecar's copy still holds a manual one.
    assert reason([key(D(2026, 10, 1), D(2026, 11, 1))], manual=True) is CompareReason.CERTIFICATES_OUT_OF_SYNC


@pytest.mark.parametrize("rows, verdict", [
    ([key(None, D(2026, 11, 1), status="new")], Reason.NEVER_ACTIVATED),
    ([key(D(2026, 9, 1), D(2026, 10, 1), banned=True), key(None, D(2026, 11, 1), status="new")], Reason.BANNED_ONLY),
    ([key(None, D(2026, 11, 1))], Reason.NO_USABLE_ROWS),
])
def test_rows_the_rule_does_not_count_are_keys_not_counted(rows, verdict):
    assert evaluate(USER, LEVEL, rows, TODAY).reason is verdict
    assert reason(rows) is CompareReason.KEYS_NOT_COUNTED


def test_a_later_uncounted_row_moving_the_old_last_end_into_the_window_is_keys_not_counted():
    # The sidecar's X (2026-09-01) is outside the window; an unused code's placeholder end is inside it.
    rows = [key(D(2026, 8, 1), D(2026, 9, 1)), key(None, D(2026, 11, 1), status="new")]
    assert evaluate(USER, LEVEL, rows, TODAY, window=WINDOW).reason is Reason.OUTSIDE_WINDOW
    assert reason(rows) is CompareReason.KEYS_NOT_COUNTED


def test_basket_rows_excluded_by_the_policy_are_keys_not_counted():
    rows = [key(D(2026, 8, 1), D(2026, 9, 1)), key(D(2026, 9, 1), D(2026, 11, 1), basket=True)]
    assert reason(rows, policy=AccessPolicy(include_basket=False)) is CompareReason.KEYS_NOT_COUNTED


def test_default_windows_a_day_apart_are_site_day_window():
    # No window given, evening in Moscow: the old report's today is the 25th, the sidecar's the 24th.
    site_day, utc_day = Window(D(2026, 11, 25), D(2026, 11, 25)), Window(TODAY, TODAY)
    rows = [key(D(2026, 10, 25), D(2026, 11, 25))]
    # Access ends tomorrow (UTC): the old report lists the learner, whose access runs on.
    assert reason(rows, legacy_window=site_day, sidecar_window=utc_day) is CompareReason.WINDOW_IN_FUTURE
    # Access ended today (UTC): only the sidecar lists the learner.
    ended_today = [key(D(2026, 10, 24), TODAY)]
    assert reason(ended_today, legacy_window=site_day, sidecar_window=utc_day) is CompareReason.SITE_DAY_WINDOW
    # Ended yesterday, old window [23, 23] by the site's day, sidecar's [24, 24]: the old report only.
    yesterday = [key(D(2026, 10, 23), D(2026, 11, 23))]
    assert reason(yesterday, legacy_window=Window(D(2026, 11, 23), D(2026, 11, 23)),
                  sidecar_window=utc_day) is CompareReason.SITE_DAY_WINDOW


def test_outside_the_window_with_the_same_windows_and_last_end_is_unexplained():
    # Cannot happen when both reports read the same rows with the same window: nothing explains it.
    rows = [key(D(2026, 8, 1), D(2026, 9, 1))]
    verdict = evaluate(USER, LEVEL, rows, TODAY, window=WINDOW)
    assert verdict.reason is Reason.OUTSIDE_WINDOW
    summer = Window(D(2026, 8, 1), D(2026, 9, 30))
    forged = Difference(in_legacy=True, verdict=verdict, legacy=legacy_view(rows), legacy_window=summer,
                        sidecar_window=summer)
    assert explain_difference(forged) is CompareReason.UNEXPLAINED


def test_listed_by_the_old_report_though_its_own_rule_would_not_is_unexplained():
    # The rows changed between the two reads (or the restatement of the old rule is wrong).
    rows = [key(D(2026, 1, 1), D(2026, 2, 1))]        # old window: its last end is far outside it
    assert reason(rows, in_legacy=True) is CompareReason.UNEXPLAINED


@pytest.mark.parametrize("rows, verdict", [
    ([key(D(2026, 10, 1), D(2026, 11, 1))], Reason.SLEEPER),                                   # the list lost them
    ([key(D(2026, 10, 1), D(2026, 11, 1)), key(D(2026, 1, 1), None, unlimited=True, basket=True)], Reason.UNLIMITED),
])
def test_old_only_learners_the_rule_lists_or_never_lists_are_unexplained(rows, verdict):
    judged = evaluate(USER, LEVEL, rows, TODAY, window=WINDOW)
    assert judged.reason is verdict
    # The old rule's view as listing them: only a lost row or a race could produce this difference.
    view = LegacyView(True, True, False, False, D(2026, 11, 1))
    difference = Difference(in_legacy=True, verdict=judged, legacy=view, legacy_window=WINDOW, sidecar_window=WINDOW)
    assert explain_difference(difference) is CompareReason.UNEXPLAINED


def test_a_deleted_user_in_the_old_report_is_unexplained():
    verdict = evaluate(USER, LEVEL, [key(D(2026, 10, 1), D(2026, 11, 1))], TODAY, user_exists=False)
    difference = Difference(in_legacy=True, verdict=verdict, legacy=LegacyView(True, True, False, False, D(2026, 11, 1)),
                            legacy_window=WINDOW, sidecar_window=WINDOW)
    assert explain_difference(difference) is CompareReason.UNEXPLAINED


# ---------------------------------------------------------------------------------------------
# Only in the sidecar's report


def test_automatic_certificates_only_are_auto_certificate():
    # §3.7.1: the old query let any certificate (auto ones included) end a sleep.
    assert reason([key(D(2026, 10, 1), D(2026, 11, 1))], certificate=True) is CompareReason.AUTO_CERTIFICATE


def test_a_certificate_the_sidecar_has_not_classified_yet_is_certificates_out_of_sync():
    assert reason([key(D(2026, 10, 1), D(2026, 11, 1))], certificate=True,
                  certificates_known=False) is CompareReason.CERTIFICATES_OUT_OF_SYNC


def test_wordpress_user_status_is_wp_user_status():
    assert reason([key(D(2026, 10, 1), D(2026, 11, 1))], user_status=1) is CompareReason.WP_USER_STATUS


def test_an_unlimited_row_the_rule_does_not_count_is_keys_not_counted():
    rows = [key(D(2026, 10, 1), D(2026, 11, 1)), key(None, None, status="new", unlimited=True)]
    assert reason(rows) is CompareReason.KEYS_NOT_COUNTED


def test_an_uncounted_row_moving_the_old_last_end_out_of_the_window_is_keys_not_counted():
    # An unused code with the placeholder end ten years ahead (core.md 3.3) pushes the old last end away.
    rows = [key(D(2026, 10, 1), D(2026, 10, 15)), key(None, D(2036, 1, 1), status="new")]
    assert reason(rows) is CompareReason.KEYS_NOT_COUNTED


def test_sidecar_only_learner_the_old_rule_would_list_is_unexplained():
    rows = [key(D(2026, 10, 1), D(2026, 11, 1))]
    assert reason(rows, in_legacy=False) is CompareReason.UNEXPLAINED


def test_sidecar_only_learner_the_rule_does_not_list_is_unexplained():
    rows = [key(D(2026, 10, 1), D(2026, 12, 1))]      # active: the sidecar's list cannot hold them
    assert reason(rows, in_legacy=False, legacy_window=Window(D(2026, 1, 1), D(2026, 1, 2))) is CompareReason.UNEXPLAINED


def test_sidecar_only_learner_gone_from_the_users_table_is_unexplained():
    rows = [key(D(2026, 10, 1), D(2026, 11, 1))]
    verdict = evaluate(USER, LEVEL, rows, TODAY, window=WINDOW)
    difference = Difference(in_legacy=False, verdict=verdict, legacy=legacy_view(rows, user_exists=False),
                            legacy_window=WINDOW, sidecar_window=WINDOW)
    assert explain_difference(difference) is CompareReason.UNEXPLAINED


def test_sidecar_only_with_the_same_last_end_and_windows_is_unexplained():
    rows = [key(D(2026, 10, 1), D(2026, 11, 1))]
    verdict = evaluate(USER, LEVEL, rows, TODAY, window=WINDOW)
    narrow = Window(D(2026, 11, 2), D(2026, 12, 31))
    # The old window leaves out the last end that the sidecar's verdict (judged with WINDOW) lies in, yet
    # both windows are given as one: facts that contradict each other are not explained away.
    difference = Difference(in_legacy=False, verdict=verdict, legacy=legacy_view(rows), legacy_window=narrow,
                            sidecar_window=narrow)
    assert explain_difference(difference) is CompareReason.UNEXPLAINED


def test_the_reasons_are_stable_codes():
    assert [r.value for r in CompareReason] == [
        "auto_certificate", "window_in_future", "ancestor_active", "wp_user_status", "keys_not_counted",
        "site_day_window", "certificates_out_of_sync", "unexplained"]
