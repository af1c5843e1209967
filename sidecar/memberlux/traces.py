"""Read-only look-ups for every trace an order call leaves on the site (core.md 13).

Used while a grant's outcome is unknown. Each look-up is driven by an index a stock site has:

* the customer's keys of the level, with their ``keys_meta`` row: ``term_keys.user_id`` (index
  ``memberlux_term_keys_user_id_idx``), ``keys_meta`` joined by its primary key;
* WooCommerce orders created since the first call: posts storage through ``posts.type_status_date``
  (``post_type``, ``post_status``, ``post_date``), one bounded range per order status, joined to the
  customer's ``postmeta`` rows by ``post_id``, then the order lines by ``order_id``; HPOS
  (``wc_orders``, WooCommerce ≥ 8.2 with ``woocommerce_custom_orders_table_enabled = 'yes'``) through
  its ``customer_id`` and ``billing_email`` indexes.
"""

from __future__ import annotations

from collections.abc import Iterable
from dataclasses import dataclass
from datetime import datetime, timedelta, timezone, tzinfo
from typing import Any

import sqlalchemy as sa

from sidecar.domain.outcomes import KeyTrace, OrderTrace
from sidecar.memberlux.schema import SiteSchema, cannot_store, parse_date, parse_datetime

#: Every status a WooCommerce order post can have; the range scan is bounded per status.
ORDER_POST_STATUSES = ("wc-pending", "wc-processing", "wc-on-hold", "wc-completed", "wc-cancelled", "wc-refunded",
                       "wc-failed", "wc-checkout-draft", "draft", "auto-draft", "trash")
#: ``posts.post_date`` is site-local (WordPress's own zone, read from its options); the range starts an
#: hour earlier for a daylight-saving change, and ``post_date_gmt`` decides.
_LOCAL_MARGIN = timedelta(hours=1)
_UTM_LENGTH = 60  # keys_meta.utm_* width; MemberLux truncates longer values on write


@dataclass(frozen=True)
class Customer:
    user_id: int | None
    email: str


def _naive_utc(moment: datetime) -> datetime:
    """WordPress's DATETIME columns hold naive values; ours are aware UTC."""
    return moment if moment.tzinfo is None else moment.astimezone(timezone.utc).replace(tzinfo=None)


def _aware(naive_utc: datetime) -> datetime:
    return naive_utc.replace(tzinfo=timezone.utc)


class TraceReader:
    """Look-ups of a grant's traces on one site (read-only; thread-safe like the reader)."""

    def __init__(self, engine: sa.Engine, schema: SiteSchema, site_zone: tzinfo) -> None:
        self.engine = engine
        self.schema = schema
        self.site_zone = site_zone

    # --- keys -------------------------------------------------------------------------------------

    def keys(self, user_id: int, term_id: int | None, grant_ref: str) -> list[KeyTrace]:
        """The user's activated keys of the level, plus any of theirs carrying ``grant_ref``."""
        tk, km = self.schema.table("memberlux_term_keys"), self.schema.table("memberlux_keys_meta")
        width = getattr(km.c.utm_id.type, "length", None) or _UTM_LENGTH
        ours = [] if cannot_store(km.c.utm_id, grant_ref) else [km.c.utm_id == grant_ref[:width]]
        level = [tk.c.term_id == term_id] if term_id is not None else []
        stmt = (sa.select(tk.c.id, tk.c.date_registered, km.c.key_id.label("meta_key_id"), km.c.utm_source,
                          km.c.utm_id, km.c.activation_datetime)
                .select_from(tk.outerjoin(km, km.c.key_id == tk.c.id))
                .where(tk.c.user_id == user_id, tk.c.status.in_(("used", "expired")), sa.or_(*level, *ours, sa.false()))
                .order_by(tk.c.id))
        with self.engine.connect() as conn:
            return [self._key(row) for row in conn.execute(stmt)]

    def _key(self, row: sa.Row[Any]) -> KeyTrace:
        activated = parse_datetime(row.activation_datetime)
        candidates: tuple[datetime, ...] = ()
        if activated is not None:
            # Core writes UTC; a row only the auto-responder wrote holds site-local time (core.md 1.4).
            as_local = activated.replace(tzinfo=self.site_zone).astimezone(timezone.utc)
            candidates = tuple(sorted({_aware(activated), as_local}))
        return KeyTrace(key_id=int(row.id), date_registered=parse_date(row.date_registered),
                        has_meta=row.meta_key_id is not None,
                        utm_source=None if row.utm_source in (None, "") else str(row.utm_source),
                        utm_id=None if row.utm_id in (None, "") else str(row.utm_id),
                        activated_candidates=candidates)

    # --- WooCommerce orders -------------------------------------------------------------------------

    @property
    def has_orders(self) -> bool:
        return self.schema.features.get("woocommerce", False)

    def _hpos_enabled(self, conn: sa.Connection) -> bool:
        if not self.schema.has("wc_orders"):
            return False
        options = self.schema.table("options")
        value = conn.execute(sa.select(options.c.option_value)
                             .where(options.c.option_name == "woocommerce_custom_orders_table_enabled")).scalar()
        return str(value or "").strip().lower() == "yes"

    def orders(self, customer: Customer, product_id: int | None, since: datetime) -> list[OrderTrace]:
        """Orders for this customer (``_customer_user`` = the user id, or ``_billing_email`` = the e-mail)
        created at or after ``since`` (aware).

        With ``product_id`` only orders with a line of that product count.
        """
        if not self.has_orders:
            return []
        with self.engine.connect() as conn:
            if self._hpos_enabled(conn):
                found = self._hpos_orders(conn, customer, since)
            else:
                found = self._post_orders(conn, customer, since)
            if product_id is None or not found:
                return found
            with_product = self._orders_with_product(conn, [o.order_id for o in found], product_id)
        return [o for o in found if o.order_id in with_product]

    def _post_orders(self, conn: sa.Connection, customer: Customer, since: datetime) -> list[OrderTrace]:
        posts, pm = self.schema.table("posts"), self.schema.table("postmeta")
        local_since = since.astimezone(self.site_zone).replace(tzinfo=None) - _LOCAL_MARGIN
        mine = [sa.and_(pm.c.meta_key == "_billing_email", pm.c.meta_value == customer.email)]
        if customer.user_id is not None:
            mine.append(sa.and_(pm.c.meta_key == "_customer_user", pm.c.meta_value == str(customer.user_id)))
        rows = conn.execute(
            sa.select(posts.c.ID, posts.c.post_date_gmt, posts.c.post_status).distinct()
            .select_from(posts.join(pm, pm.c.post_id == posts.c.ID))
            .where(posts.c.post_type == "shop_order", posts.c.post_status.in_(ORDER_POST_STATUSES),
                   posts.c.post_date >= local_since.strftime("%Y-%m-%d %H:%M:%S"), sa.or_(*mine))).all()
        result = []
        for row in rows:
            created = parse_datetime(row.post_date_gmt)
            if created is not None and _aware(created) >= since:
                result.append(OrderTrace(order_id=int(row.ID), created_at=_aware(created), status=str(row.post_status or "")))
        return sorted(result, key=lambda o: o.order_id)

    def _hpos_orders(self, conn: sa.Connection, customer: Customer, since: datetime) -> list[OrderTrace]:
        orders = self.schema.table("wc_orders")
        by = [orders.c.billing_email == customer.email]
        if customer.user_id is not None:
            by.append(orders.c.customer_id == customer.user_id)
        found: dict[int, OrderTrace] = {}
        for condition in by:  # one indexed look-up each (an OR would defeat both indexes)
            for row in conn.execute(sa.select(orders.c.id, orders.c.date_created_gmt, orders.c.status)
                                    .where(condition, orders.c.type == "shop_order",
                                           orders.c.date_created_gmt >= _naive_utc(since))):
                created = _aware(parse_datetime(row.date_created_gmt) or _naive_utc(since))
                found[int(row.id)] = OrderTrace(order_id=int(row.id), created_at=created, status=str(row.status or ""))
        return [found[k] for k in sorted(found)]

    def _orders_with_product(self, conn: sa.Connection, order_ids: Iterable[int], product_id: int) -> set[int]:
        items, itemmeta = self.schema.table("woocommerce_order_items"), self.schema.table("woocommerce_order_itemmeta")
        rows = conn.execute(
            sa.select(items.c.order_id)
            .select_from(items.join(itemmeta, itemmeta.c.order_item_id == items.c.order_item_id))
            .where(items.c.order_id.in_(list(order_ids)), itemmeta.c.meta_key == "_product_id",
                   itemmeta.c.meta_value == str(product_id)))
        return {int(r.order_id) for r in rows}
