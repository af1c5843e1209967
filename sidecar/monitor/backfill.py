"""The sleepers trend before the sidecar was counting: each past day reconstructed from key dates.

A refresh stores one count per level per day (``mls_sleeper_counts``), so a fresh install has one dot
of history. The past can be rebuilt: on a UTC day D the site held the keys activated by D and the
manual certificates issued by D (and not yet deleted), so the sleeper rule
(:func:`sidecar.domain.sleepers.evaluate`, the refresh's own) applied to those rows for day D gives the
sleepers of D.

What cannot be reconstructed, so a rebuilt day can differ from what a refresh on that day would have
counted:

* rows rewritten in place: a key's dates, status or level edited later read as they are now (MemberLux
  keeps no history of a row);
* bans: a banned key is left out on every day, though it may have opened the level before the ban;
* deleted keys, users and certificates: a key or user deleted since is absent on every day (a
  certificate deleted since counts until the day the sidecar saw it go, if it saw it);
* the level tree and the certificate classes as they are now;
* a key with no activation day: without ``keys_meta``, ``date_registered`` or ``date_start`` it never
  counted anyway.

One pass over the level's rows serves every day: a user's verdict can change only on a day one of their
rows starts, ends or is activated, or a certificate is issued or deleted, so the rule is evaluated on
those days only and holds in between. Reconstructed days are marked (``reconstructed``) and never
replace a day a refresh counted.
"""

from __future__ import annotations

import logging
import time
from collections.abc import Callable, Iterable, Sequence
from dataclasses import dataclass
from datetime import date, timedelta
from typing import TYPE_CHECKING

import sqlalchemy as sa

from sidecar.domain.access import KeyRow, activation_day
from sidecar.domain.sleepers import Reason, evaluate
from sidecar.memberlux.reader import ancestors_from_parents
from sidecar.monitor.certificates import CertificateClass, CertificateClassifier
from sidecar.monitor.level_rows import USER_BATCH, ancestor_key_rows, user_batches
from sidecar.store.db import unit_of_work
from sidecar.store.monitor_models import CertificateClassRow, SleeperCount

if TYPE_CHECKING:
    from sidecar.bootstrap import Runtime

__all__ = ["BackfillReport", "TrendBackfill", "DEFAULT_WEEKS", "MAX_WEEKS"]

log = logging.getLogger(__name__)

DEFAULT_WEEKS = 12      # what the trend chart shows
MAX_WEEKS = 104
_ONE_DAY = timedelta(days=1)

#: ``(levels done, levels in all)``
Progress = Callable[[int, int], None]


@dataclass(frozen=True)
class BackfillReport:
    term_id: int
    first_day: date
    last_day: date
    days_written: int          # days without a count a refresh made
    seconds: float


@dataclass(frozen=True)
class _Certificate:
    issued: date | None        # None: the day is unknown, so it counts on every day
    gone: date | None          # the UTC day the sidecar saw it deleted


def _days(first: date, last: date) -> list[date]:
    return [first + timedelta(days=i) for i in range((last - first).days + 1)]


def _existed(row: KeyRow, day: date) -> bool:
    activated = activation_day(row)
    return activated is None or activated <= day


def _change_days(rows: Iterable[KeyRow], certificates: Iterable[_Certificate]) -> set[date]:
    days: set[date] = set()
    for row in rows:
        days.update(d for d in (activation_day(row), row.date_start, row.date_end) if d is not None)
    for cert in certificates:
        days.update(d for d in (cert.issued, cert.gone) if d is not None)
    return days


class TrendBackfill:
    """Fills the daily sleeper counts of past days from key dates."""

    def __init__(self, runtime: Runtime, *, check_ancestors: bool = True) -> None:
        self.runtime = runtime
        self.check_ancestors = check_ancestors

    # --- public --------------------------------------------------------------------------------------

    def counts(self, term_id: int, first: date, last: date, *, parents: dict[int, int] | None = None) -> dict[date, int]:
        """Sleepers of the level on each UTC day from ``first`` to ``last``, reconstructed (nothing stored)."""
        if first > last:
            raise ValueError(f"the first day {first} is after the last {last}")
        parents = self.runtime.reader.level_parents() if parents is None else parents
        days = _days(first, last)
        totals = [0] * (len(days) + 1)       # a difference array: +1 where a sleeping stretch starts, -1 after
        if term_id not in parents:
            return dict.fromkeys(days, 0)
        ancestors = ancestors_from_parents(parents, term_id) if self.check_ancestors else []
        certificates = self._certificates(term_id)
        policy = self.runtime.access_policy
        stream = self.runtime.reader.key_rows_for_level(term_id)
        try:
            for batch in user_batches(stream, USER_BATCH):
                users = self.runtime.reader.users([user_id for user_id, _ in batch])
                ancestor_rows = ancestor_key_rows(self.runtime.reader, list(users), ancestors)
                for user_id, rows in batch:
                    if user_id not in users:
                        continue    # deleted since: cannot be reconstructed, and a refresh skips orphans
                    theirs = ancestor_rows.get(user_id, [])
                    certs = certificates.get(user_id, [])
                    starts = [first, *sorted(d for d in _change_days([*rows, *theirs], certs) if first < d <= last)]
                    for i, start in enumerate(starts):
                        verdict = evaluate(
                            user_id, term_id, [r for r in rows if _existed(r, start)], start,
                            ancestor_rows=[r for r in theirs if _existed(r, start)],
                            has_manual_certificate=any(_held(c, start) for c in certs),
                            blocked=users[user_id].blocked, user_exists=True, policy=policy,
                            check_ancestors=self.check_ancestors)
                        if verdict.reason is Reason.SLEEPER:
                            end = starts[i + 1] if i + 1 < len(starts) else last + _ONE_DAY
                            totals[(start - first).days] += 1
                            totals[(end - first).days] -= 1
        finally:
            stream.close()
        counts: dict[date, int] = {}
        running = 0
        for i, day in enumerate(days):
            running += totals[i]
            counts[day] = running
        return counts

    def backfill_level(self, term_id: int, today: date | None = None, weeks: int = DEFAULT_WEEKS, *,
                       parents: dict[int, int] | None = None) -> BackfillReport:
        """Reconstruct the ``weeks`` weeks before ``today`` (UTC; default today) and store the days a
        refresh did not count; reconstructed days stored before are replaced."""
        if not 1 <= weeks <= MAX_WEEKS:
            raise ValueError(f"weeks must be between 1 and {MAX_WEEKS}, got {weeks}")
        started = time.perf_counter()
        today = today or self.runtime.clock.today_utc()
        first, last = today - timedelta(weeks=weeks) + _ONE_DAY, today - _ONE_DAY
        counts = self.counts(term_id, first, last, parents=parents)
        with unit_of_work(self.runtime.sessions) as session:
            counted = set(session.scalars(sa.select(SleeperCount.day).where(
                SleeperCount.term_id == term_id, SleeperCount.day.between(first, last),
                SleeperCount.reconstructed.is_(False))))
            session.execute(sa.delete(SleeperCount).where(
                SleeperCount.term_id == term_id, SleeperCount.day.between(first, last),
                SleeperCount.reconstructed.is_(True)))
            rows = [{"term_id": term_id, "day": day, "sleepers": n, "reconstructed": True}
                    for day, n in counts.items() if day not in counted]
            if rows:
                session.execute(sa.insert(SleeperCount), rows)
        seconds = round(time.perf_counter() - started, 3)
        log.info("sleepers trend of level %s reconstructed for %s..%s: %d day(s) in %.2f s",
                 term_id, first, last, len(rows), seconds)
        return BackfillReport(term_id, first, last, len(rows), seconds)

    def backfill_all(self, weeks: int = DEFAULT_WEEKS, levels: Sequence[int] | None = None,
                     progress: Progress | None = None) -> list[BackfillReport]:
        """:meth:`backfill_level` for these levels (default: every existing level)."""
        parents = self.runtime.reader.level_parents()
        level_ids = list(levels) if levels is not None else [lv.term_id for lv in self.runtime.reader.levels()]
        reports = []
        for done, term_id in enumerate(level_ids, start=1):
            reports.append(self.backfill_level(term_id, weeks=weeks, parents=parents))
            if progress is not None:
                progress(done, len(level_ids))
        return reports

    def has_history(self, term_id: int, today: date) -> bool:
        """Whether the level has a count for a day before ``today`` (counted or reconstructed)."""
        with self.runtime.sessions() as session:
            return session.scalar(sa.select(SleeperCount.day).where(
                SleeperCount.term_id == term_id, SleeperCount.day < today).limit(1)) is not None

    # --- internals -----------------------------------------------------------------------------------

    def _certificates(self, term_id: int) -> dict[int, list[_Certificate]]:
        """Manual certificates of the level per user, deleted ones included with the day they went."""
        if not CertificateClassifier(self.runtime).available:
            return {}
        c = CertificateClassRow
        stmt = sa.select(c.user_id, c.date_issue, c.create_date, c.deleted_at).where(
            c.level_id == term_id, c.cls == CertificateClass.MANUAL.value)
        found: dict[int, list[_Certificate]] = {}
        with self.runtime.sessions() as session:
            for user_id, issued, created, deleted_at in session.execute(stmt):
                found.setdefault(int(user_id), []).append(
                    _Certificate(issued or created, deleted_at.date() if deleted_at is not None else None))
        return found


def _held(cert: _Certificate, day: date) -> bool:
    return (cert.issued is None or cert.issued <= day) and (cert.gone is None or cert.gone > day)
