"""One reminders run: plan today's decisions, then send what is due. The worker's daily job and
``mlsidecar remind`` both call :func:`run_reminders`."""

from __future__ import annotations

import logging
from collections.abc import Sequence
from dataclasses import dataclass
from datetime import date

from sidecar.bootstrap import Runtime
from sidecar.mail.mailer import Mailer
from sidecar.reminders.planner import PlanReport, ProgressCallback, ReminderPlanner
from sidecar.reminders.sender import ReminderSender, SendReport

log = logging.getLogger(__name__)


@dataclass
class RunReport:
    plan: PlanReport
    send: SendReport | None     # None for a dry run

    def summary(self) -> str:
        counts = ", ".join(f"{k} {v}" for k, v in self.plan.counts().items()) or "nothing due"
        text = f"{self.plan.day} (UTC){' dry run' if self.plan.dry_run else ''}: planned {counts}"
        if self.send is not None:
            s = self.send
            text += (f"; sent {s.sent}, retrying {s.retrying}, failed {s.failed}"
                     f"{', skipped ' + str(sum(s.skipped.values())) if s.skipped else ''}"
                     f"{'; stopped: ' + s.stopped if s.stopped else ''}")
        return text


DAILY_SEND_BUDGET_SECONDS = 90 * 60   # the rest is sent by the retry job, under its own lease


def run_reminders(runtime: Runtime, *, day: date | None = None, levels: Sequence[int] | None = None,
                  dry_run: bool = False, progress: ProgressCallback | None = None,
                  mailer: Mailer | None = None, send_budget: float | None = None) -> RunReport:
    plan = ReminderPlanner(runtime).plan(day, levels=levels, dry_run=dry_run, progress=progress)
    if dry_run:
        return RunReport(plan, None)
    sent = ReminderSender(runtime, mailer).send_due(time_budget=send_budget)
    report = RunReport(plan, sent)
    log.info("reminders: %s", report.summary())
    return report


def daily_job(runtime: Runtime) -> str:
    """The worker's daily run (``reminders.dry_run`` plans and logs only)."""
    settings = runtime.settings.reminders
    if not settings.enabled:
        return "reminders disabled (reminders.enabled = false)"
    return run_reminders(runtime, dry_run=settings.dry_run, send_budget=DAILY_SEND_BUDGET_SECONDS).summary()


def retry_job(runtime: Runtime) -> str:
    """Between daily runs: send letters whose retry time came (transient SMTP failures)."""
    if not runtime.settings.reminders.enabled or runtime.settings.reminders.dry_run:
        return "reminders not sending"
    report = ReminderSender(runtime).send_due(time_budget=20 * 60)
    return f"sent {report.sent}, retrying {report.retrying}, failed {report.failed}"
