"""Background jobs run under a lease: one runner at a time, outcomes recorded, failures contained."""

from __future__ import annotations

from datetime import timedelta

from sidecar.store import leases
from sidecar.worker import build_scheduler, holder_name, run_leased

TTL = timedelta(seconds=60)


def test_job_runs_and_records_outcome(runtime):
    assert run_leased(runtime, "demo.job", lambda rt: "3 things done", TTL)
    lease = leases.get(runtime.sessions, "demo.job")
    assert lease.last_outcome == "3 things done" and lease.holder == holder_name()


def test_failing_job_is_recorded_not_raised(runtime):
    def broken(_runtime):
        raise RuntimeError("database went away")

    assert run_leased(runtime, "demo.broken", broken, TTL)
    assert leases.get(runtime.sessions, "demo.broken").last_outcome == "failed: RuntimeError: database went away"


def test_job_held_elsewhere_is_skipped(runtime):
    assert leases.try_acquire(runtime.sessions, "demo.busy", "other-host:1", TTL, runtime.clock.now())
    ran = []
    assert not run_leased(runtime, "demo.busy", lambda rt: ran.append(1), TTL)
    assert ran == []


def test_scheduler_registers_the_heartbeat(runtime):
    scheduler = build_scheduler(runtime, background=True)
    assert [job.id for job in scheduler.get_jobs()] == ["worker.heartbeat", "bridge.purge_signatures",
                                                      "monitor.certificates.sync", "monitor.certificates.revalidate",
                                                      "monitor.sleepers.refresh"]
