"""Chaos run of the grant bridge: thousands of grants against a slow, crashing site and a worker killed at random.

    .venv/bin/python bench/chaos.py [--grants 2000] [--concurrency 8] [--timeout 2] [--settle 15]
                                    [--latency 0.2] [--jitter 3] [--kill-every 20] [--site-down-every 60]
                                    [--site-down-seconds 5] [--site-url URL] [--store-url URL] [--seed 7]

Everything runs on loopback in a temporary directory (removed at the end; --keep keeps it with the logs):

1. A demo site (``--users`` learners), SQLite in WAL mode by default, or ``--site-url``: an empty MariaDB
   database you can spare, rebuilt from scratch. It is served by ``mlsidecar devstack serve`` in its own
   process: the emulator writes an order statement by statement, in the real plugins' order (user,
   WooCommerce order, key, auto-responder row, four e-mails, webhook fan-out, ``keys_meta``, certificate),
   keeps going after the caller gave up, and holds PHP session locks (core.md 13). Each order takes
   ``--latency`` s plus a random 0…``--jitter`` s before its first write, then ``--step-delay`` s before
   each of its six later writes, so with ``--timeout`` in that range many calls time out while the site is
   still writing, at every gap between the statements.
2. ``--grants`` grants are accepted into the store (a fifth for learners who already exist, each with its own
   deal id), then ``mlsidecar worker`` delivers them with ``bridge.concurrency = --concurrency``,
   ``memberlux.timeout_seconds = --timeout``, ``bridge.settle_seconds = --settle`` (above the slowest order,
   as the documentation asks) and ``bridge.unknown_poll_seconds = 2``.
3. Chaos until every grant is final: the worker is killed with SIGKILL every ``--kill-every`` s (±50 %) and
   restarted at once; every ``--site-down-every`` s (±50 %) the site's process is killed with SIGKILL — its
   orders in flight stop between two statements, as on a PHP-FPM restart — and stays down (connection
   refused) for ``--site-down-seconds``.
4. The outcome is read from the site's own tables, not from our store: for each grant, the keys whose
   ``keys_meta.utm_id`` is the grant's id.

Printed: grants, lost (no key on the site, whatever our store says), duplicated (more than one key),
the store's final states, worker kills and site crashes, and the time to settle (from the first grant to
the last final state, and from the last crash to the last final state), plus per-grant delivery time
(p50/p95/max, accepted → final). Asserts nothing; exits 1 when a grant is lost or duplicated, or not all
are final within ``--deadline-minutes``.
"""

from __future__ import annotations

import argparse
import os
import random
import secrets
import shutil
import signal
import sys
import tempfile
import time
import uuid
from collections import Counter
from datetime import date
from pathlib import Path

import requests
import sqlalchemy as sa

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from sidecar.bootstrap import build_runtime
from sidecar.bridge.auth import Principal
from sidecar.bridge.parsers import parse_grant_body
from sidecar.bridge.service import BridgeService, IntakeContext
from sidecar.config import load_settings
from sidecar.devstack.seed import DEMO_API_LOGIN
from sidecar.devstack.site import build_demo_site
from sidecar.store.grant_models import FINAL_STATES, Grant

from _common import (
    HOST, Processes, cli, free_port, percentile, site_keys_per_grant, split_password, wait_http, write_config,
)

#: Steps of the order that take --step-delay each (the site's writes between which a call can time out).
DELAYED_STEPS = ("order", "key", "autoresponder", "mails", "webhooks", "keys_meta")


def _run_cli(args: list[str], work: Path, name: str) -> None:
    import subprocess

    with open(work / f"{name}.log", "ab") as log:
        result = subprocess.run([*cli(), *args], stdout=log, stderr=subprocess.STDOUT, cwd=work, timeout=600)
    if result.returncode != 0:
        raise SystemExit(f"`mlsidecar {' '.join(args)}` failed:\n" + (work / f"{name}.log").read_text()[-3000:])


class Site:
    """The emulated site's process: started, crashed, restarted on the same port."""

    def __init__(self, processes: Processes, site_url: str, port: int, password: str, args) -> None:
        self.processes, self.site_url, self.port, self.password, self.args = processes, site_url, port, password, args
        self.url = f"http://{HOST}:{port}"
        self.crashes = 0

    def start(self) -> None:
        self.processes.start("site", [*cli(), "devstack", "serve", "--db-url", self.site_url, "--host", HOST,
                                      "--port", str(self.port), "--app-user", DEMO_API_LOGIN],
                             env={"MLS_DEVSTACK_APP_PASSWORD": self.password})
        wait_http(self.url + "/devstack/health", self.processes, "site", 60)
        # A slow site: a fixed latency plus a random 0..jitter before the first write, then --step-delay
        # before each later write, so a call's deadline falls at a different gap from order to order.
        faults = {"latency_seconds": self.args.latency, "latency_jitter_seconds": self.args.jitter,
                  "step_delays": dict.fromkeys(DELAYED_STEPS, self.args.step_delay)}
        answer = requests.post(self.url + "/devstack/faults", json=faults, auth=(DEMO_API_LOGIN, self.password), timeout=10)
        if answer.status_code != 200:
            raise SystemExit(f"the emulator refused the fault plan: {answer.status_code} {answer.text[:300]}")

    def crash(self) -> None:
        self.processes.stop("site", signal.SIGKILL)
        self.crashes += 1


def accept_grants(settings, count: int, rng: random.Random, run_id: str) -> list[str]:
    runtime = build_runtime(settings)
    try:
        service = BridgeService(runtime)
        products = sorted({(p.level_id, p.duration, p.units) for p in service.catalog.products()
                           if p.status == "publish" and p.level_id and not p.unlimited})
        learners = [u.email for u in runtime.reader.users(range(1, 400)).values() if u.email][:300]
        context = IntakeContext(channel="api", principal=Principal("api_key", "chaos"))
        ids = []
        for n in range(count):
            term_id, duration, units = rng.choice(products)
            email = rng.choice(learners) if learners and rng.random() < 0.2 else f"chaos.{run_id}.{n}@example.org"
            body = {"user": {"email": email, "first_name": "Chaos", "last_name": f"N{n}"},
                    "grant": {"term_id": term_id, "duration": duration, "units": units},
                    "external_id": f"chaos-{run_id}-{n}"}
            ids.append(service.accept(parse_grant_body(body), context).grant.id)
        return ids
    finally:
        runtime.close()


def states(store_engine: sa.Engine, ids: list[str]) -> Counter:
    counts: Counter = Counter()
    with store_engine.connect() as conn:
        for start in range(0, len(ids), 500):
            for status, n in conn.execute(sa.select(Grant.status, sa.func.count()).where(Grant.id.in_(ids[start:start + 500]))
                                          .group_by(Grant.status)):
                counts[status] += n
    return counts


def claimed_keys(store_engine: sa.Engine, ids: list[str]) -> dict[str, tuple[int, str, int]]:
    """(key, e-mail, level) each finished grant names in our store."""
    found: dict[str, tuple[int, str, int]] = {}
    with store_engine.connect() as conn:
        for start in range(0, len(ids), 500):
            for grant_id, key_id, email, term_id in conn.execute(sa.select(Grant.id, Grant.key_id, Grant.email, Grant.term_id)
                                                                 .where(Grant.id.in_(ids[start:start + 500]),
                                                                        Grant.key_id.is_not(None))):
                found[grant_id] = (int(key_id), str(email).lower(), int(term_id))
    return found


def untagged_keys(site_url: str, claimed: dict[str, tuple[int, str, int]]) -> dict[str, int]:
    """Of these grants, those whose named key is on the site, activated for the grant's learner and level,
    without any utm_id."""
    if not claimed:
        return {}
    engine = sa.create_engine(site_url)
    try:
        with engine.connect() as conn:
            query = sa.text("SELECT k.id, u.user_email, k.term_id FROM wp_memberlux_term_keys k "
                            "JOIN wp_users u ON u.ID = k.user_id LEFT JOIN wp_memberlux_keys_meta m ON m.key_id = k.id "
                            "WHERE k.id IN :ids AND k.status = 'used' AND m.utm_id IS NULL"
                            ).bindparams(sa.bindparam("ids", expanding=True))
            present = {int(r[0]): (str(r[1]).lower(), int(r[2]))
                       for r in conn.execute(query, {"ids": [key for key, _e, _t in claimed.values()]})}
    finally:
        engine.dispose()
    return {g: key for g, (key, email, term) in claimed.items() if present.get(key) == (email, term)}


def order_calls(store_engine: sa.Engine, ids: list[str]) -> tuple[Counter, int]:
    """Outcomes of the order calls the worker made, and how many grants were ordered more than once."""
    from sidecar.store.grant_models import GrantAttempt

    outcomes: Counter = Counter()
    again = 0
    with store_engine.connect() as conn:
        for start in range(0, len(ids), 500):
            chunk = ids[start:start + 500]
            for outcome, n in conn.execute(sa.select(GrantAttempt.outcome, sa.func.count())
                                           .where(GrantAttempt.grant_id.in_(chunk), GrantAttempt.kind == "order")
                                           .group_by(GrantAttempt.outcome)):
                outcomes[outcome] += n
            again += conn.scalar(sa.select(sa.func.count()).select_from(Grant)
                                 .where(Grant.id.in_(chunk), Grant.orders_sent > 1)) or 0
    return outcomes, again


def delivery_seconds(store_engine: sa.Engine, ids: list[str]) -> list[float]:
    values = []
    with store_engine.connect() as conn:
        for start in range(0, len(ids), 500):
            for created, completed in conn.execute(sa.select(Grant.created_at, Grant.completed_at)
                                                   .where(Grant.id.in_(ids[start:start + 500]))):
                if completed is not None:
                    values.append((completed - created).total_seconds())
    return values


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--grants", type=int, default=2000)
    parser.add_argument("--users", type=int, default=500, help="learners of the demo site (default 500)")
    parser.add_argument("--concurrency", type=int, default=8, help="bridge.concurrency (default 8)")
    parser.add_argument("--timeout", type=float, default=2.0, help="memberlux.timeout_seconds (default 2)")
    parser.add_argument("--settle", type=int, default=15, help="bridge.settle_seconds (default 15)")
    parser.add_argument("--latency", type=float, default=0.2, help="fixed seconds before an order's first write (default 0.2)")
    parser.add_argument("--jitter", type=float, default=2.5, help="random extra seconds before the first write (default 2.5)")
    parser.add_argument("--step-delay", type=float, default=0.2, help="seconds before each later write (default 0.2)")
    parser.add_argument("--kill-every", type=float, default=20.0, help="mean seconds between worker kills (0 = never)")
    parser.add_argument("--site-down-every", type=float, default=60.0, help="mean seconds between site crashes (0 = never)")
    parser.add_argument("--site-down-seconds", type=float, default=5.0, help="how long the site stays down")
    parser.add_argument("--deadline-minutes", type=float, default=60.0, help="give up waiting after this long")
    parser.add_argument("--site-url", default=None, help="empty database for the site (rebuilt!) instead of SQLite")
    parser.add_argument("--store-url", default=None, help="store database (one you can spare) instead of SQLite")
    parser.add_argument("--seed", type=int, default=7)
    parser.add_argument("--keep", action="store_true")
    args = parser.parse_args()
    slowest = args.latency + args.jitter + args.step_delay * len(DELAYED_STEPS)
    if args.settle <= slowest:
        parser.error(f"--settle must be above the slowest order ({slowest:g} s), as the documentation requires")

    def interrupted(signum, _frame):
        raise KeyboardInterrupt(f"signal {signum}")

    signal.signal(signal.SIGTERM, interrupted)
    work = Path(tempfile.mkdtemp(prefix="mls-chaos-"))
    processes = Processes(work)
    failed = True
    try:
        failed = run(args, work, processes)
    except KeyboardInterrupt:
        print("\ninterrupted", file=sys.stderr)
    finally:
        processes.stop_all(newest_first=True)
        if args.keep:
            print(f"kept {work}", file=sys.stderr)
        else:
            shutil.rmtree(work, ignore_errors=True)
    sys.exit(1 if failed else 0)


def run(args, work: Path, processes: Processes) -> bool:  # one linear script
    rng = random.Random(args.seed)
    run_id = uuid.uuid4().hex[:8]
    log = lambda text: print(text, file=sys.stderr, flush=True)  # noqa: E731

    site_url = args.site_url or f"sqlite:///{work / 'wordpress.sqlite'}"
    log(f"building the demo site ({args.users} learners) in {sa.make_url(site_url).get_backend_name()}…")
    build_demo_site(site_url, users=args.users, levels=6, seed=args.seed, today=date.today(), fresh=True)
    if site_url.startswith("sqlite"):
        engine = sa.create_engine(site_url)
        with engine.connect() as conn:
            conn.exec_driver_sql("PRAGMA journal_mode=WAL")
        engine.dispose()
    password = secrets.token_urlsafe(18)
    site = Site(processes, site_url, free_port(), password, args)
    site.start()

    store, store_password = split_password(args.store_url) if args.store_url else (f"sqlite:///{work / 'store.sqlite'}", None)
    config = write_config(work / "mlsidecar.toml", {
        "wordpress": {"db_url": site_url, "table_prefix": "wp_"},
        "memberlux": {"rest_base_url": site.url + "/wp-json", "rest_user": DEMO_API_LOGIN, "rest_password": password,
                      "timeout_seconds": args.timeout},
        "store": {"url": store, **({"password": store_password} if store_password else {})},
        "smtp": {"pickup_dir": str(work / "mail"), "from_address": "school@chaos.example"},
        "bridge": {"concurrency": args.concurrency, "settle_seconds": args.settle, "unknown_poll_seconds": 2,
                   "retry_base_seconds": 2, "retry_max_seconds": 10},
        "schedule": {"outbox_poll_seconds": 1},
        "web": {"secret_key": secrets.token_hex(32)},
        "log": {"format": "text", "level": "INFO"},
    })
    _run_cli(["--config", str(config), "db", "upgrade"], work, "db-upgrade")
    settings = load_settings(config, environ={})
    log(f"accepting {args.grants} grants…")
    ids = accept_grants(settings, args.grants, rng, run_id)
    store_engine = sa.create_engine(sa.make_url(store).set(password=store_password) if store_password else store)

    worker_args = [*cli(), "--config", str(config), "worker"]
    processes.start("worker", worker_args)
    started = time.monotonic()
    kills = 0
    last_crash = started
    next_kill = started + rng.uniform(0.5, 1.5) * args.kill_every if args.kill_every else float("inf")
    next_down = started + rng.uniform(0.5, 1.5) * args.site_down_every if args.site_down_every else float("inf")
    site_back_at = None
    finished_at = None
    last_report = started
    while time.monotonic() - started < args.deadline_minutes * 60:
        now = time.monotonic()
        counts = states(store_engine, ids)
        if sum(counts[s] for s in FINAL_STATES) == len(ids):
            finished_at = now
            break
        if now - last_report >= 15:
            last_report = now
            log(f"  {now - started:6.0f} s: {dict(counts)}; worker kills {kills}, site crashes {site.crashes}")
        if site_back_at is not None and now >= site_back_at:
            site.start()
            site_back_at = None
        if now >= next_kill:
            processes.stop("worker", signal.SIGKILL)
            processes.start("worker", worker_args)
            kills += 1
            last_crash = now
            next_kill = now + rng.uniform(0.5, 1.5) * args.kill_every
        if site_back_at is None and now >= next_down:
            site.crash()
            site_back_at = now + args.site_down_seconds
            last_crash = now
            next_down = now + args.site_down_seconds + rng.uniform(0.5, 1.5) * args.site_down_every
        time.sleep(0.5)
    if site_back_at is not None:
        site.start()

    counts = states(store_engine, ids)
    keys = site_keys_per_grant(site_url, ids)
    claimed = claimed_keys(store_engine, ids)
    untagged = untagged_keys(site_url, {g: c for g, c in claimed.items() if keys[g] == 0})
    durations = delivery_seconds(store_engine, ids)
    calls, ordered_again = order_calls(store_engine, ids)
    store_engine.dispose()
    # A grant's keys: those carrying its utm_id, plus the key the store names when none does (the site died
    # between activating the key and writing keys_meta; the bridge took that key, never ordering again).
    owned = {g: keys[g] + (1 if g in untagged else 0) for g in ids}
    shared = sum(n - 1 for n in Counter(untagged.values()).values() if n > 1)
    lost = sum(1 for n in owned.values() if n == 0)
    duplicated = sum(1 for n in owned.values() if n > 1) + shared
    print()
    print("chaos run of the grant bridge")
    print(f"  machine          {os.cpu_count()} CPU cores; loopback; Python {sys.version.split()[0]}")
    print(f"  site             {sa.make_url(site_url).get_backend_name()}, {args.users} learners; each order "
          f"{args.latency:g} s + random 0..{args.jitter:g} s, then {args.step_delay:g} s before each of "
          f"{len(DELAYED_STEPS)} later writes; order call deadline {args.timeout:g} s")
    print(f"  sidecar          store {sa.make_url(store).get_backend_name()}; concurrency {args.concurrency}; "
          f"settle {args.settle} s; worker killed (SIGKILL) {kills} times; site process killed {site.crashes} times "
          f"and down {args.site_down_seconds:g} s each")
    print(f"  grants           {len(ids)}; store states {dict(counts)}")
    print(f"  order calls      {dict(calls)} (ok: answered; unknown: deadline, 5xx or connection lost after sending; "
          f"interrupted: the worker was killed during the call; unreachable: nothing sent); grants ordered more "
          f"than once (after the settle time, no trace) {ordered_again}")
    print(f"  on the site      lost {lost} (no key of the grant), duplicated {duplicated} (more than one key, or one "
          f"key taken by two grants), exactly one key {len(ids) - lost - duplicated}; of these, {len(untagged)} "
          f"without the grant's utm_id (the site died between the key and keys_meta)")
    if finished_at is not None:
        print(f"  time to settle   all final {finished_at - started:.0f} s after the worker started; "
              f"{finished_at - last_crash:.0f} s after the last kill or crash")
    else:
        print(f"  time to settle   NOT all final after {args.deadline_minutes:g} min")
    if durations:
        print(f"  per grant        accepted -> final: p50 {percentile(durations, .5):.1f} s, p95 "
              f"{percentile(durations, .95):.1f} s, max {max(durations):.1f} s")
    return bool(lost or duplicated or finished_at is None)


if __name__ == "__main__":
    main()
