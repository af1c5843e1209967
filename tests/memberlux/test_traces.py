"""The look-ups of an order call's traces, on SQLite and MariaDB sites (core.md 13).

A real order writes the user, a WooCommerce order, the key and, last, ``keys_meta`` with our
``utm_id``. While a call's outcome is unknown the bridge looks for each of those; these tests check
that the look-ups find what an order wrote, and only that.
"""

from __future__ import annotations

from datetime import date, datetime, timedelta, timezone

import pytest
import sqlalchemy as sa

from sidecar.devstack.emulator import create_emulator_app
from sidecar.devstack.seed import DEMO_API_LOGIN
from sidecar.devstack.server import serve_in_thread
from sidecar.memberlux.rest import Customer as OrderCustomer
from sidecar.memberlux.rest import MemberLuxRestClient
from sidecar.memberlux.schema import reflect_site
from sidecar.memberlux.traces import Customer, TraceReader
from tests.sites import seeded_site

PASSWORD = "traces-app-password-0000"


class Site:
    def __init__(self, url: str) -> None:
        seeded_site(url, users=12, levels=2, seed=3, today=date.today())
        self.engine = sa.create_engine(url, **({"connect_args": {"check_same_thread": False}}
                                               if url.startswith("sqlite") else {}))
        self.base_url, self.stop = serve_in_thread(create_emulator_app(self.engine, app_password=PASSWORD))
        self.rest = MemberLuxRestClient(self.base_url + "/wp-json", DEMO_API_LOGIN, PASSWORD, timeout=30)

    def reader(self) -> TraceReader:
        return TraceReader(self.engine, reflect_site(self.engine, "wp_"), timezone(timedelta(hours=3)))

    def products(self) -> list[tuple[int, int]]:
        """(product id, level) of the seeded mbl_key products."""
        with self.engine.connect() as conn:
            return [(int(r[0]), int(r[1])) for r in conn.execute(sa.text(
                "SELECT post_id, meta_value FROM wp_postmeta WHERE meta_key = '_mbl_key_pin_code_level_id' "
                "ORDER BY post_id"))]

    def user_id(self, email: str) -> int:
        with self.engine.connect() as conn:
            return int(conn.execute(sa.text("SELECT ID FROM wp_users WHERE user_email = :e"), {"e": email}).scalar_one())

    def close(self) -> None:
        self.stop()
        self.engine.dispose()


@pytest.fixture
def site(site_db_url):
    built = Site(site_db_url)
    try:
        yield built
    finally:
        built.close()


def test_an_order_is_found_by_billing_email_before_the_user_is_known_and_by_user_id_after(site):
    (product, level), (other_product, _) = site.products()[:2]
    since = datetime.now(timezone.utc) - timedelta(seconds=5)
    result = site.rest.order_product(OrderCustomer("trace.one@example.com"), product, "g01trace000000000000001")
    reader = site.reader()

    by_email = reader.orders(Customer(None, "trace.one@example.com"), product, since)
    assert [o.order_id for o in by_email] == [result.order_id]
    assert by_email[0].created_at >= since - timedelta(seconds=2) and by_email[0].created_at.tzinfo is not None
    user_id = site.user_id("trace.one@example.com")
    assert [o.order_id for o in reader.orders(Customer(user_id, "trace.one@example.com"), product, since)] == [result.order_id]

    # Not another customer's, not another product's, not from before the first call.
    assert reader.orders(Customer(None, "someone.else@example.com"), product, since) == []
    assert reader.orders(Customer(user_id, "trace.one@example.com"), other_product, since) == []
    assert reader.orders(Customer(user_id, "trace.one@example.com"), product,
                         datetime.now(timezone.utc) + timedelta(minutes=1)) == []


def test_an_order_moved_to_the_trash_is_still_a_trace(site):
    product, _level = site.products()[0]
    since = datetime.now(timezone.utc) - timedelta(seconds=5)
    order = site.rest.order_product(OrderCustomer("trace.trash@example.com"), product, "g01trace000000000000002").order_id
    with site.engine.begin() as conn:
        conn.execute(sa.text("UPDATE wp_posts SET post_status = 'trash' WHERE ID = :id"), {"id": order})
    found = site.reader().orders(Customer(None, "trace.trash@example.com"), product, since)
    assert [(o.order_id, o.status) for o in found] == [(order, "trash")]


def test_keys_of_the_user_and_level_carry_what_keys_meta_says(site):
    product, level = site.products()[0]
    site.rest.order_product(OrderCustomer("trace.keys@example.com"), product, "g01trace000000000000003")
    user_id = site.user_id("trace.keys@example.com")
    keys = site.reader().keys(user_id, level, "g01trace000000000000003")
    assert len(keys) == 1
    key = keys[0]
    assert (key.has_meta, key.utm_source, key.utm_id) == (True, "mlsidecar", "g01trace000000000000003")
    assert key.date_registered == datetime.now(timezone.utc).date()
    # The stored activation time, read as UTC and as site-local (UTC+3 here): both readings are offered.
    assert len(key.activated_candidates) == 2
    assert key.activated_candidates[1] - key.activated_candidates[0] == timedelta(hours=3)
    # Another level's keys are not looked at, except one carrying the grant's id.
    assert site.reader().keys(user_id, level + 100000, "g01trace000000000000003") == keys
    assert site.reader().keys(user_id, level + 100000, "g01trace000000000000999") == []


def test_hpos_orders_are_read_from_wc_orders_when_the_site_switched_it_on(site):
    product, _level = site.products()[0]
    since = datetime.now(timezone.utc) - timedelta(minutes=1)
    created = (datetime.now(timezone.utc) - timedelta(seconds=10)).strftime("%Y-%m-%d %H:%M:%S")
    with site.engine.begin() as conn:
        conn.execute(sa.text(
            "CREATE TABLE wp_wc_orders (id BIGINT PRIMARY KEY, status VARCHAR(20), type VARCHAR(20), "
            "customer_id BIGINT, billing_email VARCHAR(320), date_created_gmt DATETIME)"))
        conn.execute(sa.text("INSERT INTO wp_wc_orders VALUES (9001, 'wc-completed', 'shop_order', 0, "
                             "'hpos.buyer@example.com', :at), (9002, 'wc-completed', 'shop_order', 77, "
                             "'changed@example.com', :at), (9003, 'wc-completed', 'shop_order_refund', 77, '', :at)"),
                     {"at": created})
        for order in (9001, 9002):
            item = conn.execute(sa.text("INSERT INTO wp_woocommerce_order_items (order_item_name, order_item_type, order_id) "
                                        "VALUES ('Course', 'line_item', :o)"), {"o": order}).lastrowid
            conn.execute(sa.text("INSERT INTO wp_woocommerce_order_itemmeta (order_item_id, meta_key, meta_value) "
                                 "VALUES (:i, '_product_id', :p)"), {"i": item, "p": str(product)})
    reader = site.reader()
    assert reader.orders(Customer(None, "hpos.buyer@example.com"), product, since) == []  # HPOS not switched on yet
    with site.engine.begin() as conn:
        conn.execute(sa.text("INSERT INTO wp_options (option_name, option_value, autoload) "
                             "VALUES ('woocommerce_custom_orders_table_enabled', 'yes', 'yes')"))
    assert [o.order_id for o in reader.orders(Customer(None, "hpos.buyer@example.com"), product, since)] == [9001]
    assert [o.order_id for o in reader.orders(Customer(77, "learner@example.com"), product, since)] == [9002]
