"""Specification of what the bridge may do after an order call with an unknown outcome (core.md 13).

The rules, in order: a key with the grant's id settles it (two are a duplicate, never a silent
success); any trace of a request that may be ours — a WooCommerce order for the customer, or a key
of the user and level activated since the first call without a final ``keys_meta`` naming another
order — means "ordered, wait for the key"; no trace at all allows a new order only once settled.
"""

from __future__ import annotations

from datetime import date, datetime, timedelta, timezone

from hypothesis import given
from hypothesis import strategies as st

from sidecar.domain.outcomes import CLOCK_SKEW, Evidence, KeyTrace, OrderTrace, Verdict, judge

REF = "g01grant00000000000000001"
FIRST_CALL = datetime(2026, 12, 6, 15, 0, tzinfo=timezone.utc)
SETTLE_UNTIL = FIRST_CALL + timedelta(minutes=10)
BEFORE_SETTLED = FIRST_CALL + timedelta(minutes=1)
AFTER_SETTLED = SETTLE_UNTIL + timedelta(seconds=1)


def ours(key_id: int) -> KeyTrace:
    return KeyTrace(key_id, date(2026, 12, 6), True, "mlsidecar", REF, (FIRST_CALL + timedelta(seconds=40),))


def being_written(key_id: int, registered: date = date(2026, 12, 6)) -> KeyTrace:
    """The key row is activated; keys_meta is not written yet (it comes last)."""
    return KeyTrace(key_id, registered, has_meta=False)


def autoresponder_row(key_id: int, activated: datetime) -> KeyTrace:
    """Only the auto-responder's keys_meta row so far: no UTM at all."""
    return KeyTrace(key_id, activated.date(), True, None, None, (activated,))


def other_order(key_id: int) -> KeyTrace:
    return KeyTrace(key_id, date(2026, 12, 6), True, "mlsidecar", "g01someothergrant0000000", (FIRST_CALL,))


def old_key(key_id: int) -> KeyTrace:
    return KeyTrace(key_id, date(2025, 1, 10), True, None, None, (datetime(2025, 1, 10, 9, tzinfo=timezone.utc),))


def evidence(keys=(), orders=(), foreign=frozenset()) -> Evidence:
    return Evidence(grant_ref=REF, first_ordered_at=FIRST_CALL, keys=list(keys), orders=list(orders),
                    foreign_order_ids=frozenset(foreign))


def test_one_key_with_the_grants_id_confirms_it_whenever_it_is_seen():
    for now in (BEFORE_SETTLED, AFTER_SETTLED):
        verdict = judge(evidence([old_key(1), ours(9)]), now=now, settle_until=SETTLE_UNTIL)
        assert (verdict.verdict, verdict.keys) == (Verdict.CONFIRMED, (9,))


def test_two_keys_with_the_grants_id_are_a_duplicate_listing_both():
    verdict = judge(evidence([ours(9), ours(12)]), now=BEFORE_SETTLED, settle_until=SETTLE_UNTIL)
    assert (verdict.verdict, verdict.keys) == (Verdict.DUPLICATED, (9, 12))


def test_no_trace_before_the_settle_time_means_keep_looking_never_order():
    verdict = judge(evidence([old_key(1), other_order(2)]), now=BEFORE_SETTLED, settle_until=SETTLE_UNTIL)
    assert verdict.verdict is Verdict.KEEP_LOOKING


def test_no_trace_after_the_settle_time_allows_a_new_order():
    verdict = judge(evidence([old_key(1), other_order(2)]), now=AFTER_SETTLED, settle_until=SETTLE_UNTIL)
    assert verdict.verdict is Verdict.SAFE_TO_ORDER


def test_the_settle_instant_itself_counts_as_settled():
    assert judge(evidence(), now=SETTLE_UNTIL, settle_until=SETTLE_UNTIL).verdict is Verdict.SAFE_TO_ORDER
    assert judge(evidence(), now=SETTLE_UNTIL - timedelta(microseconds=1),
                 settle_until=SETTLE_UNTIL).verdict is Verdict.KEEP_LOOKING


def test_a_woocommerce_order_since_the_first_call_means_ordered_wait_for_the_key():
    order = OrderTrace(501, FIRST_CALL + timedelta(seconds=3), "wc-completed")
    verdict = judge(evidence(orders=[order]), now=BEFORE_SETTLED, settle_until=SETTLE_UNTIL)
    assert (verdict.verdict, verdict.orders) == (Verdict.ORDERED, (501,))


def test_an_order_without_a_key_after_the_settle_time_is_not_ordered_again():
    order = OrderTrace(501, FIRST_CALL + timedelta(seconds=3), "wc-completed")
    verdict = judge(evidence(orders=[order]), now=AFTER_SETTLED, settle_until=SETTLE_UNTIL)
    assert (verdict.verdict, verdict.orders) == (Verdict.ORDER_WITHOUT_KEY, (501,))


def test_orders_older_than_the_first_call_or_known_to_belong_to_other_grants_are_not_traces():
    older = OrderTrace(400, FIRST_CALL - CLOCK_SKEW - timedelta(seconds=1))
    anothers = OrderTrace(502, FIRST_CALL + timedelta(seconds=5))
    verdict = judge(evidence(orders=[older, anothers], foreign={502}), now=AFTER_SETTLED, settle_until=SETTLE_UNTIL)
    assert verdict.verdict is Verdict.SAFE_TO_ORDER


def test_an_order_a_little_older_than_our_clock_says_still_counts():
    skewed = OrderTrace(503, FIRST_CALL - CLOCK_SKEW + timedelta(seconds=1))
    assert judge(evidence(orders=[skewed]), now=BEFORE_SETTLED, settle_until=SETTLE_UNTIL).verdict is Verdict.ORDERED


def test_a_key_being_written_without_keys_meta_yet_means_ordered():
    verdict = judge(evidence([being_written(30)]), now=BEFORE_SETTLED, settle_until=SETTLE_UNTIL)
    assert (verdict.verdict, verdict.in_flight_keys) == (Verdict.ORDERED, (30,))


def test_a_key_with_only_the_autoresponders_row_since_the_first_call_means_ordered():
    verdict = judge(evidence([autoresponder_row(31, FIRST_CALL + timedelta(seconds=20))]), now=BEFORE_SETTLED,
                    settle_until=SETTLE_UNTIL)
    assert verdict.verdict is Verdict.ORDERED


def test_an_activation_read_in_either_clock_counts_if_either_is_since_the_first_call():
    # Site-local text read as UTC is hours early on a site west of UTC; its local reading is in time.
    early_as_utc = FIRST_CALL - timedelta(hours=5)
    key = KeyTrace(32, date(2026, 12, 6), True, None, None, (early_as_utc, FIRST_CALL + timedelta(seconds=9)))
    assert judge(evidence([key]), now=BEFORE_SETTLED, settle_until=SETTLE_UNTIL).verdict is Verdict.ORDERED


def test_keys_registered_before_the_first_calls_day_or_activated_earlier_are_not_traces():
    earlier_today = autoresponder_row(33, FIRST_CALL - timedelta(hours=3))
    yesterday = being_written(34, registered=date(2026, 12, 5))
    verdict = judge(evidence([earlier_today, yesterday]), now=BEFORE_SETTLED, settle_until=SETTLE_UNTIL)
    assert verdict.verdict is Verdict.KEEP_LOOKING


def test_a_key_whose_keys_meta_names_another_order_is_not_a_trace():
    assert judge(evidence([other_order(35)]), now=BEFORE_SETTLED, settle_until=SETTLE_UNTIL).verdict is Verdict.KEEP_LOOKING


def test_after_the_settle_time_a_key_still_without_our_id_is_taken_as_the_grants_never_ordered_again():
    verdict = judge(evidence([being_written(30), being_written(36)]), now=AFTER_SETTLED, settle_until=SETTLE_UNTIL)
    assert (verdict.verdict, verdict.keys) == (Verdict.CONFIRMED_UNTAGGED, (36,))


def test_without_a_first_call_only_the_grants_id_counts():
    bare = Evidence(grant_ref=REF, first_ordered_at=None, keys=[being_written(30)],
                    orders=[OrderTrace(501, FIRST_CALL)])
    assert judge(bare, now=AFTER_SETTLED, settle_until=None).verdict is Verdict.SAFE_TO_ORDER


_key = st.builds(
    KeyTrace,
    key_id=st.integers(1, 50),
    date_registered=st.one_of(st.none(), st.dates(date(2026, 12, 4), date(2026, 12, 7))),
    has_meta=st.booleans(),
    utm_source=st.sampled_from([None, "mlsidecar", "newsletter"]),
    utm_id=st.sampled_from([None, REF, "g01someothergrant0000000"]),
    activated_candidates=st.lists(st.datetimes(datetime(2026, 12, 5), datetime(2026, 12, 7),
                                               timezones=st.just(timezone.utc)), max_size=2).map(tuple),
)
_order = st.builds(OrderTrace, order_id=st.integers(1, 20),
                   created_at=st.datetimes(datetime(2026, 12, 5), datetime(2026, 12, 7), timezones=st.just(timezone.utc)))


@given(keys=st.lists(_key, max_size=6), orders=st.lists(_order, max_size=4),
       minutes=st.integers(-5, 30))
def test_a_new_order_is_only_ever_allowed_when_settled_and_nothing_may_be_ours(keys, orders, minutes):
    now = FIRST_CALL + timedelta(minutes=minutes)
    verdict = judge(evidence(keys, orders), now=now, settle_until=SETTLE_UNTIL)
    if verdict.verdict is Verdict.SAFE_TO_ORDER:
        assert now >= SETTLE_UNTIL
        assert not any(k.utm_id == REF for k in keys)
        since = FIRST_CALL - CLOCK_SKEW
        assert not any(o.created_at >= since for o in orders)
    carrying = sorted({k.key_id for k in keys if k.utm_id == REF})
    if len(keys) and len([k for k in keys if k.utm_id == REF]) > 1:
        assert verdict.verdict is Verdict.DUPLICATED
    elif carrying:
        assert verdict.verdict is Verdict.CONFIRMED and verdict.keys == tuple(carrying)


def test_a_key_carrying_the_grants_id_is_counted_as_the_grants_never_as_a_trace():
    from sidecar.domain.outcomes import possibly_ours

    assert possibly_ours(ours(9), REF, FIRST_CALL - CLOCK_SKEW) is False
    assert possibly_ours(being_written(30), REF, None) is False  # no first call: nothing can be in flight
