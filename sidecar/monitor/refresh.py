"""The sleepers read model (``mls_sleepers``), level by level, and the entry points that keep it.

``refresh_all`` rebuilds the whole site in one pass (:mod:`sidecar.monitor.site_pass`,
:mod:`sidecar.monitor.increments`) and ``refresh_stale`` is the worker's change scan. The per-level path
here serves one level's rebuild (the level's "refresh" button, ``sleepers refresh --level``) and the
previews of another day: a level's owned key rows are streamed in user order (``key_rows_for_level``),
cut into groups per user and evaluated in batches of users with :func:`sidecar.domain.sleepers.evaluate`,
the single source of truth for the rule; each batch looks up its users and their rows on the ancestor
levels. Manual-certificate holders of the level come from the store's classified certificates.

The level's rows are replaced in one store transaction, so readers see either the old or the new set,
never a mix. A rebuild for today then announces the ends of access it found (``access.expired``,
:mod:`sidecar.webhooks.access`). A level's first rebuild also reconstructs the trend's past weeks
(:mod:`sidecar.monitor.backfill`).
"""

from __future__ import annotations

import logging
import time
from collections import Counter
from collections.abc import Callable, Iterator, Sequence
from dataclasses import dataclass, field
from datetime import date, timedelta
from typing import TYPE_CHECKING

from sidecar.domain.access import KeyRow
from sidecar.domain.sleepers import Reason, evaluate
from sidecar.memberlux.reader import ancestors_from_parents
from sidecar.monitor.increments import RefreshBusy, ScanOutcome, SleeperIncrements, refresh_lease
from sidecar.monitor.level_rows import USER_BATCH, ancestor_key_rows, user_batches
from sidecar.monitor.model_store import ReadModelWriter, RefreshReport, search_text
from sidecar.monitor.query import manual_certificate_users
from sidecar.webhooks.access import AccessAnnouncer, Ended, ends_of

if TYPE_CHECKING:
    from sidecar.bootstrap import Runtime

__all__ = ["RefreshReport", "SleeperRefresher", "search_text"]

log = logging.getLogger(__name__)

ProgressCallback = Callable[[int, int, int], None]  # (term_id, levels done, levels total)

#: How long a rebuild asked for by hand waits for the worker's scan or rebuild to finish.
WAIT_FOR_WORKER_SECONDS = 120.0
BUSY = "the worker is updating the sleepers report and did not finish within 2 minutes; try again shortly"


@dataclass
class LevelEvaluation:
    sleepers: list[tuple]
    stats: dict
    #: Learners the report leaves out only because they hold a manual certificate (their access ended
    #: all the same): ``(user_id, expired_on, last_grant, blocked, email)``, for ``access.expired``.
    certified: list[tuple] = field(default_factory=list)

    def ended(self) -> list[Ended]:
        """Everyone whose access to the level ended without renewal: sleepers and certificate holders."""
        return list(ends_of(self.sleepers, self.certified))


class SleeperRefresher:
    """Evaluates levels against the MemberLux tables and stores the result in the read model."""

    def __init__(self, runtime: Runtime, *, check_ancestors: bool = True, user_batch: int = USER_BATCH) -> None:
        self.runtime = runtime
        self.reader = runtime.reader
        self.check_ancestors = check_ancestors
        self.user_batch = user_batch
        self.writer = ReadModelWriter(runtime, check_ancestors=check_ancestors)

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
        with refresh_lease(self.runtime, "level", WAIT_FOR_WORKER_SECONDS) as held:
            if not held:
                raise RefreshBusy(BUSY)
            return self._refresh_level(term_id, day, parents=parents)

    def _refresh_level(self, term_id: int, day: date | None = None, *,
                       parents: dict[int, int] | None = None) -> RefreshReport:
        started = time.perf_counter()
        day = day or self.runtime.clock.today_utc()
        parents = self.reader.level_parents() if parents is None else parents
        if term_id not in parents:
            # A deleted level opens nothing; its leftover rows are orphans and nobody sleeps in it.
            seconds = self.writer.replace_level(term_id, [], day, None, started).seconds
            return RefreshReport(term_id, day, seconds, 0, 0, 0, {}, skipped="level deleted")
        evaluation = self.evaluate_level(term_id, day, parents=parents)
        stats = evaluation.stats
        seconds = self.writer.replace_level(term_id, evaluation.sleepers, day, stats, started).seconds
        # After the read model is committed: a failure here leaves the ends to the next rebuild.
        AccessAnnouncer(self.runtime).announce_expiries(term_id, day, evaluation.ended())
        self.writer.backfill_first_time(term_id, day, parents)
        log.info("sleepers of level %s for %s: %d of %d users (%d rows) in %.2f s",
                 term_id, day, stats["sleepers"], stats["users_considered"], stats["rows_scanned"], seconds)
        return RefreshReport(term_id, day, seconds, **stats)

    def refresh_all(self, progress: ProgressCallback | None = None, *, day: date | None = None,
                    sync_certificates: bool = True) -> list[RefreshReport]:
        """Rebuild every existing level for the same day in one pass over the site, and drop the rows of
        levels deleted since (:meth:`sidecar.monitor.increments.SleeperIncrements.rebuild`).

        Certificates are synchronised first (when the classifier is available), so a certificate
        issued or deleted since the last run is taken into account.
        """
        increments = SleeperIncrements(self.runtime, check_ancestors=self.check_ancestors)
        with refresh_lease(self.runtime, "rebuild", WAIT_FOR_WORKER_SECONDS) as held:
            if not held:
                raise RefreshBusy(BUSY)
            outcome = increments.rebuild(day or self.runtime.clock.today_utc(), progress=progress,
                                         sync_certificates=sync_certificates)
        return outcome.reports

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

    def refresh_stale(self, max_age: timedelta) -> ScanOutcome:
        """What the worker runs every few seconds: apply the site's changes since the last scan, and
        rebuild the whole model when none exists yet or the last rebuild is older than ``max_age``
        (:class:`sidecar.monitor.increments.SleeperIncrements`)."""
        return SleeperIncrements(self.runtime, check_ancestors=self.check_ancestors).run(max_age)
