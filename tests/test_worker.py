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
    before = runtime.clock.now()
    scheduler = build_scheduler(runtime, background=True)
    assert [job.id for job in scheduler.get_jobs()] == ["worker.heartbeat", "bridge.purge_signatures",
                                                      "monitor.certificates.sync", "monitor.certificates.revalidate",
                                                      "monitor.sleepers.refresh", "dashboard.after_letters", "reminders.daily",
                                                      "reminders.daily.catch_up", "reminders.retry", "bridge.welcome",
                                                      "bridge.alerts", "webhooks.deliver", "memberlux.hints",
                                                      "webhooks.access_scan"]
    assert scheduler.get_job("bridge.welcome").trigger.interval.total_seconds() == 60     # every minute
    assert scheduler.get_job("bridge.alerts").trigger.interval.total_seconds() == 60      # every minute
    assert scheduler.get_job("webhooks.access_scan").trigger.interval.total_seconds() == 60   # schedule.access_scan_seconds
    sleepers = scheduler.get_job("monitor.sleepers.refresh")
    assert sleepers.trigger.interval.total_seconds() == 30       # schedule.sleepers_scan_seconds
    assert before <= sleepers.next_run_time <= runtime.clock.now()    # the first run builds the model at once
    dashboard = scheduler.get_job("dashboard.after_letters")
    assert dashboard.trigger.interval.total_seconds() == 3600     # schedule.dashboard_interval_minutes
    assert before <= dashboard.next_run_time <= runtime.clock.now()   # and at once when the worker starts


def test_daily_reminders_catch_up_once_after_a_missed_run(runtime):
    """A worker down at the daily time runs the reminders once at start; otherwise it waits."""
    from datetime import datetime, timezone
    from zoneinfo import ZoneInfo

    from sidecar.store import leases as store_leases
    from sidecar.jobs import REMINDERS_DAILY_JOB
    from sidecar.worker import reminders_missed

    moscow = ZoneInfo("Europe/Moscow")           # reminders_at 09:00 local = 06:00 UTC
    before = datetime(2026, 11, 24, 5, 0, tzinfo=timezone.utc)
    after = datetime(2026, 11, 24, 7, 0, tzinfo=timezone.utc)
    assert reminders_missed(runtime, moscow, after)            # never ran
    store_leases.try_acquire(runtime.sessions, REMINDERS_DAILY_JOB, "w", TTL, datetime(2026, 11, 23, 6, 1, tzinfo=timezone.utc))
    assert not reminders_missed(runtime, moscow, before)       # yesterday's run covers until 09:00 today
    assert reminders_missed(runtime, moscow, after)            # today's 09:00 passed without a run
    store_leases.try_acquire(runtime.sessions, REMINDERS_DAILY_JOB, "w", TTL, datetime(2026, 11, 24, 6, 0, tzinfo=timezone.utc))
    assert not reminders_missed(runtime, moscow, after)
