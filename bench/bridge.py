"""Grant bridge figures: intake throughput of `mlsidecar serve`, delivery throughput of `mlsidecar worker`.

    .venv/bin/python bench/bridge.py [--requests 5000] [--concurrency 32] [--workers 2] [--wrk-seconds 10]
                                     [--delivery-concurrency 8] [--latency 1.5] [--grants 400]
                                     [--store-url sqlite --store-url mysql+pymysql://root@127.0.0.1:3306/mls_bench]
                                     [--site-url mysql+pymysql://root@127.0.0.1:3306/mls_bench_site]

Everything runs on loopback, in a temporary directory removed at the end (also on Ctrl-C):

1. A demo site (``--users`` learners; a new SQLite file, or with ``--site-url`` an existing, disposable
   MariaDB/MySQL database, as real sites run on) served by ``mlsidecar devstack serve``. Then, for each
   ``--store-url`` in turn (``sqlite``, the default, is a new SQLite file in WAL mode; a URL is an existing,
   disposable database): the store migrated to head, a TOML configuration, ``mlsidecar serve`` under
   gunicorn with ``--workers`` processes, and phases 2-4 below against it.
2. Intake, closed loop: ``--requests`` brief-style JSON posts with an API key from ``--concurrency``
   keep-alive connections (one thread and one ``http.client`` connection each; each sends its next
   request as soon as it has read the previous answer), 10 % of them repeating an earlier
   ``external_id`` with the same payload. No worker runs, so this measures the sidecar's intake alone.
   A GET /healthz run with the same client first shows the ceiling of client + gunicorn on this machine.
   The same two closed loops again from ``wrk`` (a C client, ``apt-get install wrk``; skipped with a note
   when it is missing) for ``--wrk-seconds`` each: the Python client costs CPU on the same cores as the
   server, wrk next to none. Then the intake once more from wrk with a new connection per request
   (``Connection: close``, as most webhook senders connect): a keep-alive connection stays with the
   gunicorn worker that accepted it, so a few busy connections can load one worker while the other
   idles (the share of the busiest worker's CPU is printed for each run). For a MariaDB store on this
   machine the server's CPU per request is printed too (it is the whole server's: run it with nothing
   else using that server).
   Intake, open loop: ``--paced-requests`` more posts due at ``--rate`` per second whatever the server
   does; each latency counts from the request's due time (a server that falls behind shows it).
3. Delivery: the first ``--grants`` accepted grants stay queued (the others are cancelled in the store,
   so the phase is bounded); ``mlsidecar worker`` with ``bridge.concurrency = --delivery-concurrency``
   delivers them to the emulator, which takes ``--latency`` seconds per order. Lost grants (accepted but
   not succeeded) and duplicated grants (more than one site key carrying the grant id in
   ``keys_meta.utm_id``) are counted; both must be 0.
4. Overhead: ``--overhead-grants`` grants delivered by a worker with concurrency 1 against the emulator
   at latency 0, against the same number of orders sent straight to the emulator with
   ``MemberLuxRestClient``; the difference per grant is what the sidecar adds around one order.

Prints one summary block per store, then one line ``BENCH_JSON {...}`` with every figure of every store
(and what each figure includes, under ``"includes"``) for comparisons across commits; asserts nothing.
The machine is whatever else runs on it: the load average before and after is part of the line.
"""

from __future__ import annotations

import argparse
import http.client
import json
import os
import random
import secrets
import shutil
import signal
import statistics
import sys
import tempfile
import threading
import time
import uuid
from collections import Counter
from datetime import date
from pathlib import Path

import requests
import sqlalchemy as sa

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from sidecar.bootstrap import build_runtime, store_url
from sidecar.bridge.service import BridgeService
from sidecar.config import load_settings
from sidecar.devstack.seed import DEMO_API_LOGIN
from sidecar.devstack.site import build_demo_site
from sidecar.memberlux.rest import Customer, MemberLuxRestClient
from sidecar.store import db as store_db
from sidecar.store.grant_models import CANCELLED, FINAL_STATES, QUEUED, SUCCEEDED, Grant, GrantAttempt

from _common import HOST, Processes, site_keys_per_grant, wait_http, write_config  # (bench/ is on sys.path: run as a script)
from _common import cli as _cli
from _common import free_port as _free_port
from _common import percentile as _percentile
from _common import split_password as _split_password
import _wrk

DUPLICATE_SHARE = 0.10
WARMUP_REQUESTS = 64


# --- processes -------------------------------------------------------------------------------------


def _wait_http(url: str, processes: Processes, name: str, timeout: float = 90) -> None:
    wait_http(url, processes, name, timeout)


def _cpu_by_process(root_pid: int) -> dict[int, float]:
    """User + system CPU seconds of a process and each of its descendants (gunicorn master and workers),
    from /proc."""
    ticks = os.sysconf("SC_CLK_TCK")
    found: dict[int, float] = {}
    pending = [root_pid]
    while pending:
        pid = pending.pop()
        if pid in found:
            continue
        try:
            fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
            found[pid] = (int(fields[11]) + int(fields[12])) / ticks
            for task in Path(f"/proc/{pid}/task").iterdir():
                children = (task / "children").read_text().split()
                pending.extend(int(c) for c in children)
        except (OSError, ValueError, IndexError):
            continue
    return found


def _cpu_seconds(root_pid: int) -> float:
    """User + system CPU of a process and its children (gunicorn master and workers), from /proc."""
    return sum(_cpu_by_process(root_pid).values())


def _busiest_share(before: dict[int, float], after: dict[int, float], root_pid: int) -> float:
    """The share of the gunicorn workers' CPU (master left out) spent by the busiest worker between two
    readings: 1/workers when the load was spread evenly, 1.0 when one worker took it all."""
    used = [after[pid] - before.get(pid, 0.0) for pid in after if pid != root_pid]
    return max(used) / sum(used) if used and sum(used) > 0 else float("nan")


# --- setup -------------------------------------------------------------------------------------------
# --- load generation -------------------------------------------------------------------------------------
class LoadResult:
    def __init__(self) -> None:
        self.latencies: list[float] = []
        self.statuses: Counter = Counter()
        self.replayed = 0
        self.errors: Counter = Counter()
        self.wall = 0.0
        self.client_cpu = 0.0
        self.server_cpu = 0.0


class _Connection:
    """One keep-alive client connection that reconnects after a transport error or a server close."""

    def __init__(self, port: int) -> None:
        self.port = port
        self.conn = http.client.HTTPConnection(HOST, port, timeout=120)

    def send(self, method: str, path: str, body: bytes | None, headers: dict[str, str],
             errors: Counter) -> http.client.HTTPResponse | None:
        try:
            self.conn.request(method, path, body=body, headers=headers)
            response = self.conn.getresponse()
            response.read()
        except (OSError, http.client.HTTPException) as exc:
            errors[type(exc).__name__] += 1
            self._reopen()
            return None
        if response.will_close:
            self._reopen()
        return response

    def _reopen(self) -> None:
        self.conn.close()
        self.conn = http.client.HTTPConnection(HOST, self.port, timeout=120)

    def close(self) -> None:
        self.conn.close()


def run_load(port: int, requests_: list[tuple[str, str, bytes | None, dict[str, str]]], concurrency: int,
             server_pid: int | None) -> LoadResult:
    """Send every request once over ``concurrency`` keep-alive connections; time each one."""
    result = LoadResult()
    lock = threading.Lock()
    position = iter(range(len(requests_)))

    def worker() -> None:
        latencies, statuses, errors, replayed = [], Counter(), Counter(), 0
        connection = _Connection(port)
        while True:
            with lock:
                index = next(position, None)
            if index is None:
                break
            started = time.perf_counter()
            response = connection.send(*requests_[index], errors)
            if response is None:
                continue
            latencies.append(time.perf_counter() - started)
            statuses[response.status] += 1
            replayed += response.getheader("Idempotent-Replayed") == "true"
        connection.close()
        with lock:
            result.latencies.extend(latencies)
            result.statuses.update(statuses)
            result.errors.update(errors)
            result.replayed += replayed

    threads = [threading.Thread(target=worker, name=f"load-{n}", daemon=True) for n in range(concurrency)]
    cpu_before = time.process_time()
    server_before = _cpu_seconds(server_pid) if server_pid else 0.0
    started = time.perf_counter()
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    result.wall = time.perf_counter() - started
    result.client_cpu = time.process_time() - cpu_before
    result.server_cpu = (_cpu_seconds(server_pid) - server_before) if server_pid else 0.0
    return result


def run_paced(port: int, requests_: list[tuple[str, str, bytes | None, dict[str, str]]], rate: float,
              connections: int) -> LoadResult:
    """Open-loop load: request i is due at start + i/rate whatever the server does; latency counts from
    the due time, so a server that falls behind shows it (no coordinated omission)."""
    import queue

    result = LoadResult()
    lock = threading.Lock()
    due: queue.Queue = queue.Queue()

    def worker() -> None:
        latencies, statuses, errors = [], Counter(), Counter()
        connection = _Connection(port)
        while True:
            item = due.get()
            if item is None:
                break
            scheduled, request = item
            response = connection.send(*request, errors)
            if response is None:
                continue
            latencies.append(time.perf_counter() - scheduled)
            statuses[response.status] += 1
        connection.close()
        with lock:
            result.latencies.extend(latencies)
            result.statuses.update(statuses)
            result.errors.update(errors)

    threads = [threading.Thread(target=worker, daemon=True) for _ in range(connections)]
    for thread in threads:
        thread.start()
    started = time.perf_counter()
    for index, request in enumerate(requests_):
        when = started + index / rate
        pause = when - time.perf_counter()
        if pause > 0:
            time.sleep(pause)
        due.put((when, request))
    for _ in threads:
        due.put(None)
    for thread in threads:
        thread.join()
    result.wall = time.perf_counter() - started
    return result


def grant_requests(count: int, run_id: str, products: list[tuple[int, int, str]], api_key: str,
                   rng: random.Random, duplicate_share: float = DUPLICATE_SHARE
                   ) -> list[tuple[str, str, bytes, dict[str, str]]]:
    """Brief-style posts; a share repeats an earlier request exactly (a CRM resending a deal)."""
    made: list[tuple[str, str, bytes, dict[str, str]]] = []
    headers = {"Content-Type": "application/json", "X-API-Key": api_key}
    for n in range(count):
        if made and rng.random() < duplicate_share:
            made.append(made[rng.randrange(len(made))])
            continue
        term_id, duration, units = products[n % len(products)]
        body = {"user": {"email": f"bench.{run_id}.{n}@example.org", "first_name": "Bench", "last_name": f"N{n}"},
                "grant": {"term_id": term_id, "duration": duration, "units": units},
                "external_id": f"bench-{run_id}-{n}", "source": "bench"}
        made.append(("POST", "/api/v1/grants", json.dumps(body).encode(), headers))
    return made


def local_database_pid(store: str) -> int | None:
    """The pid of the MariaDB server of a store on this machine (its CPU is part of each request's cost),
    or None for SQLite, a remote server, or a server this user cannot see."""
    url = sa.make_url(store)
    if url.get_backend_name() != "mysql" or (url.host or "localhost") not in ("127.0.0.1", "localhost", "::1"):
        return None
    for name in ("mariadbd", "mysqld"):
        for entry in Path("/proc").iterdir():
            try:
                if entry.name.isdigit() and (entry / "comm").read_text().strip() == name:
                    return int(entry.name)
            except OSError:
                continue
    return None


def wrk_phase(args, port: int, server_pid: int, database_pid: int | None, products: list[tuple[int, int, str]],
              api_key: str, run_id: str) -> dict | None:
    """GET /healthz, then intake, closed loop with wrk: the same connections as the Python client, a
    client that costs next to no CPU. Returns both runs' figures (None when wrk is not installed)."""
    if not _wrk.available():
        print("  (wrk is not installed: the closed loop with wrk is skipped; apt-get install wrk)", flush=True)
        return None
    url = f"http://{HOST}:{port}"
    runs = {}
    for name, target, grants, new_connections in (
            ("baseline", "/healthz", None, False),
            ("intake", "/api/v1/grants", {"products": products, "run_id": run_id + "k", "api_key": api_key,
                                          "duplicate_share": DUPLICATE_SHARE}, False),
            ("intake_new_conn", "/api/v1/grants", {"products": products, "run_id": run_id + "n", "api_key": api_key,
                                                   "duplicate_share": DUPLICATE_SHARE}, True)):
        cpu_before, database_before = _cpu_by_process(server_pid), _cpu_seconds(database_pid) if database_pid else 0.0
        figures = _wrk.run(url + target, seconds=args.wrk_seconds, connections=args.concurrency, grants=grants,
                           new_connections=new_connections)
        cpu_after = _cpu_by_process(server_pid)
        figures["server_cpu_ms_per_request"] = round((sum(cpu_after.values()) - sum(cpu_before.values())) /
                                                     max(1, figures["requests"]) * 1000, 3)
        figures["busiest_worker_cpu_share"] = round(_busiest_share(cpu_before, cpu_after, server_pid), 2)
        if database_pid:
            figures["database_cpu_ms_per_request"] = round((_cpu_seconds(database_pid) - database_before) /
                                                           max(1, figures["requests"]) * 1000, 3)
        runs[name] = figures
    return runs


# --- store queries --------------------------------------------------------------------------------------
def grants_of_run(runtime, run_id: str) -> list[Grant]:
    with runtime.sessions() as session:
        return list(session.scalars(sa.select(Grant).where(Grant.external_id.like(f"bench-{run_id}-%"))
                                    .order_by(Grant.created_at, Grant.id)))


def set_aside(runtime, keep: list[str]) -> int:
    """Cancel every queued bench grant outside the delivery phase (warm-up, the rest of the intake,
    leftovers of an interrupted earlier run on a kept store), so the worker delivers exactly ``keep``."""
    now = runtime.clock.now()
    with runtime.sessions() as session:
        changed = session.execute(
            sa.update(Grant).where(Grant.external_id.like("bench-%"), Grant.status == QUEUED,
                                   Grant.id.not_in(keep))
            .values(status=CANCELLED, completed_at=now, updated_at=now, last_error="set aside by bench/bridge.py")
        ).rowcount
        session.commit()
        return changed or 0


def _chunks(items: list[str], size: int = 500):
    for start in range(0, len(items), size):
        yield items[start:start + size]


def final_count(runtime, ids: list[str]) -> int:
    total = 0
    with runtime.sessions() as session:
        for chunk in _chunks(ids):
            total += session.scalar(sa.select(sa.func.count()).select_from(Grant)
                                    .where(Grant.id.in_(chunk), Grant.status.in_(FINAL_STATES))) or 0
    return total


def delivery_figures(runtime, ids: list[str]) -> dict:
    rows, order_ms = [], []
    with runtime.sessions() as session:
        for chunk in _chunks(ids):
            rows.extend(session.execute(sa.select(Grant.id, Grant.status, Grant.attempts)
                                        .where(Grant.id.in_(chunk))).all())
            order_ms.extend(session.scalars(sa.select(GrantAttempt.elapsed_ms).where(
                GrantAttempt.grant_id.in_(chunk), GrantAttempt.kind == "order", GrantAttempt.outcome == "ok")))
    succeeded = sum(1 for r in rows if r.status == SUCCEEDED)
    return {"statuses": Counter(r.status for r in rows), "succeeded": succeeded,
            "attempts": Counter(r.attempts for r in rows), "order_ms": [ms for ms in order_ms if ms is not None]}


class Progress:
    """How many grants were final when, seen from here: timed by this clock, so the figures do not
    depend on the store's timestamp precision (MariaDB DATETIME keeps whole seconds)."""

    def __init__(self, total: int) -> None:
        self.total = total
        self.samples: list[tuple[float, int]] = []

    @property
    def elapsed(self) -> float:
        return self.samples[-1][0] if self.samples else 0.0

    def rate(self) -> tuple[float, float]:
        """(grants per second, seconds) from the first final grant seen to the last one."""
        first = next(((t, n) for t, n in self.samples if n > 0), None)
        last = self.samples[-1] if self.samples else None
        if first is None or last is None or last[0] <= first[0]:
            return float("nan"), 0.0
        return (last[1] - first[1]) / (last[0] - first[0]), last[0] - first[0]


def wait_final(runtime, ids: list[str], timeout: float, processes: Processes, name: str,
               poll: float) -> Progress:
    progress = Progress(len(ids))
    started = time.monotonic()
    while time.monotonic() - started < timeout:
        done = final_count(runtime, ids)
        progress.samples.append((time.monotonic() - started, done))
        if done == len(ids):
            break
        process = processes.running.get(name)
        if process is not None and process.poll() is not None:
            print(f"  ! {name} exited with {process.returncode}:\n{processes.tail(name)}", file=sys.stderr)
            break
        time.sleep(poll)
    return progress


def set_latency(emulator_url: str, password: str, seconds: float) -> None:
    response = requests.post(emulator_url + "/devstack/faults", json={"latency_seconds": seconds},
                             auth=(DEMO_API_LOGIN, password), timeout=10)
    response.raise_for_status()


# --- the run ----------------------------------------------------------------------------------------------
def main() -> None:  # one linear script
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--requests", type=int, default=5000, help="intake requests (default 5000)")
    parser.add_argument("--concurrency", type=int, default=32, help="client connections during intake (default 32)")
    parser.add_argument("--rate", type=float, default=500.0,
                        help="offered load of the paced (open-loop) intake phase, req/s (default 500; 0 skips it)")
    parser.add_argument("--paced-requests", type=int, default=5000, help="requests of the paced phase (default 5000)")
    parser.add_argument("--workers", type=int, default=2, help="gunicorn worker processes (default 2)")
    parser.add_argument("--delivery-concurrency", type=int, default=8, help="bridge.concurrency of the worker (default 8)")
    parser.add_argument("--latency", type=float, default=1.5, help="seconds the emulator takes per order (default 1.5)")
    parser.add_argument("--grants", type=int, default=400, help="grants delivered in the delivery phase (default 400)")
    parser.add_argument("--overhead-grants", type=int, default=60, help="grants of the overhead phase (default 60)")
    parser.add_argument("--baseline-requests", type=int, default=2000, help="GET /healthz requests (default 2000)")
    parser.add_argument("--users", type=int, default=2000, help="learners of the demo site (default 2000)")
    parser.add_argument("--site-url", default=None,
                        help="the demo site's database: an existing MariaDB/MySQL database you can spare (every site "
                             "table in it is dropped and seeded again), as real MemberLux sites run on; default a new "
                             "SQLite file (WAL) in the temporary directory")
    parser.add_argument("--store-url", action="append", default=None,
                        help="a store to measure: 'sqlite' (a new SQLite file, the default) or the URL of an existing "
                             "database you can spare; repeat to measure several stores in one run")
    parser.add_argument("--wrk-seconds", type=float, default=10.0,
                        help="seconds of each closed-loop run with wrk (GET /healthz, then intake), the client that "
                             "costs next to no CPU (default 10; 0 skips; skipped with a note when wrk is not installed)")
    parser.add_argument("--seed", type=int, default=42)
    parser.add_argument("--keep", action="store_true", help="keep the temporary directory (logs, databases)")
    args = parser.parse_args()

    def interrupted(signum, _frame):
        raise KeyboardInterrupt(f"signal {signum}")

    signal.signal(signal.SIGTERM, interrupted)
    # Also when started with SIGINT ignored (a background job): the children inherit an ignored
    # SIGINT, and the workers are stopped gracefully with it.
    signal.signal(signal.SIGINT, signal.default_int_handler)
    work = Path(tempfile.mkdtemp(prefix="mls-bench-bridge-"))
    processes = Processes(work)
    try:
        run(args, work, processes)
    except KeyboardInterrupt:
        print("\ninterrupted; stopping processes and removing the temporary directory", file=sys.stderr)
    finally:
        processes.stop_all()
        if args.keep:
            print(f"kept {work}", file=sys.stderr)
        else:
            shutil.rmtree(work, ignore_errors=True)


def run(args, work: Path, processes: Processes) -> None:
    rng = random.Random(args.seed)
    cli = _cli()
    load_before = os.getloadavg()

    # Site and emulator ------------------------------------------------------------------------------------
    site_url = args.site_url or f"sqlite:///{work / 'wordpress.sqlite'}"
    started = time.perf_counter()
    build_demo_site(site_url, users=args.users, levels=8, seed=args.seed, today=date.today(), fresh=True)
    seeded_in = time.perf_counter() - started
    if not args.site_url:
        # The emulator writes while the sidecar reads: WAL lets readers go on during a write, as InnoDB does.
        engine = sa.create_engine(site_url)
        with engine.connect() as conn:
            conn.exec_driver_sql("PRAGMA journal_mode=WAL")
        engine.dispose()

    app_password = secrets.token_urlsafe(18)
    emulator_port = _free_port()
    emulator_url = f"http://{HOST}:{emulator_port}"
    processes.start("emulator", [*cli, "devstack", "serve", "--db-url", site_url, "--host", HOST,
                                 "--port", str(emulator_port), "--app-user", DEMO_API_LOGIN,
                                 "--latency", str(args.latency)],
                    env={"MLS_DEVSTACK_APP_PASSWORD": app_password})
    _wait_http(emulator_url + "/devstack/health", processes, "emulator")

    site = Site(site_url, emulator_url, app_password, seeded_in)
    results = [run_store(args, work, processes, site, store_arg, rng, cli) for store_arg in (args.store_url or ["sqlite"])]
    print("BENCH_JSON " + json.dumps({
        "bench": "bridge", "commit": _commit(), "cores": os.cpu_count(), "python": sys.version.split()[0],
        "load_average_before": [round(x, 2) for x in load_before],
        "load_average_after": [round(x, 2) for x in os.getloadavg()],
        "site": sa.make_url(site_url).get_backend_name(),
        "settings": {"concurrency": args.concurrency, "rate": args.rate, "workers": args.workers,
                     "requests": args.requests, "paced_requests": args.paced_requests,
                     "latency": args.latency, "delivery_concurrency": args.delivery_concurrency},
        "includes": INCLUDES, "stores": results}, sort_keys=False), flush=True)


class Site:
    def __init__(self, url: str, emulator_url: str, app_password: str, seeded_in: float) -> None:
        self.url, self.emulator_url, self.app_password, self.seeded_in = url, emulator_url, app_password, seeded_in


INCLUDES = {
    "baseline": "GET /healthz, closed loop, same client and connections as the intake: the ceiling of client + "
                "gunicorn on this machine",
    "closed_loop": "POST /api/v1/grants from --concurrency keep-alive connections, each sending its next request as "
                   "soon as it has read the previous answer; 10 % repeat an earlier external_id (answered from the "
                   "store as replays); rps = answers / wall time of the phase; latency = from sending the request "
                   "to having read the whole answer, on the client; no worker running",
    "closed_loop_wrk": "the same two closed loops (GET /healthz as baseline, then the intake with new deals and 10 % "
                       "repeats) from wrk, a C client with one thread and --concurrency keep-alive connections, for "
                       "--wrk-seconds each: what the server does when the client costs next to no CPU; then the intake "
                       "again with a new connection per request (intake_new_conn: Connection: close, as most webhook "
                       "senders connect); latency is wrk's (request written to answer read); rps = answers / duration; "
                       "busiest_worker_cpu_share = CPU of the busiest gunicorn worker / CPU of all workers (a keep-alive "
                       "connection stays with the worker that accepted it)",
    "open_loop": "POST /api/v1/grants due at --rate per second whatever the server does, sent over --concurrency "
                 "keep-alive connections; latency counts from each request's due time (queueing in the client "
                 "when all connections are busy included: no coordinated omission); achieved_rps = answers / wall time",
    "server_cpu_ms_per_request": "user + system CPU of the gunicorn master and workers during the phase / answers",
    "overhead": "per_grant_ms = wall time per delivered grant of a worker with bridge.concurrency 1 against the "
                "emulator at latency 0 (from the first grant seen final to the last, polled every 20 ms); "
                "direct_ms = mean time of the same number of orders sent straight with MemberLuxRestClient; "
                "added_ms = the difference; order_in_worker_ms = mean of the worker's own timing of each order call "
                "(from marking the grant delivering to the answer); outside_order_call_ms = per_grant_ms - "
                "order_in_worker_ms: claiming, site look-ups, read-back and bookkeeping around the call",
}


def _commit() -> str | None:
    try:
        import subprocess

        return subprocess.run(["git", "-C", str(ROOT), "rev-parse", "--short", "HEAD"], capture_output=True,
                              text=True, timeout=10).stdout.strip() or None
    except OSError:
        return None


def _latencies(values: list[float]) -> dict:
    return {"p50_ms": round(_percentile(values, .5) * 1000, 1), "p95_ms": round(_percentile(values, .95) * 1000, 1),
            "p99_ms": round(_percentile(values, .99) * 1000, 1), "max_ms": round(max(values, default=0) * 1000, 1)}


def run_store(args, work: Path, processes: Processes, site: Site, store_arg: str, rng: random.Random,
              cli: list[str]) -> dict:
    """Phases 2-4 against one store; prints its block and returns its figures."""
    run_id = uuid.uuid4().hex[:8]
    notes: list[str] = []
    site_url, emulator_url, app_password = site.url, site.emulator_url, site.app_password
    set_latency(emulator_url, app_password, args.latency)
    # Store and configuration -----------------------------------------------------------------------------------
    if store_arg != "sqlite":
        store, store_password = _split_password(store_arg)
        notes.append("store: " + sa.make_url(store).render_as_string(hide_password=True) +
                     " (left in place; this run's grants are tagged bench-" + run_id + ")")
    else:
        store, store_password = f"sqlite:///{work / f'store-{run_id}.sqlite'}", None
    port = _free_port()
    api_key = "bench-" + secrets.token_urlsafe(32)

    def config(name: str, concurrency: int) -> Path:
        return write_config(work / name, {
            "wordpress": {"db_url": site_url, "table_prefix": "wp_"},
            "memberlux": {"rest_base_url": emulator_url + "/wp-json", "rest_user": DEMO_API_LOGIN,
                          "rest_password": app_password, "timeout_seconds": 60},
            "store": {"url": store, **({"password": store_password} if store_password else {})},
            "web": {"host": HOST, "port": port, "workers": args.workers, "secret_key": secrets.token_hex(32)},
            "bridge": {"api_keys": {"bench": api_key}, "concurrency": concurrency},
            "schedule": {"outbox_poll_seconds": 1},
            "log": {"format": "text", "level": "INFO"},
        })

    main_config = config(f"mlsidecar-{run_id}.toml", args.delivery_concurrency)
    single_config = config(f"mlsidecar-{run_id}-c1.toml", 1)
    settings = load_settings(main_config, environ={})
    engine = store_db.create_store_engine(store_url(settings))
    store_db.upgrade(engine)
    engine.dispose()
    runtime = build_runtime(settings)
    try:
        return _measure(args, processes, runtime, run_id, notes, site, store, port, api_key, main_config,
                        single_config, rng, cli)
    finally:
        processes.stop("serve")
        runtime.close()


def _measure(args, processes: Processes, runtime, run_id: str, notes: list[str], site: Site, store: str, port: int,
             api_key: str, main_config: Path, single_config: Path, rng: random.Random, cli: list[str]) -> dict:
    site_url, emulator_url, app_password, seeded_in = site.url, site.emulator_url, site.app_password, site.seeded_in
    products = sorted({(p.level_id, p.duration, p.units) for p in BridgeService(runtime).catalog.products()
                       if p.status == "publish" and p.level_id and not p.unlimited})
    if not products:
        raise SystemExit("the demo site has no published mbl_key product")

    # Sidecar web ------------------------------------------------------------------------------------------------
    server = processes.start("serve", [*cli, "--config", str(main_config), "serve"])
    _wait_http(f"http://{HOST}:{port}/healthz", processes, "serve")

    # Baseline and intake -----------------------------------------------------------------------------------------
    baseline = None
    if args.baseline_requests:
        baseline = run_load(port, [("GET", "/healthz", None, {})] * args.baseline_requests, args.concurrency,
                            server.pid)
    warmup = grant_requests(WARMUP_REQUESTS, run_id + "w", products, api_key, rng)
    run_load(port, warmup, min(args.concurrency, 8), None)
    intake_requests = grant_requests(args.requests, run_id, products, api_key, rng)
    duplicates = args.requests - len({body for _m, _p, body, _h in intake_requests})
    intake = run_load(port, intake_requests, args.concurrency, server.pid)
    wrk_figures = wrk_phase(args, port, server.pid, local_database_pid(store), products, api_key, run_id) if args.wrk_seconds else None
    paced = None
    if args.rate and args.paced_requests:
        paced_requests = grant_requests(args.paced_requests, run_id + "p", products, api_key, rng)
        paced = run_paced(port, paced_requests, args.rate, args.concurrency)

    # Delivery ------------------------------------------------------------------------------------------------------
    accepted = grants_of_run(runtime, run_id)
    measured = [g.id for g in accepted if g.status == QUEUED][: args.grants]
    aside = set_aside(runtime, measured)
    processes.start("worker", [*cli, "--config", str(main_config), "worker"])
    bound = max(120.0, len(measured) * args.latency / max(1, args.delivery_concurrency) * 4 + 60)
    delivery_progress = wait_final(runtime, measured, bound, processes, "worker", poll=0.1)
    processes.stop("worker", signal.SIGINT)
    delivery = delivery_figures(runtime, measured)
    keys = site_keys_per_grant(site_url, measured)
    lost = len(measured) - delivery["succeeded"]
    duplicated = sum(1 for n in keys.values() if n > 1)
    missing_on_site = sum(1 for grant_id, n in keys.items() if n == 0)

    # Overhead: one order at a time, emulator without added latency ----------------------------------------------------
    overhead = None
    if args.overhead_grants:
        set_latency(emulator_url, app_password, 0.0)
        posts = grant_requests(args.overhead_grants, run_id + "o", products, api_key, rng, duplicate_share=0)
        run_load(port, posts, 4, None)
        single = [g.id for g in grants_of_run(runtime, run_id + "o") if g.status == QUEUED]
        processes.start("worker-c1", [*cli, "--config", str(single_config), "worker"])
        single_progress = wait_final(runtime, single, 60 + len(single) * 5, processes, "worker-c1", poll=0.02)
        processes.stop("worker-c1", signal.SIGINT)
        sequential = delivery_figures(runtime, single)
        # The same orders the worker sent (same products in the same order, new customers each time),
        # after a few unmeasured ones so both sides run against a warm emulator.
        client = MemberLuxRestClient(emulator_url + "/wp-json", DEMO_API_LOGIN, app_password, timeout=60)
        catalog = BridgeService(runtime).catalog
        direct = []
        for n in range(-3, len(single)):
            term_id, duration, units = products[max(n, 0) % len(products)]
            product_id = catalog.find(term_id, duration, units).product_id
            began = time.perf_counter()
            client.order_product(Customer(email=f"direct.{run_id}.{n + 3}@example.org", first_name="Bench",
                                          last_name=f"N{n}"), product_id, f"bench-direct-{run_id}-{n + 3}")
            if n >= 0:
                direct.append(time.perf_counter() - began)
        overhead = {"grants": len(single), "succeeded": sequential["succeeded"],
                    "per_grant": 1 / single_progress.rate()[0] if single_progress.rate()[0] else float("nan"),
                    "order_in_worker": statistics.mean(sequential["order_ms"]) / 1000 if sequential["order_ms"] else float("nan"),
                    "direct_mean": statistics.mean(direct), "direct_p50": statistics.median(direct)}

    # Summary -------------------------------------------------------------------------------------------------------------
    cores = os.cpu_count() or 1
    store_kind = sa.make_url(store).get_backend_name()
    print()
    print("grant bridge bench")
    print(f"  machine           {cores} CPU cores; everything on loopback; Python {sys.version.split()[0]}")
    site_kind = "SQLite (WAL)" if site_url.startswith("sqlite") else sa.make_url(site_url).render_as_string(hide_password=True)
    print(f"  site              {site_kind}, {args.users} learners, {len(products)} grantable products, "
          f"seeded in {seeded_in:.1f} s; emulator = `mlsidecar devstack serve` (werkzeug, threaded)")
    print(f"  sidecar           `mlsidecar serve`: gunicorn gthread, {args.workers} workers x 4 threads; "
          f"store {store_kind}{' (WAL)' if store_kind == 'sqlite' else ''}; log level INFO")
    if baseline:
        print(f"  baseline          GET /healthz x{args.baseline_requests}, {args.concurrency} connections: "
              f"{len(baseline.latencies) / baseline.wall:,.0f} req/s, p50 {_percentile(baseline.latencies, .5) * 1000:.1f} ms"
              f", p99 {_percentile(baseline.latencies, .99) * 1000:.1f} ms; gunicorn CPU "
              f"{baseline.server_cpu / max(1, len(baseline.latencies)) * 1000:.2f} ms per request")
    print(f"  intake            {args.requests} POST /api/v1/grants (brief JSON, X-API-Key), {args.concurrency} "
          f"connections, {duplicates} repeats of earlier external_ids; worker not running")
    print(f"    throughput      {len(intake.latencies) / intake.wall:,.0f} req/s ({intake.wall:.1f} s)")
    print(f"    latency         p50 {_percentile(intake.latencies, .5) * 1000:.1f} ms, "
          f"p95 {_percentile(intake.latencies, .95) * 1000:.1f} ms, p99 {_percentile(intake.latencies, .99) * 1000:.1f} ms, "
          f"max {max(intake.latencies, default=0) * 1000:.1f} ms")
    print(f"    status codes    {dict(sorted(intake.statuses.items()))}; Idempotent-Replayed: {intake.replayed}; "
          f"transport errors: {dict(intake.errors) or 0}")
    print(f"    grants stored   {len(accepted)} distinct (expected {args.requests - duplicates})")
    print(f"    CPU             client {intake.client_cpu:.1f} s ({intake.client_cpu / intake.wall:.0%} of a core), "
          f"gunicorn {intake.server_cpu:.1f} s ({intake.server_cpu / intake.wall:.0%} of a core, "
          f"{intake.server_cpu / max(1, len(intake.latencies)) * 1000:.2f} ms per request), "
          f"of {cores} cores x {intake.wall:.1f} s")
    if wrk_figures:
        for name, figures in wrk_figures.items():
            lat = figures["latency_us"]
            print(f"  wrk {name:<15} {'GET /healthz' if name == 'baseline' else 'POST /api/v1/grants'} for "
                  f"{args.wrk_seconds:g} s, {args.concurrency} "
                  f"{'new connections (Connection: close)' if name.endswith('new_conn') else 'keep-alive connections'} "
                  f"(wrk, 1 thread): "
                  f"{figures['rps']:,.0f} req/s; p50 {lat['p50'] / 1000:.1f} ms, p90 {lat['p90'] / 1000:.1f} ms, "
                  f"p99 {lat['p99'] / 1000:.1f} ms, max {lat['max'] / 1000:.1f} ms; answers 200/202 {figures['ok']}, "
                  f"other {figures['other_status']}, replayed {figures['replayed']}, socket errors "
                  f"{sum(v for k, v in figures['errors'].items() if k != 'status')}; gunicorn CPU "
                  f"{figures['server_cpu_ms_per_request']:.2f} ms per request, "
                  f"{figures['busiest_worker_cpu_share']:.0%} of it in the busiest worker" +
                  (f", MariaDB server CPU {figures['database_cpu_ms_per_request']:.2f} ms per request"
                   if "database_cpu_ms_per_request" in figures else ""))
    if paced:
        print(f"  paced intake      {args.paced_requests} POST /api/v1/grants offered at {args.rate:g} req/s (open loop, "
              f"latency from each request's due time), {args.concurrency} connections")
        print(f"    achieved        {len(paced.latencies) / paced.wall:,.0f} req/s ({paced.wall:.1f} s)")
        print(f"    latency         p50 {_percentile(paced.latencies, .5) * 1000:.1f} ms, "
              f"p95 {_percentile(paced.latencies, .95) * 1000:.1f} ms, p99 {_percentile(paced.latencies, .99) * 1000:.1f} ms, "
              f"max {max(paced.latencies, default=0) * 1000:.1f} ms")
        print(f"    status codes    {dict(sorted(paced.statuses.items()))}; transport errors: {dict(paced.errors) or 0}")
    ceiling = args.delivery_concurrency / args.latency if args.latency else float("inf")
    rate, span = delivery_progress.rate()
    print(f"  delivery          {len(measured)} grants, worker concurrency {args.delivery_concurrency}, "
          f"emulator latency {args.latency:.1f} s/order ({aside} other queued bench grants set aside)")
    print(f"    throughput      {rate:.2f} grants/s over {span:.1f} s from the first grant final to the last "
          f"(ceiling {args.delivery_concurrency} / {args.latency:g} s = {ceiling:.2f}/s); all final "
          f"{delivery_progress.elapsed:.1f} s after the worker was started")
    print(f"    outcome         {dict(delivery['statuses'])}; attempts per grant {dict(delivery['attempts'])}")
    print(f"    lost            {lost}  (accepted, not succeeded)")
    print(f"    duplicated      {duplicated}  (grants with more than one site key in keys_meta.utm_id)")
    print(f"    not on site     {missing_on_site}  (grants with no site key)")
    if overhead:
        print(f"  overhead          {overhead['grants']} grants, worker concurrency 1, emulator latency 0")
        print(f"    per grant       {overhead['per_grant'] * 1000:.1f} ms wall per delivered grant "
              f"({overhead['succeeded']} succeeded); the order call inside it, as the worker timed it: "
              f"{overhead['order_in_worker'] * 1000:.1f} ms mean")
        print(f"    direct order    {overhead['direct_mean'] * 1000:.1f} ms mean, {overhead['direct_p50'] * 1000:.1f} ms p50 "
              f"(MemberLuxRestClient straight to the emulator, same products, new customers)")
        print(f"    sidecar adds    {(overhead['per_grant'] - overhead['direct_mean']) * 1000:.1f} ms per grant; "
              f"{(overhead['per_grant'] - overhead['order_in_worker']) * 1000:.1f} ms of it outside the order call as the "
              "worker timed it (the same grants' calls, so free of the emulator's drift between the two series)")
    for note in notes:
        print(f"  note              {note}")
    def cpu_per_request(load: LoadResult) -> float:
        return round(load.server_cpu / max(1, len(load.latencies)) * 1000, 3)

    figures: dict = {"store": store_kind, "workers": args.workers, "threads_per_worker": 4}
    if baseline:
        figures["baseline"] = {"requests": len(baseline.latencies), "rps": round(len(baseline.latencies) / baseline.wall),
                               **_latencies(baseline.latencies), "server_cpu_ms_per_request": cpu_per_request(baseline)}
    figures["closed_loop"] = {"requests": len(intake.latencies), "connections": args.concurrency,
                              "rps": round(len(intake.latencies) / intake.wall), **_latencies(intake.latencies),
                              "statuses": {str(k): v for k, v in sorted(intake.statuses.items())},
                              "replayed": intake.replayed, "transport_errors": sum(intake.errors.values()),
                              "server_cpu_ms_per_request": cpu_per_request(intake),
                              "grants_stored": len(accepted), "grants_expected": args.requests - duplicates}
    if wrk_figures:
        figures["closed_loop_wrk"] = {
            name: {"requests": f["requests"], "seconds": round(f["duration_us"] / 1e6, 2), "rps": round(f["rps"]),
                   "p50_ms": round(f["latency_us"]["p50"] / 1000, 1), "p90_ms": round(f["latency_us"]["p90"] / 1000, 1),
                   "p99_ms": round(f["latency_us"]["p99"] / 1000, 1), "max_ms": round(f["latency_us"]["max"] / 1000, 1),
                   "ok": f["ok"], "other_status": f["other_status"], "replayed": f["replayed"], "errors": f["errors"],
                   "server_cpu_ms_per_request": f["server_cpu_ms_per_request"],
                   "busiest_worker_cpu_share": f["busiest_worker_cpu_share"],
                   **({"database_cpu_ms_per_request": f["database_cpu_ms_per_request"]}
                      if "database_cpu_ms_per_request" in f else {})}
            for name, f in wrk_figures.items()}
    if paced:
        figures["open_loop"] = {"requests": len(paced.latencies), "offered_rps": args.rate,
                                "achieved_rps": round(len(paced.latencies) / paced.wall), **_latencies(paced.latencies),
                                "statuses": {str(k): v for k, v in sorted(paced.statuses.items())},
                                "transport_errors": sum(paced.errors.values())}
    figures["delivery"] = {"grants": len(measured), "grants_per_s": round(rate, 2), "lost": lost,
                           "duplicated": duplicated, "not_on_site": missing_on_site}
    if overhead:
        figures["overhead"] = {"grants": overhead["grants"], "per_grant_ms": round(overhead["per_grant"] * 1000, 1),
                               "direct_ms": round(overhead["direct_mean"] * 1000, 1),
                               "added_ms": round((overhead["per_grant"] - overhead["direct_mean"]) * 1000, 1),
                               "order_in_worker_ms": round(overhead["order_in_worker"] * 1000, 1),
                               "outside_order_call_ms": round((overhead["per_grant"] - overhead["order_in_worker"]) * 1000, 1)}
    return figures


if __name__ == "__main__":
    main()
