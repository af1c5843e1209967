"""What the site's database says about a grant whose order call may have landed (pure, no I/O).

An order call that timed out, was answered 5xx/504, or lost its connection after it was sent may
still be running on the site: PHP goes on after the caller gave up and writes, statement by
statement, the user, the WooCommerce order, the key, the e-mails, the webhook fan-out and only
then ``keys_meta`` with our ``utm_id`` (core.md 13). "No key carries our id yet" therefore does not
mean "not ordered". This module decides, from every trace the adapters found, what the bridge may
do next:

* a key carrying the grant's ``utm_id`` -> confirmed (two or more -> duplicated, never silent);
* a trace of a request that may be ours — a WooCommerce order for the customer with the grant's
  product since the first call, or a key of (user, level) activated since the first call whose
  ``keys_meta`` does not (yet) name another order — means an order exists: wait for its key, never
  order again;
* no trace at all: keep looking until the settle instant (after which no earlier call can still be
  running), and only then allow a new order.

All instants are aware UTC datetimes. Activation times read from ``keys_meta`` come as the two instants the
stored text can mean (UTC when MemberLux core wrote it, site-local when only the auto-responder did,
core.md 1.4); a key counts as "since the first call" if either is.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from datetime import date, datetime, timedelta
from enum import Enum

#: Clocks of the sidecar, the database and PHP differ a little; a trace this much older still counts.
CLOCK_SKEW = timedelta(minutes=2)


@dataclass(frozen=True)
class KeyTrace:
    """One of the customer's keys of the grant's level, with what ``keys_meta`` says of it."""

    key_id: int
    date_registered: date | None
    has_meta: bool
    utm_source: str | None = None
    utm_id: str | None = None
    #: The instants ``keys_meta.activation_datetime`` can mean (empty without a row).
    activated_candidates: tuple[datetime, ...] = ()


@dataclass(frozen=True)
class OrderTrace:
    """A WooCommerce order for the customer with the grant's product."""

    order_id: int
    created_at: datetime     # UTC
    status: str = ""


class Verdict(Enum):
    CONFIRMED = "confirmed"              # exactly one key carries the grant's id
    DUPLICATED = "duplicated"            # more than one key carries it
    ORDERED = "ordered"                  # a request of ours landed (order or key being written): wait for the key
    CONFIRMED_UNTAGGED = "confirmed_untagged"  # settled; a key of (user, level) since the first call, without our id
    ORDER_WITHOUT_KEY = "order_without_key"    # settled; the order exists but no key came (payments add-on off?)
    KEEP_LOOKING = "keep_looking"        # no trace yet; an earlier call may still be running
    SAFE_TO_ORDER = "safe_to_order"      # settled and no trace at all


@dataclass(frozen=True)
class Judgement:
    verdict: Verdict
    keys: tuple[int, ...] = ()           # keys carrying our id, or the untagged key chosen
    orders: tuple[int, ...] = ()         # orders taken as traces of ours
    in_flight_keys: tuple[int, ...] = ()  # keys since the first call without a final keys_meta
    reason: str = ""


@dataclass(frozen=True)
class Evidence:
    grant_ref: str
    first_ordered_at: datetime | None
    keys: list[KeyTrace] = field(default_factory=list)
    orders: list[OrderTrace] = field(default_factory=list)
    #: Orders already known to belong to other grants (their id came back in an answer).
    foreign_order_ids: frozenset[int] = frozenset()


def _since(evidence: Evidence) -> datetime | None:
    return None if evidence.first_ordered_at is None else evidence.first_ordered_at - CLOCK_SKEW


def possibly_ours(key: KeyTrace, grant_ref: str, since: datetime | None) -> bool:
    """A key that may be the product of one of our calls still being written, or whose id was lost.

    A key whose ``keys_meta`` carries a UTM source was activated by a request with UTM parameters:
    ours carry ``utm_id`` = the grant's id, so another value means another order. Without a row,
    or with a row that has no UTM at all (the auto-responder writes its row first, core.md 8), it
    may be ours if it was activated since our first call.
    """
    if since is None:
        return False
    if key.utm_id == grant_ref:
        return False  # counted as ours, not as a trace
    if key.utm_source is not None or key.utm_id is not None:
        return False
    if key.date_registered is not None and key.date_registered < since.date():
        return False
    if not key.has_meta:
        return key.date_registered is not None
    return any(moment >= since for moment in key.activated_candidates)


def judge(evidence: Evidence, *, now: datetime, settle_until: datetime | None) -> Judgement:
    ours = tuple(sorted(k.key_id for k in evidence.keys if k.utm_id == evidence.grant_ref))
    if len(ours) > 1:
        return Judgement(Verdict.DUPLICATED, keys=ours, reason=f"{len(ours)} keys carry utm_id {evidence.grant_ref}")
    if ours:
        return Judgement(Verdict.CONFIRMED, keys=ours, reason=f"key {ours[0]} carries utm_id {evidence.grant_ref}")
    since = _since(evidence)
    in_flight = tuple(sorted(k.key_id for k in evidence.keys if possibly_ours(k, evidence.grant_ref, since)))
    orders = tuple(sorted(o.order_id for o in evidence.orders
                          if since is not None and o.created_at >= since and o.order_id not in evidence.foreign_order_ids))
    settled = settle_until is None or now >= settle_until
    if in_flight or orders:
        if not settled:
            return Judgement(Verdict.ORDERED, orders=orders, in_flight_keys=in_flight,
                             reason=_trace_text(orders, in_flight) + "; waiting for the key with our id")
        if in_flight:
            return Judgement(Verdict.CONFIRMED_UNTAGGED, keys=(in_flight[-1],), orders=orders, in_flight_keys=in_flight,
                             reason=_trace_text(orders, in_flight) + "; no key carries our id after the settle time, "
                                    f"key {in_flight[-1]} of this user and level is taken as the grant's")
        return Judgement(Verdict.ORDER_WITHOUT_KEY, orders=orders,
                         reason=_trace_text(orders, in_flight) + " but no key after the settle time")
    if settled:
        return Judgement(Verdict.SAFE_TO_ORDER, reason="no trace of an earlier call after the settle time")
    return Judgement(Verdict.KEEP_LOOKING, reason="no trace yet; an earlier call may still be running")


def _trace_text(orders: tuple[int, ...], keys: tuple[int, ...]) -> str:
    parts = []
    if orders:
        parts.append("WooCommerce order " + ", ".join(f"#{o}" for o in orders) + " since the first call")
    if keys:
        parts.append("key " + ", ".join(str(k) for k in keys) + " of this user and level activated since the first call")
    return " and ".join(parts)
