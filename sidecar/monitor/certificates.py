"""Certificate classes kept in our store: which certificates are manual (legacy-plugins.md §3.8, core.md §4, §10).

``{p}memberlux_certificate`` has no type column and only its primary key is indexed, so the sidecar
scans it incrementally by ``certificate_id`` and keeps one row per certificate in
``mls_certificate_classes``. The sleepers rule then asks the store, never the WordPress table, who
holds a manual certificate for a level.

Classification happens once, when a certificate is first seen: the level's ``_mblc_how_to_issue`` can
change later and must not rewrite history. Only a certificate whose own fields changed (user,
level, ``date_issue`` or ``create_date``: the fingerprint) is classified again, with the level's
mode at that moment. Certificates can be deleted in WordPress; :meth:`CertificateClassifier.revalidate`
marks them (``deleted_at``) so they stop counting, and clears the mark if the id comes back.

Activation days come from the keys of (user, level): the UTC date of ``keys_meta.activation_datetime``,
else ``date_registered``. ``date_start`` is never used for a normal-path row, since a stacked renewal
starts in the future; it is used only for a row with neither (the registration path, which leaves
``date_registered`` NULL, never stacks and starts on its activation day; sites older than
``keys_meta`` have many such rows).

Without the certificates module nothing is classified and :meth:`CertificateClassifier.manual_users`
is empty: then nobody is excluded from the sleepers because of a certificate.

Every certificate first seen by :meth:`CertificateClassifier.sync` — of any level, not only programs'
— is announced as ``certificate.issued`` with its class, in the transaction that records it. The
certificates that were already there when the sidecar first looked are history: the first sync notes
the highest id then (``certificates.announce_after``) and only certificates above it are announced.
A certificate that comes back after a deletion, or is rewritten, is not issued again.
"""

from __future__ import annotations

import hashlib
import logging
import time
from collections.abc import Iterable, Iterator, Sequence
from dataclasses import dataclass
from datetime import date, datetime, timedelta
from typing import TYPE_CHECKING, Any

import sqlalchemy as sa

from sidecar.domain.access import KEY_STATUS_EXPIRED, KEY_STATUS_USED, KEY_TYPE_TERM, UNITS_MONTHS, KeyRow, utc_day
from sidecar.domain.certificates import CertificateClass, CertificateFacts, Classification, classify_certificate
from sidecar.memberlux.reader import CertificateRow
from sidecar.memberlux.schema import FeatureUnavailable, parse_date, parse_datetime
from sidecar.store.db import unit_of_work
from sidecar.store.program_models import Program, ProgramInbox, ProgramStep
from sidecar.store.monitor_models import CertificateClassRow, WatchState
from sidecar.webhooks.events import emit, listens

if TYPE_CHECKING:
    from sidecar.bootstrap import Runtime

__all__ = [
    "ANNOUNCE_AFTER",
    "CURSOR_NAME",
    "LEVEL_MODE_META",
    "RESCAN_IDS",
    "RESCAN_AGE",
    "SyncReport",
    "RevalidateReport",
    "CertificateClassifier",
    "certificate_activation_days",
    "fingerprint",
    "sync_job",
    "revalidate_job",
]

log = logging.getLogger(__name__)

CURSOR_NAME = "certificates.last_id"
#: Certificates with an id above this value are announced (certificate.issued); set once, at the first sync.
ANNOUNCE_AFTER = "certificates.announce_after"
ISSUED = "certificate.issued"
LEVEL_MODE_META = "_mblc_how_to_issue"
#: Auto-increment ids become visible in commit order, not in id order: an id taken by a slow
#: transaction can appear after higher ids were already read. Every sync therefore reads again the
#: last RESCAN_IDS ids below the cursor, and every id first seen less than RESCAN_AGE ago.
RESCAN_IDS = 50
RESCAN_AGE = timedelta(minutes=10)
#: Bounds the re-read after a burst (e.g. a bulk grant on an auto level) so a run stays short.
RESCAN_MAX = 20_000
_KEY_IN_CHUNK = 500  # users per IN list when reading keys
_ACTIVATED = (KEY_STATUS_USED, KEY_STATUS_EXPIRED)
_MISSING_MODULE = "certificates module not installed: no certificate is classified and none excludes a sleeper"


# --------------------------------------------------------------------------------------------------
# Reports


@dataclass(frozen=True)
class SyncReport:
    """Outcome of one :meth:`CertificateClassifier.sync`.

    ``new``: certificates classified for the first time; ``reclassified``: known ones whose fields
    changed; ``deleted``: known ones found gone in the range read; ``restored``: ids marked deleted
    that are back. ``last_id``: the cursor after the run. ``complete``: the scan reached the end of
    the table (False when the time budget ran out; the next run continues).
    """

    new: int = 0
    reclassified: int = 0
    deleted: int = 0
    last_id: int = 0
    seconds: float = 0.0
    scanned: int = 0
    restored: int = 0
    complete: bool = True
    available: bool = True
    message: str = ""

    def summary(self) -> str:
        if not self.available:
            return self.message
        text = (f"{self.new} new, {self.reclassified} reclassified, {self.deleted} deleted, "
                f"{self.restored} restored; {self.scanned} read up to id {self.last_id} in {self.seconds:.2f} s")
        return text if self.complete else text + " (time budget reached, continuing next run)"


@dataclass(frozen=True)
class RevalidateReport:
    """Outcome of one :meth:`CertificateClassifier.revalidate` over every known certificate."""

    checked: int = 0
    deleted: int = 0
    reclassified: int = 0
    restored: int = 0
    seconds: float = 0.0
    available: bool = True
    message: str = ""

    def summary(self) -> str:
        if not self.available:
            return self.message
        return (f"{self.checked} checked: {self.deleted} deleted, {self.reclassified} reclassified, "
                f"{self.restored} restored in {self.seconds:.2f} s")


# --------------------------------------------------------------------------------------------------
# Pure helpers


def certificate_activation_days(rows: Iterable[KeyRow]) -> set[date]:
    """UTC days on which the given keys (one user, one level) were activated, as auto issue sees them.

    Per row: the day of ``activated_at`` (``keys_meta``), else ``date_registered``. ``date_start``
    counts only for a row with neither: ``date_registered`` is NULL only on the registration path,
    which never stacks, whereas a normal-path row may start in the future (stacked renewal).
    Never-activated (``new``) rows are skipped; banned and basket rows count, since the certificate
    was issued when they were activated, whatever happened to them later.
    """
    days: set[date] = set()
    for row in rows:
        if row.status not in _ACTIVATED:
            continue
        if row.activated_at is not None:
            days.add(utc_day(row.activated_at))
        elif row.date_registered is not None:
            days.add(row.date_registered)
        elif row.date_start is not None:
            days.add(row.date_start)
    return days


def fingerprint(user_id: int, level_id: int, date_issue: date | None, create_date: date | None) -> str:
    """Identity of the fields the class depends on; a change means the row was rewritten."""
    text = f"{user_id}|{level_id}|{date_issue.isoformat() if date_issue else ''}|" \
           f"{create_date.isoformat() if create_date else ''}"
    return hashlib.sha256(text.encode("ascii")).hexdigest()


@dataclass(frozen=True, slots=True)
class _Live:
    """The columns of a live certificate row that matter here."""

    certificate_id: int
    user_id: int
    level_id: int
    date_issue: date | None
    create_date: date | None
    responsible_person: int | None

    @classmethod
    def of(cls, row: CertificateRow) -> _Live:
        return cls(row.certificate_id, row.user_id, row.level_id, row.date_issue, row.create_date,
                   row.responsible_person)

    @property
    def fingerprint(self) -> str:
        return fingerprint(self.user_id, self.level_id, self.date_issue, self.create_date)

    @property
    def facts(self) -> CertificateFacts:
        return CertificateFacts(self.certificate_id, self.user_id, self.level_id, self.date_issue, self.create_date)


def _chunks(values: Sequence[int], size: int) -> Iterator[Sequence[int]]:
    for start in range(0, len(values), size):
        yield values[start:start + size]


# --------------------------------------------------------------------------------------------------
# The classifier


class CertificateClassifier:
    """Keeps ``mls_certificate_classes`` in step with ``{p}memberlux_certificate``.

    One instance per job run or request; level modes are cached for the instance's lifetime, so a
    long-lived instance would keep classifying with stale modes.
    """

    def __init__(self, runtime: Runtime) -> None:
        self.runtime = runtime
        self.reader = runtime.reader
        self.sessions = runtime.sessions
        self._modes: dict[int, str | None] = {}
        self._announce_after: int | None = None   # set by sync(); revalidate() announces nothing

    # --- availability ------------------------------------------------------------------------------

    @property
    def available(self) -> bool:
        return bool(self.runtime.site.features.get("certificates", False))

    # --- queries for the sleepers rule and the report ------------------------------------------------

    def manual_users(self, level_id: int) -> set[int]:
        """Users holding a manual, not deleted certificate for the level (empty without the module)."""
        if not self.available:
            return set()
        stmt = sa.select(CertificateClassRow.user_id).where(
            CertificateClassRow.level_id == level_id,
            CertificateClassRow.cls == CertificateClass.MANUAL.value,
            CertificateClassRow.deleted_at.is_(None),
        ).distinct()
        with self.sessions() as session:
            return {int(v) for v in session.scalars(stmt)}

    def manual_pairs(self) -> set[tuple[int, int]]:
        """Every (user_id, level_id) with a manual, not deleted certificate (empty without the module)."""
        if not self.available:
            return set()
        stmt = sa.select(CertificateClassRow.user_id, CertificateClassRow.level_id).where(
            CertificateClassRow.cls == CertificateClass.MANUAL.value,
            CertificateClassRow.deleted_at.is_(None),
        ).distinct()
        with self.sessions() as session:
            return {(int(u), int(lv)) for u, lv in session.execute(stmt)}

    # --- sync ----------------------------------------------------------------------------------------

    def sync(self, batch: int = 1000, *, time_budget: float | None = None,
             reads: tuple[sa.Connection, Any] | None = None) -> SyncReport:
        """Classify certificates not seen yet (and re-read the recent ones) in ``certificate_id`` order.

        Idempotent: re-reading a known, unchanged certificate writes nothing (its ``checked_at`` is
        the last change or :meth:`revalidate`), so a poll with nothing new only reads — the re-read
        window is read on every poll. ``time_budget`` (seconds) stops between batches; the cursor is
        saved after each batch in which it moved.

        ``reads``: a store connection and a row holding :meth:`poll_columns`, read by the caller in
        the statement that fetched its own state (the connection is used for reads only).
        """
        started = time.perf_counter()
        if not self.available:
            return SyncReport(available=False, message=_MISSING_MODULE)
        if batch < 1:
            raise ValueError("batch must be at least 1")
        now = self.runtime.clock.now()
        if reads is None:
            with self.runtime.store_engine.connect() as conn:
                state = conn.execute(sa.select(*self.poll_columns(now))).one()
                return self._sync(batch, time_budget, conn, state, now, started)
        return self._sync(batch, time_budget, reads[0], reads[1], now, started)

    @staticmethod
    def poll_columns(now: datetime) -> list[Any]:
        """What a sync reads from the store before it reads the site, as labelled scalar subqueries, so
        that one statement fetches them (a caller may add its own columns to the same statement).

        ``cls_cursor``: the cursor (NULL before the first sync); ``cls_announce_after``: the history
        mark; ``cls_settled``: the newest known id at or below the cursor first seen before
        ``now - RESCAN_AGE`` (see :meth:`_rescan_floor`).
        """
        ws, cc = WatchState.__table__, CertificateClassRow.__table__

        def state(name: str) -> Any:
            return sa.select(ws.c.value).where(ws.c.name == name).scalar_subquery()

        settled = (sa.select(cc.c.certificate_id)
                   .where(cc.c.certificate_id <= state(CURSOR_NAME), cc.c.first_seen_at < now - RESCAN_AGE)
                   .order_by(cc.c.certificate_id.desc()).limit(1).scalar_subquery())
        return [state(CURSOR_NAME).label("cls_cursor"), state(ANNOUNCE_AFTER).label("cls_announce_after"),
                settled.label("cls_settled")]

    def _sync(self, batch: int, time_budget: float | None, conn: sa.Connection, state: Any, now: datetime,
              started: float) -> SyncReport:
        counts = {"new": 0, "reclassified": 0, "deleted": 0, "restored": 0, "scanned": 0}
        try:
            if state.cls_announce_after is not None:
                self._announce_after = int(state.cls_announce_after)
            else:
                self._announce_after = self._history_mark(now)
        except FeatureUnavailable as exc:  # the module was removed since the schema was reflected
            return SyncReport(available=False, message=f"{_MISSING_MODULE} ({exc})")
        stored_cursor = None if state.cls_cursor is None else int(state.cls_cursor)
        last_id = stored_cursor or 0
        cursor = self._rescan_floor(last_id, None if state.cls_settled is None else int(state.cls_settled))
        scan_from = cursor
        max_seen: int | None = None
        complete = True
        # While every batch matches what the store holds, ``conn`` (one read transaction, opened for
        # the state above) serves the comparisons and nothing is written: an idle poll is a handful
        # of statements. The first batch with news ends that transaction and takes the write path.
        compare = True
        try:
            while True:
                rows = [_Live.of(r) for r in self.reader.certificates_after(cursor, batch)]
                full = len(rows) == batch
                # A full batch covers (cursor, its last id]; a short one reaches the end of the table.
                upper = rows[-1].certificate_id if full else None
                if rows:
                    max_seen = max(max_seen or 0, rows[-1].certificate_id)
                if full:
                    new_cursor = max(last_id, rows[-1].certificate_id)
                else:
                    # The whole tail was read: the cursor may also move down (newest rows deleted,
                    # ids reused after a server restart reset AUTO_INCREMENT).
                    new_cursor = max_seen if max_seen is not None else min(last_id, scan_from)
                if compare and stored_cursor == new_cursor and self._unchanged(conn, rows, cursor, upper):
                    outcome = {}
                else:
                    if compare:
                        conn.rollback()   # no snapshot held open while writing
                        compare = False
                    outcome = self._store_batch(rows, cursor, upper, new_cursor, now)
                last_id = new_cursor
                for name, value in outcome.items():
                    counts[name] += value
                counts["scanned"] += len(rows)
                if not full:
                    break
                cursor = rows[-1].certificate_id
                if time_budget is not None and time.perf_counter() - started >= time_budget:
                    complete = False
                    break
        except FeatureUnavailable as exc:  # the module was removed since the schema was reflected
            return SyncReport(available=False, message=f"{_MISSING_MODULE} ({exc})")
        report = SyncReport(new=counts["new"], reclassified=counts["reclassified"], deleted=counts["deleted"],
                            restored=counts["restored"], scanned=counts["scanned"], last_id=last_id,
                            seconds=round(time.perf_counter() - started, 3), complete=complete)
        log.info("certificate sync: %s", report.summary())
        return report

    def _store_batch(self, rows: Sequence[_Live], lower: int, upper: int | None, new_cursor: int,
                     now: datetime) -> dict[str, int]:
        """Upsert one batch, mark what vanished in its range and move the cursor, in one transaction."""
        for attempt in (1, 2):
            try:
                with unit_of_work(self.sessions) as session:
                    outcome = self._apply(session, rows, now)
                    outcome["deleted"] = self._mark_missing(session, lower, upper,
                                                            {r.certificate_id for r in rows}, now)
                    self._save_cursor(session, new_cursor, now)
                return outcome
            except sa.exc.IntegrityError:
                # Another sync (e.g. one started by a sleepers refresh) inserted the same certificates
                # or the cursor row first; the second attempt sees its rows and only updates them.
                if attempt == 2:
                    raise
                log.info("certificate sync raced another writer; retrying the batch after id %s", lower)
        raise AssertionError("unreachable")

    def _history_mark(self, now: datetime) -> int:
        """The id above which certificates are news; noted at the first sync ever (the newest id then)."""
        with self.sessions() as session:
            state = session.get(WatchState, ANNOUNCE_AFTER)
            if state is not None:
                return int(state.value)
        mark = self.reader.latest_certificate_id() or 0
        try:
            with unit_of_work(self.sessions) as session:
                session.add(WatchState(name=ANNOUNCE_AFTER, value=mark, updated_at=now))
        except sa.exc.IntegrityError:  # another sync noted it first
            with self.sessions() as session:
                return int(session.get(WatchState, ANNOUNCE_AFTER).value)
        return mark

    @staticmethod
    def _rescan_floor(last_id: int, settled: int | None) -> int:
        """Where this run starts reading: below the cursor by the out-of-order safety margin.

        Ids first seen before ``now - RESCAN_AGE`` were taken before any id allocated since, so any
        id still invisible then lies above the newest of them (``settled``, read by
        :meth:`poll_columns`); the fixed margin covers the rest.
        """
        floor = last_id - RESCAN_IDS
        if settled is not None:
            floor = min(floor, settled)
        return max(0, floor, last_id - RESCAN_MAX)

    @staticmethod
    def _unchanged(conn: sa.Connection, rows: Sequence[_Live], lower: int, upper: int | None) -> bool:
        """True when the store already holds exactly these live rows of ``(lower, upper]``: each one
        known, not marked deleted, with the same fingerprint and responsible person, and no other
        known, not deleted id in the range (which :meth:`_mark_missing` would mark)."""
        cc = CertificateClassRow.__table__
        stmt = sa.select(cc.c.certificate_id, cc.c.fingerprint, cc.c.responsible_person).where(
            cc.c.certificate_id > lower, cc.c.deleted_at.is_(None))
        if upper is not None:
            stmt = stmt.where(cc.c.certificate_id <= upper)
        known = {int(i): (f, None if p is None else int(p)) for i, f, p in conn.execute(stmt)}
        if len(known) != len(rows):
            return False
        return all(known.get(row.certificate_id) == (row.fingerprint, row.responsible_person) for row in rows)

    def _save_cursor(self, session: Any, value: int, now: datetime) -> None:
        state = session.get(WatchState, CURSOR_NAME)
        if state is None:
            session.add(WatchState(name=CURSOR_NAME, value=value, updated_at=now))
        elif state.value != value:  # ``updated_at``: when the cursor last moved
            state.value = value
            state.updated_at = now

    def _mark_missing(self, session: Any, lower: int, upper: int | None, live_ids: set[int], now: datetime) -> int:
        """Mark known certificates in ``(lower, upper]`` that the live read did not return."""
        stmt = sa.select(CertificateClassRow.certificate_id).where(
            CertificateClassRow.certificate_id > lower, CertificateClassRow.deleted_at.is_(None))
        if upper is not None:
            stmt = stmt.where(CertificateClassRow.certificate_id <= upper)
        gone = [c for c in session.scalars(stmt) if c not in live_ids]  # ids only: usually none is gone
        for known in (session.scalars(sa.select(CertificateClassRow).where(
                CertificateClassRow.certificate_id.in_(gone))) if gone else ()):
            known.deleted_at = now
            known.checked_at = now
        return len(gone)

    # --- revalidate ----------------------------------------------------------------------------------

    def revalidate(self, batch: int = 5000) -> RevalidateReport:
        """Compare every known certificate with its live row, in id order, one ``IN`` query per chunk.

        Gone → ``deleted_at`` set (it no longer counts); back → mark cleared; fields rewritten →
        classified again. New certificates are left to :meth:`sync`.
        """
        started = time.perf_counter()
        if not self.available:
            return RevalidateReport(available=False, message=_MISSING_MODULE)
        if batch < 1:
            raise ValueError("batch must be at least 1")
        now = self.runtime.clock.now()
        totals = {"checked": 0, "deleted": 0, "reclassified": 0, "restored": 0}
        after = 0
        try:
            while True:
                with unit_of_work(self.sessions) as session:
                    known = session.scalars(
                        sa.select(CertificateClassRow.certificate_id)
                        .where(CertificateClassRow.certificate_id > after)
                        .order_by(CertificateClassRow.certificate_id)
                        .limit(batch)
                    ).all()
                    if not known:
                        break
                    live = self._live_by_ids(known)
                    outcome = self._apply(session, live, now)
                    session.execute(sa.update(CertificateClassRow)
                                    .where(CertificateClassRow.certificate_id.in_([r.certificate_id for r in live]))
                                    .values(checked_at=now).execution_options(synchronize_session=False))
                    totals["reclassified"] += outcome["reclassified"]
                    totals["restored"] += outcome["restored"]
                    totals["deleted"] += self._mark_missing_ids(session, set(known) - {r.certificate_id for r in live},
                                                                now)
                    totals["checked"] += len(known)
                    after = known[-1]
                if len(known) < batch:
                    break
        except FeatureUnavailable as exc:
            return RevalidateReport(available=False, message=f"{_MISSING_MODULE} ({exc})")
        report = RevalidateReport(**totals, seconds=round(time.perf_counter() - started, 3))
        log.info("certificate revalidation: %s", report.summary())
        return report

    def _live_by_ids(self, ids: Sequence[int]) -> list[_Live]:
        self.reader.schema.require("certificates")
        cert = self.reader.schema.table("memberlux_certificate")
        stmt = (
            sa.select(cert.c.certificate_id, cert.c.user_id, cert.c.wpmlevel_id, cert.c.date_issue,
                      cert.c.create_date, cert.c.responsible_person)
            .where(cert.c.certificate_id.in_(list(ids)))
            .order_by(cert.c.certificate_id)
        )
        with self.reader.engine.connect() as conn:
            return [
                _Live(int(r.certificate_id), int(r.user_id), int(r.wpmlevel_id), parse_date(r.date_issue),
                      parse_date(r.create_date), None if r.responsible_person is None else int(r.responsible_person))
                for r in conn.execute(stmt)
            ]

    def _mark_missing_ids(self, session: Any, ids: set[int], now: datetime) -> int:
        if not ids:
            return 0
        marked = 0
        stmt = sa.select(CertificateClassRow).where(CertificateClassRow.certificate_id.in_(sorted(ids)))
        for known in session.scalars(stmt):
            known.checked_at = now
            if known.deleted_at is None:
                known.deleted_at = now
                marked += 1
        return marked

    # --- shared: upsert a batch of live rows -----------------------------------------------------------

    def _apply(self, session: Any, rows: Sequence[_Live], now: datetime) -> dict[str, int]:
        """Upsert live rows. Unchanged known rows are not written: the sync re-reads its window on
        every poll, and a poll with nothing new must stay a read (revalidation stamps ``checked_at``)."""
        counts = {"new": 0, "reclassified": 0, "restored": 0}
        if not rows:
            return counts
        known = {
            r.certificate_id: r
            for r in session.scalars(
                sa.select(CertificateClassRow).where(
                    CertificateClassRow.certificate_id.in_([row.certificate_id for row in rows])))
        }
        to_classify = [row for row in rows
                       if row.certificate_id not in known or known[row.certificate_id].fingerprint != row.fingerprint]
        verdicts = self._classify(to_classify)
        program_levels = _program_levels(session)
        issued: list[tuple[_Live, Classification]] = []
        for row in rows:
            current = known.get(row.certificate_id)
            if program_levels and row.level_id in program_levels and (
                    current is None or current.deleted_at is not None or row.certificate_id in verdicts):
                # New, restored or rewritten: the programs match it against enrolments (same transaction).
                session.merge(ProgramInbox(certificate_id=row.certificate_id, queued_at=now))
            if current is None:
                verdict = verdicts[row.certificate_id]
                session.add(CertificateClassRow(
                    certificate_id=row.certificate_id, user_id=row.user_id, level_id=row.level_id,
                    cls=verdict.cls.value, reason=verdict.reason[:200], date_issue=row.date_issue,
                    create_date=row.create_date, responsible_person=row.responsible_person,
                    fingerprint=row.fingerprint, first_seen_at=now, checked_at=now, deleted_at=None))
                counts["new"] += 1
                if self._announce_after is not None and row.certificate_id > self._announce_after:
                    issued.append((row, verdict))
                continue
            changed = current.deleted_at is not None or row.certificate_id in verdicts \
                or current.responsible_person != row.responsible_person
            if current.deleted_at is not None:
                current.deleted_at = None
                counts["restored"] += 1
            if row.certificate_id in verdicts:
                verdict = verdicts[row.certificate_id]
                current.user_id, current.level_id = row.user_id, row.level_id
                current.date_issue, current.create_date = row.date_issue, row.create_date
                current.fingerprint = row.fingerprint
                current.cls, current.reason = verdict.cls.value, verdict.reason[:200]
                counts["reclassified"] += 1
            if changed:
                # Not part of the class (REST and admin activations carry an administrator too).
                current.responsible_person = row.responsible_person
                current.checked_at = now
        if issued:
            self._announce(session, issued, now)
        return counts

    def _announce(self, session: Any, issued: Sequence[tuple[_Live, Classification]], now: datetime) -> None:
        """``certificate.issued`` for certificates seen for the first time, in the batch's transaction."""
        if not listens(session, ISSUED):
            return
        users = self.reader.users(sorted({row.user_id for row, _ in issued}))
        names = {level.term_id: level.name for level in self.reader.levels()}
        for row, verdict in issued:
            user = users.get(row.user_id)
            emit(session, ISSUED, {
                "certificate_id": row.certificate_id, "user_id": row.user_id, "email": user.email if user else "",
                "term_id": row.level_id, "level_name": names.get(row.level_id, ""), "certificate_class": verdict.cls.value,
                "date_issue": row.date_issue.isoformat() if row.date_issue else None,
                "create_date": row.create_date.isoformat() if row.create_date else None}, now)

    def _classify(self, rows: Sequence[_Live]) -> dict[int, Classification]:
        if not rows:
            return {}
        modes = {row.level_id: self._level_mode(row.level_id) for row in rows}
        # Activation days decide only auto-level certificates whose two dates agree; skip the key
        # read for everything else.
        wanted = {(row.user_id, row.level_id) for row in rows
                  if modes[row.level_id] == "auto" and row.date_issue is not None
                  and row.date_issue == row.create_date}
        days = self._activation_days(wanted)
        return {row.certificate_id: classify_certificate(row.facts, modes[row.level_id],
                                                         days.get((row.user_id, row.level_id), ()))
                for row in rows}

    def _level_mode(self, level_id: int) -> str | None:
        if level_id not in self._modes:
            value = self.reader.level_meta(level_id).get(LEVEL_MODE_META)
            self._modes[level_id] = value.strip() if isinstance(value, str) else None
        return self._modes[level_id]

    def _activation_days(self, pairs: set[tuple[int, int]]) -> dict[tuple[int, int], set[date]]:
        """Activation days per (user, level), read with one query per chunk of users."""
        if not pairs:
            return {}
        schema = self.reader.schema
        tk, km = schema.table("memberlux_term_keys"), schema.table("memberlux_keys_meta")
        users = sorted({user for user, _ in pairs})
        levels = sorted({level for _, level in pairs})
        rows: dict[tuple[int, int], list[KeyRow]] = {}
        with self.reader.engine.connect() as conn:
            for chunk in _chunks(users, _KEY_IN_CHUNK):
                stmt = (
                    sa.select(tk.c.id, tk.c.user_id, tk.c.term_id, tk.c.status, tk.c.date_start,
                              tk.c.date_registered, km.c.activation_datetime)
                    .select_from(tk.outerjoin(km, km.c.key_id == tk.c.id))
                    # user_id is indexed; term_id only trims what comes back.
                    .where(tk.c.user_id.in_(list(chunk)), tk.c.term_id.in_(levels))
                )
                for r in conn.execute(stmt):
                    pair = (int(r.user_id), int(r.term_id))
                    if pair not in pairs:
                        continue
                    rows.setdefault(pair, []).append(KeyRow(
                        key_id=int(r.id), user_id=pair[0], term_id=pair[1], status=r.status,
                        key_type=KEY_TYPE_TERM, is_banned=False, is_unlimited=False, duration=0,
                        units=UNITS_MONTHS, date_start=parse_date(r.date_start), date_end=None,
                        date_registered=parse_date(r.date_registered),
                        activated_at=parse_datetime(r.activation_datetime)))
        return {pair: certificate_activation_days(key_rows) for pair, key_rows in rows.items()}


# --------------------------------------------------------------------------------------------------
# Worker jobs


#: A sync run stops between batches after this long, well inside its lease, and resumes next run.
SYNC_TIME_BUDGET_SECONDS = 240.0


def _program_levels(session: Any) -> set[int]:
    """Levels that are steps of an active program: only their certificates can move anyone."""
    stmt = (sa.select(ProgramStep.term_id).join(Program, Program.id == ProgramStep.program_id)
            .where(Program.status == "active").distinct())
    return {int(t) for t in session.scalars(stmt)}


def sync_job(runtime: Runtime) -> str:
    return CertificateClassifier(runtime).sync(time_budget=SYNC_TIME_BUDGET_SECONDS).summary()


def revalidate_job(runtime: Runtime) -> str:
    return CertificateClassifier(runtime).revalidate().summary()
