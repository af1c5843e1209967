"""One reminders run: plan today's decisions, then send what is due. The worker's daily job and
``mlsidecar remind`` both call :func:`run_reminders`."""

from __future__ import annotations

import logging
from collections.abc import Sequence
from dataclasses import dataclass
from datetime import date

import sqlalchemy as sa

from sidecar.bootstrap import Runtime
from sidecar.domain.reminders import ADMIN_STEP, State
from sidecar.mail.mailer import Mailer
from sidecar.reminders.planner import PlanReport, ProgressCallback, ReminderPlanner
from sidecar.reminders.sender import ReminderSender, SendReport
from sidecar.store.reminder_models import Reminder, ReminderDigest

log = logging.getLogger(__name__)


@dataclass
class RunReport:
    plan: PlanReport
    send: SendReport | None     # None for a dry run
    awaiting_decision: int = 0  # ledger rows (letters and digests) in state unknown after the run

    def summary(self) -> str:
        counts = ", ".join(f"{k} {v}" for k, v in self.plan.counts().items()) or "nothing due"
        text = f"{self.plan.day} (UTC){' dry run' if self.plan.dry_run else ''}: planned {counts}"
        if self.send is not None:
            s = self.send
            text += (f"; sent {s.sent}, retrying {s.retrying}, failed {s.failed}"
                     f"{', outcome unknown ' + str(s.unknown) if s.unknown else ''}"
                     f"{', skipped ' + str(sum(s.skipped.values())) if s.skipped else ''}"
                     f"{'; stopped: ' + s.stopped if s.stopped else ''}")
        if self.plan.unapproved:
            text += "; " + self.approval_note()
        if self.awaiting_decision:
            text += (f"; {self.awaiting_decision} letter(s) or digest(s) with an unknown outcome await an "
                     "administrator's decision (mark delivered or send again: /reminders?state=unknown)")
        return text

    def approval_note(self) -> str:
        """Which levels are held for approval, how many letters each holds, and how to approve them."""
        held = ", ".join(f"{term_id} ({letters} letter(s))" for term_id, letters in self.plan.awaiting_letters().items())
        return (f"not approved, nothing sent: level {held}; review them at /reminders/approvals or with "
                "`mlsidecar remind --dry-run --level T`, then approve: `mlsidecar remind approve --level T --letters N`")


DAILY_SEND_BUDGET_SECONDS = 90 * 60   # the rest is sent by the retry job, under its own lease


def run_reminders(runtime: Runtime, *, day: date | None = None, levels: Sequence[int] | None = None,
                  dry_run: bool = False, progress: ProgressCallback | None = None,
                  mailer: Mailer | None = None, send_budget: float | None = None) -> RunReport:
    plan = ReminderPlanner(runtime).plan(day, levels=levels, dry_run=dry_run, progress=progress)
    if dry_run:
        return RunReport(plan, None, awaiting_decision(runtime))
    sent = ReminderSender(runtime, mailer).send_due(time_budget=send_budget)
    report = RunReport(plan, sent, awaiting_decision(runtime))
    log.info("reminders: %s", report.summary())
    return report


def awaiting_decision(runtime: Runtime) -> int:
    """Letters and digests whose outcome is unknown: only an administrator moves them on."""
    with runtime.sessions() as session:
        return sum(session.scalar(sa.select(sa.func.count()).select_from(model)
                                  .where(model.state == State.UNKNOWN.value, *extra)) or 0
                   for model, extra in ((Reminder, (Reminder.step != ADMIN_STEP,)), (ReminderDigest, ())))


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
    return (f"sent {report.sent}, retrying {report.retrying}, failed {report.failed}"
            f"{', outcome unknown ' + str(report.unknown) if report.unknown else ''}")
