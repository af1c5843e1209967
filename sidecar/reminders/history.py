"""Read side of the reminders for the admin UI: the ledger's history, digests, unsubscribes.

Plain SQLAlchemy over our store; nothing here writes (resend and resubscribe go through
:mod:`sidecar.reminders.sender` and :mod:`sidecar.reminders.unsubscribe`, which audit).

The history pages by keyset on ``(planned_at, id)``, newest first, walking
``ix_mls_reminders_planned_at``: a page does not shift while the daily run adds rows, and OFFSET
would make the last pages of a long ledger slow. Filters lean on the ledger's indexes too — a user
id on ``uq_mls_reminders_chain_step`` (user_id first), a state on ``ix_mls_reminders_work``.
"""

from __future__ import annotations

from dataclasses import dataclass, replace
from datetime import datetime, timedelta, timezone

import sqlalchemy as sa
from sqlalchemy.orm import Session

from sidecar.domain.reminders import ADMIN_STEP, State
from sidecar.store.monitor_models import SleeperEntry
from sidecar.store.reminder_models import Reminder, ReminderDigest, Unsubscribe

DEFAULT_LIMIT = 50
MAX_LIMIT = 500
STATES = tuple(s.value for s in State)
_EPOCH = datetime(1970, 1, 1, tzinfo=timezone.utc)
_MICROSECOND = timedelta(microseconds=1)


def _escape_like(text: str) -> str:
    return text.replace("\\", "\\\\").replace("%", "\\%").replace("_", "\\_")


def _contains(column: sa.ColumnElement, needle: str) -> sa.ColumnElement[bool]:
    return sa.func.lower(column).like(f"%{_escape_like(needle.lower())}%", escape="\\")


# --- the ledger -----------------------------------------------------------------------------------

@dataclass(frozen=True)
class Cursor:
    """Position after the last row shown: its ``planned_at`` and ``id``."""

    planned_at: datetime
    id: int

    def encode(self) -> str:
        micros = (self.planned_at.astimezone(timezone.utc) - _EPOCH) // _MICROSECOND
        return f"{micros}.{self.id}"

    @classmethod
    def decode(cls, text: str) -> Cursor:
        """The cursor in ``text``; ``ValueError`` when this module did not produce it."""
        micros, dot, row_id = (text or "").strip().partition(".")
        if not dot or not micros.isdecimal() or not row_id.isdecimal() or len(micros) > 18 or len(row_id) > 18:
            raise ValueError(f"not a page cursor: {text!r}")
        try:
            planned_at = _EPOCH + timedelta(microseconds=int(micros))
        except OverflowError:
            raise ValueError(f"not a page cursor: {text!r}") from None
        return cls(planned_at, int(row_id))


@dataclass(frozen=True)
class HistoryFilter:
    """What the history shows. Datetime bounds are aware: ``*_from`` inclusive, ``*_to`` exclusive.

    ``user_ids`` and ``text`` together select a learner: a row matches one of the ids, or its address
    contains ``text``, or the sleepers read model knows the user by a login, name or e-mail containing
    it (rows planned for a letter carry the address; digest entries do not).
    """

    term_id: int | None = None
    user_ids: tuple[int, ...] = ()
    text: str = ""
    state: str | None = None
    step: int | None = None
    planned_from: datetime | None = None
    planned_to: datetime | None = None
    sent_from: datetime | None = None
    sent_to: datetime | None = None


def _conditions(f: HistoryFilter) -> list[sa.ColumnElement[bool]]:
    where: list[sa.ColumnElement[bool]] = []
    if f.term_id is not None:
        where.append(Reminder.term_id == f.term_id)
    who: list[sa.ColumnElement[bool]] = []
    if f.user_ids:
        who.append(Reminder.user_id.in_(f.user_ids))
    if f.text.strip():
        needle = f.text.strip()
        who.append(_contains(Reminder.to_address, needle))
        who.append(Reminder.user_id.in_(sa.select(SleeperEntry.user_id).where(_contains(SleeperEntry.search_text, needle))))
    if who:
        where.append(sa.or_(*who))
    if f.state:
        where.append(Reminder.state == f.state)
    if f.step is not None:
        where.append(Reminder.step == f.step)
    if f.planned_from is not None:
        where.append(Reminder.planned_at >= f.planned_from)
    if f.planned_to is not None:
        where.append(Reminder.planned_at < f.planned_to)
    if f.sent_from is not None:
        where.append(Reminder.sent_at >= f.sent_from)
    if f.sent_to is not None:
        where.append(Reminder.sent_at < f.sent_to)
        # A letter is planned before it is sent: this bound is implied, and lets the planned_at index help.
        where.append(Reminder.planned_at < f.sent_to)
    return where


@dataclass(frozen=True)
class HistoryPage:
    rows: list[Reminder]
    total: int                      # rows matching the filter, over all pages
    next_cursor: Cursor | None      # None on the last page


def history(session: Session, f: HistoryFilter, *, after: Cursor | None = None,
            limit: int = DEFAULT_LIMIT) -> HistoryPage:
    limit = max(1, min(int(limit), MAX_LIMIT))
    where = _conditions(f)
    total = session.scalar(sa.select(sa.func.count()).select_from(Reminder).where(*where)) or 0
    stmt = sa.select(Reminder).where(*where)
    if after is not None:
        stmt = stmt.where(sa.or_(Reminder.planned_at < after.planned_at,
                                 sa.and_(Reminder.planned_at == after.planned_at, Reminder.id < after.id)))
    # One row more than asked tells whether a next page exists.
    rows = list(session.scalars(stmt.order_by(Reminder.planned_at.desc(), Reminder.id.desc()).limit(limit + 1)))
    if len(rows) > limit:
        rows = rows[:limit]
        return HistoryPage(rows, int(total), Cursor(rows[-1].planned_at, rows[-1].id))
    return HistoryPage(rows, int(total), None)


def learner_letter_ids(session: Session, ids: list[int]) -> list[int]:
    """Those of ``ids`` that are learner letters (steps 1–3), not places in an admin digest."""
    if not ids:
        return []
    return list(session.scalars(sa.select(Reminder.id).where(Reminder.id.in_(ids), Reminder.step != ADMIN_STEP)))


def _ordered_counts(found: dict[str, int]) -> dict[str, int]:
    counts = {state: int(found.pop(state, 0)) for state in STATES}
    counts.update({state: int(n) for state, n in sorted(found.items())})  # a state this code does not know yet
    return counts


def state_counts(session: Session, f: HistoryFilter | None = None) -> dict[str, int]:
    """Ledger rows per state under ``f`` (its own state ignored), every state present, in lifecycle order."""
    where = _conditions(replace(f, state=None)) if f is not None else []
    found = dict(session.execute(sa.select(Reminder.state, sa.func.count()).where(*where)
                                 .group_by(Reminder.state)).tuples().all())
    return _ordered_counts(found)


# --- digests --------------------------------------------------------------------------------------

@dataclass(frozen=True)
class DigestPage:
    rows: list[ReminderDigest]
    total: int
    next_after: int | None          # the id to continue below; None on the last page


def digests(session: Session, *, term_id: int | None = None, state: str | None = None,
            after: int | None = None, limit: int = DEFAULT_LIMIT) -> DigestPage:
    """Digests newest first by id (one per level and day, so the table stays small)."""
    limit = max(1, min(int(limit), MAX_LIMIT))
    where: list[sa.ColumnElement[bool]] = []
    if term_id is not None:
        where.append(ReminderDigest.term_id == term_id)
    if state:
        where.append(ReminderDigest.state == state)
    total = session.scalar(sa.select(sa.func.count()).select_from(ReminderDigest).where(*where)) or 0
    stmt = sa.select(ReminderDigest).where(*where)
    if after is not None:
        stmt = stmt.where(ReminderDigest.id < after)
    rows = list(session.scalars(stmt.order_by(ReminderDigest.id.desc()).limit(limit + 1)))
    if len(rows) > limit:
        rows = rows[:limit]
        return DigestPage(rows, int(total), rows[-1].id)
    return DigestPage(rows, int(total), None)


def digest_state_counts(session: Session, term_id: int | None = None) -> dict[str, int]:
    stmt = sa.select(ReminderDigest.state, sa.func.count()).group_by(ReminderDigest.state)
    if term_id is not None:
        stmt = stmt.where(ReminderDigest.term_id == term_id)
    return _ordered_counts(dict(session.execute(stmt).tuples().all()))


# --- unsubscribes ---------------------------------------------------------------------------------

@dataclass(frozen=True)
class UnsubscribePage:
    rows: list[Unsubscribe]
    total: int
    offset: int
    limit: int

    @property
    def next_offset(self) -> int | None:
        return self.offset + self.limit if self.offset + self.limit < self.total else None


def unsubscribes(session: Session, *, user_id: int | None = None, text: str = "", offset: int = 0,
                 limit: int = DEFAULT_LIMIT) -> UnsubscribePage:
    """Who asked for no more reminders, newest first. The list only grows by learners' clicks, so
    plain OFFSET paging is enough."""
    limit = max(1, min(int(limit), MAX_LIMIT))
    offset = max(0, int(offset))
    where: list[sa.ColumnElement[bool]] = []
    if user_id is not None:
        where.append(Unsubscribe.user_id == user_id)
    elif text.strip():
        where.append(_contains(Unsubscribe.email, text.strip()))
    total = session.scalar(sa.select(sa.func.count()).select_from(Unsubscribe).where(*where)) or 0
    rows = list(session.scalars(sa.select(Unsubscribe).where(*where)
                                .order_by(Unsubscribe.at.desc(), Unsubscribe.user_id.desc())
                                .offset(offset).limit(limit)))
    return UnsubscribePage(rows, int(total), offset, limit)


# --- learners for the letter preview --------------------------------------------------------------

def sleeper_entry(session: Session, term_id: int, user_id: int) -> SleeperEntry | None:
    return session.get(SleeperEntry, (term_id, user_id))


def sample_sleeper(session: Session, term_id: int) -> SleeperEntry | None:
    """A current sleeper of the level to preview letters with: the latest expiry, not blocked."""
    return session.scalar(sa.select(SleeperEntry)
                          .where(SleeperEntry.term_id == term_id, SleeperEntry.blocked == sa.false())
                          .order_by(SleeperEntry.expired_on.desc(), SleeperEntry.user_id).limit(1))


__all__ = ["Cursor", "DigestPage", "HistoryFilter", "HistoryPage", "STATES", "UnsubscribePage", "digest_state_counts",
           "digests", "history", "learner_letter_ids", "sample_sleeper", "sleeper_entry", "state_counts", "unsubscribes"]
