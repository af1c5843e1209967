"""The old learning-monitor report next to the sidecar's, computed: ``mlsidecar legacy compare`` and
``/monitor/legacy``.

Two reads of the WordPress database, both read-only through the sidecar's engine, then the reasons:

1. **The old report**: the plugin's live query (V3) in its real shape (:mod:`sidecar.memberlux.legacy_query`)
   with its own window semantics: the days ``from`` and ``to`` sent as ``'YYYY-MM-DD'``, compared with the
   last key's ``date_end`` by ``BETWEEN`` (both days inclusive), never with today; a day left out is the
   site's local today (WordPress's time zone, as the plugin's form and AJAX handler default it), or D when
   a day D is given. Its count statement, then its rows statement once without ``LIMIT`` (every page),
   under a statement time limit where the database has one.
2. **The sidecar's report** for the same level and window on the UTC day D: the set-based live query
   (:func:`sidecar.monitor.query.live_sleepers`), which the tests prove equal, row for row, to the read
   model and to the rule; live, so both sides read the data as it is now and nothing needs refreshing
   first. A day left out of the window is D.
3. **The reasons**: for every learner in one list only, the rows of that learner are read again (a query
   per 500 learners), the domain rule gives the sidecar's verdict and the old rule's view, and
   :func:`sidecar.domain.legacy_compare.explain_difference` names the reason.

Nothing is written anywhere: not to WordPress, not to our store (certificates are taken as last
synchronised, as the report takes them).
"""

from __future__ import annotations

import dataclasses
import threading
import time
from collections import Counter
from collections.abc import Callable, Iterator, Sequence
from dataclasses import dataclass, field
from datetime import date
from typing import TYPE_CHECKING, Any, TypeVar

import sqlalchemy as sa

from sidecar.domain.legacy_compare import CompareReason, Difference, explain_difference, legacy_view
from sidecar.domain.sleepers import Window, evaluate
from sidecar.memberlux.legacy_query import (
    LegacyQueryFailed,
    LegacyQueryTimeout,
    LegacyTables,
    legacy_v3_count,
    legacy_v3_rows,
    statement_timeout,
)
from sidecar.memberlux.reader import ancestors_from_parents
from sidecar.memberlux.schema import parse_date
from sidecar.monitor.query import live_sleepers, manual_certificate_users
from sidecar.monitor.service import UnknownLevel
from sidecar.store.monitor_models import CertificateClassRow

if TYPE_CHECKING:
    from sidecar.bootstrap import Runtime

__all__ = ["REASONS", "CLI_TIMEOUT_SECONDS", "PAGE_TIMEOUT_SECONDS", "CSV_COLUMNS", "Busy", "CompareInputError",
           "Comparison", "DifferenceRow", "LegacyQueryFailed", "LegacyQueryTimeout", "compare", "compare_csv_rows",
           "comparison_record", "exclusive"]

#: Every reason, in the order reports list them.
REASONS: tuple[CompareReason, ...] = tuple(CompareReason)
#: The command line's default time limit per legacy statement; the page's (a web request must end).
CLI_TIMEOUT_SECONDS = 600.0
PAGE_TIMEOUT_SECONDS = 45.0


class CompareInputError(ValueError):
    """A window that cannot be compared: it ends (``end``) before it starts (``start``)."""

    def __init__(self, message: str, start: date, end: date) -> None:
        super().__init__(message)
        self.start = start
        self.end = end


@dataclass(frozen=True)
class DifferenceRow:
    user_id: int
    email: str
    first_name: str
    last_name: str
    in_legacy: bool
    in_sidecar: bool
    reason: CompareReason
    verdict: str                  # the sidecar rule's reason code for the learner on D
    legacy_last_end: date | None  # L: the old report's «Окончание УД» (MAX(date_end) of non-banned rows)
    expired_on: date | None       # X by the sidecar's rule (None: no qualifying limited row)
    blocked: bool


@dataclass(frozen=True)
class Comparison:
    term_id: int
    level_name: str
    day: date                                 # D, the UTC day the sidecar's rule is evaluated for
    site_today: date                          # the site's local day when the comparison ran
    legacy_window: tuple[date, date]          # the old report's [from, to], both inclusive
    sidecar_window: tuple[date, date]         # as asked; the rule never lists an expiry after D
    tables: LegacyTables
    legacy_count: int                         # the old count statement («Найдено: N»)
    legacy_rows: int                          # rows of all pages together (a tie on the last end repeats a user)
    legacy_users: int
    sidecar_users: int
    in_both: int
    differences: tuple[DifferenceRow, ...]
    timeout: float | None                     # the time limit per legacy statement in force, if any
    seconds: dict[str, float] = field(default_factory=dict)

    @property
    def counts(self) -> dict[str, int]:
        """Learners per reason, every reason listed (0 included), in report order."""
        found = Counter(row.reason for row in self.differences)
        return {reason.value: found.get(reason, 0) for reason in REASONS}

    @property
    def unexplained(self) -> int:
        return sum(1 for row in self.differences if row.reason is CompareReason.UNEXPLAINED)

    @property
    def only_legacy(self) -> int:
        return sum(1 for row in self.differences if row.in_legacy)

    @property
    def only_sidecar(self) -> int:
        return sum(1 for row in self.differences if row.in_sidecar)

    @property
    def sidecar_window_end(self) -> date:
        """The end of the sidecar's window as its rule applies it: clamped to D."""
        return min(self.sidecar_window[1], self.day)


# --------------------------------------------------------------------------------------------------
# One comparison at a time (the web page: the old query can take a minute on a large site)


class Busy(RuntimeError):
    """Another comparison is running in this process."""


_running = threading.Lock()
T = TypeVar("T")


def exclusive(work: Callable[[], T]) -> T:
    """Run ``work`` unless another comparison is running in this process (then :class:`Busy`)."""
    if not _running.acquire(blocking=False):
        raise Busy("another comparison is running; try again when it has finished")
    try:
        return work()
    finally:
        _running.release()


# --------------------------------------------------------------------------------------------------
# The comparison


def _windows(runtime: Runtime, day: date | None, date_from: date | None,
             date_to: date | None) -> tuple[date, date, tuple[date, date], tuple[date, date]]:
    d = day or runtime.clock.today_utc()
    # WordPress's current_time(): the zone of the site's own settings (what the plugin's PHP used).
    site_today = runtime.clock.today_in(runtime.reader.site_timezone().tz)
    legacy_default = d if day is not None else site_today
    legacy = (date_from or legacy_default, date_to or legacy_default)
    sidecar = (date_from or d, date_to or d)
    for side, (start, end) in (("the old report's", legacy), ("the sidecar's", sidecar)):
        if start > end:
            defaulted = "" if date_from and date_to else " (a day left out is today)"
            raise CompareInputError(f"{side} window ends on {end.isoformat()}, before it starts on "
                                    f"{start.isoformat()}{defaulted}", start, end)
    return d, site_today, legacy, sidecar


def _legacy_report(runtime: Runtime, term_id: int, window: tuple[date, date], tables: LegacyTables,
                   timeout: float | None) -> tuple[int, int, dict[int, tuple[date | None, str]], bool]:
    """(count, rows, {user: (L, e-mail)}, whether a time limit was in force)."""
    with runtime.wp_engine.connect() as conn:
        with statement_timeout(conn, timeout) as limited:
            count = legacy_v3_count(conn, term_id, window[0], window[1], tables)
            rows = legacy_v3_rows(conn, term_id, window[0], window[1], tables)
    users: dict[int, tuple[date | None, str]] = {}
    for row in rows:
        users.setdefault(row.user_id, (parse_date(row.last_date_end), row.email))
    return count, len(rows), users, limited


def _known_certificates(runtime: Runtime, term_id: int) -> set[int]:
    """Certificate ids of the level in the sidecar's classified copy (not marked deleted)."""
    with runtime.sessions() as session:
        return {int(v) for v in session.scalars(
            sa.select(CertificateClassRow.certificate_id)
            .where(CertificateClassRow.level_id == term_id, CertificateClassRow.deleted_at.is_(None)))}


def _explain(runtime: Runtime, term_id: int, ancestors: list[int], day: date, differing: list[int],
             legacy: dict[int, tuple[date | None, str]], legacy_window: Window,
             sidecar_window: Window) -> Iterator[DifferenceRow]:
    reader = runtime.reader
    rows = reader.key_rows_of_users(differing, [term_id, *ancestors])
    users = reader.users(differing)
    statuses = reader.user_statuses(differing)
    certificates = reader.certificate_ids_by_user(term_id) if runtime.site.features.get("certificates") else {}
    known = _known_certificates(runtime, term_id) if certificates else set()
    manual = manual_certificate_users(runtime, term_id)
    for user_id in differing:
        own = [r for r in rows.get(user_id, []) if r.term_id == term_id]
        parent = [r for r in rows.get(user_id, []) if r.term_id != term_id]
        user = users.get(user_id)
        verdict = evaluate(user_id, term_id, own, day, ancestor_rows=parent,
                           has_manual_certificate=user_id in manual, blocked=user.blocked if user else False,
                           user_exists=user is not None, window=sidecar_window, policy=runtime.access_policy)
        view = legacy_view(own, user_exists=user_id in statuses, user_status=statuses.get(user_id, 0),
                           has_certificate=bool(certificates.get(user_id)))
        in_legacy = user_id in legacy
        reason = explain_difference(Difference(
            in_legacy=in_legacy, verdict=verdict, legacy=view, legacy_window=legacy_window,
            sidecar_window=sidecar_window,
            certificates_known=all(c in known for c in certificates.get(user_id, ()))))
        legacy_end, legacy_email = legacy.get(user_id, (view.last_end, ""))
        yield DifferenceRow(
            user_id=user_id, email=user.email if user else legacy_email,
            first_name=user.first_name if user else "", last_name=user.last_name if user else "",
            in_legacy=in_legacy, in_sidecar=not in_legacy, reason=reason, verdict=verdict.reason.value,
            legacy_last_end=legacy_end, expired_on=verdict.expired_on, blocked=verdict.blocked)


def compare(runtime: Runtime, term_id: int, *, day: date | None = None, date_from: date | None = None,
            date_to: date | None = None, timeout: float | None = CLI_TIMEOUT_SECONDS) -> Comparison:
    """Both reports of level ``term_id`` and the reason for every learner listed by one of them only.

    Raises :class:`~sidecar.monitor.service.UnknownLevel`, :class:`CompareInputError`,
    :class:`LegacyQueryTimeout` (the old query ran past ``timeout`` seconds per statement) or
    :class:`LegacyQueryFailed` (the database refused the old query: e.g. a table it needs is missing).
    """
    started = time.perf_counter()
    parents = runtime.reader.level_parents()
    if term_id not in parents:
        raise UnknownLevel(f"no access level with id {term_id} (it may have been deleted)")
    d, site_today, legacy_window, sidecar_window = _windows(runtime, day, date_from, date_to)
    tables = LegacyTables.of_site(runtime.site)

    before_legacy = time.perf_counter()
    count, legacy_rows, legacy, limited = _legacy_report(runtime, term_id, legacy_window, tables, timeout)
    after_legacy = time.perf_counter()
    sidecar = {s.user_id for s in live_sleepers(runtime, term_id, d, Window(*sidecar_window))}
    after_sidecar = time.perf_counter()
    differing = sorted(set(legacy) ^ sidecar)
    rows = list(_explain(runtime, term_id, ancestors_from_parents(parents, term_id), d, differing, legacy,
                         Window(*legacy_window), Window(*sidecar_window)))
    order = {reason: index for index, reason in enumerate(REASONS)}
    rows.sort(key=lambda r: (order[r.reason], r.user_id))
    done = time.perf_counter()
    names = {level.term_id: level.name for level in runtime.reader.levels()}
    return Comparison(
        term_id=term_id, level_name=names.get(term_id, f"#{term_id}"), day=d, site_today=site_today,
        legacy_window=legacy_window, sidecar_window=sidecar_window, tables=tables, legacy_count=count,
        legacy_rows=legacy_rows, legacy_users=len(legacy), sidecar_users=len(sidecar),
        in_both=len(set(legacy) & sidecar), differences=tuple(rows), timeout=timeout if limited else None,
        seconds={"legacy": round(after_legacy - before_legacy, 3), "sidecar": round(after_sidecar - after_legacy, 3),
                 "reasons": round(done - after_sidecar, 3), "total": round(done - started, 3)},
    )


# --------------------------------------------------------------------------------------------------
# As data (the command's JSON and CSV, the page's CSV)


#: Columns of the differences as CSV.
CSV_COLUMNS = ("user_id", "email", "first_name", "last_name", "in_legacy", "in_sidecar", "reason", "verdict",
               "legacy_last_end", "expired_on", "blocked")


def _iso(day: date | None) -> str | None:
    return day.isoformat() if day else None


def compare_csv_rows(comparison: Comparison) -> Iterator[Sequence[object]]:
    """The differences as CSV records, header first: ids and flags as numbers, the rest as text (write
    them with :class:`sidecar.csvsafe.SafeCsvWriter`)."""
    yield CSV_COLUMNS
    for row in comparison.differences:
        yield [row.user_id, row.email, row.first_name, row.last_name, int(row.in_legacy), int(row.in_sidecar),
               row.reason.value, row.verdict, _iso(row.legacy_last_end), _iso(row.expired_on), int(row.blocked)]


def comparison_record(c: Comparison) -> dict[str, Any]:
    """A comparison as plain JSON-able data (days as ISO strings)."""
    return {
        "level": {"id": c.term_id, "name": c.level_name},
        "day": c.day.isoformat(),
        "site_today": c.site_today.isoformat(),
        "legacy": {"window": [c.legacy_window[0].isoformat(), c.legacy_window[1].isoformat()],
                   "count": c.legacy_count, "rows": c.legacy_rows, "users": c.legacy_users,
                   "tables": dataclasses.asdict(c.tables), "prefix_hard_coded": c.tables.hard_coded,
                   "timeout_seconds": c.timeout},
        "sidecar": {"window": [c.sidecar_window[0].isoformat(), c.sidecar_window_end.isoformat()],
                    "users": c.sidecar_users},
        "in_both": c.in_both,
        "only_legacy": c.only_legacy,
        "only_sidecar": c.only_sidecar,
        "counts": c.counts,
        "unexplained": c.unexplained,
        "differences": [
            {"user_id": r.user_id, "email": r.email, "first_name": r.first_name, "last_name": r.last_name,
             "in_legacy": r.in_legacy, "in_sidecar": r.in_sidecar, "reason": r.reason.value, "verdict": r.verdict,
             "legacy_last_end": _iso(r.legacy_last_end), "expired_on": _iso(r.expired_on), "blocked": r.blocked}
            for r in c.differences
        ],
        "seconds": c.seconds,
    }
