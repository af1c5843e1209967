"""Everything the dashboard shows, for all levels or one, gathered from our store and MemberLux."""

from __future__ import annotations

import threading
from dataclasses import dataclass
from datetime import date, datetime, timedelta

from sidecar.bootstrap import Runtime
from sidecar.bridge import attention
from sidecar.dashboard import outcomes, queries
from sidecar.domain.reminders import LEARNER_STEPS
from sidecar.memberlux.reader import Level
from sidecar.monitor.settings import MonitorSettings

#: How long the letters-and-outcomes comparison is reused: it reads a year of key rows, and its figures
#: change only with new renewals, certificates and letters.
AFTER_LETTERS_TTL = timedelta(minutes=10)
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
    after: tuple[outcomes.StepComparison, ...]
    after_first: date
    after_last: date
    after_computed_at: datetime
    alerts: attention.Counts

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


def after_letters(runtime: Runtime, today: date, window_days: int, levels: list[int],
                  delays: dict[int, tuple[int | None, ...]]) -> outcomes.AfterLetters:
    """The letters-and-outcomes comparison of these levels (all levels' delays decide the common ones)."""
    certificates_on = bool(runtime.site.features.get("certificates", False))
    since = today - timedelta(days=outcomes.PERIOD_DAYS)
    with runtime.sessions() as session:
        letters = queries.sent_letters(session, since, today)
        started = queries.first_letter_days(session)
        certificates = queries.manual_certificate_days(session, levels) if certificates_on else {}
    return outcomes.compare(
        today=today, window_days=window_days, levels=levels, delays=outcomes.comparison_delays(delays),
        letters=letters, first_letter_days=started, certificates=certificates,
        renewal_starts=runtime.reader.renewal_starts, lapses=runtime.reader.lapses)


class AfterLettersCache:
    """The comparison for every level, computed once per UTC day and window and reused for
    :data:`AFTER_LETTERS_TTL` (one level's figures are a selection of it); one per app."""

    def __init__(self, runtime: Runtime, ttl: timedelta = AFTER_LETTERS_TTL) -> None:
        self.runtime, self.ttl = runtime, ttl
        self._kept: dict[tuple[date, int], tuple[datetime, outcomes.AfterLetters]] = {}
        self._lock = threading.Lock()

    def get(self, today: date, window_days: int, levels: list[Level]) -> tuple[datetime, outcomes.AfterLetters]:
        key, now = (today, window_days), self.runtime.clock.now()
        with self._lock:
            kept = self._kept.get(key)
            if kept is not None and now - kept[0] < self.ttl:
                return kept
        result = after_letters(self.runtime, today, window_days, [lv.term_id for lv in levels],
                               configured_delays(self.runtime, levels))
        with self._lock:
            self._kept = {k: v for k, v in self._kept.items() if k[0] == today}   # earlier days are done with
            self._kept[key] = (now, result)
        return now, result


def build(runtime: Runtime, window_days: int, level: Level | None, cache: AfterLettersCache) -> Dashboard:
    today = runtime.clock.today_utc()
    levels = runtime.reader.levels()
    shown = [level] if level is not None else levels
    shown_ids = [lv.term_id for lv in shown]
    trend_since, grants_since = today - timedelta(days=TREND_DAYS), today - timedelta(days=GRANT_DAYS - 1)
    with runtime.sessions() as session:
        now = queries.sleepers_now(session)
        recent = queries.letters_sent(session, today - timedelta(days=LETTER_DAYS - 1))
        ever = queries.letters_sent(session)
        trend = queries.sleeper_trend(session, trend_since, None if level is None else shown_ids)
        grants = [g for g in queries.grants_per_day(session, grants_since, today)
                  if level is None or g.term_id == level.term_id]
        alerts = attention.counts(session, runtime.settings, runtime.clock.now())
    rows = [LevelRow(lv, now[lv.term_id].sleepers if lv.term_id in now else None,
                     now[lv.term_id].evaluated_for if lv.term_id in now else None,
                     tuple(recent.get((lv.term_id, s), 0) for s in LEARNER_STEPS),
                     tuple(ever.get((lv.term_id, s), 0) for s in LEARNER_STEPS)) for lv in shown]
    computed_at, after = cache.get(today, window_days, levels)
    return Dashboard(today=today, window_days=window_days, level=level, rows=rows, trend=trend,
                     trend_since=trend_since, grants=grants, grants_since=grants_since,
                     after=after.total(shown_ids), after_first=after.first_day, after_last=after.last_day,
                     after_computed_at=computed_at, alerts=alerts)
