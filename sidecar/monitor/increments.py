"""Keeping the sleepers read model fresh: a change scan every few seconds, a reconciling rebuild daily.

``SleeperIncrements.run`` is what the worker calls (job ``monitor.sleepers.refresh``):

1. Without a usable model (first run, the level tree or the access policy changed, the model holds a
   later day than today) it rebuilds the whole site in one pass (:mod:`sidecar.monitor.site_pass`).
2. Otherwise it syncs certificates, takes the site's digests (:mod:`sidecar.monitor.changes`) and
   evaluates again only the users in buckets whose digest changed, the users whose rows start or end
   between the model's day and today (the day rolled over), and the users MemberLux webhooks named
   (``mls_sleeper_hints``). Their rows in the model are replaced in one transaction; every level is
   then marked current (``checked_at``) for today.
3. When the last full rebuild is older than ``schedule.sleepers_max_age_minutes`` (a day by default),
   it rebuilds the site and reports, per level, the rows the increments had wrong (``missed``; the
   tests prove it stays empty, a non-empty one is logged as a warning and shown on the status page).

Digests are taken before rows are read, so a change landing while a scan or rebuild reads is seen by
the next scan at the latest. Re-evaluating a user gives exactly the rows a full rebuild gives them
(the same pass over the same rows), which tests/monitor/test_increments.py checks after random
changes of every kind.
"""

from __future__ import annotations

import hashlib
import json
import logging
import threading
import time
from collections import Counter
from collections.abc import Iterable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field
from datetime import date, timedelta
from typing import TYPE_CHECKING

import sqlalchemy as sa

from sidecar.monitor.certificates import CertificateClassifier
from sidecar.monitor.changes import (
    BUCKET,
    Digests,
    bucket_ranges,
    changed_buckets,
    manual_digest,
    site_digests,
    users_crossing,
)
from sidecar.monitor.model_store import ReadModelWriter, RefreshReport, model_row, stored_columns, stored_tuple
from sidecar.monitor.site_pass import LevelTally, SitePass, UserSelection
from sidecar.store.db import unit_of_work
from sidecar.store.monitor_models import SleeperCount, SleeperEntry, SleeperHint, SleeperRefresh, SleeperScan
from sidecar.webhooks.access import AccessAnnouncer, ends_of
from sidecar.webhooks.events import emit, listens

if TYPE_CHECKING:
    from sidecar.bootstrap import Runtime

__all__ = ["RefreshBusy", "ScanOutcome", "SleeperIncrements", "hint_users", "missed_total", "refresh_lease"]

log = logging.getLogger(__name__)

STATE = "site"
_IN = 500


@dataclass
class ScanOutcome:
    """What one run did: ``kind`` is ``rebuild``, ``scan`` or ``idle`` (a scan that found nothing)."""

    kind: str
    day: date
    seconds: float
    buckets: int = 0
    users: int = 0
    rows_changed: int = 0
    reports: list[RefreshReport] = field(default_factory=list)
    missed: dict[str, dict[str, int]] = field(default_factory=dict)

    def summary(self) -> str:
        if self.kind == "rebuild":
            missed = missed_total(self.missed)
            text = (f"full rebuild of {len(self.reports)} level(s) for {self.day} in {self.seconds:.1f} s: "
                    f"{sum(r.sleepers for r in self.reports)} sleepers")
            return text + (f"; {missed} row(s) the increments had missed" if missed else "")
        if self.kind == "idle":
            return f"no change on the site ({self.seconds:.2f} s)"
        return (f"{self.users} learner(s) evaluated again ({self.buckets} changed bucket(s) of user ids) in "
                f"{self.seconds:.2f} s: {self.rows_changed} read-model row(s) changed")


class RefreshBusy(RuntimeError):
    """Another process (the worker's scan or rebuild, a planner) is writing the model and did not finish
    within the wait."""


@contextmanager
def refresh_lease(runtime: Runtime, who: str, wait_seconds: float) -> Iterator[bool]:
    """Hold the worker's refresh lease (``monitor.sleepers.refresh``) while writing the model, so a scan, a
    rebuild, a planner and a "refresh now" never write it at once (a slower writer could otherwise put back
    rows older than a scan took in). Waits up to ``wait_seconds``; yields ``False`` if still held elsewhere."""
    from sidecar.jobs import SLEEPERS_REFRESH_JOB
    from sidecar.store import leases

    # One holder per thread (threads of one process are rivals too); ``who`` goes into the recorded outcome.
    holder = f"{leases.holder_name()}:{threading.get_ident()}:sleepers"
    give_up = time.monotonic() + wait_seconds
    while not leases.try_acquire(runtime.sessions, SLEEPERS_REFRESH_JOB, holder, timedelta(hours=1),
                                 runtime.clock.now()):
        if time.monotonic() > give_up:
            yield False
            return
        time.sleep(1.0)
    outcome = f"ok ({who})"
    try:
        yield True
    except Exception as exc:
        outcome = f"failed: {type(exc).__name__}: {exc}"
        raise
    finally:
        leases.release(runtime.sessions, SLEEPERS_REFRESH_JOB, holder, runtime.clock.now(), outcome)


def missed_total(missed: dict[str, dict[str, int]]) -> int:
    """Rows a reconciling rebuild found wrong, over every level and kind (missing, extra, different)."""
    return sum(sum(kinds.values()) for kinds in missed.values())


def hint_users(runtime: Runtime, user_ids: Iterable[int]) -> None:
    """Ask the next scan to evaluate these users again (a MemberLux webhook said they changed)."""
    now = runtime.clock.now()
    rows = [{"user_id": int(u), "received_at": now} for u in dict.fromkeys(user_ids)]
    if rows:
        with unit_of_work(runtime.sessions) as session:
            session.execute(sa.insert(SleeperHint), rows)


class SleeperIncrements:
    def __init__(self, runtime: Runtime, *, check_ancestors: bool = True) -> None:
        self.runtime = runtime
        self.check_ancestors = check_ancestors
        self.writer = ReadModelWriter(runtime, check_ancestors=check_ancestors)

    # --- public --------------------------------------------------------------------------------------

    def run(self, reconcile_after: timedelta) -> ScanOutcome:
        """Bring the model up to today: a scan, and a reconciling rebuild when one is due."""
        today = self.runtime.clock.today_utc()
        parents = self.runtime.reader.level_parents()
        state = self._state()
        if state is None or state.shape != self._shape(parents) or state.day > today:
            return self.rebuild(today, parents=parents)
        outcome = self.scan(today, parents, state)
        if self.runtime.clock.now() - state.rebuilt_at >= reconcile_after:
            return self.rebuild(today, parents=parents)
        return outcome

    def rebuild(self, day: date, *, parents: dict[int, int] | None = None, progress=None,
                sync_certificates: bool = True) -> ScanOutcome:
        """Evaluate every user of the site for UTC day ``day`` and replace the whole model.

        When the model already holds ``day`` for the same level tree, the rows it had wrong are counted
        first (``missed``): what the increments missed since the last rebuild.
        """
        started = time.perf_counter()
        runtime = self.runtime
        if sync_certificates:
            CertificateClassifier(runtime).sync()
        parents = runtime.reader.level_parents() if parents is None else parents
        digests, manual = self._digests()
        tallies = SitePass(runtime, check_ancestors=self.check_ancestors).run(
            day, parents, UserSelection(everybody=True), manual)
        state = self._state()
        comparable = state is not None and state.day == day and state.shape == self._shape(parents)
        pass_seconds = time.perf_counter() - started
        self.writer.drop_vanished_levels(set(parents))
        reports, missed = [], {}
        level_ids = [level.term_id for level in runtime.reader.levels()]
        for done, term_id in enumerate(level_ids, start=1):
            tally = tallies.get(term_id, LevelTally())
            stats = tally.stats()
            # The level's time: the shared pass plus writing its own rows.
            replaced = self.writer.replace_level(term_id, tally.sleepers, day, stats,
                                                    time.perf_counter() - pass_seconds)
            if comparable and replaced.differences():
                missed[str(term_id)] = replaced.differences()
            AccessAnnouncer(runtime).announce_expiries(term_id, day, ends_of(tally.sleepers, tally.certified))
            self.writer.backfill_first_time(term_id, day, parents)
            reports.append(RefreshReport(term_id, day, replaced.seconds, **stats))
            if progress is not None:
                progress(term_id, done, len(level_ids))
        seconds = round(time.perf_counter() - started, 3)
        now = runtime.clock.now()
        if missed:
            log.warning("the reconciling rebuild found %d read-model row(s) the change scan had missed: %s",
                        missed_total(missed), missed)
        self._save(day=day, shape=self._shape(parents), digests=digests, scanned_at=now, scan_seconds=seconds,
                   last_changes={}, rebuilt_at=now, rebuild_seconds=seconds,
                   reconciled_at=now if comparable else None, missed=missed, keep_reconciled=not comparable)
        log.info("sleepers rebuilt for %s: %d level(s), %d sleepers in %.1f s", day, len(reports),
                 sum(r.sleepers for r in reports), seconds)
        return ScanOutcome("rebuild", day, seconds, reports=reports, missed=missed)

    def scan(self, day: date, parents: dict[int, int], state: SleeperScan) -> ScanOutcome:
        """Evaluate again what changed since the last scan, and move the model to ``day``."""
        started = time.perf_counter()
        runtime = self.runtime
        CertificateClassifier(runtime).sync()
        hint_ids, hinted = self._hints()
        digests, manual = self._digests()
        buckets = changed_buckets(state.digests, digests)
        singles = set(hinted)
        if state.day < day:
            singles |= users_crossing(runtime, state.day, day)
        singles = {u for u in singles if u // BUCKET not in buckets}
        selection = UserSelection(ranges=tuple(bucket_ranges(buckets)), users=frozenset(singles))
        rows_changed, touched, evaluated = 0, set(), 0
        if not selection.empty:
            site_pass = SitePass(runtime, check_ancestors=self.check_ancestors)
            tallies = site_pass.run(day, parents, selection, manual)
            evaluated = site_pass.users_evaluated
            rows_changed, touched = self._apply(tallies, selection, day)
            for term_id, tally in tallies.items():
                AccessAnnouncer(runtime).announce_expiries(term_id, day, ends_of(tally.sleepers, tally.certified))
        self._mark_current(day, counted=None if state.day != day else touched)
        seconds = round(time.perf_counter() - started, 3)
        changes = {"buckets": len(buckets), "users": len(singles), "evaluated": evaluated, "rows": rows_changed}
        self._save(day=day, shape=state.shape, digests=digests, scanned_at=runtime.clock.now(),
                   scan_seconds=seconds, last_changes=changes, keep_rebuilt=True, keep_reconciled=True)
        self._forget_hints(hint_ids)
        kind = "idle" if selection.empty and state.day == day else "scan"
        return ScanOutcome(kind, day, seconds, buckets=len(buckets), users=evaluated, rows_changed=rows_changed)

    # --- internals -----------------------------------------------------------------------------------

    def _shape(self, parents: dict[int, int]) -> str:
        shape = {"parents": sorted(parents.items()), "basket": self.runtime.access_policy.include_basket,
                 "ancestors": self.check_ancestors}
        return hashlib.sha256(json.dumps(shape, sort_keys=True).encode()).hexdigest()

    def _digests(self) -> tuple[Digests, set[tuple[int, int]]]:
        """The site's digests and the live manual certificates, read before any key row."""
        manual = CertificateClassifier(self.runtime).manual_pairs()
        digests = site_digests(self.runtime)
        digests["manual"] = manual_digest(manual)
        return digests, manual

    def _state(self) -> SleeperScan | None:
        with self.runtime.sessions() as session:
            state = session.get(SleeperScan, STATE)
            if state is not None:
                session.expunge(state)
                state.digests = {family: {int(b): v for b, v in buckets.items()}
                                 for family, buckets in (state.digests or {}).items()}
            return state

    def _save(self, *, keep_rebuilt: bool = False, keep_reconciled: bool = False, **values) -> None:
        values["digests"] = {family: {str(b): v for b, v in buckets.items()}
                             for family, buckets in values["digests"].items()}
        with unit_of_work(self.runtime.sessions) as session:
            state = session.get(SleeperScan, STATE)
            if state is None:
                values.setdefault("rebuilt_at", values["scanned_at"])
                values.setdefault("missed", {})
                session.add(SleeperScan(name=STATE, **values))
                return
            if keep_reconciled:
                values.pop("reconciled_at", None)
                values.pop("missed", None)
            if keep_rebuilt:
                values.pop("rebuilt_at", None)
                values.pop("rebuild_seconds", None)
            for name, value in values.items():
                setattr(state, name, value)

    def _hints(self) -> tuple[list[int], set[int]]:
        with self.runtime.sessions() as session:
            rows = session.execute(sa.select(SleeperHint.id, SleeperHint.user_id)).all()
        return [int(r.id) for r in rows], {int(r.user_id) for r in rows}

    def _forget_hints(self, ids: list[int]) -> None:
        if not ids:
            return
        with unit_of_work(self.runtime.sessions) as session:
            for start in range(0, len(ids), _IN):
                session.execute(sa.delete(SleeperHint).where(SleeperHint.id.in_(ids[start:start + _IN])))

    def _apply(self, tallies: dict[int, LevelTally], selection: UserSelection, day: date) -> tuple[int, set[int]]:
        """Replace the selected users' rows on every level in one transaction; returns the rows changed
        and the levels whose count changed."""
        entries = SleeperEntry.__table__
        now = self.runtime.clock.now()
        new_rows = {(term_id, s[0]): stored_tuple(s) for term_id, tally in tallies.items() for s in tally.sleepers}
        changed = 0
        with unit_of_work(self.runtime.sessions) as session:
            announce = listens(session, "sleeper.detected")
            old_rows: dict[tuple[int, int], tuple] = {}
            for where in _selection_filters(entries.c.user_id, selection):
                for row in session.execute(sa.select(entries.c.term_id, *stored_columns(entries)).where(where)):
                    old_rows[(int(row[0]), int(row[1]))] = tuple(row[1:])
                session.execute(sa.delete(entries).where(where))
            inserts = [model_row(term_id, s, now) for term_id, tally in tallies.items() for s in tally.sleepers]
            for start in range(0, len(inserts), 1000):
                session.execute(entries.insert(), inserts[start:start + 1000])
            delta: Counter[int] = Counter()
            for key in old_rows.keys() - new_rows.keys():
                delta[key[0]] -= 1
            for key in new_rows.keys() - old_rows.keys():
                delta[key[0]] += 1
            changed = sum(1 for key in old_rows.keys() | new_rows.keys() if old_rows.get(key) != new_rows.get(key))
            for (term_id, user_id), row in new_rows.items():
                old = old_rows.get((term_id, user_id))
                if announce and (old is None or old[1] != row[1]):
                    emit(session, "sleeper.detected", {"user_id": user_id, "term_id": term_id,
                                                       "expired_on": row[1].isoformat(), "email": row[4]}, now)
            for term_id, difference in delta.items():
                if difference:
                    session.execute(sa.update(SleeperRefresh).where(SleeperRefresh.term_id == term_id)
                                    .values(sleepers=SleeperRefresh.sleepers + difference))
        return changed, {term_id for term_id, difference in delta.items() if difference}

    def _mark_current(self, day: date, *, counted: set[int] | None) -> None:
        """Every level is current for ``day`` as of now; the trend gets the day's count of the levels in
        ``counted`` (``None``: of every level, the day having changed)."""
        now = self.runtime.clock.now()
        with unit_of_work(self.runtime.sessions) as session:
            session.execute(sa.update(SleeperRefresh).values(evaluated_for=day, checked_at=now))
            if counted is not None and not counted:
                return
            for term_id, sleepers in session.execute(sa.select(SleeperRefresh.term_id, SleeperRefresh.sleepers)):
                if counted is None or term_id in counted:
                    session.merge(SleeperCount(term_id=term_id, day=day, sleepers=sleepers, reconstructed=False))

def _selection_filters(column: sa.Column, selection: UserSelection) -> list[sa.ColumnElement[bool]]:
    filters = [sa.and_(column >= low, column <= high) for low, high in selection.ranges]
    singles = sorted(selection.users)
    filters += [column.in_(singles[start:start + _IN]) for start in range(0, len(singles), _IN)]
    return filters

