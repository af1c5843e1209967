"""Cost of the look-ups the bridge makes while an order's outcome is unknown, on a large MariaDB site.

    .venv/bin/python bench/traces.py [--users 200000] [--orders 200000] [--recent 50] [--repeat 200]
                                     [--mariadb mysql+pymysql://root@127.0.0.1:3306/] [--reuse] [--keep]
    .venv/bin/python bench/traces.py --site-url mysql+pymysql://reader:...@db/wordpress   # an existing site

Without ``--site-url`` it builds (or with ``--reuse`` reuses) a seeded site in the MariaDB database
``mls_bench_traces``: ``--users`` learners (the seed gives them about five keys each), plus ``--orders``
WooCommerce orders in the posts storage (``shop_order`` posts with ``_customer_user``/``_billing_email``
postmeta and one order line with ``_product_id`` each) spread over the last year, ``--recent`` of them in
the last ten minutes (the window a look-up covers). Stock MemberLux and WordPress indexes only.

For ``--repeat`` random learners it times, through the sidecar's own code (``sidecar.memberlux.traces``):

* keys of (user, level) with their ``keys_meta`` (driven by ``term_keys.user_id``);
* WooCommerce orders for the customer with the product since ten minutes ago (posts storage:
  ``posts.type_status_date`` range per order status, then ``postmeta`` and the order lines by id);
* for comparison, the look-up by ``keys_meta.utm_id`` alone, without the user (no index: a scan).

Each figure is the wall time of the whole look-up as the bridge calls it (SQL round trips and row
handling in Python), p50/p95 over the runs; with it, MariaDB's EXPLAIN of each statement (index used,
rows it estimates to examine). Prints figures; asserts nothing. The built database is dropped at the end
unless --keep or --reuse.
"""

from __future__ import annotations

import argparse
import random
import statistics
import sys
import time
from datetime import date, datetime, timedelta, timezone
from pathlib import Path

import sqlalchemy as sa

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from sidecar.devstack.site import build_demo_site
from sidecar.memberlux.reader import MemberLuxReader
from sidecar.memberlux.schema import reflect_site
from sidecar.memberlux.traces import Customer, TraceReader

DATABASE = "mls_bench_traces"


def add_orders(engine: sa.Engine, count: int, recent: int, rng: random.Random) -> None:
    """Synthetic WooCommerce orders (posts storage) for existing learners and products."""
    with engine.begin() as conn:
        users = [tuple(r) for r in conn.execute(sa.text("SELECT ID, user_email FROM wp_users ORDER BY ID"))]
        products = [r[0] for r in conn.execute(sa.text(
            "SELECT post_id FROM wp_postmeta WHERE meta_key = '_mbl_key_pin_code_level_id'"))]
        first_id = int(conn.execute(sa.text("SELECT COALESCE(MAX(ID), 0) FROM wp_posts")).scalar()) + 1
        first_item = int(conn.execute(sa.text("SELECT COALESCE(MAX(order_item_id), 0) FROM wp_woocommerce_order_items"))
                         .scalar()) + 1
    posts_table = sa.Table("wp_posts", sa.MetaData(), autoload_with=engine)
    now = datetime.now(timezone.utc).replace(tzinfo=None)
    zone = timedelta(hours=3)  # the demo site's zone is Moscow
    for start in range(0, count, 5000):
        posts, meta, items, itemmeta = [], [], [], []
        for n in range(start, min(count, start + 5000)):
            post_id, item_id = first_id + n, first_item + n
            user_id, email = rng.choice(users)
            age = timedelta(seconds=rng.uniform(0, 600)) if n >= count - recent else timedelta(days=rng.uniform(0.01, 365))
            gmt = now - age
            posts.append({"ID": post_id, "post_author": 1, "post_date": (gmt + zone).strftime("%Y-%m-%d %H:%M:%S"),
                          "post_date_gmt": gmt.strftime("%Y-%m-%d %H:%M:%S"), "post_status": "wc-completed",
                          "post_type": "shop_order", "post_name": f"order-{post_id}"})
            meta += [{"post_id": post_id, "meta_key": "_customer_user", "meta_value": str(user_id)},
                     {"post_id": post_id, "meta_key": "_billing_email", "meta_value": email}]
            items.append({"order_item_id": item_id, "order_item_name": "Course", "order_item_type": "line_item",
                          "order_id": post_id})
            itemmeta.append({"order_item_id": item_id, "meta_key": "_product_id", "meta_value": str(rng.choice(products))})
        with engine.begin() as conn:
            conn.execute(sa.insert(posts_table), [{**p, "post_content": "", "post_title": "Order", "post_excerpt": "",
                                                   "post_modified": p["post_date"],
                                                   "post_modified_gmt": p["post_date_gmt"], "post_parent": 0,
                                                   "guid": ""} for p in posts])
            conn.execute(sa.text("INSERT INTO wp_postmeta (post_id, meta_key, meta_value) "
                                 "VALUES (:post_id, :meta_key, :meta_value)"), meta)
            conn.execute(sa.text("INSERT INTO wp_woocommerce_order_items (order_item_id, order_item_name, "
                                 "order_item_type, order_id) VALUES (:order_item_id, :order_item_name, "
                                 ":order_item_type, :order_id)"), items)
            conn.execute(sa.text("INSERT INTO wp_woocommerce_order_itemmeta (order_item_id, meta_key, meta_value) "
                                 "VALUES (:order_item_id, :meta_key, :meta_value)"), itemmeta)
        print(f"  orders {min(count, start + 5000)}/{count}", file=sys.stderr, flush=True)


class Statements:
    """Records the SQL the look-ups send, to EXPLAIN it afterwards."""

    def __init__(self, engine: sa.Engine) -> None:
        self.seen: dict[str, tuple[str, object]] = {}
        self.label = ""
        sa.event.listen(engine, "before_cursor_execute", self._record)

    def _record(self, conn, cursor, statement, parameters, context, executemany):
        if self.label and statement.lstrip().upper().startswith("SELECT"):
            self.seen.setdefault(f"{self.label}: {statement[:60]}", (statement, parameters))


def explain(engine: sa.Engine, statement: str, parameters: object) -> list[str]:
    with engine.connect() as conn:
        rows = conn.exec_driver_sql("EXPLAIN " + statement, parameters).mappings().all()
    return [f"{r['table']}: key {r['key'] or '—'} ({r['type']}), ~{r['rows']} rows" for r in rows]


def timed(fn, repeat: int) -> tuple[float, float]:
    values = []
    for _ in range(repeat):
        began = time.perf_counter()
        fn()
        values.append(time.perf_counter() - began)
    values.sort()
    return statistics.median(values), values[max(0, int(len(values) * 0.95) - 1)]


def main() -> None:  # one linear script
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--users", type=int, default=200_000)
    parser.add_argument("--orders", type=int, default=200_000)
    parser.add_argument("--recent", type=int, default=50)
    parser.add_argument("--repeat", type=int, default=200)
    parser.add_argument("--mariadb", default="mysql+pymysql://root@127.0.0.1:3306/")
    parser.add_argument("--site-url", default=None, help="an existing WordPress database (read only)")
    parser.add_argument("--prefix", default="wp_")
    parser.add_argument("--reuse", action="store_true")
    parser.add_argument("--keep", action="store_true")
    parser.add_argument("--seed", type=int, default=3)
    args = parser.parse_args()
    rng = random.Random(args.seed)
    built = args.site_url is None
    admin = sa.create_engine(args.mariadb)
    site_url = args.site_url or sa.make_url(args.mariadb).set(database=DATABASE).render_as_string(hide_password=False)
    if built:
        with admin.begin() as conn:
            exists = conn.execute(sa.text("SELECT COUNT(*) FROM information_schema.SCHEMATA WHERE SCHEMA_NAME = :d"),
                                  {"d": DATABASE}).scalar()
            if not (args.reuse and exists):
                conn.exec_driver_sql(f"DROP DATABASE IF EXISTS `{DATABASE}`")
                conn.exec_driver_sql(f"CREATE DATABASE `{DATABASE}` CHARACTER SET utf8mb4")
                exists = 0
        if not exists:
            began = time.perf_counter()
            print(f"building the site ({args.users} learners)…", file=sys.stderr, flush=True)
            build_demo_site(site_url, users=args.users, levels=30, seed=args.seed, today=date.today())
            add_orders(sa.create_engine(site_url), args.orders, args.recent, rng)
            print(f"  built in {time.perf_counter() - began:.0f} s", file=sys.stderr, flush=True)
    engine = sa.create_engine(site_url)
    try:
        schema = reflect_site(engine, args.prefix)
        reader = MemberLuxReader(engine, schema)
        traces = TraceReader(engine, schema, reader.site_timezone().tz)
        with engine.connect() as conn:
            sizes = {name: conn.execute(sa.text(f"SELECT COUNT(*) FROM {args.prefix}{name}{where}")).scalar()
                     for name, where in (("memberlux_term_keys", ""), ("memberlux_keys_meta", ""), ("users", ""),
                                         ("posts", " WHERE post_type = 'shop_order'"), ("postmeta", ""))}
            sample = [tuple(r) for r in conn.execute(sa.text(
                f"SELECT k.user_id, k.term_id, u.user_email FROM {args.prefix}memberlux_term_keys k "
                f"JOIN {args.prefix}users u ON u.ID = k.user_id WHERE k.status = 'used' ORDER BY RAND() LIMIT :n"),
                {"n": args.repeat})]
            product = conn.execute(sa.text(f"SELECT post_id FROM {args.prefix}postmeta "
                                           "WHERE meta_key = '_mbl_key_pin_code_level_id' LIMIT 1")).scalar()
        recorder = Statements(engine)
        since = datetime.now(timezone.utc) - timedelta(minutes=10)
        picks = iter(sample * 3)

        def keys() -> None:
            user_id, term_id, _email = next(picks)
            traces.keys(user_id, term_id, "g01bench00000000000000000")

        def orders() -> None:
            user_id, _term_id, email = next(picks)
            traces.orders(Customer(user_id, email), product, since)

        def utm_scan() -> None:
            with engine.connect() as conn:
                conn.execute(sa.text(f"SELECT key_id FROM {args.prefix}memberlux_keys_meta WHERE utm_id = :g"),
                             {"g": "g01bench00000000000000000"}).all()

        figures = []
        for label, fn, repeat in (("keys of (user, level) + keys_meta", keys, args.repeat),
                                  ("WooCommerce orders since 10 min (posts storage)", orders, args.repeat),
                                  ("for comparison: keys_meta.utm_id without the user", utm_scan, min(20, args.repeat))):
            recorder.label = label
            fn()  # warm, and the statements are recorded
            recorder.label = ""
            figures.append((label, *timed(fn, repeat), repeat))
        plans = {key: explain(engine, statement, parameters) for key, (statement, parameters) in recorder.seen.items()}
    finally:
        engine.dispose()
        if built and not (args.keep or args.reuse):
            with admin.begin() as conn:
                conn.exec_driver_sql(f"DROP DATABASE IF EXISTS `{DATABASE}`")
        admin.dispose()
    print()
    print("trace look-ups of an unknown order outcome (MariaDB, stock indexes)")
    print("  site            " + ", ".join(f"{name} {n:,}" for name, n in sizes.items()))
    print(f"  {'look-up':<52} {'p50 ms':>8} {'p95 ms':>8}  runs")
    for label, p50, p95, repeat in figures:
        print(f"  {label:<52} {p50 * 1000:8.2f} {p95 * 1000:8.2f}  {repeat}")
    print("  plans (EXPLAIN of each statement a look-up sends)")
    for key, lines in plans.items():
        print(f"    {key}")
        for line in lines:
            print(f"      {line}")


if __name__ == "__main__":
    main()
