"""Everything the dashboard shows, for all levels or one, gathered from our store and MemberLux."""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from datetime import date, datetime, timedelta

from sidecar.bootstrap import Runtime
from sidecar.bridge import attention
from sidecar.dashboard import outcomes, queries, snapshots
from sidecar.domain.reminders import LEARNER_STEPS
from sidecar.memberlux.reader import Level
from sidecar.monitor.settings import MonitorSettings

TREND_DAYS = 90
GRANT_DAYS = 30
LETTER_DAYS = 30


@dataclass(frozen=True)
class LevelRow:
    level: Level
    sleepers: int | None               # None: never refreshed
    evaluated_for: date | None
    letters_recent: tuple[int, ...]    # letters sent in the last LETTER_DAYS days, per step
    letters_all: tuple[int, ...]       # letters ever sent, per step


@dataclass(frozen=True)
class Dashboard:
    today: date
    window_days: int
    level: Level | None                # None: every level
    rows: list[LevelRow]
    trend: list[tuple[date, int]]
    trend_since: date
    grants: list[queries.GrantCount]
    grants_since: date
    #: "What happened after each letter" as the worker last stored it; None before its first run.
    stored: snapshots.Snapshot | None
    after: tuple[outcomes.StepComparison, ...]      # the shown levels' part of it (empty: none stored)
    now: datetime
    alerts: attention.Counts

    def after_age_minutes(self) -> int | None:
        """Whole minutes since the stored comparison was computed."""
        if self.stored is None:
            return None
        return max(0, int((self.now - self.stored.computed_at).total_seconds() // 60))

    @property
    def sleepers(self) -> int:
        return sum(row.sleepers or 0 for row in self.rows)

    def letters_recent(self) -> tuple[int, ...]:
        return tuple(sum(r.letters_recent[i] for r in self.rows) for i in range(len(LEARNER_STEPS)))

    def letters_all(self) -> tuple[int, ...]:
        return tuple(sum(r.letters_all[i] for r in self.rows) for i in range(len(LEARNER_STEPS)))


def configured_delays(runtime: Runtime, levels: list[Level]) -> dict[int, tuple[int | None, ...]]:
    """Per level, each learner letter's delay in days when that letter is configured, else None."""
    service = MonitorSettings(runtime)
    return {lv.term_id: tuple(letter.days if letter.configured else None
                              for letter in service.effective(lv.term_id).letters) for lv in levels}


def after_letters_windows(runtime: Runtime, today: date, windows: Sequence[int], levels: list[int],
                          delays: dict[int, tuple[int | None, ...]]) -> dict[int, outcomes.AfterLetters]:
    """The letters-and-outcomes comparison of these levels for each outcome window (all levels' delays
    decide the common ones), reading our store and MemberLux once for all of them."""
    certificates_on = bool(runtime.site.features.get("certificates", False))
    since = today - timedelta(days=outcomes.PERIOD_DAYS)
    with runtime.sessions() as session:
        letters = queries.sent_letters(session, since, today)
        started = queries.first_letter_days(session)
        certificates = queries.manual_certificate_days(session, levels) if certificates_on else {}
    return outcomes.compare_windows(
        today=today, windows=windows, levels=levels, delays=outcomes.comparison_delays(delays),
        letters=letters, first_letter_days=started, certificates=certificates,
        renewal_starts=runtime.reader.renewal_starts, lapses=runtime.reader.lapses)


def after_letters(runtime: Runtime, today: date, window_days: int, levels: list[int],
                  delays: dict[int, tuple[int | None, ...]]) -> outcomes.AfterLetters:
    """The comparison for one outcome window."""
    return after_letters_windows(runtime, today, (window_days,), levels, delays)[window_days]


def build(runtime: Runtime, window_days: int, level: Level | None) -> Dashboard:
    """The page's figures: statements on our store (the comparison as the worker stored it) and the
    site's levels; nothing here reads MemberLux's key rows."""
    today, now = runtime.clock.today_utc(), runtime.clock.now()
    levels = runtime.reader.levels()
    shown = [level] if level is not None else levels
    shown_ids = [lv.term_id for lv in shown]
    trend_since, grants_since = today - timedelta(days=TREND_DAYS), today - timedelta(days=GRANT_DAYS - 1)
    with runtime.sessions() as session:
        now_counts = queries.sleepers_now(session)
        recent = queries.letters_sent(session, today - timedelta(days=LETTER_DAYS - 1))
        ever = queries.letters_sent(session)
        trend = queries.sleeper_trend(session, trend_since, None if level is None else shown_ids)
        grants = [g for g in queries.grants_per_day(session, grants_since, today)
                  if level is None or g.term_id == level.term_id]
        alerts = attention.counts(session, runtime.settings, now)
        stored = snapshots.load(session, window_days)
    rows = [LevelRow(lv, now_counts[lv.term_id].sleepers if lv.term_id in now_counts else None,
                     now_counts[lv.term_id].evaluated_for if lv.term_id in now_counts else None,
                     tuple(recent.get((lv.term_id, s), 0) for s in LEARNER_STEPS),
                     tuple(ever.get((lv.term_id, s), 0) for s in LEARNER_STEPS)) for lv in shown]
    return Dashboard(today=today, window_days=window_days, level=level, rows=rows, trend=trend,
                     trend_since=trend_since, grants=grants, grants_since=grants_since, stored=stored,
                     after=stored.after.total(shown_ids) if stored is not None else (), now=now, alerts=alerts)
