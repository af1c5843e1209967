"""Writing the sleepers read model (``mls_sleepers`` and its per-level records), shared by the per-level
refresh (:mod:`sidecar.monitor.refresh`) and the whole-site rebuild and increments
(:mod:`sidecar.monitor.increments`).

A sleeper travels as a tuple ``(user_id, expired_on, last_grant, blocked, email, login, first, last)``;
:func:`stored_tuple` is the same tuple as the model stores it, so a rebuild can tell which rows changed
and write only those.
"""

from __future__ import annotations

import logging
import time
from dataclasses import dataclass, field
from datetime import date, datetime
from typing import TYPE_CHECKING

import sqlalchemy as sa

from sidecar.store.db import unit_of_work
from sidecar.store.monitor_models import SleeperCount, SleeperEntry, SleeperRefresh
from sidecar.webhooks.events import emit, listens

if TYPE_CHECKING:
    from sidecar.bootstrap import Runtime

__all__ = ["ReadModelWriter", "RefreshReport", "Replaced", "model_row", "search_text", "stored_columns",
           "stored_tuple"]

log = logging.getLogger(__name__)

#: Rows per INSERT (and user ids per DELETE) statement when writing the read model.
INSERT_CHUNK = 1000

_COLUMN_WIDTHS = {"email": 100, "login": 60, "first_name": 100, "last_name": 100, "search_text": 400}
_EMAIL, _LOGIN, _FIRST, _LAST = (_COLUMN_WIDTHS[c] for c in ("email", "login", "first_name", "last_name"))


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


def search_text(first_name: str, last_name: str, email: str, login: str) -> str:
    """What the report's search box matches: lower-cased "first last email login"."""
    text = " ".join(part.strip() for part in (first_name, last_name, email, login) if part and part.strip())
    return text.lower()[: _COLUMN_WIDTHS["search_text"]]


def _cut(value: str, column: str) -> str:
    # MySQL stores refuse over-long values in strict mode; WordPress allows longer names in usermeta.
    return (value or "")[: _COLUMN_WIDTHS[column]]


@dataclass(frozen=True)
class Replaced:
    """A level's rows replaced: the seconds taken and how the stored rows differed from the new ones."""

    seconds: float
    missing: int = 0      # new rows the model did not have
    extra: int = 0        # stored rows that are no longer sleepers
    different: int = 0    # same learner, another expiry, grant, flag or name

    def differences(self) -> dict[str, int]:
        return {name: n for name, n in (("missing", self.missing), ("extra", self.extra),
                                        ("different", self.different)) if n}


def stored_columns(entries: sa.Table) -> list[sa.Column]:
    """The columns of ``mls_sleepers`` that :func:`stored_tuple` mirrors."""
    return [entries.c.user_id, entries.c.expired_on, entries.c.last_grant, entries.c.blocked, entries.c.email,
            entries.c.login, entries.c.first_name, entries.c.last_name]


def stored_tuple(sleeper: tuple) -> tuple:
    """A sleeper tuple as the read model stores it (texts cut to their columns), for comparisons."""
    user_id, expired_on, last_grant, blocked, email, login, first, last = sleeper
    if (blocked.__class__ is bool and email.__class__ is str and login.__class__ is str and first.__class__ is str
            and last.__class__ is str and len(email) <= _EMAIL and len(login) <= _LOGIN and len(first) <= _FIRST
            and len(last) <= _LAST):
        return (user_id, expired_on, last_grant, blocked, email, login, first, last)  # nothing to cut (most)
    return (user_id, expired_on, last_grant, bool(blocked), _cut(email, "email"), _cut(login, "login"),
            _cut(first, "first_name"), _cut(last, "last_name"))


def model_row(term_id: int, sleeper: tuple, now: datetime) -> dict:
    """The ``mls_sleepers`` row of one sleeper tuple."""
    user_id, expired_on, last_grant, blocked, email, login, first, last = sleeper
    return {
        "term_id": term_id, "user_id": user_id, "expired_on": expired_on, "last_grant": last_grant,
        "blocked": blocked, "email": _cut(email, "email"), "login": _cut(login, "login"),
        "first_name": _cut(first, "first_name"), "last_name": _cut(last, "last_name"),
        "search_text": search_text(first, last, email, login), "refreshed_at": now,
    }


class ReadModelWriter:
    """Replaces a level's rows, drops deleted levels' rows, starts a level's trend history."""

    def __init__(self, runtime: Runtime, *, check_ancestors: bool = True) -> None:
        self.runtime = runtime
        self.check_ancestors = check_ancestors

    def backfill_first_time(self, term_id: int, day: date, parents: dict[int, int]) -> None:
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

    def replace_level(self, term_id: int, sleepers: list[tuple], day: date, stats: dict | None,
                      started: float) -> Replaced:
        """Make the level's read-model rows ``sleepers`` in one transaction, writing only the rows that
        differ from the stored ones (a warm rebuild writes next to nothing); returns the seconds since
        ``started`` and how the stored rows differed.

        ``stats`` ``None`` means the level is gone: its rows and refresh record are removed.
        """
        now = self.runtime.clock.now()
        entries = SleeperEntry.__table__
        fresh = {sleeper[0]: (stored_tuple(sleeper), sleeper) for sleeper in sleepers}
        with unit_of_work(self.runtime.sessions) as session:
            previous = {int(row[0]): tuple(row) for row in session.execute(
                sa.select(*stored_columns(entries)).where(entries.c.term_id == term_id))}
            # One walk over each side: a warm rebuild compares hundreds of thousands of rows to find a few.
            stale, added, missing, different = [], [], 0, 0
            for user_id, (row, sleeper) in fresh.items():
                old = previous.get(user_id)
                if old is None:
                    missing += 1
                    added.append(sleeper)
                elif old != row:
                    different += 1
                    added.append(sleeper)
                    stale.append(user_id)
            gone = [user_id for user_id in previous if user_id not in fresh]
            stale = sorted(stale + gone)
            for start in range(0, len(stale), INSERT_CHUNK):
                session.execute(sa.delete(entries).where(entries.c.term_id == term_id,
                                                         entries.c.user_id.in_(stale[start:start + INSERT_CHUNK])))
            for start in range(0, len(added), INSERT_CHUNK):
                session.execute(entries.insert(), [model_row(term_id, sleeper, now)
                                                   for sleeper in added[start:start + INSERT_CHUNK]])
            changes = Replaced(seconds=round(time.perf_counter() - started, 3), missing=missing, extra=len(gone),
                               different=different)
            if stats is None:
                session.execute(sa.delete(SleeperRefresh.__table__)
                                .where(SleeperRefresh.__table__.c.term_id == term_id))
                return changes
            # Sleepers absent from the previous build (same X) are news, when someone listens. The first
            # build of a level announces nobody: its sleepers are history.
            announce = listens(session, "sleeper.detected") and session.get(SleeperRefresh, term_id) is not None
            session.merge(SleeperRefresh(term_id=term_id, evaluated_for=day, refreshed_at=now, checked_at=now,
                                         seconds=changes.seconds, **stats))
            session.merge(SleeperCount(term_id=term_id, day=day, sleepers=stats["sleepers"], reconstructed=False))
            for user_id, expired_on, _grant, _blocked, email, *_ in (added if announce else ()):
                if user_id not in previous or previous[user_id][1] != expired_on:
                    emit(session, "sleeper.detected", {"user_id": user_id, "term_id": term_id,
                                                       "expired_on": expired_on.isoformat(), "email": email}, now)
        return changes

    def drop_vanished_levels(self, existing: set[int]) -> None:
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
