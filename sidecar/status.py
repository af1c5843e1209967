"""What the status page and `doctor` show about the running system, gathered in one place."""

from __future__ import annotations

from dataclasses import dataclass, field
from datetime import date, datetime

from sidecar.bootstrap import Runtime
from sidecar.bridge import attention
from sidecar.store import db as store_db
from sidecar.store import leases

from sidecar.jobs import HEARTBEAT_JOB


@dataclass(frozen=True)
class SystemStatus:
    memberlux_version: str | None
    site_timezone: str
    timezone_source: str
    levels: int
    modules: dict[str, bool]
    notices: list[str] = field(default_factory=list)
    store_revision: str | None = None
    store_current: bool = False
    worker_heartbeat: datetime | None = None
    today_utc: date | None = None
    today_site: date | None = None
    #: Grants that need an administrator (failed, or unsettled past their settle time).
    grant_alerts: attention.Counts | None = None
    #: The sleepers report's change scan and rebuilds (none before the worker's first run).
    sleepers: SleepersState | None = None


@dataclass(frozen=True)
class SleepersState:
    day: date
    scanned_at: datetime
    scan_seconds: float
    last_changes: dict
    rebuilt_at: datetime
    rebuild_seconds: float
    reconciled_at: datetime | None
    missed: int          # rows the change scans had wrong, found by the last reconciling rebuild


def sleepers_state(runtime: Runtime) -> SleepersState | None:
    from sidecar.monitor.increments import missed_total
    from sidecar.store.monitor_models import SleeperScan

    with runtime.sessions() as session:
        scan = session.get(SleeperScan, "site")
        if scan is None:
            return None
        return SleepersState(scan.day, scan.scanned_at, scan.scan_seconds, dict(scan.last_changes or {}),
                             scan.rebuilt_at, scan.rebuild_seconds, scan.reconciled_at,
                             missed_total(scan.missed or {}))


def site_timezone(runtime: Runtime):
    """The zone for display and schedules: the config override, else WordPress's own setting."""
    from zoneinfo import ZoneInfo

    override = runtime.settings.wordpress.timezone
    if override:
        return ZoneInfo(override), "config"
    tz = runtime.reader.site_timezone()
    return tz.tz, tz.source


def collect(runtime: Runtime) -> SystemStatus:
    zone, source = site_timezone(runtime)
    heartbeat = leases.get(runtime.sessions, HEARTBEAT_JOB)
    revision = store_db.current_revision(runtime.store_engine)
    with runtime.sessions() as session:
        alerts = attention.counts(session, runtime.settings, runtime.clock.now())
    return SystemStatus(
        memberlux_version=runtime.reader.option("wpm_version"),
        site_timezone=str(zone),
        timezone_source=source,
        levels=len(runtime.reader.levels()),
        modules=dict(runtime.site.features),
        notices=list(runtime.site.notices),
        store_revision=revision,
        store_current=revision == store_db.head_revision(),
        worker_heartbeat=heartbeat.last_finished_at if heartbeat else None,
        today_utc=runtime.clock.today_utc(),
        today_site=runtime.clock.today_in(zone),
        grant_alerts=alerts,
        sleepers=sleepers_state(runtime),
    )
