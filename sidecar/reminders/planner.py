"""The daily planner: which sleepers are due which letter today, recorded in the ledger.

Sleepers come from the learning monitor's read model (``mls_sleepers``), refreshed first for the
levels that need it, so planning on a large site reads our store, not WordPress. A run reads only
sleepers whose expiry X falls in the window where a step can still be sent (X ≥ day − last step −
catch-up), through the ``(term_id, expired_on)`` index: for an older X every step is ``too_late``,
which is never recorded, so leaving them out changes nothing a run does.

Every decision goes into ``mls_reminders`` under its unique (user, level, X, step) key: ``planned``
for a letter to send, ``skipped`` with a reason otherwise. The unique key is the last line of defence
when two planners race (the job also runs under a lease); a duplicate insert is dropped, never sent.

A level whose reminders are not approved yet (:mod:`sidecar.reminders.approval`) is planned the same
way, but nothing of it goes into the ledger: what would be sent is reported as ``await`` and kept as
the level's awaiting list, for an administrator to review before approving it.

A dry run takes the same decisions and records none. It reads every sleeper of the level, not only
the window, so the chains a run leaves alone because they are long past (``too_late``) are listed
too, each decided by the same :func:`~sidecar.domain.reminders.plan_learner`. It may also be asked
about another day, which is evaluated live from MemberLux's tables (read-only) instead of the read
model.
"""

from __future__ import annotations

import logging
import time
from collections import Counter
from collections.abc import Callable, Iterable, Sequence
from dataclasses import dataclass, field, replace
from datetime import date, datetime, timedelta

import sqlalchemy as sa
from sqlalchemy.exc import IntegrityError, OperationalError

from sidecar.bootstrap import Runtime
from sidecar.domain.reminders import (
    ADMIN_STEP,
    Decision,
    LedgerEntry,
    Schedule,
    SkipReason,
    State,
    admin_due,
    plan_learner,
)
from sidecar.monitor.refresh import SleeperRefresher
from sidecar.monitor.settings import EMAIL_PATTERN, LevelSettings, MonitorSettings
from sidecar.store.monitor_models import SleeperEntry
from sidecar.store.reminder_models import Reminder, ReminderDigest
from sidecar.reminders.approval import approved_levels, letter_count, record_awaiting
from sidecar.reminders.unsubscribe import unsubscribed_ids
from sidecar.store.db import rolled_back_by_contention, run_transaction, unit_of_work

log = logging.getLogger(__name__)

ProgressCallback = Callable[[int, int], None]   # (levels done, levels in all)


def schedule_of(settings: LevelSettings) -> Schedule:
    days = tuple(letter.days if letter.configured else None for letter in settings.letters)
    admin_on = bool((settings.admin_subject.strip() or settings.admin_body.strip())
                    and EMAIL_PATTERN.match(settings.admin_email))
    return Schedule(letter_days=days, admin_days_after_last=settings.admin_days_after_last,  # type: ignore[arg-type]
                    admin_on=admin_on)


@dataclass(frozen=True, slots=True)   # a dry run on a large site holds one per sleeper
class PlanItem:
    """One decision, as a dry run or the run report shows it."""

    user_id: int
    term_id: int
    email: str
    name: str
    expired_on: date
    step: int                 # 1..3 letter, 4 admin digest entry
    due_on: date
    action: str               # send | skip | hold (held by a letter whose outcome is unknown) | digest
    #                           | await (would be sent, but the level is not approved)
    reason: str = ""          # why skipped, held or awaiting (SkipReason value)
    recorded: bool = True     # whether a run records it in the ledger; False: reported only (too late, held,
    #                           any decision of a level not approved). A dry run records nothing.


@dataclass
class PlanReport:
    day: date
    dry_run: bool
    levels: list[int] = field(default_factory=list)
    items: list[PlanItem] = field(default_factory=list)
    levels_off: list[int] = field(default_factory=list)
    unapproved: list[int] = field(default_factory=list)   # levels of ``levels`` whose reminders are not approved
    duplicates: int = 0       # decisions another planner had recorded first
    seconds: float = 0.0

    def counts(self) -> dict[str, int]:
        counter = Counter(item.action if item.action != "skip" else f"skip:{item.reason}" for item in self.items)
        return dict(sorted(counter.items()))

    def awaiting(self, term_id: int) -> list[PlanItem]:
        """What the level would send once approved (empty for an approved level)."""
        return [item for item in self.items if item.term_id == term_id and item.action == "await"]

    def awaiting_letters(self) -> dict[int, int]:
        """Letters each level that is not approved would send (its digest counting as one letter)."""
        steps: dict[int, list[int]] = {term_id: [] for term_id in self.unapproved}
        for item in self.items:
            if item.action == "await":
                steps.setdefault(item.term_id, []).append(item.step)
        return {term_id: letter_count(found) for term_id, found in steps.items()}


@dataclass(frozen=True)
class _Sleeper:
    user_id: int
    expired_on: date
    blocked: bool
    email: str
    name: str


class ReminderPlanner:
    def __init__(self, runtime: Runtime) -> None:
        self.runtime = runtime
        self.settings = runtime.settings.reminders

    # --- public -------------------------------------------------------------------------------------

    def plan(self, day: date | None = None, *, levels: Sequence[int] | None = None, dry_run: bool = False,
             progress: ProgressCallback | None = None) -> PlanReport:
        started = time.perf_counter()
        today = self.runtime.clock.today_utc()
        day = day or today
        if day != today and not dry_run:
            raise ValueError("only a dry run can plan for another day than today (UTC)")
        all_settings = MonitorSettings(self.runtime).all_levels()
        if levels:
            unknown = sorted(set(levels) - set(all_settings))
            if unknown:
                raise LookupError(f"no access level {', '.join(map(str, unknown))}")
            all_settings = {t: all_settings[t] for t in dict.fromkeys(levels)}
        report = PlanReport(day=day, dry_run=dry_run)
        active = {}
        for term_id, level in all_settings.items():
            schedule = schedule_of(level)
            if not level.enabled or not (schedule.steps or schedule.digest_enabled):
                report.levels_off.append(term_id)
            else:
                active[term_id] = schedule
        report.levels = list(active)
        live = day != today
        if active and not live:
            self._refresh_read_model()
        with self.runtime.sessions() as session:
            unsubscribed = unsubscribed_ids(session)
            approved = approved_levels(session)
        report.unapproved = [term_id for term_id in active if term_id not in approved]
        opted_out = self.runtime.reader.mailing_unsubscribed_ids()   # in MemberLux's own letters
        now = self.runtime.clock.now()
        for done, (term_id, schedule) in enumerate(active.items(), start=1):
            # A run needs only the chains that can still get a letter; a dry run shows every chain.
            since = None if dry_run else self._window_start(schedule, day)
            sleepers = self._live_sleepers(term_id, day) if live else self._stored_sleepers(term_id, schedule, day, since)
            items = self._plan_letters(term_id, schedule, day, sleepers, unsubscribed, opted_out, since)
            items += self._plan_digest(term_id, schedule, day, None if not live else sleepers)
            if term_id not in approved:
                items = [_held_for_approval(item) for item in items]
                if not dry_run:
                    record_awaiting(self.runtime, term_id, [i for i in items if i.action == "await"], now)
            elif not dry_run:
                report.duplicates += self._record(term_id, day, items, now)
            report.items.extend(items)
            if progress is not None:
                progress(done, len(active))
        report.seconds = round(time.perf_counter() - started, 3)
        log.info("reminders planned for %s%s: %s in %.2f s", day, " (dry run)" if dry_run else "", report.counts(),
                 report.seconds)
        return report

    # --- sleepers -----------------------------------------------------------------------------------

    def _refresh_read_model(self, wait_seconds: float = 600.0) -> None:
        """Take in the site's changes under the worker's refresh lease, so that a planner and the refresh
        job never write the model at once; waits while someone else holds it."""
        from sidecar.monitor.increments import refresh_lease

        with refresh_lease(self.runtime, "reminders planner", wait_seconds) as held:
            if not held:
                log.warning("sleepers refresh still running elsewhere after %.0f s; planning on the model as it is",
                            wait_seconds)
                return
            SleeperRefresher(self.runtime).refresh_stale(
                timedelta(minutes=self.runtime.settings.schedule.sleepers_max_age_minutes))

    def _window_start(self, schedule: Schedule, day: date) -> date:
        longest = max((d for _, d in schedule.steps), default=0)
        return day - timedelta(days=longest + self.settings.catch_up_days)

    def _stored_sleepers(self, term_id: int, schedule: Schedule, day: date, since: date | None) -> dict[int, _Sleeper]:
        """Sleepers of the read model whose expiry is ``since`` or later (all of them for None)."""
        if not schedule.steps:
            return {}
        e = SleeperEntry
        conditions = [e.term_id == term_id, e.expired_on <= day]
        if since is not None:
            conditions.append(e.expired_on >= since)
        return self._read_sleepers(*conditions)

    def _read_sleepers(self, *conditions: sa.ColumnElement[bool]) -> dict[int, _Sleeper]:
        e = SleeperEntry
        stmt = (sa.select(e.user_id, e.expired_on, e.blocked, e.email, e.first_name, e.last_name)
                .where(*conditions).execution_options(yield_per=5000))
        with self.runtime.sessions() as session:
            return {int(r.user_id): _Sleeper(int(r.user_id), r.expired_on, bool(r.blocked), r.email,
                                             f"{r.first_name} {r.last_name}".strip())
                    for r in session.execute(stmt)}

    def _live_sleepers(self, term_id: int, day: date) -> dict[int, _Sleeper]:
        refresher = SleeperRefresher(self.runtime)
        evaluation = refresher.evaluate_level(term_id, day, parents=self.runtime.reader.level_parents())
        return {user_id: _Sleeper(user_id, expired_on, bool(blocked), email, f"{first} {last}".strip())
                for user_id, expired_on, _grant, blocked, email, _login, first, last in evaluation.sleepers}

    # --- ledger -------------------------------------------------------------------------------------

    def _ledger(self, term_id: int, since: date | None) -> dict[tuple[int, date], dict[int, LedgerEntry]]:
        r = Reminder
        stmt = (sa.select(r.user_id, r.expired_on, r.step, r.state, r.sent_at, r.data_started_at)
                .where(r.term_id == term_id, *([r.expired_on >= since] if since is not None else [])))
        chains: dict[tuple[int, date], dict[int, LedgerEntry]] = {}
        with self.runtime.sessions() as session:
            for row in session.execute(stmt.execution_options(yield_per=5000)):
                sent_on = _sent_on(row.state, row.sent_at, row.data_started_at)
                chains.setdefault((int(row.user_id), row.expired_on), {})[int(row.step)] = LedgerEntry(
                    State(row.state), sent_on)
        return chains

    def _plan_letters(self, term_id: int, schedule: Schedule, day: date, sleepers: dict[int, _Sleeper],
                      unsubscribed: set[int], opted_out: set[int], since: date | None) -> list[PlanItem]:
        """The letters' decisions for the sleepers whose expiry is ``since`` or later (all for None)."""
        if not schedule.steps:
            return []
        chains = self._ledger(term_id, since)
        items: list[PlanItem] = []
        for sleeper in sleepers.values():
            if since is not None and sleeper.expired_on < since:
                continue
            chain = chains.get((sleeper.user_id, sleeper.expired_on), {})
            for decision in plan_learner(schedule, sleeper.expired_on, day, chain,
                                         catch_up_days=self.settings.catch_up_days,
                                         unknown_hold_days=self.settings.unknown_hold_days):
                items.append(self._item(term_id, sleeper, decision, unsubscribed, opted_out))
        return items

    @staticmethod
    def _item(term_id: int, sleeper: _Sleeper, decision: Decision, unsubscribed: set[int],
              opted_out: set[int]) -> PlanItem:
        reason = decision.reason
        if decision.send:
            # Known at planning time already; checked again right before sending.
            if sleeper.blocked:
                reason = SkipReason.BLOCKED
            elif sleeper.user_id in unsubscribed:
                reason = SkipReason.UNSUBSCRIBED
            elif sleeper.user_id in opted_out:
                reason = SkipReason.MEMBERLUX_UNSUBSCRIBED
            elif not EMAIL_PATTERN.match(sleeper.email or ""):
                reason = SkipReason.NO_EMAIL
        return PlanItem(
            user_id=sleeper.user_id, term_id=term_id, email=sleeper.email, name=sleeper.name,
            expired_on=sleeper.expired_on, step=decision.step, due_on=decision.due_on,
            action="send" if reason is None else "hold" if reason is SkipReason.HELD else "skip",
            reason=reason.value if reason else "",
            recorded=reason not in (SkipReason.TOO_LATE, SkipReason.HELD),
        )

    def _plan_digest(self, term_id: int, schedule: Schedule, day: date,
                     live: dict[int, _Sleeper] | None) -> list[PlanItem]:
        """Learners who received every letter of their chain and still sleep under the same X.

        Candidates come from the ledger (last step sent, no digest entry yet), so the cost follows the
        letters sent, not the number of sleepers.
        """
        if not schedule.digest_enabled:
            return []
        r, later = Reminder, sa.orm.aliased(Reminder)
        listed = (sa.select(later.id).where(later.user_id == r.user_id, later.term_id == r.term_id,
                                            later.expired_on == r.expired_on, later.step == ADMIN_STEP))
        stmt = (sa.select(r.user_id, r.expired_on, r.state, r.sent_at, r.data_started_at)
                .where(r.term_id == term_id, r.step == schedule.last_step,
                       r.state.in_((State.SENT.value, State.UNKNOWN.value)), ~listed.exists()))
        with self.runtime.sessions() as session:
            candidates = [(int(row.user_id), row.expired_on, LedgerEntry(State(row.state), _sent_on(
                row.state, row.sent_at, row.data_started_at))) for row in session.execute(stmt)]
        due = []
        for user_id, expired_on, last in candidates:
            chain = {schedule.last_step: last}
            when = admin_due(schedule, day, chain,  # type: ignore[arg-type]
                             unknown_hold_days=self.settings.unknown_hold_days)
            if when is not None:
                due.append((user_id, expired_on, when))
        if live is None:
            ids = [u for u, _, _ in due]
            live = {}
            for start in range(0, len(ids), 500):
                live.update(self._read_sleepers(SleeperEntry.term_id == term_id,
                                                SleeperEntry.user_id.in_(ids[start:start + 500])))
        items: list[PlanItem] = []
        for user_id, expired_on, when in due:
            sleeper = live.get(user_id)
            still = sleeper is not None and sleeper.expired_on == expired_on
            items.append(PlanItem(
                user_id=user_id, term_id=term_id, email=sleeper.email if sleeper else "",
                name=sleeper.name if sleeper else "", expired_on=expired_on, step=ADMIN_STEP, due_on=when,
                action="digest" if still else "skip", reason="" if still else SkipReason.NOT_SLEEPER.value,
            ))
        return items

    def _record(self, term_id: int, day: date, items: Iterable[PlanItem], now: datetime) -> int:
        """Insert the decisions; returns how many another planner had already recorded."""
        rows = [i for i in items if i.recorded]
        if not rows:
            return 0
        digest_id = None
        if any(i.action == "digest" for i in rows):
            digest_id = self._digest_for(term_id, day, now)
            if digest_id is None:  # today's digest already went out: these wait for tomorrow's
                rows = [i for i in rows if i.action != "digest"]
        values = [{
            "user_id": i.user_id, "term_id": term_id, "expired_on": i.expired_on, "step": i.step,
            "state": State.SKIPPED.value if i.action == "skip" else State.PLANNED.value,
            "reason": i.reason, "due_on": i.due_on, "planned_at": now, "updated_at": now, "attempts": 0,
            "to_address": i.email[:200] if i.step != ADMIN_STEP else "", "subject": "", "last_error": "",
            "digest_id": digest_id if i.action == "digest" else None,
        } for i in rows]
        duplicates = 0
        table = Reminder.__table__
        for start in range(0, len(values), 1000):
            chunk = values[start:start + 1000]
            try:
                with unit_of_work(self.runtime.sessions) as session:
                    session.execute(table.insert(), chunk)
            except (IntegrityError, OperationalError) as exc:
                if isinstance(exc, OperationalError) and not rolled_back_by_contention(exc):
                    raise
                # Another planner got there first for some rows: keep theirs, add the rest one by one.
                duplicates += sum(0 if self._insert_one(table, value) else 1 for value in chunk)
        if digest_id is not None:
            with unit_of_work(self.runtime.sessions) as session:
                count = session.scalar(sa.select(sa.func.count()).select_from(Reminder)
                                       .where(Reminder.digest_id == digest_id))
                session.execute(sa.update(ReminderDigest).where(ReminderDigest.id == digest_id)
                                .values(learners=count, updated_at=now))
        return duplicates

    def _insert_one(self, table: sa.Table, value: dict) -> bool:
        """Insert one decision; False when the ledger already holds it. InnoDB may pick a racing
        insert of the same unique key as a deadlock victim: that is run again, not an error."""
        try:
            run_transaction(self.runtime.sessions, lambda session: session.execute(table.insert(), [value]),
                            "the insert of one reminder decision")
        except IntegrityError:
            return False
        return True

    def _digest_for(self, term_id: int, day: date, now: datetime) -> int | None:
        """Today's digest of the level while it can still take learners (planned), else None."""
        d = ReminderDigest
        for _ in range(2):
            with self.runtime.sessions() as session:
                found = session.execute(sa.select(d.id, d.state).where(d.term_id == term_id, d.day == day)).first()
            if found is not None:
                return int(found.id) if found.state == State.PLANNED.value else None
            try:
                with unit_of_work(self.runtime.sessions) as session:
                    session.add(d(term_id=term_id, day=day, state=State.PLANNED.value, reason="", due_on=day,
                                  planned_at=now, updated_at=now, attempts=0, to_address="", subject="",
                                  last_error="", learners=0))
            except IntegrityError:
                continue  # created by a concurrent planner: read it again
        return None


def _held_for_approval(item: PlanItem) -> PlanItem:
    """A decision of a level that is not approved: reported, never recorded; what would go out awaits."""
    if item.action in ("send", "digest"):
        return replace(item, action="await", reason=SkipReason.NOT_APPROVED.value, recorded=False)
    return replace(item, recorded=False)


def _sent_on(state: str, sent_at: datetime | None, data_started_at: datetime | None) -> date | None:
    """The UTC day a letter went out — for one whose outcome is unknown, the day it was handed over."""
    moment = data_started_at if state == State.UNKNOWN.value else sent_at
    return moment.date() if moment is not None else None

