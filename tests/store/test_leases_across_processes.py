"""Two worker processes sharing one store: a leased job never runs in both at once.

This is what lets a second `mlsidecar worker` (another host, or a restart that overlaps) run safely:
every scheduled job goes through ``run_leased``, and the lease is a conditional UPDATE in the store.
"""

from __future__ import annotations

import multiprocessing
import time
from datetime import timedelta
from pathlib import Path
from types import SimpleNamespace

import pytest

from sidecar.clock import Clock
from sidecar.store import db as store_db

RUN_SECONDS = 3.0
JOB_SECONDS = 0.15


def _worker(store_url: str, log_path: str, name: str) -> None:
    from sidecar.worker import run_leased

    engine = store_db.create_store_engine(store_url)
    runtime = SimpleNamespace(sessions=store_db.session_factory(engine), clock=Clock())

    def job(_runtime) -> str:
        started = time.time()
        time.sleep(JOB_SECONDS)
        with open(log_path, "a", encoding="utf-8") as log:
            log.write(f"{name} {started:.6f} {time.time():.6f}\n")
        return "ok"

    deadline = time.monotonic() + RUN_SECONDS
    while time.monotonic() < deadline:
        run_leased(runtime, "test.exclusive", job, timedelta(seconds=30))
        time.sleep(0.01)
    engine.dispose()


@pytest.mark.slow
@pytest.mark.parametrize("store", ["sqlite", pytest.param("mariadb", marks=pytest.mark.mariadb)])
def test_a_leased_job_never_runs_in_two_processes_at_once(tmp_path: Path, store, request):
    url = request.getfixturevalue("mariadb_database") if store == "mariadb" else f"sqlite:///{tmp_path / 'store.sqlite'}"
    engine = store_db.create_store_engine(url)
    store_db.upgrade(engine)
    engine.dispose()
    log_path = tmp_path / "runs.log"
    context = multiprocessing.get_context("spawn")
    processes = [context.Process(target=_worker, args=(url, str(log_path), name)) for name in ("a", "b")]
    for process in processes:
        process.start()
    for process in processes:
        process.join(60)
        assert process.exitcode == 0
    runs = sorted((float(start), float(end), who) for who, start, end in
                  (line.split() for line in log_path.read_text().splitlines()))
    assert len(runs) >= RUN_SECONDS / JOB_SECONDS / 2, runs
    for (_, previous_end, _), (start, _, _) in zip(runs, runs[1:], strict=False):
        assert start >= previous_end, "two processes ran the job at the same time"
    assert {who for *_, who in runs} == {"a", "b"}, "both processes took turns"
