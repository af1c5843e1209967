"""Names of the worker's scheduled jobs: the lease each one takes in the store.

A leaf module, so that a capability can take or look at a job's lease (the reminders planner waits for
the sleepers refresh; the doctor reads the daily run) without importing the worker that schedules them.
"""

HEARTBEAT_JOB = "worker.heartbeat"
PURGE_JOB = "bridge.purge_signatures"
CERTIFICATE_SYNC_JOB = "monitor.certificates.sync"
CERTIFICATE_REVALIDATE_JOB = "monitor.certificates.revalidate"
SLEEPERS_REFRESH_JOB = "monitor.sleepers.refresh"
REMINDERS_DAILY_JOB = "reminders.daily"
REMINDERS_RETRY_JOB = "reminders.retry"
WEBHOOKS_JOB = "webhooks.deliver"
HINTS_JOB = "memberlux.hints"
ACCESS_SCAN_JOB = "webhooks.access_scan"
WELCOME_JOB = "bridge.welcome"
ALERTS_JOB = "bridge.alerts"
DASHBOARD_JOB = "dashboard.after_letters"
