"""Rebuild the sleepers read model (``mls_sleepers``) one level at a time.

A level's owned key rows are streamed in user order (``key_rows_for_level``), cut into groups per user
and evaluated in batches of users with :func:`sidecar.domain.sleepers.evaluate`, the single source of
truth for the rule. Each batch costs two look-ups whatever its size: the users themselves (names,
e-mail, blocked flag; a missing user is an orphan and is skipped) and their rows on the ancestor levels
(a parent's key opens the child). Manual-certificate holders of the level come from the store's
classified certificates, loaded once per level.

Only sleepers are kept in memory (as compact tuples); the level's rows in the read model are then
replaced in one store transaction, so readers see either the old or the new set, never a mix. A rebuild
for today then announces the ends of access it found (``access.expired``, :mod:`sidecar.webhooks.access`).
A level's first rebuild also reconstructs the trend's past weeks (:mod:`sidecar.monitor.backfill`).
"""

from __future__ import annotations

import logging
import time
from collections import Counter
from collections.abc import Callable, Iterator, Sequence
from dataclasses import dataclass, field
from datetime import date, datetime, timedelta, timezone
from typing import TYPE_CHECKING

import sqlalchemy as sa

from sidecar.domain.access import KeyRow
from sidecar.domain.sleepers import Reason, evaluate
from sidecar.memberlux.reader import ancestors_from_parents
from sidecar.monitor.certificates import CertificateClassifier
from sidecar.monitor.level_rows import USER_BATCH, ancestor_key_rows, user_batches
from sidecar.monitor.query import manual_certificate_users
from sidecar.webhooks.access import AccessAnnouncer, Ended
from sidecar.webhooks.events import emit, listens
from sidecar.store.monitor_models import CertificateClassRow, SleeperCount, SleeperEntry, SleeperRefresh
from sidecar.store.db import unit_of_work

if TYPE_CHECKING:
    from sidecar.bootstrap import Runtime

__all__ = ["RefreshReport", "SleeperRefresher", "search_text"]

log = logging.getLogger(__name__)

#: Users evaluated together: one users query and one ancestor-rows query per batch.
#: Rows per INSERT statement when writing the read model.
INSERT_CHUNK = 1000

ProgressCallback = Callable[[int, int, int], None]  # (term_id, levels done, levels total)

_COLUMN_WIDTHS = {"email": 100, "login": 60, "first_name": 100, "last_name": 100, "search_text": 400}


@dataclass(frozen=True)
class RefreshReport:
    term_id: int
    evaluated_for: date
    seconds: float
    rows_scanned: int
    users_considered: int
    sleepers: int
    reasons: dict[str, int] = field(default_factory=dict)
    #: Set when the level was not evaluated (it no longer exists); its read-model rows were removed.
    skipped: str | None = None


def _aware(moment: datetime) -> datetime:
    # A max() over a UtcDateTime column comes back naive on some backends (no type on the aggregate).
    return moment if moment.tzinfo else moment.replace(tzinfo=timezone.utc)


def search_text(first_name: str, last_name: str, email: str, login: str) -> str:
    """What the report's search box matches: lower-cased "first last email login"."""
    text = " ".join(part.strip() for part in (first_name, last_name, email, login) if part and part.strip())
    return text.lower()[: _COLUMN_WIDTHS["search_text"]]


def _cut(value: str, column: str) -> str:
    # MySQL stores refuse over-long values in strict mode; WordPress allows longer names in usermeta.
    return (value or "")[: _COLUMN_WIDTHS[column]]


@dataclass
class LevelEvaluation:
    sleepers: list[tuple]
    stats: dict
    #: Learners the report leaves out only because they hold a manual certificate (their access ended
    #: all the same): ``(user_id, expired_on, last_grant, blocked, email)``, for ``access.expired``.
    certified: list[tuple] = field(default_factory=list)

    def ended(self) -> list[Ended]:
        """Everyone whose access to the level ended without renewal: sleepers and certificate holders."""
        return ([Ended(user_id, expired_on, last_grant, blocked, email)
                 for user_id, expired_on, last_grant, blocked, email, *_ in self.sleepers]
                + [Ended(*entry) for entry in self.certified])


class SleeperRefresher:
    """Evaluates levels against the MemberLux tables and stores the result in the read model."""

    def __init__(self, runtime: Runtime, *, check_ancestors: bool = True, user_batch: int = USER_BATCH) -> None:
        self.runtime = runtime
        self.reader = runtime.reader
        self.check_ancestors = check_ancestors
        self.user_batch = user_batch

    # --- public --------------------------------------------------------------------------------------

    def evaluate_level(self, term_id: int, day: date, *, parents: dict[int, int]) -> LevelEvaluation:
        """The rule for every user holding keys of the level on UTC day ``day``; writes nothing.

        Sleeper tuples are ``(user_id, expired_on, last_grant, blocked, email, login, first, last)``.
        """
        ancestors = ancestors_from_parents(parents, term_id) if self.check_ancestors else []
        manual = manual_certificate_users(self.runtime, term_id)
        policy = self.runtime.access_policy

        rows_scanned = 0
        reasons: Counter[str] = Counter()
        sleepers: list[tuple] = []
        certified: list[tuple] = []

        def counted(rows: Iterator[KeyRow]) -> Iterator[KeyRow]:
            nonlocal rows_scanned
            for row in rows:
                rows_scanned += 1
                yield row

        stream = self.reader.key_rows_for_level(term_id)
        try:
            for batch in user_batches(counted(stream), self.user_batch):
                ids = [user_id for user_id, _ in batch]
                users = self.reader.users(ids)
                ancestor_rows = ancestor_key_rows(self.reader, [u for u in ids if u in users], ancestors)
                for user_id, rows in batch:
                    user = users.get(user_id)
                    verdict = evaluate(
                        user_id, term_id, rows, day,
                        ancestor_rows=ancestor_rows.get(user_id, ()),
                        has_manual_certificate=user_id in manual,
                        blocked=user.blocked if user is not None else False,
                        user_exists=user is not None,
                        policy=policy,
                        check_ancestors=self.check_ancestors,
                    )
                    reasons[verdict.reason.value] += 1
                    if verdict.reason is Reason.SLEEPER and user is not None:
                        sleepers.append((user_id, verdict.expired_on, verdict.last_grant, verdict.blocked,
                                         user.email, user.login, user.first_name, user.last_name))
                    elif verdict.reason is Reason.MANUAL_CERTIFICATE and user is not None:
                        certified.append((user_id, verdict.expired_on, verdict.last_grant, verdict.blocked, user.email))
        finally:
            stream.close()  # releases the streaming connection even when a batch fails

        # Orphan rows (deleted users) are not "considered": they are counted apart in the reasons.
        users_considered = sum(n for reason, n in reasons.items() if reason != Reason.USER_DELETED.value)
        stats = {"rows_scanned": rows_scanned, "users_considered": users_considered,
                 "sleepers": len(sleepers), "reasons": dict(sorted(reasons.items()))}
        return LevelEvaluation(sleepers, stats, certified)

    def refresh_level(self, term_id: int, day: date | None = None, *,
                      parents: dict[int, int] | None = None) -> RefreshReport:
        """Re-evaluate one level for UTC day ``day`` (default: today) and replace its read-model rows."""
        started = time.perf_counter()
        day = day or self.runtime.clock.today_utc()
        parents = self.reader.level_parents() if parents is None else parents
        if term_id not in parents:
            # A deleted level opens nothing; its leftover rows are orphans and nobody sleeps in it.
            seconds = self._replace(term_id, [], day, None, started)
            return RefreshReport(term_id, day, seconds, 0, 0, 0, {}, skipped="level deleted")
        evaluation = self.evaluate_level(term_id, day, parents=parents)
        stats = evaluation.stats
        seconds = self._replace(term_id, evaluation.sleepers, day, stats, started)
        # After the read model is committed: a failure here leaves the ends to the next rebuild.
        AccessAnnouncer(self.runtime).announce_expiries(term_id, day, evaluation.ended())
        self._backfill_first_time(term_id, day, parents)
        log.info("sleepers of level %s for %s: %d of %d users (%d rows) in %.2f s",
                 term_id, day, stats["sleepers"], stats["users_considered"], stats["rows_scanned"], seconds)
        return RefreshReport(term_id, day, seconds, **stats)

    def refresh_all(self, progress: ProgressCallback | None = None, *, day: date | None = None,
                    sync_certificates: bool = True) -> list[RefreshReport]:
        """Refresh every existing level for the same day, and drop the rows of levels deleted since.

        Certificates are synchronised first (when the classifier is available), so a certificate
        issued or deleted since the last run is taken into account.
        """
        day = day or self.runtime.clock.today_utc()
        if sync_certificates:
            CertificateClassifier(self.runtime).sync()
        parents = self.reader.level_parents()
        level_ids = [level.term_id for level in self.reader.levels()]
        self._drop_vanished_levels(set(parents))
        reports: list[RefreshReport] = []
        for done, term_id in enumerate(level_ids, start=1):
            reports.append(self.refresh_level(term_id, day, parents=parents))
            if progress is not None:
                progress(term_id, done, len(level_ids))
        return reports

    def preview(self, day: date, level_ids: Sequence[int] | None = None,
                progress: ProgressCallback | None = None) -> list[RefreshReport]:
        """What a refresh for UTC day ``day`` would find in each level (default: every level), writing
        nothing: the read model keeps its rows and refresh records, the history gets no count, no event
        is sent. Certificates are taken as last synchronised."""
        parents = self.reader.level_parents()
        level_ids = [level.term_id for level in self.reader.levels()] if level_ids is None else list(level_ids)
        reports: list[RefreshReport] = []
        for done, term_id in enumerate(level_ids, start=1):
            started = time.perf_counter()
            if term_id in parents:
                stats = self.evaluate_level(term_id, day, parents=parents).stats
                reports.append(RefreshReport(term_id, day, round(time.perf_counter() - started, 3), **stats))
            else:
                reports.append(RefreshReport(term_id, day, 0.0, 0, 0, 0, {}, skipped="level deleted"))
            if progress is not None:
                progress(term_id, done, len(level_ids))
        return reports

    def stale_levels(self, max_age: timedelta, day: date | None = None) -> list[int]:
        """Levels whose read model is missing, for another UTC day, older than ``max_age``, or older
        than a certificate of the level that appeared or disappeared since."""
        day = day or self.runtime.clock.today_utc()
        oldest = self.runtime.clock.now() - max_age
        level_ids = [level.term_id for level in self.reader.levels()]
        with self.runtime.sessions() as session:
            state = {r.term_id: r for r in session.scalars(sa.select(SleeperRefresh))}
            touched = dict(session.execute(
                sa.select(CertificateClassRow.level_id,
                          sa.func.max(sa.func.coalesce(CertificateClassRow.deleted_at, CertificateClassRow.first_seen_at)))
                .group_by(CertificateClassRow.level_id)).all())
        stale = []
        for term_id in level_ids:
            seen = state.get(term_id)
            changed = touched.get(term_id)
            if (seen is None or seen.evaluated_for != day or seen.refreshed_at < oldest
                    or (changed is not None and _aware(changed) > seen.refreshed_at)):
                stale.append(term_id)
        return stale

    def refresh_stale(self, max_age: timedelta) -> list[RefreshReport]:
        """What the worker runs every few minutes: certificates first, then only the levels that need it."""
        day = self.runtime.clock.today_utc()
        CertificateClassifier(self.runtime).sync()
        parents = self.reader.level_parents()
        self._drop_vanished_levels(set(parents))
        return [self.refresh_level(term_id, day, parents=parents) for term_id in self.stale_levels(max_age, day)]

    # --- internals -----------------------------------------------------------------------------------

    def _backfill_first_time(self, term_id: int, day: date, parents: dict[int, int]) -> None:
        """A level's first count: reconstruct the trend's weeks before it from key dates, so the chart has
        a past. A failure leaves the level without history, and the next refresh tries again."""
        from sidecar.monitor.backfill import TrendBackfill

        backfill = TrendBackfill(self.runtime, check_ancestors=self.check_ancestors)
        if backfill.has_history(term_id, day):
            return
        try:
            backfill.backfill_level(term_id, day, parents=parents)
        except Exception:
            log.exception("reconstructing the sleepers trend of level %s failed; the next refresh tries again",
                          term_id)

    def _replace(self, term_id: int, sleepers: list[tuple], day: date, stats: dict | None,
                 started: float) -> float:
        """Swap the level's read-model rows in one transaction; returns the seconds the refresh took.

        ``stats`` ``None`` means the level is gone: its rows and refresh record are removed.
        """
        now = self.runtime.clock.now()
        entries = SleeperEntry.__table__
        with unit_of_work(self.runtime.sessions) as session:
            newly = self._newly_sleeping(session, term_id, sleepers) if stats is not None else []
            session.execute(sa.delete(entries).where(entries.c.term_id == term_id))
            for start in range(0, len(sleepers), INSERT_CHUNK):
                session.execute(entries.insert(), [
                    {
                        "term_id": term_id, "user_id": user_id, "expired_on": expired_on,
                        "last_grant": last_grant, "blocked": blocked,
                        "email": _cut(email, "email"), "login": _cut(login, "login"),
                        "first_name": _cut(first, "first_name"), "last_name": _cut(last, "last_name"),
                        "search_text": search_text(first, last, email, login),
                        "refreshed_at": now,
                    }
                    for user_id, expired_on, last_grant, blocked, email, login, first, last
                    in sleepers[start:start + INSERT_CHUNK]
                ])
            seconds = round(time.perf_counter() - started, 3)
            if stats is None:
                session.execute(sa.delete(SleeperRefresh.__table__)
                                .where(SleeperRefresh.__table__.c.term_id == term_id))
                return seconds
            session.merge(SleeperRefresh(term_id=term_id, evaluated_for=day, refreshed_at=now, seconds=seconds,
                                         **stats))
            session.merge(SleeperCount(term_id=term_id, day=day, sleepers=stats["sleepers"], reconstructed=False))
            for user_id, expired_on, email in newly:
                emit(session, "sleeper.detected", {"user_id": user_id, "term_id": term_id,
                                                   "expired_on": expired_on.isoformat(), "email": email}, now)
        return seconds

    @staticmethod
    def _newly_sleeping(session, term_id: int, sleepers: list[tuple]) -> list[tuple[int, date, str]]:
        """Sleepers absent from the previous build of the level (same X), when someone listens.

        The first build of a level announces nobody: its sleepers are history, not news."""
        if not listens(session, "sleeper.detected"):
            return []
        if session.get(SleeperRefresh, term_id) is None:
            return []
        before = set(session.execute(sa.select(SleeperEntry.user_id, SleeperEntry.expired_on)
                                     .where(SleeperEntry.term_id == term_id)).tuples())
        return [(user_id, expired_on, email) for user_id, expired_on, _g, _b, email, *_ in sleepers
                if (user_id, expired_on) not in before]

    def _drop_vanished_levels(self, existing: set[int]) -> None:
        entries = SleeperEntry.__table__
        with unit_of_work(self.runtime.sessions) as session:
            stored = {int(t) for t in session.scalars(sa.select(SleeperRefresh.term_id))}
            stored |= {int(t) for t in session.scalars(sa.select(entries.c.term_id).distinct())}
            vanished = sorted(stored - existing)
            if vanished:
                session.execute(sa.delete(entries).where(entries.c.term_id.in_(vanished)))
                session.execute(sa.delete(SleeperRefresh.__table__)
                                .where(SleeperRefresh.__table__.c.term_id.in_(vanished)))
                log.info("dropped the sleepers of deleted levels %s", vanished)
