"""What happened after each letter, next to sleepers who got none (rules: sidecar.domain.letter_outcomes).

Set-based on both databases: the letters and the manual certificates come from our store in one
statement each; MemberLux answers two range queries, the keys of the levels with letters that started
since the earliest of those letters' access ends (their renewals), and the accesses that ended without
being carried on, with each one's first renewal, on the days the comparison group can use. The rest
is matching in memory, by (user, level), with a binary search per letter.

* **Letters**: learner letters in state ``sent`` whose UTC sent day L lies in the :data:`PERIOD_DAYS`
  days before today and whose window is over (``L + N < today``).
* **No letter**: (user, level, X) lapses (see :meth:`MemberLuxReader.lapses`) with L = X + the step's
  delay in the same period, on a level that had sent no letter before L (levels without reminders, or
  before their first letter), the learner still a sleeper on L (not renewed, no manual certificate).
  The delay is the level's own for that step when its letter is configured, else the delay most levels
  with that letter use (the shorter on a tie); a step no level configures has no comparison.
  Not considered for this group: ancestor levels' keys and blocked accounts.
"""

from __future__ import annotations

from bisect import bisect_left
from collections import Counter
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass, field
from datetime import date, timedelta

from sidecar.domain.letter_outcomes import Outcome, Tally, measured_days, outcome, still_sleeping
from sidecar.domain.reminders import LEARNER_STEPS

PERIOD_DAYS = 365


@dataclass(frozen=True)
class StepComparison:
    step: int
    letters: Tally = field(default_factory=Tally)
    no_letter: Tally = field(default_factory=Tally)
    delay_days: int | None = None       # the comparison's delay (None: no comparison for this step)


@dataclass(frozen=True)
class AfterLetters:
    window_days: int
    first_day: date                     # letter days measured: first_day .. last_day
    last_day: date
    by_level: dict[int, tuple[StepComparison, ...]]

    def total(self, levels: Iterable[int] | None = None) -> tuple[StepComparison, ...]:
        """Per step, the sum over ``levels`` (all when None); a level the comparison does not know (made
        after it was computed) adds nothing."""
        chosen = ([self.by_level[lv] for lv in levels if lv in self.by_level] if levels is not None
                  else list(self.by_level.values()))
        merged = []
        for index, step in enumerate(LEARNER_STEPS):
            rows = [steps[index] for steps in chosen]
            merged.append(StepComparison(step, sum((r.letters for r in rows), Tally()),
                                         sum((r.no_letter for r in rows), Tally())))
        return tuple(merged)


def comparison_delays(configured: Mapping[int, Sequence[int | None]]) -> dict[int, dict[int, int]]:
    """Per level, per step, the delay used for the comparison group: the level's own when that letter
    is configured, else the one most levels with the letter configured use (the shorter on a tie)."""
    common: dict[int, int] = {}
    for index, step in enumerate(LEARNER_STEPS):
        seen = Counter(days[index] for days in configured.values() if days[index] is not None)
        if seen:
            common[step] = min(seen, key=lambda d: (-seen[d], d))
    delays: dict[int, dict[int, int]] = {}
    for level, days in configured.items():
        chosen = {step: own if own is not None else common.get(step)
                  for step, own in zip(LEARNER_STEPS, days, strict=True)}
        delays[level] = {step: d for step, d in chosen.items() if d is not None}
    return delays


class _Renewals:
    """Key starts by (user, level), sorted, to find the first renewal on or after a day."""

    def __init__(self, starts: Iterable[tuple[int, int, date]]) -> None:
        self._by_pair: dict[tuple[int, int], list[date]] = {}
        for user, level, day in starts:
            self._by_pair.setdefault((user, level), []).append(day)
        for days in self._by_pair.values():
            days.sort()

    def first_on_or_after(self, user: int, level: int, day: date) -> date | None:
        days = self._by_pair.get((user, level))
        if not days:
            return None
        at = bisect_left(days, day)
        return days[at] if at < len(days) else None


def lapse_ranges(levels: Sequence[int], delays: Mapping[int, Mapping[int, int]], first_letter_days: Mapping[int, date],
                 first_day: date, last_day: date) -> dict[int, tuple[date, date]]:
    """Per level, the access ends X whose would-be letter day X + delay can fall in ``first_day`` ..
    ``last_day`` and before the level's first letter; levels where none can are left out."""
    ranges = {}
    for level in levels:
        steps = delays.get(level, {})
        if not steps:
            continue
        started = first_letter_days.get(level)
        last_letter_day = min(last_day, started - timedelta(days=1)) if started is not None else last_day
        first, last = first_day - timedelta(days=max(steps.values())), last_letter_day - timedelta(days=min(steps.values()))
        if first <= last:
            ranges[level] = (first, last)
    return ranges


def compare(*, today: date, window_days: int, levels: Sequence[int], delays: Mapping[int, Mapping[int, int]],
            letters: Iterable, first_letter_days: Mapping[int, date], certificates: Mapping[tuple[int, int], list[date]],
            renewal_starts, lapses) -> AfterLetters:
    """Tally letters and lapses. ``renewal_starts(levels, first, last)`` and ``lapses(ranges)`` are the
    reader's range queries; ``letters`` the store's sent letters of the period."""
    first_day, last_day = measured_days(today, window_days, PERIOD_DAYS)
    wanted = set(levels)
    letters = [lt for lt in letters if lt.term_id in wanted and first_day <= lt.sent_on <= last_day]
    # Mutable counts [learners, renewed, certified, either] per (level, step) and group (0: letter, 1: none):
    # tens of thousands of learners, so no new Tally per learner.
    counts = {(level, step, group): [0, 0, 0, 0] for level in levels for step in LEARNER_STEPS for group in (0, 1)}

    def count(key: tuple[int, int, int], result: Outcome) -> None:
        row = counts[key]
        row[0] += 1
        row[1] += result.renewed
        row[2] += result.certified
        row[3] += result.any

    if letters:
        # Renewals of the learners who got a letter: keys of those levels starting from the earliest X on.
        renewals = _Renewals(renewal_starts(sorted({lt.term_id for lt in letters}),
                                            min(lt.expired_on for lt in letters), today))
        for lt in letters:
            renewed_on = renewals.first_on_or_after(lt.user_id, lt.term_id, lt.expired_on)
            count((lt.term_id, lt.step, 0),
                  outcome(lt.sent_on, window_days, renewed_on, certificates.get((lt.user_id, lt.term_id), ())))

    for user, level, expired_on, renewed_on in lapses(lapse_ranges(levels, delays, first_letter_days, first_day,
                                                                   last_day)):
        started = first_letter_days.get(level)
        certified = certificates.get((user, level), ())
        for step, delay in delays[level].items():
            letter_day = expired_on + timedelta(days=delay)
            if not (first_day <= letter_day <= last_day) or (started is not None and letter_day >= started):
                continue
            if not still_sleeping(letter_day, renewed_on, certified):
                continue
            count((level, step, 1), outcome(letter_day, window_days, renewed_on, certified))

    by_level = {level: tuple(StepComparison(step, Tally(*counts[(level, step, 0)]), Tally(*counts[(level, step, 1)]),
                                            delays.get(level, {}).get(step))
                             for step in LEARNER_STEPS) for level in levels}
    return AfterLetters(window_days, first_day, last_day, by_level)


def compare_windows(*, today: date, windows: Sequence[int], levels: Sequence[int], delays: Mapping[int, Mapping[int, int]],
                    letters: Iterable, first_letter_days: Mapping[int, date],
                    certificates: Mapping[tuple[int, int], list[date]], renewal_starts, lapses) -> dict[int, AfterLetters]:
    """:func:`compare` for each outcome window, MemberLux asked each range query once: for the union of
    what the windows need (the key starts of every window's letter levels from the earliest X on; per
    level, the widest range of access ends). A wider answer changes no window's figures: :func:`compare`
    matches each letter and each lapse by its own learner, level and days."""
    spans = {window: measured_days(today, window, PERIOD_DAYS) for window in windows}
    wanted = set(levels)
    used = [lt for lt in letters if lt.term_id in wanted and any(first <= lt.sent_on <= last for first, last in spans.values())]
    starts = (renewal_starts(sorted({lt.term_id for lt in used}), min(lt.expired_on for lt in used), today)
              if used else [])
    ranges: dict[int, tuple[date, date]] = {}
    for first_day, last_day in spans.values():
        for level, (first, last) in lapse_ranges(levels, delays, first_letter_days, first_day, last_day).items():
            known = ranges.get(level)
            ranges[level] = (first, last) if known is None else (min(known[0], first), max(known[1], last))
    found = lapses(ranges)
    return {window: compare(today=today, window_days=window, levels=levels, delays=delays, letters=used,
                            first_letter_days=first_letter_days, certificates=certificates,
                            renewal_starts=lambda _levels, _first, _last: starts, lapses=lambda _ranges: found)
            for window in windows}
