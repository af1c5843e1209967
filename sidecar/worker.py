"""The single scheduler: background jobs run here, never inside web workers.

Each job runs under a lease in the store (``sidecar.store.leases``), so a second worker started by
mistake (or a second host) waits instead of doing the same work twice.
"""

from __future__ import annotations

import logging
from collections.abc import Callable
from datetime import datetime, timedelta

from apscheduler.schedulers.background import BackgroundScheduler
from apscheduler.schedulers.blocking import BlockingScheduler

from sidecar.bootstrap import Runtime
from sidecar.jobs import (
    ACCESS_SCAN_JOB, ALERTS_JOB, CERTIFICATE_REVALIDATE_JOB, CERTIFICATE_SYNC_JOB, DASHBOARD_JOB, HEARTBEAT_JOB, HINTS_JOB,
    PURGE_JOB, REMINDERS_DAILY_JOB,
    REMINDERS_RETRY_JOB, SLEEPERS_REFRESH_JOB, WEBHOOKS_JOB, WELCOME_JOB,
)
from sidecar.store import leases
from sidecar.store.leases import holder_name

log = logging.getLogger(__name__)
HEARTBEAT_SECONDS = 30


def run_leased(runtime: Runtime, name: str, job: Callable[[Runtime], str | None], ttl: timedelta) -> bool:
    """Run ``job`` if this process wins the lease; record the outcome. Returns whether it ran."""
    holder = holder_name()
    if not leases.try_acquire(runtime.sessions, name, holder, ttl, runtime.clock.now()):
        log.debug("job %s is running elsewhere; skipped", name)
        return False
    outcome = "ok"
    try:
        outcome = job(runtime) or "ok"
    except Exception as exc:  # a failing job must not kill the scheduler
        outcome = f"failed: {type(exc).__name__}: {exc}"
        log.exception("job %s failed", name)
    finally:
        leases.release(runtime.sessions, name, holder, runtime.clock.now(), outcome)
    return True


def heartbeat(runtime: Runtime) -> str:
    """Proves to the status page and `doctor` that a worker is alive and can reach both databases."""
    runtime.reader.option("wpm_version")
    return "alive"


def purge_seen_signatures(runtime: Runtime) -> str:
    from sidecar.bridge.auth import purge_seen_signatures as purge

    removed = purge(runtime.sessions, runtime.clock.now(), runtime.settings.bridge.replay_window_seconds)
    return f"{removed} expired signatures removed"


WELCOME_SECONDS = 60
#: The dashboard job's lease: far longer than its run (about a minute on a site with a million keys).
DASHBOARD_LEASE = timedelta(hours=1)
ALERTS_SECONDS = 60


def watch_certificates(runtime: Runtime) -> str:
    """New certificates classified (learning monitor), then matched against program enrolments."""
    from sidecar.programs.progression import Progression

    return Progression(runtime).watch()


def refresh_sleepers(runtime: Runtime) -> str:
    from sidecar.monitor.refresh import SleeperRefresher

    outcome = SleeperRefresher(runtime).refresh_stale(
        max_age=timedelta(minutes=runtime.settings.schedule.sleepers_max_age_minutes))
    return outcome.summary()


def register_jobs(scheduler, runtime: Runtime) -> None:
    scheduler.add_job(run_leased, "interval", seconds=HEARTBEAT_SECONDS, id=HEARTBEAT_JOB,
                      args=(runtime, HEARTBEAT_JOB, heartbeat, timedelta(seconds=HEARTBEAT_SECONDS)),
                      max_instances=1, coalesce=True, next_run_time=runtime.clock.now())
    scheduler.add_job(run_leased, "interval", hours=1, id=PURGE_JOB,
                      args=(runtime, PURGE_JOB, purge_seen_signatures, timedelta(minutes=10)),
                      max_instances=1, coalesce=True)
    from sidecar.monitor.certificates import revalidate_job

    # The lease outlives the sync's time budget, so a slow run is never doubled by another worker.
    scheduler.add_job(run_leased, "interval", seconds=runtime.settings.schedule.certificate_poll_seconds,
                      id=CERTIFICATE_SYNC_JOB,
                      args=(runtime, CERTIFICATE_SYNC_JOB, watch_certificates, timedelta(minutes=10)),
                      max_instances=1, coalesce=True)
    scheduler.add_job(run_leased, "interval", hours=1, id=CERTIFICATE_REVALIDATE_JOB,
                      args=(runtime, CERTIFICATE_REVALIDATE_JOB, revalidate_job, timedelta(minutes=30)),
                      max_instances=1, coalesce=True)
    # Every few seconds: the site's changes since the last scan are applied to the read model (the whole
    # model is rebuilt at the first run and then once a day, reconciling): the report stays that fresh.
    scheduler.add_job(run_leased, "interval", seconds=runtime.settings.schedule.sleepers_scan_seconds,
                      id=SLEEPERS_REFRESH_JOB,
                      args=(runtime, SLEEPERS_REFRESH_JOB, refresh_sleepers, timedelta(hours=1)),
                      max_instances=1, coalesce=True, next_run_time=runtime.clock.now())
    from sidecar.dashboard.job import compute_job as dashboard_job

    # The dashboard's comparison (half a minute on a large site) is computed here, never in a web request:
    # when the worker starts (the page has nothing to show before) and then at the configured interval.
    scheduler.add_job(run_leased, "interval", minutes=runtime.settings.schedule.dashboard_interval_minutes,
                      id=DASHBOARD_JOB, args=(runtime, DASHBOARD_JOB, dashboard_job, DASHBOARD_LEASE),
                      max_instances=1, coalesce=True, next_run_time=runtime.clock.now())
    register_reminders(scheduler, runtime)
    from sidecar.bridge.welcome import welcome_job

    # Welcome e-mails: retries after transient SMTP failures, claims left by a stopped sender, and
    # letters of grants whose success was recorded without one.
    scheduler.add_job(run_leased, "interval", seconds=WELCOME_SECONDS, id=WELCOME_JOB,
                      args=(runtime, WELCOME_JOB, welcome_job, timedelta(minutes=15)), max_instances=1, coalesce=True)
    from sidecar.bridge.alerts import alerts_job

    # Failed and unsettled grants: recorded (and grant.unsettled sent) within a minute, mailed in a digest
    # at most every alerts.digest_interval_minutes.
    scheduler.add_job(run_leased, "interval", seconds=ALERTS_SECONDS, id=ALERTS_JOB,
                      args=(runtime, ALERTS_JOB, alerts_job, timedelta(minutes=15)), max_instances=1, coalesce=True)
    from sidecar.webhooks.delivery import deliver_job
    from sidecar.webhooks.inbound import process_hints_job

    scheduler.add_job(run_leased, "interval", seconds=runtime.settings.schedule.outbox_poll_seconds, id=WEBHOOKS_JOB,
                      args=(runtime, WEBHOOKS_JOB, deliver_job, timedelta(minutes=10)), max_instances=1, coalesce=True)
    scheduler.add_job(run_leased, "interval", seconds=runtime.settings.schedule.outbox_poll_seconds, id=HINTS_JOB,
                      args=(runtime, HINTS_JOB, process_hints_job, timedelta(minutes=10)), max_instances=1, coalesce=True)
    from sidecar.webhooks.access import scan_job

    # Key activations from any source (access.activated); reads nothing while no endpoint wants them.
    scheduler.add_job(run_leased, "interval", seconds=runtime.settings.schedule.access_scan_seconds, id=ACCESS_SCAN_JOB,
                      args=(runtime, ACCESS_SCAN_JOB, scan_job, timedelta(minutes=10)), max_instances=1, coalesce=True)


def schedule_zone(runtime: Runtime):
    """The zone of the daily times: schedule.timezone, or the site's ('site')."""
    from zoneinfo import ZoneInfo

    from sidecar.status import site_timezone

    name = runtime.settings.schedule.timezone
    return site_timezone(runtime)[0] if name == "site" else ZoneInfo(name)


def reminders_missed(runtime: Runtime, zone, now: datetime) -> bool:
    """Whether today's daily run time has passed with no run since: the worker was down at that time.

    The planner catches up missed days by itself (latest due step only, nothing stale), so one run
    at start-up is all a restart needs.
    """
    at = runtime.settings.schedule.reminders_at
    local_now = now.astimezone(zone)
    due = datetime.combine(local_now.date(), at, tzinfo=zone)
    if local_now < due:
        due -= timedelta(days=1)
    lease = leases.get(runtime.sessions, REMINDERS_DAILY_JOB)
    last = lease.last_started_at if lease is not None else None
    return last is None or last < due


def register_reminders(scheduler, runtime: Runtime) -> None:
    from apscheduler.triggers.cron import CronTrigger

    from sidecar.reminders.run import daily_job, retry_job

    zone = schedule_zone(runtime)
    at = runtime.settings.schedule.reminders_at
    now = runtime.clock.now()
    scheduler.add_job(run_leased, CronTrigger(hour=at.hour, minute=at.minute, timezone=zone), id=REMINDERS_DAILY_JOB,
                      args=(runtime, REMINDERS_DAILY_JOB, daily_job, timedelta(hours=2)),
                      max_instances=1, coalesce=True, misfire_grace_time=6 * 3600)
    if runtime.settings.reminders.enabled and reminders_missed(runtime, zone, now):
        scheduler.add_job(run_leased, "date", run_date=now + timedelta(seconds=30), id=REMINDERS_DAILY_JOB + ".catch_up",
                          args=(runtime, REMINDERS_DAILY_JOB, daily_job, timedelta(hours=2)))
    # Retries of transient SMTP failures between daily runs; the same lease as the daily run would be
    # too coarse (a retry must not wait for a 30-minute plan), so it has its own.
    scheduler.add_job(run_leased, "interval", minutes=5, id=REMINDERS_RETRY_JOB,
                      args=(runtime, REMINDERS_RETRY_JOB, retry_job, timedelta(minutes=30)),
                      max_instances=1, coalesce=True)


def build_outbox(runtime: Runtime):
    """The grant delivery loop. Claims in the store keep it safe next to other workers."""
    from sidecar.bridge.outbox import GrantDeliverer, OutboxRunner

    bridge = runtime.settings.bridge
    return OutboxRunner(GrantDeliverer(runtime), concurrency=bridge.concurrency,
                        poll_seconds=runtime.settings.schedule.outbox_poll_seconds)


def build_scheduler(runtime: Runtime, *, background: bool):
    from sidecar.webhooks.endpoints import sync_config

    sync_config(runtime)  # endpoints of the configuration file, before any job emits events
    cls = BackgroundScheduler if background else BlockingScheduler
    scheduler = cls(timezone="UTC", job_defaults={"misfire_grace_time": 300})
    register_jobs(scheduler, runtime)
    return scheduler
