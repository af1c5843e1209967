"""Does ``bridge.concurrency`` mean what it says on a site that locks PHP sessions?

    .venv/bin/python bench/concurrency.py [--grants 24] [--latency 2] [--concurrency 1 4 8]

MemberLux starts a PHP session on every request and answers with a ``PHPSESSID`` cookie; PHP runs the
requests of one session one after another (core.md 13). The emulator does the same. For each
concurrency c, ``--grants`` grants (new learners) are delivered by the worker's own delivery loop
(``OutboxRunner`` with c threads, the real order path: claim, order call, read-back) to an emulator
that takes ``--latency`` s per order, and the wall time from the start of the loop to the last grant
final is compared with the ideal ⌈N/c⌉·L. The same run is repeated with an order client that keeps
cookies (what the client did before it refused them), which the session lock turns into a queue.

Figures include the whole delivery of each grant (store writes, the order call, the read-back), not
only the HTTP call. Prints a table; asserts nothing.
"""

from __future__ import annotations

import argparse
import math
import secrets
import sys
import tempfile
import time
from datetime import date
from pathlib import Path

import requests
import sqlalchemy as sa

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from sidecar.bootstrap import build_runtime, store_url
from sidecar.bridge.auth import Principal
from sidecar.bridge.outbox import GrantDeliverer, OutboxRunner
from sidecar.bridge.parsers import parse_grant_body
from sidecar.bridge.service import BridgeService, IntakeContext
from sidecar.config import settings_from_mapping
from sidecar.devstack.emulator import create_emulator_app
from sidecar.devstack.seed import DEMO_API_LOGIN
from sidecar.devstack.server import serve_in_thread
from sidecar.devstack.site import build_demo_site
from sidecar.memberlux.rest import MemberLuxRestClient
from sidecar.store import db as store_db
from sidecar.store.grant_models import FINAL_STATES, Grant


class CookieKeepingClient(MemberLuxRestClient):
    """The order client as it was before: a session that keeps the site's cookies."""

    def __init__(self, *args, **kwargs) -> None:
        super().__init__(*args, **kwargs)
        self.session.cookies = requests.cookies.RequestsCookieJar()


def deliver(runtime, client: MemberLuxRestClient, n: int, concurrency: int, tag: str) -> tuple[float, int]:
    service = BridgeService(runtime)
    product = sorted((p.level_id, p.duration, p.units) for p in service.catalog.products()
                     if p.status == "publish" and p.level_id and not p.unlimited)[0]
    context = IntakeContext(channel="api", principal=Principal("api_key", "bench"))
    ids = [service.accept(parse_grant_body({
        "user": {"email": f"conc.{tag}.{i}@example.org"},
        "grant": {"term_id": product[0], "duration": product[1], "units": product[2]},
        "external_id": f"conc-{tag}-{i}"}), context).grant.id for i in range(n)]
    runner = OutboxRunner(GrantDeliverer(runtime, rest_client=client, holder=f"bench-{tag}"),
                          concurrency=concurrency, poll_seconds=0.02)
    started = time.perf_counter()
    runner.start()
    try:
        while True:
            with runtime.sessions() as session:
                done = session.scalar(sa.select(sa.func.count()).select_from(Grant)
                                      .where(Grant.id.in_(ids), Grant.status.in_(FINAL_STATES)))
            if done == n:
                break
            time.sleep(0.02)
        wall = time.perf_counter() - started
    finally:
        runner.stop()
    with runtime.sessions() as session:
        succeeded = session.scalar(sa.select(sa.func.count()).select_from(Grant)
                                   .where(Grant.id.in_(ids), Grant.status == "succeeded"))
    return wall, succeeded


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--grants", type=int, default=24)
    parser.add_argument("--latency", type=float, default=2.0, help="seconds the site takes per order (default 2)")
    parser.add_argument("--concurrency", type=int, nargs="+", default=[1, 4, 8])
    args = parser.parse_args()
    work = Path(tempfile.mkdtemp(prefix="mls-conc-"))
    site_url = f"sqlite:///{work / 'wordpress.sqlite'}"
    build_demo_site(site_url, users=50, levels=2, seed=5, today=date.today(), fresh=True)
    engine = sa.create_engine(site_url, connect_args={"check_same_thread": False, "timeout": 30})
    password = secrets.token_urlsafe(12)
    base_url, stop = serve_in_thread(create_emulator_app(engine, app_password=password, latency_seconds=args.latency))
    settings = settings_from_mapping({
        "wordpress": {"db_url": site_url},
        "memberlux": {"rest_base_url": base_url + "/wp-json", "rest_user": DEMO_API_LOGIN, "rest_password": password,
                      "timeout_seconds": 600},
        "store": {"url": f"sqlite:///{work / 'store.sqlite'}"},
        "web": {"secret_key": secrets.token_hex(16)}}, environ={})
    store_engine = store_db.create_store_engine(store_url(settings))
    store_db.upgrade(store_engine)
    store_engine.dispose()
    runtime = build_runtime(settings)
    rows = []
    try:
        for concurrency in args.concurrency:
            for label, cls in (("no cookies", MemberLuxRestClient), ("keeps cookies", CookieKeepingClient)):
                client = cls(base_url + "/wp-json", DEMO_API_LOGIN, password, timeout=600)
                wall, succeeded = deliver(runtime, client, args.grants, concurrency,
                                          f"{concurrency}{label[0]}{secrets.token_hex(2)}")
                rows.append((concurrency, label, wall, succeeded))
    finally:
        runtime.close()
        stop()
        engine.dispose()
    print()
    print(f"parallel orders on a site that locks PHP sessions: {args.grants} grants, {args.latency:g} s per order")
    print(f"  {'concurrency':>11}  {'client':<14} {'wall s':>8} {'ideal s':>8} {'wall/ideal':>10}  succeeded")
    for concurrency, label, wall, succeeded in rows:
        ideal = math.ceil(args.grants / concurrency) * args.latency
        print(f"  {concurrency:>11}  {label:<14} {wall:8.1f} {ideal:8.1f} {wall / ideal:10.2f}  {succeeded}")
    print("  ideal = ceil(grants / concurrency) x latency; wall = the worker's delivery loop from start to the last "
          "grant final (claim, order call, read-back, store writes)")


if __name__ == "__main__":
    main()
