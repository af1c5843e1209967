"""Specification of the shadow-mode outcome: what the legacy plugin did for a request the bridge only watched.

Keys count when their owner is the user with the grant's e-mail and they were activated after the request
(less a small clock skew) and before the watch ended; every key seen during the watch counts, also one the
old plugin deleted again (its same-day delete and insert).
"""

from __future__ import annotations

from datetime import datetime, timedelta, timezone

from sidecar.domain.shadow import SHADOW_CLOCK_SKEW, Expected, SeenKey, ShadowOutcome, in_window, judge_shadow

RECEIVED = datetime(2026, 12, 7, 9, 0, tzinfo=timezone.utc)
UNTIL = RECEIVED + timedelta(minutes=60)
EXPECTED = Expected(term_id=7, duration=1, units="months", received_at=RECEIVED)


def key(key_id: int, *, term_id: int = 7, duration: int = 1, units: str = "months", unlimited: bool = False,
        at: datetime = RECEIVED + timedelta(seconds=3)) -> SeenKey:
    return SeenKey(key_id, term_id, duration, units, unlimited, at)


def outcome(user_found: bool, *keys: SeenKey) -> ShadowOutcome:
    return judge_shadow(EXPECTED, user_found, keys, UNTIL).outcome


def test_one_key_of_the_level_with_the_same_term_is_matched():
    judgement = judge_shadow(EXPECTED, True, [key(11)], UNTIL)
    assert (judgement.outcome, judgement.key_ids) == (ShadowOutcome.MATCHED, (11,))


def test_no_user_with_the_email_is_legacy_missing():
    assert outcome(False) is ShadowOutcome.LEGACY_MISSING


def test_a_user_without_a_key_in_the_window_is_legacy_missing():
    assert outcome(True) is ShadowOutcome.LEGACY_MISSING
    assert outcome(True, key(11, at=RECEIVED - SHADOW_CLOCK_SKEW - timedelta(seconds=1))) is ShadowOutcome.LEGACY_MISSING
    assert outcome(True, key(11, at=UNTIL + timedelta(seconds=1))) is ShadowOutcome.LEGACY_MISSING


def test_clock_skew_and_the_window_edges_are_inside():
    assert in_window(key(1, at=RECEIVED - SHADOW_CLOCK_SKEW), EXPECTED, UNTIL)
    assert in_window(key(1, at=UNTIL), EXPECTED, UNTIL)


def test_two_keys_of_the_level_are_legacy_extra_even_if_one_was_deleted_again():
    judgement = judge_shadow(EXPECTED, True, [key(12), key(11)], UNTIL)
    assert (judgement.outcome, judgement.key_ids) == (ShadowOutcome.LEGACY_EXTRA, (11, 12))


def test_another_duration_units_or_an_unlimited_key_is_legacy_different():
    assert outcome(True, key(11, duration=3)) is ShadowOutcome.LEGACY_DIFFERENT
    assert outcome(True, key(11, units="days")) is ShadowOutcome.LEGACY_DIFFERENT
    judgement = judge_shadow(EXPECTED, True, [key(11, unlimited=True)], UNTIL)
    assert judgement.outcome is ShadowOutcome.LEGACY_DIFFERENT and "unlimited" in judgement.reason


def test_keys_of_other_levels_only_are_legacy_different():
    judgement = judge_shadow(EXPECTED, True, [key(11, term_id=9), key(12, term_id=8)], UNTIL)
    assert (judgement.outcome, judgement.key_ids) == (ShadowOutcome.LEGACY_DIFFERENT, (11, 12))
    assert judgement.reason == "keys of other levels only: 8, 9"


def test_a_key_of_another_level_beside_the_matching_one_does_not_spoil_the_match():
    assert outcome(True, key(11), key(12, term_id=9)) is ShadowOutcome.MATCHED
