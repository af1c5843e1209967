"""Load and soak run: the production processes under steady mixed traffic, watched minute by minute.

    .venv/bin/python bench/soak.py [--minutes 30] [--max-requests 200000] [--rate 20] [--connections 8]
                                   [--workers 2] [--users 2000]
                                   [--store-url mysql+pymysql://root@127.0.0.1:3306/mls_soak]

Everything runs on loopback, in a temporary directory removed at the end (also on Ctrl-C; --keep
keeps it, with every process's log):

1. A demo site (SQLite in WAL mode, ``--users`` learners) served by ``mlsidecar devstack serve`` —
   the emulator ``mlsidecar demo`` uses, here in its own process; a store (SQLite file, or
   ``--store-url``: an existing database you can spare) migrated with ``mlsidecar db upgrade``; a
   generated TOML configuration; the sleepers read model built with ``mlsidecar sleepers refresh``.
2. ``mlsidecar serve`` (gunicorn, ``--workers`` processes x 4 threads) and ``mlsidecar worker`` (the
   scheduler and the grant outbox, delivering every accepted grant to the emulator), each started
   exactly as in production.
3. Mixed traffic, open loop: requests are due at ``--rate`` per second whatever the server does,
   sent over ``--connections`` keep-alive connections, until ``--minutes`` have passed or
   ``--max-requests`` were sent:

   ====================================  ======  =============================================
   request                               share   what
   ====================================  ======  =============================================
   POST /api/v1/grants                    30 %   brief JSON, ``X-API-Key``; a fifth repeat an
                                                 earlier ``external_id`` with the same payload
   POST /wp-json/mlgb/v1/grant             5 %   legacy HMAC body; a fifth re-send an earlier
                                                 ``meta.amo_lead_id``, freshly signed
   GET /api/v1/sleepers                   30 %   bearer token from ``web.api_tokens``; random
                                                 level/sort, a third follow a ``next_cursor``
   GET /monitor/sleepers                  20 %   the HTML report, logged-in admin session
   GET /monitor/sleepers.csv               5 %   streamed CSV export of one level or all
   GET /healthz, GET /readyz               10 %   probes
   ====================================  ======  =============================================

   Latency is the service time of one request (sent → last byte read). An error is a transport
   error, a 5xx or any status the request should not get (grants: 200/202; the rest: 200).
4. Every minute: requests and errors of that minute, RSS of the gunicorn master and each web worker
   and of ``mlsidecar worker`` (from /proc), and the outbox backlog. At the end: p50/p95/p99 per
   endpoint, totals, RSS growth from the first minute to the last, and the grant outcome — every
   distinct grant delivered once (no site key twice for a grant id in ``keys_meta.utm_id``).

Prints figures; asserts nothing. The exit status is 1 when any error or duplicated grant was seen, or the
outbox did not drain within ``--drain-seconds``.
"""

from __future__ import annotations

import argparse
import hashlib
import hmac
import http.client
import json
import os
import random
import re
import secrets
import shutil
import signal
import subprocess
import sys
import tempfile
import threading
import time
import uuid
from collections import Counter, defaultdict
from dataclasses import dataclass, field
from datetime import date
from pathlib import Path
from urllib.parse import urlencode

import requests
import sqlalchemy as sa

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from sidecar.bootstrap import build_runtime
from sidecar.bridge.service import BridgeService
from sidecar.config import load_settings
from sidecar.devstack.seed import DEMO_ADMIN_LOGIN, DEMO_ADMIN_PASSWORD, DEMO_API_LOGIN
from sidecar.devstack.site import build_demo_site
from sidecar.store.grant_models import FINAL_STATES, SUCCEEDED, Grant

from _common import HOST, Processes, site_keys_per_grant, wait_http, write_config  # (bench/ is on sys.path: run as a script)
from _common import cli as _cli
from _common import free_port as _free_port
from _common import percentile as _percentile
from _common import split_password as _split_password

REPEAT_SHARE = 0.20
MIX = [  # (endpoint label, weight, Traffic method that builds the request)
    ("POST /api/v1/grants", 30, "api_grant"),
    ("POST /wp-json/mlgb/v1/grant", 5, "legacy_grant"),
    ("GET /api/v1/sleepers", 30, "sleepers_api"),
    ("GET /monitor/sleepers", 20, "sleepers_page"),
    ("GET /monitor/sleepers.csv", 5, "sleepers_csv"),
    ("GET /healthz", 5, "healthz"),
    ("GET /readyz", 5, "readyz"),
]
EXPECTED = {"POST /api/v1/grants": {200, 202}, "POST /wp-json/mlgb/v1/grant": {200, 202}}
SORTS = ["expired_on", "days_since", "name", "email", "level"]


# --- processes ---------------------------------------------------------------------------------------------


def _run_cli(args: list[str], log_dir: Path, name: str, timeout: float = 600) -> None:
    with open(log_dir / f"{name}.log", "ab") as log:
        result = subprocess.run([*_cli(), *args], stdout=log, stderr=subprocess.STDOUT, cwd=log_dir, timeout=timeout)
    if result.returncode != 0:
        raise SystemExit(f"`mlsidecar {' '.join(args)}` failed ({result.returncode}):\n"
                         + (log_dir / f"{name}.log").read_text(errors="replace")[-3000:])


def _wait_http(url: str, processes: Processes, name: str, timeout: float = 120) -> None:
    wait_http(url, processes, name, timeout)


# --- /proc -----------------------------------------------------------------------------------------------------
def _children(pid: int) -> list[int]:
    found = []
    for entry in Path("/proc").iterdir():
        if not entry.name.isdigit():
            continue
        try:
            stat = (entry / "stat").read_text()
        except OSError:
            continue
        if int(stat.rsplit(")", 1)[1].split()[1]) == pid:
            found.append(int(entry.name))
    return sorted(found)


def _rss_mb(pid: int) -> float:
    try:
        for line in Path(f"/proc/{pid}/status").read_text().splitlines():
            if line.startswith("VmRSS:"):
                return int(line.split()[1]) / 1024
    except OSError:
        pass
    return 0.0


@dataclass
class Sample:
    minute: int
    seconds: float
    requests: int
    errors: int
    master: float
    web_workers: list[float]
    worker: float
    backlog: int | None

    @property
    def serve_total(self) -> float:
        return self.master + sum(self.web_workers)


def _sample_rss(serve_pid: int, worker_pid: int) -> tuple[float, list[float], float]:
    # The worker may run its jobs in threads only; count its children too, should it ever fork.
    worker = _rss_mb(worker_pid) + sum(_rss_mb(c) for c in _children(worker_pid))
    return _rss_mb(serve_pid), [_rss_mb(c) for c in _children(serve_pid)], worker


# --- configuration -----------------------------------------------------------------------------------------------
# --- traffic ---------------------------------------------------------------------------------------------------
class Session:
    """The admin's session cookie, logged in through the real form (CSRF token included)."""

    def __init__(self, base: str) -> None:
        self.base = base
        self.lock = threading.Lock()
        self.cookie = ""
        self.logins = 0
        self.login()

    def login(self) -> None:
        with self.lock:
            http_session = requests.Session()
            form = http_session.get(self.base + "/login", timeout=30)
            token = re.search(r'name="csrf_token" value="([^"]+)"', form.text)
            if token is None:
                raise SystemExit("the login page has no CSRF token")
            answer = http_session.post(self.base + "/login", timeout=30, allow_redirects=False, data={
                "login": DEMO_ADMIN_LOGIN, "password": DEMO_ADMIN_PASSWORD, "csrf_token": token.group(1)})
            if answer.status_code != 302 or "/login" in answer.headers.get("Location", ""):
                raise SystemExit(f"admin login failed: {answer.status_code}")
            self.cookie = "; ".join(f"{c.name}={c.value}" for c in http_session.cookies)
            self.logins += 1


class Traffic:
    """Builds each request from the mix; remembers what may be repeated."""

    def __init__(self, rng: random.Random, run_id: str, products: list[tuple[int, int, str]], levels: list[int],
                 api_key: str, api_token: str, hmac_secret: str, session: Session) -> None:
        self.rng, self.run_id, self.products, self.levels = rng, run_id, products, levels
        self.api_key, self.api_token, self.hmac_secret, self.session = api_key, api_token, hmac_secret, session
        self.lock = threading.Lock()
        self.grant_bodies: list[bytes] = []
        self.legacy_bodies: list[bytes] = []
        self.stamps: dict[bytes, set[int]] = {}
        self.cursors: list[str] = []
        self.counter = 0
        self.external_ids: set[str] = set()
        self.lead_ids: set[int] = set()
        self.labels = [label for label, _, _ in MIX]
        self.weights = [weight for _, weight, _ in MIX]
        self.makers = {label: getattr(self, maker) for label, _, maker in MIX}

    def next(self) -> tuple[str, str, str, bytes | None, dict[str, str]]:
        with self.lock:
            label = self.rng.choices(self.labels, self.weights)[0]
            self.counter += 1
            n = self.counter
            return (label, *self.makers[label](n))

    def api_grant(self, n: int):
        headers = {"Content-Type": "application/json", "X-API-Key": self.api_key}
        if self.grant_bodies and self.rng.random() < REPEAT_SHARE:
            return "POST", "/api/v1/grants", self.rng.choice(self.grant_bodies), headers
        term_id, duration, units = self.rng.choice(self.products)
        external_id = f"soak-{self.run_id}-{n}"
        body = json.dumps({"user": {"email": f"soak.{self.run_id}.{n}@example.org", "first_name": "Soak",
                                    "last_name": f"N{n}"},
                           "grant": {"term_id": term_id, "duration": duration, "units": units},
                           "external_id": external_id, "source": "soak"}).encode()
        self.grant_bodies.append(body)
        self.external_ids.add(external_id)
        return "POST", "/api/v1/grants", body, headers

    def legacy_grant(self, n: int):
        if self.legacy_bodies and self.rng.random() < REPEAT_SHARE:
            body = self.rng.choice(self.legacy_bodies)  # the CRM re-sends a deal: a new signature, same lead
        else:
            term_id, duration, units = self.rng.choice(self.products)
            lead = int(self.run_id, 16) % 10_000_000 * 1000 + n
            body = json.dumps({"email": f"legacy.{self.run_id}.{n}@example.org",
                               "key": {"term_id": term_id, "duration": duration, "units": units},
                               "meta": {"amo_lead_id": lead}}).encode()
            self.legacy_bodies.append(body)
            self.lead_ids.add(lead)
        # A signature is accepted once: a re-send in the same second gets an earlier (still valid) timestamp.
        used = self.stamps.setdefault(body, set())
        now = int(time.time())
        stamp = str(next(t for t in range(now, now - 250, -1) if t not in used))
        used.add(int(stamp))
        signature = hmac.new(self.hmac_secret.encode(), stamp.encode() + b"." + body, hashlib.sha256).hexdigest()
        return "POST", "/wp-json/mlgb/v1/grant", body, {
            "Content-Type": "application/json", "X-MLGB-Timestamp": stamp, "X-MLGB-Signature": signature}

    def _filters(self) -> dict[str, str]:
        query: dict[str, str] = {}
        if self.rng.random() < 0.6:
            query["level"] = str(self.rng.choice(self.levels))
        sort = self.rng.choice(SORTS)
        if sort != "expired_on":
            query["sort"] = sort
        if self.rng.random() < 0.3:
            query["desc"] = "1"
        return query

    def sleepers_api(self, n: int):
        headers = {"Authorization": f"Bearer {self.api_token}"}
        if self.cursors and self.rng.random() < 1 / 3:
            return "GET", self.cursors.pop(self.rng.randrange(len(self.cursors))), None, headers
        return "GET", "/api/v1/sleepers?" + urlencode(self._filters()), None, headers

    def sleepers_page(self, n: int):
        query = self._filters()
        if self.rng.random() < 0.2:
            query["search"] = self.rng.choice(["a", "ov", "example", "ан"])
        return "GET", "/monitor/sleepers?" + urlencode(query), None, {"Cookie": self.session.cookie}

    def sleepers_csv(self, n: int):
        query = {"level": str(self.rng.choice(self.levels))} if self.rng.random() < 0.7 else {}
        if self.rng.random() < 0.3:
            query["excel"] = "1"
        return "GET", "/monitor/sleepers.csv?" + urlencode(query), None, {"Cookie": self.session.cookie}

    def healthz(self, n: int):
        return "GET", "/healthz", None, {}

    def readyz(self, n: int):
        return "GET", "/readyz", None, {}

    def remember_cursor(self, body: bytes) -> None:
        try:
            next_url = json.loads(body).get("next_url")
        except (ValueError, AttributeError):
            return
        if next_url:
            with self.lock:
                self.cursors.append(next_url)
                del self.cursors[:-200]


@dataclass
class Stats:
    latencies: dict[str, list[float]] = field(default_factory=lambda: defaultdict(list))
    statuses: dict[str, Counter] = field(default_factory=lambda: defaultdict(Counter))
    errors: Counter = field(default_factory=Counter)
    error_examples: list[str] = field(default_factory=list)
    minute_requests: Counter = field(default_factory=Counter)
    minute_errors: Counter = field(default_factory=Counter)
    sent: int = 0
    replayed: int = 0
    max_lag: float = 0.0
    bytes: int = 0


class Connection:
    def __init__(self, port: int) -> None:
        self.port = port
        self.conn = http.client.HTTPConnection(HOST, port, timeout=120)

    def send(self, method: str, path: str, body: bytes | None, headers: dict[str, str]):
        try:
            self.conn.request(method, path, body=body, headers=headers)
            response = self.conn.getresponse()
            data = response.read()
        except (OSError, http.client.HTTPException) as exc:
            self.conn.close()
            self.conn = http.client.HTTPConnection(HOST, self.port, timeout=120)
            return None, type(exc).__name__
        if response.will_close:
            self.conn.close()
            self.conn = http.client.HTTPConnection(HOST, self.port, timeout=120)
        return response, data


def drive(port: int, traffic: Traffic, stats: Stats, args, started: float, stop: threading.Event) -> None:
    """Open loop: request i is due at started + i / rate; --connections threads send them."""
    import queue

    due: queue.Queue = queue.Queue(maxsize=10_000)
    lock = threading.Lock()
    end = started + args.minutes * 60

    def sender() -> None:
        connection = Connection(port)
        while True:
            item = due.get()
            if item is None:
                return
            when, (label, method, path, body, headers) = item
            began = time.perf_counter()
            lag = began - when
            response, data = connection.send(method, path, body, headers)
            elapsed = time.perf_counter() - began
            minute = int((time.perf_counter() - started) // 60)
            if response is not None and response.status == 302 and "/login" in (response.getheader("Location") or ""):
                traffic.session.login()  # the admin session ended: log in again, and count it as an error
            ok = response is not None and response.status in EXPECTED.get(label, {200})
            with lock:
                stats.minute_requests[minute] += 1
                stats.max_lag = max(stats.max_lag, lag)
                if response is None:
                    stats.errors[f"{label}: {data}"] += 1
                else:
                    stats.latencies[label].append(elapsed)
                    stats.statuses[label][response.status] += 1
                    stats.replayed += response.getheader("Idempotent-Replayed") == "true"
                    stats.bytes += len(data)
                    if not ok:
                        stats.errors[f"{label}: HTTP {response.status}"] += 1
                        if len(stats.error_examples) < 10:
                            stats.error_examples.append(f"{label} {path[:80]} -> {response.status}: "
                                                        f"{data[:200].decode(errors='replace')}")
                if not ok:
                    stats.minute_errors[minute] += 1
            if ok and label == "GET /api/v1/sleepers":
                traffic.remember_cursor(data)

    threads = [threading.Thread(target=sender, daemon=True, name=f"conn-{n}") for n in range(args.connections)]
    for thread in threads:
        thread.start()
    index = 0
    while not stop.is_set() and index < args.max_requests:
        when = started + index / args.rate
        if when >= end:
            break
        pause = when - time.perf_counter()
        if pause > 0:
            if stop.wait(pause):
                break
        due.put((when, traffic.next()))
        index += 1
    stats.sent = index
    for _ in threads:
        due.put(None)
    for thread in threads:
        thread.join()


# --- store and site checks ----------------------------------------------------------------------------------------
def grant_statuses(store_engine: sa.Engine, run_id: str) -> Counter:
    with store_engine.connect() as conn:
        rows = conn.execute(sa.select(Grant.status, sa.func.count()).where(sa.or_(
            Grant.external_id.like(f"soak-{run_id}-%"), Grant.email.like(f"legacy.{run_id}.%")))
            .group_by(Grant.status)).all()
    return Counter(dict(rows))


def backlog(store_engine: sa.Engine) -> int | None:
    try:
        with store_engine.connect() as conn:
            return conn.scalar(sa.select(sa.func.count()).select_from(Grant)
                               .where(Grant.status.not_in(list(FINAL_STATES))))
    except sa.exc.SQLAlchemyError:
        return None


def keys_per_grant(site_url: str, store_engine: sa.Engine, run_id: str) -> Counter:
    """How many site keys carry each of this run's grant ids in keys_meta.utm_id."""
    with store_engine.connect() as conn:
        ids = [row[0] for row in conn.execute(sa.select(Grant.id).where(sa.or_(
            Grant.external_id.like(f"soak-{run_id}-%"), Grant.email.like(f"legacy.{run_id}.%"))))]
    return site_keys_per_grant(site_url, ids)


# --- the run -------------------------------------------------------------------------------------------------------
def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--minutes", type=float, default=30, help="length of the traffic phase (default 30)")
    parser.add_argument("--max-requests", type=int, default=200_000, help="stop after this many requests (default 200000)")
    parser.add_argument("--rate", type=float, default=20.0, help="offered requests per second (default 20)")
    parser.add_argument("--connections", type=int, default=8, help="client keep-alive connections (default 8)")
    parser.add_argument("--workers", type=int, default=2, help="gunicorn worker processes (default 2)")
    parser.add_argument("--users", type=int, default=2000, help="learners of the demo site (default 2000)")
    parser.add_argument("--levels", type=int, default=8, help="levels of the demo site (default 8)")
    parser.add_argument("--latency", type=float, default=0.2, help="seconds the emulator takes per order (default 0.2)")
    parser.add_argument("--drain-seconds", type=float, default=180, help="wait for the outbox after traffic (default 180)")
    parser.add_argument("--store-url", default=None, help="store database instead of a SQLite file (one you can spare)")
    parser.add_argument("--seed", type=int, default=42)
    parser.add_argument("--keep", action="store_true", help="keep the temporary directory (logs, databases)")
    args = parser.parse_args()
    if args.rate <= 0 or args.connections < 1 or args.minutes <= 0:
        parser.error("--rate, --connections and --minutes must be positive")

    def interrupted(signum, _frame):
        raise KeyboardInterrupt(f"signal {signum}")

    signal.signal(signal.SIGTERM, interrupted)
    signal.signal(signal.SIGINT, signal.default_int_handler)
    work = Path(tempfile.mkdtemp(prefix="mls-soak-"))
    processes = Processes(work)
    failed = False
    try:
        failed = run(args, work, processes)
    except KeyboardInterrupt:
        print("\ninterrupted; stopping processes and removing the temporary directory", file=sys.stderr)
        failed = True
    finally:
        processes.stop_all(newest_first=True, signals={"worker": signal.SIGINT})
        if args.keep:
            print(f"kept {work}", file=sys.stderr)
        else:
            shutil.rmtree(work, ignore_errors=True)
    sys.exit(1 if failed else 0)


def run(args, work: Path, processes: Processes) -> bool:  # one linear script
    rng = random.Random(args.seed)
    run_id = uuid.uuid4().hex[:8]
    cli = _cli()
    log = lambda text: print(text, file=sys.stderr, flush=True)  # noqa: E731

    # Site and emulator ------------------------------------------------------------------------------------------
    site_file = work / "wordpress.sqlite"
    site_url = f"sqlite:///{site_file}"
    log(f"building the demo site ({args.users} learners, {args.levels} levels)…")
    build_demo_site(site_url, users=args.users, levels=args.levels, seed=args.seed, today=date.today(), fresh=True)
    engine = sa.create_engine(site_url)
    with engine.connect() as conn:
        conn.exec_driver_sql("PRAGMA journal_mode=WAL")  # the emulator writes while the sidecar reads
    engine.dispose()
    app_password = secrets.token_urlsafe(18)
    emulator_port = _free_port()
    emulator_url = f"http://{HOST}:{emulator_port}"
    processes.start("emulator", [*cli, "devstack", "serve", "--db-url", site_url, "--host", HOST,
                                 "--port", str(emulator_port), "--app-user", DEMO_API_LOGIN,
                                 "--latency", str(args.latency)],
                    env={"MLS_DEVSTACK_APP_PASSWORD": app_password})
    _wait_http(emulator_url + "/devstack/health", processes, "emulator")

    # Store, configuration, read model ----------------------------------------------------------------------------
    if args.store_url:
        store, store_password = _split_password(args.store_url)
    else:
        store, store_password = f"sqlite:///{work / 'store.sqlite'}", None
    port = _free_port()
    api_key, api_token = "soak-" + secrets.token_urlsafe(32), secrets.token_urlsafe(32)
    hmac_secret = secrets.token_hex(24)
    config = write_config(work / "mlsidecar.toml", {
        "wordpress": {"db_url": site_url, "table_prefix": "wp_"},
        "memberlux": {"rest_base_url": emulator_url + "/wp-json", "rest_user": DEMO_API_LOGIN,
                      "rest_password": app_password, "timeout_seconds": 60},
        "store": {"url": store, **({"password": store_password} if store_password else {})},
        "smtp": {"pickup_dir": str(work / "mail"), "from_address": "school@soak.example"},
        "bridge": {"api_keys": {"soak": api_key}, "hmac_secret": hmac_secret, "retry_base_seconds": 5},
        "schedule": {"outbox_poll_seconds": 1},
        "web": {"host": HOST, "port": port, "workers": args.workers, "public_url": f"http://{HOST}:{port}",
                "secret_key": secrets.token_hex(32), "api_tokens": {"soak": api_token}},
        "log": {"format": "text", "level": "INFO"},
    })
    base = [*("--config", str(config))]
    _run_cli([*base, "db", "upgrade"], work, "db-upgrade")
    settings = load_settings(config, environ={})
    runtime = build_runtime(settings)
    try:
        products = sorted({(p.level_id, p.duration, p.units) for p in BridgeService(runtime).catalog.products()
                           if p.status == "publish" and p.level_id and not p.unlimited})
        levels = sorted(level.term_id for level in runtime.reader.levels())
    finally:
        runtime.close()
    if not products:
        raise SystemExit("the demo site has no published mbl_key product")
    log("building the sleepers read model (`mlsidecar sleepers refresh`)…")
    _run_cli([*base, "sleepers", "refresh"], work, "sleepers-refresh")

    # Production processes -------------------------------------------------------------------------------------------
    serve = processes.start("serve", [*cli, *base, "serve"])
    _wait_http(f"http://{HOST}:{port}/healthz", processes, "serve")
    worker = processes.start("worker", [*cli, *base, "worker"])
    time.sleep(2)
    if worker.poll() is not None:
        raise SystemExit(f"worker exited with {worker.returncode}:\n{processes.tail('worker')}")
    store_engine = sa.create_engine(sa.make_url(store).set(password=store_password) if store_password else store)

    session = Session(f"http://{HOST}:{port}")
    traffic = Traffic(rng, run_id, products, levels, api_key, api_token, hmac_secret, session)
    stats = Stats()
    samples: list[Sample] = []
    stop = threading.Event()
    started = time.perf_counter()

    def monitor() -> None:
        minute = 0
        while True:
            boundary = started + (minute + 1) * 60
            finished = stop.wait(max(0.0, boundary - time.perf_counter()))
            now = time.perf_counter()
            master, web, worker_rss = _sample_rss(serve.pid, worker.pid)
            sample = Sample(minute + 1, now - started - minute * 60, stats.minute_requests[minute],
                            stats.minute_errors[minute], master, web, worker_rss, backlog(store_engine))
            if sample.seconds >= 1:
                samples.append(sample)
                log(f"  min {sample.minute:>3}{'' if sample.seconds >= 59.5 else f' ({sample.seconds:.0f} s)'}: "
                    f"{sample.requests:>5} req ({sample.requests / sample.seconds:5.1f}/s), errors {sample.errors}, "
                    f"RSS serve {sample.serve_total:6.1f} MB (master {master:.1f} + workers "
                    f"{' + '.join(f'{w:.1f}' for w in web)}), worker {worker_rss:.1f} MB, outbox backlog "
                    f"{'?' if sample.backlog is None else sample.backlog}")
            if finished:
                return
            minute += 1

    log(f"traffic: {args.rate:g} req/s for up to {args.minutes:g} min or {args.max_requests} requests, "
        f"{args.connections} connections (per-minute figures below)")
    watcher = threading.Thread(target=monitor, daemon=True)
    watcher.start()
    try:
        drive(port, traffic, stats, args, started, stop)
    finally:
        stop.set()
        watcher.join()
    wall = time.perf_counter() - started

    # Drain the outbox, then check the grants --------------------------------------------------------------------------
    expected = len(traffic.external_ids) + len(traffic.lead_ids)
    deadline = time.monotonic() + args.drain_seconds
    drained_in = None
    drain_start = time.monotonic()
    while time.monotonic() < deadline:
        statuses = grant_statuses(store_engine, run_id)
        if sum(statuses.values()) >= expected and all(s in FINAL_STATES for s in statuses):
            drained_in = time.monotonic() - drain_start
            break
        time.sleep(1)
    statuses = grant_statuses(store_engine, run_id)
    keys = keys_per_grant(site_url, store_engine, run_id)
    store_engine.dispose()
    duplicated = sum(1 for n in keys.values() if n > 1)
    not_on_site = sum(1 for n in keys.values() if n == 0)

    # Summary ---------------------------------------------------------------------------------------------------------
    total = sum(len(v) for v in stats.latencies.values()) + sum(n for k, n in stats.errors.items() if "HTTP" not in k)
    errors = sum(stats.errors.values())
    store_kind = sa.make_url(store).get_backend_name()
    print()
    print("soak run")
    print(f"  machine          {os.cpu_count()} CPU cores; loopback; Python {sys.version.split()[0]}")
    print(f"  setup            site SQLite (WAL) {args.users} learners, {args.levels} levels, emulator latency "
          f"{args.latency:g} s/order; store {store_kind}; `mlsidecar serve` gunicorn gthread {args.workers} x 4 "
          f"threads; `mlsidecar worker`")
    print(f"  traffic          {wall / 60:.1f} min, offered {args.rate:g} req/s over {args.connections} connections; "
          f"sent {stats.sent} (achieved {total / wall:.1f} req/s); max send lag {stats.max_lag * 1000:.0f} ms; "
          f"{stats.bytes / 1e6:.1f} MB received; admin logins {session.logins}")
    print(f"  requests         {total} total, errors {errors}"
          + (f": {dict(stats.errors)}" if errors else ""))
    for example in stats.error_examples:
        print(f"    e.g.           {example}")
    print("  latency (ms)     endpoint                              n      p50      p95      p99      max  statuses")
    for label, _, _ in MIX:
        values = stats.latencies.get(label, [])
        if not values:
            continue
        print(f"                   {label:<32} {len(values):>6} {_percentile(values, .5) * 1000:8.1f} "
              f"{_percentile(values, .95) * 1000:8.1f} {_percentile(values, .99) * 1000:8.1f} "
              f"{max(values) * 1000:8.1f}  {dict(sorted(stats.statuses[label].items()))}")
    if samples:
        first, last = samples[0], samples[-1]
        print(f"  RSS (MB)         serve total {first.serve_total:.1f} -> {last.serve_total:.1f} "
              f"({last.serve_total - first.serve_total:+.1f}) from minute {first.minute} to minute {last.minute}; "
              f"master {first.master:.1f} -> {last.master:.1f}; web workers "
              f"{' + '.join(f'{w:.1f}' for w in first.web_workers)} -> {' + '.join(f'{w:.1f}' for w in last.web_workers)}; "
              f"worker {first.worker:.1f} -> {last.worker:.1f} ({last.worker - first.worker:+.1f})")
        peak = max(samples, key=lambda s: s.serve_total)
        print(f"                   peak serve total {peak.serve_total:.1f} in minute {peak.minute}")
    print(f"  grants           {expected} distinct sent ({len(traffic.external_ids)} API, {len(traffic.lead_ids)} legacy), "
          f"{stats.replayed} answered as idempotent replays; store: {dict(statuses)}; "
          + (f"all final {drained_in:.0f} s after traffic" if drained_in is not None
             else f"NOT all final after {args.drain_seconds:.0f} s"))
    print(f"    on the site    duplicated {duplicated} (grant ids with more than one key), not on site {not_on_site}, "
          f"succeeded {statuses.get(SUCCEEDED, 0)}")
    for name in ("serve", "worker", "emulator"):
        process = processes.running.get(name)
        if process is not None and process.poll() is not None:
            print(f"  ! {name} exited early with {process.returncode}")
    return bool(errors or duplicated or drained_in is None)


if __name__ == "__main__":
    main()
